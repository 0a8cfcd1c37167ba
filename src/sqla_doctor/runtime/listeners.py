"""The only module that calls ``sqlalchemy.event.listen``.

Listeners are registered once, on the classes: ``Engine`` (every engine, the sync engine
behind an ``AsyncEngine`` too), ``Session`` (every session, including the sync session
behind an ``AsyncSession``), ``Pool``, and lazily the primary-key attributes of each
mapped class an object of which is added to a session. Event registration is a
configuration step in SQLAlchemy, not something to do per request; the per-request state
lives in the ContextVar that each handler reads.

Every handler runs under a guard that never lets an exception reach the host program
(sentry-python's ``capture_internal_exceptions``), except a ``PitfallError`` in ``raise``
mode and a warning the user's filters turned into an error. Handlers compute what several
detectors share once (the call site, what an execution loads, the session's bookkeeping)
and then call the current unit of work's detectors. Nothing here emits SQL or loads an
attribute.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import importlib
import logging
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from types import FrameType
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import MissingGreenlet, SQLAlchemyError
from sqlalchemy.orm import MANYTOONE, NO_VALUE, Mapper, RelationshipProperty, Session
from sqlalchemy.orm.attributes import InstrumentedAttribute, instance_state
from sqlalchemy.pool import Pool, QueuePool

from sqla_doctor.runtime import (
    callsite,
    core_writes,
    crash,
    errors,
    generator_dependency,
    pool_fill,
    query_plans,
    reads,
)
from sqla_doctor.runtime.detector import (
    COLUMN_LOAD,
    CORE,
    FLUSH,
    LAZY_LOAD,
    OTHER,
    RELATIONSHIP_LOAD,
    SELECT,
    AttributeRead,
    Checkin,
    ConnectionWritesLost,
    DuplicateIdentity,
    ErrorSeen,
    Flush,
    FlushAfterFailure,
    IdleGap,
    Loaded,
    MergeWrite,
    OrmExecution,
    PoolCheckout,
    SharedUse,
    Statement,
    TransactionEnd,
    TransactionSpan,
    calling_frame,
    method_codes,
)
from sqla_doctor.runtime.errors import sqlstate_of
from sqla_doctor.runtime.loading import primary_key_attributes
from sqla_doctor.runtime.modes import PitfallError, SqlaDoctorWarning
from sqla_doctor.runtime.unit_of_work import (
    ABORTED_BY,
    EXECUTED_WRITES,
    MAX_DISCARDED_PER_SESSION,
    MAX_EXPUNGED_KEYS,
    MAX_STATEMENTS_KEPT,
    MAX_THREADS_PER_TRANSACTION,
    MAX_UPDATED_ROWS,
    Added,
    CheckoutRecord,
    Detachment,
    FailedFlush,
    SessionRecord,
    Settings,
    TransactionAbort,
    UnitOfWork,
    current,
    executing,
    flushing,
    process,
)

logger = logging.getLogger("sqla_doctor")

# Exceptions that are the user's choice and must reach them.
_DELIBERATE = (PitfallError, SqlaDoctorWarning)
# The pooled connection checked out last in this context, so that ``after_begin`` can
# tell a connection the Session checked out itself from one it was handed.
_last_checkout: ContextVar[CheckoutRecord | None] = ContextVar(
    "sqla_doctor_last_checkout", default=None
)
# The statement running in this context, between before_cursor_execute and its
# after_cursor_execute (or handle_error): id of its execution context, its unit, its
# index in ``uow.statements`` (-1 past the cap), its checkout, its call site, its start,
# the session it keeps busy (``Sharing.busy`` is ours until it returns) and its row of
# `sqla-doctor run`'s statements table. An id, not the context: a statement that fails
# without ``handle_error`` must not keep its cursor alive until the next one. One
# variable, because setting a ContextVar is what a statement's bookkeeping costs most.
_Running = tuple[
    int,
    "UnitOfWork | None",
    int,
    "CheckoutRecord | None",
    "callsite.CallSite | None",
    float,
    "SessionRecord | None",
    "list[Any] | None",
]
_running: ContextVar[_Running | None] = ContextVar("sqla_doctor_running", default=None)
_registration_lock = threading.Lock()
_rows_lock = threading.Lock()
_registered: list[tuple[Any, str, Callable[..., Any]]] = []
_instrumented_mappers: set[Any] = set()
_STACK_LIMIT = 12
_REPR_FUNCTIONS = frozenset({"__repr__", "__str__", "__format__"})
# Frames looked at between a primary-key read and the user's line for a repr() running
# it: a dataclass's __repr__, print() and logging's formatting are a few.
_MAX_REPR_DEPTH = 40
# Frames above our handler that are SQLAlchemy's for every execution of a kind, so the
# call-site walk starts past them: _execute_internal and the Session method calling it;
# for a lazy load also the loader's _emit_lazyload and _load_for_state; for a column
# load, load_on_pk_identity, the only caller that sets ``is_column_load``. Checked by
# tests on SQLAlchemy 2.0 and 2.1; a shallower stack falls back to a full walk.
_SQLALCHEMY_FRAMES = {LAZY_LOAD: 4, COLUMN_LOAD: 3}
_KEYED_BY_CALLER = frozenset({SELECT, OTHER})
# Above before_cursor_execute: Connection._exec_single_context (or its executemany
# twin) and _execute_context.
_CURSOR_FRAMES = 2
# Above a pool checkout: the listener collection, _ConnectionFairy._checkout,
# Pool.connect and Engine.raw_connection.
_CHECKOUT_FRAMES = 4
_reported_errors: set[str] = set()
# Objects whose flushed changes a session remembers per transaction (SQD162).
MAX_CHANGED_OBJECTS = 5_000
# New objects looked at before a flush for a primary key already taken (SQD163).
MAX_NEW_CHECKED = 10_000

F = TypeVar("F", bound=Callable[..., Any])


def _internal_error(where: str) -> None:
    process.internal_errors += 1
    if where not in _reported_errors:
        _reported_errors.add(where)
        logger.warning(
            "sqla-doctor: internal error in %s; the program is unaffected, but please "
            "report this with the traceback below",
            where,
            exc_info=True,
        )


def _guarded(fn: F) -> F:
    """Run a handler; swallow and log its own errors, let deliberate ones through."""

    @functools.wraps(fn)
    def guard(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _DELIBERATE:
            raise
        except Exception:
            _internal_error(fn.__name__)
            return None

    return guard  # type: ignore[return-value]


# -- units of work ------------------------------------------------------------------------


def _record(session: Session) -> SessionRecord:
    key = id(session)
    record = process.records.get(key)
    if record is None or record.ref() is not session:
        record = SessionRecord(session)
        process.records[key] = record
    return record


def _session_unit(record: SessionRecord) -> UnitOfWork | None:
    """The explicit unit of work of this context, else the session's implicit one."""
    uow = current.get()
    if uow is not None:
        return uow
    return _implicit_unit(record)


def _implicit_unit(record: SessionRecord) -> UnitOfWork | None:
    uow = record.implicit
    if uow is None:
        if not process.installed or process.settings is None:
            return None
        uow = record.implicit = UnitOfWork(process.settings, "session", explicit=False)
    return uow


def _checkout_unit(record: CheckoutRecord) -> UnitOfWork | None:
    if record.owner is not None and record.owner.active:
        return record.owner
    if record.implicit is None:
        settings = _late_settings(record.owner)
        if settings is None:
            return None
        record.implicit = UnitOfWork(settings, "connection", explicit=False)
    return record.implicit


def _late_settings(owner: UnitOfWork | None) -> Settings | None:
    """The settings for news of a session or connection outside any unit of work:
    ``install()``'s, else the ``late_settings`` of the ended unit that watched it. A
    request's leaked session is collected after its middleware's unit ended; without
    ``install()`` its lost writes would otherwise go unreported."""
    if process.installed and process.settings is not None:
        return process.settings
    return owner.late_settings if owner is not None else None


def _dispatch(uow: UnitOfWork, event_name: str, payload: Any, *, can_raise: bool = True) -> None:
    handlers = uow.handlers[event_name]
    if handlers:
        with uow.lock:
            for handler in handlers:
                handler(payload)
    if uow._unemitted:
        uow.release(can_raise=can_raise)


def _checkpoint(uow: UnitOfWork, *, can_raise: bool = True) -> None:
    with uow.lock:
        uow.checkpoint()
    uow.release(can_raise=can_raise)


def _finish_implicit(uow: UnitOfWork | None) -> None:
    if uow is not None and not uow.explicit and uow.active:
        uow.end()
        uow.release(final=True, can_raise=False)


def drain() -> None:
    """Look at the sessions and connections garbage collection reported since last time."""
    dead = process.dead
    while dead:
        try:
            ref = dead.popleft()
        except IndexError:  # pragma: no cover - another thread emptied it first
            return
        item = process.watched.pop(id(ref), None)
        try:
            if isinstance(item, SessionRecord):
                _session_collected(item)
            elif item is not None:
                _checkout_done(item, garbage_collected=True)
        except _DELIBERATE:
            raise
        except Exception:
            _internal_error("drain")


def _session_collected(record: SessionRecord) -> None:
    if process.records.get(record.key) is record:
        del process.records[record.key]
    old = record.identity_map
    if old is not None and not record.discarded_dirty and old.check_modified():
        # Whether close() replaced this map or the session died with it, these changes
        # were never flushed.
        record.discarded_dirty = [
            state.class_.__name__
            for state in old.all_states()[:MAX_DISCARDED_PER_SESSION]
            if _lost_change(state, record)
        ]
    record.identity_map = None
    # A session that ended cleanly has nothing to say now.
    unfinished = (
        record.holds_connection or record.pending or record.writes or record.discarded_dirty
    )
    uow = record.owner if record.owner is not None and record.owner.active else None
    if uow is None and unfinished:
        uow = record.implicit
        if uow is None and (settings := _late_settings(record.owner)) is not None:
            uow = record.implicit = UnitOfWork(settings, "session", explicit=False)
    if uow is not None and unfinished:
        _dispatch(uow, "session_gc", record, can_raise=False)
    _finish_implicit(record.implicit)


def _checkout_done(
    record: CheckoutRecord, *, garbage_collected: bool, at_exit: bool = False
) -> None:
    if record.returned:
        return
    if record.idle_since or record.transaction_began:
        _connection_resumes(record, "checkin", time.perf_counter(), known=not garbage_collected)
    record.returned = True
    record.returned_at = time.perf_counter()
    pool = record.pool() if record.pool is not None else None
    if pool is not None:
        pool_fill.returned(pool, record.returned_at)
    process.unwatch(record)
    if process.checkouts.get(record.key) is record:
        del process.checkouts[record.key]
    if process.checkouts_by_fairy.get(record.fairy_key) is record:
        del process.checkouts_by_fairy[record.fairy_key]
    # A connection returned normally is news only to a unit of work still watching it;
    # an implicit unit is made here only for one the garbage collector returned.
    if record.owner is not None and record.owner.active:
        uow: UnitOfWork | None = record.owner
    elif record.implicit is not None or garbage_collected:
        uow = _checkout_unit(record)
    else:
        uow = None
    if uow is not None:
        _dispatch(uow, "checkin", Checkin(record, garbage_collected, at_exit), can_raise=False)
    _finish_implicit(record.implicit)


def end_unit(uow: UnitOfWork) -> None:
    """End an explicit unit of work (``track()``'s exit); emission is the caller's."""
    try:
        execution = executing.get()
        if execution is not None and execution.uow is uow:
            # Its statement never reached the cursor nor failed there (the pool timed
            # out): it must not pass for the next statement's, in the next unit.
            executing.set(None)
        drain()
        uow.end()
    except _DELIBERATE:
        raise
    except Exception:
        uow.active = False
        _internal_error("end of unit of work")


def shutdown() -> None:
    """Report what live sessions and connections still hold, at interpreter exit."""
    # Objects still alive now (module globals) are judged anyway: nothing reads them later.
    process.exiting = True
    try:
        drain()
        # Sessions the frames an uncaught exception unwound would have closed: their
        # close() and commit() never ran because of the crash, which is explained already.
        left_by_crash = crash.sessions_left_by_crash() if process.records else set()
        for record in list(process.records.values()):
            if record.key in left_by_crash and record.ref() is not None:
                if process.records.get(record.key) is record:
                    del process.records[record.key]
                _finish_implicit(record.implicit)
                continue
            if record.ref() is not None and not _in_explicit_unit(record.owner):
                # Never closed, and the interpreter is about to throw it away: what it
                # holds (a connection, unflushed or uncommitted writes) is lost as if it
                # had been garbage-collected now.
                record.at_exit = True
                _session_collected(record)
                continue
            _finish_implicit(record.implicit)
        for checkout in list(process.checkouts.values()):
            if (
                not checkout.returned
                and not checkout.session_owned
                and not _in_explicit_unit(checkout.owner)
            ):
                # A Connection never closed (engine.connect() outside `with`): the pool
                # never gets it back before the program ends.
                _checkout_done(checkout, garbage_collected=True, at_exit=True)
                continue
            _finish_implicit(checkout.implicit)
    except Exception:
        _internal_error("shutdown")
    finally:
        process.exiting = False


def _in_explicit_unit(owner: UnitOfWork | None) -> bool:
    """Whether a running track() watches it: that unit reports it at its own end."""
    return owner is not None and owner.explicit and owner.active


# -- ORM executions and statements --------------------------------------------------------


def _relationship_of(path: Any) -> RelationshipProperty[Any] | None:
    if path is None:
        return None
    prop = getattr(path, "prop", None)
    if prop is None:
        try:
            prop = path[-1]
        except (IndexError, TypeError, KeyError):
            return None
    return prop if isinstance(prop, RelationshipProperty) else None


def _classify(state: Any) -> tuple[str, RelationshipProperty[Any] | None, Any]:
    """What an ORM execution loads, from ORMExecuteState's public attributes.

    Ordered so that each kind costs two attribute reads: only ORM SELECTs have a loader
    path, relationship loads (lazy or batched) have a path that is not the root, and
    column loads are root-path refreshes.
    """
    path = state.loader_strategy_path
    if path is None:
        return (SELECT if state.is_select else OTHER), None, None
    if path.is_root:
        return (COLUMN_LOAD if state.is_column_load else SELECT), None, None
    parent = state.lazy_loaded_from
    kind = LAZY_LOAD if parent is not None else RELATIONSHIP_LOAD
    return kind, _relationship_of(path), parent


def _on_do_orm_execute(state: Any) -> None:
    # Guarded inline rather than by _guarded: this runs for every Session.execute().
    try:
        if process.dead:
            drain()
        uow = current.get()
        record = None
        if uow is None:
            if not process.installed:
                _note_unwatched(state.session)
                return
            record = _record(state.session)
            uow = _implicit_unit(record)
            if uow is None:
                return
        kind, relationship, parent = _classify(state)
        # Statements are keyed on the user's line and its caller; loads on the line only.
        site = callsite.find(
            1,
            _SQLALCHEMY_FRAMES.get(kind, 2),
            learn=kind,
            caller=kind in _KEYED_BY_CALLER,
        )
        # Inline (_in_unit_of_work): outside a flush this costs what it did before.
        in_flush = flushing.get() is not None and (
            getattr(state.session, "_warn_on_events", True) is not False
        )
        execution = OrmExecution(state, kind, site, relationship, parent, in_flush, uow)
        executing.set(execution)
        _note_use(record if record is not None else _record(state.session), site, uow)
        if kind is not OTHER and kind is not COLUMN_LOAD:
            mapper = state.bind_mapper
            if mapper is not None:
                query = kind is not LAZY_LOAD and kind is not RELATIONSHIP_LOAD
                if uow.parent is None:
                    uow.origins[mapper] = execution
                    if query:
                        uow.query_origins[mapper] = execution
                else:
                    uow.note_origin(mapper, execution, query)
        handlers = uow.handlers["do_orm_execute", kind]
        try:
            if handlers:
                with uow.lock:
                    for handler in handlers:
                        handler(execution)
        finally:
            # Only a marker from here on: it must not keep the session or values alive.
            execution.state = execution.parent = None
        if uow._unemitted:
            uow.release()
    except _DELIBERATE:
        raise
    except Exception:
        _internal_error("do_orm_execute")


def _on_before_cursor_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> tuple[str, Any]:
    # Registered with retval=True, which spares SQLAlchemy a wrapper call per statement;
    # the statement and parameters go back untouched whatever happens here.
    try:
        process.statements += 1
        if process.dead:
            drain()
        row = _tabulate(process.table, statement) if process.table is not None else None
        flush_record = flushing.get()
        if flush_record is not None:
            if not flush_record.flushing:
                flushing.set(None)
                flush_record = None
            elif not _in_unit_of_work(flush_record.session):
                flush_record = None  # the program's before_flush hook: its own statement
        execution: OrmExecution | None = None
        if flush_record is None:
            execution = executing.get()
            if execution is not None:
                executing.set(None)
                if execution.consumed:
                    execution = None
                else:
                    execution.consumed = True
        uow = current.get()
        if uow is None:
            if not process.installed:
                uow = None
            elif execution is not None:
                uow = execution.uow if execution.uow.active else None
            elif flush_record is not None:
                uow = _implicit_unit(flush_record)
            else:
                uow = _core_unit(conn)
            if uow is None:
                if row is not None:
                    _running.set((id(context), None, -1, None, None, 0.0, None, row))
                return statement, parameters
        if execution is not None:
            kind = execution.kind
        else:
            kind = FLUSH if flush_record is not None else CORE
        handlers = uow.handlers["before_cursor_execute", kind]
        site = execution.site if execution is not None else None
        with uow.lock:
            uow.query_count += 1
            index = len(uow.statements)
            if index < MAX_STATEMENTS_KEPT:
                uow.statements.append(statement)
                uow.durations.append(0.0)
            else:
                index = -1
            if handlers:
                if execution is None and flush_record is None:
                    site = callsite.find(1, _CURSOR_FRAMES, learn=CORE)
                payload = Statement(
                    statement,
                    parameters,
                    executemany,
                    site,
                    execution,
                    flush_record is not None,
                    conn,
                )
                for handler in handlers:
                    handler(payload)
        last_site = site
        if flush_record is not None:
            # A flush's statements are the flush()/commit() line's, looked up once a flush.
            last_site = flush_record.flush_statement_site
            if last_site is None:
                last_site = flush_record.flush_statement_site = callsite.find(1)
        checkout = _statement_resumes(conn, uow, last_site)
        if checkout is not None:
            checkout.loaded_before = execution.loaded if execution is not None else -1
            checkout.streamed = execution is not None and execution.streamed
            if not checkout.session_owned:
                if kind is CORE:
                    _note_core_write(conn, checkout, statement, last_site)
            elif flush_record is None and checkout.session_record is not None:
                _note_session_write(conn, checkout.session_record(), statement, last_site)
        busy = None
        if execution is not None or flush_record is not None:
            busy = _enter_statement(execution, flush_record, site, uow)
            if busy is not None and checkout is not None:
                held = busy.checkout
                if held is None or held() is not checkout:
                    busy.checkout = weakref.ref(checkout)
        if uow._unemitted:
            try:
                uow.release()
            except BaseException:
                # raise mode: the statement will not run.
                if busy is not None:
                    _leave_statement(busy)
                raise
        # Last, so that the duration is the cursor's, not the handlers'.
        _running.set((id(context), uow, index, checkout, last_site, time.perf_counter(), busy, row))
    except _DELIBERATE:
        raise
    except Exception:
        _internal_error("before_cursor_execute")
    return statement, parameters


def _statement_resumes(
    conn: Connection, uow: UnitOfWork, site: callsite.CallSite | None
) -> CheckoutRecord | None:
    """The statement's checkout; the time it sat idle before, if past the threshold."""
    # A connection running a statement is open and valid: no revalidation can happen.
    fairy = conn.connection
    checkout = process.checkouts_by_fairy.get(id(fairy))
    if checkout is None or checkout.ref() is not fairy:
        return None
    if checkout.idle_since:
        _idle_ends(checkout, uow, site)
    return checkout


def _idle_ends(
    checkout: CheckoutRecord,
    uow: UnitOfWork | None,
    site: callsite.CallSite | None,
    *,
    find_site: bool = False,
    resumed: str = "statement",
) -> None:
    """The checkout's idle gap ends now (a statement, a flush or a close begins on it)."""
    idle = checkout.idle_since
    checkout.idle_since = 0.0
    gap = time.perf_counter() - idle
    if checkout.transaction_began:
        checkout.idle_total += gap
        if gap > checkout.longest_idle:
            checkout.longest_idle = gap
            checkout.longest_idle_after = checkout.last_site
    if uow is not None and gap >= uow.settings.runtime.held_connection_seconds:
        if site is None and find_site:
            site = callsite.find(2)
        _dispatch(uow, "connection_idle", IdleGap(checkout, gap, resumed, site))


def _on_after_cursor_execute(
    conn: Connection,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    # Guarded inline: runs for every statement. No call-site walk here, only the clock.
    try:
        running = _running.get()
        if running is not None:
            _running.set(None)
            _statement_done(running, id(context), time.perf_counter())
    except Exception:
        _internal_error("after_cursor_execute")


def _statement_done(running: _Running, context_key: int, now: float) -> None:
    """This context's statement returned from (or failed in) the DBAPI at ``now``."""
    key, uow, index, checkout, site, start, busy, row = running
    if busy is not None:
        _leave_statement(busy)
    if row is not None and len(row) > 3:
        row[2] += now - row.pop()
    if key != context_key or uow is None:
        return
    if index >= 0:
        uow.durations[index] = now - start
    if checkout is not None and not checkout.returned:
        checkout.last_site = site
        flush = flushing.get()
        if flush is not None and flush.flushing:
            # The flush goes on computing its next statement: SQLAlchemy's own work, not
            # idleness. The clock starts again when the flush is over.
            flush.paused = checkout
        else:
            checkout.idle_since = now


def _tabulate(table: dict[str, list[Any]], statement: str) -> list[Any] | None:
    """Count a statement in ``sqla-doctor run``'s table: [times, first call site, seconds]."""
    row = table.get(statement)
    if row is not None:
        row[0] += 1
    elif len(table) < process.table_limit:
        site = callsite.find(2)
        root = process.settings.root if process.settings is not None else "."
        where = f"{callsite.display_path(site.filename, root)}:{site.lineno}" if site else None
        row = table[statement] = [1, where, 0.0]
    if row is not None:
        row.append(time.perf_counter())  # taken off again when the statement returns
    return row


def _core_unit(conn: Connection) -> UnitOfWork | None:
    """A statement outside any Session: the unit is the pooled connection's checkout."""
    try:
        fairy = conn.connection if not conn.closed else None
    except Exception:
        return None
    record = process.checkouts_by_fairy.get(id(fairy)) if fairy is not None else None
    if record is None or record.ref() is not fairy:
        return None
    return _checkout_unit(record)


@_guarded
def _on_handle_error(context: Any) -> None:
    # A statement that failed never consumed its ORM execution; a flush that failed
    # never reached after_flush_postexec.
    execution = executing.get()
    executing.set(None)
    running = _running.get()
    if running is not None:
        # It never reaches after_cursor_execute: its time and the idleness after it
        # start now.
        _running.set(None)
        _statement_done(running, id(context.execution_context), time.perf_counter())
    _note_flush_error(context)
    # Programs catch these (a framework's 500, a retry loop): explain them while raised.
    # A disconnect found by pool_pre_ping's own ping is recovered from, not raised.
    original = context.original_exception
    aborted = _note_transaction_abort(context, execution, running)
    if (
        aborted
        or isinstance(original, MissingGreenlet)
        or (
            context.is_disconnect
            and not getattr(context, "is_pre_ping", False)
            and context.sqlalchemy_exception is not None
        )
        or (context.sqlalchemy_exception is not None and _sqlite_locked(original))
    ):
        uow = current.get()
        site = None
        if execution is not None:
            # Failed before reaching the cursor (a driver that awaits to make one).
            site = execution.site
            uow = uow or execution.uow
        elif running is not None and running[0] == id(context.execution_context):
            site = running[4]
            uow = uow or running[1]
        if uow is not None and uow.active:
            _explain_while_raised(context, uow, site)


def _note_transaction_abort(context: Any, execution: Any, running: Any) -> bool:
    """Whether PostgreSQL refused this statement because its transaction had failed
    (SQLSTATE 25P02, "current transaction is aborted"); else, remember on the connection
    which error aborts its transaction, and where: the next statement's 25P02 names it."""
    original = context.original_exception
    sqlstate = sqlstate_of(original)
    connection = context.connection
    if sqlstate is None or connection is None or context.is_disconnect:
        return False
    if sqlstate == "25P02":
        return True
    if connection.closed or connection.invalidated:
        return False
    nested = connection.get_nested_transaction()
    transaction = nested or connection.get_transaction()
    if transaction is None:
        return False
    site = None
    if execution is not None:
        site = execution.site
    elif running is not None and running[0] == id(context.execution_context):
        site = running[4]
    if site is None:
        site = callsite.find(2)
    wrapped = context.sqlalchemy_exception
    # SQLAlchemy's asyncpg adapter raises its own class from asyncpg's error.
    cause = original.__cause__ if type(original).__module__.startswith("sqlalchemy.") else None
    driver = type(cause if cause is not None else original)
    connection.info[ABORTED_BY] = TransactionAbort(
        weakref.ref(transaction),
        type(wrapped if wrapped is not None else original).__name__,
        f"{driver.__module__}.{driver.__qualname__}",
        site,
        sqlstate,
        in_savepoint=nested is not None,
    )
    return False


def _sqlite_locked(error: BaseException) -> bool:
    # sqlite3's text is fixed and quotes no values. Workers catch it and retry later.
    return type(error).__module__ == "sqlite3" and str(error).startswith("database is locked")


def _explain_while_raised(context: Any, uow: UnitOfWork, site: callsite.CallSite | None) -> None:
    """Explain an error now, while the frames that raised it are still on the stack.

    Web frameworks catch what a request raises and answer 500: an error explained only
    when it leaves a unit of work or the program would go unexplained under
    ``install()`` or ``sqla-doctor run -- uvicorn ...``. The explanation becomes a
    finding of the unit and a note on the exception SQLAlchemy is about to raise, which
    tells the later, usual explanation (uncaught, or leaving ``track()``) that it is done.
    """
    original = context.original_exception
    wrapped = context.sqlalchemy_exception
    raised = wrapped if wrapped is not None else original
    # MissingGreenlet is SQLAlchemy's own; a driver's error is explained as the
    # DBAPIError that wraps it (connection_invalidated and all).
    error = original if isinstance(original, SQLAlchemyError) else raised
    if site is None:
        site = callsite.find(1)
    tracebacks = (original.__traceback__,) if original.__traceback__ is not None else ()
    # This frame's caller is SQLAlchemy's: the frames of the statement's execution, then
    # those of the attribute read that needed it, up to the program's line.
    live = sys._getframe(1)
    errors.dispatch(uow, raised, ErrorSeen(raised, error, site, tracebacks, live))


def _note_flush_error(context: Any) -> None:
    """Which error failed the flush running now: its class names, never its message
    (which holds the parameters)."""
    record = flushing.get()
    if record is None or not record.flushing:
        return
    wrapped = context.sqlalchemy_exception
    original = context.original_exception
    driver = type(original)
    record.flush_error = (
        type(wrapped if wrapped is not None else original).__name__,
        f"{driver.__module__}.{driver.__qualname__}" if wrapped is not None else None,
        sqlstate_of(original),
    )


# -- session lifecycle --------------------------------------------------------------------


def _active(session: Session) -> SessionRecord | None:
    """The session's record, if anything is watching this context."""
    if current.get() is None and not process.installed:
        return None
    if process.dead:
        drain()
    return _record(session)


@_guarded
def _on_after_transaction_create(session: Session, transaction: Any) -> None:
    _end_closed_batch()
    record = _active(session)
    if record is None:
        return
    if transaction.parent is None:
        record.owner = _session_unit(record)
        left_behind = record.discarded_dirty or _changes_left_behind(record, session)
        if left_behind and record.owner is not None:
            # Changed after the last commit, then closed: setting an attribute begins
            # no transaction, so that close() ended none and no event said so.
            record.discarded_dirty = left_behind
            _dispatch(
                record.owner,
                "after_transaction_end",
                TransactionEnd(session, record, "close", known_site=False),
            )
        record.reset_transaction()
        record.identity_map = session.identity_map
        record.identity_seq = process.row_updates
        record.root_active = True
        _note_use(record, None, None)
    elif transaction.nested:
        record.begin_savepoint()


@_guarded
def _on_after_begin(session: Session, transaction: Any, connection: Connection) -> None:
    record = _active(session)
    if record is None or record.holds_connection:
        return
    record.holds_connection = True
    checkout = _last_checkout.get()
    fairy = connection.connection if not connection.closed else None
    owned = checkout is not None and fairy is not None and checkout.ref() is fairy
    record.external = isinstance(session.bind, Connection) or not owned
    if checkout is not None and owned:
        checkout.session_owned = True
        checkout.session_record = weakref.ref(record)
        record.opened = checkout.opened
    else:
        # A connection the caller handed over: never this session's leak to report.
        site = callsite.find(1)
        record.opened = (site,) if site is not None else ()
    uow = _session_unit(record)
    if record.owner is None:
        record.owner = uow
    if uow is not None:
        uow.adopt_session(record)


@_guarded
def _on_after_commit(session: Session) -> None:
    record = _active(session) or _known(session)
    if record is None:
        return
    _commit_over(record)
    # after_commit also follows a SAVEPOINT release; the nested transaction is still
    # current then, the outermost one is not.
    if session.get_nested_transaction() is None:
        record.outcome = "commit"
        if session.expire_on_commit:
            # Only such a commit expires the objects; without it, what a rollback
            # before it expired stays expired, and that rollback is still the cause.
            record.commit_site = callsite.find(1)
            record.rollback_site = None


@_guarded
def _on_after_rollback(session: Session) -> None:
    record = _active(session) or _known(session)
    if record is None:
        return
    _commit_over(record)
    flush_failed = record.flushing
    if flush_failed:
        # A failed flush rolls the transaction back and never reaches after_flush; the
        # session then refuses work until rollback() (PendingRollbackError).
        autoflush_of = record.autoflush_of
        error, driver_error, sqlstate = record.flush_error or (None, None, None)
        in_savepoint = session.get_nested_transaction() is not None
        record.failed_flush = FailedFlush(
            autoflush_of.site if autoflush_of is not None else callsite.find(1),
            error,
            driver_error,
            in_savepoint=in_savepoint,
            earlier=dict(record.written) if record.writes and not in_savepoint else None,
            sqlstate=sqlstate,
        )
        record.flush_error = None
        _flush_done(record)
        # The rollback restarted the connection's clock, if it is still checked out.
        record.paused = None
        if autoflush_of is not None:
            _autoflush_failed(session, record, autoflush_of)
    if session.get_nested_transaction() is None:
        record.outcome = "rollback"
        # A failed flush's rollback happened where that flush (or its autoflush) ran.
        failed = record.failed_flush if flush_failed else None
        record.rollback_site = failed.site if failed is not None else callsite.find(1)
        if failed is None and (record.pending or record.writes):
            record.exit_rollback = callsite.unit_of_work_exit(1)
    else:
        # Rolling back to a SAVEPOINT undoes only the writes flushed since it.
        record.roll_back_savepoint()


@_guarded
def _on_after_transaction_end(session: Session, transaction: Any) -> None:
    # A transaction a watched context began may end in one nothing watches (closed by
    # another thread): its record still has to learn it, or it holds a connection forever.
    _end_closed_batch()
    record = _active(session) or _known(session)
    if record is None:
        return
    if transaction.nested:
        record.end_savepoint()
        return
    if transaction.parent is not None:
        return
    record.committing = False
    record.paused = None
    outcome = record.outcome or "close"
    uow = _session_unit(record)
    if uow is None and record.owner is not None and record.owner.active:
        uow = record.owner
    try:
        if uow is not None:
            if outcome == "close" and not record.discarded_dirty:
                record.discarded_dirty = _changes_left_behind(record, session)
            end = TransactionEnd(session, record, outcome, known_site=outcome == "close")
            _dispatch(uow, "after_transaction_end", end)
            if not uow.explicit:
                _checkpoint(uow)
    finally:
        record.reset_transaction()
        record.identity_map = session.identity_map
        record.identity_seq = process.row_updates
        record.sharing.new_transaction()


@_guarded
def _on_transient_to_pending(session: Session, state: Any) -> None:
    # Instrumented even when nothing watches this context: the read may come later,
    # inside a track().
    mapper = state.mapper
    if mapper not in _instrumented_mappers:
        _instrument_mapper(mapper)
    record = _active(session)
    if record is None:
        return
    record.add_pending(id(state), Added(state.class_.__name__, callsite.find(1)))
    _watch_unset_key(session, record, state)


def _watch_unset_key(session: Session, record: SessionRecord, state: Any) -> None:
    """A new object whose constructor set its primary key to None (SQLModel, a dataclass,
    ``User(id=None)``): reading it fires no ``init_scalar``, so the read is seen through
    the read tracker instead (its class's primary-key descriptors only, unless
    track-reads is on; none if it is set off)."""
    dict_ = state.dict
    keys = frozenset(
        key for key in primary_key_attributes(state.mapper) if key in dict_ and dict_[key] is None
    )
    if not keys:
        return
    uow = _object_unit(session, record)
    if (
        uow is None
        or not uow.handlers["init_scalar"]
        or uow.settings.runtime.track_reads is False
    ):
        return
    obj = state.obj()
    if obj is not None:
        reads.watch_reads(obj, state.mapper, keys, functools.partial(_on_unset_key_read, keys))


def _on_unset_key_read(keys: frozenset[str], key: str, obj: Any) -> None:
    try:
        if key not in keys:
            return
        state = instance_state(obj)
        if not state.pending:
            reads.watch_reads(obj, state.mapper, keys, None)
        elif state.dict.get(key) is None:
            _pending_key_read(key, state)
    except _DELIBERATE:
        raise
    except Exception:
        _internal_error("unset_key_read")


@_guarded
def _on_pending_to_persistent(session: Session, state: Any) -> None:
    record = process.records.get(id(session))
    if record is not None:
        record.pending.pop(id(state), None)


@_guarded
def _on_pending_to_transient(session: Session, state: Any) -> None:
    record = process.records.get(id(session))
    if record is None:
        return
    added = record.pending.pop(id(state), None)
    # rollback() sets the outcome before it expunges pending objects; close() does not,
    # nor does a unit of work's __exit__ discarding what its block did not commit.
    discards = record.outcome is None or record.exit_rollback is not None
    if discards and len(record.discarded) < MAX_DISCARDED_PER_SESSION:
        record.discarded.append(added or Added(state.class_.__name__, None))


# The identity map that replaced the one the last close() emptied: the other objects of
# that close() find it on their session and return at once. A global, not per thread:
# maps are per session, so another session's objects never match it.
_closed_batch: Any = None


def _on_persistent_to_detached(session: Session, state: Any) -> None:
    # Runs once per object that close() detaches, so guarded inline, and only the first
    # of a batch does any work.
    if not reads.covers(state.mapper):
        _watch_detached_reads(state.mapper)
    if session.identity_map is _closed_batch:
        return
    try:
        _detached(session, state)
    except _DELIBERATE:
        raise
    except Exception:
        _internal_error("persistent_to_detached")


def _watch_detached_reads(mapper: Any) -> None:
    """Inside a ``track()`` block, make the reads of a class whose objects left their
    session observable (unless track-reads is set off): a DetachedInstanceError is then
    explained as it is raised, before pydantic's ``from_attributes`` turns it into a
    ValidationError or an ``except Exception`` swallows it."""
    try:
        uow = current.get()
        if (
            uow is not None
            and uow.explicit
            and uow.handlers["error"]
            and uow.settings.runtime.track_reads is not False
        ):
            reads.cover_detachable(mapper)
    except Exception:
        _internal_error("watch_detached_reads")


def _end_closed_batch() -> None:
    """close() detached its objects and then ended its transaction: an ``expunge(obj)``
    on the session reused after it must not be taken for one more object of the batch."""
    global _closed_batch
    _closed_batch = None


def _detached(session: Session, state: Any) -> None:
    global _closed_batch
    record = process.records.get(id(session))
    if record is None:
        return
    replaced = session.identity_map
    last = record.detachments[-1] if record.detachments else None
    if replaced is not record.identity_map:
        # close() or expunge_all(): the map the objects were in was replaced already.
        _closed_batch = replaced
        if last is not None and last.marker is replaced:
            return
        if not record.discarded_dirty:
            # Now or never: every object of the batch is still in the old map, held by
            # the list close() detaches them from. Once detached, a changed object that
            # only the session referenced is collected and leaves that map.
            record.discarded_dirty = _changes_left_behind(record, session)
        how = "expunge_all" if _expunge_all_called(sys._getframe(1)) else "close"
        detachment = Detachment(
            callsite.find(2), how, record.identity_map, record.commit_site, record.rollback_site
        )
        # The new map marks the batch: the next objects of this close() find it here.
        detachment.marker = replaced
        record.add_detachment(detachment)
        if how == "close":
            _close_begins(record, detachment.site)
        return
    # expunge(obj): one object leaves a map that stays.
    site = callsite.find(2)
    if last is None or last.how != "expunge" or last.site != site:
        last = Detachment(site, "expunge", None, record.commit_site, record.rollback_site)
        record.add_detachment(last)
    if len(last.keys) < MAX_EXPUNGED_KEYS and state.key is not None:
        last.keys.add(state.key)


def _close_begins(record: SessionRecord, site: callsite.CallSite | None) -> None:
    """close() begins detaching the session's objects: its connection's idle gap ends
    here. Detaching a large identity map before the connection goes back to the pool is
    SQLAlchemy's work, not the program holding the connection."""
    checkout = record.checkout() if record.checkout is not None else None
    if checkout is not None and not checkout.returned and checkout.idle_since:
        _idle_ends(checkout, _session_unit(record), site, resumed="rollback")


def _expunge_all_called(frame: Any) -> bool:
    """Whether the program called ``Session.expunge_all()`` itself, not through
    ``close()``, ``reset()`` or ``invalidate()`` (which all call it from ``_close_impl``).

    The frames between the detach event and SQLAlchemy's Session methods are its own;
    the code objects are compared, not names.
    """
    expunge_all = Session.expunge_all.__code__
    close_impl = getattr(getattr(Session, "_close_impl", None), "__code__", None)
    seen = False
    for _ in range(_STACK_LIMIT):
        if frame is None:
            break
        code = frame.f_code
        if code is close_impl:
            return False
        if code is expunge_all:
            seen = True
        elif seen:
            return True  # the caller of expunge_all(): the program, or AsyncSession's proxy
        frame = frame.f_back
    return seen


def _has_net_changes(state: Any) -> bool:
    # AttributeState.history never loads: it reads what the object already holds.
    return any(attr.history.has_changes() for attr in state.attrs)


def _changes_left_behind(record: SessionRecord, session: Session) -> list[str]:
    """Entities changed but never flushed, in an identity map close() threw away.

    ``close()`` (and ``expunge_all()``) replace ``session.identity_map`` with a new one
    and leave the old one as it was, modified states included; comparing the map seen
    at the start of the transaction with the current one finds them without listening
    to every object's detachment.
    """
    old = record.identity_map
    if old is None or old is session.identity_map or not old.check_modified():
        return []
    return [
        state.class_.__name__
        for state in old.all_states()[:MAX_DISCARDED_PER_SESSION]
        if _lost_change(state, record)
    ]


def _in_unit_of_work(session: Any) -> bool:
    """Whether a flush's unit of work is running its own SQL now (asked only while a
    flush is under way).

    Our before_flush listener marks the flush before the program's own before_flush
    hooks run (it was registered first): what those hooks load or query is the
    program's. Session._flush sets ``_warn_on_events`` only around the unit of work's
    execution; a session without it (another SQLAlchemy) counts the whole flush.
    """
    return flushing.get() is not None and getattr(session, "_warn_on_events", True) is not False


@_guarded
def _on_before_flush(session: Session, flush_context: Any, instances: Any) -> None:
    record = _active(session)
    if record is None:
        _note_unwatched(session)
        return
    _note_use(record, None, None)
    record.flushing = True
    flushing.set(record)
    execution = executing.get()
    # do_orm_execute ran, the statement has not: this flush is that query's autoflush.
    autoflush = (
        execution is not None and not execution.consumed and execution.session_key == id(session)
    )
    _pause_idle_clock(record, execution.site if autoflush and execution is not None else None)
    if record.failed_flush is not None and not autoflush:
        # An explicit flush() of a session that refuses work: the query of an autoflush
        # was reported by do_orm_execute already.
        uow = _session_unit(record)
        if uow is not None:
            reuse = FlushAfterFailure(session, record, callsite.find(1))
            _dispatch(uow, "flush_after_failure", reuse)
    _check_new_identities(session, record)
    if autoflush:
        assert execution is not None
        record.autoflush_of = execution
        record.flush_statement_site = execution.site
    else:
        if execution is not None and execution.session_key != id(session):
            # Another session's execution that never reached the cursor (it raised on
            # the way, e.g. PendingRollbackError): not this flush's, nor its checkout's.
            executing.set(None)
        record.autoflush_of = None
        record.flush_statement_site = None


def _pause_idle_clock(record: SessionRecord, site: callsite.CallSite | None) -> None:
    """A flush begins: its connection's idle gap ends here, and the time until the flush
    is over (ordering the objects, building each statement's parameters, updating the
    identity map after) is SQLAlchemy's work, not the program holding the connection."""
    checkout = record.checkout() if record.checkout is not None else None
    if checkout is None or checkout.returned or checkout.ref() is None:
        return
    record.paused = checkout
    if checkout.idle_since:
        _idle_ends(checkout, _session_unit(record), site, find_site=True)


def _resume_idle_clock(record: SessionRecord) -> None:
    """The flush is over: its connection is idle from now until its next use."""
    checkout = record.paused
    record.paused = None
    if checkout is not None and not checkout.returned and not checkout.idle_since:
        checkout.idle_since = time.perf_counter()


@_guarded
def _on_after_flush_postexec(session: Session, flush_context: Any) -> None:
    record = process.records.get(id(session))
    # A commit's flush: the clock stays stopped until the COMMIT, which follows at once
    # (releasing tens of thousands of flushed objects can take a second on its own).
    if record is not None and record.paused is not None and not record.committing:
        _resume_idle_clock(record)


def _commit_over(record: SessionRecord) -> None:
    """Its commit (or the rollback of a failed one) is over."""
    if record.committing:
        record.committing = False
        paused = record.paused
        if paused is not None and paused.session_owned:
            record.paused = None  # the Session gives its connection back now
        elif paused is not None:
            _resume_idle_clock(record)  # the caller's Connection stays with the caller


def _check_new_identities(session: Session, record: SessionRecord) -> None:
    """New objects whose primary key the session already holds, or another new one has:
    the flush is about to INSERT the same key twice (SQD163)."""
    uow = _session_unit(record)
    if uow is None or not uow.handlers["duplicate_identity"]:
        return
    firsts: dict[Any, Any] = {}
    identity_map = session.identity_map
    deleted: set[int] | None = None
    for obj in list(session.new)[:MAX_NEW_CHECKED]:
        state = instance_state(obj)
        keys = primary_key_attributes(state.mapper)
        values = _primary_key_values(state, keys)
        if values is None:
            continue  # the database assigns it, or related objects not flushed yet
        identity = state.mapper.identity_key_from_primary_key(values, state.identity_token)
        held = identity_map.get(identity)
        if held is not None:
            if deleted is None:
                deleted = {id(gone) for gone in session.deleted}
            if id(held) in deleted:
                continue  # delete() then add(): SQLAlchemy turns the pair into an UPDATE
            other = instance_state(held)
        elif identity in firsts:
            other = firsts[identity]
        else:
            firsts[identity] = state
            continue
        _dispatch(uow, "duplicate_identity", DuplicateIdentity(state, other, record))


def _primary_key_values(state: Any, keys: tuple[str, ...]) -> tuple[Any, ...] | None:
    """The primary key a flush will INSERT a new object with, when known already.

    A key column also a many-to-one relationship's foreign key (an association object's
    ``Enrollment(student=s, course=c)``) is not in ``state.dict`` before the flush
    copies it from the related object: it is read from that object instead, when the
    relationship is set in ``state.dict`` and the related object's column is known
    (in its ``__dict__``, or in its identity key once persistent, even expired).
    """
    if not keys:
        return None
    values: list[Any] = []
    sources: dict[str, tuple[tuple[str, Any, str], ...]] | None = None
    for key in keys:
        value = state.dict.get(key)
        if value is None:
            if sources is None:
                sources = _primary_key_sources(state.mapper)
            value = _from_related(state, sources.get(key, ()))
            if value is None:
                return None
        values.append(value)
    return tuple(values)


def _from_related(state: Any, sources: tuple[tuple[str, Any, str], ...]) -> Any:
    for relationship, target, attribute in sources:
        related = state.dict.get(relationship)
        if related is None:
            continue
        try:
            other = instance_state(related)
        except Exception:
            continue  # not a mapped object: the flush will say so
        if not other.mapper.isa(target):
            continue
        value = other.dict.get(attribute)
        if value is None and other.key is not None:
            names = primary_key_attributes(other.mapper)
            if attribute in names and len(other.key[1]) == len(names):
                value = other.key[1][names.index(attribute)]
        if value is not None:
            return value
    return None


# mapper -> {primary key attribute: ((relationship, its target mapper, the target's
# attribute the flush copies into it), ...)}, over many-to-one relationships.
_pk_sources: dict[Any, dict[str, tuple[tuple[str, Any, str], ...]]] = {}


def _primary_key_sources(mapper: Any) -> dict[str, tuple[tuple[str, Any, str], ...]]:
    sources = _pk_sources.get(mapper)
    if sources is not None:
        return sources
    found: dict[str, list[tuple[str, Any, str]]] = {}
    try:
        primary = mapper.primary_key
        for relationship in mapper.relationships:
            if relationship.direction is not MANYTOONE or relationship.viewonly:
                continue
            target = relationship.mapper
            for local, remote in relationship.local_remote_pairs:
                if not any(local is column for column in primary):
                    continue
                key = mapper.get_property_by_column(local).key
                attribute = target.get_property_by_column(remote).key
                found.setdefault(key, []).append((relationship.key, target, attribute))
    except Exception:
        found = {}
    sources = {key: tuple(pairs) for key, pairs in found.items()}
    if len(_pk_sources) < 10_000:
        _pk_sources[mapper] = sources
    return sources




@_guarded
def _on_after_flush(session: Session, flush_context: Any) -> None:
    record = process.records.get(id(session))
    if record is None:
        return
    try:
        _flushed(session, record)
    finally:
        # The flush has emitted its SQL: what follows (after_flush_postexec hooks) is
        # the user's own.
        _flush_done(record)


def _flushed(session: Session, record: SessionRecord) -> None:
    # In after_flush, new/dirty/deleted still show what this flush wrote.
    inserted = _pending_by_entity(session)
    deleted = len(session.deleted)
    updated = 0
    for obj in session.dirty:
        if session.is_modified(obj):
            updated += 1
            state = instance_state(obj)
            _note_updated_row(state, record)
            _note_changed_attributes(state, record)
    if not (inserted or deleted or updated):
        return
    record.writes += 1
    autoflush_of = record.autoflush_of
    site = autoflush_of.site if autoflush_of is not None else callsite.find(1)
    if record.flush_site is None:
        record.flush_site = site
        record.flushed_at = time.perf_counter()
    for name, count in inserted.items():
        _bump(record.written, f"{name} inserted", count)
    if updated:
        _bump(record.written, "row(s) updated", updated)
    if deleted:
        _bump(record.written, "row(s) deleted", deleted)
    uow = _session_unit(record)
    if uow is not None:
        _dispatch(uow, "after_flush", Flush(session, record, inserted, autoflush_of, site))


def _pending_by_entity(session: Session) -> dict[str, int]:
    """How many pending objects of each class the session holds: what a flush INSERTs."""
    counts: dict[str, int] = {}
    for obj in session.new:
        name = type(obj).__name__
        counts[name] = counts.get(name, 0) + 1
    return counts


def _autoflush_failed(session: Session, record: SessionRecord, query: OrmExecution) -> None:
    """A query's autoflush raised: the objects it tried to INSERT were not ready."""
    inserted = _pending_by_entity(session)
    uow = _session_unit(record)
    if inserted and uow is not None and uow.active:
        payload = Flush(session, record, inserted, query, query.site)
        _dispatch(uow, "autoflush_failed", payload, can_raise=False)


def _note_updated_row(state: Any, record: SessionRecord) -> None:
    key = state.key
    if key is None:
        return
    rows = process.updated_rows
    with _rows_lock:
        rows.pop(key, None)
        if len(rows) >= MAX_UPDATED_ROWS:
            # Oldest first: dicts keep insertion order.
            del rows[next(iter(rows))]
        process.row_updates += 1
        rows[key] = (record.key, process.row_updates)


def _note_changed_attributes(state: Any, record: SessionRecord) -> None:
    # In after_flush, committed_state still holds what the flush writes.
    # Keyed by the row's identity, not id(state): a merge loop's objects die as it goes,
    # and a new object at the same address is another row.
    if state.key is None:
        return
    changed = record.changed_attributes
    keys = changed.get(state.key)
    if keys is None:
        if len(changed) >= MAX_CHANGED_OBJECTS:
            return
        keys = changed[state.key] = set()
    if record.nested_marks:
        undo = record.changed_in_savepoints
        for attribute in state.committed_state:
            if attribute not in keys:
                keys.add(attribute)
                undo.append((state.key, attribute))
    else:
        keys.update(state.committed_state)


def _lost_change(state: Any, record: SessionRecord) -> bool:
    """A change of ``state`` that no session wrote: not flushed here, and its row not
    updated by another session since this one began its transaction (the object handed
    to ``merge()`` keeps its changes after the session it was merged into wrote them)."""
    if not (state.modified and _has_net_changes(state)):
        return False
    return not _written_elsewhere_since(state.key, record)


def _written_elsewhere_since(identity: Any, record: SessionRecord) -> bool:
    """Whether another session flushed an UPDATE of this row after ``record``'s session
    began its transaction (so what it holds may be older than what that one wrote)."""
    written = process.updated_rows.get(identity)
    if written is None:
        return False
    writer, when = written
    return writer != record.key and when > record.identity_seq


def _flush_done(record: SessionRecord) -> None:
    record.flushing = False
    record.autoflush_of = None
    if flushing.get() is record:
        flushing.set(None)


def _bump(counts: dict[str, int], key: str, by: int) -> None:
    if key in counts or len(counts) < 16:
        counts[key] = counts.get(key, 0) + by


# -- primary-key reads on pending objects, merge() onto held objects ----------------------


def _instrument_mapper(mapper: Any) -> None:
    """Listen for reads of the unset primary key of this mapper's new objects, and for
    merge() writing into its persistent ones.

    ``init_scalar`` fires when code reads a scalar attribute that holds no value yet,
    which for a pending object's primary key means: before the flush that assigns it.
    ``set`` fires when a column attribute is assigned, merge() included (it sets each
    attribute of the object the session holds); see ``_on_column_set``.
    """
    with _registration_lock:
        if mapper in _instrumented_mappers:
            return
        _instrumented_mappers.add(mapper)
        for column in mapper.primary_key:
            try:
                prop = mapper.get_property_by_column(column)
            except Exception:
                continue
            attribute = getattr(mapper.class_, prop.key, None)
            if attribute is None:
                continue
            handler = functools.partial(_on_init_scalar, prop.key)
            event.listen(attribute, "init_scalar", handler, raw=True, retval=True)
            _registered.append((attribute, "init_scalar", handler))
        for prop in mapper.column_attrs:
            attribute = mapper.class_.__dict__.get(prop.key)
            if not isinstance(attribute, InstrumentedAttribute):
                continue
            # include_key with raw and retval: SQLAlchemy calls the listener without a
            # wrapper of its own, which halves what each assignment pays for it.
            event.listen(attribute, "set", _on_column_set, raw=True, retval=True, include_key=True)
            _registered.append((attribute, "set", _on_column_set))


@_guarded
def _on_mapper_configured(mapper: Any, class_: Any) -> None:
    _instrument_mapper(mapper)
    # Read tracking (track-reads) covers mappers configured after it started.
    reads.mapper_configured(mapper)


def _instrument_known_mappers() -> None:
    """Mappers configured before the listeners were registered.

    SQLAlchemy has no public list of every registry; this reads the private one when it
    exists. Without it, a mapper is instrumented when one of its objects is next added
    to a session, which is before any pending primary key can be read.
    """
    for mapper in _configured_mappers():
        _instrument_mapper(mapper)


def track_every_read() -> None:
    """``track-reads`` on: the reads of every mapped class are seen, not only those of
    the classes SQD257/SQD258 follow, so that a failed read (DetachedInstanceError) is
    explained while raised. Mappers configured later are switched as they come."""
    if reads.enable():
        for mapper in _configured_mappers():
            reads.cover(mapper)


def _configured_mappers() -> list[Any]:
    try:
        # ``sqlalchemy.orm.mapper`` the attribute is a function; the module is in sys.modules.
        registries = importlib.import_module("sqlalchemy.orm.mapper")._all_registries()
        return [m for registry in registries for m in list(registry.mappers) if m.configured]
    except Exception:
        return []


def _object_unit(session: Session | None, record: SessionRecord | None) -> UnitOfWork | None:
    """The unit of work an attribute event of one of ``session``'s objects belongs to: the
    context's explicit one, else under install() the session's implicit one (its record
    made only then: attribute events run for every program, watched or not)."""
    uow = current.get()
    if uow is None and process.installed and session is not None:
        uow = _session_unit(record or _record(session))
    return uow


def _on_init_scalar(key: str, state: Any, value: Any, dict_: Any) -> Any:
    try:
        if state.pending:
            _pending_key_read(key, state)
    except _DELIBERATE:
        raise
    except Exception:
        _internal_error("init_scalar")
    return value


def _pending_key_read(key: str, state: Any) -> None:
    """The program read the primary key of a new object, which holds nothing or None."""
    session = state.session
    record = process.records.get(id(session)) if session is not None else None
    if record is not None and record.flushing:
        return
    uow = _object_unit(session, record)
    if uow is None or not uow.handlers["init_scalar"]:
        return
    site = callsite.find(2)
    # A repr() of a new object reads its id as a matter of course; the value it
    # shows is right (None), nobody uses it as a key.
    if site is None or site.function in _REPR_FUNCTIONS or _in_repr(site):
        return
    _dispatch(uow, "init_scalar", AttributeRead(state, key, record, site))


def _in_repr(site: callsite.CallSite) -> bool:
    """Whether a ``__repr__`` that is not the program's own (a dataclass's, made by
    ``dataclasses`` or ``MappedAsDataclass``) runs between the read and ``site``:
    ``print(user)``, a log line."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(_MAX_REPR_DEPTH):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_filename == site.filename and frame.f_lineno == site.lineno:
            return False
        if code.co_name in _REPR_FUNCTIONS:
            return True
        frame = frame.f_back
    return False


# merge() and merge_all() (2.1): a ``set`` event under one of them is merge() copying an
# attribute onto the object the session holds. Their frames are a few above the
# listener (ColumnProperty.merge, Session._merge), more for a cascade to related objects.
_MERGE_CODES = method_codes(Session, "merge", "merge_all")
_MERGE_FRAMES_SEARCHED = 24


def _on_column_set(state: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
    # Runs for every assignment to a mapped column: new objects (no identity key yet) and
    # values that stay the same leave at once.
    if state.key is None or value is oldvalue or oldvalue is NO_VALUE:
        return value
    try:
        key = initiator.key
        frame = calling_frame(_MERGE_CODES, _MERGE_FRAMES_SEARCHED, skip=2)
        if frame is None or not _differs(value, oldvalue):
            return value
        session = state.session
        if session is None:
            return value
        record = process.records.get(id(session))
        uow = _object_unit(session, record)
        if uow is None or not uow.handlers["merge_write"]:
            return value
        _dispatch(
            uow,
            "merge_write",
            MergeWrite(
                state,
                key,
                id(frame),
                record,
                callsite.find(1),
                changed=key in state.committed_state
                or (record is not None and key in record.changed_attributes.get(state.key, ())),
                stale=_stale_copy(frame, state, key, record),
            ),
        )
    except _DELIBERATE:
        raise
    except Exception:
        _internal_error("merge_write")
    return value


def _differs(value: Any, oldvalue: Any) -> bool:
    try:
        return bool(value != oldvalue)
    except Exception:  # an array type's ``!=``, a broken __eq__: not ours to judge
        return False


def _stale_copy(frame: FrameType, state: Any, key: str, record: SessionRecord | None) -> bool:
    """Whether merge() is copying ``key`` from a detached copy of ``state``'s own row that
    still holds the value it was loaded with, older than the session's.

    The copy is merge()'s ``instance`` argument (public name); objects reached through a
    cascade, and merge_all(), are not judged. A row another session updated during this
    session's transaction is not judged either: that session's copy may be the newer one.
    """
    if record is None or _written_elsewhere_since(state.key, record):
        return False
    source = frame.f_locals.get("instance")
    if source is None:
        return False
    try:
        source_state = instance_state(source)
    except Exception:
        return False
    return (
        source_state.key is not None
        and source_state.key == state.key
        and key not in source_state.committed_state
    )


# -- objects loaded by a mapper a detector watches ----------------------------------------

_load_watched: set[Any] = set()


def watch_loads(mapper: Any) -> None:
    """From now on, hand each object of ``mapper`` (or a subclass) a query loads to the
    detectors' ``on_load`` handlers.

    Registered on demand, for the few mappers a detector asks about (the parent of a
    joined-eager-loaded collection), because ``InstanceEvents.load`` runs once per loaded
    object; removed with every other listener by ``unregister()``.
    """
    with _registration_lock:
        if mapper in _load_watched or not process.registered:
            return
        _load_watched.add(mapper)
        event.listen(mapper, "load", _on_load, raw=True, propagate=True)
        _registered.append((mapper, "load", _on_load))


def _on_load(state: Any, context: Any) -> None:
    # Guarded inline: this runs for every object of a watched mapper.
    try:
        uow = current.get()
        if uow is None:
            if not process.installed:
                return
            session = getattr(context, "session", None)
            record = process.records.get(id(session)) if session is not None else None
            uow = record.implicit if record is not None else None
            if uow is None:
                return
        handlers = uow.handlers["load"]
        if handlers:
            payload = Loaded(state, context)
            with uow.lock:
                for handler in handlers:
                    handler(payload)
    except _DELIBERATE:
        raise
    except Exception:
        _internal_error("load")


# -- pool ---------------------------------------------------------------------------------


@_guarded
def _on_checkout(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    uow = current.get()
    if uow is None and not process.installed:
        return
    if process.dead:
        drain()
    record = CheckoutRecord(id(connection_record), connection_proxy, _opening_stack(uow), uow)
    process.checkouts[id(connection_record)] = record
    process.checkouts_by_fairy[id(connection_proxy)] = record
    _last_checkout.set(record)
    if uow is not None:
        uow.adopt_checkout(record)


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
    fairy = conn.connection
    checkout = process.checkouts_by_fairy.get(id(fairy))
    if checkout is None or checkout.ref() is not fairy or checkout.returned:
        return None
    return checkout


def _runtime_of(checkout: CheckoutRecord) -> Any:
    """The RuntimeConfig that judges a checkout: its unit's, else the installed one."""
    owner = checkout.owner
    if owner is not None and owner.active:
        return owner.settings.runtime
    return process.settings.runtime if process.settings is not None else None


def _connection_resumes(
    checkout: CheckoutRecord, what: str, now: float, *, known: bool = True
) -> None:
    """A commit, rollback or checkin: the end of an idle gap and of a transaction.

    The pool's units are made only when there is something to report: a connection
    committing in time is the common case.
    """
    runtime = _runtime_of(checkout)
    idle = checkout.idle_since
    began = checkout.transaction_began
    stretch = checkout.idle_stretch(now)
    idle_total = checkout.idle_time(now)
    if what != "checkin":
        # Still checked out (a Core connection after commit()): idle from now on. A
        # Session gives its connection back as its commit or rollback ends; until then
        # it is SQLAlchemy's own work (expiring the objects), not the program's, and the
        # gap that ends here is not reported again at the checkin.
        checkout.idle_since = 0.0 if checkout.session_owned else now
    checkout.longest_idle, checkout.longest_idle_after = 0.0, None
    checkout.idle_total = 0.0
    if runtime is not None and idle and now - idle >= runtime.held_connection_seconds:
        uow = _checkout_unit(checkout)
        if uow is not None:
            # Still set: SQD157 tells a gap inside the transaction from one after it.
            gap = IdleGap(checkout, now - idle, what, known=known)
            _dispatch(uow, "connection_idle", gap, can_raise=False)
    checkout.transaction_began = 0.0
    if runtime is None:
        return
    if began and now - began >= runtime.idle_transaction_seconds:
        uow = _checkout_unit(checkout)
        if uow is not None:
            span = TransactionSpan(
                checkout, what, now - began, stretch, idle_total, known=known
            )
            _dispatch(uow, "connection_transaction_end", span, can_raise=False)


@_guarded
def _on_engine_begin(conn: Connection) -> None:
    checkout = _held(conn)
    if checkout is None or _autocommit(conn):
        return
    checkout.transaction_began = time.perf_counter()
    checkout.longest_idle, checkout.longest_idle_after = 0.0, None
    checkout.idle_total = 0.0
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
        checkout.core_writes, checkout.core_ddl, checkout.core_write_site = 0, 0, None
        _connection_resumes(checkout, "commit", time.perf_counter())


@_guarded
def _on_engine_rollback(conn: Connection) -> None:
    checkout = _held(conn)
    if checkout is not None:
        if checkout.core_writes:
            _core_writes_rolled_back(checkout)
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


def _core_writes_rolled_back(checkout: CheckoutRecord) -> None:
    """A Core connection's writes were rolled back: by ``rollback()`` on purpose, by an
    error path, or by ``close()`` (the end of ``with engine.connect()``) with no commit."""
    writes, ddl, first = checkout.core_writes, checkout.core_ddl, checkout.core_write_site
    checkout.core_writes, checkout.core_ddl, checkout.core_write_site = 0, 0, None
    if sys.exc_info()[1] is not None or not _closing_connection(sys._getframe(2)):
        return
    uow = _checkout_unit(checkout)
    if uow is not None:
        lost = ConnectionWritesLost(checkout, writes, ddl, first, callsite.find(2))
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
    record = process.checkouts.get(id(connection_record))
    if record is None:
        return
    _checkout_done(record, garbage_collected=record.garbage_collected)


# -- one session, several users ----------------------------------------------------------
#
# A Session is not safe to use from two asyncio tasks or two threads at once (SQD158,
# SQD159). Each operation that begins (do_orm_execute, a flush, a commit, a begin) notes
# who runs it in the session's ``Sharing``; each statement marks the session busy while
# the DBAPI call runs. Who is a greenlet: an AsyncSession call runs in a greenlet of its
# own (greenlet_spawn), alive exactly while that call is suspended on I/O, so another
# task's operation beginning while it is alive overlaps it, whatever the timing; a sync
# Session runs in its thread's main greenlet. The same caller as last time costs a
# greenlet lookup and a weak reference call.

_sharing_lock = threading.Lock()
_MAX_TASKS_SEARCHED = 1_000
_getcurrent: Callable[[], Any]
try:
    # Imported by name: greenlet ships no type information.
    _getcurrent = importlib.import_module("greenlet").getcurrent
except ImportError:  # pragma: no cover - greenlet is optional since SQLAlchemy 2.1
    _getcurrent = threading.current_thread


def _in_async_call(who: Any) -> bool:
    """Whether ``who`` is SQLAlchemy's greenlet for an AsyncSession call, still running."""
    return bool(getattr(who, "__sqlalchemy_greenlet_provider__", False)) and not who.dead


def _alive(who: Any) -> bool:
    dead = getattr(who, "dead", None)
    return not dead if dead is not None else bool(who.is_alive())


def _note_use(
    record: SessionRecord, site: callsite.CallSite | None, uow: UnitOfWork | None
) -> None:
    """An operation on the session begins here."""
    who = _getcurrent()
    last = record.sharing.last
    if last is not None and last() is who:
        return
    _changed_hands(record, who, site, uow)


def _changed_hands(
    record: SessionRecord, who: Any, site: callsite.CallSite | None, uow: UnitOfWork | None
) -> None:
    sharing = record.sharing
    thread = threading.get_ident()
    if site is None:
        site = callsite.find(2)
    task: weakref.ref[Any] | None = None
    if getattr(who, "__sqlalchemy_greenlet_provider__", False):
        try:
            running = asyncio.current_task()
        except RuntimeError:
            running = None
        task = weakref.ref(running) if running is not None else None
    found: SharedUse | None = None
    with _sharing_lock:
        previous = sharing.last() if sharing.last is not None else None
        if sharing.last_thread == thread:
            if previous is not None and previous is not who and _in_async_call(previous):
                found = SharedUse(
                    record,
                    site,
                    sharing.last_site,
                    _task_name(task),
                    _task_name(sharing.last_task),
                    tasks=True,
                    concurrent=True,
                )
        else:
            found = _thread_sharing(record, thread, site)
        threads = sharing.threads
        if len(threads) < MAX_THREADS_PER_TRANSACTION and all(t != thread for t, _ in threads):
            if not threads:
                sharing.first_site = site
            threads.append((thread, threading.current_thread().name))
        sharing.last = weakref.ref(who)
        sharing.last_site = site
        sharing.last_thread = thread
        sharing.last_task = task
    if found is not None:
        if found.tasks and (found.site is None or found.other_site is None):
            awaiting = _awaiting_site(record)
            found.site = found.site or awaiting
            found.other_site = found.other_site or awaiting
        _shared(record, found, uow)


def _thread_sharing(
    record: SessionRecord, thread: int, site: callsite.CallSite | None
) -> SharedUse | None:
    """This thread uses the session: is another one in a statement, or did it take turns?"""
    sharing = record.sharing
    busy = sharing.busy() if sharing.busy is not None else None
    if busy is not None and sharing.busy_thread != thread and _alive(busy):
        return SharedUse(
            record,
            site,
            sharing.busy_site,
            _thread_name(record, thread),
            _thread_name(record, sharing.busy_thread),
            tasks=False,
            concurrent=True,
        )
    last = sharing.last_thread
    if last and last != thread and _provisioning(record):
        # Another thread's operation is still connecting (a pool checkout, a new DBAPI
        # connection): SQLAlchemy refuses this one ("This session is provisioning a new
        # connection; concurrent operations are not permitted"), no statement ran yet.
        # The transaction's connection is acquired by its first operation's thread.
        other, other_site = last, sharing.last_site
        if sharing.threads and sharing.threads[0][0] != thread:
            other, other_site = sharing.threads[0][0], sharing.first_site or other_site
        return SharedUse(
            record,
            site,
            other_site,
            _thread_name(record, thread),
            _thread_name(record, other),
            tasks=False,
            concurrent=True,
            connecting=True,
        )
    if last and last != thread and record.committing:
        # Another thread's commit() is under way: between its flush and its COMMIT
        # SQLAlchemy refuses this one ("This session is in 'prepared' state"), and once
        # the COMMIT is done the transaction this one joined is gone. The commit() call
        # noted no site of its own (the thread was the session's last user already).
        return SharedUse(
            record,
            site,
            callsite.thread_site(last) or sharing.last_site,
            _thread_name(record, thread),
            _thread_name(record, last),
            tasks=False,
            concurrent=True,
            committing=True,
        )
    other_site = sharing.last_site
    if (
        last
        and last != thread
        and other_site is not None
        and callsite.thread_inside(last, other_site, record.session)
    ):
        # The other thread is still in the function that used it (not waiting for this
        # one in join() or result()): two workers sharing it between statements, which
        # overlap only now and then in the driver (a ThreadPoolExecutor's map()).
        return SharedUse(
            record,
            site,
            other_site,
            _thread_name(record, thread),
            _thread_name(record, last),
            tasks=False,
            concurrent=True,
            midway=True,
        )
    if last and last != thread and any(t == thread for t, _ in sharing.threads):
        # This thread used it earlier in this transaction, another one since: turns
        # taken, not a hand-over.
        return SharedUse(
            record,
            site,
            sharing.last_site,
            _thread_name(record, thread),
            _thread_name(record, last),
            tasks=False,
            concurrent=False,
        )
    return None


def _provisioning(record: SessionRecord) -> bool:
    """Whether the session's transaction is acquiring its connection right now (inside
    ``_connection_for_bind``): read from its state, without touching the connection."""
    session = record.ref()
    if session is None:
        return False
    transaction = session.get_transaction()
    state = getattr(transaction, "_state", None)
    return getattr(state, "name", None) == "PROVISIONING_CONNECTION"


def _thread_name(record: SessionRecord, ident: int) -> str:
    for known, name in record.sharing.threads:
        if known == ident:
            return f"thread {name}"
    if ident == threading.get_ident():
        return f"thread {threading.current_thread().name}"
    return "another thread"


def _task_name(ref: weakref.ref[Any] | None) -> str:
    task = ref() if ref is not None else None
    if task is None:
        return "another task"
    coroutine = getattr(task.get_coro(), "__qualname__", None)
    name = task.get_name()
    return f"task {name} ({coroutine})" if coroutine else f"task {name}"


def _shared(record: SessionRecord, found: SharedUse, uow: UnitOfWork | None) -> None:
    record.sharing.seen = found
    if uow is None:
        uow = _session_unit(record)
    if uow is not None:
        _dispatch(uow, "session_shared", found)


def _enter_statement(
    execution: OrmExecution | None,
    flush_record: SessionRecord | None,
    site: callsite.CallSite | None,
    uow: UnitOfWork,
) -> SessionRecord | None:
    """A statement of a session reaches the DBAPI: the session is busy until it returns
    (the record returned, to hand to ``_leave_statement`` then)."""
    record = flush_record
    if record is None and execution is not None:
        record = process.records.get(execution.session_key)
    if record is None:
        return None
    sharing = record.sharing
    who = _getcurrent()
    thread = threading.get_ident()
    busy = sharing.busy() if sharing.busy is not None else None
    if busy is not None and busy is not who and sharing.busy_thread != thread and _alive(busy):
        # Two threads inside DBAPI calls on the session's one connection.
        with _sharing_lock:
            found = _thread_sharing(record, thread, site or callsite.find(3))
        if found is not None:
            _shared(record, found, uow)
    last = sharing.last
    sharing.busy = last if last is not None and last() is who else weakref.ref(who)
    sharing.busy_site = site if site is not None else sharing.last_site
    sharing.busy_thread = thread
    return record


def _leave_statement(record: SessionRecord) -> None:
    sharing = record.sharing
    busy = sharing.busy
    if busy is not None and busy() is _getcurrent():
        sharing.busy = None


@_guarded
def _on_before_commit(session: Session) -> None:
    record = _active(session)
    if record is not None:
        _note_use(record, None, None)
        record.committing = True
    else:
        _note_unwatched(session)


def _known(session: Session) -> SessionRecord | None:
    record = process.records.get(id(session))
    return record if record is not None and record.ref() is session else None


def _note_unwatched(session: Session) -> None:
    """A context nothing watches uses a session a watched one uses too.

    A thread started inside ``track()`` does not inherit its unit of work; its turns
    with the session still count, for the watching thread to report.
    """
    record = _known(session)
    if record is not None:
        _note_use(record, None, None)


def _awaiting_site(record: SessionRecord) -> callsite.CallSite | None:
    """The user's line awaiting the tasks that share this session, for a task that has
    no user frame of its own (``asyncio.gather(session.execute(a), session.execute(b))``
    wraps the library's coroutines in tasks).

    Looked up only once an overlap is found: the innermost user frame of a task whose
    locals hold the session (or its AsyncSession), by identity.
    """
    for _, frames, inner in _tasks_holding(record):
        frame = frames[inner]
        return callsite.CallSite(
            frame.f_code.co_filename,
            frame.f_lineno,
            frame.f_code.co_name,
            frame.f_globals.get("__name__"),
        )
    return None


def starting_site(record: SessionRecord) -> tuple[callsite.CallSite, str] | None:
    """The user's line that started the tasks sharing this session, and what it is.

    Called by SQD158 in the task whose operation overlapped another's, once per
    finding: the task awaiting an ``asyncio.gather()`` or leaving an ``async with
    TaskGroup()`` block that started the current task, found among the running tasks
    with its innermost user frame holding the session. asyncio keeps no public link
    from a task to what started it: the gather's future (``Task._fut_waiter``) and its
    ``_children``, and a TaskGroup's ``_tasks``, are read defensively, and the line is
    not named when they are missing.
    """
    try:
        current = asyncio.current_task()
    except Exception:
        return None
    if current is None:
        return None
    task_group = getattr(asyncio, "TaskGroup", None)
    for task, frames, inner in _tasks_holding(record, skip=current):
        what = None
        waiting = getattr(task, "_fut_waiter", None)
        if inner == len(frames) - 1 and type(waiting).__name__ == "_GatheringFuture":
            if any(child is current for child in getattr(waiting, "_children", ())):
                what = "asyncio.gather() started these tasks here"
        elif task_group is not None:
            for below in frames[inner + 1 :]:
                group = below.f_locals.get("self")
                if isinstance(group, task_group) and current in getattr(group, "_tasks", ()):
                    what = "the TaskGroup that started these tasks ends here"
                    break
        if what is not None:
            frame = frames[inner]
            site = callsite.CallSite(
                frame.f_code.co_filename,
                callsite.line_of(frame, frame.f_lineno),
                frame.f_code.co_name,
                frame.f_globals.get("__name__"),
            )
            return site, what
    return None


def _tasks_holding(
    record: SessionRecord, skip: asyncio.Task[Any] | None = None
) -> Iterator[tuple[asyncio.Task[Any], list[FrameType], int]]:
    """The running tasks whose innermost user frame holds this session (or its
    AsyncSession) in its locals, by identity: each with its awaiting frames, outermost
    first, and that frame's index."""
    session = record.ref()
    if session is None:
        return
    try:
        from sqlalchemy.ext.asyncio import async_session

        proxy = async_session(session)
        tasks = list(asyncio.all_tasks())[:_MAX_TASKS_SEARCHED]
    except Exception:
        return
    for task in tasks:
        if task is skip:
            continue
        frames = callsite.awaiting_frames(task, _STACK_LIMIT)
        for inner in range(len(frames) - 1, -1, -1):
            if callsite.classify(frames[inner].f_code.co_filename) != callsite.USER:
                continue
            if any(v is session or v is proxy for v in list(frames[inner].f_locals.values())):
                yield task, frames, inner
            break


# -- registration -------------------------------------------------------------------------

_LISTENERS: tuple[tuple[Any, str, Callable[..., Any], dict[str, Any]], ...] = (
    (Session, "do_orm_execute", _on_do_orm_execute, {}),
    (Engine, "before_cursor_execute", _on_before_cursor_execute, {"retval": True}),
    (Engine, "after_cursor_execute", _on_after_cursor_execute, {}),
    (Engine, "handle_error", _on_handle_error, {}),
    (Engine, "do_connect", _on_do_connect, {}),
    (Engine, "engine_connect", _on_engine_connect, {}),
    (Engine, "begin", _on_engine_begin, {}),
    (Engine, "commit", _on_engine_commit, {}),
    (Engine, "rollback", _on_engine_rollback, {}),
    (Session, "after_transaction_create", _on_after_transaction_create, {}),
    (Session, "after_begin", _on_after_begin, {}),
    (Session, "before_commit", _on_before_commit, {}),
    (Session, "after_commit", _on_after_commit, {}),
    (Session, "after_rollback", _on_after_rollback, {}),
    (Session, "after_transaction_end", _on_after_transaction_end, {}),
    (Session, "before_flush", _on_before_flush, {}),
    (Session, "after_flush", _on_after_flush, {}),
    (Session, "after_flush_postexec", _on_after_flush_postexec, {}),
    (Session, "transient_to_pending", _on_transient_to_pending, {"raw": True}),
    (Session, "pending_to_persistent", _on_pending_to_persistent, {"raw": True}),
    (Session, "pending_to_transient", _on_pending_to_transient, {"raw": True}),
    (Session, "persistent_to_detached", _on_persistent_to_detached, {"raw": True}),
    (Mapper, "mapper_configured", _on_mapper_configured, {}),
    (Pool, "checkout", _on_checkout, {}),
    (Pool, "checkin", _on_checkin, {}),
)

_atexit_registered = False


def register() -> None:
    """Register every listener once (idempotent, thread-safe)."""
    global _atexit_registered
    with _registration_lock:
        if process.registered:
            return
        for target, name, fn, kwargs in _LISTENERS:
            event.listen(target, name, fn, **kwargs)
            _registered.append((target, name, fn))
        process.registered = True
    _instrument_known_mappers()
    generator_dependency.watch_collections()
    # Errors a framework catches and logs are explained in the unit that logs them.
    errors.install_log_hook()
    with _registration_lock:
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True


def unregister() -> None:
    """Remove every listener this module registered."""
    with _registration_lock:
        while _registered:
            target, name, fn = _registered.pop()
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        _instrumented_mappers.clear()
        _load_watched.clear()
        process.registered = False
    errors.uninstall_log_hook()
    generator_dependency.unwatch_collections()
    # The attribute descriptors switched for read tracking get their own class back.
    reads.disable()
