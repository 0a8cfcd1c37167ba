"""P07 on PostgreSQL: connections held across a real (local) HTTP call.

Four concurrent requests share a two-connection pool; each calls a slow HTTP service. With
the call inside the session block every request holds its connection for the call's whole
duration (SQD157 says so, with the gap); moved before the session block, nobody waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.request

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Finding
from sqla_doctor.runtime import row_locks

from .conftest import HTTP_DELAY, POOL
from .models import Account
from .support import here, line_of, of_code, one

CONFIG = RuntimeConfig(mode="collect", held_connection_seconds=0.15)
REQUESTS = 4
# Requests queue for the two connections here by design; on a loaded machine the wait
# outlasts conftest's half-second pool_timeout, which is not what these tests are about.
ENGINE_POOL = {**POOL, "pool_timeout": 30}


async def update_avatar(engine: AsyncEngine, client: httpx.AsyncClient, url: str) -> None:
    async with AsyncSession(engine) as session:
        account = await session.get(Account, 1)  # line:get
        assert account is not None
        response = await client.get(url)  # the connection waits on the HTTP service
        account.name = response.json()["avatar"]
        await session.commit()  # line:commit


async def update_avatar_fixed(engine: AsyncEngine, client: httpx.AsyncClient, url: str) -> None:
    response = await client.get(url)
    async with AsyncSession(engine) as session:
        account = await session.get(Account, 1)
        assert account is not None
        account.name = response.json()["avatar"]
        await session.commit()


async def run_requests(engine: AsyncEngine, url: str, handler: object) -> list[list[Finding]]:
    async with httpx.AsyncClient() as client:

        async def request() -> list[Finding]:
            async with sqla_doctor.track(config=CONFIG) as uow:
                await handler(engine, client, url)  # type: ignore[operator]
            return uow.findings

        return await asyncio.gather(*(request() for _ in range(REQUESTS)))


async def test_connection_held_across_an_http_call_is_reported_with_the_gap(
    pg_async_engine: AsyncEngine, slow_service: str
) -> None:
    started = time.perf_counter()
    per_request = await run_requests(pg_async_engine, slow_service, update_avatar)
    elapsed = time.perf_counter() - started
    # What the user sees: two connections, four requests each holding one for the HTTP
    # call: the last two wait for the first two, about two HTTP delays in all.
    assert elapsed >= 2 * HTTP_DELAY
    where = here(__file__)
    for findings in per_request:
        held = one(findings, "SQD157")
        assert held.location.line == line_of("commit")
        # Rounded to hundredths.
        assert held.details["idle_seconds"] >= HTTP_DELAY - 0.005
        assert held.details["last_query"] == f"{where}:{line_of('get')}"
        assert held.message.startswith(
            f"Session held its pooled connection idle for {held.details['idle_seconds']:.2f}s "
            f"(threshold 0.15s) after the query at {where}:{line_of('get')} until "
        )
        # The UPDATE the commit flushes, or the COMMIT alone when the value was already set.
        assert held.details["resumed_by"] in {"statement", "commit"}
        assert f" at {where}:{line_of('commit')} — " in held.message


async def test_http_call_before_the_session_is_the_silent_twin(
    pg_async_engine: AsyncEngine, slow_service: str
) -> None:
    per_request = await run_requests(pg_async_engine, slow_service, update_avatar_fixed)
    # Wall time is left out: on a loaded machine it tells the two versions apart no more.
    assert len(per_request) == REQUESTS
    assert not [f for findings in per_request for f in findings]


def sync_handler(engine: Engine, url: str) -> None:
    with Session(engine) as session:
        session.get(Account, 2)  # line:sync-get
        with urllib.request.urlopen(url, timeout=5) as response:
            response.read()
        session.get(Account, 3)  # line:sync-next


def test_threads_holding_connections_across_http_are_each_reported(
    pg_engine: Engine, slow_service: str
) -> None:
    results: list[list[Finding]] = []

    def request() -> None:
        with sqla_doctor.track(config=CONFIG) as uow:
            sync_handler(pg_engine, slow_service)
        results.append(uow.findings)

    threads = [threading.Thread(target=request) for _ in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == REQUESTS
    for findings in results:
        held = one(findings, "SQD157")
        assert held.location.line == line_of("sync-next")
        assert held.details["last_query"].endswith(f":{line_of('sync-get')}")


def export_accounts(engine: Engine, per_row: float) -> int:
    exported = 0
    with Session(engine) as session:
        rows = session.scalars(select(Account).execution_options(yield_per=2))  # line:stream
        for _account in rows:
            time.sleep(per_row)  # writing each row to a slow sink
            exported += 1
    return exported


def test_slow_loop_over_a_server_side_cursor_is_told_keyset_batches(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        assert export_accounts(pg_engine, per_row=0.06) == 5
    finding = one(uow.findings, "SQD157")
    # The loop reading the cursor is the place to change, not the session's close.
    assert finding.location.line == line_of("stream")
    assert "streamed query (yield_per/stream_results)" in finding.message
    assert "keyset-paginated batches" in finding.message
    # commit()/close() would end the cursor the loop reads: not the advice here.
    assert "commit()/close() before it" not in finding.message
    assert finding.details["streamed"] is True


def test_fast_loop_over_a_server_side_cursor_stays_silent(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        assert export_accounts(pg_engine, per_row=0) == 5
    assert not of_code(uow.findings, "SQD157")


async def test_async_stream_with_slow_work_per_row_is_told_keyset_batches(
    pg_async_engine: AsyncEngine,
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        async with AsyncSession(pg_async_engine) as session:
            rows = await session.stream_scalars(select(Account))  # line:async-stream
            async for _account in rows:
                await asyncio.sleep(0.06)
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("async-stream")
    assert "keyset-paginated batches" in finding.message


def test_null_pool_task_holding_its_connection_is_told_what_it_costs(database_url: str) -> None:
    # A Celery-style worker: NullPool, one connection per task, a slow API call inside.
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
            account = session.get_one(Account, 1)  # line:task-get
            time.sleep(0.25)  # the payment provider
            account.balance = 0
            session.commit()
    finally:
        engine.dispose()
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("task-get") + 3
    # No pool to drain: "no other request can use the connection" would be wrong.
    assert "connection (NullPool: its own)" in finding.message
    assert "pooled connection" not in finding.message
    assert "no other request can use the connection" not in finding.message
    assert "idle in transaction" in finding.message


def test_null_pool_core_connection_is_told_its_own_block(database_url: str) -> None:
    engine = create_engine(database_url, poolclass=NullPool)
    try:
        with sqla_doctor.track(config=CONFIG) as uow, engine.begin() as conn:
            conn.execute(text("SELECT balance FROM accounts WHERE id = 1"))
            time.sleep(0.25)  # the payment provider
            conn.execute(text("UPDATE accounts SET balance = 0 WHERE id = 1"))
    finally:
        engine.dispose()
    finding = one(uow.findings, "SQD157")
    assert finding.message.endswith(
        "make the slow call before the connection's `with` block, or commit() before it "
        "and open a new connection after"
    )
    assert "session" not in finding.message


def locked_for_others(database_url: str, account_id: int) -> bool:
    """Whether another transaction, on a connection of its own, finds the row locked."""
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as other:
        try:
            other.execute("SELECT 1 FROM accounts WHERE id = %s FOR UPDATE NOWAIT", (account_id,))
        except psycopg.errors.LockNotAvailable:
            return True
        return False


def test_rows_locked_before_the_slow_call_are_named_with_the_lock(
    pg_engine: Engine, database_url: str
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
        account = session.scalars(
            select(Account).where(Account.id == 1).with_for_update()  # line:lock
        ).one()
        fee = session.get_one(Account, 2)  # line:fee
        time.sleep(0.25)  # the payment provider
        waited = locked_for_others(database_url, 1)
        account.balance -= 10
        fee.balance += 10
        session.commit()  # line:lock-commit
    assert waited
    finding = one(uow.findings, "SQD157")
    where = here(__file__)
    assert finding.location.line == line_of("lock-commit")
    assert finding.message.endswith(
        f"; the rows the query at {where}:{line_of('lock') - 1} locked (FOR UPDATE) stay "
        "locked meanwhile, so every other transaction that tries to update, delete or lock "
        "them waits as long: take the lock after the slow call, just before the writes it "
        "protects"
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("fee"), "last query before the gap"),
        (line_of("lock") - 1, "connection checked out here"),
        (line_of("lock") - 1, "rows locked here (FOR UPDATE)"),
    ]


def test_a_shared_lock_blocks_writers_and_a_committed_lock_is_not_mentioned(
    pg_engine: Engine,
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(pg_engine) as session:
        session.scalars(select(Account).with_for_update(read=True)).all()  # line:share
        time.sleep(0.25)
        session.commit()
        session.scalars(select(Account).with_for_update()).all()  # line:relock
        session.commit()  # the lock ends here, before the slow call
        session.get_one(Account, 1)
        time.sleep(0.25)
        session.commit()  # line:unlocked-commit
    shared, unlocked = sorted(of_code(uow.findings, "SQD157"), key=lambda f: f.location.line)
    assert "locked (FOR SHARE)" in shared.message
    assert "tries to update or delete them" in shared.message
    assert unlocked.location.line == line_of("unlocked-commit")
    assert "locked" not in unlocked.message


def wait_for_jobs(engine: Engine, *, commit_first: bool) -> list[str]:
    """A dispatcher: LISTEN on a dedicated connection, then wait for notifications."""
    with engine.connect() as listener:
        listener.execute(text("LISTEN jobs"))
        if commit_first:
            listener.commit()
        else:
            listener.execute(text("SELECT 1"))  # still in the transaction: nothing arrives
        raw = listener.connection.driver_connection
        assert raw is not None
        return [note.payload for note in raw.notifies(timeout=0.3)]  # line:wait


def test_listen_connection_waiting_for_notifications_stays_silent(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        assert wait_for_jobs(pg_engine, commit_first=True) == []
    assert not of_code(uow.findings, "SQD157")


def test_listen_connection_waiting_inside_a_transaction_is_reported(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        wait_for_jobs(pg_engine, commit_first=False)
    assert one(uow.findings, "SQD157")


def run_job_under_advisory_lock(engine: Engine, *, autocommit: bool, unlock_first: bool) -> None:
    """A cron job's single-instance guard: a session-level advisory lock kept on a
    dedicated connection while the job's own short transactions run elsewhere."""
    options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
    with engine.connect().execution_options(**options) as guard:
        assert guard.scalar(text("SELECT pg_try_advisory_lock(4242)"))
        if unlock_first:
            guard.execute(text("SELECT pg_advisory_unlock(4242)"))
        time.sleep(0.3)  # the job's work, in other sessions
        guard.execute(text("SELECT pg_advisory_unlock_all()"))  # line:unlock


def test_connection_keeping_a_session_advisory_lock_stays_silent(pg_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        run_job_under_advisory_lock(pg_engine, autocommit=True, unlock_first=False)
    assert not of_code(uow.findings, "SQD157")


@pytest.mark.parametrize(
    ("autocommit", "unlock_first"),
    [(False, False), (True, True)],
    ids=["in-transaction", "released"],
)
def test_advisory_lock_inside_a_transaction_or_released_is_reported(
    pg_engine: Engine, autocommit: bool, unlock_first: bool
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        run_job_under_advisory_lock(pg_engine, autocommit=autocommit, unlock_first=unlock_first)
    assert one(uow.findings, "SQD157").location.line == line_of("unlock")


@pytest.mark.parametrize(
    ("statement", "held", "after"),
    [
        ("SELECT pg_advisory_lock(1)", 0, 1),
        ("select PG_TRY_ADVISORY_LOCK_SHARED(1, 2)", 1, 2),
        ("SELECT pg_advisory_xact_lock(1)", 0, 0),
        ("SELECT pg_advisory_unlock(1)", 2, 1),
        ("SELECT pg_advisory_unlock_all()", 3, 0),
        ("SELECT 1", 1, 1),
    ],
)
def test_session_advisory_locks_are_counted_from_the_sql(
    statement: str, held: int, after: int
) -> None:
    assert row_locks.advisory_locks(statement, held) == after
