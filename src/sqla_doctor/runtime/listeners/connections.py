"""Listens to the pool and the connections: ``Pool`` ``checkout`` and ``checkin``, and
the ``Engine`` events ``do_connect``, ``engine_connect``, ``begin``, ``commit`` and
``rollback``: who holds a pooled connection, from where, how long it stays idle or in a
transaction, and what Core writes it made that a rollback or a lost connection undoes.
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from contextvars import ContextVar
from types import FrameType
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.pool import QueuePool, SingletonThreadPool, StaticPool
from sqlalchemy.pool.base import _ConnectionFairy

from sqla_doctor.runtime import callsite, core_writes, pool_fill, query_plans
from sqla_doctor.runtime.detector import ConnectionWritesLost, InheritedConnection, PoolCheckout
from sqla_doctor.runtime.listeners.endings import (
    _checkout_done,
    _connection_resumes,
    _runtime_of,
    drain,
)
from sqla_doctor.runtime.listeners.units import (
    _STACK_LIMIT,
    _bump,
    _checkout_unit,
    _dispatch,
    _finish_implicit,
    _guarded,
)
from sqla_doctor.runtime.unit_of_work import (
    EXECUTED_WRITES,
    CheckoutRecord,
    SessionRecord,
    UnitOfWork,
    current,
    executing,
    process,
)

# The pooled connection checked out last in this context, so that ``after_begin`` can
# tell a connection the Session checked out itself from one it was handed.
_last_checkout: ContextVar[CheckoutRecord | None] = ContextVar(
    "sqla_doctor_last_checkout", default=None
)
# Above a pool checkout: the listener collection, _ConnectionFairy._checkout,
# Pool.connect and Engine.raw_connection.
_CHECKOUT_FRAMES = 4


@_guarded
def _on_checkout(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    uow = current.get()
    if uow is None and not process.installed:
        return
    if process.dead:
        drain()
    key = id(connection_record)
    record = CheckoutRecord(key, connection_proxy, _opening_stack(uow), uow)
    earlier = process.checkouts.get(key)
    if earlier is not None and not earlier.returned and earlier.ref() is not None:
        process.shared.setdefault(key, [earlier]).append(record)
    process.checkouts[key] = record
    process.checkouts_by_fairy[id(connection_proxy)] = record
    _last_checkout.set(record)
    if uow is not None:
        uow.adopt_checkout(record)
    opened = _opened_elsewhere(connection_record, record)
    if opened is not None:
        _inherited(dbapi_connection, connection_proxy, opened, record)


# Keys of a pool entry's ``info``, the dictionary SQLAlchemy keeps per DBAPI connection
# (cleared when it is closed or invalidated) for listeners' own notes: the process that
# first checked the connection out and where, and the last process told that it came
# from another.
_OPENED_BY = "sqla_doctor.opened_by"
_REPORTED_IN = "sqla_doctor.inherited_in_pid"
# Above a pool's close event: the listener collection, _ConnectionRecord.__close or
# Pool._close_connection.
_CLOSE_FRAMES = 2


def _opened_elsewhere(
    connection_record: Any, record: CheckoutRecord | None
) -> tuple[int, callsite.CallSite | None] | None:
    """The process that opened this pooled connection, and where, when it is not this
    process and this one has not been told yet. A connection's first checkout follows
    its connect in the same process, so the first checkout seen stands for the connect."""
    info = connection_record.info
    pid = os.getpid()
    opened = info.get(_OPENED_BY)
    if opened is None:
        if record is not None:
            info[_OPENED_BY] = (pid, record.opened[0] if record.opened else None)
        return None
    if opened[0] == pid or info.get(_REPORTED_IN) == pid:
        return None
    info[_REPORTED_IN] = pid
    return opened  # type: ignore[no-any-return]


@_guarded
def _on_close(dbapi_connection: Any, connection_record: Any) -> None:
    """A pooled connection is about to be closed: by a child of the process that opened
    it (``engine.dispose()`` there), that ends the parent's server session."""
    if process.installed or current.get() is not None:
        opened = _opened_elsewhere(connection_record, None)
        if opened is not None:
            _inherited(dbapi_connection, None, opened, None)


def _inherited(
    dbapi_connection: Any,
    connection_proxy: Any,
    opened: tuple[int, callsite.CallSite | None],
    record: CheckoutRecord | None,
) -> None:
    # No public attribute names a checkout's pool; the proxy keeps it in ``_pool``.
    pool = getattr(connection_proxy, "_pool", None)
    sqlite = "sqlite" in type(dbapi_connection).__module__
    if sqlite and (record is None or isinstance(pool, (StaticPool, SingletonThreadPool))):
        # An in-memory database (these pools' use): the child has a copy of it, with no
        # file and no lock to share. Closing a file database's connection releases only
        # this process's locks.
        return
    if record is not None:
        uow = _checkout_unit(record)
        site = record.opened[0] if record.opened else None
    else:
        uow = current.get()
        if uow is None and process.settings is not None:
            uow = UnitOfWork(process.settings, "connection", explicit=False)
        site = callsite.find(2, _CLOSE_FRAMES)
    if uow is None:
        return
    inherited = InheritedConnection(
        record, site, opened[0], opened[1], pool, sqlite, closing=record is None
    )
    # Never raised from inside the checkout: SQLAlchemy would close the connection on the
    # way out, ending the parent's server session on the shared socket.
    _dispatch(uow, "connection_inherited", inherited, can_raise=False)
    if record is None:
        _finish_implicit(uow)


def _opening_stack(uow: UnitOfWork | None) -> tuple[callsite.CallSite, ...]:
    """Where a connection was checked out, for a leak report.

    A whole stack costs a frame object per frame (see callsite.find); an explicit unit
    (a test, a tracked request) pays it every time, while outside one only the call
    site is kept, and the stack from the moment a site has leaked once (Prosopite's
    lazy capture).
    """
    if uow is not None:
        return callsite.stack(2, _STACK_LIMIT)
    execution = executing.get()
    if execution is not None and not execution.consumed:
        site = execution.site  # a Session acquiring its connection for this query
    else:
        site = callsite.find(2, _CHECKOUT_FRAMES)
    if site is None:
        return ()
    if site.key in process.leaky_sites:
        return callsite.stack(2, _STACK_LIMIT)
    return (site,)


def _held(conn: Connection) -> CheckoutRecord | None:
    """The checkout a Connection holds, without revalidating an invalidated one."""
    if conn.closed or conn.invalidated:
        return None
    checkout = process.checkout_of(conn.connection)
    return checkout if checkout is not None and not checkout.returned else None


@_guarded
def _on_engine_begin(conn: Connection) -> None:
    checkout = _held(conn)
    if checkout is None or _autocommit(conn):
        return
    checkout.transaction_began = time.perf_counter()
    checkout.locked_rows = None
    checkout.forget_idle()
    checkout.longest_statement = 0.0
    execution = executing.get()
    if execution is not None and not execution.consumed:
        # A Session beginning for this query: its call site is known already.
        checkout.transaction_site = execution.site
    else:
        checkout.transaction_site = callsite.find(1)


def _autocommit(conn: Connection) -> bool:
    """Whether the connection runs in AUTOCOMMIT, where BEGIN opens no server transaction.

    Read from the execution options and the DBAPI connection's own flag, never by asking
    the server (``get_isolation_level()`` runs SQL on some dialects).
    """
    if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        return True
    try:
        dbapi = conn.connection.dbapi_connection
        flag = getattr(dbapi, "autocommit", None)
        if isinstance(flag, bool):  # psycopg, psycopg2, the asyncpg adapter
            return flag
        # sqlite3 (and its asyncio adapter): isolation_level None is autocommit.
        return "sqlite" in type(dbapi).__module__ and getattr(dbapi, "isolation_level", "") is None
    except Exception:
        # A connection the database (or a test) closed behind the pool's back raises on
        # any read (sqlite3: "Cannot operate on a closed database"); its statement is
        # about to fail, and SQD452 explains it.
        return False


@_guarded
def _on_engine_commit(conn: Connection) -> None:
    checkout = _held(conn)
    if checkout is not None:
        # Its writes are news for SQD160 as the transaction ends, lost no more after.
        _connection_resumes(checkout, "commit", time.perf_counter())
        checkout.core_writes, checkout.core_ddl, checkout.core_write_site = 0, 0, None


@_guarded
def _on_engine_rollback(conn: Connection) -> None:
    checkout = _held(conn)
    if checkout is not None:
        if checkout.core_writes:
            _core_writes_rolled_back(conn, checkout)
        _connection_resumes(checkout, "rollback", time.perf_counter())


# Temporary tables remembered per checkout, at most.
MAX_TEMP_TABLES = 32


def _note_core_write(
    conn: Connection, checkout: CheckoutRecord, statement: str, site: callsite.CallSite | None
) -> None:
    """Count a Core connection's writes in its open transaction ("commit as you go")."""
    kind = core_writes.classify(
        statement, conn.dialect.name, checkout.temp_tables, began=checkout.core_writes > 0
    )
    if kind is None:
        return
    if kind == core_writes.LISTEN or kind == core_writes.UNLISTEN:
        # A connection that waits for notifications is held idle on purpose (SQD157).
        checkout.listening = kind == core_writes.LISTEN
        return
    if kind == core_writes.TEMP_TABLE:
        name = core_writes.temp_table(statement)
        if name is not None and len(checkout.temp_tables) < MAX_TEMP_TABLES:
            checkout.temp_tables = checkout.temp_tables | {name}
        return
    if not checkout.core_writes:
        if not conn.in_transaction() or _autocommit(conn):
            return
        checkout.core_write_site = site
    checkout.core_writes += 1
    if kind == core_writes.DDL:
        checkout.core_ddl += 1


def _note_session_write(
    conn: Connection,
    record: SessionRecord | None,
    statement: str,
    site: callsite.CallSite | None,
) -> None:
    """Count a write statement a Session ran itself (``session.execute(insert(...))``,
    ``text("UPDATE ...")``): lost like a flush's when the session closes without commit."""
    if record is None:
        return
    kind = core_writes.classify(statement, conn.dialect.name, (), began=record.writes > 0)
    if kind not in (core_writes.WRITE, core_writes.DDL) or _autocommit(conn):
        return
    record.writes += 1
    _bump(record.written, EXECUTED_WRITES, 1)
    if record.flush_site is None:
        record.flush_site = site
        record.flushed_at = time.perf_counter()


def _core_writes_rolled_back(conn: Connection, checkout: CheckoutRecord) -> None:
    """A Core connection's writes were rolled back: by ``rollback()`` on purpose, by an
    error path, or by ``close()`` (the end of ``with engine.connect()``) with no commit."""
    writes, ddl, first = checkout.core_writes, checkout.core_ddl, checkout.core_write_site
    checkout.core_writes, checkout.core_ddl, checkout.core_write_site = 0, 0, None
    if sys.exc_info()[1] is not None or not _closing_connection(sys._getframe(2)):
        return
    uow = _checkout_unit(checkout)
    if uow is not None:
        lost = ConnectionWritesLost(conn, checkout, writes, ddl, first, callsite.find(2))
        _dispatch(uow, "connection_writes_lost", lost, can_raise=False)


def _closing_connection(frame: Any) -> bool:
    """Whether SQLAlchemy rolls back because the Connection is closing (not rollback())."""
    for _ in range(_STACK_LIMIT):
        if frame is None or callsite.classify(frame.f_code.co_filename) != callsite.INTERNAL:
            return False
        name = frame.f_code.co_name
        if name in ("close", "__exit__", "_autoclose"):
            return True
        if name == "rollback" and "engine" in frame.f_code.co_filename:
            return False
        frame = frame.f_back
    return False


@_guarded
def _on_do_connect(dialect: Any, conn_rec: Any, cargs: Any, cparams: Any) -> None:
    # Returns None: SQLAlchemy connects as usual. Only noted, for SQD355's EXPLAIN
    # connection (the schema a connect_args search_path chose).
    query_plans.note_connect(dialect, cargs, cparams)


@_guarded
def _on_engine_connect(conn: Connection) -> None:
    checkout = _held(conn)
    if checkout is None or checkout.pool is not None:
        return
    pool = conn.engine.pool
    checkout.pool = weakref.ref(pool)
    if not isinstance(pool, QueuePool):
        return
    # Pool has public size() and checkedout(), but nothing public says how far it may
    # overflow: QueuePool keeps max_overflow in ``_max_overflow`` (-1: no limit). Read
    # defensively; without it there is no capacity to compare with.
    max_overflow = getattr(pool, "_max_overflow", None)
    if not isinstance(max_overflow, int) or max_overflow < 0:
        return
    size = pool.size()
    capacity = size + max_overflow
    runtime = _runtime_of(checkout)
    if capacity <= 0 or runtime is None:
        return
    checked_out = pool.checkedout()
    # One connection in use is no sign of contention: a one-thread program on a pool of
    # one never waits for it.
    if checked_out < 2 or checked_out < runtime.pool_saturation_ratio * capacity:
        return
    fill = pool_fill.filled(pool, time.perf_counter()) if checked_out >= capacity else None
    if fill is not None:
        fill.label = (repr(conn.engine.url), size, max_overflow)
        fill.last_site = checkout.opened[0] if checkout.opened else None
    # checkedout() already counts other threads' and tasks' checkouts whose events have
    # not run yet: count the holders that can be named, so that the report names them.
    checked_out = len(process.holders(pool))
    if checked_out < 2 or checked_out < runtime.pool_saturation_ratio * capacity:
        return
    uow = _checkout_unit(checkout)
    if uow is not None:
        saturation = PoolCheckout(
            checkout, pool, repr(conn.engine.url), checked_out, size, max_overflow, fill
        )
        _dispatch(uow, "pool_saturated", saturation)


@_guarded
def _on_checkin(dbapi_connection: Any, connection_record: Any) -> None:
    key = id(connection_record)
    record = process.checkouts.get(key)
    if record is None or key in process.shared:
        return  # a shared connection record's returns are each told by _on_reset
    _checkout_done(record, garbage_collected=record.garbage_collected)


@_guarded
def _on_reset(dbapi_connection: Any, connection_record: Any, reset_state: Any = None) -> None:
    """A pooled connection is being returned. Only news for a connection record that
    several checkouts share (process.shared): each of their returns resets it, and only
    the first fires checkin."""
    shared = process.shared.get(id(connection_record))
    if shared is None:
        return
    fairy = _returning_fairy()
    for record in shared:
        if fairy is not None and record.ref() is fairy:
            _checkout_done(record, garbage_collected=False)
            return


# _ConnectionFairy._reset, the frame that dispatches the reset event: its ``self`` is
# the checkout being returned, which the event's arguments do not say.
_RESET_CODE = getattr(getattr(_ConnectionFairy, "_reset", None), "__code__", None)


def _returning_fairy() -> Any:
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_STACK_LIMIT):
        if frame is None:
            return None
        if frame.f_code is _RESET_CODE:
            return frame.f_locals.get("self")
        frame = frame.f_back
    return None
