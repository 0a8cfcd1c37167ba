"""Request handlers of the bookstore and the shop."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from .db import SessionLocal
from .models import Book, Order, User


def list_books(session: Session) -> list[dict[str, Any]]:
    books = session.scalars(select(Book).options(joinedload(Book.author))).all()
    return [{"title": book.title, "author": book.author.name} for book in books]


def search_users(session: Session, name: str) -> list[Any]:
    sql = text("SELECT id, email FROM users WHERE name = :name")
    return list(session.execute(sql, {"name": name}).all())


def customers_by_name(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.name)).all())


def register(session: Session, email: str, name: str) -> bool:
    session.add(User(email=email, name=name))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True


def place_order(user_id: int, total: float) -> int:
    with SessionLocal() as session, session.begin():
        order = Order(user_id=user_id, total=total)
        session.add(order)
        session.flush()
        return order.id
