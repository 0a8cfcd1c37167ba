"""SQD451: a connection pool close to exhaustion, and who holds its connections."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool

from sqla_doctor.findings import Severity
from sqla_doctor.runtime import pool_fill
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Checkin, Detector, ErrorSeen, PoolCheckout
from sqla_doctor.runtime.engine_site import engine_created_at
from sqla_doctor.runtime.pool_fill import Fill
from sqla_doctor.runtime.unit_of_work import CheckoutRecord, process

# How many holders a message names; details list up to _MAX_DETAILED.
_MAX_NAMED = 5
_MAX_DETAILED = 50
_MAX_PENDING = 16
# SQLAlchemy's message: "QueuePool limit of size 5 overflow 10 reached, connection timed
# out, timeout 30.00".
_LIMIT = re.compile(r"QueuePool limit of size (\d+) overflow (-?\d+) reached")
_FIX = (
    "close sessions before slow work and return connections early (see SQD157, SQD160), "
    "fix leaks (SQD151, SQD154), or size pool_size + max_overflow for the concurrency "
    "(`sqla-doctor pool`)"
)


class PoolSaturation(Detector):
    """
    ## What it does
    Warns when a checkout leaves a `QueuePool` with `pool_saturation_ratio` (80 %) or
    more of its capacity (`pool_size + max_overflow`) checked out and it stays that way:
    one of those connections is still out `held-connection-seconds` (1 s) later. It
    names who holds each connection, the checkout that filled the pool included: the
    line that checked it out, whether a Session or a Connection holds it, for how long,
    how long it has sat idle since its last query, and the thread or asyncio task that
    holds it. A pool that short queries fill for an instant, as any busy service's does, is
    not reported; at least two connections must be out at once (a pool of one used by
    one thread is always "full" and never waited for). Also warns when holders take
    turns: no one keeps a connection that long, but the pool has stayed full for
    `held-connection-seconds` because every connection returned went at once to a
    checkout waiting for it (six requests holding 0.6 s each on a pool of two wait up to
    1.2 s for a connection); that is told by the checkout that finds the pool full that
    long, or else by the last holders giving their connections back (four jobs of 0.8 s
    on a pool of two: full for 1.6 s). When a checkout fails with
    `TimeoutError: QueuePool limit of size N overflow M reached`, explains the error
    with the same list of holders: as it reaches the end of a unit of work or the
    program, or a log record, and, for a session's checkout, as the session's `with`
    block closes it on the error's way out, so that a worker thread which catches it
    (and returns its name, or retries) still gets the explanation. When the engine is a
    module-level global of the program (`engine = create_engine(...)`), the finding also
    points at that line, where `pool_size` and `max_overflow` go.

    ## Why is this bad?
    Once every connection is checked out, the next checkout waits `pool_timeout` (30 s)
    and then fails: requests hang, then error, and the error names the pool, not the
    code holding its connections. Saturation is usually not a pool too small but
    connections held too long: sessions open across HTTP calls, transactions left open,
    sessions never closed.

    ## Example
    ```python
    engine = create_engine(url, pool_size=2, max_overflow=0)

    def handler(user_id):
        session = Session(engine)  # never closed: one connection gone per call
        return session.get(User, user_id)
    ```

    Use instead:
    ```python
    def handler(user_id):
        with Session(engine) as session:
            return session.get(User, user_id)
    ```

    ## References
    - [QueuePool limit reached (3o7r)](https://docs.sqlalchemy.org/en/20/errors.html#error-3o7r)
    - [Connection pooling](https://docs.sqlalchemy.org/en/20/core/pooling.html)
    """

    code = "SQD451"
    name = "pool-saturation"
    pitfalls = ("P08",)
    severity = Severity.WARNING
    message = "{what} — held by: {holders} — {fix}"

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        # Saturations not judged yet, one per pool: (when, its checkout, what, who held).
        self.pending: dict[int, tuple[float, CheckoutRecord, str, list[CheckoutRecord]]] = {}

    def on_pool_saturated(self, saturation: PoolCheckout) -> None:
        fill = saturation.fill
        if fill is not None and fill.handoffs:
            self._taking_turns(saturation, fill)
        key = id(saturation.pool)
        if key in self.pending or len(self.pending) >= _MAX_PENDING:
            return
        record = saturation.record
        site = record.opened[0] if record.opened else None
        what = (
            f"pool of {saturation.name} at {saturation.checked_out}/{saturation.capacity} "
            f"connections (pool_size {saturation.size} + max_overflow "
            f"{saturation.max_overflow}) after the checkout at {self.where(site)}"
        )
        holders = process.holders(saturation.pool)
        self.pending[key] = (time.perf_counter(), record, what, holders)
        shape = (saturation.size, saturation.max_overflow)
        if shape in _last_full or len(_last_full) < _MAX_SHAPES:
            _last_full[shape] = holders

    def _taking_turns(self, saturation: PoolCheckout, fill: Fill) -> None:
        # No holder kept its connection long, but the pool has been full all along: each
        # returned connection went straight to a checkout that was waiting for it.
        full_for = time.perf_counter() - fill.since
        if full_for < self.config.held_connection_seconds or not pool_fill.claim(fill):
            return
        record = saturation.record
        site = record.opened[0] if record.opened else None
        what = (
            f"pool of {saturation.name} has been full ({saturation.checked_out}/"
            f"{saturation.capacity} connections, pool_size {saturation.size} + max_overflow "
            f"{saturation.max_overflow}) for {full_for:.2f}s, its holders taking turns: "
            f"{fill.handoffs} checkout(s) waited for a connection another one returned, "
            f"the last at {self.where(site)}"
        )
        holders = [r for r in process.holders(saturation.pool) if r is not record]
        # This checkout has only just got its connection: the others are the news.
        key = ("turns", id(saturation.pool), fill.since)
        self._report(site, key, what, holders, "turns", pool=saturation.pool)

    def on_checkin(self, checkin: Checkin) -> None:
        # The last holders gave their connections back with nobody waiting any more: no
        # checkout after the threshold was there to see how long the pool stayed full
        # (four jobs of 0.8 s on a pool of two: full for 1.6 s, the waiters served at 0.8 s).
        fill = checkin.ended
        if fill is None or not fill.handoffs or fill.label is None:
            return
        full_for = fill.returned_at - fill.since
        if full_for < self.config.held_connection_seconds or not pool_fill.claim(fill):
            return
        name, size, max_overflow = fill.label
        capacity = size + max_overflow
        site = fill.last_site
        what = (
            f"pool of {name} has been full ({capacity}/{capacity} connections, pool_size "
            f"{size} + max_overflow {max_overflow}) for {full_for:.2f}s, its holders taking "
            f"turns: {fill.handoffs} checkout(s) waited for a connection another one "
            f"returned, the last at {self.where(site)}"
        )
        pool = fill.pool()
        holders = [checkin.record, *(process.holders(pool) if pool is not None else [])]
        self._report(site, ("turns", id(pool), fill.since), what, holders, "turns", pool=pool)

    def checkpoint(self) -> None:
        # A full pool matters when it stays full: one of the connections held on for
        # `held-connection-seconds` after it filled (requests would queue behind it). A
        # busy service whose short queries fill the pool for an instant says nothing.
        now = time.perf_counter()
        threshold = self.config.held_connection_seconds
        for key, (since, record, what, holders) in list(self.pending.items()):
            ends = [r.returned_at if r.returned else now for r in holders]
            if any(end - since >= threshold for end in ends):
                del self.pending[key]
                # The saturating checkout is the message's subject; the others are named.
                others = [r for r in holders if r is not record]
                site = record.opened[0] if record.opened else None
                pool = record.pool() if record.pool is not None else None
                self._report(
                    site, ("saturated", key), what, others, "saturated", this=record, pool=pool
                )
            elif all(r.returned for r in holders):
                del self.pending[key]

    def on_error(self, seen: ErrorSeen) -> None:
        error = seen.error
        if not isinstance(error, PoolTimeoutError):
            return
        match = _LIMIT.search(str(error))
        if match is None:
            return
        size, overflow = int(match.group(1)), int(match.group(2))
        # A timeout that reaches the top of an asyncio program is explained after
        # asyncio.run() cancelled the tasks that held the connections: then the holders
        # are those of the last time a pool of that shape filled up.
        holders = _holders_of_limit(size, overflow) or _last_full.get((size, overflow), [])
        what = (
            f"checkout at {self.where(seen.site)} timed out: QueuePool limit of size {size} "
            f"overflow {overflow} reached"
        )
        pool = next(iter(seen.locals_of_type(QueuePool)), None)
        key = ("timeout", size, overflow)
        seen.explain(self._report(seen.site, key, what, holders, "timeout", pool=pool))

    def _report(
        self,
        site: Any,
        key: Any,
        what: str,
        holders: list[CheckoutRecord],
        event: str,
        this: CheckoutRecord | None = None,
        pool: Any = None,
    ) -> Any:
        """Report ``what``, naming ``holders``; ``this`` is the checkout the message is
        about (its line is in ``what``), which holds a connection too."""
        now = time.perf_counter()
        described = [self._describe(record, now) for record in holders[:_MAX_DETAILED]]
        named = "; ".join(described[:_MAX_NAMED]) or "nobody any more (all returned since)"
        if len(holders) > _MAX_NAMED:
            named += f"; and {len(holders) - _MAX_NAMED} more"
        details: dict[str, Any] = {"holders": described, "event": event}
        if this is not None:
            # The saturating checkout is one of the holders: a pool at 2/2 named only one.
            own = self._state(this, now)
            details["checkout"] = own
            if holders:
                others = f"{len(holders)} other{'s' if len(holders) > 1 else ''}"
                named = f"this checkout {own} and {others}: {named}"
            else:
                named = f"this checkout {own}"
        related: list[tuple[CallSite | None, str]] = [
            (record.opened[0], "holds a connection")
            for record in holders[:_MAX_NAMED]
            if record.opened
        ]
        created = engine_created_at(pool=pool) if pool is not None else None
        if created is not None:
            related.append(
                (created, "the engine is created here: pool_size and max_overflow go there")
            )
        return self.report(
            site,
            key=key,
            subject="Pool",
            related=related,
            hint="return connections sooner (close sessions before slow work)",
            details=details,
            what=what,
            holders=named,
            fix=_FIX,
        )

    def _describe(self, record: CheckoutRecord, now: float) -> str:
        opened = record.opened[0] if record.opened else None
        where = f"{self.where(opened)} in {opened.function}" if opened else "an unknown line"
        return f"{where} {self._state(record, now)}"

    def _state(self, record: CheckoutRecord, now: float) -> str:
        """``(Session, held 2.00s, idle 1.99s since the query at app.py:12; thread T)``."""
        holder = "Session" if record.session_owned else "Connection"
        end = record.returned_at if record.returned else now
        text = f"({holder}, held {end - record.checked_out_at:.2f}s"
        if record.returned:
            last = f" after its query at {self.where(record.last_site)}" if record.last_site else ""
            text += f", then returned{last}"
        elif record.idle_since:
            last = f" since the query at {self.where(record.last_site)}" if record.last_site else ""
            text += f", idle {now - record.idle_since:.2f}s{last}"
        elif record.transaction_began:
            text += ", running a statement"
        elif record.session_owned and record.last_site:
            # Its Session's transaction is over (commit, rollback, close), the connection
            # not back in the pool yet: holders taking turns are often caught there.
            text += f", giving it back after its query at {self.where(record.last_site)}"
        elif record.last_site:
            text += ", running a statement"
        return f"{text}; {record.holder})"


# (pool_size, max_overflow) -> who held the connections the last time a pool of that
# shape filled up, across units of work.
_last_full: dict[tuple[int, int], list[CheckoutRecord]] = {}
_MAX_SHAPES = 16


def _held() -> list[CheckoutRecord]:
    # list() of a dict's values is one C call: safe against other threads' checkouts.
    return [r for r in list(process.checkouts.values()) if not r.returned]


def _holders_of_limit(size: int, overflow: int) -> list[CheckoutRecord]:
    """Holders of the pools the timeout message can be about: full ones of that shape."""
    pools: dict[int, Any] = {}
    for record in _held():
        pool = record.pool() if record.pool is not None else None
        # max_overflow is private to QueuePool (see listeners._on_engine_connect).
        if (
            isinstance(pool, QueuePool)
            and pool.size() == size
            and getattr(pool, "_max_overflow", overflow) == overflow
        ):
            pools[id(pool)] = pool
    holders: list[CheckoutRecord] = []
    full = [p for p in pools.values() if p.checkedout() >= size + overflow]
    for pool in full or pools.values():
        holders.extend(process.holders(pool))
    return sorted(holders, key=lambda r: r.checked_out_at)
