"""SQD453: create_async_engine() given a database URL whose driver is not async."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidRequestError

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.detector import Detector, ErrorSeen

# SQLAlchemy's wording since 1.4: "The asyncio extension requires an async driver to be
# used. The loaded 'psycopg2' is not async."
_NOT_ASYNC = "asyncio extension requires an async driver"
# The async drivers SQLAlchemy ships a dialect for, by backend.
_ASYNC_DRIVERS = {
    "postgresql": ("postgresql+asyncpg://", "postgresql+psycopg://"),
    "sqlite": ("sqlite+aiosqlite://",),
    "mysql": ("mysql+aiomysql://", "mysql+asyncmy://"),
    "mariadb": ("mariadb+aiomysql://", "mariadb+asyncmy://"),
    "mssql": ("mssql+aioodbc://",),
    "oracle": ("oracle+oracledb:// (python-oracledb's async mode)",),
}


class SyncDriverInAsyncEngineExplained(Detector):
    """
    ## What it does
    Explains `InvalidRequestError: The asyncio extension requires an async driver to be
    used`: it names the backend and the sync driver the URL selected (`postgresql://`
    means psycopg2, `sqlite://` the standard library's sqlite3, `mysql://` mysqlclient),
    the line that called `create_async_engine()`, and the URL schemes of the async
    drivers for that backend. The URL itself is never shown (it may hold a password).

    ## Why is this bad?
    `create_async_engine()` needs a driver that talks to the database without blocking
    the event loop. A URL without a driver, or with a sync one, fails at start-up, and
    the error does not say which scheme to write instead; swapping in a sync engine to
    make it start blocks the event loop on every query.

    ## Example
    ```python
    engine = create_async_engine("postgresql://app@db/app")  # psycopg2: not async
    ```

    Use instead:
    ```python
    engine = create_async_engine("postgresql+asyncpg://app@db/app")
    ```

    The static rule SQD402 finds the same URL in source when it is written out.

    ## References
    - [Asynchronous I/O (asyncio)](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html)
    - [Dialects: supported drivers](https://docs.sqlalchemy.org/en/20/dialects/index.html)
    """

    code = "SQD453"
    name = "sync-driver-in-async-engine-explained"
    pitfalls = ("P09",)
    severity = Severity.ERROR
    message = (
        "create_async_engine() at {site} got a {backend} URL that selects the sync driver "
        "{driver!r} — {fix}"
    )

    def on_error(self, seen: ErrorSeen) -> None:
        error = seen.error
        if not isinstance(error, InvalidRequestError) or _NOT_ASYNC not in str(error):
            return
        engine = next(seen.locals_of_type(Engine), None)
        if engine is None:
            return
        backend, driver = engine.dialect.name, engine.dialect.driver
        schemes = _ASYNC_DRIVERS.get(backend)
        if schemes:
            fix = f"name an async driver in the URL: {' or '.join(schemes)}"
        else:
            fix = f"name an async driver for {backend} in the URL (dialect+driver://)"
        seen.explain(
            self.report(
                seen.site,
                key=seen.site.key if seen.site is not None else (backend, driver),
                subject="Engine",
                hint=schemes[0] if schemes else None,
                details={"backend": backend, "driver": driver},
                site=self.where(seen.site),
                backend=backend,
                driver=driver,
                fix=fix,
            )
        )
