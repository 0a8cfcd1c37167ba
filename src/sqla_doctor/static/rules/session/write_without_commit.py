"""SQD104: writes in a session block that never commits."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import FunctionFlow, StatementValue, flow_for, worth_analysing
from sqla_doctor.static.index.models import literal_str
from sqla_doctor.static.lifecycle import (
    WRITES,
    OwnedSession,
    bound_to_connection,
    escapes,
    method_calls,
    owned_sessions,
    unbound,
)
from sqla_doctor.static.rule import Invalid, Rule, Valid

_DML = ("insert", "update", "delete", "merge", "upsert")
_FILES = {
    "app/__init__.py": "",
    "app/db.py": """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    engine = create_engine("sqlite:///app.db")
    SessionLocal = sessionmaker(engine)
    """,
    "app/models.py": """
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
    """,
}


class WriteWithoutCommit(Rule):
    """
    ## What it does
    Checks for a session this function opens (`with SessionLocal() as s`, or
    `s = SessionLocal()`) that receives writes — `add()`, `add_all()`, `delete()`,
    `merge()`, `execute(insert/update/delete(...))` — but is never committed: no
    `commit()`, no `begin()` block, no `SessionLocal.begin()`.

    ## Why is this bad?
    Closing a session rolls back its transaction. The code runs without an error, the
    objects even get primary keys after a flush, and the data is silently gone: the
    classic forgotten commit.

    ## Known problems
    A session handed to another function (which may commit) is not reported, nor one
    that is explicitly rolled back or flushed (tests and dry runs do this on purpose).
    Sessions the function receives (parameters, dependencies) are the caller's to
    commit.

    ## Example
    ```python
    def rename(user_id, name):
        with SessionLocal() as session:
            session.execute(update(User).where(User.id == user_id).values(name=name))
    ```

    Use instead:
    ```python
    def rename(user_id, name):
        with SessionLocal.begin() as session:
            session.execute(update(User).where(User.id == user_id).values(name=name))
    ```

    ## References
    - [Committing](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    - [Framing out a begin / commit / rollback block](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#framing-out-a-begin-commit-rollback-block)
    """

    code = "SQD104"
    name = "write-without-commit"
    pitfalls = ("P17",)
    severity = Severity.ERROR
    message = (
        "`{write}` is never committed: `{session}` (line {line}) is closed without "
        "`{session}.commit()`, which rolls the write back — commit before the block ends, "
        "or open it with `.begin()`"
    )

    VALID = (
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
            from app.models import User

            def a(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
                    session.commit()

            def b(name):
                with SessionLocal.begin() as session:
                    session.add(User(name=name))

            def c(name):
                with SessionLocal() as session, session.begin():
                    session.add(User(name=name))
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Handed to a function that may commit; a deliberate rollback; a flush in a test.
        Valid(
            """
            from app.db import SessionLocal
            from app.models import User
            from app.service import save

            def a(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
                    save(session)

            def b(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
                    session.rollback()

            def c(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
                    session.flush()
                    assert session.get(User, 1)
            """,
            path="app/jobs.py",
            files={**_FILES, "app/service.py": "def save(session):\n    session.commit()\n"},
        ),
        # A session the function receives: the caller commits (unit of work).
        Valid(
            """
            from sqlalchemy.orm import Session
            from app.models import User

            def create(session: Session, name: str) -> User:
                user = User(name=name)
                session.add(user)
                return user
            """,
            path="app/crud.py",
            files=_FILES,
        ),
        # Reads only.
        Valid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            def names():
                with SessionLocal() as session:
                    return session.scalars(select(User.name)).all()
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # A requests session's `delete()` is not a write to the database.
        Valid(
            """
            import requests

            def purge(url):
                with requests.Session() as session:
                    session.delete(url)
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
    )
    INVALID = (
        Invalid(
            """
            from app.db import SessionLocal
            from app.models import User

            def create(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
            """,
            path="app/jobs.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`session.add(User(name=name))` is never committed: `session` (line 5) is "
                "closed without `session.commit()`, which rolls the write back — commit before "
                "the block ends, or open it with `.begin()`"
            ),
        ),
        # A bulk UPDATE through execute().
        Invalid(
            """
            import sqlalchemy as sa
            from app.db import SessionLocal
            from app.models import User

            def rename(user_id, name):
                with SessionLocal() as s:
                    s.execute(sa.update(User).where(User.id == user_id).values(name=name))
            """,
            path="app/jobs.py",
            files=_FILES,
            line=7,
        ),
        # Raw DML through text().
        Invalid(
            """
            from sqlalchemy import text
            from app.db import SessionLocal

            def purge():
                session = SessionLocal()
                try:
                    session.execute(text("DELETE FROM audit WHERE created < now() - interval '1y'"))
                finally:
                    session.close()
            """,
            path="app/jobs.py",
            files=_FILES,
            line=7,
        ),
        # Async, delete() of a loaded object.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.models import User

            async def remove(engine, user_id):
                async with AsyncSession(engine) as session:
                    user = await session.get(User, user_id)
                    await session.delete(user)
            """,
            path="app/jobs.py",
            files=_FILES,
            line=7,
        ),
        # A Celery-style task with a session from the factory and add_all().
        Invalid(
            """
            from app import db
            from app.models import User

            def import_rows(rows):
                with db.SessionLocal() as session:
                    session.add_all([User(name=row["name"]) for row in rows])
                    return len(rows)
            """,
            path="app/tasks.py",
            files=_FILES,
            line=6,
        ),
    )

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if not worth_analysing(self.ctx, node):
            return
        flow = flow_for(self.ctx, node)
        for owned in owned_sessions(flow):
            if owned.value.commits or owned.value.scoped or owned.value.how == "flask":
                continue
            self._check(flow, owned)

    visit_AsyncFunctionDef = visit_FunctionDef

    def _check(self, flow: FunctionFlow, owned: OwnedSession) -> None:
        name = owned.name
        if len(flow.bindings.get(name, ())) > 1 or escapes(flow, name):
            return
        calls = method_calls(flow, name)
        methods = {method for method, _ in calls}
        if methods & {"commit", "begin", "rollback", "flush", "begin_nested", "in_transaction"}:
            return
        # Objects added and then expunged, or a session that can never connect, are
        # deliberately not written (code computing cascades with `session.new`).
        if "expunge_all" in methods or unbound(owned.value, owned.binding.value):
            return
        # Passed whole to another function (which may commit): not ours to judge.
        for load in flow.name_loads.get(name, ()):
            parent = flow.parent(load)
            if isinstance(parent, (ast.Call, ast.keyword, ast.withitem)):
                return
        # On a connection someone else commits (an Alembic migration, a test), statements
        # run in that transaction; only objects never flushed are lost.
        on_connection = bound_to_connection(flow, owned.binding.value)
        write = next(
            (
                call
                for method, call in calls
                if self._is_write(flow, method, call)
                and not (on_connection and method == "execute")
            ),
            None,
        )
        if write is None:
            return
        text = self.ctx.text(write)
        if len(text) > 50:
            text = text[:47] + "..."
        self.report(write, write=text, session=name, line=owned.binding.node.lineno)  # type: ignore[attr-defined]

    @staticmethod
    def _is_write(flow: FunctionFlow, method: str, call: ast.Call) -> bool:
        if method in WRITES:
            return True
        if method != "execute" or not call.args:
            return False
        statement = flow.value(call.args[0])
        if isinstance(statement, StatementValue):
            return statement.kind in ("insert", "update", "delete")
        arg = call.args[0]
        if isinstance(arg, ast.Call) and flow.sqla_name(arg.func) == "text" and arg.args:
            raw = literal_str(arg.args[0]) or ""
            return raw.lstrip().lower().startswith(_DML)
        return bool(
            isinstance(arg, ast.Call) and flow.sqla_name(arg.func) in ("insert", "update", "delete")
        )
