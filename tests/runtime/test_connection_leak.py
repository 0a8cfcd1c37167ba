"""SQD154: connections checked out and never closed."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

import sqla_doctor

from .support import line_of, of_code, one, relative


def connect_and_forget(engine: Engine) -> Connection:
    connection = engine.connect()  # line:connect
    connection.execute(text("SELECT 1"))
    return connection


def test_connection_still_checked_out_at_the_end_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        connection = connect_and_forget(engine)
    finding = one(uow.findings, "SQD154")
    here = relative(__file__)
    assert finding.location.line == line_of("connect")
    assert finding.message == (
        f"connection checked out at {here}:{line_of('connect')} is still checked out at the end "
        "of the unit of work — close it: `with engine.connect() as connection:` (or "
        "connection.close() in a finally block)"
    )
    assert finding.details["stack"][0] == f"{here}:{line_of('connect')} in connect_and_forget"
    assert finding.fix_hint == "with engine.connect() as connection: ..."
    connection.close()


def test_the_fix_names_the_engine_and_the_name_the_line_used(engine: Engine) -> None:
    warehouse = engine
    with sqla_doctor.track(mode="collect") as uow:
        db = warehouse.connect()  # line:named-connect
        db.execute(text("SELECT 1"))
    finding = one(uow.findings, "SQD154")
    assert finding.location.line == line_of("named-connect")
    assert finding.message.endswith(
        "— close it: `with warehouse.connect() as db:` (or db.close() in a finally block)"
    )
    assert finding.fix_hint == "with warehouse.connect() as db: ..."
    db.close()


def test_a_connection_not_assigned_on_its_line_gets_the_generic_fix(engine: Engine) -> None:
    held: list[Connection] = []
    with sqla_doctor.track(mode="collect") as uow:
        held.append(engine.connect())  # line:appended-connect
    finding = one(uow.findings, "SQD154")
    assert finding.location.line == line_of("appended-connect")
    assert finding.fix_hint == "with engine.connect() as connection: ..."
    held[0].close()


def test_with_block_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert not uow.findings


def export_rows(engine: Engine) -> list[Any]:
    raw = engine.raw_connection()  # line:raw
    cursor = raw.cursor()
    cursor.execute("SELECT 1")
    return list(cursor.fetchall())


def test_raw_connection_never_closed_is_told_to_close_the_dbapi_connection(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        export_rows(engine)
    finding = one(uow.findings, "SQD154")
    assert finding.location.line == line_of("raw")
    # Dropped when export_rows() returns: the garbage collector returned it.
    assert finding.message.endswith(
        "— close it: `raw.close()` in a finally block, or "
        "`with contextlib.closing(engine.raw_connection()) as raw:`; its close() returns it "
        "to the pool"
    )
    assert "engine.connect()" not in finding.message
    assert finding.fix_hint == "with contextlib.closing(engine.raw_connection()) as raw: ..."
    assert finding.details["raw_connection"] is True


def test_raw_connection_closed_is_the_silent_twin(engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        contextlib.closing(engine.raw_connection()) as raw,
    ):
        cursor = raw.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchall()
    assert not of_code(uow.findings, "SQD154")


def test_connection_returned_by_the_garbage_collector_is_reported(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    connect_and_forget(engine)
    gc.collect()
    finding = one(sqla_doctor.collected(), "SQD154")
    assert finding.location.line == line_of("connect")
    assert "the garbage collector returned it to the pool" in finding.message


def test_session_connections_are_not_reported_as_connection_leaks(engine: Engine) -> None:
    from sqlalchemy.orm import Session

    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        session.execute(text("SELECT 1"))
    assert of_code(uow.findings, "SQD151")
    assert not of_code(uow.findings, "SQD154")
    session.close()


def open_test_transaction(engine: Engine) -> Iterator[Session]:
    # The transaction-per-test fixture, which forgets to close its connection.
    connection = engine.connect()  # line:fixture-connect
    connection.begin()
    with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
        yield session


def test_a_connection_a_session_was_bound_to_and_nobody_closed_is_reported(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        for session in open_test_transaction(engine):
            session.execute(text("SELECT 1"))
            session.commit()
    finding = one(uow.findings, "SQD154")
    assert finding.location.line == line_of("fixture-connect")
    assert not of_code(uow.findings, "SQD151")


def test_the_fixture_that_rolls_back_and_closes_its_connection_is_the_silent_twin(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        connection = engine.connect()
        transaction = connection.begin()
        with Session(bind=connection, join_transaction_mode="create_savepoint") as session:
            session.execute(text("SELECT 1"))
            session.commit()
        transaction.rollback()
        connection.close()
    assert not uow.findings


async def test_async_connection_left_open_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow:
        connection = await async_engine.connect()  # line:async-connect
        await connection.execute(text("SELECT 1"))
    finding = one(uow.findings, "SQD154")
    assert finding.location.line == line_of("async-connect")
    # The engine and the name the line used, not a generic engine.connect() as conn.
    assert finding.message.endswith(
        "— close it: `async with async_engine.connect() as connection:` (or `await "
        "connection.close()` in a finally block)"
    )
    assert finding.fix_hint == "async with async_engine.connect() as connection: ..."
    await connection.close()


async def test_async_with_block_is_the_silent_twin(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, async_engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    assert not uow.findings


def test_two_connections_a_static_pool_shares_are_each_seen_closed() -> None:
    """StaticPool hands its one connection to a second checkout while the first holds
    it, and fires one checkin for both, at the first return: the second return is told
    by its reset event, not taken for a leak (nor for the garbage collector's)."""
    engine = create_engine("sqlite://", poolclass=StaticPool)
    with sqla_doctor.track(mode="collect") as uow:
        first = engine.connect()
        first.execute(text("SELECT 1"))
        second = engine.connect()
        second.execute(text("SELECT 2"))
        second.close()
        first.close()
    del first, second
    gc.collect()
    assert of_code(uow.findings, "SQD154") == []
    assert of_code(sqla_doctor.collected(), "SQD154") == []


def test_a_static_pool_connection_left_open_while_another_came_and_went_is_reported() -> None:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    with sqla_doctor.track(mode="collect") as uow:
        first = engine.connect()  # line:first-open
        first.execute(text("SELECT 1"))
        with engine.connect() as second:
            second.execute(text("SELECT 2"))
    assert one(uow.findings, "SQD154").location.line == line_of("first-open")
    first.close()


def test_a_second_binds_connection_is_the_sessions_not_a_leak(tmp_path: Path) -> None:
    """Session(binds={...}) begins a transaction on each bind's connection: the second
    one is the session's too, and its leak (if any) is the session's (SQD151)."""
    engines = [create_engine(f"sqlite:///{tmp_path / name}.db") for name in ("a", "b")]
    for each in engines:
        with each.begin() as connection:
            connection.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    session = Session()
    try:
        with sqla_doctor.track(mode="collect") as uow:
            for each in engines:
                session.execute(text("SELECT id FROM t"), bind_arguments={"bind": each})
        assert of_code(uow.findings, "SQD154") == []
        assert of_code(uow.findings, "SQD151") != []
    finally:
        session.close()
