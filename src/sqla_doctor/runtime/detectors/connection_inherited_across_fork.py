"""SQD166: a forked process used a pooled connection its parent opened."""

from __future__ import annotations

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, InheritedConnection
from sqla_doctor.runtime.engine_site import engine_created_at

_SERVER = (
    "both processes now hold the same connection, one socket and one server session, so "
    'their statements and results interleave on the wire (wrong rows, "SSL error: '
    'decryption failed or bad record mac", "server closed the connection unexpectedly", '
    "hangs) and the first to close it ends the other's session"
)
_SQLITE = (
    "SQLite's file locks belong to the process that opened the database, so a connection "
    "carried across fork() lets both processes think they hold the lock, and their writes "
    "can corrupt the file"
)
_CLOSED = (
    "closing it ends the parent's server session too (the driver says goodbye to the "
    "server on the socket both processes share), so the parent's next statement on it "
    'fails with "server closed the connection unexpectedly"'
)
_CLOSE_FIX = (
    "pass close=False: engine.dispose(close=False) drops the inherited pool without "
    "touching the parent's connections, and this process opens its own"
)
_FIX = (
    "call engine.dispose(close=False) first thing in each child (multiprocessing's "
    "Pool(initializer=...), gunicorn's post_fork, Celery's worker_process_init) so it "
    "opens connections of its own, or create the engine after the fork"
)


class ConnectionInheritedAcrossFork(Detector):
    """
    ## What it does
    Checks for a process that checks out a pooled connection another process opened:
    the program forked (`multiprocessing` with the `fork` start method, `os.fork()`, a
    pre-forking server such as gunicorn without `--preload` care, Celery's prefork pool)
    while the engine's pool held a connection, and the child used it. Reported once per
    connection in each child, at the child's line that checked it out, with the line
    where the parent opened it and, for a module-level engine, the line that
    creates it.

    A child that calls `engine.dispose(close=False)` before its first query, or that
    creates its own engine, opens connections of its own and is not reported; neither is
    an in-memory SQLite database (a `StaticPool` or `SingletonThreadPool` connection),
    which the child gets a copy of.

    A child that closes a server database's connection its parent opened is reported
    too, at its line: `engine.dispose()` without `close=False` (the fix people try
    first) closes every connection in the inherited pool, and the driver's goodbye on
    the shared socket ends the parent's server session. Closing a SQLite connection
    releases only the child's own locks and is not reported.

    ## Why is this bad?
    A forked child gets a copy of every open file descriptor, so the parent's and the
    child's copies of a DBAPI connection talk to the database over one socket, in one
    server session. Their statements and results interleave: a process reads the other's
    rows, the TLS stream breaks (`SSL error: decryption failed or bad record mac`), the
    server sees garbage and closes the connection (`server closed the connection
    unexpectedly`), or both hang. When one process closes or garbage-collects its copy,
    the other's session ends under it. With SQLite, POSIX file locks are per process:
    a connection carried across `fork()` can let two processes write at once, which
    corrupts the database. The failures are intermittent and depend on timing, so they
    show up under production load.

    ## Example
    ```python
    engine = create_engine("postgresql+psycopg://app@db/app")
    warm_up(engine)  # the pool now holds a connection

    def work(item):
        with Session(engine) as session:  # the child checks out the parent's connection
            ...

    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(work, items)
    ```

    Use instead:
    ```python
    def init():
        engine.dispose(close=False)  # drop the inherited pool, leave the parent's connections open

    with multiprocessing.get_context("fork").Pool(4, initializer=init) as pool:
        pool.map(work, items)
    ```

    ## Known problems
    A connection is attributed to the first process seen checking it out, so a
    connection opened before the doctor was installed and inherited before any watched
    checkout is not reported in that child (only in the children of a process that used
    it under watch). The connection was already shared when this is reported: the
    finding explains the failures that follow, it does not prevent them.

    ## References
    - [Using connection pools with multiprocessing or os.fork()](https://docs.sqlalchemy.org/en/20/core/pooling.html#using-connection-pools-with-multiprocessing-or-os-fork)
    - [How to use SQLite with fork()](https://www.sqlite.org/howtocorrupt.html#_carrying_an_open_database_connection_across_a_fork_)
    """

    code = "SQD166"
    name = "connection-inherited-across-fork"
    pitfalls = ("P33",)
    severity = Severity.ERROR
    message = "Pooled connection inherited across fork: {what} — {why} — {fix}"

    def on_connection_inherited(self, inherited: InheritedConnection) -> None:
        site = inherited.site
        related: list[tuple[CallSite | None, str]] = []
        if inherited.opened_at is not None:
            related.append((inherited.opened_at, "the parent process opened the connection here"))
        created = engine_created_at(pool=inherited.pool)
        if created is not None:
            related.append(
                (
                    created,
                    "the engine is created here, before the fork: each process needs its own pool",
                )
            )
        if inherited.closing:
            what = (
                f"this process closed, at {self.where(site)}, a pooled connection its parent "
                "process opened"
            )
            why, fix, hint = _CLOSED, _CLOSE_FIX, "engine.dispose(close=False)"
        else:
            what = (
                f"this process checked out, at {self.where(site)}, a connection its parent "
                "process opened"
            )
            why = _SQLITE if inherited.sqlite else _SERVER
            fix, hint = _FIX, "engine.dispose(close=False) at the start of each child"
        self.report(
            site,
            key=("inherited", inherited.closing, site.key if site is not None else None),
            subject="Pool",
            related=related,
            hint=hint,
            details={
                "opened_by_pid": inherited.opened_by,
                "sqlite": inherited.sqlite,
                "event": "close" if inherited.closing else "checkout",
            },
            what=what,
            why=why,
            fix=fix,
        )
