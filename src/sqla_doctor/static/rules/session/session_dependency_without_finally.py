"""SQD103: a generator dependency that yields a session without `with`/`finally`."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import FunctionFlow, SessionValue, flow_for, worth_analysing
from sqla_doctor.static.lifecycle import (
    CLOSERS,
    bound_to_connection,
    closed_in_finally,
    managed_by_with,
    method_calls,
)
from sqla_doctor.static.navigation import is_pytest_fixture
from sqla_doctor.static.rule import Invalid, Rule, Valid

_FILES = {
    "app/__init__.py": "",
    "app/database.py": """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_engine("postgresql+psycopg://app@db/app")
    SessionLocal = sessionmaker(bind=engine)
    async_engine = create_async_engine("postgresql+asyncpg://app@db/app")
    AsyncSessionLocal = async_sessionmaker(async_engine, expire_on_commit=False)
    """,
}


class SessionDependencyWithoutFinally(Rule):
    """
    ## What it does
    Checks for a generator — a FastAPI/Litestar dependency such as `get_db()`, or a
    `@contextmanager` such as `session_scope()` — that yields a session it created
    without a `with` block around the `yield` and without closing it in a `finally`.
    pytest fixtures are left alone: pytest resumes a fixture when its test ends, passed or
    failed, and never throws the test's exception into it.

    ## Why is this bad?
    When the request handler (or the `with` body) raises, the exception is thrown into
    the generator at the `yield`; the lines after it never run. `db.close()` is skipped,
    the connection stays checked out, and every failed request leaks one until the pool
    is exhausted: `QueuePool limit of size 5 overflow 10 reached`.

    ## Example
    ```python
    def get_db():
        db = SessionLocal()
        yield db
        db.close()
    ```

    Use instead:
    ```python
    def get_db():
        with SessionLocal() as db:
            yield db
    ```
    or `try: yield db` / `finally: db.close()` (or a cleanup helper the `finally` hands
    it to: `finally: safe_close(db)`).

    ## References
    - [FastAPI: Dependencies with yield](https://fastapi.tiangolo.com/tutorial/dependencies/dependencies-with-yield/)
    - [Session basics: closing](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#closing)
    """

    code = "SQD103"
    name = "session-dependency-without-finally"
    pitfalls = ("P35",)
    severity = Severity.ERROR
    message = "{problem}"

    VALID = (
        Valid(
            """
            from app.database import AsyncSessionLocal, SessionLocal

            def get_db():
                db = SessionLocal()
                try:
                    yield db
                finally:
                    db.close()

            async def get_async_db():
                async with AsyncSessionLocal() as session:
                    yield session
            """,
            path="app/deps.py",
            files=_FILES,
        ),
        # A `finally` that hands the session to a cleanup helper (which closes it,
        # swallowing a dropped connection's error).
        Valid(
            """
            from contextlib import contextmanager
            from app.database import SessionLocal

            def _safe_close(session):
                try:
                    session.close()
                except Exception:
                    pass

            @contextmanager
            def get_session():
                session = SessionLocal()
                try:
                    yield session
                finally:
                    _safe_close(session=session)
            """,
            path="app/deps.py",
            files=_FILES,
        ),
        # A unit-of-work context manager that commits, rolls back and closes.
        Valid(
            """
            from contextlib import contextmanager
            from app.database import SessionLocal

            @contextmanager
            def session_scope():
                session = SessionLocal()
                try:
                    yield session
                    session.commit()
                except Exception:
                    session.rollback()
                    raise
                finally:
                    session.close()
            """,
            path="app/deps.py",
            files=_FILES,
        ),
        # `with factory.begin()` commits or rolls back and closes.
        Valid(
            """
            from app.database import SessionLocal

            def get_tx():
                with SessionLocal.begin() as session:
                    yield session
            """,
            path="app/deps.py",
            files=_FILES,
        ),
        # Yields something that is not a session it created.
        Valid(
            """
            import requests

            def client():
                s = requests.Session()
                yield s
                s.close()

            def passthrough(session):
                yield session
            """,
            path="app/deps.py",
            files=_FILES,
        ),
        # A test fixture: a session on a connection the fixture rolls back and closes.
        Valid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession

            async def session(engine):
                connection = await engine.connect()
                transaction = await connection.begin()
                session = AsyncSession(bind=connection, expire_on_commit=False)
                yield session
                await transaction.rollback()
                await connection.close()
            """
        ),
        # A pytest fixture: pytest runs what follows the `yield` after a failed test too.
        Valid(
            """
            import pytest
            import pytest_asyncio
            from app.database import AsyncSessionLocal, SessionLocal

            @pytest.fixture
            def db():
                session = SessionLocal()
                yield session
                session.close()

            @pytest_asyncio.fixture(scope="function")
            async def adb():
                session = AsyncSessionLocal()
                yield session
                await session.close()
            """,
            path="tests/conftest.py",
            files=_FILES,
        ),
        # The same through a factory bound to the connection the generator's `with` owns.
        Valid(
            """
            from contextlib import asynccontextmanager
            from sqlalchemy.ext.asyncio import async_sessionmaker

            @asynccontextmanager
            async def read_committed(engine):
                async with engine.connect() as conn:
                    isolated = await conn.execution_options(isolation_level="READ COMMITTED")
                    async with isolated.begin():
                        factory = async_sessionmaker(bind=isolated, expire_on_commit=False)
                        session = factory()
                        yield session
            """
        ),
        # A generator that only reads from a session it manages with `with`.
        Valid(
            """
            from app.database import SessionLocal
            from app.models import User

            def iter_users():
                with SessionLocal() as s:
                    yield from s.query(User)
            """,
            path="app/deps.py",
            files=_FILES,
        ),
    )
    INVALID = (
        Invalid(
            """
            from app.database import SessionLocal

            def get_db():
                db = SessionLocal()
                yield db
                db.close()
            """,
            path="app/deps.py",
            files=_FILES,
            line=5,
            expected_message=(
                "`get_db()` yields `db` without `try`/`finally`: when the caller raises, "
                "`db.close()` (line 6) never runs and the connection leaks — wrap the `yield` "
                "in `try:` … `finally: db.close()`, or use `with SessionLocal() as db: yield db`"
            ),
        ),
        # A context manager of the tests, not a fixture: the `with` body's exception is
        # thrown into it.
        Invalid(
            """
            from contextlib import contextmanager
            import pytest
            from app.database import SessionLocal

            @contextmanager
            def session_for_test():
                session = SessionLocal()
                yield session
                session.close()
            """,
            path="tests/conftest.py",
            files=_FILES,
            line=8,
        ),
        # A factory the generator makes on an engine: each session checks out its own.
        Invalid(
            """
            from contextlib import asynccontextmanager
            from sqlalchemy.ext.asyncio import async_sessionmaker

            @asynccontextmanager
            async def session_scope(engine):
                factory = async_sessionmaker(bind=engine, expire_on_commit=False)
                session = factory()
                yield session
            """,
            line=8,
        ),
        # Rolls back on error, but closes only on success.
        Invalid(
            """
            from app.database import AsyncSessionLocal

            async def get_session():
                session = AsyncSessionLocal()
                try:
                    yield session
                except Exception:
                    await session.rollback()
                    raise
                await session.close()
            """,
            path="app/deps.py",
            files=_FILES,
            line=6,
        ),
        # Handed to a helper after the `yield`, not in a `finally`.
        Invalid(
            """
            from app.database import SessionLocal
            from app.cleanup import safe_close

            def get_db():
                db = SessionLocal()
                try:
                    yield db
                except Exception:
                    db.rollback()
                    raise
                safe_close(db)
            """,
            path="app/deps.py",
            files={**_FILES, "app/cleanup.py": "def safe_close(s):\n    s.close()\n"},
            line=7,
        ),
        # Never closed at all, yielded straight from the factory call.
        Invalid(
            """
            from app import database

            def get_db():
                yield database.SessionLocal()
            """,
            path="app/deps.py",
            files=_FILES,
            line=4,
        ),
        # A @contextmanager that commits after the yield but has no finally.
        Invalid(
            """
            from contextlib import contextmanager
            from app.database import SessionLocal

            @contextmanager
            def session_scope():
                session = SessionLocal()
                yield session
                session.commit()
                session.close()
            """,
            path="app/deps.py",
            files=_FILES,
            line=7,
        ),
        # Session(engine) in a Litestar-style provider, aliased import.
        Invalid(
            """
            from sqlalchemy.orm import Session as OrmSession
            from app.database import engine

            def provide_session():
                session = OrmSession(engine)
                yield session
            """,
            path="app/deps.py",
            files=_FILES,
            line=6,
        ),
    )

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if not worth_analysing(self.ctx, node) or is_pytest_fixture(self.ctx.names, node):
            return  # pytest resumes a fixture after its test, failed or not: never thrown into
        flow = flow_for(self.ctx, node)
        if not flow.yields:
            return
        for yielded in flow.yields:
            if not isinstance(yielded, ast.Yield) or yielded.value is None:
                continue
            value = yielded.value
            if isinstance(value, ast.Name):
                self._named(flow, node, yielded, value.id)
            else:
                made = flow.value(value)
                if isinstance(made, SessionValue) and made.how == "call" and not made.scoped:
                    with_ = "async with" if isinstance(node, ast.AsyncFunctionDef) else "with"
                    self.report(
                        yielded,
                        problem=(
                            f"`{node.name}()` yields a new session that nothing closes: the "
                            f"connection leaks on every call — use `{with_} "
                            f"{self.ctx.text(value)} as session: yield session`"
                        ),
                    )

    visit_AsyncFunctionDef = visit_FunctionDef

    def _named(
        self,
        flow: FunctionFlow,
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        yielded: ast.Yield,
        name: str,
    ) -> None:
        binding = flow.binding(name, yielded)
        if binding is None or binding.kind != "assign":
            return
        session = flow.binding_value(binding)
        if not isinstance(session, SessionValue) or session.how != "call" or session.scoped:
            return
        if managed_by_with(flow, name) or closed_in_finally(flow, name):
            return
        if bound_to_connection(flow, binding.value):
            return  # a test fixture's session on a connection it rolls back and closes
        made = (
            " ".join(self.ctx.text(binding.value).split()) if binding.value is not None else "..."
        )
        closes = [c for m, c in method_calls(flow, name) if m in CLOSERS]
        with_ = "async with" if isinstance(node, ast.AsyncFunctionDef) else "with"
        if closes:
            close_text = self.ctx.text(closes[0])
            if isinstance(flow.parent(closes[0]), ast.Await):
                close_text = f"await {close_text}"
            problem = (
                f"`{node.name}()` yields `{name}` without `try`/`finally`: when the caller "
                f"raises, `{close_text}` (line {closes[0].lineno}) never runs and the connection "
                f"leaks — wrap the `yield` in `try:` … `finally: {close_text}`, or use "
                f"`{with_} {made} as {name}: yield {name}`"
            )
        else:
            problem = (
                f"`{node.name}()` yields `{name}` but never closes it: every call leaks a "
                f"connection — use `{with_} {made} as {name}: yield {name}`"
            )
        self.report(yielded, problem=problem)
