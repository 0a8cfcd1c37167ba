"""SQD161: SQLite's "database is locked" explained with the session holding the lock."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Finding

from .models import Base, User, create_and_seed
from .support import line_of, of_code, one, relative


@pytest.fixture
def impatient_engine(tmp_path: Path) -> Iterator[Engine]:
    """SQLite waiting only 0.1 s for another writer (Python's default is 5 s)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}", connect_args={"timeout": 0.1})
    create_and_seed(engine)
    yield engine
    engine.dispose()


def hold_the_write_lock(engine: Engine, taken: threading.Event, done: threading.Event) -> None:
    # Another request, in its own unit of work (as the middleware would make it).
    with sqla_doctor.track(mode="collect"), Session(engine) as session:
        session.add(User(name="slow writer"))
        session.flush()  # line:holder
        taken.set()
        done.wait(10)  # an HTTP call, while the lock is held
        session.commit()


def write_once(engine: Engine, units: list[sqla_doctor.UnitOfWork]) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        units.append(uow)
        session.add(User(name="second writer"))
        session.commit()  # line:blocked


def read_missing_table(engine: Engine, units: list[sqla_doctor.UnitOfWork]) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        units.append(uow)
        session.execute(text("SELECT * FROM no_such_table"))


def test_locked_database_names_the_session_holding_the_lock(impatient_engine: Engine) -> None:
    taken, done = threading.Event(), threading.Event()
    holder = threading.Thread(
        target=hold_the_write_lock, args=(impatient_engine, taken, done), name="worker-1"
    )
    holder.start()
    assert taken.wait(10)
    units: list[sqla_doctor.UnitOfWork] = []
    try:
        with pytest.raises(OperationalError) as raised:
            write_once(impatient_engine, units)
    finally:
        done.set()
        holder.join()
    finding = one(units[0].findings, "SQD161")
    here = relative(__file__)
    assert finding.location.line == line_of("blocked")
    assert finding.message.startswith(
        f"SQLite database is locked at {here}:{line_of('blocked')}: the write lock is held by "
        f"the Session that flushed writes at {here}:{line_of('holder')} in thread worker-1 "
        "and has not committed ("
    )
    assert [r.location.line for r in finding.related][:1] == [line_of("holder")]
    assert finding.fix_hint == 'create_engine(url, connect_args={"timeout": 15})'
    assert any(n.startswith("sqla-doctor: SQD161") for n in raised.value.__notes__)


def test_a_lock_held_by_another_process_is_said_to_be_elsewhere(
    impatient_engine: Engine,
) -> None:
    # A raw connection that is not a Session plays the other process.
    other = impatient_engine.raw_connection()
    units: list[sqla_doctor.UnitOfWork] = []
    try:
        other.cursor().execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError):
            write_once(impatient_engine, units)
    finally:
        other.rollback()
        other.close()
    finding = one(units[0].findings, "SQD161")
    assert "another process" in finding.message


def test_writers_that_commit_promptly_are_silent(impatient_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        for name in ("a", "b"):
            with Session(impatient_engine) as session:
                session.add(User(name=name))
                session.commit()
    assert not of_code(uow.findings, "SQD161")


def test_other_operational_errors_are_not_explained_as_locks(impatient_engine: Engine) -> None:
    units: list[sqla_doctor.UnitOfWork] = []
    with pytest.raises(OperationalError):
        read_missing_table(impatient_engine, units)
    assert not of_code(units[0].findings, "SQD161")


def retrying_writer(engine: Engine, attempts: list[str]) -> None:
    """A worker that catches the error and lets its scheduler retry: nothing is logged."""
    try:
        with Session(engine) as session:
            session.add(User(name="queued"))
            session.commit()  # line:caught
        attempts.append("written")
    except OperationalError:
        attempts.append("retry later")


@pytest.mark.parametrize("tracked", [True, False], ids=["track", "install"])
def test_a_lock_error_the_program_catches_is_explained_while_raised(
    impatient_engine: Engine, tracked: bool
) -> None:
    other = impatient_engine.raw_connection()
    attempts: list[str] = []
    config = RuntimeConfig(mode="collect")
    try:
        other.cursor().execute("BEGIN IMMEDIATE")
        if tracked:
            with sqla_doctor.track(config=config) as uow:
                retrying_writer(impatient_engine, attempts)
            findings = uow.findings
        else:
            sqla_doctor.install(config=config)
            retrying_writer(impatient_engine, attempts)
            findings = sqla_doctor.collected()
    finally:
        other.rollback()
        other.close()
    assert attempts == ["retry later"]
    finding = one(findings, "SQD161")
    assert finding.location.line == line_of("caught")
    assert "another process" in finding.message


async def test_async_sessions_on_aiosqlite_name_the_session_holding_the_lock(
    tmp_path: Path,
) -> None:
    # Two tasks of one asyncio service: the first flushes, then awaits a slow call
    # before committing; the second one's commit waits 0.1 s for the lock and fails.
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", connect_args={"timeout": 0.1}
    )
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    taken, done = asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:
        async with sqla_doctor.track(mode="collect"), AsyncSession(engine) as session:
            session.add(User(name="slow writer"))
            await session.flush()  # line:async-holder
            taken.set()
            await done.wait()  # an HTTP call, while the lock is held
            await session.commit()

    async def commit_second(tracker: sqla_doctor.Tracker) -> None:
        async with tracker, AsyncSession(engine) as session:
            session.add(User(name="second writer"))
            await session.commit()  # line:async-blocked

    async def second_writer() -> sqla_doctor.UnitOfWork:
        tracker = sqla_doctor.track(mode="collect")
        with pytest.raises(OperationalError):
            await commit_second(tracker)
        assert tracker.last is not None
        return tracker.last

    holder = asyncio.create_task(slow_writer(), name="checkout")
    await taken.wait()
    try:
        uow = await second_writer()
    finally:
        done.set()
        await holder
    await engine.dispose()
    finding = one(uow.findings, "SQD161")
    here = relative(__file__)
    assert finding.location.line == line_of("async-blocked")
    # The holder is the task that flushed, not the event loop's thread; the engine to
    # give a busy timeout is made by create_async_engine().
    assert finding.message.startswith(
        f"SQLite database is locked at {here}:{line_of('async-blocked')}: the write lock is "
        f"held by the Session that flushed writes at {here}:{line_of('async-holder')} in task "
        f"checkout ({slow_writer.__qualname__}) and has not committed"
    )
    assert finding.fix_hint == 'create_async_engine(url, connect_args={"timeout": 15})'


async def test_async_writers_that_commit_promptly_are_silent(tmp_path: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'app.db'}", connect_args={"timeout": 0.1}
    )
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)

    async def writer(name: str) -> list[Finding]:
        async with sqla_doctor.track(mode="collect") as uow, AsyncSession(engine) as session:
            session.add(User(name=name))
            await session.commit()
        return uow.findings

    found = await asyncio.gather(*(writer(name) for name in "abc"))
    await engine.dispose()
    assert not of_code([f for unit in found for f in unit], "SQD161")


def reading_engine(path: Path, *, wal: bool) -> Engine:
    """SQLite whose reads begin a transaction too (SQLAlchemy's pysqlite recipe for
    real transactions), in the rollback-journal mode or in WAL."""
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.1})
    create_and_seed(engine)
    engine.dispose()
    if wal:
        raw = engine.raw_connection()
        raw.driver_connection.execute("PRAGMA journal_mode=WAL")
        raw.close()
        engine.dispose()

    @event.listens_for(engine, "connect")
    def _no_pysqlite_transactions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")

    return engine


def read_slowly(engine: Engine, reading: threading.Event, done: threading.Event) -> None:
    # Another request, in its own unit of work (as the middleware would make it).
    with sqla_doctor.track(mode="collect"), Session(engine) as session:
        session.scalars(select(User)).all()  # line:reader
        reading.set()
        done.wait(10)  # a report rendered while the read transaction is open
        session.commit()


@pytest.mark.parametrize("tracked", [True, False], ids=["track", "install"])
@pytest.mark.parametrize("wal", [False, True], ids=["rollback-journal", "wal"])
def test_a_commit_blocked_by_a_read_transaction_names_the_reader(
    tmp_path: Path, tracked: bool, wal: bool
) -> None:
    engine = reading_engine(tmp_path / "app.db", wal=wal)
    config = RuntimeConfig(mode="collect")
    attempts: list[str] = []
    reading, done = threading.Event(), threading.Event()
    reader = threading.Thread(target=read_slowly, args=(engine, reading, done), name="report")
    if not tracked:
        sqla_doctor.install(config=config)
    try:
        with sqla_doctor.track(config=config) if tracked else contextlib.nullcontext() as uow:
            reader.start()
            assert reading.wait(10)
            retrying_writer(engine, attempts)
    finally:
        done.set()
        reader.join()
        engine.dispose()
    findings = uow.findings if uow is not None else sqla_doctor.collected()
    if wal:  # the silent twin: in WAL, readers never block the writer's commit
        assert attempts == ["written"]
        assert not of_code(findings, "SQD161")
        return
    assert attempts == ["retry later"]
    finding = one(findings, "SQD161")
    assert finding.location.line == line_of("caught")
    assert (
        "the COMMIT needs SQLite's exclusive lock, and the Session whose read transaction "
        f"began at {relative(__file__)}:{line_of('reader')} in thread report ("
    ) in finding.message
    assert "enable WAL mode, where readers never block a commit" in finding.message
    assert finding.fix_hint == "PRAGMA journal_mode=WAL"
