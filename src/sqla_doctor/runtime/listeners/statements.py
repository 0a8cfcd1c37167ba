"""Listens to executions: the Session's ``do_orm_execute`` (what an ORM execution loads
and from where) and the ``Engine`` events ``before_cursor_execute``,
``after_cursor_execute`` and ``handle_error`` (each statement reaching a DBAPI cursor, its
time, its unit of work, and errors explained while they are being raised).
"""

from __future__ import annotations

import sys
import time
import weakref
from contextvars import ContextVar
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import MissingGreenlet, SQLAlchemyError
from sqlalchemy.orm import RelationshipProperty
from sqlalchemy.sql.elements import SavepointClause

from sqla_doctor.runtime import callsite, core_writes, errors, row_locks
from sqla_doctor.runtime.detector import (
    COLUMN_LOAD,
    CORE,
    FLUSH,
    LAZY_LOAD,
    OTHER,
    RELATIONSHIP_LOAD,
    SELECT,
    ErrorSeen,
    IdleGap,
    OrmExecution,
    Statement,
)
from sqla_doctor.runtime.errors import sqlstate_of
from sqla_doctor.runtime.internal_errors import internal_error
from sqla_doctor.runtime.listeners.connections import _note_core_write, _note_session_write
from sqla_doctor.runtime.listeners.endings import drain
from sqla_doctor.runtime.listeners.sharing import (
    _enter_statement,
    _leave_statement,
    _note_unwatched,
    _note_use,
)
from sqla_doctor.runtime.listeners.units import (
    _DELIBERATE,
    _checkout_unit,
    _dispatch,
    _guarded,
    _implicit_unit,
    _record,
)
from sqla_doctor.runtime.unit_of_work import (
    ABORTED_BY,
    MAX_STATEMENTS_KEPT,
    CheckoutRecord,
    SessionRecord,
    TransactionAbort,
    UnitOfWork,
    current,
    executing,
    flushing,
    process,
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


def _not_the_executions(context: Any) -> bool:
    """Whether the connection runs this statement on its own as an ORM execution takes it,
    after the execution's do_orm_execute: the SAVEPOINT a begin_nested() opens then, and
    driver SQL (exec_driver_sql()) of a "begin" or "after_begin" listener (the pysqlite
    recipe's BEGIN, a SET LOCAL per transaction). An ORM execution's own statement is
    always compiled; the execution's statement is still to come."""
    compiled = getattr(context, "compiled", None)
    return compiled is None or isinstance(compiled.statement, SavepointClause)


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
    column loads are refreshes (root-path, or of an object a relationship loaded).
    """
    path = state.loader_strategy_path
    if path is None:
        return (SELECT if state.is_select else OTHER), None, None
    if path.is_root:
        return (COLUMN_LOAD if state.is_column_load else SELECT), None, None
    if state.is_column_load:
        # An object loaded through a relationship (a selectinload()ed book) keeps that
        # load path: reloading its deferred or expired columns is no relationship load.
        return COLUMN_LOAD, None, None
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
        if (kind is not OTHER and kind is not COLUMN_LOAD) or (
            # select(User).from_statement(text(...)) loads Users, yet is no SELECT to
            # is_select (one of a select() is, since SQLAlchemy 2.0.30).
            kind is OTHER and getattr(state.statement, "is_from_statement", False) is True
        ):
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
        internal_error("do_orm_execute")


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
            elif core_writes.SELECT_SQL.match(statement) and _run_by_a_hook(flush_record):
                flush_record = None
        execution: OrmExecution | None = None
        if flush_record is None:
            execution = executing.get()
            if execution is not None and _not_the_executions(context):
                execution = None
            elif execution is not None:
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
                    getattr(context, "compiled", None),
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
            if checkout.locked_rows is None and checkout.transaction_began:
                lock = row_locks.row_lock(statement)
                if lock is not None:
                    checkout.locked_rows = (last_site, lock)
            if "advisory" in statement or "ADVISORY" in statement:  # no call per statement
                checkout.advisory_locks = row_locks.advisory_locks(
                    statement, checkout.advisory_locks
                )
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
        internal_error("before_cursor_execute")
    return statement, parameters


def _statement_resumes(
    conn: Connection, uow: UnitOfWork, site: callsite.CallSite | None
) -> CheckoutRecord | None:
    """The statement's checkout; the time it sat idle before, if past the threshold."""
    # A connection running a statement is open and valid: no revalidation can happen.
    checkout = process.checkout_of(conn.connection)
    if checkout is None:
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
        internal_error("after_cursor_execute")


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
        took = now - start
        if took > checkout.longest_statement:
            checkout.longest_statement = took
        flush = flushing.get()
        if flush is not None and flush.flushing:
            # The flush goes on computing its next statement: SQLAlchemy's own work, not
            # idleness. The clock starts again when the flush is over.
            flush.paused = checkout
        else:
            checkout.idle_since = now


def _interrupted(running: _Running, context_key: int, error: BaseException) -> None:
    """A statement cancelled (``asyncio.timeout``, task cancellation) or interrupted
    (Ctrl-C) while the database ran it: SQLAlchemy invalidates the connection, but the
    statement may go on until the connection is closed (aiosqlite's thread finishes the
    query before it can close it). That wait is the statement's, not the program's idle
    time: it counts as the statement when the connection goes back."""
    key, _, _, checkout, site, start, _, _ = running
    if key == context_key and checkout is not None and not checkout.returned:
        checkout.idle_since = 0.0
        checkout.interrupted_since = start
        record = checkout.session_record() if checkout.session_record is not None else None
        session = record.ref() if record is not None else None
        transaction = session.get_transaction() if session is not None else None
        if record is not None and transaction is not None:
            record.cancelled = (site, type(error).__name__, weakref.ref(transaction))


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
    record = process.checkout_of(fairy) if fairy is not None else None
    return _checkout_unit(record) if record is not None else None


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
        if not isinstance(context.original_exception, Exception):
            _interrupted(running, id(context.execution_context), context.original_exception)
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
        elif uow is None and context.execution_context is None and _sqlite_locked(original):
            # A COMMIT refused, outside any statement and any track(): explained in a
            # short-lived unit, as an error on its way out of a session is.
            _explain_while_raised(context, None, site)


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


def _explain_while_raised(
    context: Any, uow: UnitOfWork | None, site: callsite.CallSite | None
) -> None:
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
    payload = ErrorSeen(raised, error, site, tracebacks, live)
    if uow is None:
        errors.explain_now(raised, payload)
    else:
        errors.dispatch(uow, raised, payload)


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


def _run_by_a_hook(flush_record: Any) -> bool:
    """Whether a SELECT during the unit of work's execution is the program's mapper
    hook's (an ``after_update`` listener querying through its connection, once per row)
    rather than the flush's own (a server default fetched back): the program's line
    nearest to it is not the one that flushed. Asked for SELECTs only, which a flush
    seldom runs itself."""
    flushed_at = flush_record.flush_statement_site
    if flushed_at is None:
        flushed_at = flush_record.flush_statement_site = callsite.find(1)
    here = callsite.find(1, _CURSOR_FRAMES)
    return here is not None and flushed_at is not None and here.key != flushed_at.key


def _in_unit_of_work(session: Any) -> bool:
    """Whether a flush's unit of work is running its own SQL now (asked only while a
    flush is under way).

    Our before_flush listener marks the flush before the program's own before_flush
    hooks run (it was registered first): what those hooks load or query is the
    program's. Session._flush sets ``_warn_on_events`` only around the unit of work's
    execution; a session without it (another SQLAlchemy) counts the whole flush.
    """
    return flushing.get() is not None and getattr(session, "_warn_on_events", True) is not False
