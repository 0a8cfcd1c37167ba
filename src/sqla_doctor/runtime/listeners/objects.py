"""Listens to mapped objects' attributes and loads: the primary-key attributes' ``init_scalar``
(a primary key read on a pending object), column ``set`` events under ``merge()`` (a
merge copying over a held object's change), ``mapper_configured`` (instrumenting those
attributes for classes configured later), and ``load`` for the mappers a detector asked
``watch_loads()`` about.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import weakref
from types import FrameType
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import NO_VALUE, Session
from sqlalchemy.orm.attributes import InstrumentedAttribute, instance_state

from sqla_doctor.runtime import callsite, reads
from sqla_doctor.runtime.detector import (
    AttributeRead,
    Loaded,
    MergeWrite,
    calling_frame,
    method_codes,
)
from sqla_doctor.runtime.internal_errors import internal_error
from sqla_doctor.runtime.listeners.endings import _written_elsewhere_since
from sqla_doctor.runtime.listeners.units import (
    _DELIBERATE,
    _dispatch,
    _guarded,
    _instrumented_mappers,
    _record,
    _registered,
    _registration_lock,
    _session_unit,
)
from sqla_doctor.runtime.unit_of_work import (
    MAX_UNPICKLED,
    SessionRecord,
    UnitOfWork,
    current,
    expiring,
    process,
)

_REPR_FUNCTIONS = frozenset({"__repr__", "__str__", "__format__"})
# Frames looked at between a primary-key read and the user's line for a repr() running
# it: a dataclass's __repr__, print() and logging's formatting are a few.
_MAX_REPR_DEPTH = 40


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
        for key in _column_keys(mapper):
            attribute = mapper.class_.__dict__.get(key)
            if not isinstance(attribute, InstrumentedAttribute):
                continue
            # include_key with raw and retval: SQLAlchemy calls the listener without a
            # wrapper of its own, which halves what each assignment pays for it.
            event.listen(attribute, "set", _on_column_set, raw=True, retval=True, include_key=True)
            _registered.append((attribute, "set", _on_column_set))


def _column_keys(mapper: Any) -> dict[str, None]:
    """The keys of the mapper's column attributes, read from its columns: not through
    ``mapper.column_attrs``, whose first read configures every new mapper of the
    registry, a side effect the program did not ask for (a mapper declared after the
    others were configured, or one the program means to fail)."""
    keys: dict[str, None] = {}
    for column in mapper.columns:
        try:
            prop = mapper.get_property_by_column(column)
        except Exception:
            continue
        keys[prop.key] = None
    return keys


_EXPIRE_CALLS = {
    code: f"session.{name}()"
    for name in ("expire_all", "expire")
    for code in method_codes(Session, name)
}


def _on_expire(state: Any, keys: Any) -> None:
    """An object's attributes expire: by the program's expire_all() or expire(), noted
    where it called it (SQD253 names it); a commit's or rollback's expiry, refresh()'s
    and a SAVEPOINT rollback's are not. A commit expires every object it holds: what
    each one costs is one context variable read."""
    # Guarded inline rather than by _guarded: this runs for every object a commit expires.
    try:
        if expiring.get() is not None:
            return
        session = state.session
        record = process.records.get(id(session)) if session is not None else None
        if record is None:
            return
        frame = calling_frame(_EXPIRE_CALLS, limit=8)
        if frame is None:
            return
        call = (_EXPIRE_CALLS[frame.f_code], id(frame))
        if call != record.expire_call:
            record.expire_call = call
            record.expire_site = callsite.find(1)
    except Exception:
        internal_error("_on_expire")


@_guarded
def _on_pickle(state: Any, state_dict: Any) -> None:
    # pickle.dumps() (a cache keeping the objects) and copy.deepcopy() take every loaded
    # attribute from the instance dict, where no read is seen: all of them are used.
    obj = state.obj()
    if obj is not None:
        manager = state.manager
        reads.read_whole(obj, [key for key in state.dict if key in manager])


_unpickled_lock = threading.Lock()


@_guarded
def _on_unpickle(state: Any, state_dict: Any) -> None:
    obj = state.obj()
    if obj is None:
        return
    how = "pickle.loads()"
    frame: FrameType | None = sys._getframe(1)
    for _ in range(12):  # deepcopy() -> _reconstruct() -> __setstate__ -> dispatch: near
        if frame is None:
            break
        if frame.f_code.co_name == "deepcopy" and frame.f_code.co_filename.endswith("copy.py"):
            how = "copy.deepcopy()"
            break
        frame = frame.f_back
    made = (weakref.ref(obj), how, callsite.find(1))
    unpickled = process.unpickled
    with _unpickled_lock:  # threads unpickling at once (a shared cache's readers)
        if len(unpickled) >= MAX_UNPICKLED:
            del unpickled[next(iter(unpickled))]  # oldest first: dicts keep order
        unpickled[id(obj)] = made


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
        internal_error("init_scalar")
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
        internal_error("merge_write")
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
        internal_error("load")
