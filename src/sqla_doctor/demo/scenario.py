"""Drive an app's handlers the way a day of traffic would; the same for both twins."""

from __future__ import annotations

import importlib
from types import ModuleType

from sqlalchemy import Engine
from sqlalchemy.orm import Session


def _app(name: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    package = f"{__package__}.{name}"
    return (
        importlib.import_module(f"{package}.models"),
        importlib.import_module(f"{package}.db"),
        importlib.import_module(f"{package}.services"),
    )


def make_engine(name: str, url: str) -> Engine:
    _, db, _ = _app(name)
    engine: Engine = db.make_engine(url)
    engine.echo = False  # the bad twin's echo=True would drown the report
    return engine


def seed(name: str, engine: Engine) -> None:
    models, _, _ = _app(name)
    models.Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        for a in range(10):
            author = models.Author(name=f"Author {a}")
            for b in range(3):
                book = models.Book(title=f"Book {a}.{b}", author=author, tags=["fiction"])
                book.reviews.append(models.Review(rating=4, body="Good."))
                session.add(book)
        session.add_all(
            models.User(email=f"user{u}@example.com", name=f"User {u}") for u in range(5)
        )


def run(name: str, engine: Engine) -> None:
    _, _, services = _app(name)
    with Session(engine) as session:
        services.list_books(session)
        services.search_users(session, "User 1")
        services.customers_by_name(session)
    with Session(engine) as session:
        services.register(session, "new@example.com", "Newcomer")
    with Session(engine) as session:
        services.register(session, "new@example.com", "Duplicate")
    services.place_order(user_id=1, total=12.5)
