"""P34 on PostgreSQL: what SQD160 reports is what the server shows as "idle in transaction"."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from sqlalchemy import Engine, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .models import Account
from .support import here, line_of, of_code, one

IDLE = 0.3
CONFIG = RuntimeConfig(
    mode="collect", idle_transaction_seconds=0.2, held_connection_seconds=60, ignore=("SQD157",)
)


def server_view(url: str, pid: int) -> dict[str, Any]:
    """pg_stat_activity's row for ``pid``, read on a connection of its own."""
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as admin:
        row = admin.execute(
            "SELECT state, extract(epoch FROM clock_timestamp() - xact_start), "
            "extract(epoch FROM clock_timestamp() - state_change) "
            "FROM pg_stat_activity WHERE pid = %s",
            (pid,),
        ).fetchone()
    assert row is not None
    # xact_start is NULL outside a transaction.
    return {"state": row[0], "open": float(row[1] or 0), "idle": float(row[2])}


def test_idle_in_transaction_is_reported_and_matches_pg_stat_activity(
    pg_engine: Engine, database_url: str
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
        pid = session.scalar(text("SELECT pg_backend_pid()"))  # line:begin
        session.execute(update(Account).where(Account.id == 1).values(balance=0))  # line:update
        time.sleep(IDLE)  # the row stays locked meanwhile
        seen = server_view(database_url, pid)
        session.commit()  # line:commit
    # The server's side: this backend is "idle in transaction", open and idle for as long
    # as the doctor measured (the doctor's numbers end at the commit, a little later).
    assert seen["state"] == "idle in transaction"
    finding = one(uow.findings, "SQD160")
    details = finding.details
    assert details["open_seconds"] >= seen["open"] - 0.05
    assert details["idle_seconds"] >= seen["idle"] - 0.05
    assert seen["idle"] >= IDLE - 0.05
    where = here(__file__)
    assert finding.location.line == line_of("begin")
    assert details["ended"] == f"{where}:{line_of('commit')}"
    assert f"after its last statement at {where}:{line_of('update')}, until commit at" in (
        finding.message
    )
    # An UPDATE's row locks are the statement's own business: only SELECT ... FOR UPDATE
    # and its kin are named.
    assert "locked" not in finding.message
    # After the commit the server agrees the transaction is over (the pool holds the
    # connection, idle).
    assert server_view(database_url, pid)["state"] == "idle"


def test_short_transaction_is_the_silent_twin(pg_engine: Engine, database_url: str) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        with Session(pg_engine) as session:
            pid = session.scalar(text("SELECT pg_backend_pid()"))
            session.execute(update(Account).where(Account.id == 1).values(balance=0))
            session.commit()
        time.sleep(IDLE)
        seen = server_view(database_url, pid)
    assert seen["state"] == "idle"
    assert not of_code(uow.findings, "SQD160")


async def test_asyncpg_session_left_open_is_reported_at_the_end(
    pg_async_engine: AsyncEngine, database_url: str
) -> None:
    session = AsyncSession(pg_async_engine)
    try:
        async with sqla_doctor.track(config=CONFIG) as uow:
            pid = await session.scalar(text("SELECT pg_backend_pid()"))  # line:async-begin
            await session.scalar(select(Account.name).where(Account.id == 2))
            await asyncio.sleep(IDLE)
            seen = await asyncio.to_thread(server_view, database_url, pid)
        assert seen["state"] == "idle in transaction"
        finding = one(uow.findings, "SQD160")
        assert finding.location.line == line_of("async-begin")
        assert finding.details["ended"] is None
        assert "and was still open at the end of the unit of work" in finding.message
        assert finding.details["idle_seconds"] >= seen["idle"] - 0.05
    finally:
        await session.close()


def test_rows_locked_in_an_idle_transaction_are_named_with_their_lock(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
        account = session.scalars(
            select(Account).where(Account.id == 3).with_for_update(key_share=True)  # line:kl
        ).one()
        time.sleep(IDLE)  # the payment provider
        account.balance -= 1
        session.commit()
    finding = one(uow.findings, "SQD160")
    where = here(__file__)
    assert finding.message.endswith(
        f"; the rows the query at {where}:{line_of('kl') - 1} locked (FOR NO KEY UPDATE) stay "
        "locked until the transaction ends, so every other transaction that tries to update, "
        "delete or lock them waits as long"
    )
    assert (line_of("kl") - 1, "rows locked here (FOR NO KEY UPDATE)") in [
        (r.location.line, r.message) for r in finding.related
    ]


async def test_asyncpg_session_left_open_with_a_shared_lock_names_it(
    pg_async_engine: AsyncEngine,
) -> None:
    session = AsyncSession(pg_async_engine)
    try:
        async with sqla_doctor.track(config=CONFIG) as uow:
            await session.scalars(select(Account).with_for_update(read=True))  # line:shared
            await asyncio.sleep(IDLE)
        finding = one(uow.findings, "SQD160")
        assert "and was still open at the end of the unit of work" in finding.message
        assert f"the rows the query at {here(__file__)}:{line_of('shared')} locked (FOR SHARE)" in (
            finding.message
        )
        assert "tries to update or delete them" in finding.message
    finally:
        await session.close()
