"""SQD159: one Session used by several threads inside one transaction, or at once."""

from __future__ import annotations

from typing import Any

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.detector import Detector, ErrorSeen, SharedUse
from sqla_doctor.runtime.detectors.session_shared_across_tasks import (
    concurrency_symptom,
    shared_use,
)

_FIX = (
    "give each thread its own session (`with session_factory() as session:` inside the "
    "thread, or a scoped_session); to hand a session to another thread, commit or close "
    "it first"
)
_HINT = "with session_factory() as session: ..."


class SessionSharedAcrossThreads(Detector):
    """
    ## What it does
    Checks for one `Session` used by several threads. It reports, with both threads'
    call sites:

    - **concurrent use**: an operation (a query, a lazy load, a flush, a commit, a
      begin) in one thread while another thread's statement on the same session is
      still running in the database driver;
    - **turns taken inside one transaction**: a thread uses the session again after
      another thread used it, with no commit, rollback or close in between (thread A,
      then B, then A again). Whether the two happened to overlap this time is luck.

    It stays silent for a session handed over: one thread uses it and then never again
    in that transaction, and another thread carries on (a job handing its session to a
    worker, a web framework running a dependency and its teardown in different
    threadpool threads); and for any thread that uses it after the transaction ended
    (commit, rollback or close), which starts afresh. `scoped_session` and one session
    per thread are never reported. Closing a session from another thread is not a use.

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
    Threads that take turns in one transaction strictly one after another, each waiting
    for the other (`run_in_threadpool` called several times on one session), are
    reported though they never overlap; commit between the turns, or keep the session's
    work in one thread.

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
        if not use.tasks:
            self._report_use(use)

    def _report_use(self, use: SharedUse) -> Any:
        here = self.where(use.site)
        other = self.where(use.other_site) if use.other_site is not None else "elsewhere"
        if use.concurrent:
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
        return self.report(
            use.site,
            key=frozenset(keys),
            subject="Session",
            related=[(use.other_site, note)],
            hint=_HINT,
            details={
                "thread": use.who,
                "other_thread": use.other,
                "concurrent": use.concurrent,
            },
            what=what,
            fix=_FIX,
        )

    def on_error(self, seen: ErrorSeen) -> None:
        if not concurrency_symptom(seen.error):
            return
        use, _ = shared_use(seen, tasks=False)
        if use is not None:
            seen.explain(self._report_use(use))
