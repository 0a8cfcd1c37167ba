"""SQD157: a pooled connection held while the code does something other than the database."""

from __future__ import annotations

import time

from sqlalchemy.pool import NullPool

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.detector import Detector, IdleGap
from sqla_doctor.runtime.row_locks import held_rows

_NEXT = {
    "statement": "the next statement",
    "commit": "commit",
    "rollback": "rollback/close",
    "checkin": "its return to the pool",
}
_FIX = (
    "no other request can use the connection meanwhile: make the slow call (HTTP request, "
    "sleep, file or queue I/O) before the session block, or commit()/close() before it and "
    "open a new session after, and keep transactions short"
)
# A Core Connection (``with engine.connect()`` / ``engine.begin()``) has no session.
_CONNECTION_FIX = (
    "no other request can use the connection meanwhile: make the slow call (HTTP request, "
    "sleep, file or queue I/O) before the `with engine.connect()` (or `engine.begin()`) "
    "block, or end that block (committed) before it and take a connection again after, "
    "and keep transactions short"
)


_NULL_POOL_FIX = (
    "with NullPool no other request waits for it, but the server keeps its backend and the "
    'open transaction (PostgreSQL shows "idle in transaction", holding its snapshot and '
    "locks) meanwhile: make the slow call before the {block}, or commit() before it "
    "and open a new {what} after"
)
_STREAMED_FIX = (
    'a server-side cursor holds its connection and transaction (PostgreSQL shows "idle in '
    'transaction") until its last row is read, so the slow work done per row keeps the '
    "connection from every other request: read the rows in keyset-paginated batches "
    "(WHERE id > :last ORDER BY id LIMIT n), each in its own short session, and do the slow "
    "work between them"
)
# Generous seconds per object for SQLAlchemy to build an entity from a row and add it to
# the identity map (measured at 10–40 µs): a gap shorter than that budget for the objects
# the last query added was spent building them.
_SECONDS_PER_LOADED_OBJECT = 1e-4


def _building_objects(idle: IdleGap) -> bool:
    """Whether the gap went into the objects of the last query's rows (``.all()`` of
    200,000 rows keeps its connection a few seconds without the program waiting on
    anything): SQLAlchemy has no event for the end of a result, but the session's
    identity map tells how many objects arrived since the query began."""
    checkout = idle.record
    if checkout.loaded_before < 0 or checkout.session_record is None:
        return False
    record = checkout.session_record()
    session = record.ref() if record is not None else None
    if record is None or session is None:
        return False
    objects = len(session.identity_map)
    built_into = record.identity_map
    if built_into is not None and built_into is not session.identity_map:
        # close() has replaced the map: the objects were built into the one it empties.
        objects = max(objects, len(built_into))
    return (objects - checkout.loaded_before) * _SECONDS_PER_LOADED_OBJECT >= idle.gap


class ConnectionHeldIdle(Detector):
    """
    ## What it does
    Checks for pooled connections that stay checked out while the program does something
    other than talk to the database: between the end of one statement and the next
    database activity on the same connection (the next statement, commit, rollback or
    close, the return to the pool) more than `held_connection_seconds` (1 s) pass. The
    finding points at the line that used the connection again and names the last query
    before the gap and how long it lasted.

    Time spent inside the database (a slow query) is not counted, nor is the time a
    statement cancelled by `asyncio.timeout()` runs on until its connection is closed
    (aiosqlite finishes it first), nor is time after the connection went back to the
    pool, nor the time a flush spends between its own statements (SQLAlchemy ordering a
    batch of thousands of new objects and building each INSERT's parameters, then
    updating the identity map): the clock stops when the
    flush begins and starts again when it is over, or, for the flush of a `commit()`,
    when the commit is over: a Session's connection goes back to the pool as its commit
    or rollback ends (after SQLAlchemy released and expired the session's objects).

    ## Why is this bad?
    A session holds its connection from its first query until commit, rollback or close.
    An HTTP call, a `sleep` or any slow non-database work in between keeps the connection
    out of the pool for its whole duration: under load, every request waiting on the
    slow service holds a connection, the pool runs dry and unrelated requests fail with
    `TimeoutError: QueuePool limit of size 5 overflow 10 reached`. With an open
    transaction the server also shows the connection as "idle in transaction", holding
    its locks. Rows the transaction locked before the gap (`with_for_update()`, `SELECT
    ... FOR UPDATE` or `FOR SHARE`) are named with the query that locked them: every other
    transaction that writes them (or, for `FOR UPDATE`, locks them) waits as long.

    Nor is the time SQLAlchemy spends building the objects of a large result (`.all()`
    of 200,000 rows): a gap after an ORM query is not reported when the session gained
    enough objects meanwhile to account for it (100 µs an object). The clock also stops
    when `close()` begins, before it detaches every object the session holds.

    A connection that ran PostgreSQL's `LISTEN` and waits for notifications outside a
    transaction is held on purpose, and is not reported (inside a transaction it is: the
    server delivers no notification until that transaction ends). Nor is one that keeps
    a session-level advisory lock (`pg_advisory_lock()`, `pg_try_advisory_lock()`, not
    yet unlocked) outside a transaction: a job's single-instance guard, held on purpose
    while the job's own short transactions run on other connections.

    Under `NullPool` (a worker that opens a connection per task) no request waits for
    the pool; the message says what the gap costs there instead: the server's backend and
    the open transaction.

    An ORM query read through a server-side cursor (`yield_per`, `stream_results`,
    `AsyncSession.stream()`) holds its connection and transaction until its last row is
    read: a loop that does slow work per row is reported at that query, and the fix is
    keyset-paginated batches, each in its own short session (a `commit()` or `close()`
    inside the loop would end the cursor it reads).

    ## Known problems
    A connection still idle when the unit of work ends is reported as a leak (SQD151,
    SQD154) rather than here. Rows a query returns that are not new objects (rows of
    tuples, objects already in the session, a result consumed one row at a time whose
    objects were dropped on the way) are not counted, so a result that slow to read is
    still reported.

    ## Example
    ```python
    async with SessionLocal() as session:
        user = await session.get(User, user_id)
        profile = await http.get(f"https://api.example.com/profiles/{user.email}")
        user.avatar = profile.json()["avatar"]
        await session.commit()
    ```

    Use instead:
    ```python
    async with SessionLocal() as session:
        user = await session.get(User, user_id)
        email = user.email
    profile = await http.get(f"https://api.example.com/profiles/{email}")
    async with SessionLocal() as session:
        user = await session.get(User, user_id)
        user.avatar = profile.json()["avatar"]
        await session.commit()
    ```

    ## References
    - [Session basics: when do I construct a Session, when do I commit it](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#when-do-i-construct-a-session-when-do-i-commit-it-and-when-do-i-close-it)
    - [QueuePool limit reached (3o7r)](https://docs.sqlalchemy.org/en/20/errors.html#error-3o7r)
    """

    code = "SQD157"
    name = "connection-held-idle"
    pitfalls = ("P07",)
    severity = Severity.WARNING
    message = (
        "{holder} held its {connection} idle for {gap:.2f}s (threshold {threshold:g}s) "
        "after {last} until {next} — {fix}"
    )

    def on_connection_idle(self, idle: IdleGap) -> None:
        threshold = self.config.held_connection_seconds
        if idle.gap < threshold or _building_objects(idle):
            return
        record = idle.record
        if (record.listening or record.advisory_locks) and (
            not record.transaction_began
            or record.transaction_began > time.perf_counter() - idle.gap
        ):
            # A LISTEN connection waiting for notifications, or one keeping a
            # session-level advisory lock (a job's single-instance guard), outside a
            # transaction: held on purpose, and no transaction is open on the server.
            return
        # Rounded once: the message and the details show the same number.
        gap = round(idle.gap, 2)
        site = idle.site
        last_site = idle.last_site
        holder = "Session" if record.session_owned else "Connection"
        last = f"the query at {self.where(last_site)}" if last_site else "its last statement"
        if record.session_owned:
            block, what = "session block", "session"
            fix, hint = _FIX, "do the slow work before the session block, or commit/close first"
        else:
            block, what = "connection's `with` block", "connection"
            fix = _CONNECTION_FIX
            hint = "do the slow work outside the connection's block, or end the block first"
        connection = "pooled connection"
        pool = record.pool() if record.pool is not None else None
        if isinstance(pool, NullPool):
            # No pool to drain: what the gap costs is the server's backend and transaction.
            connection = "connection (NullPool: its own)"
            fix = _NULL_POOL_FIX.format(block=block, what=what)
        if record.streamed:
            # commit() or close() would end the server-side cursor the loop still reads.
            last = f"the streamed query (yield_per/stream_results) at {self.where(last_site)}"
            fix, hint = _STREAMED_FIX, "keyset batches, each in its own short session"
        opened = record.opened[0] if record.opened else None
        related = [
            (last_site, "last query before the gap"),
            (opened, "connection checked out here"),
        ]
        if record.locked_rows is not None and not record.streamed:
            # The transaction is still open: its row locks are held for the whole gap.
            fix = (
                f"{fix}; {held_rows(record.locked_rows, self.where, 'meanwhile')}: take the "
                "lock after the slow call, just before the writes it protects"
            )
            lock_site, lock = record.locked_rows
            if lock_site != last_site:
                related.append((lock_site, f"rows locked here ({lock})"))
        following = _NEXT.get(idle.resumed, idle.resumed)
        if site is not None:
            following = f"{following} at {self.where(site)}"
        # A streamed query is read by the loop that does the slow work: point at it.
        at = (last_site or site) if record.streamed else (site or last_site)
        self.report(
            at,
            # One finding per line the wait is reported at: a loop's first gap (after the
            # query before it) and its next ones (after its own last statement) are one.
            key=(at.key if at else None, idle.resumed),
            subject=holder,
            related=related,
            hint=hint,
            details={
                "idle_seconds": gap,
                "threshold_seconds": threshold,
                "last_query": self.where(last_site) if last_site else None,
                "resumed_by": idle.resumed,
                "streamed": record.streamed,
            },
            holder=holder,
            gap=gap,
            threshold=threshold,
            last=last,
            next=following,
            connection=connection,
            fix=fix,
        )
