"""SQD403: a pooled engine for a server database without ``pool_pre_ping``."""

from __future__ import annotations

import ast
import re
from functools import cached_property

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to
from sqla_doctor.static.rules.engine._sqlite import sqlite_engine
from sqla_doctor.static.strings import StringFlow
from sqla_doctor.static.syntax import (
    assigned_name,
    call_keyword,
    has_star_kwargs,
    is_false_literal,
)

_ENGINE_FACTORIES = frozenset({"create_engine", "create_async_engine"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\+[A-Za-z0-9_]+)?$")
SERVER_DIALECTS = {
    "postgresql": "PostgreSQL",
    "postgres": "PostgreSQL",
    "cockroachdb": "CockroachDB",
    "redshift": "Redshift",
    "mysql": "MySQL",
    "mariadb": "MariaDB",
    "mssql": "SQL Server",
    "oracle": "Oracle",
}
_MYSQL = frozenset({"mysql", "mariadb"})
# Pools that keep connections open between checkouts; any other poolclass (NullPool,
# StaticPool, SingletonThreadPool, a custom one) is left alone.
_QUEUE_POOLS = frozenset({"QueuePool", "AsyncAdaptedQueuePool"})
# Options only a server database's pool is tuned with.
_ONE_SHOT_FOLDERS = frozenset({"scripts", "benchmarks"})
_POOL_SIZING = ("pool_size", "max_overflow", "pool_timeout", "pool_use_lifo")
# Connection arguments of network drivers (libpq, asyncpg, PyMySQL, pyodbc).
_SERVER_CONNECT_ARGS = frozenset(
    {
        "sslmode", "ssl", "sslrootcert", "sslcert", "sslkey", "application_name", "options",
        "connect_timeout", "keepalives", "keepalives_idle", "server_settings",
        "command_timeout", "statement_cache_size", "prepare_threshold", "charset",
        "read_timeout", "write_timeout", "host", "port",
    }
)
_URL_WORDS = {
    "postgres": "postgresql", "postgresql": "postgresql", "pg": "postgresql",
    "psql": "postgresql", "mysql": "mysql", "mariadb": "mariadb", "mssql": "mssql",
    "oracle": "oracle",
}
_WORD = re.compile(r"[A-Za-z]+")


class MissingPoolPrePing(Rule):
    """
    ## What it does
    Checks for engines of a server database created without `pool_pre_ping=True`.

    That is `create_engine()` / `create_async_engine()` for PostgreSQL, MySQL, MariaDB,
    SQL Server, Oracle, CockroachDB or Redshift with the default queue pool and no
    `pool_pre_ping=True` — for MySQL and MariaDB, no `pool_recycle` either.

    The database is known from a literal URL scheme (also through names, f-strings and
    `URL.create()`, or as the default of `os.getenv()`), or, when the URL comes from
    configuration, from what only a server database is configured with: pool sizing
    (`pool_size`, `max_overflow`, ...), network `connect_args` (`sslmode`,
    `server_settings`, ...), a host in the URL text, or a setting named for the database
    (`settings.POSTGRES_DSN`). An engine whose URL is unknown and that has none of these
    stays silent.

    Left alone: SQLite (its URL, `connect_args={"check_same_thread": ...}`, or a
    `creator` / `async_creator` that names SQLite), `poolclass=NullPool`/`StaticPool`,
    `pool_pre_ping=<anything but False>`, `**engine_options`, and engines that do not
    live long enough for their connections to go stale: one its function disposes
    (`finally: engine.dispose()`), one its function only reads `engine.dialect` of (to
    compile DDL for that database, never connecting), test code (`tests/`, `test_*.py`,
    `conftest.py`) and the programs of `scripts/` and `benchmarks/` folders.

    ## Why is this bad?
    The pool keeps connections open between requests. Servers, proxies, load balancers and
    firewalls close idle connections (MySQL's `wait_timeout` after 8 hours, cloud load
    balancers after minutes; failovers and restarts close all of them), and the pool does
    not notice: the next checkout hands out a dead connection and the request fails with
    `OperationalError: server closed the connection unexpectedly`, `SSL SYSCALL error: EOF
    detected` or `MySQL server has gone away`.

    ## Example
    ```python
    engine = create_engine("postgresql+psycopg://app@db/app", pool_size=10)
    ```

    Use instead:
    ```python
    engine = create_engine("postgresql+psycopg://app@db/app", pool_size=10, pool_pre_ping=True)
    ```

    ## Known problems
    There is no autofix: `pool_pre_ping` costs a round trip per checkout, and some
    deployments prefer `pool_recycle` set below the known idle timeout (or PgBouncer in
    front). Choose one and write it down; `pool_pre_ping=False` written out is still
    reported, so suppress the line with a reason if that is deliberate.

    ## References
    - [Dealing with disconnects](https://docs.sqlalchemy.org/en/20/core/pooling.html#pooling-disconnects)
    - [Pessimistic disconnect handling: `pool_pre_ping`](https://docs.sqlalchemy.org/en/20/core/pooling.html#disconnect-handling-pessimistic)
    - [Setting pool recycle](https://docs.sqlalchemy.org/en/20/core/pooling.html#setting-pool-recycle)
    - [MySQL: connection timeouts and disconnects](https://docs.sqlalchemy.org/en/20/dialects/mysql.html#connection-timeouts-and-disconnects)
    """

    code = "SQD403"
    name = "missing-pool-pre-ping"
    pitfalls = ("P21",)
    severity = Severity.WARNING
    message = (
        "`{factory}()` for {database} has no `pool_pre_ping=True`{recycle} — a connection "
        "the server dropped while idle fails the next request that checks it out"
    )

    VALID = (
        Valid(
            """
            from sqlalchemy import create_engine
            from sqlalchemy.ext.asyncio import create_async_engine
            a = create_engine("postgresql+psycopg://app@db/app", pool_pre_ping=True)
            b = create_async_engine("postgresql+asyncpg://app@db/app", pool_pre_ping=True)
            c = create_engine("mysql+pymysql://app@db/app", pool_recycle=3600)
            """
        ),
        # SQLite, in any spelling.
        Valid(
            """
            from sqlalchemy import create_engine
            from sqlmodel import create_engine as sqlmodel_engine
            a = create_engine("sqlite:///./app.db", connect_args={"check_same_thread": False})
            b = sqlmodel_engine("sqlite://")
            c = create_engine(f"sqlite:///{DB_PATH}", pool_size=5)
            """
        ),
        # A SQLite URL built in the class: an attribute its __init__ assigns, a static
        # method returning an f-string that starts with a class constant (aim's DB).
        Valid(
            """
            import os
            from sqlalchemy import create_engine

            class DB:
                _DIALECT = "sqlite"
                _DB_NAME = "run_metadata.sqlite"

                def __init__(self, path):
                    self.path = path
                    self.db_url = self.get_db_url(path)
                    self.engine = create_engine(self.db_url, pool_size=10, max_overflow=20)

                @staticmethod
                def get_db_url(path):
                    if os.path.exists(path):
                        db_url = f"{DB._DIALECT}:///{path}/{DB._DB_NAME}"
                        return db_url
                    else:
                        raise RuntimeError(f"Cannot find database {path}")

            class Cache:
                DB_NAME = "cache.sqlite"

                def __init__(self, path):
                    self.url = f"sqlite:///{path}/{self.DB_NAME}"
                    self.engine = create_engine(self.url, pool_size=5)
            """
        ),
        # A URL from a helper, sized like a server's pool, but `check_same_thread` is an
        # argument only the sqlite3 driver takes.
        Valid(
            """
            from sqlalchemy import create_engine
            from app.utils import database_url
            engine = create_engine(
                database_url(),
                connect_args={"check_same_thread": False},
                pool_size=10,
                max_overflow=20,
            )
            """
        ),
        # Sized like a server's pool, but the connections come from SQLite.
        Valid(
            """
            import sqlite3
            from sqlalchemy.ext.asyncio import create_async_engine
            from app.db import sqlite_connection_factory
            def file_engine(url, path):
                return create_async_engine(
                    url, async_creator=sqlite_connection_factory(path), pool_size=1
                )
            engine = create_engine(
                settings.url, creator=lambda: sqlite3.connect(PATH), max_overflow=0
            )
            """
        ),
        # Pools that do not keep idle connections, and options we cannot see into.
        Valid(
            """
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool, StaticPool
            a = create_engine("postgresql://app@pgbouncer/app", poolclass=NullPool)
            b = create_engine("postgresql://app@db/app", poolclass=StaticPool)
            c = create_engine("postgresql://app@db/app", **ENGINE_OPTIONS)
            d = create_engine("postgresql://app@db/app", pool_pre_ping=settings.PRE_PING)
            """
        ),
        # A URL from configuration with nothing saying it is a server database.
        Valid(
            """
            import os
            from sqlalchemy import create_engine
            from app.config import settings
            a = create_engine(os.environ["DATABASE_URL"])
            b = create_engine(settings.DATABASE_URL, echo=False)
            """
        ),
        # Another library's create_engine.
        Valid(
            """
            from vendor.warehouse import create_engine
            engine = create_engine("postgresql://app@db/app", pool_size=10)
            """
        ),
        # The rewrite to an in-memory SQLite database for tests.
        Valid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine("sqlite+aiosqlite:///:memory:")
            """
        ),
        # A test suite's engine.
        Valid(
            """
            from sqlalchemy import create_engine
            engine = create_engine("postgresql+psycopg://test@localhost/test_app")
            """,
            path="tests/conftest.py",
        ),
        # An engine for one task, disposed by the function that made it.
        Valid(
            """
            from sqlalchemy import create_engine
            def blocked_models(url, query):
                engine = None
                try:
                    engine = create_engine(url, pool_size=1)
                    with engine.connect() as connection:
                        return {row[0] for row in connection.execute(query)}
                finally:
                    if engine is not None:
                        engine.dispose()
            """
        ),
        # Made only for its dialect, to render DDL: it never connects (privacyidea's
        # seed SQL generator).
        Valid(
            """
            from sqlalchemy import create_engine
            from sqlalchemy.schema import CreateTable
            def render_mysql(metadata):
                engine = create_engine("mysql+pymysql://user:pass@localhost/db")
                return [
                    str(CreateTable(t).compile(dialect=engine.dialect))
                    for t in metadata.sorted_tables
                ]
            """
        ),
        # A one-shot script: it exits before its connection can go stale.
        Valid(
            """
            from sqlalchemy import create_engine, text
            engine = create_engine("postgresql+psycopg://postgres@localhost:5432/postgres")
            with engine.connect() as conn:
                print(conn.execute(text("SELECT count(*) FROM spans")).scalar())
            """,
            path="scripts/perf/count_spans.py",
        ),
    )
    INVALID = (
        # The same class built on a PostgreSQL URL: named from the class constant.
        Invalid(
            """
            from sqlalchemy import create_engine

            class DB:
                _DIALECT = "postgresql+psycopg"

                def __init__(self, name):
                    self.db_url = self.get_db_url(name)
                    self.engine = create_engine(self.db_url, pool_size=10, max_overflow=20)

                @staticmethod
                def get_db_url(name):
                    return f"{DB._DIALECT}://app@db/{name}"
            """,
            line=8,
            expected_message=(
                "`create_engine()` for PostgreSQL has no `pool_pre_ping=True` — a connection "
                "the server dropped while idle fails the next request that checks it out"
            ),
        ),
        Invalid(
            """
            from sqlalchemy import create_engine
            engine = create_engine("postgresql+psycopg2://app:secret@db/app", pool_size=10)
            """,
            expected_message=(
                "`create_engine()` for PostgreSQL has no `pool_pre_ping=True` — a connection "
                "the server dropped while idle fails the next request that checks it out"
            ),
            line=2,
        ),
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            DATABASE_URL = "mysql+aiomysql://shop:secret@mysql/shop"
            engine = create_async_engine(DATABASE_URL, echo=False)
            """,
            expected_message=(
                "`create_async_engine()` for MySQL has no `pool_pre_ping=True` (nor "
                "`pool_recycle`) — a connection the server dropped while idle fails the next "
                "request that checks it out"
            ),
        ),
        # URL from the environment, but tuned like a server database's pool.
        Invalid(
            """
            import os
            import sqlalchemy as sa
            engine = sa.create_engine(
                os.environ["DATABASE_URL"],
                pool_size=20,
                max_overflow=10,
            )
            """,
            expected_message=(
                "`create_engine()` for a server database (it sets `pool_size`) has no "
                "`pool_pre_ping=True` — a connection the server dropped while idle fails the "
                "next request that checks it out"
            ),
            line=3,
        ),
        # Explicitly turned off.
        Invalid(
            """
            from sqlalchemy import create_engine
            engine = create_engine("mssql+pyodbc://app@dsn", pool_pre_ping=False)
            """,
        ),
        # A setting named for the database; SQLModel's create_engine.
        Invalid(
            """
            import os
            from sqlmodel import create_engine
            from app.config import settings
            engine = create_engine(str(settings.POSTGRES_DSN))
            replica = create_engine(os.environ["MYSQL_REPLICA_URL"])
            """,
            count=2,
        ),
        # The development default of an environment variable.
        Invalid(
            """
            import os
            from sqlalchemy import create_engine
            engine = create_engine(os.getenv("DATABASE_URL", "postgresql://app@localhost/app"))
            """,
        ),
        # Connection arguments only a network driver takes.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine(
                settings.database_url,
                connect_args={"server_settings": {"application_name": "api"}},
            )
            """,
        ),
        # URL built with a host; pool_recycle alone does not cover PostgreSQL.
        Invalid(
            """
            from sqlalchemy import create_engine
            def make(user, password, host, name):
                return create_engine(
                    f"postgresql://{user}:{password}@{host}/{name}", pool_recycle=1800
                )
            """,
        ),
        # Its dialect read, and the engine returned too: the caller may connect.
        Invalid(
            """
            from sqlalchemy import create_engine
            def make_engine():
                engine = create_engine("postgresql+psycopg://app@db/app", pool_size=10)
                print(engine.dialect.name)
                return engine
            """,
            line=3,
        ),
        # A function that makes the application's engine; the dispose is another engine's.
        Invalid(
            """
            from sqlalchemy import create_engine
            def make_engine(url, old):
                engine = create_engine(url, pool_size=10)
                old.dispose()
                return engine
            """,
        ),
        # The application's engine, in a module named like a script.
        Invalid(
            """
            from sqlalchemy import create_engine
            engine = create_engine("postgresql+psycopg://app@db/app", pool_size=10)
            """,
            path="app/scripts.py",
        ),
        # A creator that opens a server database's connections.
        Invalid(
            """
            import psycopg
            from sqlalchemy import create_engine
            engine = create_engine(
                settings.url, creator=lambda: psycopg.connect(settings.dsn), pool_size=10
            )
            """,
        ),
        # URL.create with a server dialect, explicit QueuePool.
        Invalid(
            """
            from sqlalchemy import URL, create_engine
            from sqlalchemy.pool import QueuePool
            url = URL.create("oracle+oracledb", username="app", host="db", database="orcl")
            engine = create_engine(url, poolclass=QueuePool)
            """,
        ),
    )

    @cached_property
    def strings(self) -> StringFlow:
        return StringFlow(self.ctx.dataflow)

    @cached_property
    def short_lived(self) -> bool:
        """Test code, and the one-shot programs of `scripts/` and `benchmarks/` folders:
        they exit before an idle connection can go stale."""
        folders = self.ctx.path.split("/")[:-1]
        return self.ctx.in_tests or any(part in _ONE_SHOT_FOLDERS for part in folders)

    @calls_to(named=_ENGINE_FACTORIES)
    def visit_Call(self, node: ast.Call) -> None:
        if (
            self.short_lived
            or has_star_kwargs(node)
            or self._disposed_by_its_function(node)
            or self._dialect_only(node)
        ):
            return
        factory = self.ctx.names.sqla_name(node.func)
        pre_ping = call_keyword(node, "pool_pre_ping")
        if pre_ping is not None and not is_false_literal(pre_ping.value):
            return
        poolclass = call_keyword(node, "poolclass")
        if poolclass is not None and self.ctx.names.sqla_name(poolclass.value) not in _QUEUE_POOLS:
            return
        url = node.args[0] if node.args else None
        if url is None:
            keyword = call_keyword(node, "url")
            url = keyword.value if keyword is not None else None
        if url is None:
            return
        dialect, database = self._database(node, url)
        if database is None:
            return
        recycle = call_keyword(node, "pool_recycle")
        recycling = recycle is not None and not (
            isinstance(recycle.value, ast.Constant) and recycle.value.value in (None, -1, False)
        )
        mysql = dialect in _MYSQL
        if mysql and recycling:
            return
        self.report(
            node,
            factory=factory,
            database=database,
            recycle=" (nor `pool_recycle`)" if mysql else "",
            hint="add `pool_pre_ping=True` (one `SELECT 1` per checkout)"
            + (", or `pool_recycle=` below the server's `wait_timeout`" if mysql else "")
            + "; behind PgBouncer or a proxy that closes idle connections, also set "
            "`pool_recycle` below its idle timeout",
        )

    def _disposed_by_its_function(self, call: ast.Call) -> bool:
        """``engine = create_engine(...)`` in a function that also calls
        ``engine.dispose()``: an engine for one task, whose pool never idles."""
        name = assigned_name(self.ctx.parent(call))
        if name is None:
            return False
        scope = self.ctx.enclosing_scope(call)
        if scope is self.ctx.tree:
            return False
        return any(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "dispose"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == name
            for node in ast.walk(scope)
        )

    def _dialect_only(self, call: ast.Call) -> bool:
        """``engine = create_engine(url)`` in a function that only reads
        ``engine.dialect`` (to compile DDL for that database): no connection is ever
        checked out, so none can go stale."""
        name = assigned_name(self.ctx.parent(call))
        scope = self.ctx.enclosing_scope(call)
        if name is None or scope is self.ctx.tree:
            return False
        loads = [
            node
            for node in ast.walk(scope)
            if isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Load)
        ]
        return bool(loads) and all(
            isinstance(parent := self.ctx.parent(node), ast.Attribute)
            and parent.attr == "dialect"
            for node in loads
        )

    def _database(self, call: ast.Call, url: ast.expr) -> tuple[str | None, str | None]:
        """(dialect, how to name it) when the engine is for a server database."""
        dialects: list[str] = []
        for prefix in self.strings.prefixes(url):
            if "://" not in prefix.text:
                continue
            match = _SCHEME.match(prefix.text.split("://", 1)[0].strip())
            if match is not None:
                dialects.append(match.group(1).lower())
        if dialects:
            servers = [d for d in dialects if d in SERVER_DIALECTS]
            if not servers:
                return None, None  # SQLite, or a database we do not know
            return servers[0], SERVER_DIALECTS[servers[0]]
        named = self._literal_dialect(url) or self._named_dialect(url)
        if named is not None:
            return named, SERVER_DIALECTS[named]
        if sqlite_engine(call, self.strings):
            return None, None  # a file database sized with a queue pool
        for option in _POOL_SIZING:
            if call_keyword(call, option) is not None:
                return None, f"a server database (it sets `{option}`)"
        connect_args = call_keyword(call, "connect_args")
        if connect_args is not None and isinstance(connect_args.value, ast.Dict):
            keys = {
                k.value for k in connect_args.value.keys
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
            server_keys = sorted(keys & _SERVER_CONNECT_ARGS)
            if server_keys:
                return None, f"a server database (`connect_args` sets `{server_keys[0]}`)"
        if self._has_host(url):
            return None, "a server database (the URL names a host)"
        return None, None

    @staticmethod
    def _literal_dialect(url: ast.expr) -> str | None:
        """A server URL written inside the expression: ``os.getenv("DB", "postgresql://...")``
        (the application is developed against that database)."""
        for node in ast.walk(url):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                scheme, separator, _ = node.value.partition("://")
                match = _SCHEME.match(scheme) if separator else None
                if match is not None and match.group(1).lower() in SERVER_DIALECTS:
                    return match.group(1).lower()
        return None

    def _named_dialect(self, url: ast.expr) -> str | None:
        """``settings.POSTGRES_DSN``, ``PG_URL``, ``os.environ["MYSQL_URL"]``."""
        for node in ast.walk(url):
            name: str | None = None
            if isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                name = node.value if node.value.isidentifier() else None
            if name is None:
                continue
            for word in re.split(r"[_\W]+", name.lower()):
                dialect = _URL_WORDS.get(word)
                if dialect is not None:
                    return dialect
        return None

    def _has_host(self, url: ast.expr) -> bool:
        """An f-string or concatenation whose literal parts put something after `@`."""
        literals = [
            node.value for node in ast.walk(url)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
        ]
        text = "".join(literals)
        return "://" in text and "@" in text.split("://", 1)[1]
