"""Engines and session factories."""

from __future__ import annotations

import os

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import sessionmaker

DATABASE_URL = "sqlite:///bookstore.db"

SessionLocal = sessionmaker()


def make_engine(url: str = DATABASE_URL) -> Engine:
    engine = create_engine(url, echo=os.environ.get("SQL_ECHO") == "1")
    SessionLocal.configure(bind=engine)
    return engine
