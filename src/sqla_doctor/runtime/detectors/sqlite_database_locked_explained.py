"""SQD161: SQLite's "database is locked", explained with the transaction holding the lock."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite, task_label
from sqla_doctor.runtime.detector import Detector, ErrorSeen
from sqla_doctor.runtime.engine_site import engine_factory
from sqla_doctor.runtime.unit_of_work import CheckoutRecord, SessionRecord, process

_FIX = (
    "commit (or roll back) right after the writes, keep HTTP calls and slow work out of "
    "write transactions, and give SQLite a busy timeout and WAL mode: "
    "{timeout} and PRAGMA journal_mode=WAL"
)
_TIMEOUT = '{factory}(url, connect_args={{"timeout": 15}})'
_READER_FIX = (
    "enable WAL mode, where readers never block a commit: run PRAGMA journal_mode=WAL once "
    "on the database file (it persists), and end read transactions (commit() or close() "
    "the reading session) before slow work"
)


class SqliteDatabaseLockedExplained(Detector):
    """
    ## What it does
    Explains SQLite's `OperationalError: database is locked` as it is raised (so a worker
    that catches it and retries later still gets the explanation, as a finding of its
    unit of work):
    which session in this process holds the write lock — the one that has flushed writes
    and not committed yet — where its writes were flushed, where its connection was
    checked out, in which thread (or asyncio task), and for how long it has held them.
    The explanation is also added to the exception's notes.

    A `COMMIT` refused while no session of this process holds writes is explained by a
    reader when there is one: a session on the same engine whose connection SQLite
    reports in a transaction (sqlite3's `in_transaction`), in the default rollback-journal
    mode, blocks every commit until it ends. The message names where that read
    transaction began and in which thread, and the fix is WAL mode, where readers never
    block the writer. Such a commit is explained even when no `track()` is open (under
    `sqla-doctor run` or `install()`), in a short-lived unit of work.

    ## Why is this bad?
    SQLite allows one writer at a time: the first INSERT/UPDATE/DELETE of a transaction
    takes the database's write lock until COMMIT or ROLLBACK. Every other writer waits
    up to the busy timeout (5 s by default in Python's sqlite3) and then fails with
    "database is locked". The error names neither the holder nor where it began, and the
    holder is usually innocent-looking code: a session that flushed, then made an HTTP
    call, or a request that never committed.

    ## Example
    ```python
    with Session(engine) as session:
        session.add(order)
        session.flush()          # the write lock is taken here
        notify_warehouse(order)  # seconds of HTTP while every other writer waits
        session.commit()
    ```

    Use instead:
    ```python
    with Session(engine) as session:
        session.add(order)
        session.commit()         # the lock is released at once
    notify_warehouse(order)
    ```

    and create SQLite engines with a busy timeout and WAL mode, so that readers never
    wait for the writer and writers wait long enough for each other.

    ## Known problems
    Only the sessions of this process are seen: a lock held by another process (another
    web worker, a migration running beside the app) is reported as held elsewhere.

    ## References
    - [SQLite: File Locking And Concurrency](https://www.sqlite.org/lockingv3.html)
    - [SQLAlchemy: SQLite database locking behavior / concurrency](https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#database-locking-behavior-concurrency)
    """

    code = "SQD161"
    name = "sqlite-database-locked-explained"
    pitfalls = ("P36",)
    severity = Severity.ERROR
    message = "SQLite database is locked at {site}: {holder} — {fix}"

    def on_error(self, seen: ErrorSeen) -> None:
        error = seen.error
        if not isinstance(error, OperationalError) or error.orig is None:
            return
        # sqlite3's own text is fixed ("database is locked"): it never quotes values.
        if "sqlite" not in type(error.orig).__module__ or "database is locked" not in str(
            error.orig
        ):
            return
        failing = {id(session) for session in seen.locals_of_type(Session)}
        holder = _holder(failing)
        related: list[tuple[CallSite | None, str]] = []
        engine = next((c.engine for c in seen.locals_of_type(Connection)), None)
        timeout = _TIMEOUT.format(factory=engine_factory(engine))
        fix = _FIX.format(timeout=timeout)
        hint = timeout
        # A COMMIT (no statement) waits for SQLite's exclusive lock, which every open
        # read transaction's shared lock blocks in the rollback-journal mode.
        reader = (
            _reader(failing, engine.pool)
            if holder is None and error.statement is None and engine is not None
            else None
        )
        if reader is not None:
            record, checkout = reader
            began = record.opened[0] if record.opened else checkout.transaction_site
            since = checkout.transaction_began or checkout.checked_out_at
            text = (
                "the COMMIT needs SQLite's exclusive lock, and the Session whose read "
                f"transaction began at {self.where(began)}{_who(record)} "
                f"({time.perf_counter() - since:.2f}s ago) has not "
                "ended it: in the default rollback-journal mode a commit waits for every "
                "open read transaction"
            )
            related.append((began, "this read transaction blocks the commit"))
            fix = _READER_FIX
            hint = "PRAGMA journal_mode=WAL"
        elif holder is None:
            text = (
                "no session of this process holds uncommitted writes, so another process "
                "(a second worker, a migration, a shell) holds the write lock"
            )
        else:
            record, thread, flushed_at = holder
            where = self.where(record.flush_site)
            text = (
                f"the write lock is held by the Session that flushed writes at {where}"
                f"{thread} and has not committed"
            )
            if flushed_at is not None:
                text += f" ({time.perf_counter() - flushed_at:.2f}s ago)"
            related.append((record.flush_site, "these writes hold SQLite's write lock"))
            if record.opened and record.opened[0] != record.flush_site:
                related.append((record.opened[0], "that session's transaction began here"))
        seen.explain(
            self.report(
                seen.site,
                key=("locked", seen.site.key if seen.site is not None else None),
                subject="SQLite",
                related=related,
                hint=hint,
                details={"held_in_process": holder is not None or reader is not None},
                site=self.where(seen.site),
                holder=text,
                fix=fix,
            )
        )


def _holder(failing: set[int]) -> tuple[SessionRecord, str, float | None] | None:
    """The live session of this process with flushed, uncommitted writes (the writer)."""
    for record in list(process.records.values()):
        session = record.ref()
        if session is None or id(session) in failing:
            continue
        if record.writes and record.holds_connection and record.flush_site is not None:
            return record, _who(record), record.flushed_at
    return None


def _reader(failing: set[int], pool: Any) -> tuple[SessionRecord, CheckoutRecord] | None:
    """A live session of this process, on the failing engine's pool, whose transaction
    holds a connection with no writes: a reader, whose shared lock blocks a COMMIT."""
    for checkout in list(process.checkouts.values()):
        if checkout.returned or not checkout.session_owned:
            continue
        if checkout.pool is None or checkout.pool() is not pool:
            continue
        record = checkout.session_record() if checkout.session_record is not None else None
        session = record.ref() if record is not None else None
        if record is None or session is None or id(session) in failing or record.writes:
            continue
        if _in_sqlite_transaction(checkout):
            return record, checkout
    return None


def _in_sqlite_transaction(checkout: CheckoutRecord) -> bool:
    """Whether SQLite itself has a transaction open on the connection (sqlite3's
    ``in_transaction``, an attribute read: no SQL). Its legacy transaction control opens
    none for a SELECT, and the pysqlite recipe that emits BEGIN itself looks like
    autocommit to the checkout; where the attribute cannot be read (another thread's
    connection under ``check_same_thread``), the checkout's own record decides."""
    fairy = checkout.ref()
    try:
        flag = fairy.dbapi_connection.in_transaction if fairy is not None else None
    except Exception:
        flag = None
    return flag if isinstance(flag, bool) else bool(checkout.transaction_began)


def _who(record: SessionRecord) -> str:
    """`` in task <name> (<coroutine>)`` for a session an asyncio task used last (an
    AsyncSession's), else `` in thread <name>``."""
    sharing = record.sharing
    task = sharing.last_task() if sharing.last_task is not None else None
    if task is not None:
        return f" in {task_label(task)}"
    return f" in thread {sharing.threads[0][1]}" if sharing.threads else ""
