"""SQD160: a transaction left open ("idle in transaction") past the threshold."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .models import Post, User
from .support import line_of, of_code, one, relative

OPEN = 0.08
PAUSE = 0.15
# SQD157 has its own tests: keep it out of these.
CONFIG = RuntimeConfig(
    mode="collect", idle_transaction_seconds=OPEN, held_connection_seconds=60, ignore=("SQD157",)
)


def test_many_short_waits_add_up_to_an_idle_transaction(engine: Engine) -> None:
    """A short slow call per row: no gap is long, together they are the transaction."""
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        session.get(User, 1)  # line:per-row-begin
        for _ in range(60):
            time.sleep(PAUSE / 30)  # a geocoding call per row
            session.execute(text("SELECT 1"))  # line:per-row
        session.commit()
    finding = one(uow.findings, "SQD160")
    assert finding.location.line == line_of("per-row-begin")
    details = finding.details
    assert details["idle_total_seconds"] > 0.5 * details["open_seconds"]
    assert details["idle_seconds"] < 0.1 * details["open_seconds"]
    assert (
        f"{details['idle_total_seconds']:.2f}s of it idle between statements (the longest "
        f"stretch {details['idle_seconds']:.2f}s, after the statement at "
    ) in finding.message
    assert "busy all along" not in finding.message
    assert finding.fix_hint == "commit before slow work, or do it before the transaction begins"


def test_short_waits_made_before_the_transaction_are_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        for _ in range(60):
            time.sleep(PAUSE / 30)
        with Session(engine) as session:
            session.get(User, 1)
            for _ in range(60):
                session.execute(text("SELECT 1"))
            session.commit()
    assert not of_code(uow.findings, "SQD160")


def test_transaction_open_across_a_slow_call_is_reported_where_it_began(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        user = session.get(User, 1)  # line:begin
        assert user is not None
        user.name = "locked"
        session.flush()  # line:flush
        time.sleep(PAUSE)
        session.commit()  # line:commit
    finding = one(uow.findings, "SQD160")
    here = relative(__file__)
    assert finding.location.line == line_of("begin")
    details = finding.details
    assert details["began"] == f"{here}:{line_of('begin')}"
    assert details["ended"] == f"{here}:{line_of('commit')}"
    assert details["open_seconds"] >= PAUSE
    assert PAUSE <= details["idle_seconds"] <= details["open_seconds"]
    assert finding.message == (
        f"Session transaction that began at {here}:{line_of('begin')} was open "
        f"{details['open_seconds']:.2f}s (threshold 0.08s), {details['idle_seconds']:.2f}s of "
        f"it idle after its last statement at {here}:{line_of('flush')}, until commit at "
        f"{here}:{line_of('commit')} — commit (or roll back) as soon as the database work is "
        "done and do slow work outside the transaction; on PostgreSQL, "
        "`idle_in_transaction_session_timeout` bounds the damage"
    )


def test_slow_work_between_two_statements_is_the_idle_time_reported(engine: Engine) -> None:
    # The nightly report: read, crunch, then write the summary the commit flushes. The
    # gap is between the read and the flush's INSERT, not after the last statement.
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        session.scalars(select(User.name)).all()  # line:read
        time.sleep(PAUSE)
        session.add(User(name="summary"))
        session.commit()  # line:write
    finding = one(uow.findings, "SQD160")
    here = relative(__file__)
    assert finding.details["idle_seconds"] >= PAUSE
    assert f"of it idle after the statement at {here}:{line_of('read')}, until commit" in (
        finding.message
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("read"), "idle after this statement"),
        (line_of("write"), "last statement"),
        (line_of("write"), "ended here"),
    ]


def test_a_transaction_busy_all_along_is_told_to_commit_in_chunks(engine: Engine) -> None:
    """A batch import: the flush's statements (and SQLAlchemy's work between them) take
    the time, nothing idles; moving slow work out of the transaction is no fix."""

    def build_parameters(mapper: object, connection: object, target: object) -> None:
        # Ordering and building the parameters of a large batch. Longer than the other
        # tests' pauses: on a loaded machine SQLAlchemy's own work between the get() and
        # the flush has taken 30 ms, which must stay under a tenth of the transaction.
        time.sleep(4 * PAUSE)

    event.listen(Post, "before_insert", build_parameters)
    try:
        with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
            session.get(User, 1)  # line:batch-begin
            session.add(User(name="importer", posts=[Post(title="imported")]))
            session.commit()  # line:batch-commit
    finally:
        event.remove(Post, "before_insert", build_parameters)
    finding = one(uow.findings, "SQD160")
    here = relative(__file__)
    assert finding.location.line == line_of("batch-begin")
    assert finding.details["idle_seconds"] < 0.1 * finding.details["open_seconds"]
    assert finding.message.endswith(
        f"busy all along (its longest idle stretch {finding.details['idle_seconds']:.2f}s), "
        f"until commit at {here}:{line_of('batch-commit')} — one transaction for the whole "
        "batch holds its locks (and on PostgreSQL its snapshot) that long: commit in chunks "
        "of a few thousand rows, each in a transaction of its own"
    )
    assert finding.fix_hint == "commit in chunks: one transaction per few thousand rows"


def test_commit_before_the_slow_call_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        user.name = "locked"
        session.commit()
        time.sleep(PAUSE)
        session.get(User, 2)
        session.commit()
    assert not of_code(uow.findings, "SQD160")


def test_transaction_still_open_at_the_end_of_the_unit_is_reported(engine: Engine) -> None:
    session = Session(engine)
    with sqla_doctor.track(config=CONFIG) as uow:
        session.execute(text("SELECT 1"))  # line:still-open
        time.sleep(PAUSE)
    finding = one(uow.findings, "SQD160")
    assert finding.location.line == line_of("still-open")
    assert finding.message.endswith(
        "and was still open at the end of the unit of work — commit (or roll back) as soon as "
        "the database work is done and do slow work outside the transaction; on PostgreSQL, "
        "`idle_in_transaction_session_timeout` bounds the damage"
    )
    session.close()


def test_core_transaction_block_is_reported_at_its_begin(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, engine.begin() as connection:
        connection.execute(text("UPDATE users SET name = 'x' WHERE id = 1"))  # line:update
        time.sleep(PAUSE)
    finding = one(uow.findings, "SQD160")
    assert finding.message.startswith("Connection transaction that began at")
    assert finding.details["ended"] is not None


def test_autocommit_connections_open_no_transaction_and_are_silent(
    engine: Engine, tmp_path: Path
) -> None:
    """BEGIN on an AUTOCOMMIT connection opens nothing on the server: nothing to hold."""
    autocommit_engine = create_engine(
        f"sqlite:///{tmp_path / 'app.db'}", isolation_level="AUTOCOMMIT"
    )
    try:
        with sqla_doctor.track(config=CONFIG) as uow:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("SELECT 1"))
                time.sleep(PAUSE)
                connection.execute(text("SELECT 2"))
            with autocommit_engine.connect() as connection:
                connection.execute(text("SELECT 1"))
                time.sleep(PAUSE)
    finally:
        autocommit_engine.dispose()
    assert not of_code(uow.findings, "SQD160")


def test_short_transactions_are_silent(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        for user_id in (1, 2, 3):
            with Session(engine) as session:
                session.get(User, user_id)
                session.commit()
        with engine.begin() as connection:
            connection.execute(text("SELECT 1"))
    assert not of_code(uow.findings, "SQD160")


async def test_async_session_open_across_await_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(config=CONFIG) as uow, AsyncSession(async_engine) as session:
        await session.get(User, 1)  # line:async-begin
        await asyncio.sleep(PAUSE)
        await session.commit()  # line:async-commit
    finding = one(uow.findings, "SQD160")
    assert finding.location.line == line_of("async-begin")
    assert finding.details["ended"].endswith(f":{line_of('async-commit')}")


async def test_async_commit_before_await_is_the_silent_twin(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(config=CONFIG) as uow, AsyncSession(async_engine) as session:
        await session.get(User, 1)
        await session.commit()
        await asyncio.sleep(PAUSE)
    assert not of_code(uow.findings, "SQD160")


def slow_function(session: Session) -> None:
    """slow(x): x after PAUSE seconds of work in the database (SQLite runs it)."""
    dbapi = session.connection().connection.dbapi_connection  # line:slow-begin
    assert dbapi is not None
    dbapi.create_function("slow", 1, lambda x: time.sleep(PAUSE) or x)


def test_a_transaction_that_is_one_slow_read_is_silent(engine: Engine) -> None:
    # An analytics job: one slow aggregate in a short transaction. Committing sooner
    # cannot shorten the statement; "commit in chunks of a few thousand rows" was the
    # advice.
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        slow_function(session)
        assert session.execute(text("SELECT slow(count(*)) FROM users")).scalar() == 5
        session.commit()
    assert not of_code(uow.findings, "SQD160")


def test_a_slow_read_still_open_at_the_end_of_the_unit_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        session = Session(engine)
        slow_function(session)
        session.execute(text("SELECT slow(1)"))
    session.close()
    assert not of_code(uow.findings, "SQD160")


def test_one_slow_write_is_still_told_to_commit_in_chunks(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        slow_function(session)
        session.execute(text("UPDATE users SET name = slow(name) WHERE id = 1"))
        session.commit()
    finding = one(uow.findings, "SQD160")
    assert finding.location.line == line_of("slow-begin")
    assert "busy all along" in finding.message
    assert finding.fix_hint == "commit in chunks: one transaction per few thousand rows"


def test_a_slow_read_then_slow_work_in_the_transaction_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        slow_function(session)
        session.execute(text("SELECT slow(1)"))  # line:slow-read
        time.sleep(PAUSE)  # waiting for the next message from a queue
        session.execute(text("SELECT 1"))
        session.commit()
    finding = one(uow.findings, "SQD160")
    assert f"idle after the statement at {relative(__file__)}:{line_of('slow-read')}" in (
        finding.message
    )
