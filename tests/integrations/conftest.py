"""Real SQLite files (pooled as in production), and a doctor left as it was found."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import sqla_doctor
from sqla_doctor.runtime.unit_of_work import process

from .models import create_and_seed


@pytest.fixture(autouse=True)
def _no_internal_error() -> Iterator[None]:
    before = process.internal_errors
    yield
    gc.collect()
    sqla_doctor.uninstall()
    process.reset_collected()
    assert process.internal_errors == before, "an integration or handler failed; see the log"


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    create_and_seed(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(engine: Engine) -> AsyncIterator[AsyncEngine]:
    """The same seeded database, through aiosqlite."""
    async_engine = create_async_engine(engine.url.set(drivername="sqlite+aiosqlite"))
    yield async_engine
    await async_engine.dispose()
