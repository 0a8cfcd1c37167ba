"""Units of work, the per-session and per-connection bookkeeping, and the process state.

A unit of work is what ran between its start and its end: its statements (counted, the
first few kept), its detectors' state and its findings. ``track()`` makes an explicit one
and puts it in a ContextVar, so each thread and each asyncio task sees its own (SQLAlchemy
copies the awaiting task's context into the greenlet it runs the sync ORM in). Outside
``track()``, once ``install()`` ran, each Session gets an implicit unit of work of its
own, and so does each pooled connection used without a Session: a web request or a job
usually is one session, and counting a lazy load per request across a server's life
would call every request handler an N+1.

Memory stays bounded however long the program runs: counters and keys are capped, a
statement is kept only as a reference among the first few, stacks are small tuples, and
records die with their session or connection.
"""

from __future__ import annotations

import fnmatch
import linecache
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple

from sqla_doctor.config import Config, ConfigError, RuntimeConfig
from sqla_doctor.findings import Finding, Kind
from sqla_doctor.runtime import modes
from sqla_doctor.runtime.callsite import CallSite, task_label
from sqla_doctor.suppression import line_has_noqa

if TYPE_CHECKING:
    from sqla_doctor.runtime.app_context import KeptInG
    from sqla_doctor.runtime.detector import Detector, OrmExecution

# Caps that keep a unit of work's memory bounded.
MAX_STATEMENTS_KEPT = 200
MAX_RECORDS_PER_UNIT = 10_000
MAX_PENDING_PER_SESSION = 256
MAX_DISCARDED_PER_SESSION = 64
MAX_DETACHMENTS_PER_SESSION = 4
MAX_GONE_SESSIONS = 16
MAX_UPDATED_ROWS = 4_096
MAX_EXPUNGED_KEYS = 64
MAX_UNPICKLED = 256

_logger = logging.getLogger("sqla_doctor")
current: ContextVar[UnitOfWork | None] = ContextVar("sqla_doctor_unit_of_work", default=None)
# The ORM execution whose statement has not reached the cursor yet. ``do_orm_execute``
# runs before the autoflush and before the statement, in the same thread or greenlet, so
# the flush and the cursor event can tell which query they belong to.
executing: ContextVar[OrmExecution | None] = ContextVar("sqla_doctor_executing", default=None)
# The session whose commit or rollback is expiring its objects in this context (from
# after_commit / after_rollback to the transaction's end): not the program's expire_all().
expiring: ContextVar[SessionRecord | None] = ContextVar("sqla_doctor_expiring", default=None)
# The session flushing in this context: its statements are the flush's, not the user's.
flushing: ContextVar[SessionRecord | None] = ContextVar("sqla_doctor_flushing", default=None)


@dataclass(frozen=True)
class Settings:
    """What a unit of work needs from the configuration, resolved once."""

    mode: str
    runtime: RuntimeConfig
    root: str
    detectors: tuple[type[Detector], ...]
    per_file_ignores: tuple[tuple[str, frozenset[str]], ...] = ()
    # (code, name or None, pattern): a finding is allowed when its subject or location
    # matches the pattern (and its code, when one is given).
    allow: tuple[tuple[str | None, str], ...] = ()
    # Computed once per settings: event -> indexes of the detectors handling it, and the
    # detectors that override checkpoint() / end().
    handler_table: Mapping[str, tuple[int, ...]] = field(default_factory=dict, compare=False)
    checkpointing: tuple[int, ...] = field(default=(), compare=False)
    ending: tuple[int, ...] = field(default=(), compare=False)
    # Not an init field: a copy made with dataclasses.replace() (other detectors) starts
    # with an empty one.
    _handler_indexes: dict[Any, tuple[tuple[int, ...], str]] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        from sqla_doctor.runtime.detector import EVENTS, Detector

        table = {
            event: tuple(
                index for index, cls in enumerate(self.detectors) if event in cls.handled_events()
            )
            for event in EVENTS
        }
        object.__setattr__(self, "handler_table", table)
        for attribute, method in (("checkpointing", "checkpoint"), ("ending", "end")):
            indexes = tuple(
                index
                for index, cls in enumerate(self.detectors)
                if getattr(cls, method) is not getattr(Detector, method)
            )
            object.__setattr__(self, attribute, indexes)

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        runtime: RuntimeConfig | None = None,
        mode: str | None = None,
    ) -> Settings:
        from sqla_doctor.registry import registry
        from sqla_doctor.static.engine import selected_codes

        runtime = runtime or config.runtime
        mode = mode or runtime.mode
        if mode not in modes.MODES:
            raise ValueError(f"mode must be one of {', '.join(modes.MODES)}, not {mode!r}")
        checks = registry()
        try:
            codes = selected_codes(checks, config, None, None, (Kind.RUNTIME,))
            codes -= checks.expand(runtime.ignore)
        except KeyError as error:
            raise ConfigError(
                f"unknown rule selector {error.args[0]!r} in [tool.sqla-doctor]"
                " (see `sqla-doctor rules`)"
            ) from None
        from sqla_doctor.runtime.detector import Detector

        detectors = tuple(
            c
            for c in checks.of_kind(Kind.RUNTIME)
            if c.code in codes and issubclass(c, Detector) and c.enabled(runtime)
        )
        per_file: list[tuple[str, frozenset[str]]] = []
        for glob, selectors in config.per_file_ignores.items():
            try:
                per_file.append((glob, frozenset(checks.expand(selectors))))
            except KeyError:
                continue
        allow: list[tuple[str | None, str]] = []
        for entry in runtime.allow:
            head, sep, rest = entry.partition(":")
            check = checks.get(head) if sep else None
            allow.append((check.code, rest) if check is not None else (None, entry))
        return cls(
            mode=mode,
            runtime=runtime,
            root=str(config.root),
            detectors=detectors,
            per_file_ignores=tuple(per_file),
            allow=tuple(allow),
        )

    def handlers_for(self, key: Any) -> tuple[tuple[int, ...], str]:
        """The detectors (indexes) handling an event, or (event, execution kind), and the
        method name; computed once per settings, not once per unit of work."""
        known = self._handler_indexes.get(key)
        if known is None:
            event, kind = key if isinstance(key, tuple) else (key, None)
            detectors = self.detectors
            indexes = tuple(
                index
                for index in self.handler_table.get(event, ())
                if kind is None
                or detectors[index].execution_kinds is None
                or kind in detectors[index].execution_kinds  # type: ignore[operator]
            )
            known = self._handler_indexes[key] = (indexes, f"on_{event}")
        return known

    def with_overrides(self, *, mode: str | None = None) -> Settings:
        if mode is None:
            return self
        if mode not in modes.MODES:
            raise ValueError(f"mode must be one of {', '.join(modes.MODES)}, not {mode!r}")
        return replace(self, mode=mode)

    def suppressed(self, finding: Finding, filename: str | None, subject: str) -> bool:
        """noqa on the user's line, ``allow`` patterns, and ``per-file-ignores``."""
        path = finding.location.path
        for glob, codes in self.per_file_ignores:
            if finding.code in codes and (
                fnmatch.fnmatch(path, glob) or fnmatch.fnmatch(path, glob.rstrip("/") + "/*")
            ):
                return True
        place = f"{path}:{finding.location.line}"
        for code, pattern in self.allow:
            if code is not None and code != finding.code:
                continue
            if fnmatch.fnmatchcase(subject, pattern) or fnmatch.fnmatch(path, pattern):
                return True
            if fnmatch.fnmatch(place, pattern):
                return True
        if filename:
            text = linecache.getline(filename, finding.location.line)
            if text and line_has_noqa(text, finding.code, finding.name):
                return True
        return False


class _Pending:
    __slots__ = ("filename", "finding", "immediate", "module")

    def __init__(
        self, finding: Finding, filename: str | None, module: str | None, immediate: bool
    ) -> None:
        self.finding = finding
        self.filename = filename
        self.module = module
        self.immediate = immediate


class UnitOfWork:
    """One unit of work: its statements, its detectors' state and its findings.

    ``findings`` and ``query_count`` are what ``track()`` returns. ``statements`` keeps the
    SQL (never the parameters) of the first statements, for messages and budgets.
    """

    # The unit of a loop's sessions (session_loops.LoopUnit): its detectors count what
    # repeats across sessions, not within one.
    across_sessions: ClassVar[bool] = False

    def __init__(
        self,
        settings: Settings,
        name: str | None = None,
        *,
        explicit: bool = True,
        parent: UnitOfWork | None = None,
    ):
        self.name = name
        self.settings = settings
        self.explicit = explicit
        # The explicit unit this one runs inside (a ``@track`` helper in a request): its
        # repeat-counting detectors see this unit's events too.
        self.parent: UnitOfWork | None = parent if parent is not None and parent.active else None
        self.findings: list[Finding] = []
        # How news of its sessions and connections that comes after it ended (a leaked
        # session collected later) is emitted outside install(); None: it is not.
        self.late_settings: Settings | None = None
        # (code, key) of each finding, aligned with ``findings``: what absorb() dedupes on.
        self._finding_keys: list[Hashable] = []
        self.query_count = 0
        self.statements: list[str] = []
        # Seconds each kept statement spent in the DBAPI cursor, aligned with statements
        # (0.0 until it returns, and for one that failed).
        self.durations: list[float] = []
        self.active: bool = True
        # Its last checkpoint is running (end()): the counts detectors report are final.
        self.closing = False
        self.duration: float | None = None
        self.lock = threading.RLock()
        # Mapper -> the last execution that loaded its objects (its SQLAlchemy state
        # already released), for "parents loaded by the query at ...".
        self.origins: dict[Any, OrmExecution] = {}
        # The same, counting only queries, not lazy or eager loads of a relationship: the
        # statement a tree walked by lazy loads began with.
        self.query_origins: dict[Any, OrmExecution] = {}
        self.sessions: dict[int, SessionRecord] = {}
        self.checkouts: dict[int, CheckoutRecord] = {}
        # Sessions (by id) a track()-decorated function was called with: its caller's
        # to close (a FastAPI dependency closes its session after the endpoint returns).
        self.handed_in: frozenset[int] = frozenset()
        # Mapped objects (by id) it returned: its caller reads them after the unit ends.
        self.returned: frozenset[int] = frozenset()
        self._started = time.perf_counter()
        self._keys: set[Hashable] = set()
        self._unemitted: list[_Pending] = []
        # Said once when max-findings is reached: a cap must not look like a clean run.
        self._capped = False
        # Detectors are made when an event first needs them: most sessions of a web app
        # run a couple of statements, and their implicit unit of work should cost little.
        self._detectors: list[Detector | None] = [None] * len(settings.detectors)
        self.handlers: dict[Any, tuple[Callable[[Any], None], ...]] = _Handlers(self)

    def __repr__(self) -> str:
        state = "active" if self.active else "ended"
        return (
            f"<UnitOfWork {self.name or ''} {state}: {self.query_count} statements, "
            f"{len(self.findings)} findings>"
        )

    # -- facts shared by detectors -------------------------------------------------------

    def note_origin(self, mapper: Any, execution: OrmExecution, query: bool) -> None:
        """The last execution that loaded ``mapper``'s objects, here and in the units around."""
        uow: UnitOfWork | None = self
        while uow is not None:
            uow.origins[mapper] = execution
            if query:
                uow.query_origins[mapper] = execution
            uow = uow.parent

    def origin_for(self, mapper: Any, *, query: bool = False) -> OrmExecution | None:
        """The last execution that loaded ``mapper``'s objects (with ``query``: the last
        query, not counting loads of a relationship)."""
        found = self.origin_and_entity_for(mapper, query=query)
        return found[1] if found is not None else None

    def origin_and_entity_for(
        self, mapper: Any, *, query: bool = False
    ) -> tuple[Any, OrmExecution] | None:
        """The last execution that loaded ``mapper``'s objects, with the mapper it
        selected: ``mapper`` itself, or a superclass for a polymorphic query."""
        return origin_in(self.query_origins if query else self.origins, mapper)

    def note_leak(self, site: CallSite | None) -> None:
        """Keep whole stacks for the next resources opened where this one leaked."""
        if site is not None and len(process.leaky_sites) < MAX_RECORDS_PER_UNIT:
            process.leaky_sites.add(site.key)

    def adopt_session(self, record: SessionRecord) -> None:
        if len(self.sessions) < MAX_RECORDS_PER_UNIT:
            self.sessions[id(record)] = record

    def adopt_checkout(self, record: CheckoutRecord) -> None:
        if len(self.checkouts) < MAX_RECORDS_PER_UNIT:
            self.checkouts[id(record)] = record

    def held_resources(self) -> tuple[frozenset[int], frozenset[int]]:
        """The sessions and checkouts this unit has adopted so far (for hand_over())."""
        return frozenset(self.sessions), frozenset(self.checkouts)

    def hand_over(
        self, before: tuple[frozenset[int], frozenset[int]]
    ) -> tuple[list[SessionRecord], list[CheckoutRecord]]:
        """The sessions and connections adopted since ``before`` (held_resources()) were
        made by code that outlives this unit: a module- or session-scoped pytest fixture
        set up inside a test's unit, which closes them in its own teardown, tests later.
        No unit's end reports them as leaked until take_back(); returns them."""
        sessions, checkouts = before
        made = [r for key, r in list(self.sessions.items()) if key not in sessions]
        taken = [r for key, r in list(self.checkouts.items()) if key not in checkouts]
        for record in made:
            record.long_lived = True
        for checkout in taken:
            checkout.long_lived = True
        return made, taken

    def take_back(self, sessions: list[SessionRecord], checkouts: list[CheckoutRecord]) -> None:
        """hand_over()'s resources, whose maker was torn down in this unit: what it left
        open is this unit's to report at its end."""
        for record in sessions:
            record.long_lived = False
            if record.holds_connection:
                record.owner = self
                self.adopt_session(record)
        for checkout in checkouts:
            checkout.long_lived = False
            if not checkout.returned:
                self.adopt_checkout(checkout)

    # -- findings ------------------------------------------------------------------------

    def add(
        self,
        detector: Detector,
        key: Hashable,
        finding: Finding,
        *,
        filename: str | None,
        module: str | None,
        subject: str,
    ) -> None:
        """Keep a finding unless it was reported already, suppressed, or over the cap."""
        with self.lock:
            full_key = (finding.code, key)
            if full_key in self._keys:
                return
            self._keys.add(full_key)
            if len(self.findings) >= self.settings.runtime.max_findings:
                if not self._capped:
                    self._capped = True
                    _logger.warning(
                        "sqla-doctor: %s kept max-findings = %d findings; the others are "
                        "not reported",
                        self.name or "a unit of work",
                        self.settings.runtime.max_findings,
                    )
                return
            if self.settings.suppressed(finding, filename, subject):
                return
            self.findings.append(finding)
            self._finding_keys.append(full_key)
            immediate = detector.raise_immediately and self.settings.mode == "raise"
            self._unemitted.append(_Pending(finding, filename, module, immediate))
        process.collect(finding, self.settings)

    def reported(self, code: str, key: Hashable) -> bool:
        """Whether ``code`` reported ``key`` in this unit already (a later report of it is
        dropped, so a detector re-reporting at each checkpoint can skip building it)."""
        return (code, key) in self._keys

    def absorb(self, inner: UnitOfWork) -> None:
        """A nested unit ended: count its statements and list its (emitted) findings."""
        with self.lock:
            self.query_count += inner.query_count
            room = MAX_STATEMENTS_KEPT - len(self.statements)
            if room > 0:
                self.statements.extend(inner.statements[:room])
                self.durations.extend(inner.durations[:room])
            room = self.settings.runtime.max_findings
            for finding, key in zip(inner.findings, inner._finding_keys, strict=True):
                # Reported by the inner unit, or by this one from the events it saw
                # through it (spans_nested_units): once.
                if key not in self._keys and len(self.findings) < room:
                    self._keys.add(key)
                    self.findings.append(finding)
                    self._finding_keys.append(key)

    def release(self, *, final: bool = False, can_raise: bool = True) -> None:
        """Emit the findings not emitted yet, as the mode says.

        An explicit unit emits at its end (``final``), except findings that raise
        immediately; implicit units emit as soon as they find. Where raising is not
        possible (garbage collection, an ended unit), ``raise`` falls back to a warning.
        """
        with self.lock:
            if not self._unemitted:
                return
            if self.explicit and self.active and not final:
                todo = [p for p in self._unemitted if p.immediate]
                if not todo:
                    return
                self._unemitted = [p for p in self._unemitted if not p.immediate]
            else:
                todo, self._unemitted = self._unemitted, []
        mode = self.settings.mode
        if mode == "collect":
            return
        if mode == "raise" and can_raise:
            raise modes.PitfallError([p.finding for p in todo])
        for pending in todo:
            if mode == "log":
                modes.log(pending.finding)
            else:
                modes.warn(pending.finding, pending.filename, pending.module)

    def take_unemitted(self) -> list[Finding]:
        """The findings not emitted yet, which the caller will report its own way."""
        with self.lock:
            todo, self._unemitted = self._unemitted, []
        return [p.finding for p in todo]

    def detector(self, index: int) -> Detector:
        made = self._detectors[index]
        if made is None:
            made = self._detectors[index] = self.settings.detectors[index](self)
        return made

    @property
    def detectors(self) -> tuple[Detector, ...]:
        """The detectors made so far (one that saw no event has nothing to say)."""
        return tuple(d for d in self._detectors if d is not None)

    def checkpoint(self) -> None:
        for index in self.settings.checkpointing:
            made = self._detectors[index]
            if made is not None:
                made.checkpoint()

    def end(self) -> None:
        """Final checkpoint and end-of-unit checks; emission is left to the caller."""
        with self.lock:
            if not self.active:
                return
            self.closing = True
            self.checkpoint()
            # Resources left open matter at the end of an explicit unit; an implicit one
            # ends when its session or connection is gone, which the detectors saw.
            if self.explicit:
                for index in self.settings.ending:
                    self.detector(index).end()
            self.active = False
            self.duration = time.perf_counter() - self._started
            # Detectors and records refer back to the unit: let it all go by reference
            # counting instead of leaving cycles to the garbage collector.
            self._detectors = []
            self.handlers = _ENDED
            self.parent = None
            self.origins = {}
            self.query_origins = {}
            self.sessions = {}
            self.checkouts = {}


class _Ended(dict[Any, tuple[Callable[[Any], None], ...]]):
    """The handlers of an ended unit: none."""

    def __missing__(self, key: Any) -> tuple[Callable[[Any], None], ...]:
        return ()


_ENDED = _Ended()


class _Handlers(dict[Any, tuple[Callable[[Any], None], ...]]):
    """Bound handler methods of a unit's detectors, made on first use.

    Keyed by event name, or by (event name, execution kind) for the per-statement events
    whose detectors say which kinds they want.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__()
        self.uow = uow

    def __missing__(self, key: Any) -> tuple[Callable[[Any], None], ...]:
        uow = self.uow
        indexes, method = uow.settings.handlers_for(key)
        handlers = tuple(getattr(uow.detector(index), method) for index in indexes)
        if uow.parent is not None:
            handlers += _spanning(uow.parent, key)
        self[key] = handlers
        return handlers


def _spanning(outer: UnitOfWork, key: Any) -> tuple[Callable[[Any], None], ...]:
    """The handlers of ``outer`` and the units around it whose detectors span nested units."""
    found: list[Callable[[Any], None]] = []
    uow: UnitOfWork | None = outer
    while uow is not None and uow.active:
        indexes, method = uow.settings.handlers_for(key)
        for index in indexes:
            if uow.settings.detectors[index].spans_nested_units:
                found.append(_forward(uow, getattr(uow.detector(index), method)))
        uow = uow.parent
    return tuple(found)


def _forward(outer: UnitOfWork, handler: Callable[[Any], None]) -> Callable[[Any], None]:
    def forward(payload: Any) -> None:
        # The outer unit may be ended by then (a task that outlives its request), and its
        # detectors are guarded by its own lock, not the nested unit's.
        if outer.active:
            with outer.lock:
                handler(payload)

    return forward


class Added:
    """An object added to a session: its entity name and where ``add()`` happened."""

    __slots__ = ("entity", "site")

    def __init__(self, entity: str, site: CallSite | None) -> None:
        self.entity = entity
        self.site = site


# SessionRecord.written's key for write statements the Session executed itself, not in a
# flush (an ORM bulk INSERT, text("UPDATE ...")).
EXECUTED_WRITES: Final = "statement(s) executed"


class SessionRecord:
    """What listeners/ tracks about one Session, for detectors to read.

    Created at the first event of a session, dropped when the session is garbage
    collected (a weak reference's callback queues it for the next safe point).
    """

    __slots__ = (
        "__weakref__",
        "at_exit",
        "autocommit",
        "autoflush_of",
        "cancelled",
        "changed_attributes",
        "changed_in_savepoints",
        "checkout",
        "commit_site",
        "committing",
        "detachments",
        "discarded",
        "discarded_dirty",
        "exit_rollback",
        "expire_call",
        "expire_site",
        "external",
        "failed_flush",
        "flush_error",
        "flush_site",
        "flush_statement_site",
        "flushed_at",
        "flushing",
        "holds_connection",
        "identity_map",
        "identity_seq",
        "implicit",
        "kept_in",
        "key",
        "long_lived",
        "nested_marks",
        "opened",
        "origins_kept",
        "outcome",
        "owner",
        "paused",
        "pending",
        "pending_overflow",
        "raised_response",
        "ref",
        "reported",
        "rollback_site",
        "root_active",
        "savepoint_rolling_back",
        "sharing",
        "writes",
        "written",
    )

    def __init__(self, session: object) -> None:
        self.ref = process.watch(session, self)
        self.key = id(session)
        self.implicit: UnitOfWork | None = None
        # The unit of work in which the current outermost transaction began.
        self.owner: UnitOfWork | None = None
        # The user's frames when the session acquired its connection.
        self.opened: tuple[CallSite, ...] = ()
        # The name flask.g held it under then, and the app's teardown functions.
        self.kept_in: KeptInG | None = None
        self.holds_connection = False
        # Still alive when the interpreter exits (reported as if collected then).
        self.at_exit = False
        # Its transaction runs on a connection in AUTOCOMMIT: each flushed statement is
        # committed as it runs, so a close without commit() loses no flushed write.
        self.autocommit = False
        # Bound to a Connection the caller manages: its transaction is not ours to judge.
        self.external = False
        # Made by code that outlives the unit of work it was made in (a module-scoped
        # pytest fixture): closing it is that code's business, not a unit's at its end.
        self.long_lived = False
        self.root_active = False
        self.outcome: str | None = None
        # Flushes that wrote rows in the current outermost transaction, and what.
        self.writes = 0
        self.written: dict[str, int] = {}
        # Identity key -> the attributes flushes of this transaction changed (merge()
        # overwriting one of them loses the program's change: SQD162).
        self.changed_attributes: dict[Any, set[str]] = {}
        # (identity key, attribute) first changed inside a SAVEPOINT, in order: rolling
        # back to a SAVEPOINT forgets those noted since it began.
        self.changed_in_savepoints: list[tuple[Any, str]] = []
        self.flush_site: CallSite | None = None
        self.flushed_at: float | None = None  # perf_counter() of that first writing flush
        # The user's line of the flush running now, found at its first statement: the
        # "last query" of a connection that then sat idle.
        self.flush_statement_site: CallSite | None = None
        # For each open SAVEPOINT, what the transaction had written when it began.
        self.nested_marks: list[SavepointMark] = []
        # Between a SAVEPOINT's rollback and its end: the objects added since it began,
        # which SQLAlchemy expunges then, were undone by it, not lost for want of a commit.
        self.savepoint_rolling_back = False
        # Pending objects (by id of their InstanceState) not flushed yet.
        self.pending: dict[int, Added] = {}
        self.pending_overflow = 0
        # The identity map when the outermost transaction began: close() replaces it.
        self.identity_map: Any = None
        self.identity_seq = 0
        # Unflushed work thrown away by close() (not by rollback()).
        self.discarded: list[Added] = []
        self.discarded_dirty: list[str] = []
        self.flushing = False
        self.autoflush_of: OrmExecution | None = None
        # The checkout its last statement ran on, and the one whose idle clock stands
        # still while a flush runs (SQLAlchemy's own work between the flush's statements
        # is not the program keeping the connection idle: SQD157).
        # (A weak reference to the former: a long-lived session must not keep an old
        # checkout, and the unit of work that owned it, alive.)
        self.checkout: weakref.ref[CheckoutRecord] | None = None
        self.paused: CheckoutRecord | None = None
        # Inside commit() (before_commit until it ends): a flush there is followed by
        # more of SQLAlchemy's own work (releasing the flushed objects) before COMMIT.
        self.committing = False
        self.commit_site: CallSite | None = None
        # The last rollback of the outermost transaction since the last commit.
        self.rollback_site: CallSite | None = None
        # The program's last expire_all() or expire() since the last commit or rollback:
        # where, and which call ("expire_all()"), with the id of that call's frame (its
        # objects expire one by one; the first one finds the place).
        self.expire_site: CallSite | None = None
        self.expire_call: tuple[str, int] | None = None

        # A rollback a unit-of-work class's __exit__ made when its block ended without
        # an error: its __exit__ and the with block. It discards as a close does.
        self.exit_rollback: tuple[CallSite, CallSite] | None = None
        # A web framework's successful response raised as an exception that was passing
        # when the outermost transaction rolled back ("falcon's HTTPSeeOther (303)"):
        # that rollback discards as a close does (raised_responses.py).
        self.raised_response: str | None = None
        # Where its objects were detached (close(), expunge_all(), expunge()), the latest
        # few, for explaining a DetachedInstanceError later.
        self.detachments: list[Detachment] = []
        # Once the session is collected (process.gone_sessions): what its implicit unit
        # saw load each mapper's objects, which that unit forgets as it ends.
        self.origins_kept: dict[Any, OrmExecution] | None = None
        # The error of the flush running now (from handle_error), and the last flush that
        # failed (leaving the transaction inactive until rollback()).
        self.flush_error: tuple[str, str | None, str | None] | None = None
        self.failed_flush: FailedFlush | None = None
        # A statement of its cancelled while the database ran it (asyncio.timeout()), the
        # exception's class and the session's transaction then: SQLAlchemy invalidated
        # the connection, and the session raises PendingRollbackError until rollback()
        # ends that transaction.
        self.cancelled: tuple[CallSite | None, str, weakref.ref[Any]] | None = None
        # Codes already reported about this session, so that the end of a unit of work
        # and a later garbage collection do not report the same leak twice.
        self.reported: set[str] = set()
        # Which task or thread used it last, and which threads its transaction saw.
        self.sharing = Sharing()

    @property
    def session(self) -> Any:
        return self.ref()

    def add_pending(self, state_id: int, added: Added) -> None:
        if len(self.pending) < MAX_PENDING_PER_SESSION:
            self.pending[state_id] = added
        else:
            self.pending_overflow += 1

    def reset_transaction(self) -> None:
        self.root_active = False
        self.outcome = None
        self.writes = 0
        self.written = {}
        self.changed_attributes = {}
        self.changed_in_savepoints = []
        self.flush_site = None
        self.flushed_at = None
        self.nested_marks = []
        self.savepoint_rolling_back = False
        self.discarded = []
        self.discarded_dirty = []
        self.exit_rollback = None
        self.raised_response = None
        self.holds_connection = False
        # ``failed_flush`` stays: a PendingRollbackError raised after the session closed
        # (the ``with`` block ended first) is still explained by it.
        self.flush_error = None

    def begin_savepoint(self) -> None:
        self.nested_marks.append(
            SavepointMark(self.writes, dict(self.written), len(self.changed_in_savepoints))
        )

    def roll_back_savepoint(self) -> None:
        """Forget what was written since the innermost SAVEPOINT began: its rollback
        undid it."""
        self.savepoint_rolling_back = True
        if not self.nested_marks:
            return
        mark = self.nested_marks[-1]
        self.writes = mark.writes
        self.written = dict(mark.written)
        if not self.writes:
            self.flush_site = None
            self.flushed_at = None
        undone = self.changed_in_savepoints[mark.changed :]
        del self.changed_in_savepoints[mark.changed :]
        for identity, attribute in undone:
            attributes = self.changed_attributes.get(identity)
            if attributes is not None:
                attributes.discard(attribute)
                if not attributes:
                    del self.changed_attributes[identity]

    def end_savepoint(self) -> None:
        self.savepoint_rolling_back = False
        if self.nested_marks:
            self.nested_marks.pop()
        if not self.nested_marks:
            # Released into the outermost transaction: no rollback can undo it alone.
            self.changed_in_savepoints = []

    def add_detachment(self, detachment: Detachment) -> None:
        if len(self.detachments) >= MAX_DETACHMENTS_PER_SESSION:
            del self.detachments[0]
        self.detachments.append(detachment)


class SavepointMark(NamedTuple):
    """What the transaction had written when a SAVEPOINT began."""

    writes: int
    written: dict[str, int]
    changed: int  # length of SessionRecord.changed_in_savepoints


class Detachment:
    """Objects left their session: where, and how (``close``, ``expunge_all``, ``expunge``,
    or ``async_with``: closed by an ``async with`` block's end, the line of ``site``).

    ``identity_map`` is the map they were in (``close()`` and ``expunge_all()`` replace
    it with a new one and leave the old one as it was); for ``expunge``, ``keys`` are the
    identity keys of the expunged objects instead. ``committed`` is where the session
    last committed before, if it did: with ``expire_on_commit`` that is what expired them;
    ``rolled_back``, where it rolled back since, which expired them whatever the setting.
    """

    __slots__ = ("committed", "how", "identity_map", "keys", "marker", "rolled_back", "site")

    def __init__(
        self,
        site: CallSite | None,
        how: str,
        identity_map: Any,
        committed: CallSite | None,
        rolled_back: CallSite | None = None,
    ) -> None:
        self.site = site
        self.how = how
        self.identity_map = identity_map
        self.keys: set[Any] = set()
        self.committed = committed
        # Where the session last rolled back after that commit: a rollback expires every
        # object, whatever expire_on_commit says.
        self.rolled_back = rolled_back
        # The map that replaced ``identity_map``: the objects of one close() share it.
        self.marker: Any = None

    def holds(self, state: Any) -> bool:
        """Whether the object of this InstanceState was among those detached here."""
        if self.how == "expunge":
            return state.key is not None and state.key in self.keys
        identity_map = self.identity_map
        return identity_map is not None and bool(identity_map.contains_state(state))


MAX_THREADS_PER_TRANSACTION = 8


class Sharing:
    """Who used a session: the latest operation's task or thread, for SQD158 and SQD159.

    ``last`` is a weak reference to the greenlet of the latest operation: one of
    SQLAlchemy's own (``greenlet_spawn``, one per ``AsyncSession`` call, alive exactly
    while that call is suspended on I/O) or a thread's main greenlet; without greenlet,
    the thread. ``busy`` is who is inside a DBAPI call for the session right now.
    ``threads`` are the threads that used it in its current transaction (ident, name).
    Weak references only: a suspended task must not keep its session alive.
    """

    __slots__ = (
        "busy",
        "busy_site",
        "busy_thread",
        "first_site",
        "last",
        "last_frames",
        "last_site",
        "last_task",
        "last_thread",
        "reported",
        "seen",
        "threads",
    )

    def __init__(self) -> None:
        self.last: weakref.ref[Any] | None = None
        self.last_site: CallSite | None = None
        self.last_thread = 0
        self.last_task: weakref.ref[Any] | None = None
        # The frames of the program's code the last thread took the session in (a helper,
        # the worker's task that called it), by address and code (callsite.task_frames);
        # none for the main thread.
        self.last_frames: tuple[tuple[int, Any], ...] = ()
        self.busy: weakref.ref[Any] | None = None
        self.busy_site: CallSite | None = None
        self.busy_thread = 0
        self.threads: list[tuple[int, str]] = []
        # Where the first of them began its first operation: the one that acquires the
        # transaction's connection.
        self.first_site: CallSite | None = None
        # The latest sharing found (a detector.SharedUse), to explain the error it causes.
        self.seen: Any = None
        # Whether threads (or tasks) using it at once were reported in this transaction.
        self.reported = False

    def new_transaction(self) -> None:
        """The outermost transaction ended: whoever comes next starts afresh."""
        self.last = None
        self.last_task = None
        self.last_thread = 0
        self.last_frames = ()
        self.threads = []
        self.first_site = None
        self.reported = False


def retry_fix(sqlstate: str | None, rollback: str) -> str | None:
    """The fix for a transaction PostgreSQL rolled back as the loser of a conflict
    (SQLSTATE class 40: deadlock_detected, serialization_failure): retry it whole, since a
    SAVEPOINT would keep the locks that collided; None for any other error."""
    if sqlstate is None or not sqlstate.startswith("40"):
        return None
    conflict = "a deadlock" if sqlstate == "40P01" else "a serialization conflict"
    fix = (
        f"PostgreSQL chose this transaction as the loser of {conflict}: call {rollback} in "
        "the except block and retry the whole transaction from the start (a SAVEPOINT "
        "would keep the locks that collided)"
    )
    if sqlstate == "40P01":
        fix += ", and take row locks in one order everywhere (sorted by primary key)"
    return fix


class FailedFlush:
    """A flush that failed: where, and the error class (SQLAlchemy's and the driver's)."""

    __slots__ = (
        "added_since",
        "discarded_at",
        "driver_error",
        "earlier",
        "error",
        "first_added",
        "in_savepoint",
        "reported",
        "site",
        "sqlstate",
    )

    def __init__(
        self,
        site: CallSite | None,
        error: str | None,
        driver_error: str | None,
        *,
        in_savepoint: bool = False,
        earlier: dict[str, int] | None = None,
        sqlstate: str | None = None,
    ):
        self.site = site
        # PostgreSQL's SQLSTATE of the driver error, when there is one.
        self.sqlstate = sqlstate
        self.error = error
        self.driver_error = driver_error
        # It failed inside begin_nested(): the code caught it inside that block.
        self.in_savepoint = in_savepoint
        # What the transaction's earlier flushes wrote ("User inserted" -> 2): the failed
        # flush rolled it back with the rest, and rollback() discards it for good.
        self.earlier = earlier or {}
        # New objects added to the session since (add() works on a failed session), and
        # where the first one was, until the failed transaction ends.
        self.added_since = 0
        self.first_added: CallSite | None = None
        # Whether a use of the session after it was reported (SQD155).
        self.reported = False
        # Where the program's session.rollback() ended the failed transaction, discarding
        # ``earlier`` with it; None once the session wrote again and that was reported
        # (SQD165), or before.
        self.discarded_at: CallSite | None = None


# The key, in a DBAPI connection's ``info``, of the error that aborted its transaction.
ABORTED_BY: Final = "sqla_doctor.aborted_by"


class TransactionAbort:
    """An error raised inside a PostgreSQL transaction, which aborts it: every later
    statement of that transaction (or SAVEPOINT) fails with SQLSTATE 25P02."""

    __slots__ = ("driver_error", "error", "in_savepoint", "site", "sqlstate", "transaction")

    def __init__(
        self,
        transaction: weakref.ref[Any],
        error: str,
        driver_error: str,
        site: CallSite | None,
        sqlstate: str,
        *,
        in_savepoint: bool = False,
    ) -> None:
        # Raised inside begin_nested(): the SAVEPOINT is what failed.
        self.in_savepoint = in_savepoint
        self.sqlstate = sqlstate
        self.transaction = transaction
        self.error = error
        self.driver_error = driver_error
        self.site = site


class CheckoutRecord:
    """One pooled connection checked out: where, by which unit, and whether a Session owns it."""

    __slots__ = (
        "__weakref__",
        "advisory_locks",
        "checked_out_at",
        "core_ddl",
        "core_write_site",
        "core_writes",
        "fairy_key",
        "holder",
        "idle_since",
        "idle_total",
        "implicit",
        "interrupted_since",
        "key",
        "last_site",
        "listening",
        "loaded_before",
        "locked_rows",
        "long_lived",
        "longest_idle",
        "longest_idle_after",
        "longest_statement",
        "opened",
        "owner",
        "pool",
        "ref",
        "reported",
        "returned",
        "returned_at",
        "session_owned",
        "session_record",
        "streamed",
        "temp_tables",
        "transaction_began",
        "transaction_site",
    )

    def __init__(
        self, key: int, fairy: object, opened: tuple[CallSite, ...], owner: UnitOfWork | None
    ):
        self.key = key  # id of the pool's connection record
        self.fairy_key = id(fairy)
        self.ref = process.watch(fairy, self)
        self.opened = opened
        self.owner = owner
        self.implicit: UnitOfWork | None = None
        self.session_owned = False
        # Checked out by code that outlives the unit of work (see SessionRecord).
        self.long_lived = False
        # The record of the Session that owns it (a weak reference: checkouts outlive
        # nothing, but a record must not be kept by its connection's).
        self.session_record: weakref.ref[SessionRecord] | None = None
        self.returned = False
        self.reported = False
        # time.perf_counter() values, for how long it is held and how long it sat idle.
        self.checked_out_at = time.perf_counter()
        self.returned_at = 0.0
        # When its last statement returned; 0.0 while a statement runs or none ran yet.
        self.idle_since = 0.0
        # Where that last statement came from (None for a flush's, or when unknown).
        self.last_site: CallSite | None = None
        # How many objects its Session held before that statement, an ORM query's (-1:
        # another kind): what tells building the rows' objects apart from idleness.
        self.loaded_before = -1
        # Whether it ran PostgreSQL's LISTEN (and no UNLISTEN since): held to wait.
        self.listening = False
        # Session-level advisory locks it holds (pg_advisory_lock()): held on purpose.
        self.advisory_locks = 0
        # Whether that statement was an ORM query read through a server-side cursor.
        self.streamed = False
        # When and where its current database transaction began (0.0: none open).
        self.transaction_began = 0.0
        self.transaction_site: CallSite | None = None
        # The first statement of that transaction that locked rows (SELECT ... FOR
        # UPDATE): where it ran and its lock clause. Other transactions wait on them.
        self.locked_rows: tuple[CallSite | None, str] | None = None
        # The longest gap between two statements of that transaction, and the statement
        # it followed (the gap after the last statement is measured when it ends).
        self.longest_idle = 0.0
        self.longest_idle_after: CallSite | None = None
        # All the gaps between its statements together: many short waits (a slow call
        # per row) make an idle transaction whose longest gap is short.
        self.idle_total = 0.0
        # How long its longest statement ran (reset as a transaction begins): a
        # transaction that is one slow read is the statement's time, not the program's.
        self.longest_statement = 0.0
        # When a statement began that was cancelled while the database ran it (0.0:
        # none): it may run on until the connection is closed.
        self.interrupted_since = 0.0
        # Writes a Connection (not a Session) ran in its open transaction, and where the
        # first one came from: lost if it closes without commit().
        self.core_writes = 0
        # Of those, DDL (on databases whose DDL is transactional).
        self.core_ddl = 0
        self.core_write_site: CallSite | None = None
        # Temporary tables created on this checkout: writes to them are not lost data.
        self.temp_tables: frozenset[str] = frozenset()
        # A weak reference to the Pool it came from, once a Connection wrapped it.
        self.pool: weakref.ref[Any] | None = None
        # The thread or asyncio task that checked it out, for SQD451's list of holders.
        self.holder = _running()

    @property
    def garbage_collected(self) -> bool:
        return self.ref() is None

    def forget_idle(self) -> None:
        """A transaction begins or ends: its idle stretches are no longer the news."""
        self.longest_idle, self.longest_idle_after = 0.0, None
        self.idle_total = 0.0

    def wrote(self) -> bool:
        """Whether its open transaction wrote: a Core write, or its Session's flush or
        write statement (known only for a Session that checked it out itself)."""
        if self.core_writes:
            return True
        session = self.session_record() if self.session_record is not None else None
        return session is not None and session.writes > 0

    def idle_time(self, now: float) -> float:
        """How long the open transaction has sat between statements, until ``now``."""
        return self.idle_total + (now - self.idle_since if self.idle_since else 0.0)

    def idle_stretch(self, now: float) -> tuple[float, CallSite | None]:
        """The open transaction's longest idle stretch until ``now``, and the statement
        it followed: a gap between two statements, or the time since the last one."""
        since_last = now - self.idle_since if self.idle_since else 0.0
        if self.longest_idle > since_last:
            return self.longest_idle, self.longest_idle_after
        return since_last, self.last_site


def _running() -> str:
    """``task <name> (<coroutine>)`` inside an asyncio task (an AsyncEngine checks out in
    a greenlet that runs inside the task's step, so the task is still current), else
    ``thread <name>``."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running event loop in this thread
            task = None
        if task is not None:
            return task_label(task)
    return f"thread {threading.current_thread().name}"


class _Process:
    """What exists once per process: ambient settings, records, the collector."""

    def __init__(self) -> None:
        self.installed = False
        self.registered = False
        self.exiting = False  # shutdown() runs: the program will read nothing more
        self.settings: Settings | None = None
        self.records: dict[int, SessionRecord] = {}
        # The latest sessions garbage-collected after detaching objects (closed), so that
        # an object that outlived its session (a module-level cache) is still explained
        # with where it was loaded and where the session closed.
        self.gone_sessions: deque[SessionRecord] = deque(maxlen=MAX_GONE_SESSIONS)
        self.checkouts: dict[int, CheckoutRecord] = {}  # by id of the pool's connection record
        self.checkouts_by_fairy: dict[int, CheckoutRecord] = {}
        # Checkouts out at once on one pool connection record (StaticPool and
        # SingletonThreadPool hand their connection to a second checkout while the first
        # holds it), by id of the record: the pool fires one checkin for them all, at the
        # first return, so each return is told by its reset event instead.
        self.shared: dict[int, list[CheckoutRecord]] = {}
        # Weak references whose object died, queued by the weakref callback (which may run
        # inside garbage collection, halfway through another handler) for the next safe
        # point; and the record of each watched object, by id of its weak reference.
        # The callback is the deque's own append, so a record is in no reference cycle
        # and dies by reference counting as soon as its object does.
        self.dead: deque[weakref.ref[Any]] = deque()
        self.watched: dict[int, SessionRecord | CheckoutRecord] = {}
        self.statements = 0
        self.internal_errors = 0
        self.collected: dict[Hashable, Finding] = {}
        self.occurrences: dict[Hashable, int] = {}
        self.collecting = False
        self.capped = False
        # Call sites that leaked a session or connection: their next checkouts keep the
        # whole stack.
        self.leaky_sites: set[tuple[str, int]] = set()
        # Identity key -> id of the last session whose flush updated that row, and when
        # (bounded):
        # an object changed in one session and written through another (``merge()``)
        # is not a change the first one lost.
        self.updated_rows: dict[Any, tuple[int, int]] = {}
        # Objects made by unpickling (pickle.loads() from a cache, copy.deepcopy()), by
        # id: a weak reference, how they were made, and where (bounded). Such a copy
        # belongs to no session and never did.
        self.unpickled: dict[int, tuple[weakref.ref[Any], str, CallSite | None]] = {}
        # Counts those updates: a session's changes are excused only by a write made
        # after it began (``SessionRecord.identity_seq``), not by an older one.
        self.row_updates = 0
        # Called with every finding of every unit of work (install(on_finding=...)).
        self.on_finding: list[Callable[[Finding], None]] = []
        # SQL -> [times run, first call site]: the statements table of `sqla-doctor run`.
        self.table: dict[str, list[Any]] | None = None
        self.table_limit = 0

    def copied(self, obj: object) -> tuple[str, CallSite | None] | None:
        """How and where ``obj`` was made by unpickling, if it was."""
        entry = self.unpickled.get(id(obj))
        if entry is None or entry[0]() is not obj:
            return None
        return entry[1], entry[2]

    def checkout_of(self, fairy: object) -> CheckoutRecord | None:
        """The checkout record of a pool's connection proxy (a Connection's
        ``.connection``), if it is this proxy's: an id is reused once a proxy is gone."""
        checkout = self.checkouts_by_fairy.get(id(fairy))
        return checkout if checkout is not None and checkout.ref() is fairy else None

    def watch(self, target: object, record: SessionRecord | CheckoutRecord) -> weakref.ref[Any]:
        ref = weakref.ref(target, self.dead.append)
        self.watched[id(ref)] = record
        return ref

    def holders(self, pool: object) -> list[CheckoutRecord]:
        """The checkouts of ``pool`` still out, longest-held first."""
        # list() of a dict's values is one C call: safe against other threads' checkouts.
        holders = [
            r
            for r in list(self.checkouts.values())
            if not r.returned and r.pool is not None and r.pool() is pool
        ]
        return sorted(holders, key=lambda r: r.checked_out_at)

    def unwatch(self, record: SessionRecord | CheckoutRecord) -> None:
        self.watched.pop(id(record.ref), None)

    def collect(self, finding: Finding, settings: Settings) -> None:
        for callback in self.on_finding:
            try:
                callback(finding)
            except Exception:
                logging.getLogger("sqla_doctor").warning(
                    "sqla-doctor: on_finding callback %r failed", callback, exc_info=True
                )
        if not self.collecting:
            return
        key = finding.occurrence_key
        if key in self.collected:
            self.occurrences[key] += 1
        elif len(self.collected) < settings.runtime.max_findings:
            self.collected[key] = finding
            self.occurrences[key] = 1
        elif not self.capped:
            self.capped = True
            _logger.warning(
                "sqla-doctor: the process kept max-findings = %d findings; the others are "
                "not reported",
                settings.runtime.max_findings,
            )

    def findings(self) -> list[Finding]:
        """Every finding since install(), one per place, with how often it recurred."""
        out = []
        for key, finding in self.collected.items():
            seen = self.occurrences.get(key, 1)
            if seen > 1:
                finding = replace(finding, details={**finding.details, "occurrences": seen})
            out.append(finding)
        return sorted(out, key=lambda f: f.sort_key)

    def reset_collected(self) -> None:
        self.collected = {}
        self.occurrences = {}
        self.capped = False


process = _Process()


def origin_in(origins: Mapping[Any, OrmExecution], mapper: Any) -> tuple[Any, OrmExecution] | None:
    """The execution ``origins`` names for ``mapper``'s objects, with the mapper it
    selected: ``mapper`` itself, or a superclass for a polymorphic query."""
    for candidate in mapper.iterate_to_root():
        origin = origins.get(candidate)
        if origin is not None:
            return candidate, origin
    return None


def record_of_object(state: Any) -> SessionRecord | None:
    """The record of the session an object (its InstanceState) belongs to, if watched."""
    session = state.session
    return process.records.get(id(session)) if session is not None else None
