"""SQD405: a web application's SQLite file database left in the rollback-journal mode."""

from __future__ import annotations

import ast
import re
from functools import cached_property

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to
from sqla_doctor.static.rules.engine.engine_not_disposed import _is_test
from sqla_doctor.static.strings import StringFlow
from sqla_doctor.static.syntax import call_keyword, has_star_kwargs

_ENGINE_FACTORIES = frozenset({"create_engine", "create_async_engine"})
# Flask-SQLAlchemy makes the engine from this setting.
_FLASK_URL_KEY = "SQLALCHEMY_DATABASE_URI"
# Engine events a WAL pragma is set in; any listener on them may set it.
_CONNECT_EVENTS = frozenset({"connect", "first_connect"})
_APP_NAMES = {"asgi": "an ASGI application", "wsgi": "a WSGI application"}


def sqlite_file(url: str, complete: bool = True) -> bool | None:
    """Whether a URL (or the literal start of one) names an SQLite database file: True,
    False for another database or SQLite in memory, None when the text says too little."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return None
    if scheme.split("+", 1)[0].strip().lower() != "sqlite":
        return False
    if ":memory:" in rest or "mode=memory" in rest:
        return False
    path = rest.split("?", 1)[0]
    if complete:
        return path not in ("", "/")
    # `f"sqlite:///{path}"`: the rest of the path comes later.
    return True if path.startswith("/") else None


class SqliteWithoutWal(Rule):
    """
    ## What it does
    Checks for an SQLite database file (`create_engine("sqlite:///app.db")`, also through
    a name, an f-string, or Flask-SQLAlchemy's `SQLALCHEMY_DATABASE_URI`) in a project
    that serves web requests (a FastAPI, Starlette, Litestar, Quart, Sanic, aiohttp or
    Flask app), when nothing in the project switches it to WAL mode: no `connect` event
    listener (where the pragma belongs), no `journal_mode` pragma anywhere, and no busy
    timeout chosen (`connect_args={"timeout": ...}`, or `?timeout=` in the URL, also in a
    template such as `"sqlite:///{0}?timeout={1}".format(...)`; the driver's default is 5
    seconds).

    In-memory databases, test code, projects without a web application and modules that
    no web application's modules import (a CLI or a tutorial script beside the app) are
    left alone.

    ## Why is this bad?
    In its default rollback-journal mode SQLite lets one connection write only when no
    other holds a read or write transaction. A web server runs requests concurrently
    (threads, workers, an event loop): while one request reads or writes, another that
    writes waits for the busy timeout (5 seconds by default) and then fails with
    `sqlite3.OperationalError: database is locked`. Under load that is a stream of 500s.
    WAL mode lets readers and one writer work at once; a busy timeout makes writers queue
    instead of failing.

    ## Example
    ```python
    engine = create_engine("sqlite:///./app.db", connect_args={"check_same_thread": False})
    app = FastAPI()
    ```

    Use instead:
    ```python
    engine = create_engine(
        "sqlite:///./app.db",
        connect_args={"check_same_thread": False, "timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, connection_record):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()
    ```

    ## Known problems
    A WAL pragma set by a tool outside the project (the `sqlite3` shell, a deployment
    script) is invisible: the mode is stored in the database file. Suppress the line
    with a reason then. Only a literal URL is judged; one read from the environment is
    the deployment's business.

    ## References
    - [SQLite: Write-Ahead Logging](https://www.sqlite.org/wal.html)
    - [SQLite dialect: database locking behavior / concurrency](https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#database-locking-behavior-concurrency)
    - [SQLite dialect: foreign key support (a `connect` listener setting pragmas)](https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#foreign-key-support)
    """

    code = "SQD405"
    name = "sqlite-without-wal"
    pitfalls = ("P36",)
    severity = Severity.WARNING
    message = (
        "SQLite file database `{url}` serves {app} in the rollback-journal mode, with the "
        "driver's default 5 s busy timeout — concurrent requests that write fail with "
        "`database is locked`"
    )

    VALID = (
        # A script beside the web app that the app never imports (a tutorial, a CLI).
        Valid(
            """
            from sqlmodel import SQLModel, create_engine

            engine = create_engine("sqlite:///database.db")
            SQLModel.metadata.create_all(engine)
            """,
            path="docs_src/tutorial/create_tables.py",
            files={
                "docs_src/__init__.py": "",
                "docs_src/tutorial/__init__.py": "",
                "docs_src/fastapi/app.py": "from fastapi import FastAPI\napp = FastAPI()\n",
            },
        ),
        # WAL set in a connect listener, and a busy timeout.
        Valid(
            """
            from fastapi import FastAPI
            from sqlalchemy import create_engine, event

            engine = create_engine("sqlite:///./app.db", connect_args={"timeout": 30})

            @event.listens_for(engine, "connect")
            def pragmas(dbapi_connection, record):
                dbapi_connection.execute("PRAGMA journal_mode=WAL")

            app = FastAPI()
            """,
            path="app/main.py",
            files={"app/__init__.py": ""},
        ),
        # The pragma run once at start-up, in another module.
        Valid(
            """
            from sqlalchemy import create_engine

            engine = create_engine("sqlite:///data/app.db")
            """,
            path="app/db.py",
            files={
                "app/__init__.py": "",
                "app/main.py": """
                from flask import Flask
                from sqlalchemy import text
                from app.db import engine

                app = Flask(__name__)
                with engine.connect() as connection:
                    connection.execute(text("pragma JOURNAL_MODE = wal"))
                """,
            },
        ),
        # A busy timeout chosen on purpose, in connect_args or in the URL.
        Valid(
            """
            from fastapi import FastAPI
            from sqlalchemy import create_engine

            a = create_engine("sqlite:///app.db", connect_args={"timeout": 15})
            b = create_engine("sqlite:///app.db?timeout=20")
            app = FastAPI()
            """,
        ),
        # The timeout in a URL template, after the path's value (pgAdmin's config database).
        Valid(
            """
            from flask import Flask

            app = Flask(__name__)
            app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///{0}?timeout={1}".format(
                SQLITE_PATH, SQLITE_TIMEOUT
            )
            """,
        ),
        # In memory, another database, a URL from the environment.
        Valid(
            """
            import os
            from fastapi import FastAPI
            from sqlalchemy import create_engine
            from sqlalchemy.ext.asyncio import create_async_engine

            a = create_engine("sqlite://")
            b = create_async_engine("sqlite+aiosqlite:///:memory:")
            c = create_engine("postgresql+psycopg://app@db/app")
            d = create_engine(os.environ["DATABASE_URL"])
            app = FastAPI()
            """,
        ),
        # No web application: a script or a CLI has one writer.
        Valid(
            """
            from sqlalchemy import create_engine

            engine = create_engine("sqlite:///inventory.db")
            """,
        ),
        # A test suite's database.
        Valid(
            """
            from fastapi import FastAPI
            from sqlalchemy import create_engine

            engine = create_engine("sqlite:///./test.db")
            app = FastAPI()
            """,
            path="tests/conftest.py",
        ),
    )
    INVALID = (
        # The FastAPI tutorial's database module.
        Invalid(
            """
            from sqlalchemy import create_engine
            from sqlalchemy.orm import sessionmaker

            SQLALCHEMY_DATABASE_URL = "sqlite:///./sql_app.db"
            engine = create_engine(
                SQLALCHEMY_DATABASE_URL, connect_args={"check_same_thread": False}
            )
            SessionLocal = sessionmaker(autocommit=False, autoflush=False, bind=engine)
            """,
            path="sql_app/database.py",
            files={
                "sql_app/__init__.py": "",
                "sql_app/main.py": """
                from fastapi import FastAPI
                from sql_app.database import engine

                app = FastAPI()
                """,
            },
            expected_message=(
                "SQLite file database `sqlite:///./sql_app.db` serves an ASGI application in "
                "the rollback-journal mode, with the driver's default 5 s busy timeout — "
                "concurrent requests that write fail with `database is locked`"
            ),
            line=5,
        ),
        # An async engine whose path is built at run time.
        Invalid(
            """
            from litestar import Litestar
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(f"sqlite+aiosqlite:///{DATA_DIR}/app.db")
            app = Litestar(route_handlers=[])
            """,
        ),
        # Flask-SQLAlchemy's setting.
        Invalid(
            """
            from flask import Flask
            from flask_sqlalchemy import SQLAlchemy

            app = Flask(__name__)
            app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///project.db"
            db = SQLAlchemy(app)
            """,
            expected_message=(
                "SQLite file database `sqlite:///project.db` serves a WSGI application in the "
                "rollback-journal mode, with the driver's default 5 s busy timeout — "
                "concurrent requests that write fail with `database is locked`"
            ),
            line=5,
        ),
        # A URL template that sets another option.
        Invalid(
            """
            from flask import Flask

            app = Flask(__name__)
            app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///{0}?mode=rwc".format(SQLITE_PATH)
            """,
            line=4,
        ),
        # A Flask config class.
        Invalid(
            """
            import flask

            class Config:
                SQLALCHEMY_DATABASE_URI = "sqlite:///instance/app.db"

            app = flask.Flask(__name__)
            app.config.from_object(Config)
            """,
            line=4,
        ),
    )

    @cached_property
    def strings(self) -> StringFlow:
        return StringFlow(self.ctx.dataflow)

    @cached_property
    def app(self) -> str | None:
        """What kind of web application the project serves, if any, and whether WAL or its
        pragma shows anywhere (then None: nothing to say)."""
        if _is_test(self.ctx.path):
            return None
        for facts in self.ctx.index:
            if facts.orm.journal_mode:
                return None
            if any(listener.identifier in _CONNECT_EVENTS for listener in facts.orm.listeners):
                return None
        # Only an engine the app's modules import serves it: a tutorial script or a CLI
        # next to a web app does not.
        apps = self.ctx.index.apps_serving(self.ctx.facts.module)
        for kind in ("asgi", "wsgi"):
            if kind in apps:
                return _APP_NAMES[kind]
        return None

    @calls_to(named=_ENGINE_FACTORIES)
    def visit_Call(self, node: ast.Call) -> None:
        if has_star_kwargs(node) or call_keyword(node, "poolclass") is not None:
            return
        url = node.args[0] if node.args else None
        if url is None:
            keyword = call_keyword(node, "url")
            url = keyword.value if keyword is not None else None
        if url is None or self._sets_timeout(node):
            return
        self._judge(node, url)

    def visit_Assign(self, node: ast.Assign) -> None:
        # app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///..." (or a Config class's
        # SQLALCHEMY_DATABASE_URI attribute).
        for target in node.targets:
            key = None
            if isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant):
                key = target.slice.value
            elif isinstance(target, ast.Name) and isinstance(self.ctx.parent(node), ast.ClassDef):
                key = target.id
            if key == _FLASK_URL_KEY:
                self._judge(node, node.value)
                return

    def _sets_timeout(self, call: ast.Call) -> bool:
        connect_args = call_keyword(call, "connect_args")
        if connect_args is None:
            return False
        if not isinstance(connect_args.value, ast.Dict):
            return True  # built elsewhere: it may well set one
        return any(
            key is None or (isinstance(key, ast.Constant) and key.value == "timeout")
            for key in connect_args.value.keys
        )

    def _template_sets_timeout(self, url: ast.expr) -> bool:
        """``"sqlite:///{0}?timeout={1}".format(path, seconds)``: the URL's literal text sets
        the timeout past the first value, where its known prefix stops (also through a
        name bound to such a template)."""
        expressions = [url]
        if isinstance(url, ast.Name):
            expressions += [b.value for b in self.strings.flow.bindings(url) if b.value is not None]
        return any(
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.search(r"[?&]timeout=", node.value) is not None
            for expression in expressions
            for node in ast.walk(expression)
        )

    def _judge(self, node: ast.AST, url: ast.expr) -> None:
        prefixes = self.strings.prefixes(url)
        if not prefixes or not all(sqlite_file(p.text, p.complete) for p in prefixes):
            return
        if any("timeout=" in p.text for p in prefixes) or self._template_sets_timeout(url):
            return
        app = self.app
        if app is None:
            return
        shown = prefixes[0].text if prefixes[0].complete else prefixes[0].text + "..."
        self.report(
            node,
            url=shown,
            app=app,
            hint="set `PRAGMA journal_mode=WAL` in a `connect` event listener, and "
            'connect_args={"timeout": 30}',
        )
