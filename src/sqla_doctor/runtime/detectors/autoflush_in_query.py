"""SQD153: a query that first flushed pending objects (autoflush)."""

from __future__ import annotations

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, Flush

_MAX_NAMED = 4


class AutoflushInQuery(Detector):
    """
    ## What it does
    Checks for queries (including lazy loads and `session.get()` misses) that made the
    session flush pending objects before running: an INSERT issued from a line that only
    meant to read.

    ## Why is this bad?
    Autoflush writes objects the moment anything queries, whether or not they are
    complete. An `IntegrityError` ("NOT NULL constraint failed") then surfaces at the
    query, far from the code that built the object, and a half-built row is written
    before the code that would have finished it runs. A read that writes also takes
    write locks earlier than expected (`database is locked` on SQLite).

    When the autoflush fails (`IntegrityError: NOT NULL constraint failed` raised from
    the query line, for an object not finished yet), the finding says so, even if the
    program catches the error.

    ## Known problems
    Often the autoflush is what the code relies on, to find the new rows with the query.
    Then flush explicitly where the write belongs, which documents it, or allow the line
    with `# noqa: SQD153`.

    ## Example
    ```python
    order = Order(customer=customer)
    session.add(order)
    total = session.scalar(select(func.sum(Item.price)))  # INSERTs the order first
    order.total = total
    ```

    Use instead:
    ```python
    with session.no_autoflush:
        order = Order(customer=customer)
        session.add(order)
        order.total = session.scalar(select(func.sum(Item.price)))
    session.flush()
    ```

    ## References
    - [Session basics: autoflush](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#session-flushing)
    - [Session.no_autoflush](https://docs.sqlalchemy.org/en/20/orm/session_api.html#sqlalchemy.orm.Session.no_autoflush)
    """

    code = "SQD153"
    name = "autoflush-in-query"
    pitfalls = ("P23",)
    severity = Severity.INFO
    message = (
        "query at {site} autoflushed {count} pending object(s) ({entities}) before running — {fix}"
    )

    def on_after_flush(self, flush: Flush) -> None:
        self._report(
            flush,
            "flush explicitly where the write belongs, or build the objects inside "
            "`with session.no_autoflush:`",
        )

    def on_autoflush_failed(self, flush: Flush) -> None:
        error = flush.record.failed_flush
        name = error.error if error is not None and error.error else "an error"
        self._report(
            flush,
            f"the flush failed with {name}: those objects were not complete yet; set "
            "their values before querying, or build them inside "
            "`with session.no_autoflush:` and flush once they are",
        )

    def _report(self, flush: Flush, fix: str) -> None:
        execution = flush.autoflush_of
        if execution is None or not flush.inserted or execution.site is None:
            return
        site = execution.site
        count = sum(flush.inserted.values())
        entities = ", ".join(f"{n} {name}" for name, n in list(flush.inserted.items())[:_MAX_NAMED])
        added_sites: list[tuple[CallSite | None, str]] = []
        for added in list(flush.record.pending.values())[:_MAX_NAMED]:
            if added.site is not None and added.site != site:
                added_sites.append((added.site, f"{added.entity} added here"))
        self.report(
            site,
            key=site.key,
            subject=", ".join(flush.inserted),
            related=added_sites,
            hint="session.flush() where the write belongs, or `with session.no_autoflush:`",
            details={"inserted": dict(flush.inserted)},
            site=self.where(site),
            count=count,
            entities=entities,
            fix=fix,
        )
