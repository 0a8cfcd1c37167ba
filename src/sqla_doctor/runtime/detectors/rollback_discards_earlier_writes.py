"""SQD165: rollback() after one row's failed flush discards the rows flushed before it."""

from __future__ import annotations

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.callsite import find as find_call_site
from sqla_doctor.runtime.detector import Detector, Flush, TransactionEnd
from sqla_doctor.runtime.detectors.session_leak import is_async_session, scoped_proxy
from sqla_doctor.runtime.unit_of_work import SessionRecord


class RollbackDiscardsEarlierWrites(Detector):
    """
    ## What it does
    Checks for `session.rollback()` called after a flush failed (an `IntegrityError` on
    a duplicate row, say) in a transaction whose earlier flushes had written rows, when
    the program then goes on with the session: it flushes or commits again. It reports
    the `rollback()` line, the flush that failed, what the transaction had written
    before it, and where the session was used again.

    A rollback that ends the work (followed by `raise`, a `return` or the end of the
    session) is left alone, and so is a failure inside `begin_nested()`, which rolls
    back to its SAVEPOINT only.

    ## Why is this bad?
    When a flush fails, SQLAlchemy rolls the whole database transaction back, and
    `rollback()` makes that final: every row the transaction had flushed before, not
    only the one that failed, is gone. An import loop that flushes each row to catch its
    `IntegrityError`, rolls back and continues commits only the rows after the last
    failure, and says nothing about the others.

    ## Example
    ```python
    for name in names:
        session.add(Tag(name=name))
        try:
            session.flush()
        except IntegrityError:
            session.rollback()  # also discards every Tag flushed before this one
    session.commit()
    ```

    Use instead:
    ```python
    for name in names:
        try:
            with session.begin_nested():  # a SAVEPOINT: a failure rolls back this row only
                session.add(Tag(name=name))
        except IntegrityError:
            pass
    session.commit()
    ```

    ## References
    - [Using SAVEPOINT](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#using-savepoint)
    - ["This Session's transaction has been rolled back due to a previous exception during flush"](https://docs.sqlalchemy.org/en/20/faq/sessions.html#this-session-s-transaction-has-been-rolled-back-due-to-a-previous-exception-during-flush-or-similar)
    """

    code = "SQD165"
    name = "rollback-discards-earlier-writes"
    pitfalls = ("P04",)
    severity = Severity.ERROR
    message = (
        "{rollback} after the flush{flush} failed with {error} discarded what this "
        "transaction had flushed before it ({written}), not only the row that failed; "
        "the session {went_on} — {fix}"
    )

    def on_after_flush(self, flush: Flush) -> None:
        self._went_on(flush.record, flush.site, "wrote again")

    def on_after_transaction_end(self, end: TransactionEnd) -> None:
        if end.outcome == "commit" and end.record.failed_flush is not None:
            # The commit() is on the stack (TransactionEnd looks only a close's up).
            self._went_on(end.record, find_call_site(1), "committed")

    def _went_on(self, record: SessionRecord, site: CallSite | None, how: str) -> None:
        failed = record.failed_flush
        if failed is None or failed.discarded_at is None:
            return
        rollback_site, failed.discarded_at = failed.discarded_at, None
        in_async = is_async_session(record)
        proxy = scoped_proxy(failed.site, rollback_site)
        name = proxy.name if proxy is not None else "session"
        rollback = f"{'await ' if in_async else ''}{name}.rollback()"
        block = f"{'async with' if in_async else 'with'} {name}.begin_nested():"
        error = failed.error or "an exception"
        if failed.driver_error:
            error = f"{error} ({failed.driver_error})"
        written = ", ".join(f"{count} {what}" for what, count in failed.earlier.items())
        related: list[tuple[CallSite | None, str]] = [
            (failed.site, "this flush failed"),
            (site, f"the session {how} here"),
        ]
        fix = (
            f"put each row's write in a SAVEPOINT, `{block}`, and catch the error outside "
            "that block: a failed row then rolls back alone and the session stays usable, "
            f"without {rollback}"
        )
        self.report(
            rollback_site,
            key=rollback_site.key,
            subject="Session",
            related=related,
            hint=block,
            details={"error": failed.error, "driver_error": failed.driver_error},
            rollback=rollback,
            flush=f" at {self.where(failed.site)}" if failed.site is not None else "",
            error=error,
            written=written,
            went_on=f"{how} at {self.where(site)}" if site is not None else how,
            fix=fix,
        )
