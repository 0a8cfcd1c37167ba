"""SQD155: a session used again after a failed flush, without rollback()."""

from __future__ import annotations

import linecache
import re
from typing import Any

from sqlalchemy.exc import PendingRollbackError
from sqlalchemy.orm import Session

from sqla_doctor.findings import Severity
from sqla_doctor.runtime import source_blocks
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, ErrorSeen, FlushAfterFailure, OrmExecution
from sqla_doctor.runtime.detectors.session_leak import is_async_session, scoped_proxy
from sqla_doctor.runtime.errors import record_of
from sqla_doctor.runtime.unit_of_work import FailedFlush, SessionRecord, process, retry_fix


def _inactive(session: Any) -> bool:
    """Whether the session's transaction (or its SAVEPOINT) waits for rollback() (public
    API only)."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    return transaction is not None and not transaction.is_active


class SessionUsedAfterFailedFlush(Detector):
    """
    ## What it does
    Checks for a session used again after one of its flushes failed (an
    `IntegrityError` on `commit()`, say) without `session.rollback()` in between. It
    reports the line that used the session again, the flush that failed and its error
    class; a `PendingRollbackError` that reaches the end of the unit of work (from
    `commit()`, which runs no query) is explained the same way, with a note on the
    exception. A program that catches that one too and goes on (a worker's loop of
    `add()` and `commit()` whose `except Exception` logs and continues) is reported at
    the `add()` of the next object but one after the failure: `add()` itself raises
    nothing, and the `commit()` between them showed no event. When only one object was
    added since (the failure was the loop's last but one), it is reported where it was
    added as the failed transaction ends (`close()`, the end of the `with` block), unless
    a `PendingRollbackError` is on its way out then, which is explained where it was
    raised.

    A statement cancelled while the database ran it (`asyncio.timeout()` around an
    `await session.execute(...)`, a cancelled task) leaves the session the same way:
    SQLAlchemy invalidates its connection, and the next use raises `PendingRollbackError:
    Can't reconnect until invalid transaction is rolled back`. That use is reported
    with the cancelled statement's line.

    When the transaction had flushed rows before the one that failed (an import loop
    that skips the rows that fail), the fix named first is a SAVEPOINT per write:
    `rollback()` in the except block would make the session usable again but discard
    those earlier rows, which the failed flush rolled back with it.

    ## Why is this bad?
    When a flush fails, SQLAlchemy rolls the database transaction back, but the session
    keeps refusing work until the code acknowledges it with `rollback()`: every later
    query, lazy load or commit raises `PendingRollbackError: This Session's transaction
    has been rolled back due to a previous exception during flush`. Caught and ignored
    once, the first error turns every following request that shares the session into a
    failure far from its cause.

    ## Example
    ```python
    try:
        session.add(User(email=email))
        session.commit()
    except IntegrityError:
        log.warning("duplicate email")
    session.scalars(select(User)).all()  # PendingRollbackError
    ```

    Use instead:
    ```python
    try:
        session.add(User(email=email))
        session.commit()
    except IntegrityError:
        session.rollback()
        log.warning("duplicate email")
    session.scalars(select(User)).all()
    ```

    To keep the rest of the transaction, put the write that may fail in a SAVEPOINT:
    `with session.begin_nested(): session.add(user)`, and catch the error outside that
    block (caught inside it, the failed SAVEPOINT is still the session's transaction, and
    the message says so). A SAVEPOINT begun by a plain `session.begin_nested()` call
    stays failed until the program rolls it back: the message says to keep it
    (`savepoint = session.begin_nested()`) and call `savepoint.rollback()` in the except
    block. Under `AsyncSession` the fix is `await session.rollback()`.

    When PostgreSQL failed the flush as the loser of a deadlock or a serialization
    conflict (SQLSTATE class 40), the fix named is `rollback()` and a retry of the whole
    transaction: the same writes in a SAVEPOINT would collide again.

    A module-level `scoped_session` (a worker's `db_session`, Flask-SQLAlchemy's
    `db.session`) is named in the fix as the program spells it. When another function
    used it again (the next task of a worker thread got the failed session), the fix
    adds `db_session.remove()` at the end of each job.

    ## References
    - [PendingRollbackError](https://docs.sqlalchemy.org/en/20/errors.html#error-7s2a)
    - ["This Session's transaction has been rolled back due to a previous exception during flush"](https://docs.sqlalchemy.org/en/20/faq/sessions.html#this-session-s-transaction-has-been-rolled-back-due-to-a-previous-exception-during-flush-or-similar)
    - [Using SAVEPOINT](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#using-savepoint)
    """

    code = "SQD155"
    name = "session-used-after-failed-flush"
    pitfalls = ("P04",)
    severity = Severity.ERROR
    message = (
        "Session used again after {what} failed with {error} and was not rolled "
        "back — this raises PendingRollbackError; {fix}"
    )

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        # A dictionary lookup per execution; the rest only after a failed flush.
        record = process.records.get(execution.session_key)
        if record is None or execution.state is None:
            return
        if record.failed_flush is not None and _inactive(execution.state.session):
            self._report(execution.site, record, record.failed_flush)
        elif _cancelled_on(record):
            self._report_cancelled(execution.site, record)

    def on_flush_after_failure(self, flush: FlushAfterFailure) -> None:
        failed = flush.record.failed_flush
        if failed is not None and (flush.ended or _inactive(flush.session)):
            self._report(flush.site, flush.record, failed)

    def on_error(self, seen: ErrorSeen) -> None:
        if not isinstance(seen.error, PendingRollbackError):
            return
        for session in seen.locals_of_type(Session):
            record = record_of(self.uow, session)
            if record is not None and record.failed_flush is not None:
                seen.explain(self._report(seen.site, record, record.failed_flush))
                return
        for session in seen.locals_of_type(Session):
            record = record_of(self.uow, session)
            if record is not None and _cancelled_on(record):
                seen.explain(self._report_cancelled(seen.site, record))
                return

    def _report_cancelled(self, site: CallSite | None, record: SessionRecord) -> Any:
        assert record.cancelled is not None
        cancelled, error, _ = record.cancelled
        awaited = "await " if is_async_session(record) else ""
        rollback = f"{awaited}session.rollback()"
        what = f"its statement at {self.where(cancelled)}" if cancelled else "its statement"
        return self.report(
            site,
            key=(site.key if site is not None else None),
            subject="Session",
            related=[(cancelled, "this statement was cancelled")],
            hint=rollback,
            details={"error": error, "driver_error": None},
            what=what,
            error=error,
            fix=(
                "a cancellation (asyncio.timeout(), a cancelled task) makes SQLAlchemy "
                f"invalidate the connection the statement ran on: call {rollback} in the "
                "except block that caught it, or leave this session and use a new one"
            ),
        )

    def _report(self, site: CallSite | None, record: SessionRecord, failed: FailedFlush) -> Any:
        failed.reported = True
        related: list[tuple[CallSite | None, str]] = []
        flush = ""
        if failed.site is not None:
            flush = f" at {self.where(failed.site)}"
            related.append((failed.site, "this flush failed"))
        error = failed.error or "an exception"
        if failed.driver_error:
            error = f"{error} ({failed.driver_error})"
        in_async = is_async_session(record)
        awaited = "await " if in_async else ""
        # Flask-SQLAlchemy's db.session, a worker's module-level scoped_session: the fix
        # names it as the program does.
        proxy = scoped_proxy(failed.site, site)
        name = proxy.name if proxy is not None else "session"
        rollback = f"{awaited}{name}.rollback()"
        hint = rollback
        # An AsyncSession's begin_nested() is entered with `async with`.
        block = "async with" if in_async else "with"
        retry = retry_fix(failed.sqlstate, rollback)
        if retry is not None:
            # A deadlock or serialization failure: the other transaction won; the same
            # writes in a SAVEPOINT would collide again.
            fix = retry
        elif (
            proxy is not None
            and site is not None
            and failed.site is not None
            and (site.filename, site.function) != (failed.site.filename, failed.site.function)
        ):
            # Used again by another function: the next job or request of the same thread
            # got the scoped_session's failed session.
            fix = (
                f"{name} is a scoped_session, whose session outlived the "
                f"{failed.site.function}() whose flush failed: call {rollback} in the except "
                f"block that caught it, and `{awaited}{name}.remove()` when each job or "
                "request ends (a worker: in a finally block)"
            )
        elif failed.in_savepoint and _opened_without_with(failed.site):
            # `session.begin_nested()` called as a statement: nothing rolls the failed
            # SAVEPOINT back but the program.
            savepoint = f"savepoint = {awaited}{name}.begin_nested()"
            fix = (
                f"roll the failed SAVEPOINT back in the except block that caught the error "
                f"(`{savepoint}`, then `{awaited}savepoint.rollback()`), or use `{block} "
                f"{name}.begin_nested():` and catch the error outside that block"
            )
            hint = f"{awaited}savepoint.rollback()"
        elif failed.in_savepoint:
            # The SAVEPOINT is there already: the error was caught inside its block, where
            # the nested transaction is still the failed one.
            fix = (
                f"catch the error outside the `{block} {name}.begin_nested():` block, which "
                "then rolls back to the SAVEPOINT and leaves the session usable"
            )
        elif failed.earlier:
            # A loop that skips a failed row: rollback() would discard the rows flushed
            # before it too (the failed flush rolled the whole transaction back).
            written = ", ".join(f"{count} {what}" for what, count in failed.earlier.items())
            savepoint = f"{block} {name}.begin_nested():"
            fix = (
                f"put each write in a SAVEPOINT with `{savepoint}`, so that a failed one rolls "
                f"back alone; {rollback} in the except block would make the session usable "
                f"but discard what this transaction flushed before the failure ({written})"
            )
            hint = savepoint
        else:
            fix = (
                f"call {rollback} in the except block that caught it, or put the write in a "
                f"SAVEPOINT with `{block} {name}.begin_nested():`"
            )
        return self.report(
            site,
            key=(site.key if site is not None else None),
            subject="Session",
            related=related,
            hint=hint,
            details={"error": failed.error, "driver_error": failed.driver_error},
            what=f"its flush{flush}",
            error=error,
            fix=fix,
        )


def _cancelled_on(record: SessionRecord) -> bool:
    """Whether the session is still in the transaction a cancelled statement of its ran
    in (rollback() or close() ends it)."""
    if record.cancelled is None:
        return False
    session = record.ref()
    transaction = record.cancelled[2]()
    if session is None or transaction is None or session.get_transaction() is not transaction:
        record.cancelled = None
        return False
    return True


_BEGIN_NESTED = re.compile(r"\bbegin_nested\(")
# Lines read upwards from a failed flush to the begin_nested() of its SAVEPOINT, at most.
_MAX_LINES_UP = 40


def _opened_without_with(site: CallSite | None) -> bool:
    """Whether the nearest ``begin_nested()`` above the failed flush at ``site``, in its
    function, is a statement (``session.begin_nested()``, ``sp = session.begin_nested()``)
    rather than a ``with`` item. Read from the source only when reporting."""
    if site is None:
        return False
    floor = source_blocks.indent(linecache.getline(site.filename, site.lineno))
    for number in range(site.lineno - 1, max(site.lineno - _MAX_LINES_UP, 0), -1):
        text = linecache.getline(site.filename, number)
        stripped = text.strip()
        if stripped.startswith(source_blocks.SCOPES) and source_blocks.indent(text) < floor:
            return False
        if _BEGIN_NESTED.search(stripped.split("#", 1)[0]):
            return not stripped.startswith(source_blocks.WITHS)
    return False
