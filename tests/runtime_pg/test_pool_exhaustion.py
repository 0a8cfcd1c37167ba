"""P06/P08 on PostgreSQL: leaked sessions drain a two-connection pool under concurrency.

The leaking requests are told where they leaked (SQD151); the requests that then wait
for a connection and time out get the pool's TimeoutError explained with who holds the
connections (SQD451).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .models import Account
from .support import here, line_of, one

CONFIG = RuntimeConfig(mode="collect")
REQUESTS = 6


def leaky_handler(engine: Engine, leaked: list[Session]) -> str | None:
    session = Session(engine)
    leaked.append(session)  # kept alive, as a module-level cache or a closure would
    return session.scalar(select(Account.name).where(Account.id == 1))  # line:leak


def test_leaked_sessions_drain_the_pool_and_each_report_names_the_line(
    pg_engine: Engine,
) -> None:
    leaked: list[Session] = []
    outcomes: dict[int, tuple[str, Any]] = {}
    lock = threading.Lock()

    def request(number: int) -> None:
        tracker = sqla_doctor.track(f"request {number}", config=CONFIG)
        try:
            with tracker:
                leaky_handler(pg_engine, leaked)
            outcome = "served"
        except PoolTimeoutError as error:
            outcome = f"timed out: {error}"
        with lock:
            outcomes[number] = (outcome, tracker.last)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        served = [uow for outcome, uow in outcomes.values() if outcome == "served"]
        failed = [(o, uow) for o, uow in outcomes.values() if o != "served"]
        # The real behaviour: two requests get the two connections and never give them back;
        # every later one waits pool_timeout and fails.
        assert len(served) == 2
        assert len(failed) == REQUESTS - 2
        assert all("QueuePool limit of size 2 overflow 0 reached" in o for o, _ in failed)
        where = f"{here(__file__)}:{line_of('leak')}"
        for uow in served:
            leak = one(uow.findings, "SQD151")
            assert f"{leak.location.path}:{leak.location.line}" == where
            assert leak.message.startswith(
                f"Session whose transaction began at {where} still holds its connection at the "
                "end of the unit of work"
            )
        for _, uow in failed:
            explained = one(uow.findings, "SQD451")
            assert explained.message.startswith("checkout at ")
            assert "timed out: QueuePool limit of size 2 overflow 0 reached — held by: " in (
                explained.message
            )
            # Both holders named, at the leaking line.
            assert explained.message.count(f"{where} in leaky_handler (Session, held ") == 2
            assert len(explained.details["holders"]) == 2
    finally:
        for session in leaked:
            session.close()


async def async_leaky_handler(engine: AsyncEngine, leaked: list[AsyncSession]) -> str | None:
    session = AsyncSession(engine)
    leaked.append(session)
    return await session.scalar(select(Account.name).where(Account.id == 1))  # line:async-leak


async def test_leaked_async_sessions_drain_the_pool_under_asyncpg(
    pg_async_engine: AsyncEngine,
) -> None:
    leaked: list[AsyncSession] = []

    async def request(number: int) -> tuple[str, Any]:
        tracker = sqla_doctor.track(f"request {number}", config=CONFIG)
        try:
            async with tracker:
                await async_leaky_handler(pg_async_engine, leaked)
        except PoolTimeoutError as error:
            return f"timed out: {error}", tracker.last
        return "served", tracker.last

    try:
        outcomes = await asyncio.gather(*(request(n) for n in range(REQUESTS)))
        served = [uow for outcome, uow in outcomes if outcome == "served"]
        failed = [(o, uow) for o, uow in outcomes if o != "served"]
        assert len(served) == 2
        assert len(failed) == REQUESTS - 2
        where = f"{here(__file__)}:{line_of('async-leak')}"
        for uow in served:
            leak = one(uow.findings, "SQD151")
            assert f"{leak.location.path}:{leak.location.line}" == where
        for outcome, uow in failed:
            assert "QueuePool limit of size 2 overflow 0 reached" in outcome
            explained = one(uow.findings, "SQD451")
            assert explained.message.count(f"{where} in async_leaky_handler (Session") == 2
    finally:
        for session in leaked:
            await session.close()


def test_saturation_is_warned_before_the_timeout_with_the_holder(pg_engine: Engine) -> None:
    # Reported once a connection stays out this long after the pool filled.
    config = RuntimeConfig(mode="collect", held_connection_seconds=0.05)
    with sqla_doctor.track(config=config) as uow:
        first = Session(pg_engine)
        first.get(Account, 1)  # line:first-holder
        with Session(pg_engine) as second:
            second.get(Account, 2)  # line:second
            time.sleep(0.1)  # both connections stay out
        first.close()
    warning = one(uow.findings, "SQD451")
    where = here(__file__)
    assert warning.location.line == line_of("second")
    assert warning.message.startswith(
        f"pool of {pg_engine.url!r} at 2/2 connections (pool_size 2 + max_overflow 0) after the "
        f"checkout at {where}:{line_of('second')} — held by: this checkout (Session, held "
    )
    assert (
        f"; thread MainThread) and 1 other: {where}:{line_of('first-holder')} in "
        "test_saturation_is_warned_before_the_timeout_with_the_holder (Session, held "
    ) in warning.message
    # The password never appears: the URL is shown as SQLAlchemy's repr() shows it.
    assert "***" in repr(pg_engine.url) or pg_engine.url.password is None


def test_closing_sessions_is_the_silent_twin(pg_engine: Engine) -> None:
    results: list[list[str]] = []

    def request() -> None:
        with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
            session.get(Account, 1)
        results.append([f.code for f in uow.findings])

    threads = [threading.Thread(target=request) for _ in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Every request is served: six requests share two connections, each for a moment.
    assert len(results) == REQUESTS
    assert all("SQD151" not in codes for codes in results)
    assert all("SQD157" not in codes for codes in results)
