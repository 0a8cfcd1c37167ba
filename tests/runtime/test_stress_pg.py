"""The stress test on PostgreSQL: psycopg 3 in 32 threads, asyncpg in 500 tasks.

Same jobs and assertions as test_stress.py (see there); asyncpg fails for real when two
tasks reach one connection, which the shared-session job tolerates as SQLAlchemy's
refusal and the doctor still reports once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from pgserver import PgDatabase

from .models import Base, create_and_seed, seed_objects
from .test_stress import THREADS, hold_statements, stress_tasks, stress_threads


@pytest.fixture
def pg_stress_engine(pg_database: PgDatabase) -> Iterator[Engine]:
    engine = create_engine(pg_database.url, pool_size=THREADS + 8)
    hold_statements(engine)
    create_and_seed(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def pg_stress_async_engine(pg_database: PgDatabase) -> AsyncEngine:
    # Fewer connections than tasks: the server's max_connections is 100.
    engine = create_async_engine(
        pg_database.async_url, pool_size=40, max_overflow=0, pool_timeout=120
    )
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        session.add_all(seed_objects())
        await session.commit()
    return engine


def test_32_psycopg_threads_every_detector_on(pg_stress_engine: Engine) -> None:
    stress_threads(pg_stress_engine, 2.0)


async def test_500_asyncpg_tasks_every_detector_on(pg_stress_async_engine: AsyncEngine) -> None:
    await stress_tasks(pg_stress_async_engine, 2.0)


@pytest.mark.slow
def test_32_psycopg_threads_for_30_seconds(pg_stress_engine: Engine) -> None:
    stress_threads(pg_stress_engine, 30.0)


@pytest.mark.slow
async def test_500_asyncpg_tasks_for_30_seconds(pg_stress_async_engine: AsyncEngine) -> None:
    await stress_tasks(pg_stress_async_engine, 30.0)
