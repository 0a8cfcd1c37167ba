"""The models the runtime tests load, lazy-load, add and forget to commit."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(AsyncAttrs, DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    bio: Mapped[str | None] = mapped_column(Text, deferred=True)
    posts: Mapped[list[Post]] = relationship(back_populates="author")

    def __repr__(self) -> str:
        return f"User(id={self.id!r}, name={self.name!r})"


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")
    comments: Mapped[list[Comment]] = relationship(back_populates="post")


class Comment(Base):
    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    post: Mapped[Post] = relationship(back_populates="comments")


USERS = 5


def seed_objects() -> list[User]:
    return [
        User(
            name=f"user{i}",
            bio=f"bio {i}",
            posts=[
                Post(title=f"post {i}.{j}", comments=[Comment(body=f"comment {i}.{j}")])
                for j in range(2)
            ],
        )
        for i in range(USERS)
    ]


def create_and_seed(engine: Engine) -> None:
    """The tables, and the seed rows committed."""
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(seed_objects())
        session.commit()
