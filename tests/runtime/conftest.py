"""Real SQLite databases (a file, so connections are pooled as in production), seeded."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

import sqla_doctor
from sqla_doctor.runtime.unit_of_work import process

from .models import Base, create_and_seed, seed_objects


@pytest.fixture(autouse=True)
def _doctor_is_uninstalled_after_each_test() -> Iterator[None]:
    yield
    gc.collect()
    sqla_doctor.uninstall()
    process.reset_collected()
    assert process.internal_errors == 0, "a handler failed; see the log"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_and_seed(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine)


@pytest.fixture
async def async_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with async_sessionmaker(engine)() as session:
        session.add_all(seed_objects())
        await session.commit()
    yield engine
    await engine.dispose()
