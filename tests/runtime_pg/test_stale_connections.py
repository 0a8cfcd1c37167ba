"""P21 on PostgreSQL: pooled connections killed by the server (pg_terminate_backend).

Without ``pool_pre_ping`` the next request fails (and SQD452 explains why); with it the
pool notices at checkout and reconnects, and the request succeeds.
"""

from __future__ import annotations

import sys

import psycopg
import pytest
from sqlalchemy import create_engine, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .conftest import POOL
from .models import Account
from .support import here, line_of, of_code, one

CONFIG = RuntimeConfig(mode="collect")


def terminate_pooled_backends(url: str, pids: set[int]) -> None:
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def pool_two_connections(engine: object) -> set[int]:
    """Check out both connections of the pool at once, note their backends, return them."""
    with Session(engine) as first, Session(engine) as second:  # type: ignore[call-overload]
        return {
            first.scalar(text("SELECT pg_backend_pid()")),
            second.scalar(text("SELECT pg_backend_pid()")),
        }


def test_without_pre_ping_the_next_query_fails_and_is_explained(database_url: str) -> None:
    engine = create_engine(database_url, **POOL)  # type: ignore[arg-type]
    try:
        pids = pool_two_connections(engine)
        terminate_pooled_backends(database_url, pids)
        tracker = sqla_doctor.track(config=CONFIG)
        with pytest.raises(OperationalError) as raised, tracker, Session(engine) as session:
            session.scalar(select(Account.name).where(Account.id == 1))  # line:stale
        # What the user gets: the server's words, and SQLAlchemy's verdict.
        assert raised.value.connection_invalidated
        assert "terminating connection due to administrator command" in str(raised.value)
        assert tracker.last is not None
        finding = one(tracker.last.findings, "SQD452")
        assert finding.location.line == line_of("stale")
        assert finding.message.startswith(
            f"OperationalError at {here(__file__)}:{line_of('stale')}: the database had "
            "closed this pooled connection before the statement ran"
        )
        assert "pool_pre_ping=True" in finding.message
        assert finding.fix_hint == "create_engine(..., pool_pre_ping=True)"
        if sys.version_info >= (3, 11):
            assert any(note.startswith("sqla-doctor: SQD452") for note in raised.value.__notes__)
        # SQLAlchemy invalidated the pool: the retry gets fresh connections.
        with Session(engine) as session:
            assert session.scalar(select(Account.name).where(Account.id == 1)) == "account1"
    finally:
        engine.dispose()


def test_with_pre_ping_the_pool_reconnects_and_nothing_fails(database_url: str) -> None:
    engine = create_engine(database_url, pool_pre_ping=True, **POOL)  # type: ignore[arg-type]
    try:
        pids = pool_two_connections(engine)
        terminate_pooled_backends(database_url, pids)
        with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
            assert session.scalar(select(Account.name).where(Account.id == 1)) == "account1"
            new_pid = session.scalar(text("SELECT pg_backend_pid()"))
        assert new_pid not in pids
        assert not of_code(uow.findings, "SQD452")
        assert not uow.findings
    finally:
        engine.dispose()


def test_a_stale_connection_the_program_catches_is_explained(database_url: str) -> None:
    # A retry loop (or a framework's 500) catches the first failure: explained all the same.
    engine = create_engine(database_url, **POOL)  # type: ignore[arg-type]
    try:
        terminate_pooled_backends(database_url, pool_two_connections(engine))
        with sqla_doctor.track(config=CONFIG) as uow:
            for _attempt in range(2):
                try:
                    with Session(engine) as session:
                        session.scalar(select(Account.name).where(Account.id == 1))  # line:retry
                    break
                except OperationalError:
                    continue
        finding = one(uow.findings, "SQD452")
        assert finding.location.line == line_of("retry")
    finally:
        engine.dispose()


async def test_a_stale_asyncpg_connection_is_explained(pg_database: object) -> None:
    engine = create_async_engine(pg_database.async_url, **POOL)  # type: ignore[attr-defined, arg-type]
    sync_url = pg_database.url  # type: ignore[attr-defined]
    try:
        async with AsyncSession(engine) as first, AsyncSession(engine) as second:
            pids = {
                await first.scalar(text("SELECT pg_backend_pid()")),
                await second.scalar(text("SELECT pg_backend_pid()")),
            }
        terminate_pooled_backends(sync_url, pids)
        tracker = sqla_doctor.track(config=CONFIG)
        with pytest.raises(DBAPIError) as raised:
            async with tracker, AsyncSession(engine) as session:
                await session.scalar(select(Account.name).where(Account.id == 1))  # line:async
        assert raised.value.connection_invalidated
        assert tracker.last is not None
        finding = one(tracker.last.findings, "SQD452")
        assert finding.location.line == line_of("async")
        assert finding.fix_hint == "create_async_engine(..., pool_pre_ping=True)"
    finally:
        await engine.dispose()


def test_with_pre_ping_a_backend_killed_mid_transaction_is_told_to_retry(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_pre_ping=True, **POOL)  # type: ignore[arg-type]
    try:
        with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            terminate_pooled_backends(database_url, {pid})  # a failover, a DBA
            with pytest.raises(OperationalError):
                session.scalar(select(Account.name).where(Account.id == 1))  # line:mid
        finding = one(uow.findings, "SQD452")
        assert finding.location.line == line_of("mid")
        # pre-ping is on: advising it again would be wrong; the transaction must be retried.
        assert "create the engine with pool_pre_ping=True" not in finding.message
        assert "retry it from the start" in finding.message
        assert finding.details["pre_ping"] is True
        assert not finding.related
    finally:
        engine.dispose()
