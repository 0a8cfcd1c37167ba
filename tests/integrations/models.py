"""What the middleware and OpenTelemetry tests load, lazy-load and stream."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(AsyncAttrs, DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")


USERS = 4


def seed_objects() -> list[User]:
    return [
        User(name=f"user{i}", posts=[Post(title=f"post {i}.{j}") for j in range(2)])
        for i in range(USERS)
    ]


def create_and_seed(engine: Engine) -> None:
    """The tables, and the seed rows committed."""
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(seed_objects())
        session.commit()
