"""SQD453: an async engine given a database URL whose driver is not async."""

from __future__ import annotations

import inspect
import sys
from types import CodeType
from typing import Final

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InvalidRequestError

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.detector import Detector, ErrorSeen, a_or_an

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
# create_engine() itself: the frame whose locals say what an async engine was to use.
_CREATE_ENGINE: Final[CodeType] = inspect.unwrap(create_engine).__code__
_NOT_INSTALLED = " (not installed; an async engine could not use it anyway)"


def _entry_points() -> dict[CodeType, str]:
    """What the program may have called to make an async engine, by code object.

    Imported only once the program imported the asyncio extension (an error from it
    means it did): importing it costs every program that does not use it.
    """
    from sqlalchemy.ext import asyncio

    functions = {
        "create_async_engine()": asyncio.create_async_engine,
        "async_engine_from_config()": asyncio.async_engine_from_config,
        "AsyncEngine()": asyncio.AsyncEngine.__init__,
        "create_async_pool_from_url()": getattr(asyncio, "create_async_pool_from_url", None),
    }
    return {
        inspect.unwrap(function).__code__: name
        for name, function in functions.items()
        if function is not None
    }


def _sync_driver_missing(seen: ErrorSeen) -> tuple[str, str] | None:
    """``(backend, driver)`` when an async engine's sync driver failed to import.

    The default driver of a URL without one (``postgresql://`` is psycopg2 on SQLAlchemy
    2.0) is often not installed in an async program: ``create_engine()`` then raises
    ``ModuleNotFoundError`` on importing it, before the async check would have. Its
    ``dialect_cls`` local is the dialect chosen; ``_is_async`` says an async engine asked,
    and an async dialect (asyncpg's, psycopg's async variant) missing its driver is not
    this mistake.
    """
    if not isinstance(seen.error, ImportError):
        return None
    for frame in seen.frames():
        if frame.f_code is not _CREATE_ENGINE:
            continue
        names = frame.f_locals
        dialect = names.get("dialect_cls")
        if names.get("_is_async") is not True or not isinstance(dialect, type):
            return None
        if getattr(dialect, "is_async", True) is not False:
            return None
        return str(getattr(dialect, "name", "?")), str(getattr(dialect, "driver", "?"))
    return None


def _called(seen: ErrorSeen) -> str:
    """The outermost of SQLAlchemy's async engine entry points the error went through."""
    entry_points = _entry_points()
    for frame in reversed(seen.frames()):
        name = entry_points.get(frame.f_code)
        if name is not None:
            return name
    return "create_async_engine()"


class SyncDriverInAsyncEngineExplained(Detector):
    """
    ## What it does
    Explains why an async engine would not start because its URL selects a sync
    driver: `InvalidRequestError: The asyncio extension requires an async driver to be
    used`, and the `ModuleNotFoundError` raised instead when that sync driver is not
    installed either (`No module named 'psycopg2'` from `create_async_engine(
    "postgresql://...")` on SQLAlchemy 2.0). It names the backend, the sync driver the
    URL selected, what the program called (`create_async_engine()`,
    `async_engine_from_config()`, or `AsyncEngine()` around an engine made by
    `create_engine()`) and where, and the URL schemes of the async drivers for that
    backend. The URL itself is never shown (it may hold a password).

    A URL without a driver selects the backend's default: `sqlite://` the standard
    library's sqlite3, `mysql://` and `mariadb://` mysqlclient, `mssql://` pyodbc. On
    SQLAlchemy 2.0 `postgresql://` is psycopg2 and `oracle://` cx_Oracle, neither async.
    On 2.1 they are psycopg (3) and python-oracledb, which have async variants that
    `create_async_engine()` picks by itself: those URLs work there, given the driver.

    ## Why is this bad?
    `create_async_engine()` needs a driver that talks to the database without blocking
    the event loop. A URL without a driver, or with a sync one, fails at start-up, and
    the error does not say which scheme to write instead (a missing psycopg2 suggests
    installing it, which only trades that error for the one about async); swapping in a
    sync engine to make it start blocks the event loop on every query.

    ## Known problems
    A missing async driver (`postgresql+asyncpg://` without asyncpg installed) is not
    this mistake and is left to its own error.

    ## Example
    ```python
    engine = create_async_engine("mysql://app@db/app")  # mysqlclient: not async
    ```

    Use instead:
    ```python
    engine = create_async_engine("mysql+aiomysql://app@db/app")
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
    message = "{called} at {site} got {given} the sync driver {driver!r}{missing} — {fix}"

    def on_error(self, seen: ErrorSeen) -> None:
        if "sqlalchemy.ext.asyncio" not in sys.modules:
            return
        error = seen.error
        missing = ""
        if isinstance(error, InvalidRequestError) and _NOT_ASYNC in str(error):
            engine = next(seen.locals_of_type(Engine), None)
            if engine is None:
                return
            backend, driver = engine.dialect.name, engine.dialect.driver
        else:
            chosen = _sync_driver_missing(seen)
            if chosen is None:
                return
            (backend, driver), missing = chosen, _NOT_INSTALLED
        called = _called(seen)
        if called == "AsyncEngine()":
            given = f"an Engine whose {backend} URL selects"
        else:
            given = f"{a_or_an(backend)} URL that selects"
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
                called=called,
                site=self.where(seen.site),
                given=given,
                missing=missing,
                driver=driver,
                fix=fix,
            )
        )
