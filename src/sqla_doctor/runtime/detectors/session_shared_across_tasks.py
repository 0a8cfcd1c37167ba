"""SQD158: one AsyncSession used by several asyncio tasks at once."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.async_sessions import async_owner
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, ErrorSeen, SharedUse
from sqla_doctor.runtime.detectors.session_leak import module_factory
from sqla_doctor.runtime.unit_of_work import process

_FIX = (
    "give each task its own session (`async with {factory} as session:` inside "
    "the task), or await the operations one after another"
)
_HINT = "async with {factory} as session: ..."
_MAX_STARTED = 1_000
# What SQLAlchemy and the drivers raise when two tasks use one session or connection.
_SYMPTOMS = (
    "concurrent operations are not permitted",  # Session provisioning a connection (isce)
    "another operation is in progress",  # asyncpg
    "is already in progress",  # IllegalStateChangeError
    "Session is already flushing",  # a second task's flush() while the first's awaits
    # A statement while another thread's or task's commit() is between its flush and
    # the COMMIT, or done and not yet closed (one thread alone gets there only by SQL
    # in an after_commit hook, or after a two-phase prepare()).
    "in 'prepared' state; no further SQL",
    "in 'committed' state; no further SQL",
)


def concurrency_symptom(error: BaseException) -> bool:
    """Whether ``error`` is what SQLAlchemy or a driver raises on concurrent use.

    Only the exception's class name and message are matched, never kept: a DBAPI
    error's message holds the statement and its parameters.
    """
    if type(error).__name__ == "IllegalStateChangeError":
        return True
    text = str(error)
    return any(symptom in text for symptom in _SYMPTOMS)


def shared_use(seen: ErrorSeen, *, tasks: bool) -> tuple[SharedUse | None, Any]:
    """The sharing recorded on a session the failing SQLAlchemy frames were using."""
    from sqlalchemy.orm import Session

    first: Any = None
    for session in seen.locals_of_type(Session):
        if first is None:
            first = session
        record = process.records.get(id(session))
        if record is None or record.ref() is not session:
            continue
        shared = record.sharing.seen
        if isinstance(shared, SharedUse) and shared.tasks is tasks:
            return shared, session
    return None, first


class SessionSharedAcrossTasks(Detector):
    """
    ## What it does
    Checks for one `AsyncSession` used by several asyncio tasks at once: an operation
    (a query, a lazy load through `awaitable_attrs`, a flush, a commit, a begin) starts in
    one task while another task's operation on the same session is still waiting for
    the database. The finding names both call sites and both tasks, and the line of
    the `asyncio.gather()` or `TaskGroup` block that started the tasks, when that
    task is still waiting on them with the session in hand. One finding per transaction
    of the session: the tasks of one `gather()` overlap at each of their operations.

    Each `AsyncSession` call runs the synchronous ORM in a greenlet of its own, alive
    exactly while that call waits on I/O; the detector notes which one each operation
    runs in, so it finds the overlap whatever the timing, on SQLite as on PostgreSQL.
    When the overlap makes the program fail, the error is explained with the same two
    call sites (as a note on the traceback).

    ## Why is this bad?
    A session is one transaction on one connection, with one identity map and one state
    machine; none of it is safe to share between tasks. `asyncio.gather()` (or a
    `TaskGroup`) of several operations on one session makes them interleave at every
    `await`, and what happens next depends on where they interleave:

    - `InvalidRequestError: This session is provisioning a new connection; concurrent
      operations are not permitted` when the second operation starts while the first
      is still connecting;
    - `IllegalStateChangeError: Method 'close()' can't be called here; method
      '_connection_for_bind()' is already in progress` when one task changes the
      session's state under another;
    - with asyncpg, `InterfaceError: cannot perform operation: another operation is in
      progress` when both reach the one connection;
    - with aiosqlite nothing fails: the statements are serialized, and the tasks share a
      transaction, the identity map and each other's flushes without knowing it, until
      the timing changes in production.

    ## Example
    ```python
    async with session_factory() as session:
        users, posts = await asyncio.gather(
            session.scalars(select(User)),
            session.scalars(select(Post)),
        )
    ```

    Use instead:
    ```python
    async def load(stmt):
        async with session_factory() as session:  # one session per task
            return (await session.scalars(stmt)).all()

    users, posts = await asyncio.gather(load(select(User)), load(select(Post)))
    ```

    or, when the queries must share a transaction, await them one after another on the
    one session.

    ## References
    - [Using AsyncSession with concurrent tasks](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#using-asyncsession-with-concurrent-tasks)
    - [Is the Session thread-safe? Is AsyncSession safe to share in concurrent tasks?](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#is-the-session-thread-safe-is-asyncsession-safe-to-share-in-concurrent-tasks)
    - [Session is provisioning a new connection (isce)](https://docs.sqlalchemy.org/en/20/errors.html#error-isce)
    """

    code = "SQD158"
    name = "session-shared-across-tasks"
    pitfalls = ("P20",)
    severity = Severity.ERROR
    message = "{what} — {fix}"

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        # Finding key -> the line that started the tasks (looked up once per finding).
        self._started: dict[Hashable, tuple[CallSite, str] | None] = {}

    def on_session_shared(self, use: SharedUse) -> None:
        sharing = use.record.sharing
        if use.tasks and not sharing.reported:
            # Once per transaction: the tasks of one gather() or TaskGroup overlap at
            # each of their operations (a get() and a flush()), and the fix is the same.
            sharing.reported = True
            self._report_use(use, live=True)

    def _report_use(self, use: SharedUse, *, live: bool = False) -> Any:
        other = self.where(use.other_site) if use.other_site is not None else "elsewhere"
        here = self.where(use.site)
        # Tasks named after the function they run (anyio's) read the same: "another".
        other_task = f"another {use.other}" if use.other == use.who else use.other
        keys = {use.site.key if use.site else None, use.other_site.key if use.other_site else None}
        key = frozenset(keys)
        related = [(use.other_site, f"{other_task}'s operation on the same session")]
        if live and key not in self._started and len(self._started) < _MAX_STARTED:
            # While the tasks run: the gather() or TaskGroup that started them is findable.
            from sqla_doctor.runtime import listeners

            self._started[key] = listeners.starting_site(use.record)
        started = self._started.get(key)
        if started is not None and started[0].key not in keys:
            related.append(started)
        factory = module_factory(use.site, asynchronous=True)
        return self.report(
            use.site,
            key=key,
            subject="AsyncSession",
            related=related,
            hint=_HINT.format(factory=factory),
            details={"task": use.who, "other_task": use.other},
            what=(
                f"AsyncSession used by two asyncio tasks at once: {use.who} began an "
                f"operation at {here} while {other_task}'s operation from {other} was "
                "still waiting for the database"
            ),
            fix=_FIX.format(factory=factory),
        )

    def on_error(self, seen: ErrorSeen) -> None:
        if not concurrency_symptom(seen.error):
            return
        use, session = shared_use(seen, tasks=True)
        if use is not None:
            seen.explain(self._report_use(use))
            return
        if session is not None and async_owner(session) is None:
            return  # a thread's session: SQD159's to explain
        if session is None and "another operation is in progress" not in str(seen.error):
            return
        error = type(seen.error).__name__
        factory = module_factory(seen.site, asynchronous=True)
        seen.explain(
            self.report(
                seen.site,
                key=("error", seen.site.key if seen.site is not None else None),
                subject="AsyncSession",
                hint=_HINT.format(factory=factory),
                what=(
                    f"{error} at {self.where(seen.site)} is what one session (or connection) "
                    "used by several asyncio tasks at once raises"
                ),
                fix=_FIX.format(factory=factory),
            )
        )
