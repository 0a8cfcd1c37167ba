"""SQD159: one Session used by several threads inside one transaction, or at once."""

from __future__ import annotations

from typing import Any

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.async_sessions import async_owner
from sqla_doctor.runtime.detector import Detector, ErrorSeen, SharedUse
from sqla_doctor.runtime.detectors.session_leak import module_factory
from sqla_doctor.runtime.detectors.session_shared_across_tasks import (
    concurrency_symptom,
    shared_use,
)
from sqla_doctor.runtime.unit_of_work import process

_FIX = (
    "give each thread its own session (`with {factory} as session:` inside the "
    "thread, or a scoped_session); to hand a session to another thread, commit or close "
    "it first"
)
_HINT = "with {factory} as session: ..."


class SessionSharedAcrossThreads(Detector):
    """
    ## What it does
    Checks for one `Session` used by several threads at once: an operation (a query, a
    lazy load, a flush, a commit, a begin) in one thread while another thread's
    statement on the same session is still running in the database driver, while
    another thread's operation is still acquiring the session's connection (a pool
    checkout, a new connection to the server), or while another thread's `commit()` is
    under way (which SQLAlchemy refuses: "This session is in 'prepared' state"). Both
    threads' call sites are reported.

    Threads that use it between statements are seen too: an operation in one thread
    while the thread that used it last is still running the function it used it from
    (`ThreadPoolExecutor.map()` workers sharing a module-level session), or, in a worker
    thread, the rest of the work whose locals hold that session (a task that looked its
    row up through a helper and renders it now), not waiting in `join()`, `wait()`,
    `result()` or a queue for the work it handed over. One finding per transaction of
    the session.

    Thread-pool tasks handed one session are reported however this run's timing fell:
    a `ThreadPoolExecutor` (or `run_in_executor()`) task given the session as an
    argument, in its function's closure or through a module global it names, while
    another such task is still running, or while the caller submits or awaits several
    of them together (`Executor.map()`, `as_completed()`, `wait()`) on a pool of more
    than one thread. Tasks submitted and awaited one at a time
    (`pool.submit(work, session).result()`) take turns and are not reported.

    Threads that take turns, one after another, are not reported: a web framework
    iterating a sync generator (Starlette's `StreamingResponse`), running a dependency
    and its teardown, or `run_in_threadpool` hands one session from thread to thread
    that way on every request. `scoped_session` and one session per thread are never
    reported. Closing a session from another thread is not a use. SQLAlchemy's own
    refusal (`IllegalStateChangeError`, "This session is provisioning a new
    connection; concurrent operations are not permitted", which a module-level session
    used by `ThreadPoolExecutor` workers raises before it has its connection) reaching
    the end of a unit of work or the top of the program is explained with the other
    thread's line, or with the threads that used the session in its transaction when
    the overlap was not seen as it began.

    ## Why is this bad?
    A session is not thread-safe: its identity map, its unit of work and its
    transaction state change on every operation without any lock. Two threads using
    it at once corrupt that state, and the symptoms are random: `IllegalStateChangeError`,
    "This session is provisioning a new connection; concurrent operations are not
    permitted", a flush that writes another thread's half-built objects, objects that
    vanish from the identity map, `ResourceClosedError`, or one thread's commit ending
    another's transaction. Threads that only take turns share one transaction: one
    thread's rollback discards the other's writes, and under load the turns overlap.

    ## Example
    ```python
    session = Session(engine)  # one session for the whole app

    def handle(user_id):  # runs in many threads
        user = session.get(User, user_id)
        user.visits += 1
        session.commit()
    ```

    Use instead:
    ```python
    def handle(user_id):
        with session_factory() as session:  # one session per thread (per request)
            user = session.get(User, user_id)
            user.visits += 1
            session.commit()
    ```

    or `scoped_session(session_factory)`, which gives each thread its own session; to
    pass work to another thread, commit (or close) first and let it open its own.

    ## Known problems
    Two threads interleaving between statements inside one transaction, which is as
    wrong, is seen when the thread that used the session last is still in that function
    as the other begins, or still in a caller whose locals hold the session; a thread
    that went on to other code (a module-level session, which no frame holds; the main
    thread after its function returned), or that waits for the other with `time.sleep()`
    polling, is taken for a hand-over, and is reported only if a statement overlaps
    once; under load they do.

    ## References
    - [Is the Session thread-safe?](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#is-the-session-thread-safe-is-asyncsession-safe-to-share-in-concurrent-tasks)
    - [Contextual/thread-local sessions (scoped_session)](https://docs.sqlalchemy.org/en/20/orm/contextual.html)
    - [Session is provisioning a new connection (isce)](https://docs.sqlalchemy.org/en/20/errors.html#error-isce)
    """

    code = "SQD159"
    name = "session-shared-across-threads"
    pitfalls = ("P33",)
    severity = Severity.ERROR
    message = "{what} — {fix}"

    def on_session_shared(self, use: SharedUse) -> None:
        # Turns taken one after another are left alone: a framework iterating a sync
        # generator or running a dependency in its threadpool hands one session from
        # thread to thread that way, safely, on every request.
        sharing = use.record.sharing
        if not use.tasks and use.concurrent and not sharing.reported:
            # Once per transaction: every pair of its threads' lines has the same fix.
            sharing.reported = True
            self._report_use(use)

    def _report_use(self, use: SharedUse) -> Any:
        here = self.where(use.site)
        other = self.where(use.other_site) if use.other_site is not None else "elsewhere"
        if use.connecting:
            what = (
                f"Session used by two threads at once: {use.who} began an operation at "
                f"{here} while {use.other}'s operation from {other} was still acquiring "
                "the session's connection (SQLAlchemy refuses it: \"This session is "
                'provisioning a new connection; concurrent operations are not permitted")'
            )
            note = f"{use.other}'s operation on the same session, still connecting"
        elif use.committing:
            what = (
                f"Session used by two threads at once: {use.who} began an operation at "
                f"{here} while {use.other}'s commit() from {other} was still under way "
                '(SQLAlchemy refuses it until the COMMIT is done: "This session is in '
                "'prepared' state; no further SQL can be emitted within this transaction\")"
            )
            note = f"{use.other}'s commit() on the same session, still under way"
        elif use.pool_workers:
            what = (
                f"Session handed to thread-pool tasks that run in parallel: {use.who} began "
                f"an operation at {here} in one of several tasks given the same session and "
                "submitted together (Executor.map(), as_completed(), wait()) to a pool of "
                f"{use.pool_workers} threads, which runs them at the same time whenever it "
                "can, however this run's timing fell"
            )
            note = f"{use.other} used the same session here, in the same transaction"
        elif use.midway:
            what = (
                f"Session used by two threads at once: {use.who} began an operation at "
                f"{here} while {use.other} was still running the code that used it at "
                f"{other}"
            )
            note = f"{use.other} is still in the function that used the same session here"
        elif use.concurrent:
            what = (
                f"Session used by two threads at once: {use.who} began an operation at "
                f"{here} while {use.other}'s statement from {other} was still running"
            )
            note = f"{use.other}'s statement on the same session"
        else:
            what = (
                f"Session shared between threads inside one transaction: {use.who} used "
                f"it at {here} after {use.other} used it at {other}, with no commit in "
                "between"
            )
            note = f"{use.other} used the same session here"
        keys = {use.site.key if use.site else None, use.other_site.key if use.other_site else None}
        factory = module_factory(use.site, asynchronous=False)
        return self.report(
            use.site,
            key=frozenset(keys),
            subject="Session",
            related=[(use.other_site, note)],
            hint=_HINT.format(factory=factory),
            details={
                "thread": use.who,
                "other_thread": use.other,
                "concurrent": use.concurrent,
            },
            what=what,
            fix=_FIX.format(factory=factory),
        )

    def on_error(self, seen: ErrorSeen) -> None:
        if not concurrency_symptom(seen.error):
            return
        use, session = shared_use(seen, tasks=False)
        if use is not None:
            seen.explain(self._report_use(use))
            return
        # No overlap was seen as it began (the failing thread noted its operation first
        # and was refused later, once the other had begun connecting): the threads that
        # used the session in this transaction explain it.
        record = process.records.get(id(session)) if session is not None else None
        if record is None or record.ref() is not session or async_owner(session) is not None:
            return
        threads = [f"thread {name}" for _, name in record.sharing.threads]
        if len(threads) < 2:
            return
        other = record.sharing.last_site
        factory = module_factory(seen.site, asynchronous=False)
        seen.explain(
            self.report(
                seen.site,
                key=("error", seen.site.key if seen.site is not None else None),
                subject="Session",
                related=[(other, "another thread's operation on the same session")]
                if other is not None and (seen.site is None or other.key != seen.site.key)
                else [],
                hint=_HINT.format(factory=factory),
                details={"threads": threads, "concurrent": True},
                what=(
                    f"Session used by several threads at once ({', '.join(threads)}): "
                    f"{type(seen.error).__name__} at {self.where(seen.site)} is SQLAlchemy "
                    "refusing an operation while another thread's operation on the same "
                    "session is in progress"
                ),
                fix=_FIX.format(factory=factory),
            )
        )
