"""SQD102: a session created outside `with` and never closed in a `finally`."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import FunctionFlow, SessionValue, flow_for, worth_analysing
from sqla_doctor.static.lifecycle import (
    CLOSERS,
    bound_to_connection,
    closed_by_helper,
    closed_in_finally,
    escapes,
    managed_by_with,
    method_calls,
    unbound,
)
from sqla_doctor.static.rule import Invalid, Rule, Valid

_DB = """
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker, scoped_session

engine = create_engine("postgresql+psycopg://app@db/app", pool_pre_ping=True)
SessionLocal = sessionmaker(bind=engine, expire_on_commit=False)
ScopedSession = scoped_session(SessionLocal)
"""
_FILES = {"app/__init__.py": "", "app/db.py": _DB}
# The factory's name rebound to a registry of it, in one branch (packit-service's models):
# `Session()` is then the thread's session, which the registry keeps and removes.
_REBOUND = """
import os
from sqlalchemy import create_engine
from sqlalchemy.orm import scoped_session, sessionmaker

engine = create_engine("postgresql+psycopg://app@db/app", pool_pre_ping=True)
Session = sessionmaker(bind=engine)
if os.environ.get("POOL") == "gevent":
    singleton_session = Session()
else:
    {name} = scoped_session(Session)
    singleton_session = None
"""
_THROUGH_REBOUND = """
from app.models import Session

def rename(user, name):
    user.name = name
    Session().add(user)
    Session().commit()
"""

# Factories a helper returns in a tuple, unpacked at module level: only the names bound
# to a factory by that one `return` are factories.
_TUPLE_DB = """
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import sessionmaker

def make_db(url):
    engine = create_engine(url)
    return engine, sessionmaker(engine)

def make_async(url):
    engine = create_async_engine(url)
    factory = async_sessionmaker(engine, expire_on_commit=False)
    return factory, engine

def make_plain(url):
    return create_engine(url), url

def make_factory(url):
    return sessionmaker(create_engine(url))

def make_either(url, fast):
    engine = create_engine(url)
    if fast:
        return engine, sessionmaker(engine)
    return engine, None

engine, SessionLocal = make_db("sqlite://")
AsyncSessionLocal, async_engine = make_async("sqlite+aiosqlite://")
plain_engine, NotAFactory = make_plain("sqlite://")
either_engine, Either = make_either("sqlite://", True)
"""
_TUPLE_FILES = {"app/__init__.py": "", "app/db.py": _TUPLE_DB}
_TUPLE_USE = """
from sqlalchemy import text
from app.db import {name}, make_db

def count(url):
    {unpack}
    session = {name}()
    return session.scalar(text("SELECT count(*) FROM users"))
"""

# A script that makes its factory in the function that uses it.
_LOCAL_FACTORY = """
from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

def main(url):
    engine = create_engine(url)
    Session = sessionmaker(bind=engine)
    {open}
        print(session.scalar(text("SELECT 1")))
    engine.dispose()
"""


# hypothesis/h's streamer: one session for the worker's life, each message in a
# transaction that a context manager of the project ends (and closes the session).
_PER_MESSAGE = """
from app.db import SessionLocal
from app.transactions import read_only_transaction

def process_work_queue(queue):
    session = SessionLocal()
    for message in queue:
        with read_only_transaction(session):
            message.handle(session)
"""
_TRANSACTIONS = """
from contextlib import contextmanager

@contextmanager
def read_only_transaction(session):
    try:
        yield
    except Exception:
        session.rollback()
    else:
        session.commit(){close}
"""


class SessionNotClosed(Rule):
    """
    ## What it does
    Checks for a session made by calling a factory (`SessionLocal()`, `Session(engine)`,
    `AsyncSession(engine)`, a `sessionmaker` under any name or alias, in any module)
    that is neither used as a context manager nor closed in a `finally` block (its own,
    or one of a project function it is handed to, such as a context manager that ends a
    transaction per message: `with read_only_transaction(session):`), and does not leave
    the function (returned, yielded, stored on an object).

    ## Why is this bad?
    A session that is not closed keeps its connection checked out until the garbage
    collector finds it, and an exception between creation and `close()` skips the
    close entirely. A final `commit()` gives the connection back to the pool, but only
    when nothing raised before it. Under load the pool runs dry: `TimeoutError: QueuePool limit of
    size 5 overflow 10 reached, connection timed out`.

    ## Known problems
    Sessions from `scoped_session` registries (closed by `remove()` at the end of the
    request) and Flask-SQLAlchemy's `db.session` are not reported; a module-level global
    session is a different problem and is not reported either.

    ## Example
    ```python
    def import_users(rows):
        session = SessionLocal()
        session.add_all(User(**row) for row in rows)
        session.commit()
        session.close()
    ```

    Use instead:
    ```python
    def import_users(rows):
        with SessionLocal() as session:
            session.add_all(User(**row) for row in rows)
            session.commit()
    ```

    ## References
    - [Opening and Closing a Session](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#opening-and-closing-a-session)
    - [When do I construct a Session, when do I commit it, and when do I close it?](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#session-faq-whentocreate)
    """

    code = "SQD102"
    name = "session-not-closed"
    pitfalls = ("P06",)
    severity = Severity.WARNING
    message = "{problem}"

    VALID = (
        # Not a factory at that position, or not one on every path of the helper.
        Valid(
            _TUPLE_USE.format(name="NotAFactory", unpack="pass"),
            path="app/jobs.py",
            files=_TUPLE_FILES,
        ),
        Valid(
            _TUPLE_USE.format(name="Either", unpack="pass"),
            path="app/jobs.py",
            files=_TUPLE_FILES,
        ),
        Valid(
            _TUPLE_USE.format(name="Local", unpack='Local, engine = make_db(url)').replace(
                "from app.db import Local, ", "from app.db import "
            ),
            path="app/jobs.py",
            files=_TUPLE_FILES,
        ),
        Valid(_LOCAL_FACTORY.format(open="with Session() as session:")),
        Valid(
            _THROUGH_REBOUND,
            path="app/views.py",
            files={**_FILES, "app/models.py": _REBOUND.format(name="Session")},
        ),
        # Closed by the project's context manager, in its `finally`, after each message.
        Valid(
            _PER_MESSAGE,
            path="app/streamer.py",
            files={
                **_FILES,
                "app/transactions.py": _TRANSACTIONS.format(
                    close="\n    finally:\n        session.close()"
                ),
            },
        ),
        # A session with nothing to connect to, used to see what add() cascades to.
        Valid(
            """
            from sqlalchemy.orm import Session

            def cascaded(instance):
                session = Session()
                session.add(instance)
                related = list(session.new)
                session.expunge_all()
                return related
            """
        ),
        Valid(
            """
            from app.db import SessionLocal

            def a():
                with SessionLocal() as session:
                    session.commit()

            def b():
                session = SessionLocal()
                try:
                    session.commit()
                finally:
                    session.close()

            def c():
                with SessionLocal.begin() as session:
                    session.execute("SELECT 1")
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Handed out: returned, yielded (SQD103's), stored on an object.
        Valid(
            """
            from app.db import SessionLocal

            def make():
                return SessionLocal()

            def get_db():
                db = SessionLocal()
                try:
                    yield db
                finally:
                    db.close()

            class UnitOfWork:
                def __enter__(self):
                    self.session = SessionLocal()
                    return self
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # A scoped_session registry, Flask-SQLAlchemy's db.session.
        Valid(
            """
            from flask_sqlalchemy import SQLAlchemy
            from app.db import ScopedSession

            db = SQLAlchemy()

            def a():
                session = ScopedSession()
                session.commit()
                db.session.commit()
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Not a session: a requests session, a factory of something else.
        Valid(
            """
            import requests
            from app.db import engine

            def a():
                session = requests.Session()
                session.get("https://example.com")
                conn = engine.connect()
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Bound to a connection someone else owns (tests, Alembic migrations).
        Valid(
            """
            from alembic import op
            from sqlalchemy.orm import Session

            def upgrade():
                bind = op.get_bind()
                session = Session(bind=bind)
                session.execute("UPDATE users SET active = true")
                session.commit()

            async def fixture(engine):
                connection = await engine.connect()
                s = Session(bind=connection, join_transaction_mode="create_savepoint")
                return 1
            """
        ),
        # A factory made on Alembic's connection: its sessions join the migration's
        # transaction and hold no connection of their own.
        Valid(
            """
            import sqlalchemy as sa
            from alembic import op
            from sqlalchemy.orm import sessionmaker

            def upgrade():
                factory = sessionmaker(op.get_bind())
                db_session = factory()
                db_session.execute(sa.text("UPDATE users SET active = true"))
            """
        ),
        # A factory without a bind, called on Alembic's connection (openstack watcher).
        Valid(
            """
            from alembic import op
            from sqlalchemy.orm import sessionmaker

            def upgrade():
                connection = op.get_bind()
                session = sessionmaker()
                s = session(bind=connection)
                s.query(Audit).filter(Audit.name.is_(None)).update({"name": "x"})
                s.commit()
            """
        ),
        # Async: `async with`, and `await s.close()` in a finally.
        Valid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

            factory = async_sessionmaker(expire_on_commit=False)

            async def a(engine):
                async with AsyncSession(engine) as s:
                    await s.commit()
                s2 = factory()
                try:
                    await s2.commit()
                finally:
                    await s2.close()
            """
        ),
    )
    INVALID = (
        # The registry has a name of its own: `Session()` makes a new session each time.
        Invalid(
            _THROUGH_REBOUND,
            path="app/views.py",
            files={**_FILES, "app/models.py": _REBOUND.format(name="Registry")},
            line=5,
            count=2,
        ),
        # A factory a helper returned in a tuple, unpacked at module level or here.
        Invalid(
            _TUPLE_USE.format(name="SessionLocal", unpack="pass"),
            path="app/jobs.py",
            files=_TUPLE_FILES,
            line=6,
            expected_message=(
                "`session = SessionLocal()` is never closed: its connection stays checked out "
                "until garbage collection — use `with SessionLocal() as session:` or close it "
                "in a `finally`"
            ),
        ),
        Invalid(
            _TUPLE_USE.format(name="AsyncSessionLocal", unpack="pass"),
            path="app/jobs.py",
            files=_TUPLE_FILES,
            line=6,
        ),
        Invalid(
            _TUPLE_USE.format(name="Local", unpack='engine, Local = make_db(url)').replace(
                "from app.db import Local, ", "from app.db import "
            ),
            path="app/jobs.py",
            files=_TUPLE_FILES,
            line=6,
        ),
        Invalid(
            _TUPLE_USE.format(name="Local", unpack="Local = make_factory(url)").replace(
                "from app.db import Local, make_db", "from app.db import make_factory"
            ),
            path="app/jobs.py",
            files=_TUPLE_FILES,
            line=6,
        ),
        # A factory without a bind, called on an engine: the session checks out a connection.
        Invalid(
            """
            from sqlalchemy import create_engine
            from sqlalchemy.orm import sessionmaker

            def backfill(url):
                engine = create_engine(url)
                session = sessionmaker()
                s = session(bind=engine)
                s.query(Audit).filter(Audit.name.is_(None)).update({"name": "x"})
                s.commit()
            """,
            line=7,
        ),
        # The same context manager ends each transaction but never closes the session.
        Invalid(
            _PER_MESSAGE,
            path="app/streamer.py",
            files={**_FILES, "app/transactions.py": _TRANSACTIONS.format(close="")},
            line=5,
        ),
        Invalid(
            _LOCAL_FACTORY.format(open="session = Session()\n    if session:"),
            line=7,
            expected_message=(
                "`session = Session()` is never closed: its connection stays checked out "
                "until garbage collection — use `with Session() as session:` or close it in "
                "a `finally`"
            ),
        ),
        Invalid(
            """
            from app.db import SessionLocal
            from app.models import User

            def import_users(rows):
                session = SessionLocal()
                session.add_all(User(**row) for row in rows)
                session.commit()
            """,
            path="app/jobs.py",
            files=_FILES,
            line=5,
            expected_message=(
                "`session = SessionLocal()` gives its connection back at `commit()` (line 7) "
                "only if nothing raises before it: an exception leaks the connection until "
                "garbage collection — use `with SessionLocal() as session:` or close it in a "
                "`finally`"
            ),
        ),
        # Closed, but only when nothing raised before.
        Invalid(
            """
            from app.db import SessionLocal as make_session

            def purge():
                s = make_session()
                s.execute("DELETE FROM audit")
                s.commit()
                s.close()
            """,
            path="app/jobs.py",
            files=_FILES,
            line=4,
            expected_message=(
                "`s = make_session()` is closed at line 7 only if nothing raises before it: "
                "an exception leaks its connection — use `with make_session() as s:` or close "
                "it in a `finally`"
            ),
        ),
        # The tutorial's `Session = sessionmaker(engine)`: a factory named like the class.
        Invalid(
            """
            from app.factory import Session

            def rename(user_id, name):
                session = Session()
                session.execute("UPDATE users SET name = :n", {"n": name})
                session.commit()
            """,
            path="app/jobs.py",
            files={
                **_FILES,
                "app/factory.py": """
                from sqlalchemy import create_engine
                from sqlalchemy.orm import sessionmaker

                Session = sessionmaker(bind=create_engine("sqlite:///app.db"))
                """,
            },
            line=4,
        ),
        # A session made and used in one expression: nobody can close it.
        Invalid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            def count():
                return len(SessionLocal().scalars(select(User)).all())
            """,
            path="app/jobs.py",
            files=_FILES,
            line=6,
        ),
        # A factory made on an engine: its session checks out a connection of its own.
        Invalid(
            """
            from sqlalchemy import text
            from sqlalchemy.orm import sessionmaker

            def backfill(engine):
                factory = sessionmaker(engine)
                db_session = factory()
                db_session.execute(text("UPDATE users SET active = true"))
                db_session.commit()
            """,
            line=6,
        ),
        # Session(engine) in an async task.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession

            async def refresh_cache(engine):
                session = AsyncSession(engine)
                await session.execute("REFRESH MATERIALIZED VIEW stats")
                await session.commit()
            """,
            line=4,
            expected_message=(
                "`session = AsyncSession(engine)` gives its connection back at `commit()` (line "
                "6) only if nothing raises before it: an exception leaks the connection until "
                "garbage collection — use `async with AsyncSession(engine) as session:` or close "
                "it in a `finally`"
            ),
        ),
        # A method that opens a session for a unit of work but closes it outside finally.
        Invalid(
            """
            from app import db

            class Exporter:
                def run(self):
                    session = db.SessionLocal()
                    rows = session.execute("SELECT * FROM users").all()
                    session.close()
                    return rows
            """,
            path="app/export.py",
            files=_FILES,
            line=5,
        ),
    )

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if not worth_analysing(self.ctx, node):
            return
        flow = flow_for(self.ctx, node)
        for name, binding, value in flow.sessions():
            if binding.kind != "assign" or value.how != "call" or not self._owns(value):
                continue
            call = binding.value
            assert call is not None
            if managed_by_with(flow, name) or closed_in_finally(flow, name) or escapes(flow, name):
                continue
            if closed_by_helper(self.ctx.index, flow, name):
                continue
            if bound_to_connection(flow, call) or unbound(value, call):
                continue
            # Rebound later to something else, or bound in a loop: stay simple.
            if len(flow.bindings.get(name, ())) > 1:
                continue
            self._report_binding(flow, name, call, bool(value.is_async))
        for call in flow.calls:
            func = call.func
            if not isinstance(func, ast.Attribute) or not isinstance(func.value, ast.Call):
                continue
            if func.attr in ("begin", "close") or isinstance(flow.parent(call), (ast.withitem,)):
                continue
            made = flow.value(func.value)
            if (
                isinstance(made, SessionValue)
                and made.how == "call"
                and self._owns(made)
                and not bound_to_connection(flow, func.value)
            ):
                text = " ".join(self.ctx.text(func.value).split())
                self.report(
                    func.value,
                    problem=(
                        f"`{text}` makes a session that nothing can close: its connection stays "
                        f"checked out until garbage collection — use `with {text} as session:`"
                    ),
                )

    visit_AsyncFunctionDef = visit_FunctionDef

    @staticmethod
    def _owns(value: SessionValue) -> bool:
        return (
            not value.scoped and not value.commits and not (value.source or "").endswith(".begin")
        )

    def _report_binding(
        self, flow: FunctionFlow, name: str, call: ast.expr, is_async: bool
    ) -> None:
        made = " ".join(self.ctx.text(call).split())
        if len(made) > 40:
            made = made[:37] + "..."
        closes = [c for m, c in method_calls(flow, name) if m in CLOSERS]
        use = f"use `with {made} as {name}:` or close it in a `finally`"
        if isinstance(call, ast.Await):
            use = f"use `async with {made[6:]} as {name}:` or close it in a `finally`"
        elif is_async:
            # `AsyncSession(engine)` / `async_session()`: an async context manager.
            use = f"use `async with {made} as {name}:` or close it in a `finally`"
        ends = _ends_with_commit(flow, name)
        if closes:
            problem = (
                f"`{name} = {made}` is closed at line {closes[0].lineno} only if nothing raises "
                f"before it: an exception leaks its connection — {use}"
            )
        elif ends is not None and isinstance(ends.func, ast.Attribute):
            # Session.commit()/rollback() end the transaction and give the connection back
            # to the pool: only an exception before them keeps it checked out.
            problem = (
                f"`{name} = {made}` gives its connection back at `{ends.func.attr}()` (line "
                f"{ends.lineno}) only if nothing raises before it: an exception leaks the "
                f"connection until garbage collection — {use}"
            )
        else:
            problem = (
                f"`{name} = {made}` is never closed: its connection stays checked out until "
                f"garbage collection — {use}"
            )
        self.report(call, problem=problem)


def _ends_with_commit(flow: FunctionFlow, name: str) -> ast.Call | None:
    """``name.commit()`` (or ``rollback()``) as a statement of the function's own body and
    the last use of ``name``: on the way without exceptions, nothing stays checked out."""
    loads = flow.name_loads.get(name, [])
    if not loads:
        return None
    last = max(loads, key=lambda load: (load.lineno, load.col_offset))
    body = flow.node.body if isinstance(flow.node.body, list) else []
    for stmt in body:
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if isinstance(call, ast.Await):
            call = call.value
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr in ("commit", "rollback")
            and call.func.value is last
        ):
            return call
    return None
