"""P04 on PostgreSQL: a caught error aborts the transaction; SQD164 names it on the next
statement's "current transaction is aborted" (SQLSTATE 25P02)."""

from __future__ import annotations

import contextlib
import logging
import threading

import pytest
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InternalError,
    OperationalError,
    PendingRollbackError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Finding

from .models import Account
from .support import here, line_of, of_code, one

CONFIG = RuntimeConfig(mode="collect", held_connection_seconds=60)
log = logging.getLogger(__name__)
# Account 1 exists: its id is taken.
ROWS = [{"id": 1, "name": "dup", "balance": 0}, {"id": 50, "name": "new", "balance": 0}]


def import_accounts(session: Session) -> None:
    for row in ROWS[:1]:
        try:
            session.execute(insert(Account).values(**row))  # line:duplicate
        except IntegrityError:
            log.warning("duplicate account %s", row["id"])
    session.execute(insert(Account).values(**ROWS[1]))  # line:refused


def test_statement_after_a_caught_unique_violation_names_it(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
        with pytest.raises(InternalError) as raised:
            import_accounts(session)
        session.rollback()
    finding = one(uow.findings, "SQD164")
    where = here(__file__)
    assert finding.location.line == line_of("refused")
    assert (
        f"aborted by IntegrityError (psycopg.errors.UniqueViolation) at "
        f"{where}:{line_of('duplicate')}"
    ) in finding.message
    assert "`with session.begin_nested():`" in finding.message
    assert "session.rollback()" in finding.message
    assert any(n.startswith("sqla-doctor: SQD164") for n in raised.value.__notes__)


def test_savepoint_per_row_stays_silent(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
        for row in ROWS:
            try:
                with session.begin_nested():
                    session.execute(insert(Account).values(**row))
            except IntegrityError:
                log.warning("duplicate account %s", row["id"])
        session.commit()
    assert not of_code(uow.findings, "SQD164")
    assert not of_code(uow.findings, "SQD155")


def test_connection_that_goes_on_after_a_caught_error_is_told_conn_begin_nested(
    pg_engine: Engine,
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, pg_engine.connect() as conn:
        try:
            conn.execute(insert(Account).values(**ROWS[0]))  # line:conn-duplicate
        except IntegrityError:
            log.warning("duplicate account")
        with pytest.raises(InternalError):
            conn.execute(update(Account).values(balance=1))  # line:conn-refused
        conn.rollback()
    finding = one(uow.findings, "SQD164")
    assert finding.location.line == line_of("conn-refused")
    assert f"{here(__file__)}:{line_of('conn-duplicate')}" in finding.message
    assert "`with conn.begin_nested():`" in finding.message


async def test_async_session_after_a_caught_error_is_told_await_rollback(
    pg_async_engine: AsyncEngine,
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        async with AsyncSession(pg_async_engine) as session:
            try:
                await session.execute(insert(Account).values(**ROWS[0]))  # line:async-dup
            except IntegrityError:
                log.warning("duplicate account")
            # asyncpg's InFailedSQLTransactionError is SQLAlchemy's plain DBAPIError.
            with pytest.raises(DBAPIError):
                await session.execute(insert(Account).values(**ROWS[1]))  # line:async-refused
            await session.rollback()
    finding = one(uow.findings, "SQD164")
    assert finding.location.line == line_of("async-refused")
    assert f"{here(__file__)}:{line_of('async-dup')}" in finding.message
    assert "(asyncpg.exceptions.UniqueViolationError)" in finding.message
    assert "`async with session.begin_nested():`" in finding.message
    assert "await session.rollback()" in finding.message


def test_error_outside_postgresql_transactions_stays_silent(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
        try:
            session.execute(insert(Account).values(**ROWS[0]))
        except IntegrityError:
            session.rollback()
        session.execute(insert(Account).values(**ROWS[1]))
        session.commit()
    assert not of_code(uow.findings, "SQD164")


def transfer(engine: Engine, first: int, second: int, barrier: threading.Barrier) -> list[Finding]:
    """Lock ``first``, wait for the other worker to lock its own, then ``second``."""
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        try:
            session.get_one(Account, first).balance -= 10
            session.flush()
            barrier.wait()
            session.get_one(Account, second).balance += 10
            session.flush()  # line:deadlock
            session.commit()
        except OperationalError:
            log.warning("transfer %s -> %s failed", first, second)
        with contextlib.suppress(PendingRollbackError):
            session.get(Account, first)  # line:reused
    return uow.findings


def test_deadlock_victim_reused_is_told_to_roll_back_and_retry(pg_engine: Engine) -> None:
    barrier = threading.Barrier(2, timeout=10)
    found: list[list[Finding]] = []
    threads = [
        threading.Thread(target=lambda a=a, b=b: found.append(transfer(pg_engine, a, b, barrier)))
        for a, b in ((1, 2), (2, 1))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    findings = [f for each in found for f in each]
    # One of the two was PostgreSQL's deadlock victim.
    finding = one(findings, "SQD155")
    assert finding.location.line == line_of("reused")
    assert "DeadlockDetected" in finding.message
    assert "retry the whole transaction" in finding.message
    assert "take row locks in one order" in finding.message
    # A SAVEPOINT per write would deadlock again: not the advice for this error.
    assert "begin_nested" not in finding.message


def test_caught_serialization_failure_then_reused_is_told_to_retry(pg_engine: Engine) -> None:
    engine = pg_engine.execution_options(isolation_level="REPEATABLE READ")
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        balance = session.scalar(select(Account.balance).where(Account.id == 1))
        with pg_engine.begin() as other:  # another request wins the race
            other.execute(update(Account).where(Account.id == 1).values(balance=0))
        try:
            session.execute(  # line:conflict
                update(Account).where(Account.id == 1).values(balance=(balance or 0) + 10)
            )
        except OperationalError:
            log.warning("could not serialize")
        with pytest.raises(InternalError):
            session.scalar(select(Account.balance).where(Account.id == 2))  # line:after
        session.rollback()
    finding = one(uow.findings, "SQD164")
    assert finding.location.line == line_of("after")
    assert (
        f"OperationalError (psycopg.errors.SerializationFailure) at "
        f"{here(__file__)}:{line_of('conflict')}"
    ) in finding.message
    assert "serialization conflict" in finding.message
    assert "retry the whole transaction" in finding.message
    assert "begin_nested" not in finding.message


def insert_in_savepoint(session: Session) -> None:
    with session.begin_nested():
        try:
            session.execute(insert(Account).values(**ROWS[0]))
        except IntegrityError:
            log.warning("duplicate account")
        session.execute(insert(Account).values(**ROWS[1]))  # line:in-savepoint


def test_error_caught_inside_the_savepoint_block_is_told_to_catch_it_outside(
    pg_engine: Engine,
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
        with pytest.raises(InternalError):
            insert_in_savepoint(session)
        session.rollback()
    finding = one(uow.findings, "SQD164")
    assert finding.location.line == line_of("in-savepoint")
    # The SAVEPOINT is there: "put it in a SAVEPOINT" would be no advice at all.
    assert "caught inside the `with session.begin_nested():` block" in finding.message
    assert "catch it outside that block" in finding.message
