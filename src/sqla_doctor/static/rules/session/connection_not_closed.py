"""SQD108: a connection checked out of an engine outside `with` and never closed in a
`finally`."""

from __future__ import annotations

import ast
from functools import cached_property

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import Binding, FunctionFlow, flow_for, worth_analysing
from sqla_doctor.static.index.extract import ENGINE_MADE, CallShape, shape_name
from sqla_doctor.static.lifecycle import (
    CLOSERS,
    checkout_call,
    closed_by_helper,
    closed_in_finally,
    escapes,
    managed_by_with,
    method_calls,
)
from sqla_doctor.static.objects import SqlaObjects
from sqla_doctor.static.rule import Invalid, Rule, Valid
from sqla_doctor.static.strings import call_arguments, name_uses

_DB = """
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

engine = create_engine("postgresql+psycopg://app@db/app", pool_size=5)
async_engine = create_async_engine("postgresql+asyncpg://app@db/app")
"""
_FILES = {"app/__init__.py": "", "app/db.py": _DB}
# A module calling app.jobs.export() from main(url), whose body is `body`.
_CLI = """from sqlalchemy import create_engine
from app import settings
from app.jobs import export

ENGINE = create_engine("sqlite://")
TARGET = "sqlite://"

def main(url):
    {body}
"""
_REBOUND_ENGINE = (
    "engine = create_engine(url)\n    if not url:\n        engine = settings.target\n"
    "    export(engine)"
)
# A helper taking its engine unannotated, and the module's calls of it.
_ENGINE_PARAM = """
from sqlalchemy import create_engine
from app.db import engine

def export(engine):
    conn = engine.connect()
    return conn.exec_driver_sql("SELECT 1").all()

def main(url, settings):
    export(create_engine(url))
    {second}
"""
# What checks a connection out of the pool, and what a `with` of it is written as.
_CHECKOUTS = frozenset({"connect", "raw_connection"})


class ConnectionNotClosed(Rule):
    """
    ## What it does
    Checks for a connection checked out of an engine (`conn = engine.connect()`,
    `conn = await async_engine.connect()`, `dbapi_conn = engine.raw_connection()`) that is
    neither used as a context manager nor closed in a `finally` block, and does not leave
    the function (returned, yielded, stored on an object, handed to a project function
    that closes it in its `finally`). The engine must be known as one: made by
    `create_engine()` in this function or any module of the project, annotated, or
    passed an engine by every call of the function.

    ## Why is this bad?
    A `Connection` holds its pool connection until `close()`. When nothing closes it, or
    an exception skips the `close()` at the end of the function, the connection stays
    checked out until the garbage collector finds the object (SQLAlchemy then warns
    "The garbage collector is trying to clean up non-checked-in connection"), and a
    transaction it began stays open on the server meanwhile. Under load the pool runs
    dry: `TimeoutError: QueuePool limit of size 5 overflow 10 reached, connection timed
    out`. Unlike a session, a connection keeps its checkout across `commit()`.

    ## Known problems
    An engine the function receives without an annotation (`def export(engine):`) is
    known to be one only when every call of the function in the project passes a known
    engine (`create_engine(...)`, or a module's engine by its name); otherwise its
    connections are not judged. A connection
    stored on an object (`self.conn = engine.connect()`) belongs to that object's
    lifetime and is not reported.

    ## Example
    ```python
    def export_users(path):
        conn = engine.connect()
        rows = conn.execute(select(users)).all()
        write_csv(path, rows)
        conn.close()
    ```

    Use instead:
    ```python
    def export_users(path):
        with engine.connect() as conn:
            rows = conn.execute(select(users)).all()
        write_csv(path, rows)
    ```

    ## References
    - [Working with Engines and Connections: basic usage](https://docs.sqlalchemy.org/en/20/core/connections.html#basic-usage)
    - [Connection pooling: dealing with disconnects and returning connections](https://docs.sqlalchemy.org/en/20/core/pooling.html#pool-reset-on-return)
    """

    code = "SQD108"
    name = "connection-not-closed"
    pitfalls = ("P06",)
    severity = Severity.WARNING
    message = "{problem}"

    VALID = (
        Valid(
            """
            from sqlalchemy import text
            from app.db import async_engine, engine

            def a():
                with engine.connect() as conn:
                    return conn.scalar(text("SELECT 1"))

            def b():
                conn = engine.connect()
                try:
                    return conn.scalar(text("SELECT 1"))
                finally:
                    conn.close()

            def c():
                conn = engine.connect()
                with conn:
                    conn.execute(text("SELECT 1"))

            async def d():
                async with async_engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))

            def e():
                with engine.raw_connection() as dbapi_conn:
                    dbapi_conn.cursor().execute("SELECT 1")
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Handed out: returned, yielded to a fixture's test, stored, registered for later.
        Valid(
            """
            import atexit
            from app.db import engine

            def open_connection():
                conn = engine.connect()
                conn.exec_driver_sql("SET search_path TO app")
                return conn

            def connection():
                conn = engine.connect()
                yield conn
                conn.close()

            def keep(registry):
                conn = engine.connect()
                registry.append(conn)

            def for_the_process():
                conn = engine.connect()
                atexit.register(conn.close)
                conn.exec_driver_sql("LISTEN jobs")
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Closed on both ways out: in the handler that re-raises, and after the work.
        Valid(
            """
            from sqlalchemy import text
            from app.db import engine

            def count():
                conn = engine.connect()
                try:
                    total = conn.scalar(text("SELECT count(*) FROM users"))
                except Exception:
                    conn.close()
                    raise
                conn.close()
                return total
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Closed by a project function, in its `finally`.
        Valid(
            """
            from sqlalchemy import text
            from app.db import engine

            def run_and_close(conn, sql):
                try:
                    return conn.execute(text(sql)).all()
                finally:
                    conn.close()

            def report():
                conn = engine.connect()
                return run_and_close(conn, "SELECT * FROM users")
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Not an engine: a socket, sqlite3, an engine parameter nobody annotated.
        Valid(
            """
            import socket
            import sqlite3

            def ping(address):
                sock = socket.socket()
                sock.connect(address)
                db = sqlite3.connect("app.db")
                db.execute("SELECT 1")

            def export(engine):
                conn = engine.connect()
                return conn.exec_driver_sql("SELECT 1").all()
            """
        ),
        # An unannotated engine parameter that some caller passes something else: here,
        # or in another module.
        Valid(
            _ENGINE_PARAM.format(second="export(settings.target)"),
            path="app/jobs.py",
            files=_FILES,
        ),
        Valid(
            _ENGINE_PARAM.format(second="export(engine)"),
            path="app/jobs.py",
            files={
                **_FILES,
                "app/cli.py": "from app.jobs import export\nexport(make_engine())\n",
            },
        ),
        # Another module's caller passing a local name bound to something else too, or an
        # UPPER_CASE name that is no engine.
        Valid(
            _ENGINE_PARAM.format(second="export(engine)"),
            path="app/jobs.py",
            files={
                **_FILES,
                "app/cli.py": _CLI.format(body=_REBOUND_ENGINE),
            },
        ),
        Valid(
            _ENGINE_PARAM.format(second="export(engine)"),
            path="app/jobs.py",
            files={**_FILES, "app/cli.py": _CLI.format(body="export(TARGET)")},
        ),
        # Rebound in the function: each binding's life is its own story.
        Valid(
            """
            from sqlalchemy import text
            from app.db import engine

            def twice():
                conn = engine.connect()
                conn.execute(text("SELECT 1"))
                conn = None
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
    )
    INVALID = (
        # An unannotated engine parameter every caller in the project passes an engine:
        # here, and in another module (the engine app.db makes).
        Invalid(
            _ENGINE_PARAM.format(second="export(engine)"),
            path="app/jobs.py",
            files={
                **_FILES,
                "app/cli.py": (
                    "from app.db import engine\nfrom app.jobs import export\n"
                    "export(engine=engine)\n"
                ),
            },
            line=5,
            expected_message=(
                "`conn = engine.connect()` is never closed: its connection stays checked out "
                "of the pool until garbage collection — use `with engine.connect() as conn:` "
                "or close it in a `finally`"
            ),
        ),
        # Another module's caller passing the engine it makes in a local name, or its
        # UPPER_CASE module-level engine.
        Invalid(
            _ENGINE_PARAM.format(second="export(engine)"),
            path="app/jobs.py",
            files={
                **_FILES,
                "app/cli.py": _CLI.format(body="engine = create_engine(url)\n    export(engine)"),
            },
            line=5,
        ),
        Invalid(
            _ENGINE_PARAM.format(second="export(engine)"),
            path="app/jobs.py",
            files={**_FILES, "app/cli.py": _CLI.format(body="export(ENGINE)")},
            line=5,
        ),
        Invalid(
            """
            from sqlalchemy import select, table, column
            from app.db import engine

            users = table("users", column("id"))

            def export_users():
                conn = engine.connect()
                return conn.execute(select(users)).all()
            """,
            expected_message=(
                "`conn = engine.connect()` is never closed: its connection stays checked out "
                "of the pool until garbage collection — use `with engine.connect() as conn:` "
                "or close it in a `finally`"
            ),
            line=7,
            path="app/jobs.py",
            files=_FILES,
        ),
        Invalid(
            """
            from sqlalchemy import text
            from app.db import engine

            def rename(user_id, name):
                conn = engine.connect()
                conn.execute(text("UPDATE users SET name = :n WHERE id = :i"), {"n": name})
                conn.commit()
                conn.close()
            """,
            expected_message=(
                "`conn = engine.connect()` is closed at line 8 only if nothing raises before "
                "it: an exception leaks its connection, still checked out — use `with "
                "engine.connect() as conn:` or close it in a `finally`"
            ),
            line=5,
            path="app/jobs.py",
            files=_FILES,
        ),
        # A transaction block commits, but the connection stays checked out after it.
        Invalid(
            """
            from sqlalchemy import text
            from app.db import engine

            def archive():
                conn = engine.connect()
                with conn.begin():
                    conn.execute(text("DELETE FROM sessions WHERE expired"))
            """,
            line=5,
            path="app/jobs.py",
            files=_FILES,
        ),
        Invalid(
            """
            from sqlalchemy import text
            from app.db import async_engine

            async def count_users():
                conn = await async_engine.connect()
                result = await conn.execute(text("SELECT count(*) FROM users"))
                await conn.close()
                return result.scalar()
            """,
            expected_message=(
                "`conn = await async_engine.connect()` is closed at line 7 only if nothing "
                "raises before it: an exception leaks its connection, still checked out — use "
                "`async with async_engine.connect() as conn:` or close it in a `finally`"
            ),
            line=5,
            path="app/jobs.py",
            files=_FILES,
        ),
        # The engine made in the function; the DB-API connection of the pool.
        Invalid(
            """
            from sqlalchemy import create_engine

            def load(url, rows):
                engine = create_engine(url)
                dbapi_conn = engine.raw_connection()
                cursor = dbapi_conn.cursor()
                cursor.executemany("INSERT INTO items VALUES (?, ?)", rows)
                dbapi_conn.commit()
                engine.dispose()
            """,
            expected_message=(
                "`dbapi_conn = engine.raw_connection()` is never closed: its connection stays "
                "checked out of the pool until garbage collection — use `with "
                "engine.raw_connection() as dbapi_conn:` or close it in a `finally`"
            ),
            line=5,
        ),
        # An engine handed in with its type written.
        Invalid(
            """
            from sqlalchemy import Engine, text

            def vacuum(engine: Engine) -> None:
                conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                conn.execute(text("VACUUM"))
            """,
            line=4,
        ),
    )

    @cached_property
    def objects(self) -> SqlaObjects:
        return SqlaObjects(self.ctx, self.ctx.dataflow)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if not worth_analysing(self.ctx, node):
            return
        source = self.ctx.text(node)
        if "connect()" not in source and "raw_connection()" not in source:
            return
        flow = flow_for(self.ctx, node)
        for name, bindings in flow.bindings.items():
            # Rebound later, or bound in a loop: stay simple.
            if len(bindings) != 1 or bindings[0].kind != "assign":
                continue
            checkout = self._checkout(flow, bindings[0])
            if checkout is None:
                continue
            if (
                managed_by_with(flow, name, begin_counts=False)
                or closed_in_finally(flow, name)
                or escapes(flow, name)
                or closed_by_helper(self.ctx.index, flow, name)
            ):
                continue
            closes = [call for method, call in method_calls(flow, name) if method in CLOSERS]
            if _closed_on_both_ways(flow, closes):
                continue
            self._report(bindings[0], checkout, closes)

    visit_AsyncFunctionDef = visit_FunctionDef

    def _checkout(self, flow: FunctionFlow, binding: Binding) -> ast.Call | None:
        """The ``engine.connect()`` / ``engine.raw_connection()`` call a binding takes its
        connection from (``execution_options(...)`` and ``await`` on the way), on an
        expression known to be an engine."""
        if binding.element is not None:
            return None
        checkout = checkout_call(binding.value, _CHECKOUTS)
        if checkout is None:
            return None
        value = checkout[0]
        assert isinstance(value.func, ast.Attribute)
        engine = value.func.value
        kind = self.objects.kind_of(engine)
        if kind is not None and kind.is_engine:
            return value
        return value if self._engine_parameter(flow, engine) else None

    def _engine_parameter(self, flow: FunctionFlow, engine: ast.expr) -> bool:
        """``def export(engine):`` with no annotation, a module-level function called only
        from this module, every call passing a known engine."""
        function = flow.node
        if (
            not isinstance(engine, ast.Name)
            or function not in self.ctx.tree.body
            or function.decorator_list
        ):
            return False
        binding = flow.binding(engine.id, engine)
        if binding is None or binding.kind != "param" or binding.value is not None:
            return False
        index = self.ctx.index
        outside: list[CallShape] = []
        imported = index.imported_names(self.ctx.facts.module)
        if "*" in imported:
            return False
        if function.name in imported:
            # Other modules' calls, each argument as the index recorded it.
            shapes = index.outside_calls(f"{self.ctx.facts.module}.{function.name}")
            if shapes is None:
                return False
            outside = shapes
        uses, calls = self._call_sites.get(function.name, (0, []))
        if uses != len(calls) or not (calls or outside):
            return False  # handed on as a callback, or never called
        for call in calls:
            given = call_arguments(call, function).get(engine.id)
            kind = self.objects.kind_of(given) if given is not None else None
            if kind is None or not kind.is_engine:
                return False
        for shape in outside:
            given_kind = _shape_argument(shape, function, engine.id)
            named = shape_name(given_kind) if given_kind is not None else None
            if given_kind is None or not (
                given_kind == ENGINE_MADE or (named is not None and index.engine(named) is not None)
            ):
                return False
        return True

    @cached_property
    def _call_sites(self) -> dict[str, tuple[int, list[ast.Call]]]:
        return name_uses(self.ctx.tree)

    def _report(self, binding: Binding, checkout: ast.Call, closes: list[ast.Call]) -> None:
        assert binding.value is not None
        made = " ".join(self.ctx.text(binding.value).split())
        opened = " ".join(self.ctx.text(checkout).split())
        assert isinstance(checkout.func, ast.Attribute)
        if isinstance(binding.value, ast.Await) or _is_async_engine(
            self.objects, checkout.func.value
        ):
            use = f"use `async with {opened} as {binding.name}:` or close it in a `finally`"
        else:
            use = f"use `with {opened} as {binding.name}:` or close it in a `finally`"
        if closes:
            first = min(closes, key=lambda call: (call.lineno, call.col_offset))
            problem = (
                f"`{binding.name} = {made}` is closed at line {first.lineno} only if nothing "
                f"raises before it: an exception leaks its connection, still checked out — "
                f"{use}"
            )
        else:
            problem = (
                f"`{binding.name} = {made}` is never closed: its connection stays checked out "
                f"of the pool until garbage collection — {use}"
            )
        self.report(binding.value, problem=problem)


def _shape_argument(
    shape: CallShape, function: ast.FunctionDef | ast.AsyncFunctionDef, param: str
) -> str | None:
    """The kind (index.extract.call_shape) of what a recorded call passes ``param``; None
    when it passes nothing or may pass it unpacked."""
    positional, keywords = shape
    if "*" in positional or any(arg == "*" for arg, _ in keywords):
        return None
    names = [a.arg for a in (*function.args.posonlyargs, *function.args.args)]
    if param in names and names.index(param) < len(positional):
        return positional[names.index(param)]
    return next((kind for arg, kind in keywords if arg == param), None)


def _is_async_engine(objects: SqlaObjects, expr: ast.expr) -> bool:
    kind = objects.kind_of(expr)
    return kind is not None and kind.is_async


def _closed_on_both_ways(flow: FunctionFlow, closes: list[ast.Call]) -> bool:
    """A close in an exception handler and another outside one: the function closes the
    connection whether the work raised or not (the handler re-raises or returns)."""
    in_handler = [c for c in closes if next(flow.enclosing(c, ast.ExceptHandler), None)]
    return bool(in_handler) and len(in_handler) < len(closes)
