"""SQD160: a database transaction left open past ``idle_transaction_seconds``."""

from __future__ import annotations

import time

from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, TransactionSpan
from sqla_doctor.runtime.row_locks import held_rows
from sqla_doctor.runtime.unit_of_work import CheckoutRecord

_ENDED = {
    "commit": "until commit",
    "rollback": "until rollback/close",
    "checkin": "until the pool took the connection back",
}
_FIX = (
    "commit (or roll back) as soon as the database work is done and do slow work outside "
    "the transaction; on PostgreSQL, `idle_in_transaction_session_timeout` bounds the damage"
)
# Busy all along: a batch (thousands of INSERTs in one flush) rather than slow work.
_BUSY_SHARE = 0.1
_BUSY_FIX = (
    "one transaction for the whole batch holds its locks (and on PostgreSQL its snapshot) "
    "that long: commit in chunks of a few thousand rows, each in a transaction of its own"
)


def _one_slow_read(duration: float, longest: float, wrote: bool, config: RuntimeConfig) -> bool:
    """A transaction that wrote nothing and is past the threshold only by its longest
    statement (one slow report query): committing sooner cannot shorten a statement, and
    a read holds its snapshot as long in any transaction."""
    return not wrote and duration - longest < config.idle_transaction_seconds


class TransactionOpenTooLong(Detector):
    """
    ## What it does
    Checks for database transactions, a Session's or a Core connection's, that stay open
    longer than `idle_transaction_seconds` (5 s): from the `BEGIN` that the first
    statement started to the commit, rollback or close that ended it, or still open when
    the unit of work ends. The finding points at the line that began the transaction
    and says where it ended, how long it was open, and its longest idle stretch: after
    its last statement, or between two statements (slow work after a read, before the
    write that the commit flushes), with the statement it followed.

    ## Why is this bad?
    An open transaction keeps its connection out of the pool and its locks held: rows it
    updated stay locked for every other writer, and on PostgreSQL its snapshot keeps
    `VACUUM` from removing dead rows, so tables and indexes bloat. The server lists such
    a connection as "idle in transaction"; enough of them and the pool is drained, or the
    server kills them (`idle_in_transaction_session_timeout`) and the program fails on
    its next query.

    The idle time is that of all the gaps between its statements together: a loop that
    makes a short slow call per row (60 ms of HTTP for each of a hundred rows) idles as
    long as one long call. A transaction that was busy all along (idle for less than a
    tenth of its time: a batch of thousands of INSERTs flushed at once) is told to commit
    in chunks instead. A transaction that wrote nothing and is past the threshold only by
    the time of its longest statement (one slow report query in a short transaction) is
    not reported: committing sooner would not shorten that statement, whose plan
    (`EXPLAIN ANALYZE`) is the place to look.

    ## Known problems
    A long batch job that keeps one transaction on purpose is reported too: allow it with
    `# noqa: SQD160` on the reported line, or raise the threshold. Connections in
    `AUTOCOMMIT` isolation (as an execution option or `create_engine(isolation_level=...)`)
    open no server transaction and are never reported.

    ## Example
    ```python
    with SessionLocal() as session:
        order = session.get(Order, order_id)
        order.status = "paid"
        session.flush()
        receipt = payment_gateway.capture(order.payment_id)  # seconds, with the row locked
        order.receipt = receipt.id
        session.commit()
    ```

    Use instead:
    ```python
    receipt = payment_gateway.capture(payment_id)
    with SessionLocal.begin() as session:
        order = session.get(Order, order_id)
        order.status = "paid"
        order.receipt = receipt.id
    ```

    ## References
    - [Managing transactions](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html)
    - [PostgreSQL: idle_in_transaction_session_timeout](https://www.postgresql.org/docs/current/runtime-config-client.html#GUC-IDLE-IN-TRANSACTION-SESSION-TIMEOUT)
    - [PostgreSQL: pg_stat_activity](https://www.postgresql.org/docs/current/monitoring-stats.html#MONITORING-PG-STAT-ACTIVITY-VIEW)
    """

    code = "SQD160"
    name = "transaction-open-too-long"
    pitfalls = ("P34",)
    severity = Severity.WARNING
    message = (
        "{holder} transaction that began at {began} was open {duration:.2f}s (threshold "
        "{threshold:g}s), {spent}, {ended} — {fix}"
    )

    def on_connection_transaction_end(self, span: TransactionSpan) -> None:
        if span.duration < self.config.idle_transaction_seconds:
            return
        site = span.site
        ended = _ENDED.get(span.outcome, span.outcome)
        if site is not None:
            ended = f"{ended} at {self.where(site)}"
        if _one_slow_read(span.duration, span.longest_statement, span.wrote, self.config):
            return
        self._report(
            span.record,
            span.began_site,
            span.last_site,
            span.duration,
            (span.idle, span.idle_site),
            span.idle_total,
            ended,
            site,
            span.locked_rows,
        )

    def end(self) -> None:
        now = time.perf_counter()
        threshold = self.config.idle_transaction_seconds
        for record in list(self.uow.checkouts.values()):
            began = record.transaction_began
            if record.returned or not began or now - began < threshold:
                continue
            if _one_slow_read(now - began, record.longest_statement, record.wrote(), self.config):
                continue
            ended = "and was still open at the end of the unit of work"
            self._report(
                record,
                record.transaction_site,
                record.last_site,
                now - began,
                record.idle_stretch(now),
                record.idle_time(now),
                ended,
                None,
                record.locked_rows,
            )

    def _report(
        self,
        record: CheckoutRecord,
        began: CallSite | None,
        last: CallSite | None,
        duration: float,
        idle_gap: tuple[float, CallSite | None],
        idle_total: float,
        ended: str,
        ended_site: CallSite | None,
        locked: tuple[CallSite | None, str] | None,
    ) -> None:
        holder = "Session" if record.session_owned else "Connection"
        threshold = self.config.idle_transaction_seconds
        # Rounded once: the message and the details show the same numbers.
        duration, idle = round(duration, 2), round(idle_gap[0], 2)
        total = round(max(idle_total, idle_gap[0]), 2)
        after = idle_gap[1]
        if after is None or after == last:
            after_text = "its last statement"
            if last is not None:
                after_text += f" at {self.where(last)}"
            related = [(last, "last statement in the transaction")]
        else:
            # An earlier gap was the longest: slow work between two statements.
            after_text = f"the statement at {self.where(after)}"
            related = [(after, "idle after this statement"), (last, "last statement")]
        spent = f"{idle:.2f}s of it idle after {after_text}"
        if total >= idle + max(_BUSY_SHARE * idle, 0.01):
            # Many waits (a slow call per row): their sum is what the transaction idled.
            longest = f"after the statement at {self.where(after)}" if after else after_text
            spent = (
                f"{total:.2f}s of it idle between statements (the longest stretch {idle:.2f}s, "
                f"{longest})"
            )
        fix = _FIX
        hint = "commit before slow work, or do it before the transaction begins"
        if total < _BUSY_SHARE * duration:
            # No slow work to move out: the statements themselves took that long.
            spent = f"busy all along (its longest idle stretch {idle:.2f}s)"
            fix = _BUSY_FIX
            hint = "commit in chunks: one transaction per few thousand rows"
            related = [(last, "last statement in the transaction")]
        elif locked is not None:
            fix = f"{fix}; {held_rows(locked, self.where, 'until the transaction ends')}"
            related.append((locked[0], f"rows locked here ({locked[1]})"))
        self.report(
            began or ended_site or last,
            key=(began.key if began else id(record), ended_site.key if ended_site else None),
            subject=holder,
            related=[*related, (ended_site, "ended here")],
            hint=hint,
            details={
                "open_seconds": duration,
                "idle_seconds": idle,
                "idle_total_seconds": total,
                "threshold_seconds": threshold,
                "began": self.where(began) if began else None,
                "ended": self.where(ended_site) if ended_site else None,
            },
            holder=holder,
            began=self.where(began),
            duration=duration,
            threshold=threshold,
            spent=spent,
            ended=ended,
            fix=fix,
        )
