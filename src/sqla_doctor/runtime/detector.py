"""The base of every runtime detector, and the events the listeners hand to detectors.

A detector is one class per file under ``runtime/detectors/``, found by the registry. It
carries the same metadata and docstring sections as a static rule and defines handler
methods named after the SQLAlchemy event it consumes (``on_do_orm_execute``,
``on_before_cursor_execute``, ``on_after_flush``...). Detectors never register listeners:
``listeners/`` registers one listener per event, computes what several detectors share
(the call site, what kind of load a statement is, the session's bookkeeping) once, and
calls the handlers of the current unit of work's detectors.

One detector instance lives per unit of work, so its attributes are that unit's state.
Handlers must not emit SQL, load attributes, or keep bound parameter values.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Collection, Hashable, Iterable, Iterator, Mapping
from types import CodeType, FrameType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy.orm import Session

from sqla_doctor.findings import Finding, Kind, Location, Related
from sqla_doctor.registry import Check
from sqla_doctor.runtime.callsite import USER, CallSite, classify, display_path
from sqla_doctor.runtime.callsite import find as find_call_site
from sqla_doctor.runtime.loading import aliased_selected, joined_targets

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection
    from sqlalchemy.orm import ORMExecuteState, RelationshipProperty
    from sqlalchemy.orm.state import InstanceState

    from sqla_doctor.config import RuntimeConfig
    from sqla_doctor.runtime.pool_fill import Fill
    from sqla_doctor.runtime.unit_of_work import (
        CheckoutRecord,
        SessionRecord,
        UnitOfWork,
    )

# What an ORM execution is loading, from ORMExecuteState's public attributes.
LAZY_LOAD: Final = "lazy_load"  # lazy_loaded_from is set: one parent's relationship
RELATIONSHIP_LOAD: Final = "relationship_load"  # selectin/subquery batch for many parents
COLUMN_LOAD: Final = "column_load"  # expired or deferred attributes of one object
SELECT: Final = "select"  # an ORM or Core SELECT the user asked for
OTHER: Final = "other"  # DML, text(), anything else
# What a statement reaching the cursor is, when no ORM execution announced it.
CORE: Final = "core"  # Connection.execute() and friends, outside a Session
FLUSH: Final = "flush"  # written by a Session's flush

# Event names a detector may handle with an ``on_<name>`` method.
EVENTS: Final = (
    "do_orm_execute",
    "before_cursor_execute",
    # A session is about to flush, before any flush hook of the program's runs (its
    # SessionRecord).
    "before_flush",
    "after_flush",
    # A query's autoflush raised (an IntegrityError from a half-built object; Flush).
    "autoflush_failed",
    "flush_after_failure",
    "after_transaction_end",
    "connection_writes_lost",
    "init_scalar",
    # Session.merge() set a column attribute of an object the session already held to a
    # different value (MergeWrite).
    "merge_write",
    # A flush is about to INSERT a new object whose primary key the session already holds
    # or another new object has (DuplicateIdentity).
    "duplicate_identity",
    # add() of a new object whose save-update cascade is about to reach an object another
    # live session holds: SQLAlchemy raises "already attached" next (AttachedElsewhere).
    "attached_elsewhere",
    "checkin",
    "session_gc",
    # An exception left a unit of work (``track()``'s exit) or the program (``sqla-doctor
    # run``'s excepthook): detectors explain it with what the unit saw. See runtime/errors.py.
    "error",
    # A checked-out connection did nothing past ``held_connection_seconds``, then was used
    # again or returned (IdleGap); its database transaction ended (TransactionSpan); a
    # checkout left its pool at ``pool_saturation_ratio`` of capacity or more (PoolCheckout).
    "connection_idle",
    "connection_transaction_end",
    "pool_saturated",
    # A process checked out, or is closing, a pooled connection that another process
    # opened: the program forked with it in the pool (InheritedConnection).
    "connection_inherited",
    # One session used by two asyncio tasks or two threads at once, or by threads taking
    # turns inside one transaction (SharedUse). See listeners/sharing.py.
    "session_shared",
    # An object of a mapper a detector asked listeners.watch_loads() about was loaded
    # (InstanceEvents.load, once per new identity; Loaded).
    "load",
    # A Session's commit (with expire_on_commit) or rollback is about to expire the
    # objects it holds: after_commit / after_rollback, before SQLAlchemy expires them
    # (the Session).
    "objects_expire",
)

_UNKNOWN: Final = "<unknown>"
# Frames of an exception's traceback looked at, at most (a deep recursion's are not).
_MAX_TRACEBACK: Final = 200
_T = TypeVar("_T")


class OrmExecution:
    """One ``Session.execute()`` as ``do_orm_execute`` saw it (lazy loads included).

    ``state`` (SQLAlchemy's ORMExecuteState) is only set while ``on_do_orm_execute``
    handlers run: this object outlives the call as a marker for the statement's cursor
    event and for autoflush, and must not keep the session or the parameters alive.
    """

    __slots__ = (
        "aliased",
        "by_get",
        "consumed",
        "in_flush",
        "joined",
        "kind",
        "loaded",
        "parent",
        "relationship",
        "session_key",
        "site",
        "state",
        "streamed",
        "uow",
    )

    def __init__(
        self,
        state: ORMExecuteState,
        kind: str,
        site: CallSite | None,
        relationship: RelationshipProperty[Any] | None,
        parent: InstanceState[Any] | None,
        in_flush: bool,
        uow: UnitOfWork,
    ) -> None:
        self.state: ORMExecuteState | None = state
        self.session_key = id(state.session)
        self.kind = kind
        self.site = site
        self.relationship = relationship
        # The object whose relationship is being lazy-loaded; cleared with ``state``.
        self.parent: InstanceState[Any] | None = parent
        self.in_flush = in_flush
        # The unit of work the execution belongs to, for its statement's cursor event.
        self.uow = uow
        # Set once the execution's own statement reached the cursor.
        self.consumed = False
        # Objects the session held before it: what the rows it returns will add to.
        self.loaded = len(state.session.identity_map)
        # What a SELECT joins (relationships, and mappers joined by entity): a lazy load
        # of a relationship it already joins is told to use contains_eager().
        joins = getattr(state.statement, "_setup_joins", None) if kind is SELECT else None
        self.joined: tuple[Any, ...] = joined_targets(joins) if joins else ()
        self.aliased = aliased_selected(state.statement) if kind is SELECT else None
        # Session.get(): the fix passes it options=[...], it has no .options().
        self.by_get = kind is SELECT and _loads_by_primary_key(state)
        # A server-side cursor (yield_per, stream_results, AsyncSession.stream()): its rows
        # are fetched as the program iterates, and it holds the connection until the last.
        # Read from the two dictionaries as they are: ORMExecuteState.execution_options
        # builds their union, a new dictionary for every execution.
        self.streamed = kind is SELECT and _streamed(state)


def _loads_by_primary_key(state: ORMExecuteState) -> bool:
    """Whether the statement is Session.get()'s load on the primary key. Its load options
    come in the local execution options, but so do those of a select() with yield_per,
    populate_existing or autoflush among its execution options (the ORM moves them
    there before the event): what only get() passes is its parameters, one per primary
    key column, named as the mapper's primary-key clause names them."""
    if "_sa_orm_load_options" not in state.local_execution_options:
        return False
    parameters = state.parameters
    mapper = state.bind_mapper
    if not isinstance(parameters, Mapping) or not parameters or mapper is None:
        return False
    names = _GET_PARAMETER_NAMES.get(mapper)
    if names is None:
        try:
            names = frozenset(parameter.key for parameter in mapper._get_clause[1].values())
        except Exception:  # a private attribute: read as SQLAlchemy 2.0 and 2.1 have it
            names = frozenset()
        _GET_PARAMETER_NAMES[mapper] = names
    return bool(names) and names == parameters.keys()


# Session.get()'s parameter names per mapper: fixed once the mapper is configured, and
# read on every ORM SELECT that carries load options. Weak, so a dropped registry's
# mappers go with it.
_GET_PARAMETER_NAMES: WeakKeyDictionary[Any, frozenset[str]] = WeakKeyDictionary()


def _streamed(state: ORMExecuteState) -> bool:
    local = state.local_execution_options
    own = state.statement.get_execution_options()
    return (
        "yield_per" in local
        or "stream_results" in local
        or "yield_per" in own
        or "stream_results" in own
    )


class Statement:
    """One statement about to reach the DBAPI cursor (``before_cursor_execute``).

    ``parameters`` are the bound values: detectors may hash them to count distinct
    parameter sets, and must not keep them unless ``show_parameters`` is on.
    """

    __slots__ = (
        "compiled",
        "connection",
        "executemany",
        "in_flush",
        "orm",
        "parameters",
        "site",
        "sql",
    )

    def __init__(
        self,
        sql: str,
        parameters: Any,
        executemany: bool,
        site: CallSite | None,
        orm: OrmExecution | None,
        in_flush: bool,
        connection: Connection | None = None,
        compiled: Any = None,
    ) -> None:
        self.sql = sql
        self.parameters = parameters
        self.executemany = executemany
        self.site = site
        self.orm = orm
        self.in_flush = in_flush
        # The Connection running it (its engine's URL and dialect); never to execute on.
        self.connection = connection
        # The SQLAlchemy Compiled it came from (``.statement`` is the construct), None
        # for driver SQL (exec_driver_sql()).
        self.compiled = compiled


class Flush:
    """A flush that wrote something (``after_flush``; new/dirty/deleted are pre-flush)."""

    __slots__ = ("autoflush_of", "inserted", "record", "session", "site")

    def __init__(
        self,
        session: Session,
        record: SessionRecord,
        inserted: Mapping[str, int],
        autoflush_of: OrmExecution | None,
        site: CallSite | None,
    ) -> None:
        self.session = session
        self.record = record
        # Entity name -> how many pending objects this flush inserts.
        self.inserted = inserted
        # The ORM execution whose autoflush this is, None for an explicit flush/commit.
        self.autoflush_of = autoflush_of
        self.site = site


class FlushAfterFailure:
    """A flush begins on a session whose last flush failed and that was not rolled back
    since (``before_flush``; the flush is about to raise ``PendingRollbackError``), or a
    second new object is added to it since (``transient_to_pending``: add() raises
    nothing, the commit() between the two did), or the failed transaction ends holding an
    object added since the failure (``after_transaction_end``, ``ended``: nothing could
    write it, and no PendingRollbackError is on its way out to be explained)."""

    __slots__ = ("ended", "record", "session", "site")

    def __init__(
        self, session: Session, record: SessionRecord, site: CallSite | None, *, ended: bool = False
    ) -> None:
        self.session = session
        self.record = record
        self.site = site
        self.ended = ended


class AttachedElsewhere:
    """``session.add(comment)`` of a new object whose relationship holds an object that
    another live session holds (``comment.user``, loaded by the window's session): the
    add's cascade is about to raise ``InvalidRequestError: Object ... is already attached
    to session``. ``state`` is that object's, ``via`` the relationship that holds it
    (``Comment.user``), ``site`` the add()."""

    __slots__ = ("session", "site", "state", "via")

    def __init__(
        self, session: Session, state: InstanceState[Any], via: str, site: CallSite | None
    ) -> None:
        self.session = session
        self.state = state
        self.via = via
        self.site = site


class ConnectionWritesLost:
    """A Connection closed with writes in its open transaction, never committed: the
    close rolled them back. ``first`` is where the first write ran, ``site`` the close."""

    __slots__ = ("connection", "ddl", "first", "record", "site", "writes")

    def __init__(
        self,
        connection: Connection,
        record: CheckoutRecord,
        writes: int,
        ddl: int,
        first: CallSite | None,
        site: CallSite | None,
    ) -> None:
        self.connection = connection
        self.record = record
        self.writes = writes
        # Of the writes, DDL statements (CREATE TABLE...) on a database that rolls DDL back.
        self.ddl = ddl
        self.first = first
        self.site = site


class TransactionEnd:
    """A session's outermost transaction ended: ``commit``, ``rollback`` or ``close``.

    ``site`` is where the user's code ended it (the ``close()`` call, the end of the
    ``with`` block); it is looked up when first read, while the handler runs, because
    most transactions end with nothing to report.
    """

    __slots__ = ("_known", "_site", "outcome", "record", "session")

    def __init__(
        self, session: Session, record: SessionRecord, outcome: str, known_site: bool
    ) -> None:
        self.session = session
        self.record = record
        self.outcome = outcome
        # Whether the user's code that ended it is on the stack (not when a later event
        # discovers a session that was closed without one).
        self._known = known_site
        self._site: CallSite | None = None

    @property
    def site(self) -> CallSite | None:
        if self._known:
            self._known = False
            self._site = find_call_site(1)
        return self._site


class AttributeRead:
    """A read of an unset primary-key attribute of a pending object (``init_scalar``)."""

    __slots__ = ("key", "record", "site", "state")

    def __init__(
        self, state: InstanceState[Any], key: str, record: SessionRecord | None, site: CallSite
    ) -> None:
        self.state = state
        self.key = key
        self.record = record
        self.site = site


class MergeWrite:
    """``Session.merge()`` set ``key`` of a persistent object (``state``) to a new value.

    ``merge`` identifies the merge() call (its frame), ``site`` is the user's call of it.
    ``changed``: the program changed the attribute in this transaction (not flushed yet, or
    flushed, merge()'s own autoflush included), and the merge replaced that change.
    ``stale``: the object merged is a detached copy of this same row whose value for
    ``key`` is the one it was loaded with (the copy did not change it), unlike the value
    the session holds: the copy's is older.
    """

    __slots__ = ("changed", "key", "merge", "record", "site", "stale", "state")

    def __init__(
        self,
        state: InstanceState[Any],
        key: str,
        merge: int,
        record: SessionRecord | None,
        site: CallSite | None,
        *,
        changed: bool,
        stale: bool,
    ) -> None:
        self.state = state
        self.key = key
        self.merge = merge
        self.record = record
        self.site = site
        self.changed = changed
        self.stale = stale


class DuplicateIdentity:
    """A new object (``state``) about to be INSERTed with the primary key of ``other``:
    an object the session holds (persistent), or another new one (pending)."""

    __slots__ = ("other", "record", "state")

    def __init__(
        self, state: InstanceState[Any], other: InstanceState[Any], record: SessionRecord
    ) -> None:
        self.state = state
        self.other = other
        self.record = record


class ErrorSeen:
    """An exception on its way out of a unit of work, for ``on_error`` handlers to explain.

    ``error`` is the first SQLAlchemy exception in the chain of ``raised`` (through
    ``__cause__`` and ``__context__``, and from a ``StatementError`` to the SQLAlchemy error
    it wraps), else ``raised`` itself; ``site`` is the innermost user frame of their
    tracebacks, where the program hit it. Handlers explain with
    ``explain(finding)`` (what ``report()`` returned), which also adds the explanation to
    the traceback as a note. They must not read attributes of the program's objects that
    might load: ``locals_of_type`` gives the library's own frames' locals (an
    ``InstanceState``, a ``Session``) without touching the user's objects.
    """

    __slots__ = ("error", "explained", "live", "objects", "raised", "site", "tracebacks")

    def __init__(
        self,
        raised: BaseException,
        error: BaseException,
        site: CallSite | None,
        tracebacks: tuple[TracebackType, ...],
        live: FrameType | None = None,
        objects: tuple[object, ...] = (),
    ) -> None:
        self.raised = raised
        self.error = error
        self.site = site
        # ``error``'s traceback first, then those of the exceptions wrapping it.
        self.tracebacks = tracebacks
        # Seen while it is being raised (``handle_error``): the frames its traceback does
        # not hold yet are still on the stack, from this one outwards.
        self.live = live
        # What the error is about when no frame holds it any more: the object of an
        # error a validation library caught and reported (its ``InstanceState``).
        self.objects = objects
        # What handlers explained, for the notes added once they all ran.
        self.explained: list[Finding] = []

    def locals_of_type(self, kind: type[_T]) -> Iterator[_T]:
        """Values of type ``kind`` in ``objects``, then in the non-user frames of
        ``error``'s traceback.

        Innermost frame first; the user's own frames are skipped (their locals are the
        program's business, and often hold several candidates).
        """
        for value in self.objects:
            if isinstance(value, kind):
                yield value
        for traceback in self.tracebacks:
            yield from self._locals_of_type(_traceback_frames(traceback), kind)
        if self.live is not None:
            yield from self._locals_of_type(_outward_frames(self.live), kind)

    def frames(self) -> list[FrameType]:
        """The frames of ``error``'s own traceback, innermost first, the user's included.

        For handlers that tell apart the library functions an error went through (by
        their code objects); reading their locals is ``locals_of_type``'s business.
        """
        return _traceback_frames(self.tracebacks[0]) if self.tracebacks else []

    def stack(self) -> list[FrameType]:
        """``frames()``, then, for an error seen while it is being raised, the frames
        still on the stack from there outwards: every frame it went or will go through."""
        frames = self.frames()
        if self.live is not None:
            frames += _outward_frames(self.live)
        return frames

    @staticmethod
    def _locals_of_type(frames: list[FrameType], kind: type[_T]) -> Iterator[_T]:
        for frame in frames:
            if classify(frame.f_code.co_filename) == USER:
                continue
            for value in list(frame.f_locals.values()):
                if isinstance(value, kind):
                    yield value

    def explain(self, finding: Finding | None) -> None:
        if finding is not None and finding not in self.explained:
            self.explained.append(finding)


def _traceback_frames(traceback: TracebackType | None) -> list[FrameType]:
    """A traceback's frames, innermost first."""
    frames: list[FrameType] = []
    while traceback is not None and len(frames) < _MAX_TRACEBACK:
        frames.append(traceback.tb_frame)
        traceback = traceback.tb_next
    frames.reverse()
    return frames


def _outward_frames(frame: FrameType | None) -> list[FrameType]:
    """A live frame and its callers, innermost first."""
    frames: list[FrameType] = []
    while frame is not None and len(frames) < _MAX_TRACEBACK:
        frames.append(frame)
        frame = frame.f_back
    return frames


class SharedUse:
    """An operation on a session began while someone else was using it.

    ``tasks``: two asyncio tasks on one thread (an ``AsyncSession``: the other task is
    suspended inside one of its calls); else two threads. ``concurrent``: the other's
    operation (``other_site``) was still running; otherwise (threads only) the thread
    using it now already used it earlier in this same transaction, and another thread
    used it in between. ``who``/``other`` describe the two tasks or threads.
    ``connecting``: the other's operation was still acquiring the session's connection
    (threads only), which SQLAlchemy refuses as "provisioning a new connection".
    ``committing``: the other's ``commit()`` was under way (threads only), which
    SQLAlchemy refuses as "This session is in 'prepared' state". ``midway``: the other
    thread was still running the function of its last operation (threads only).
    ``pool_workers``: this thread runs one of several thread-pool tasks handed the session
    and submitted together, on a pool of that many threads.
    """

    __slots__ = (
        "committing",
        "concurrent",
        "connecting",
        "midway",
        "other",
        "other_site",
        "pool_workers",
        "record",
        "site",
        "tasks",
        "who",
    )

    def __init__(
        self,
        record: SessionRecord,
        site: CallSite | None,
        other_site: CallSite | None,
        who: str,
        other: str,
        *,
        tasks: bool,
        concurrent: bool,
        connecting: bool = False,
        committing: bool = False,
        midway: bool = False,
        pool_workers: int = 0,
    ) -> None:
        self.record = record
        self.connecting = connecting
        self.committing = committing
        self.midway = midway
        self.pool_workers = pool_workers
        self.site = site
        self.other_site = other_site
        self.who = who
        self.other = other
        self.tasks = tasks
        self.concurrent = concurrent


class Loaded:
    """An object a query loaded (``InstanceEvents.load``): its state and the QueryContext.

    ``context.query`` is the statement ``do_orm_execute`` saw. Neither may be kept past
    the handler: keep a weak reference to the state, or ids.
    """

    __slots__ = ("context", "state")

    def __init__(self, state: InstanceState[Any], context: Any) -> None:
        self.state = state
        self.context = context


class Checkin:
    """A pooled connection came back, or was garbage-collected while checked out."""

    __slots__ = ("at_exit", "ended", "garbage_collected", "record")

    def __init__(
        self,
        record: CheckoutRecord,
        garbage_collected: bool,
        at_exit: bool = False,
        ended: Fill | None = None,
    ) -> None:
        self.record = record
        self.garbage_collected = garbage_collected
        # Still checked out when the interpreter exits (reported as collected then).
        self.at_exit = at_exit
        # The stretch of its pool being full that this return ended, if it ended one.
        self.ended = ended


class _Resumption:
    """Something the user's code did with a connection; ``site`` is looked up when read.

    Most events carrying one report nothing, so the user's line is found only when a
    handler asks, while it runs (the user's code is still on the stack then).
    """

    __slots__ = ("_known", "_site")

    def __init__(self, site: CallSite | None, known: bool) -> None:
        self._site = site
        # Whether the user's code is on the stack (not for a garbage-collected connection).
        self._known = site is None and known

    @property
    def site(self) -> CallSite | None:
        if self._known:
            self._known = False
            self._site = find_call_site(1)
        return self._site


class IdleGap(_Resumption):
    """A checked-out connection sat idle past ``held_connection_seconds``, then resumed.

    ``gap`` is the seconds between the end of its last statement (at ``last_site``, None
    for a flush's or an unknown one) and ``resumed``: ``statement``, ``commit``,
    ``rollback`` or ``checkin``, at ``site``.
    """

    __slots__ = ("gap", "last_site", "record", "resumed")

    def __init__(
        self,
        record: CheckoutRecord,
        gap: float,
        resumed: str,
        site: CallSite | None = None,
        *,
        known: bool = True,
    ) -> None:
        super().__init__(site, known)
        self.record = record
        self.gap = gap
        self.last_site = record.last_site
        self.resumed = resumed


class TransactionSpan(_Resumption):
    """A database transaction ended on a checked-out connection (Core or a Session's).

    ``outcome`` is ``commit``, ``rollback`` or ``checkin`` (returned to the pool with the
    transaction open, which the pool rolls back); ``duration`` runs from ``BEGIN``, at
    ``began_site``; ``idle`` is the longest time it sat between statements, after the
    statement at ``idle_site`` (the last one, at ``last_site``, unless an earlier gap was
    longer); ``idle_total`` all its gaps together; ``longest_statement`` how long its
    longest statement ran; ``wrote`` whether it wrote (a Session's flush, a Core write).
    """

    __slots__ = (
        "began_site",
        "duration",
        "idle",
        "idle_site",
        "idle_total",
        "last_site",
        "locked_rows",
        "longest_statement",
        "outcome",
        "record",
        "wrote",
    )

    def __init__(
        self,
        record: CheckoutRecord,
        outcome: str,
        duration: float,
        idle_stretch: tuple[float, CallSite | None],
        idle_total: float,
        *,
        known: bool = True,
    ) -> None:
        super().__init__(None, known)
        self.record = record
        self.outcome = outcome
        self.duration = duration
        self.idle, self.idle_site = idle_stretch
        self.idle_total = idle_total
        self.began_site = record.transaction_site
        self.last_site = record.last_site
        self.longest_statement = record.longest_statement
        self.wrote = record.wrote()
        self.locked_rows = record.locked_rows


class PoolCheckout:
    """A checkout left a QueuePool with ``checked_out`` of ``capacity`` connections in use.

    ``record`` is the checkout that got there; ``pool`` is the Pool itself, for its
    holders (``process.checkouts`` whose ``pool`` refers to it); ``name`` the engine's URL
    without its password.
    """

    __slots__ = (
        "capacity",
        "checked_out",
        "fill",
        "max_overflow",
        "name",
        "pool",
        "record",
        "size",
    )

    def __init__(
        self,
        record: CheckoutRecord,
        pool: object,
        name: str,
        checked_out: int,
        size: int,
        max_overflow: int,
        fill: Fill | None = None,
    ) -> None:
        self.record = record
        self.pool = pool
        self.name = name
        self.checked_out = checked_out
        self.size = size
        self.max_overflow = max_overflow
        self.capacity = size + max_overflow
        # The stretch the pool has been full for, when this checkout left it full.
        self.fill = fill


class InheritedConnection:
    """This process checked out (``record``), or is closing (``closing``, at ``site``), a
    pooled connection that process ``opened_by`` opened (first checked out at
    ``opened_at``, when known): the program forked while the connection was in the pool.
    ``pool`` is the Pool; ``sqlite`` says whether the DBAPI connection is SQLite's.
    """

    __slots__ = ("closing", "opened_at", "opened_by", "pool", "record", "site", "sqlite")

    def __init__(
        self,
        record: CheckoutRecord | None,
        site: CallSite | None,
        opened_by: int,
        opened_at: CallSite | None,
        pool: object,
        sqlite: bool,
        *,
        closing: bool = False,
    ) -> None:
        self.record = record
        self.site = site
        self.opened_by = opened_by
        self.opened_at = opened_at
        self.pool = pool
        self.sqlite = sqlite
        self.closing = closing


_handled: dict[type[Detector], tuple[str, ...]] = {}


class Detector(Check):
    """A runtime detector. Subclasses set the metadata and define ``on_<event>`` handlers."""

    kind = Kind.RUNTIME
    # The kinds of execution (LAZY_LOAD, SELECT, CORE...) whose ``on_do_orm_execute`` and
    # ``on_before_cursor_execute`` this detector wants; None for all. Listeners skip the
    # call for the others: these two events run for every statement.
    execution_kinds: ClassVar[frozenset[str] | None] = None
    # Raise at once in ``raise`` mode instead of at the end of the unit of work: for
    # findings whose consequence is a wrong value in the user's hands right now.
    raise_immediately: ClassVar[bool] = False
    # Counts repeats across the unit (N+1s): a nested unit's events reach this detector
    # in the units around it too, so a ``@track`` helper called once per row does not hide
    # the loop that calls it.
    spans_nested_units: ClassVar[bool] = False

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.config = uow.settings.runtime

    @classmethod
    def enabled(cls, runtime: RuntimeConfig) -> bool:
        """Whether the configuration turns this detector on (opt-in ones say no by default)."""
        return True

    @classmethod
    def handled_events(cls) -> tuple[str, ...]:
        events = _handled.get(cls)
        if events is None:
            events = _handled[cls] = tuple(
                event for event in EVENTS if callable(getattr(cls, f"on_{event}", None))
            )
        return events

    def checkpoint(self) -> None:
        """Report what the counts justify so far.

        Called at the end of an explicit unit of work, and at the end of each outermost
        transaction of a session's implicit one.
        """

    def end(self) -> None:
        """The unit of work ends: report resources it left open."""

    def location(self, site: CallSite | None) -> Location:
        if site is None:
            return Location(_UNKNOWN, 1)
        return Location(display_path(site.filename, self.uow.settings.root), site.lineno)

    def where(self, site: CallSite | None) -> str:
        """``path:line`` for messages."""
        location = self.location(site)
        return f"{location.path}:{location.line}"

    def count_so_far(self, count: int) -> str:
        """How often it happened, for a message: an explicit unit reports at its end, the
        final count; a session's implicit one at the end of each transaction, where the
        loop may go on in the next one (a commit every 100 items)."""
        uow = self.uow
        if uow.explicit or uow.closing:
            return str(count)
        if not uow.across_sessions and calling_frame(_CLOSES_AFTER_COMMIT) is not None:
            # `with SessionLocal.begin() as session:` commits, then closes: this is the
            # session's last transaction.
            return str(count)
        return f"at least {count}"

    def reported(self, key: Hashable) -> bool:
        """Whether this unit has this detector's finding for ``key`` already: the first
        report of a key is the one kept, so a checkpoint need not build it again."""
        return self.uow.reported(self.code, key)

    def report(
        self,
        at: CallSite | None,
        /,
        *,
        key: Hashable,
        subject: str,
        related: Iterable[tuple[CallSite | None, str]] = (),
        hint: str | None = None,
        details: Mapping[str, Any] | None = None,
        **message_args: Any,
    ) -> Finding:
        """Record a finding at the user's call site; once per ``key`` per unit of work.

        ``subject`` is what ``allow`` patterns match besides the location
        (``User.posts``, ``User``, ``Session``). Returns the finding (even when it was a
        repeat or suppressed), for ``ErrorSeen.explain``.
        """
        at, lines = _in_user_code(
            at, [(where, text) for where, text in related if where is not None]
        )
        finding = Finding(
            code=self.code,
            name=self.name,
            message=self.message.format(**message_args),
            location=self.location(at),
            severity=self.severity,
            pitfalls=self.pitfalls,
            kind=Kind.RUNTIME,
            fix_hint=hint,
            related=tuple(Related(self.location(where), text) for where, text in lines),
            details={"subject": subject, **(details or {})},
        )
        self.uow.add(
            self,
            key,
            finding,
            filename=at.filename if at is not None else None,
            module=at.module if at is not None else None,
            subject=subject,
        )
        return finding


def _in_user_code(
    at: CallSite | None, related: list[tuple[CallSite, str]]
) -> tuple[CallSite | None, list[tuple[CallSite, str]]]:
    """Move a finding that happened in installed code to the program's own line.

    A call site is an installed package's only when no line of the program was on the
    stack: FastAPI serializing a ``response_model`` through pydantic, a template engine
    rendering after the view returned. The line to change is then a related one (the
    query that loaded the objects); the package's frame stays, as a related line.
    """
    if at is None or classify(at.filename) == USER:
        return at, related
    mine = next((where for where, _ in related if classify(where.filename) == USER), None)
    if mine is None:
        return at, related
    package = (at.module or "").partition(".")[0] or "installed code"
    return mine, [
        (at, f"where it happened: in {package}, with no line of the program on the stack"),
        *related,
    ]


# "u", one consonant, a vowel: a "u" read "you" (User, Unit, Usage, Utility, Uri).
_U_READ_YOU = re.compile(r"u[b-df-hj-np-tv-z][aeiou]", re.IGNORECASE)


def a_or_an(word: str) -> str:
    """``word`` after its indefinite article, for messages: "a User", "an Employee".

    By spelling, not sound: "an" before a vowel letter, but "a" before a "u" read "you"
    (a "u", one consonant, then a vowel: "a User", "a Unit"; "an Update", "an Upload").
    Names whose sound their spelling hides come out wrong ("a Hour", "an OneTimeCode",
    "a Unassigned", "a SMSCode"); few class names start that way.
    """
    first = word[:1].lower()
    if first and first in "aeiou" and not _U_READ_YOU.match(word):
        return f"an {word}"
    return f"a {word}"


# Frames between a handler and the user's call of a Session method (SQLAlchemy's loading,
# execution and event machinery), and then some.
_MAX_FRAMES_TO_CALL: Final = 80


def method_codes(owner: type, *names: str) -> frozenset[CodeType]:
    """The ``__code__`` of each of ``owner``'s methods ``names`` this SQLAlchemy has
    (``Session.merge_all`` is 2.1's)."""
    return frozenset(
        code
        for name in names
        if (code := getattr(getattr(owner, name, None), "__code__", None)) is not None
    )


def calling_frame(
    codes: Collection[CodeType], limit: int = _MAX_FRAMES_TO_CALL, skip: int = 1
) -> FrameType | None:
    """The nearest frame, within ``limit`` frames above the ``skip``-th caller of this
    function, running one of ``codes`` (the ``__code__`` of ``Session.merge``...): the
    SQLAlchemy call the event being handled happens under. None when there is none."""
    frame: FrameType | None = sys._getframe(skip)
    for _ in range(limit):
        if frame is None:
            return None
        if frame.f_code in codes:
            return frame
        frame = frame.f_back
    return None


# sessionmaker.begin()'s context manager, which closes the session right after its
# commit. A generator: its frame is on the stack only while its exit runs.
_CLOSES_AFTER_COMMIT: Final = frozenset(
    {Session._maker_context_manager.__wrapped__.__code__}  # type: ignore[attr-defined]
)


def inside_call(codes: Collection[CodeType]) -> bool:
    """Whether the event being handled runs inside a call of one of ``codes``: a statement
    SQLAlchemy issues for that call. Walks frames: ask once per finding's group, not per
    event."""
    return calling_frame(codes, skip=2) is not None
