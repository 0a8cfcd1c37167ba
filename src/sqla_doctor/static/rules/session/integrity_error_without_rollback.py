"""SQD105: a session used again after a caught IntegrityError, without `rollback()`."""

from __future__ import annotations

import ast
from collections.abc import Sequence

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import FunctionFlow, StatementValue, contains, flow_for, receiver_key
from sqla_doctor.static.rule import Invalid, Rule, Valid

# Errors raised by a failed flush or statement, SQLAlchemy's and the drivers'.
_DB_ERRORS = frozenset(
    {
        "IntegrityError",
        "DBAPIError",
        "DatabaseError",
        "SQLAlchemyError",
        "OperationalError",
        "DataError",
        "InternalError",
        "ProgrammingError",
        "StatementError",
        "UniqueViolation",
        "UniqueViolationError",
        "ForeignKeyViolation",
        "ForeignKeyViolationError",
        "NotNullViolation",
        "NotNullViolationError",
        "CheckViolation",
        "CheckViolationError",
        "ExclusionViolation",
        "IntegrityConstraintViolationError",
        "PostgresError",
        "Error",
    }
)
_DB_MODULES = (
    "sqlalchemy",
    "sqlmodel",
    "psycopg",
    "psycopg2",
    "asyncpg",
    "pymysql",
    "MySQLdb",
    "sqlite3",
    "aiosqlite",
    "asyncmy",
    "oracledb",
    "pyodbc",
)
# Statements that make a transaction fail when they do.
_FAILING = frozenset(
    {
        "commit",
        "flush",
        "execute",
        "scalars",
        "scalar",
        "merge",
        "get",
        "refresh",
        "exec",
        "bulk_save_objects",
        "bulk_insert_mappings",
        "bulk_update_mappings",
    }
)
# Methods that end the failed transaction: a closed Session starts a new one when used
# again; a closed connection is done with (scoped_session's `remove()` closes its
# session); the `transaction` package's `abort()` rolls back every session joined to it
# (zope.sqlalchemy, pyramid_tm).
_ENDING = frozenset({"rollback", "close", "remove", "abort"})
# Methods that are fine on a failed session.
_SAFE = frozenset(
    {
        "rollback",
        "close",
        "expunge",
        "expunge_all",
        "invalidate",
        "in_transaction",
        "is_active",
        "remove",
        "begin_nested",
    }
)
_EXITS = (ast.Raise, ast.Return, ast.Continue, ast.Break)


def _savepoint_of(flow: FunctionFlow, node: ast.expr, key: str) -> bool:
    """Whether ``node`` names a transaction begun on the session ``key``."""
    if not isinstance(node, ast.Name):
        return False
    binding = flow.binding(node.id, node)
    value = binding.value if binding is not None and binding.kind in ("assign", "with") else None
    if isinstance(value, ast.Await):
        value = value.value
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr in ("begin_nested", "begin")
        and receiver_key(value.func.value) == key
    )


def _legacy_query_of_flask(flow: FunctionFlow, node: ast.expr) -> bool:
    value = flow.value(node)
    return isinstance(value, StatementValue) and value.kind == "query" and value.session is None


_REPOSITORY = """
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def by_email(self, email):
        return await self.session.scalar(select(User).where(User.email == email))

    async def create(self, user, email):
        self.session.add(user)
        try:
            await self.session.commit()
        except IntegrityError:{recover}
            return await self.by_email(email)
        return user
"""


def _own_method_uses(flow: FunctionFlow, func: ast.Attribute, key: str) -> bool:
    """``self.find(name)`` for the failed ``self.session``: a method of this class that
    runs statements on that session."""
    owner, _, attr = key.partition(".")
    if not attr or "." in attr or not isinstance(func.value, ast.Name) or func.value.id != owner:
        return False
    method = flow.own_method(owner, func.attr)
    if method is None:
        return False
    called = {
        path[1][:-2]
        for position, iterated, path in method.reads
        if position == 0 and not iterated and len(path) == 2 and path[0] == attr
        if path[1].endswith("()")
    }
    # One that rolls back (or opens a savepoint) first may well recover by itself.
    return bool(called & _FAILING) and not called & {"rollback", "begin_nested"}


def _caught(flow: FunctionFlow, handler: ast.ExceptHandler) -> str | None:
    """The database error a handler catches (its display name), if any."""
    if handler.type is None:
        return None
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    for kind in types:
        if not isinstance(kind, (ast.Name, ast.Attribute)):
            continue
        qualified = flow.qualify(kind)
        if qualified is None:
            continue
        module, _, name = qualified.rpartition(".")
        if name in _DB_ERRORS and module.partition(".")[0] in _DB_MODULES:
            if name == "Error" and module.partition(".")[0] == "sqlalchemy":
                continue
            return name
    return None


class IntegrityErrorWithoutRollback(Rule):
    """
    ## What it does
    Checks for `except IntegrityError` (and other database errors: SQLAlchemy's
    `DBAPIError`, psycopg's `UniqueViolation`, asyncpg's `UniqueViolationError`, …)
    around a `commit()`, `flush()` or statement, whose handler — or the code after the
    `try` when the handler swallows the error — uses the same session again, on some
    path through it, before calling `rollback()` (or `close()`, `transaction.abort()`
    for a session joined to the `transaction` package, or binding the name to another
    session).

    ## Why is this bad?
    After a failed flush the session's transaction is unusable. Any further use
    raises `PendingRollbackError: This Session's transaction has been rolled back due to
    a previous exception during flush` (and on PostgreSQL, a failed statement leaves
    the transaction aborted until a rollback). The handler meant to recover becomes the
    next crash.

    ## Known problems
    Work wrapped in `session.begin_nested()` inside the `try` rolls back to its
    savepoint by itself and is not reported; so is work in a `with session.begin():`
    block, which rolls back as the error leaves it, or in a `with ... as session:` block,
    which closes that session (what runs next opens another).

    ## Example
    ```python
    try:
        session.add(user)
        session.commit()
    except IntegrityError:
        user = session.scalars(select(User).filter_by(email=email)).one()
    ```

    Use instead:
    ```python
    try:
        session.add(user)
        session.commit()
    except IntegrityError:
        session.rollback()
        user = session.scalars(select(User).filter_by(email=email)).one()
    ```

    ## References
    - [PendingRollbackError](https://docs.sqlalchemy.org/en/20/errors.html#error-7s2a)
    - [Using SAVEPOINT](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#using-savepoint)
    """

    code = "SQD105"
    name = "integrity-error-without-rollback"
    pitfalls = ("P04",)
    severity = Severity.ERROR
    message = (
        "`{use}` reuses `{session}` after `{error}` (caught at line {line}) without "
        "`{session}.rollback()`: the session is in a failed state (PendingRollbackError) — "
        "roll back first"
    )

    VALID = (
        # zope.sqlalchemy: the `transaction` package's `abort()` rolls back the session
        # joined to it (Tracim's `initdb` command).
        Valid(
            """
            import transaction
            from sqlalchemy.exc import IntegrityError

            def init_db(session, admin):
                with transaction.manager:
                    try:
                        session.add(admin)
                        transaction.commit()
                    except IntegrityError as exc:
                        transaction.abort()
                        print("Database initialization failed")
                        raise RuntimeError("already initialised") from exc
            """
        ),
        # On each path the handler ends the failed transaction: it closes the connection
        # and binds the name to a new one, or raises; a session closed is usable again.
        Valid(
            """
            import psycopg2

            def kill_sessions(connect, stmt):
                connection = connect()
                try:
                    connection.execute(stmt)
                    connection.commit()
                except psycopg2.DatabaseError as e:
                    if "EOF" in str(e):
                        connection.close()
                        connection = connect()
                    else:
                        raise
                connection.execute(stmt)
                connection.commit()

            def save(session, user):
                try:
                    session.add(user)
                    session.commit()
                except psycopg2.IntegrityError:
                    session.close()
                session.add(user)
                session.commit()

            def retry(session, user):
                try:
                    session.add(user)
                    session.commit()
                except psycopg2.IntegrityError:
                    if not session.is_active:
                        session.rollback()
                session.add(user)
                session.commit()
            """
        ),
        Valid(_REPOSITORY.format(recover="\n            await self.session.rollback()")),
        # The failure leaves a `with` block that settles it: the session's `begin()` block
        # rolls back, a session the block opened is closed (the next one is new).
        Valid(
            """
            import time
            from sqlalchemy.exc import IntegrityError, OperationalError

            def claim(session, rows):
                for attempt in range(3):
                    try:
                        with session.begin():
                            session.add_all(rows)
                            session.flush()
                        break
                    except OperationalError:
                        time.sleep(1)

            def prune(factory, tenants, stmt):
                for tenant in tenants:
                    try:
                        with factory(tenant) as db_session:
                            db_session.execute(stmt)
                            db_session.commit()
                    except IntegrityError:
                        continue
            """
        ),
        Valid(
            """
            from sqlalchemy.exc import IntegrityError

            def register(session, user):
                try:
                    session.add(user)
                    session.commit()
                except IntegrityError:
                    session.rollback()
                    return session.get(type(user), user.id)
            """
        ),
        # Rolled back in the handler, then the session used again after the try.
        Valid(
            """
            from flask_sqlalchemy import SQLAlchemy
            from sqlalchemy.exc import IntegrityError

            db = SQLAlchemy()

            def setup(admin, page):
                try:
                    db.session.add(admin)
                    db.session.commit()
                except IntegrityError:
                    db.session.rollback()
                db.session.add(page)
                db.session.commit()
            """
        ),
        # Re-raised, or mapped to another error, without touching the session.
        Valid(
            """
            from sqlalchemy import exc

            async def register(session, user):
                try:
                    session.add(user)
                    await session.commit()
                except exc.IntegrityError as error:
                    raise ValueError("email taken") from error
            """
        ),
        # A savepoint rolls itself back.
        Valid(
            """
            from sqlalchemy.exc import IntegrityError

            def add_tag(session, tag):
                try:
                    with session.begin_nested():
                        session.add(tag)
                except IntegrityError:
                    pass
                session.commit()
            """
        ),
        # A savepoint begun before the try and rolled back in the handler.
        Valid(
            """
            from sqlalchemy.exc import IntegrityError

            async def add_member(session, relation, stmt):
                nested = await session.begin_nested()
                try:
                    session.add(relation)
                    await session.flush()
                except IntegrityError:
                    await nested.rollback()
                    await session.execute(stmt)
            """
        ),
        # Not a database error, and a rollback after the try.
        Valid(
            """
            from sqlalchemy.exc import IntegrityError

            def a(session, user):
                try:
                    session.commit()
                except ValueError:
                    session.add(user)

            def b(session, user):
                try:
                    session.commit()
                except IntegrityError:
                    pass
                session.rollback()
                session.add(user)
            """
        ),
        # The handler uses a different session.
        Valid(
            """
            from sqlalchemy.exc import IntegrityError

            def log_failure(session, audit_session, entry):
                try:
                    session.commit()
                except IntegrityError:
                    audit_session.add(entry)
                    audit_session.commit()
                    raise
            """
        ),
    )
    INVALID = (
        # A branch of the handler that goes on with the failed connection.
        Invalid(
            """
            import logging
            import psycopg2

            def kill_sessions(connect, stmt):
                connection = connect()
                try:
                    connection.execute(stmt)
                    connection.commit()
                except psycopg2.DatabaseError as e:
                    if "EOF" in str(e):
                        connection = connect()
                    logging.warning("kill failed: %s", e)
                connection.execute(stmt)
            """,
            line=13,
        ),
        # A `with` that does not manage the session settles nothing.
        Invalid(
            """
            import threading
            from sqlalchemy.exc import IntegrityError

            lock = threading.Lock()

            def save_all(session, rows):
                for row in rows:
                    try:
                        with lock:
                            session.add(row)
                            session.commit()
                    except IntegrityError:
                        continue
            """,
            line=10,
        ),
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.exc import IntegrityError

            def get_or_create(session, model, email):
                try:
                    session.add(model(email=email))
                    session.commit()
                except IntegrityError:
                    return session.scalars(select(model).filter_by(email=email)).one()
            """,
            line=9,
            expected_message=(
                "`session.scalars(select(model).filter_by(email=email))` reuses `session` "
                "after `IntegrityError` (caught at line 8) without `session.rollback()`: the "
                "session is in a failed state (PendingRollbackError) — roll back first"
            ),
        ),
        # Swallowed, then the session is used after the try.
        Invalid(
            """
            from sqlalchemy.exc import IntegrityError

            async def save_all(session, items):
                for item in items:
                    session.add(item)
                    try:
                        await session.flush()
                    except IntegrityError:
                        continue
                await session.commit()
            """,
            line=5,
        ),
        # psycopg's UniqueViolation (which SQLAlchemy wraps, but still) and a second add.
        Invalid(
            """
            from psycopg.errors import UniqueViolation

            def create(session, user, fallback):
                try:
                    session.add(user)
                    session.commit()
                except UniqueViolation:
                    session.add(fallback)
                    session.commit()
            """,
            line=8,
        ),
        # The `transaction` package commits the session joined to it (zope.sqlalchemy),
        # but the handler commits again without `transaction.abort()`.
        Invalid(
            """
            import transaction
            from sqlalchemy.exc import IntegrityError

            def init_db(session, admin):
                with transaction.manager:
                    try:
                        session.add(admin)
                        transaction.commit()
                    except IntegrityError:
                        transaction.commit()
            """,
            line=10,
        ),
        # Flask-SQLAlchemy's db.session.
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy
            from sqlalchemy.exc import DBAPIError

            db = SQLAlchemy()

            def save(obj):
                try:
                    db.session.add(obj)
                    db.session.commit()
                except DBAPIError:
                    db.session.commit()
            """,
            line=11,
        ),
        # The error re-exported by a project module, a session from a context manager.
        Invalid(
            """
            from app.db import session_scope
            from app.errors import IntegrityError

            def claim(username, user):
                with session_scope() as s:
                    try:
                        s.add(user)
                        s.flush()
                    except IntegrityError:
                        s.add(user.with_suffix())
            """,
            path="app/users.py",
            files={
                "app/__init__.py": "",
                "app/errors.py": "from sqlalchemy.exc import IntegrityError, NoResultFound\n",
                "app/db.py": """
                from contextlib import contextmanager
                from sqlalchemy.orm import sessionmaker

                Session = sessionmaker()

                @contextmanager
                def session_scope():
                    with Session() as session:
                        yield session
                        session.commit()
                """,
            },
            line=10,
        ),
        # A method of the same repository that queries `self.session` again.
        Invalid(
            _REPOSITORY.format(recover=""),
            line=17,
            expected_message=(
                "`self.by_email(email)` reuses `self.session` after `IntegrityError` (caught "
                "at line 16) without `self.session.rollback()`: the session is in a failed "
                "state (PendingRollbackError) — roll back first"
            ),
        ),
        # A unit of work's self.session.
        Invalid(
            """
            import sqlalchemy.exc as sa_exc

            class Repository:
                def __init__(self, session):
                    self.session = session

                def upsert(self, row):
                    try:
                        self.session.merge(row)
                        self.session.flush()
                    except (sa_exc.IntegrityError, sa_exc.DataError):
                        self.session.execute("SELECT 1")
            """,
            line=12,
        ),
    )

    def visit_Try(self, node: ast.Try) -> None:
        flow: FunctionFlow | None = None
        for handler in node.handlers:
            if flow is None:
                flow = flow_for(self.ctx, node)
            error = _caught(flow, handler)
            if error is None:
                continue
            for key in self._sessions_failing_in(flow, node):
                use, settled = self._first_use(flow, handler.body, key)
                if use is None and not settled:
                    # The handler neither recovers nor leaves: what runs next uses it.
                    use = self._next_use(flow, node, handler.body, key)
                if use is not None:
                    text = self.ctx.text(use)
                    if len(text) > 60:
                        text = text[:57] + "..."
                    self.report(use, use=text, session=key, error=error, line=handler.lineno)

    visit_TryStar = visit_Try

    @staticmethod
    def _sessions_failing_in(flow: FunctionFlow, node: ast.Try) -> list[str]:
        """Receivers that commit/flush/execute in the try body outside a savepoint."""
        savepoints = [
            w
            for w in flow.withs
            if any(
                isinstance(i.context_expr, ast.Call)
                and isinstance(i.context_expr.func, ast.Attribute)
                and i.context_expr.func.attr == "begin_nested"
                for i in w.items
            )
        ]
        # `with` blocks inside the try that settle a failure as it leaves them: the
        # session's `begin()` block rolls back, the session a `with ... as s` opened is
        # closed (and rebound before it is used again).
        settling: list[tuple[ast.With | ast.AsyncWith, str]] = []
        for w in flow.withs:
            if not any(contains(stmt, w) for stmt in node.body):
                continue
            for item in w.items:
                expr = item.context_expr
                if isinstance(expr, ast.Await):
                    expr = expr.value
                if (
                    isinstance(expr, ast.Call)
                    and isinstance(expr.func, ast.Attribute)
                    and expr.func.attr == "begin"
                    and (owner := receiver_key(expr.func.value)) is not None
                ):
                    settling.append((w, owner))
                if item.optional_vars is not None and (
                    target := receiver_key(item.optional_vars)
                ) is not None:
                    settling.append((w, target))
        found: list[str] = []
        committing: set[str] = set()
        for stmt in node.body:
            for call in flow.calls:
                func = call.func
                if not isinstance(func, ast.Attribute) or not contains(stmt, call):
                    continue
                key = receiver_key(func.value)
                if key is None or func.attr not in _FAILING:
                    continue
                if any(contains(w, call) for w in savepoints):
                    continue
                if any(owner == key and contains(w, call) for w, owner in settling):
                    continue
                if func.attr in ("commit", "flush"):
                    committing.add(key)
                if key not in found:
                    found.append(key)
        # A receiver that commits or flushes is a session (or a connection); one that
        # only runs `execute` might be anything with that method name.
        return [key for key in found if key in committing]

    @classmethod
    def _reuse_in(cls, flow: FunctionFlow, body: list[ast.stmt], key: str) -> ast.Call | None:
        return cls._first_use(flow, body, key)[0]

    @staticmethod
    def _first_use(
        flow: FunctionFlow, body: Sequence[ast.AST], key: str
    ) -> tuple[ast.Call | None, bool]:
        """The first call in ``body`` that uses the failed session, and whether ``body``
        settles the failure first (a rollback or `close()`, a `raise` or a `return`,
        binding the name to another session), on each branch of an `if`."""
        for stmt in body:
            if isinstance(stmt, ast.If):
                test, _ = IntegrityErrorWithoutRollback._first_use(flow, [stmt.test], key)
                if test is not None:
                    return test, False
                first, settled = IntegrityErrorWithoutRollback._first_use(flow, stmt.body, key)
                other, otherwise = IntegrityErrorWithoutRollback._first_use(
                    flow, stmt.orelse, key
                )
                uses = [c for c in (first, other) if c is not None]
                if uses:
                    return min(uses, key=lambda c: (c.lineno, c.col_offset)), False
                # Both ways out settle it; so does a rollback under a condition the code
                # chose (`if not session.is_active: session.rollback()`), as before.
                if (settled and otherwise) or any(
                    isinstance(c.func, ast.Attribute)
                    and c.func.attr in _ENDING
                    and receiver_key(c.func.value) == key
                    for c in flow.calls
                    if contains(stmt, c)
                ):
                    return None, True
                continue
            for call in sorted(
                (c for c in flow.calls if contains(stmt, c)), key=lambda c: (c.lineno, c.col_offset)
            ):
                func = call.func
                if not isinstance(func, ast.Attribute):
                    continue
                if func.attr == "rollback" and _savepoint_of(flow, func.value, key):
                    return None, True  # `nested = session.begin_nested()` … `nested.rollback()`
                if _own_method_uses(flow, func, key):
                    return call, False
                if receiver_key(func.value) != key:
                    # Flask-SQLAlchemy's `Model.query` runs on `db.session` too.
                    if key.endswith(".session") and _legacy_query_of_flask(flow, func.value):
                        return call, False
                    continue
                if func.attr in _ENDING:
                    return None, True
                if func.attr not in _SAFE:
                    return call, False
            if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and any(
                receiver_key(target) == key
                for target in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
            ):
                return None, True  # the name holds another session from here on
            if isinstance(stmt, _EXITS):
                # `continue`/`break` go on to code that may use the session.
                return None, isinstance(stmt, (ast.Raise, ast.Return))
        return None, False

    def _next_use(
        self, flow: FunctionFlow, node: ast.Try, handler: list[ast.stmt], key: str
    ) -> ast.Call | None:
        """Where control goes after a handler that does not roll back: the statements
        after the try, the loop's next iteration (`continue`), or after the loop
        (`break`)."""
        last = handler[-1] if handler else None
        if isinstance(last, (ast.Raise, ast.Return)):
            return None
        if not isinstance(last, (ast.Continue, ast.Break)):
            use = self._reuse_after(flow, node, key)
            if use is not None:
                return use
        loop = next(iter(flow.enclosing(node, ast.For, ast.AsyncFor, ast.While)), None)
        if loop is None:
            return None
        assert isinstance(loop, (ast.For, ast.AsyncFor, ast.While))
        if not isinstance(last, ast.Break):
            use = self._reuse_in(flow, loop.body, key)
            if use is not None:
                return use
        return self._reuse_after(flow, loop, key)

    def _reuse_after(self, flow: FunctionFlow, node: ast.stmt, key: str) -> ast.Call | None:
        """The first use of the session in the statements following ``node`` (same block)."""
        parent = flow.parent(node)
        for field in ("body", "orelse", "finalbody"):
            block = getattr(parent, field, None)
            if isinstance(block, list) and node in block:
                following = block[block.index(node) + 1 :]
                return self._reuse_in(flow, following, key)
        return None
