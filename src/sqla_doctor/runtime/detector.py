"""The base of every runtime detector, and the events listeners.py hands to detectors.

A detector is one class per file under ``runtime/detectors/``, found by the registry. It
carries the same metadata and docstring sections as a static rule and defines handler
methods named after the SQLAlchemy event it consumes (``on_do_orm_execute``,
``on_before_cursor_execute``, ``on_after_flush``...). Detectors never register listeners:
``listeners.py`` registers one listener per event, computes what several detectors share
(the call site, what kind of load a statement is, the session's bookkeeping) once, and
calls the handlers of the current unit of work's detectors.

One detector instance lives per unit of work, so its attributes are that unit's state.
Handlers must not emit SQL, load attributes, or keep bound parameter values.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from sqla_doctor.findings import Finding, Kind, Location, Related
from sqla_doctor.registry import Check
from sqla_doctor.runtime.callsite import CallSite, display_path
from sqla_doctor.runtime.callsite import find as find_call_site

if TYPE_CHECKING:
    from sqlalchemy.orm import ORMExecuteState, RelationshipProperty, Session
    from sqlalchemy.orm.state import InstanceState

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
    "after_flush",
    "after_transaction_end",
    "init_scalar",
    "checkin",
    "session_gc",
)

_UNKNOWN: Final = "<unknown>"


class OrmExecution:
    """One ``Session.execute()`` as ``do_orm_execute`` saw it (lazy loads included).

    ``state`` (SQLAlchemy's ORMExecuteState) is only set while ``on_do_orm_execute``
    handlers run: this object outlives the call as a marker for the statement's cursor
    event and for autoflush, and must not keep the session or the parameters alive.
    """

    __slots__ = (
        "consumed",
        "in_flush",
        "kind",
        "parent",
        "relationship",
        "session_key",
        "site",
        "state",
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


class Statement:
    """One statement about to reach the DBAPI cursor (``before_cursor_execute``).

    ``parameters`` are the bound values: detectors may hash them to count distinct
    parameter sets, and must not keep them unless ``show_parameters`` is on.
    """

    __slots__ = ("executemany", "in_flush", "orm", "parameters", "site", "sql")

    def __init__(
        self,
        sql: str,
        parameters: Any,
        executemany: bool,
        site: CallSite | None,
        orm: OrmExecution | None,
        in_flush: bool,
    ) -> None:
        self.sql = sql
        self.parameters = parameters
        self.executemany = executemany
        self.site = site
        self.orm = orm
        self.in_flush = in_flush


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


class Checkin:
    """A pooled connection came back, or was garbage-collected while checked out."""

    __slots__ = ("garbage_collected", "record")

    def __init__(self, record: CheckoutRecord, garbage_collected: bool) -> None:
        self.record = record
        self.garbage_collected = garbage_collected


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

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.config = uow.settings.runtime

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
    ) -> None:
        """Record a finding at the user's call site; once per ``key`` per unit of work.

        ``subject`` is what ``allow`` patterns match besides the location
        (``User.posts``, ``User``, ``Session``).
        """
        finding = Finding(
            code=self.code,
            name=self.name,
            message=self.message.format(**message_args),
            location=self.location(at),
            severity=self.severity,
            pitfalls=self.pitfalls,
            kind=Kind.RUNTIME,
            fix_hint=hint,
            related=tuple(
                Related(self.location(where), text) for where, text in related if where is not None
            ),
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
