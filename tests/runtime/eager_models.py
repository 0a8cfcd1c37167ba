"""Models with several collections, one joined by its mapping, for SQD256."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, String, Table
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class EagerBase(AsyncAttrs, DeclarativeBase):
    pass


class Publisher(EagerBase):
    __tablename__ = "publishers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


author_genres = Table(
    "author_genres",
    EagerBase.metadata,
    Column("author_id", ForeignKey("authors.id"), primary_key=True),
    Column("genre_id", ForeignKey("genres.id"), primary_key=True),
)


class Genre(EagerBase):
    __tablename__ = "genres"

    id: Mapped[int] = mapped_column(primary_key=True)


class Author(EagerBase):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    publisher_id: Mapped[int | None] = mapped_column(ForeignKey("publishers.id"))
    publisher: Mapped[Publisher | None] = relationship()
    books: Mapped[list[Book]] = relationship(back_populates="author")
    awards: Mapped[list[Award]] = relationship()
    # Many-to-many: every author's genres are the same GENRES objects.
    genres: Mapped[list[Genre]] = relationship(secondary=author_genres)


class Book(EagerBase):
    __tablename__ = "books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="books")
    # Joined by the mapping: every SELECT of Book joins its chapters.
    chapters: Mapped[list[Chapter]] = relationship(lazy="joined")


class Chapter(EagerBase):
    __tablename__ = "chapters"

    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(ForeignKey("books.id"))


class Award(EagerBase):
    __tablename__ = "awards"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))


AUTHORS = 3  # with 2 books of CHAPTERS chapters and AWARDS awards each
CHAPTERS = 10
AWARDS = 20
GENRES = 20
# The three share GENRES genres. A fourth author has 1 award only. Large enough by
# default for SQD256's minimums (50 rows, 3 per parent); the moderate data of its near
# misses is seeded with chapters=3, awards=2.


def seed_authors(chapters: int = CHAPTERS, awards: int = AWARDS) -> list[object]:
    publisher = Publisher(name="press")
    genres = [Genre() for _ in range(GENRES)]
    authors = [
        Author(
            name=f"author{i}",
            publisher=publisher,
            books=[
                Book(title=f"book {i}.{j}", chapters=[Chapter() for _ in range(chapters)])
                for j in range(2)
            ],
            awards=[Award() for _ in range(awards)],
            genres=genres,
        )
        for i in range(AUTHORS)
    ]
    return [*authors, Author(name="newcomer", awards=[Award()])]
