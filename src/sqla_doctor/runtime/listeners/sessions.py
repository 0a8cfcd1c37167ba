"""Listens to a Session's lifecycle: transactions (``after_transaction_create``,
``after_begin``, ``after_commit``, ``after_rollback``, ``after_transaction_end``), flushes
(``before_flush``, ``after_flush``, ``after_flush_postexec``) and the object state
events (``transient_to_pending``, ``pending_to_persistent``, ``pending_to_transient``,
``persistent_to_detached``).
"""

from __future__ import annotations

import functools
import sys
import weakref
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, object_session
from sqlalchemy.orm.attributes import instance_state

from sqla_doctor.runtime import callsite, errors, reads
from sqla_doctor.runtime.app_context import kept_in_flask_g
from sqla_doctor.runtime.async_sessions import async_owner
from sqla_doctor.runtime.detector import (
    AttachedElsewhere,
    FlushAfterFailure,
    TransactionEnd,
    calling_frame,
    method_codes,
)
from sqla_doctor.runtime.internal_errors import internal_error
from sqla_doctor.runtime.listeners.connections import _autocommit, _last_checkout
from sqla_doctor.runtime.listeners.endings import _lost_change
from sqla_doctor.runtime.listeners.flushes import _autoflush_failed, _commit_over, _flush_done
from sqla_doctor.runtime.listeners.objects import (
    _instrument_mapper,
    _object_unit,
    _pending_key_read,
)
from sqla_doctor.runtime.listeners.sharing import _active, _known, _note_use
from sqla_doctor.runtime.listeners.statements import _idle_ends
from sqla_doctor.runtime.listeners.units import (
    _DELIBERATE,
    _STACK_LIMIT,
    _checkpoint,
    _dispatch,
    _guarded,
    _instrumented_mappers,
    _session_unit,
)
from sqla_doctor.runtime.loading import UNLOADABLE, primary_key_attributes
from sqla_doctor.runtime.raised_responses import passing_response
from sqla_doctor.runtime.session_loops import LoopUnit
from sqla_doctor.runtime.unit_of_work import (
    MAX_DISCARDED_PER_SESSION,
    MAX_EXPUNGED_KEYS,
    Added,
    Detachment,
    FailedFlush,
    SessionRecord,
    UnitOfWork,
    current,
    expiring,
    process,
)


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
    if record is None:
        return
    checkout = _last_checkout.get()
    fairy = connection.connection if not connection.closed else None
    # A session bound to a Connection the program checked out (a test's
    # transaction-per-test fixture) often begins right after that checkout: still the last
    # one, but the program's to close.
    handed_over = isinstance(session.bind, Connection)
    owned = (
        not handed_over and checkout is not None and fairy is not None and checkout.ref() is fairy
    )
    if record.holds_connection:
        # The connection of another bind (Session(binds={...}), Flask-SQLAlchemy's
        # SQLALCHEMY_BINDS): the session returns it with the first one.
        if checkout is not None and owned:
            checkout.session_owned = True
            checkout.session_record = weakref.ref(record)
        return
    record.holds_connection = True
    record.autocommit = _autocommit(connection)
    record.external = handed_over or not owned
    if checkout is not None and owned:
        checkout.session_owned = True
        checkout.session_record = weakref.ref(record)
        record.opened = checkout.opened
    else:
        # A connection the caller handed over: never this session's leak to report.
        site = callsite.find(1)
        record.opened = (site,) if site is not None else ()
    record.kept_in = kept_in_flask_g(session)
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
            _objects_expire(session, record)
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
        error, driver_error, sqlstate = record.flush_error or (_raised_name(), None, None)
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
        _objects_expire(session, record)
        record.outcome = "rollback"
        # A failed flush's rollback happened where that flush (or its autoflush) ran.
        failed = record.failed_flush if flush_failed else None
        record.rollback_site = failed.site if failed is not None else callsite.find(1)
        if failed is None and (record.pending or record.writes):
            record.exit_rollback = callsite.unit_of_work_exit(1)
            record.raised_response = passing_response()
    else:
        # Rolling back to a SAVEPOINT undoes only the writes flushed since it.
        record.roll_back_savepoint()


def _raised_name() -> str | None:
    """The class of an error that failed a flush with no statement raising it
    (version_id_col's StaleDataError, a before_flush hook's own): SQLAlchemy rolls back
    inside the except block that caught it. Its class only, never its message."""
    raised = sys.exc_info()[1]
    return type(raised).__name__ if raised is not None else None


def _objects_expire(session: Session, record: SessionRecord) -> None:
    """SQLAlchemy expires the session's objects right after this event: what a detector
    reads from their __dict__ later is gone then."""
    expiring.set(record)
    record.expire_site = record.expire_call = None
    uow = _session_unit(record)
    if uow is not None and uow.handlers["objects_expire"]:
        _dispatch(uow, "objects_expire", session, can_raise=False)


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
    passing = sys.exc_info()[1]
    if isinstance(passing, PoolTimeoutError):
        # The checkout for this session timed out, and the `with` block closing it is
        # passing the error on: a worker may catch it and say nothing (SQD451 explains).
        errors.explain_passing(passing)
    uow = _session_unit(record)
    if uow is None and record.owner is not None and record.owner.active:
        uow = record.owner
    try:
        _note_discarding_rollback(record)
        if uow is not None:
            _added_in_vain(session, record, uow)
            if outcome == "close" and not record.discarded_dirty:
                record.discarded_dirty = _changes_left_behind(record, session)
            end = TransactionEnd(session, record, outcome, known_site=outcome == "close")
            _dispatch(uow, "after_transaction_end", end)
            if not uow.explicit:
                # A transaction close() ended is the session's last: what its loops ran
                # is the final count, not a lower bound (Detector.count_so_far).
                uow.closing = outcome == "close"
                try:
                    _checkpoint(uow)
                finally:
                    uow.closing = False
                loop = uow.parent
                if isinstance(loop, LoopUnit) and loop.active:
                    loop.session_ended(wrote=bool(record.writes or record.written))
                    _checkpoint(loop)
    finally:
        if expiring.get() is not None:
            expiring.set(None)
        record.reset_transaction()
        record.identity_map = session.identity_map
        record.identity_seq = process.row_updates
        record.sharing.new_transaction()


_ROLLBACK = method_codes(Session, "rollback")


def _note_discarding_rollback(record: SessionRecord) -> None:
    """The program's rollback() ends a transaction whose flush failed after earlier
    flushes wrote rows: those rows go with it. Noted where it was called; SQD165 reports
    it if the session writes again (the loop went on without them)."""
    failed = record.failed_flush
    if (
        failed is None
        or not failed.earlier
        or failed.in_savepoint
        or failed.discarded_at is not None
        or failed.reported
        or calling_frame(_ROLLBACK) is None
    ):
        return
    failed.discarded_at = callsite.find(1) or failed.site


def _added_in_vain(session: Session, record: SessionRecord, uow: UnitOfWork) -> None:
    """A transaction whose flush failed ends (close(), rollback()) with an object added
    since the failure: nothing could write it, and the commit() that tried raised
    PendingRollbackError before any event. A program that caught that error too (a loop
    of add() and commit() under `except Exception`) is reported where it added the object,
    unless a use of the session was reported already. Not while a PendingRollbackError
    is on its way out (the ``with`` block closing the session as it escapes): the error's
    explanation reports it, at the line that raised it."""
    failed = record.failed_flush
    if failed is None or failed.first_added is None:
        return
    site, failed.first_added = failed.first_added, None
    if failed.reported or failed.in_savepoint:
        # Failed in a SAVEPOINT: the outer transaction may still have written the object.
        return
    if isinstance(sys.exc_info()[1], PendingRollbackError):
        return
    _dispatch(uow, "flush_after_failure", FlushAfterFailure(session, record, site, ended=True))


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
    added = Added(state.class_.__name__, callsite.find(1))
    record.add_pending(id(state), added)
    held = _held_elsewhere(session, state)
    if held is not None:
        uow = _session_unit(record)
        if uow is not None:
            _dispatch(uow, "attached_elsewhere", AttachedElsewhere(session, *held, added.site))
    failed = record.failed_flush
    if failed is not None and not session.is_active:
        # add() works on a session that waits for rollback(), and the commit() after it
        # raises PendingRollbackError before any event. A second object added since the
        # failure shows a program that caught that error too and went on (a worker's
        # loop of add() and commit()): reported where it was added, unless a flush or a
        # query after the failure was reported already.
        failed.added_since += 1
        if failed.added_since == 1:
            failed.first_added = added.site
        uow = _session_unit(record) if failed.added_since == 2 and not failed.reported else None
        if uow is not None:
            _dispatch(uow, "flush_after_failure", FlushAfterFailure(session, record, added.site))
    _watch_unset_key(session, record, state)


def _held_elsewhere(session: Session, state: Any) -> tuple[Any, str] | None:
    """The state of an object another live session holds that add()'s save-update cascade
    reaches from this new object's relationships, one level down, and the relationship
    (``Comment.user``), or None. SQLAlchemy raises "already attached" for it before any
    event, and a program that catches that error would see nothing; only what the
    object's __dict__ holds is read (nothing loads)."""
    dict_ = state.dict
    for prop in state.mapper.relationships:
        value = dict_.get(prop.key)
        if value is None or not prop.cascade.save_update:
            continue
        if prop.lazy in UNLOADABLE:
            # A write_only or dynamic collection keeps a marker in __dict__; its new
            # members are the attribute's pending history (read without loading).
            impl = state.manager[prop.key].impl
            value = [obj for _, obj in impl.get_all_pending(state, dict_)]
        elif not prop.uselist:
            value = (value,)
        elif isinstance(value, dict):  # attribute_keyed_dict() and other dict collections
            value = value.values()
        for related in value:
            other = object_session(related)
            if other is not None and other is not session:
                return instance_state(related), f"{state.class_.__name__}.{prop.key}"
    return None


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
    if uow is None or not uow.handlers["init_scalar"] or uow.settings.runtime.track_reads is False:
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
        internal_error("unset_key_read")


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
    if record.savepoint_rolling_back:
        return  # a SAVEPOINT's rollback (a failed row of `with begin_nested():`) undid it
    # rollback() sets the outcome before it expunges pending objects; close() does not,
    # nor does a unit of work's __exit__ discarding what its block did not commit, nor a
    # rollback while a redirect raised as an exception passes (SQD152 reports those).
    discards = (
        record.outcome is None
        or record.exit_rollback is not None
        or record.raised_response is not None
    )
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
        internal_error("persistent_to_detached")


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
        internal_error("watch_detached_reads")


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
        site = callsite.find(2)
        if site is None and async_owner(session) is not None:
            # Closed by AsyncSession.__aexit__ in a task of its own: the `async with`
            # awaiting it is the program's line.
            site = callsite.async_with_exit_site()
            how = "async_with" if site is not None else how
        detachment = Detachment(
            site, how, record.identity_map, record.commit_site, record.rollback_site
        )
        # The new map marks the batch: the next objects of this close() find it here.
        detachment.marker = replaced
        record.add_detachment(detachment)
        if how != "expunge_all":
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
