"""Listens to a Session's flushes: ``before_flush`` (who flushes, whether it is a query's
autoflush, new objects whose primary key is already taken), ``after_flush`` (the rows
and attributes the flush wrote, for the session's bookkeeping and its detectors) and
``after_flush_postexec`` (the flush is over: its connection is idle again; the flush's
own time is SQLAlchemy's work, not the program holding the connection).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy.orm import MANYTOONE, Session
from sqlalchemy.orm.attributes import instance_state

from sqla_doctor.runtime import callsite
from sqla_doctor.runtime.detector import DuplicateIdentity, Flush, FlushAfterFailure, OrmExecution
from sqla_doctor.runtime.listeners.sharing import _active, _note_unwatched, _note_use
from sqla_doctor.runtime.listeners.statements import _idle_ends
from sqla_doctor.runtime.listeners.units import _bump, _dispatch, _guarded, _session_unit
from sqla_doctor.runtime.loading import primary_key_attributes
from sqla_doctor.runtime.unit_of_work import (
    MAX_UPDATED_ROWS,
    SessionRecord,
    UnitOfWork,
    executing,
    flushing,
    process,
)

_rows_lock = threading.Lock()
# Objects whose flushed changes a session remembers per transaction (SQD162).
MAX_CHANGED_OBJECTS = 5_000
# New objects looked at before a flush for a primary key already taken (SQD163).
MAX_NEW_CHECKED = 10_000


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
    uow = _session_unit(record)
    if uow is not None and uow.handlers["before_flush"]:
        _dispatch(uow, "before_flush", record)
    _check_new_identities(session, record, uow)
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


def _check_new_identities(session: Session, record: SessionRecord, uow: UnitOfWork | None) -> None:
    """New objects whose primary key the session already holds, or another new one has:
    the flush is about to INSERT the same key twice (SQD163)."""
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
    autoflush_of = record.autoflush_of
    site = autoflush_of.site if autoflush_of is not None else callsite.find(1)
    if not record.autocommit:
        # (In AUTOCOMMIT each statement was committed as it ran: no open write to lose.)
        _note_written(record, site, inserted, updated, deleted)
    uow = _session_unit(record)
    if uow is not None:
        _dispatch(uow, "after_flush", Flush(session, record, inserted, autoflush_of, site))


def _note_written(
    record: SessionRecord,
    site: callsite.CallSite | None,
    inserted: dict[str, int],
    updated: int,
    deleted: int,
) -> None:
    """What a flush wrote in the session's open transaction: lost if it never commits."""
    record.writes += 1
    if record.flush_site is None:
        record.flush_site = site
        record.flushed_at = time.perf_counter()
    for name, count in inserted.items():
        _bump(record.written, f"{name} inserted", count)
    if updated:
        _bump(record.written, "row(s) updated", updated)
    if deleted:
        _bump(record.written, "row(s) deleted", deleted)


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


def _flush_done(record: SessionRecord) -> None:
    record.flushing = False
    record.autoflush_of = None
    if flushing.get() is record:
        flushing.set(None)
