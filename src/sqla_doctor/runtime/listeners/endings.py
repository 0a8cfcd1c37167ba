"""The end of a session or a pooled connection that no event announces.

``drain()`` looks at the sessions and connections the garbage collector reported (their
weak references' callbacks only queue them), ``shutdown()`` at what is still alive at
interpreter exit, and ``end_unit()`` ends ``track()``'s unit of work. It also holds what
those ends share with the handlers: whether an object's change was lost, and the end of
a connection's idle gap and transaction at a commit, rollback or checkin.
"""

from __future__ import annotations

import time
from typing import Any

from sqla_doctor.runtime import crash, errors, pool_fill
from sqla_doctor.runtime.detector import Checkin, IdleGap, TransactionSpan
from sqla_doctor.runtime.internal_errors import internal_error
from sqla_doctor.runtime.listeners.units import (
    _DELIBERATE,
    _checkout_unit,
    _dispatch,
    _finish_implicit,
    _late_settings,
)
from sqla_doctor.runtime.unit_of_work import (
    MAX_DISCARDED_PER_SESSION,
    CheckoutRecord,
    SessionRecord,
    UnitOfWork,
    executing,
    process,
)


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
            internal_error("drain")


def _session_collected(record: SessionRecord) -> None:
    if process.records.get(record.key) is record:
        del process.records[record.key]
    if record.detachments and not process.exiting:
        implicit = record.implicit
        if implicit is not None and implicit.active:
            record.origins_kept = {
                mapper: execution
                for mapper, execution in implicit.origins.items()
                if execution.session_key == record.key
            }
        process.gone_sessions.append(record)
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
    ended = pool_fill.returned(pool, record.returned_at) if pool is not None else None
    process.unwatch(record)
    shared = process.shared.get(record.key)
    if shared is not None:
        _leaves_shared(record, shared)
    if process.checkouts.get(record.key) is record:
        del process.checkouts[record.key]
        if shared:
            process.checkouts[record.key] = shared[-1]
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
        checkin = Checkin(record, garbage_collected, at_exit, ended)
        _dispatch(uow, "checkin", checkin, can_raise=False)
    _finish_implicit(record.implicit)


def _leaves_shared(record: CheckoutRecord, shared: list[CheckoutRecord]) -> None:
    """A checkout of a shared connection record is returned: the others stay out."""
    if record in shared:
        shared.remove(record)
    if not shared:
        del process.shared[record.key]


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
        internal_error("end of unit of work")


def shutdown() -> None:
    """Report what live sessions and connections still hold, at interpreter exit."""
    # Objects still alive now (module globals) are judged anyway: nothing reads them later.
    process.exiting = True
    try:
        drain()
        fatal = crash.fatal_exception()
        if fatal is not None:
            errors.explain_fatal(fatal)
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
        internal_error("shutdown")
    finally:
        process.exiting = False


def _in_explicit_unit(owner: UnitOfWork | None) -> bool:
    """Whether a running track() watches it: that unit reports it at its own end."""
    return owner is not None and owner.explicit and owner.active


def _has_net_changes(state: Any) -> bool:
    # AttributeState.history never loads: it reads what the object already holds.
    return any(attr.history.has_changes() for attr in state.attrs)


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
    if checkout.interrupted_since:
        # A cancelled statement ran on until now (statements._interrupted).
        took = now - checkout.interrupted_since
        checkout.longest_statement = max(checkout.longest_statement, took)
        checkout.interrupted_since = 0.0
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
    checkout.forget_idle()
    if runtime is not None and idle and now - idle >= runtime.held_connection_seconds:
        uow = _checkout_unit(checkout)
        if uow is not None:
            # Still set: SQD157 tells a gap inside the transaction from one after it.
            gap = IdleGap(checkout, now - idle, what, known=known)
            _dispatch(uow, "connection_idle", gap, can_raise=False)
    checkout.transaction_began = 0.0
    if runtime is not None and began and now - began >= runtime.idle_transaction_seconds:
        uow = _checkout_unit(checkout)
        if uow is not None:
            span = TransactionSpan(checkout, what, now - began, stretch, idle_total, known=known)
            _dispatch(uow, "connection_transaction_end", span, can_raise=False)
    checkout.locked_rows = None
