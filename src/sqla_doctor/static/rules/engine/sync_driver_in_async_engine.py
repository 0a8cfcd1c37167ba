"""SQD402: ``create_async_engine()`` given a URL whose driver is synchronous."""

from __future__ import annotations

import ast
import re
from functools import cached_property

from sqla_doctor.findings import Applicability, Edit, Fix, Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to
from sqla_doctor.static.strings import StringFlow, StringPrefix
from sqla_doctor.static.syntax import call_keyword, source_segment

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\+([A-Za-z0-9_]+))?$")
# Drivers that only speak blocking DB-API (SQLAlchemy's dialects and common third-party
# ones such as cockroachdb+psycopg2).
SYNC_DRIVERS = frozenset(
    {
        "psycopg2", "psycopg2cffi", "pg8000", "pymysql", "mysqldb", "mysqlconnector",
        "mariadbconnector", "cymysql", "pyodbc", "pymssql", "mssqlpython", "pysqlite",
        "pysqlcipher", "cx_oracle",
    }
)
# What a dialect without "+driver" loads on SQLAlchemy 2.0. (2.1 made plain postgresql://
# load psycopg 3, which has an async variant; oracle:// loads oracledb, which does too.)
DEFAULT_SYNC_DRIVER = {
    "postgresql": "psycopg2",
    "mysql": "mysqldb",
    "mariadb": "mysqldb",
    "sqlite": "pysqlite",
    "mssql": "pyodbc",
}
# The async driver closest to each sync one: same connection arguments where possible
# (psycopg 3 keeps libpq's `sslmode=` and friends, aiomysql wraps PyMySQL, aioodbc pyodbc).
ASYNC_REPLACEMENT = {
    ("postgresql", ""): "postgresql+psycopg",
    ("postgresql", "psycopg2"): "postgresql+psycopg",
    ("postgresql", "psycopg2cffi"): "postgresql+psycopg",
    ("postgresql", "pg8000"): "postgresql+psycopg",
    ("mysql", ""): "mysql+aiomysql",
    ("mysql", "pymysql"): "mysql+aiomysql",
    ("mysql", "mysqldb"): "mysql+aiomysql",
    ("mysql", "mysqlconnector"): "mysql+aiomysql",
    ("mariadb", ""): "mariadb+aiomysql",
    ("mariadb", "pymysql"): "mariadb+aiomysql",
    ("mariadb", "mysqldb"): "mariadb+aiomysql",
    ("sqlite", ""): "sqlite+aiosqlite",
    ("sqlite", "pysqlite"): "sqlite+aiosqlite",
    ("mssql", ""): "mssql+aioodbc",
    ("mssql", "pyodbc"): "mssql+aioodbc",
    ("oracle", "cx_oracle"): "oracle+oracledb",
}


def scheme_of(prefix: StringPrefix) -> tuple[str, str, str] | None:
    """``("postgresql+psycopg2", "postgresql", "psycopg2")`` from a URL's literal start."""
    text = prefix.text
    if "://" not in text:
        return None
    scheme = text.split("://", 1)[0].strip()
    match = _SCHEME.match(scheme)
    if match is None:
        return None
    return scheme, match.group(1).lower(), (match.group(2) or "").lower()


class SyncDriverInAsyncEngine(Rule):
    """
    ## What it does
    Checks for `create_async_engine()` given a database URL whose driver is synchronous.

    That is `postgresql+psycopg2://`, `mysql+pymysql://`, `sqlite:///app.db`,
    `mssql+pyodbc://`, `oracle+cx_oracle://`, and plain `postgresql://`, `mysql://`,
    `sqlite://`, `mssql://`, which load a synchronous default driver.

    The URL is followed through names assigned in the file (`DATABASE_URL = "..."`), f-strings
    and concatenations whose scheme is literal (`f"postgresql://{user}@{host}/db"`),
    `URL.create("postgresql+psycopg2", ...)`, `make_url()`, `.set(drivername=...)` and
    `.replace("postgresql://", "postgresql+asyncpg://")`. A URL from the environment or
    settings is not knowable and stays silent.

    ## Why is this bad?
    The asyncio extension drives the DB-API through greenlets and needs a driver whose
    I/O is awaitable. With a blocking driver the engine fails as soon as it is created:
    `InvalidRequestError: The asyncio extension requires an async driver to be used. The
    loaded 'psycopg2' is not async.` — typically at application start-up in the one
    environment whose URL was written by hand.

    ## Example
    ```python
    engine = create_async_engine("postgresql+psycopg2://app:secret@db/app")
    ```

    Use instead:
    ```python
    engine = create_async_engine("postgresql+psycopg://app:secret@db/app")
    # or "postgresql+asyncpg://app:secret@db/app"
    ```

    ## Known problems
    Plain `postgresql://` is reported because SQLAlchemy 2.0 loads psycopg2 for it;
    SQLAlchemy 2.1 loads psycopg 3, which works. Spell the driver out either way.

    ## Fix safety
    Unsafe: the fix swaps the driver in the URL literal (psycopg2 → psycopg 3, which keeps
    libpq's connection parameters such as `sslmode`; PyMySQL/mysqlclient → aiomysql;
    pysqlite → aiosqlite; pyodbc → aioodbc; cx_Oracle → python-oracledb). The new driver
    must be installed, and driver-specific `connect_args` or URL query parameters may need
    adjusting.

    ## References
    - [Asynchronous I/O (asyncio)](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html)
    - [PostgreSQL drivers](https://docs.sqlalchemy.org/en/20/dialects/postgresql.html#dialect-postgresql)
    - [Database URLs](https://docs.sqlalchemy.org/en/20/core/engines.html#database-urls)
    """

    code = "SQD402"
    name = "sync-driver-in-async-engine"
    pitfalls = ("P09",)
    severity = Severity.ERROR
    fix = Applicability.UNSAFE
    message = (
        "`create_async_engine()` given `{scheme}://`{where}, which uses the synchronous "
        "driver {driver} — use an async driver{suggestion}"
    )

    VALID = (
        Valid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            a = create_async_engine("postgresql+asyncpg://app@db/app")
            b = create_async_engine("postgresql+psycopg://app@db/app")
            c = create_async_engine("postgresql+psycopg_async://app@db/app")
            d = create_async_engine("sqlite+aiosqlite:///./app.db")
            e = create_async_engine("mysql+aiomysql://app@db/app")
            f = create_async_engine("mysql+asyncmy://app@db/app")
            g = create_async_engine("mssql+aioodbc://app@dsn")
            h = create_async_engine("oracle+oracledb://app@db/orcl")
            """
        ),
        # URLs from configuration are not knowable.
        Valid(
            """
            import os
            from sqlalchemy.ext.asyncio import create_async_engine
            from app.config import settings, DATABASE_URL
            a = create_async_engine(os.environ["DATABASE_URL"])
            b = create_async_engine(settings.database_url)
            c = create_async_engine(DATABASE_URL)
            d = create_async_engine(os.getenv("DATABASE_URL", "sqlite:///dev.db"))
            """
        ),
        # The common rewrite of a sync URL into an async one.
        Valid(
            """
            from sqlalchemy.engine import make_url
            from sqlalchemy.ext.asyncio import create_async_engine
            SYNC_URL = "postgresql://app@db/app"
            ASYNC_URL = SYNC_URL.replace("postgresql://", "postgresql+asyncpg://")
            engine = create_async_engine(ASYNC_URL)
            other = create_async_engine(make_url(SYNC_URL).set(drivername="postgresql+asyncpg"))
            """
        ),
        # A synchronous engine may use a synchronous driver.
        Valid(
            """
            from sqlalchemy import create_engine
            engine = create_engine("postgresql+psycopg2://app@db/app")
            """
        ),
        # Another library's create_async_engine, and a driver we do not know.
        Valid(
            """
            from mylib import create_async_engine as make
            from sqlalchemy.ext.asyncio import create_async_engine
            a = make("postgresql+psycopg2://app@db/app")
            b = create_async_engine("cockroachdb+asyncpg://root@db:26257/app")
            c = create_async_engine(f"{DRIVER}://app@db/app")
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine("postgresql+psycopg2://app:secret@db/app")
            """,
            expected_message=(
                "`create_async_engine()` given `postgresql+psycopg2://`, which uses the "
                "synchronous driver psycopg2 — use an async driver: `postgresql+psycopg://`"
            ),
            expected_fix="""
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine("postgresql+psycopg://app:secret@db/app")
            """,
        ),
        # A module constant, an f-string with a literal scheme.
        Invalid(
            """
            import os
            from sqlalchemy.ext.asyncio import create_async_engine
            DATABASE_URL = f"sqlite:///{os.getenv('DB_PATH', 'app.db')}"
            engine = create_async_engine(DATABASE_URL, echo=False)
            """,
            expected_message=(
                "`create_async_engine()` given `sqlite://` (line 3), which uses the "
                "synchronous driver pysqlite — use an async driver: `sqlite+aiosqlite://`"
            ),
            line=4,
            expected_fix="""
            import os
            from sqlalchemy.ext.asyncio import create_async_engine
            DATABASE_URL = f"sqlite+aiosqlite:///{os.getenv('DB_PATH', 'app.db')}"
            engine = create_async_engine(DATABASE_URL, echo=False)
            """,
        ),
        Invalid(
            """
            import sqlalchemy.ext.asyncio as sa_async
            def make(user, password, host):
                url = "mysql+pymysql://" + user + ":" + password + "@" + host + "/shop"
                return sa_async.create_async_engine(url, pool_recycle=3600)
            """,
            expected_fix="""
            import sqlalchemy.ext.asyncio as sa_async
            def make(user, password, host):
                url = "mysql+aiomysql://" + user + ":" + password + "@" + host + "/shop"
                return sa_async.create_async_engine(url, pool_recycle=3600)
            """,
        ),
        Invalid(
            """
            from sqlalchemy import URL
            from sqlalchemy.ext.asyncio import create_async_engine
            url = URL.create("postgresql+psycopg2", username="app", host="db", database="app")
            engine = create_async_engine(url)
            """,
            expected_fix="""
            from sqlalchemy import URL
            from sqlalchemy.ext.asyncio import create_async_engine
            url = URL.create("postgresql+psycopg", username="app", host="db", database="app")
            engine = create_async_engine(url)
            """,
        ),
        # Plain postgresql:// loads psycopg2 on SQLAlchemy 2.0; .format() keeps the scheme.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine(
                "postgresql://{}:{}@{}/{}".format(USER, PASSWORD, HOST, NAME),
                pool_pre_ping=True,
            )
            """,
            line=2,
            expected_message=(
                "`create_async_engine()` given `postgresql://` (line 3), which uses the "
                "synchronous driver psycopg2 on SQLAlchemy 2.0 (2.1 defaults to psycopg 3, "
                "which is async-capable) — use an async driver: `postgresql+psycopg://`"
            ),
        ),
        # One branch of a conditional URL (tests) uses the synchronous driver.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
            def build(testing: bool):
                if testing:
                    url = "sqlite://"
                else:
                    url = "postgresql+asyncpg://app@db/app"
                engine = create_async_engine(url)
                return async_sessionmaker(engine, expire_on_commit=False)
            """,
            line=7,
        ),
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine("mssql+pymssql://sa:pw@db/app")
            """,
            expected_message=(
                "`create_async_engine()` given `mssql+pymssql://`, which uses the synchronous "
                "driver pymssql — use an async driver"
            ),
        ),
        # make_url() and a keyword url=.
        Invalid(
            """
            from sqlalchemy import make_url
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine(url=make_url("mysql://app@db/app"))
            """,
        ),
    )

    @cached_property
    def strings(self) -> StringFlow:
        return StringFlow(self.ctx.dataflow)

    @calls_to(named=("create_async_engine",))
    def visit_Call(self, node: ast.Call) -> None:
        url = node.args[0] if node.args else None
        if url is None:
            keyword = call_keyword(node, "url")
            url = keyword.value if keyword is not None else None
        if url is None:
            return
        sync: list[tuple[StringPrefix, str, str, str]] = []
        for prefix in self.strings.prefixes(url):
            parsed = scheme_of(prefix)
            if parsed is None:
                continue
            scheme, dialect, driver = parsed
            used = driver or DEFAULT_SYNC_DRIVER.get(dialect, "")
            if used in SYNC_DRIVERS:
                sync.append((prefix, scheme, dialect, driver))
        if not sync:
            return
        prefix, scheme, dialect, driver = sync[0]
        replacement = ASYNC_REPLACEMENT.get((dialect, driver))
        edits = tuple(
            edit
            for candidate, cand_scheme, cand_dialect, cand_driver in sync
            if (target := ASYNC_REPLACEMENT.get((cand_dialect, cand_driver))) is not None
            and (edit := self._scheme_edit(candidate, cand_scheme, target)) is not None
        )
        used = driver or DEFAULT_SYNC_DRIVER[dialect]
        if (dialect, driver) == ("postgresql", ""):
            used += " on SQLAlchemy 2.0 (2.1 defaults to psycopg 3, which is async-capable)"
        line = getattr(prefix.node, "lineno", node.lineno)
        self.report(
            node,
            scheme=scheme,
            where=f" (line {line})" if line != node.lineno else "",
            driver=used,
            suggestion=f": `{replacement}://`" if replacement else "",
            fix=Fix(
                description=f"use the {replacement} driver",
                edits=edits,
                applicability=Applicability.UNSAFE,
            )
            if edits and replacement
            else None,
            hint="async drivers: asyncpg or psycopg (PostgreSQL), aiomysql or asyncmy (MySQL, "
            "MariaDB), aiosqlite (SQLite), aioodbc (SQL Server), oracledb (Oracle)",
        )

    def _scheme_edit(self, prefix: StringPrefix, scheme: str, target: str) -> Edit | None:
        """Replace ``scheme`` inside the literal it was read from."""
        segment = source_segment(self.ctx, prefix.node)
        offset = segment.find(scheme)
        if offset < 0:
            return None
        line, col, _, _ = self.ctx.span(prefix.node)
        before = segment[:offset]
        if "\n" in before:
            line += before.count("\n")
            col = len(before) - before.rfind("\n") - 1
        else:
            col += offset
        return Edit(line, col, line, col + len(scheme), target)
