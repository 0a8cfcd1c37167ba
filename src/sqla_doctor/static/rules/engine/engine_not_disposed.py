"""SQD404: an application engine that is never disposed."""

from __future__ import annotations

import ast
from functools import cached_property

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid
from sqla_doctor.static.rules.engine._sqlite import sqlite_engine
from sqla_doctor.static.strings import StringFlow
from sqla_doctor.static.syntax import call_keyword

_APP = """
from fastapi import FastAPI
from app.db import engine

app = FastAPI()
"""


def _is_test(path: str) -> bool:
    parts = path.replace("\\\\", "/").split("/")
    return any(p in ("tests", "test") or p.startswith("test_") or p == "conftest.py" for p in parts)


class EngineNotDisposed(Rule):
    """
    ## What it does
    Checks for a module-level engine in an application (a FastAPI, Starlette,
    Litestar, Quart, Sanic or aiohttp app whose modules import the engine's module) that
    no module ever disposes: no `engine.dispose()` / `await engine.dispose()` in a lifespan, a
    shutdown handler or anywhere else. Async engines are reported in any such app; sync
    engines only where the app has shutdown hooks, since that is where the dispose
    belongs, and not for SQLite (no server holds their connections) nor with
    `poolclass=NullPool` (no connection stays open to dispose of).

    ## Why is this bad?
    The pool keeps its connections open until the process dies: on every reload and
    rolling restart they linger on the server (counting against `max_connections`), and
    an `AsyncEngine` collected after its event loop closed raises `RuntimeError: Event
    loop is closed` or warns `The garbage collector is trying to clean up non-checked-in
    connection`.

    ## Known problems
    A `dispose()` on a receiver that cannot be named (an engine passed around as an
    argument) silences the rule for every engine. Test files are not checked.

    ## Example
    ```python
    engine = create_async_engine(DATABASE_URL)
    app = FastAPI()
    ```

    Use instead:
    ```python
    engine = create_async_engine(DATABASE_URL)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await engine.dispose()

    app = FastAPI(lifespan=lifespan)
    ```

    ## References
    - [Engine disposal](https://docs.sqlalchemy.org/en/20/core/connections.html#engine-disposal)
    - [Using asyncio: dispose of the engine](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#synopsis-core)
    """

    code = "SQD404"
    name = "engine-not-disposed"
    pitfalls = ("P19",)
    severity = Severity.WARNING
    message = (
        "`{engine}` is never disposed: on shutdown and every reload its pooled connections are "
        "left open{extra} — call `{call}` when the app shuts down (in its lifespan)"
    )

    VALID = (
        # A maintenance script beside the app, which the app never imports.
        Valid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine("postgresql+asyncpg://app@db/app")
            """,
            path="scripts/backfill.py",
            files={
                "app/__init__.py": "",
                "app/main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
            },
        ),
        Valid(
            """
            from contextlib import asynccontextmanager
            from fastapi import FastAPI
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine("postgresql+asyncpg://app@db/app")

            @asynccontextmanager
            async def lifespan(app):
                yield
                await engine.dispose()

            app = FastAPI(lifespan=lifespan)
            """,
            path="app/main.py",
            files={"app/__init__.py": ""},
        ),
        # Disposed in another module, through an import.
        Valid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine("postgresql+asyncpg://app@db/app")
            """,
            path="app/db.py",
            files={
                "app/__init__.py": "",
                "app/main.py": _APP
                + "\n@app.on_event('shutdown')\nasync def close():\n    await engine.dispose()\n",
            },
        ),
        # A script, not an application.
        Valid(
            """
            from sqlalchemy import create_engine, text

            engine = create_engine("sqlite:///local.db")

            if __name__ == "__main__":
                with engine.connect() as conn:
                    conn.execute(text("VACUUM"))
            """
        ),
        # A sync engine in an app without shutdown hooks: nothing to add it to.
        Valid(
            """
            from sqlalchemy import create_engine

            engine = create_engine("postgresql+psycopg://app@db/app")
            """,
            path="app/db.py",
            files={"app/__init__.py": "", "app/main.py": _APP},
        ),
        # A sync SQLite engine: no server holds its connections.
        Valid(
            """
            from sqlalchemy import create_engine
            from app.utils import database_url

            engine = create_engine(database_url(), connect_args={"check_same_thread": False})
            replica = create_engine(f"sqlite:///{DATA_DIR}/replica.db")
            """,
            path="app/db.py",
            files={
                "app/__init__.py": "",
                "app/main.py": _APP + "\n@app.on_event('shutdown')\ndef bye():\n    pass\n",
            },
        ),
        # NullPool keeps no connection open between checkouts.
        Valid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            from sqlalchemy.pool import NullPool

            engine = create_async_engine("postgresql+asyncpg://app@db/app", poolclass=NullPool)
            """,
            path="app/db.py",
            files={"app/__init__.py": "", "app/main.py": _APP},
        ),
        # A dispose on something we cannot name might be this engine.
        Valid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine("postgresql+asyncpg://app@db/app")
            """,
            path="app/db.py",
            files={
                "app/__init__.py": "",
                "app/main.py": _APP
                + "\nasync def close(engines):\n    for e in engines:\n        await e.dispose()\n",
            },
        ),
    )
    INVALID = (
        Invalid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

            engine = create_async_engine("postgresql+asyncpg://app@db/app")
            SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
            """,
            path="app/db.py",
            files={"app/__init__.py": "", "app/main.py": _APP},
            line=3,
            expected_message=(
                "`engine` is never disposed: on shutdown and every reload its pooled connections "
                "are left open, and an AsyncEngine collected after its event loop closed raises "
                "`RuntimeError: Event loop is closed` — call `await engine.dispose()` when the "
                "app shuts down (in its lifespan)"
            ),
        ),
        # A queue pool named explicitly keeps its connections.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            from sqlalchemy.pool import AsyncAdaptedQueuePool

            engine = create_async_engine(
                "postgresql+asyncpg://app@db/app", poolclass=AsyncAdaptedQueuePool
            )
            """,
            path="app/db.py",
            files={"app/__init__.py": "", "app/main.py": _APP},
        ),
        # A lifespan exists but forgets the engine.
        Invalid(
            """
            from contextlib import asynccontextmanager
            from fastapi import FastAPI
            from sqlalchemy import create_engine

            engine = create_engine("postgresql+psycopg://app@db/app")

            @asynccontextmanager
            async def lifespan(app):
                yield
                print("bye")

            app = FastAPI(lifespan=lifespan)
            """,
            path="app/main.py",
            files={"app/__init__.py": ""},
            line=5,
        ),
        # Starlette with on_shutdown handlers that close other things.
        Invalid(
            """
            from starlette.applications import Starlette
            from sqlalchemy.ext.asyncio import create_async_engine
            from app.cache import close_cache

            engine = create_async_engine("postgresql+asyncpg://app@db/app")
            app = Starlette(on_shutdown=[close_cache])
            """,
            path="app/main.py",
            files={"app/__init__.py": "", "app/cache.py": "async def close_cache():\n    pass\n"},
            line=5,
        ),
        # A second engine (a replica) that the shutdown hook forgets.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine

            primary = create_async_engine("postgresql+asyncpg://app@db/app")
            replica = create_async_engine("postgresql+asyncpg://app@replica/app")
            """,
            path="app/db.py",
            files={
                "app/__init__.py": "",
                "app/main.py": """
                from fastapi import FastAPI
                from app.db import primary

                app = FastAPI()

                @app.on_event("shutdown")
                async def close():
                    await primary.dispose()
                """,
            },
            line=4,
            count=1,
        ),
        # Litestar, an engine imported under another name.
        Invalid(
            """
            from litestar import Litestar
            from sqlalchemy.ext.asyncio import create_async_engine as make_engine

            db_engine = make_engine("postgresql+asyncpg://app@db/app")
            app = Litestar(route_handlers=[])
            """,
            path="app/main.py",
            files={"app/__init__.py": ""},
            line=4,
        ),
    )

    @cached_property
    def strings(self) -> StringFlow:
        return StringFlow(self.ctx.dataflow)

    def visit_Module(self, node: ast.Module) -> None:
        facts = self.ctx.facts
        if not facts.orm.engines or _is_test(self.ctx.path):
            return
        index = self.ctx.index
        # An engine the app's modules import: a script beside the app disposes nothing.
        apps = index.apps_serving(facts.module)
        if not apps:
            return
        hooks = sum(f.orm.shutdown_hooks for f in index)
        for engine in facts.orm.engines:
            if not engine.is_async and hooks == 0:
                continue
            if engine.is_async and "asgi" not in apps:
                continue
            if index.is_disposed(engine.qualname) is not False:
                continue
            target = self._node(node, engine.line, engine.col)
            if (
                not engine.is_async
                and isinstance(target, ast.Call)
                and sqlite_engine(target, self.strings)
            ):
                continue  # no server holds its connections; the process's exit closes them
            if isinstance(target, ast.Call) and self._unpooled(target):
                continue  # NullPool closes each connection when it is returned
            name = engine.qualname.rpartition(".")[2]
            extra = (
                ", and an AsyncEngine collected after its event loop closed raises "
                "`RuntimeError: Event loop is closed`"
                if engine.is_async
                else ""
            )
            call = f"await {name}.dispose()" if engine.is_async else f"{name}.dispose()"
            self.report(target, engine=name, extra=extra, call=call)

    def _unpooled(self, call: ast.Call) -> bool:
        poolclass = call_keyword(call, "poolclass")
        if poolclass is None:
            return False
        name = self.ctx.names.sqla_name(poolclass.value)
        return name is not None and name.rpartition(".")[2] == "NullPool"

    @staticmethod
    def _node(module: ast.Module, line: int, col: int) -> ast.AST:
        """The engine's call, among module-level statements (and `if`/`try` blocks)."""
        statements: list[ast.stmt] = list(module.body)
        while statements:
            stmt = statements.pop(0)
            value = getattr(stmt, "value", None)
            if isinstance(value, ast.Call) and value.lineno == line and value.col_offset == col:
                return value
            if isinstance(stmt, (ast.If, ast.Try)):
                statements.extend(stmt.body)
                statements.extend(stmt.orelse)
        return module
