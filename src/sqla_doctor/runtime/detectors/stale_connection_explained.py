"""SQD452: a query failed on a pooled connection the database had already closed."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, ErrorSeen
from sqla_doctor.runtime.engine_site import engine_created_at, engine_factory

_FIX = (
    "create the engine with pool_pre_ping=True (a cheap ping at checkout replaces dead "
    "connections) and pool_recycle below the server's or proxy's idle timeout"
)
# pool_pre_ping is on: the ping at checkout passed, so the connection died after it.
_PRE_PING_FIX = (
    "pool_pre_ping is on already and tests a connection only at checkout: this one died "
    "while checked out (mid-transaction), so catch this error around the whole transaction "
    "and retry it from the start with a new session"
)


class StaleConnectionExplained(Detector):
    """
    ## What it does
    Explains an `OperationalError` (or another DBAPI error) that SQLAlchemy recognised as
    a disconnect (`connection_invalidated` is true): the pool handed out a connection
    the database server had already closed, and the statement at the reported line was
    the first to find out. The explanation is added to the exception's traceback as a
    note and reported as a finding, while the error is raised: a retry loop or a web
    framework that catches it does not hide it. With asyncpg too, whose driver errors
    SQLAlchemy emulates.

    When the engine is a module-level global of the program (`engine =
    create_engine(...)`), the finding also points at that line, where
    `pool_pre_ping=True` goes; an engine made elsewhere is not looked for. When the
    engine has `pool_pre_ping=True` already, the connection died after the ping at
    checkout (mid-transaction), and the fix named is retrying the whole transaction.

    ## Why is this bad?
    Pooled connections live for hours; servers, proxies (PgBouncer, cloud load
    balancers) and administrators close them sooner: a restart or failover, an idle
    timeout, `pg_terminate_backend`. Without a check at checkout, the first request to
    reuse each dead connection fails with `server closed the connection unexpectedly`
    or `SSL SYSCALL error: EOF detected`; SQLAlchemy then discards the connection (and,
    for that error, every connection of the pool older than it), so the failures come in
    bursts after each server event, in production only.

    ## Example
    ```python
    engine = create_engine("postgresql+psycopg://app@db/app")
    ```

    Use instead:
    ```python
    engine = create_engine("postgresql+psycopg://app@db/app", pool_pre_ping=True)
    ```

    ## References
    - [Dealing with disconnects](https://docs.sqlalchemy.org/en/20/core/pooling.html#dealing-with-disconnects)
    - [Pessimistic disconnect handling: pool_pre_ping](https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-pessimistic)
    """

    code = "SQD452"
    name = "stale-connection-explained"
    pitfalls = ("P21",)
    severity = Severity.ERROR
    message = (
        "{error} at {site}: the database had closed this pooled connection before the "
        "statement ran (server restart, idle timeout, terminated backend, proxy) — {fix}"
    )

    def on_error(self, seen: ErrorSeen) -> None:
        error = seen.error
        if not isinstance(error, DBAPIError) or not error.connection_invalidated:
            return
        # The class names only: the message may quote the statement's parameters.
        driver = type(error.orig)
        related: list[tuple[CallSite | None, str]] = []
        engine = _engine_of(seen)
        # No public accessor: create_engine(pool_pre_ping=True) sets the pool's _pre_ping.
        pre_ping = bool(getattr(getattr(engine, "pool", None), "_pre_ping", False))
        created = engine_created_at(engine)
        if created is not None and not pre_ping:
            related.append((created, "the engine is created here: add pool_pre_ping=True"))
        seen.explain(
            self.report(
                seen.site,
                key=seen.site.key if seen.site is not None else type(error).__name__,
                subject="Pool",
                related=related,
                hint=(
                    "retry the whole transaction"
                    if pre_ping
                    else f"{engine_factory(engine)}(..., pool_pre_ping=True)"
                ),
                details={
                    "error": type(error).__name__,
                    "driver_error": f"{driver.__module__}.{driver.__qualname__}",
                    "pre_ping": pre_ping,
                },
                error=type(error).__name__,
                site=self.where(seen.site),
                fix=_PRE_PING_FIX if pre_ping else _FIX,
            )
        )


def _engine_of(seen: ErrorSeen) -> Any:
    """The engine whose connection failed, from SQLAlchemy's own frames."""
    for connection in seen.locals_of_type(Connection):
        return connection.engine
    for engine in seen.locals_of_type(Engine):
        return engine
    return None
