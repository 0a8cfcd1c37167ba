"""Request handlers of the bookstore and the shop."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import SessionLocal
from .models import Book, Order, User


def list_books(session: Session) -> list[dict[str, Any]]:
    books = session.scalars(select(Book)).all()
    return [{"title": book.title, "author": book.author.name} for book in books]


def search_users(session: Session, name: str) -> list[Any]:
    sql = f"SELECT id, email FROM users WHERE name = '{name}'"
    return list(session.execute(text(sql)).all())


def customers_by_name(session: Session) -> list[User]:
    return session.query(User).order_by(User.name).all()


def register(session: Session, email: str, name: str) -> bool:
    session.add(User(email=email, name=name))
    try:
        session.commit()
    except IntegrityError:
        return False
    return True


def place_order(user_id: int, total: float) -> int | None:
    session = SessionLocal()
    order = Order(user_id=user_id, total=total)
    session.add(order)
    return order.id
