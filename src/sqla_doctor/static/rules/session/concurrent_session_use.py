"""SQD107: one AsyncSession used by several concurrent tasks."""

from __future__ import annotations

import ast
from collections.abc import Mapping

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import FunctionFlow, InstanceValue, contains, flow_for, receiver_key
from sqla_doctor.static.lifecycle import session_names
from sqla_doctor.static.objects import SQLA_MODULES
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to

_GATHERS = frozenset({"asyncio.gather", "asyncio.wait", "asyncio.as_completed", "anyio.gather"})
_SPAWNS = frozenset({"create_task", "start_soon", "start"})
_RUNNERS = _SPAWNS | {name.rpartition(".")[2] for name in _GATHERS}
# What a method runs on `self.session` that makes it an operation of that session.
_STATEMENTS = frozenset(
    {"execute", "scalars", "scalar", "stream", "stream_scalars", "exec", "flush", "refresh"}
)
_FILES = {
    "app/__init__.py": "",
    "app/db.py": """
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine("postgresql+asyncpg://app@db/app")
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
    """,
    "app/repo.py": """
    from sqlalchemy import func, select, text

    async def count_users(session):
        return await session.scalar(text("SELECT count(*) FROM users"))

    async def count_posts(session):
        return await session.scalar(text("SELECT count(*) FROM posts"))

    async def load(session, key):
        return await session.scalar(text("SELECT 1"))
    """,
}

# Tasks sharing one session, each using it under a lock (or not).
_LOCKED = """
import asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

db_lock = asyncio.Lock()

async def name_of(session: AsyncSession, uid: int):
    await asyncio.sleep(0)
    {first}
    async with db_lock:
        return await session.scalar(text("SELECT name FROM users WHERE id = :id"), {{"id": uid}})

async def names(session: AsyncSession, ids: list[int]):
    return await asyncio.gather(*(name_of(session, i) for i in ids))
"""

_REPO_FILES = {
    **_FILES,
    "app/stats.py": """
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    class StatsRepository:
        def __init__(self, session: AsyncSession) -> None:
            self.session = session

        async def users(self):
            return await self.session.scalar(text("SELECT count(*) FROM users"))

        async def posts(self):
            return await self.session.scalar(text("SELECT count(*) FROM posts"))

    class OwnSessions:
        def __init__(self, factory: async_sessionmaker[AsyncSession]) -> None:
            self.factory = factory

        async def users(self):
            async with self.factory() as session:
                return await session.scalar(text("SELECT count(*) FROM users"))

        async def posts(self):
            async with self.factory() as session:
                return await session.scalar(text("SELECT count(*) FROM posts"))
    """,
}
_REPO_GATHER = """
import asyncio
from app.stats import {cls}

async def dashboard(repo: {cls}):
    users, posts = await asyncio.gather(repo.users(), repo.posts())
    return users, posts
"""


class ConcurrentSessionUse(Rule):
    """
    ## What it does
    Checks for `asyncio.gather()` (or `asyncio.wait`, a `TaskGroup`, an anyio task
    group) running two or more awaitables that use the same session — its own
    `execute()`/`scalar()` calls, coroutines the session is passed to (including a
    comprehension of them), or coroutines nested in the function that use its session
    without opening their own.

    ## Why is this bad?
    An `AsyncSession` (and its connection) runs one statement at a time. Concurrent
    use fails with `InvalidRequestError: This session is provisioning a new connection;
    concurrent operations are not permitted` or the driver's `another operation is in
    progress`, or corrupts the session's state — intermittently, depending on timing.

    A method of a project class counts as using a session when it runs statements on
    an attribute of `self` and the class's module imports SQLAlchemy, SQLModel or
    Flask-SQLAlchemy (not a psycopg or asyncpg connection of its own).

    ## Example
    ```python
    users, posts = await asyncio.gather(count_users(session), count_posts(session))
    ```

    Use instead:
    ```python
    async def count(fn):
        async with SessionLocal() as session:
            return await fn(session)

    users, posts = await asyncio.gather(count(count_users), count(count_posts))
    ```
    or simply `await` them one after the other.

    ## References
    - [Using AsyncSession with Concurrent Tasks](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#using-asyncsession-with-concurrent-tasks)
    - [Is the Session thread-safe? Is AsyncSession safe to share in concurrent tasks?](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#session-faq-threadsafe)
    """

    code = "SQD107"
    name = "concurrent-session-use"
    pitfalls = ("P20",)
    severity = Severity.ERROR
    message = (
        "`{runner}` runs {count} operations on `{session}` at once: an AsyncSession runs one "
        'statement at a time ("another operation is in progress") — give each task its own '
        "session, or await them one by one"
    )

    VALID = (
        # Each method opens a session of its own.
        Valid(_REPO_GATHER.format(cls="OwnSessions"), path="app/views.py", files=_REPO_FILES),
        # A class of a module without SQLAlchemy: its connection is psycopg's (Litestar's
        # channels backend), in a project that uses SQLAlchemy elsewhere.
        Valid(
            _REPO_GATHER.format(cls="ChannelsBackend"),
            path="app/views.py",
            files={
                **_REPO_FILES,
                "app/stats.py": """
                from psycopg import AsyncConnection

                class ChannelsBackend:
                    _conn: AsyncConnection

                    async def users(self):
                        await self._conn.execute("LISTEN users")

                    async def posts(self):
                        await self._conn.execute("LISTEN posts")
                """,
            },
        ),
        Valid(
            """
            import asyncio
            from app.db import SessionLocal
            from app.repo import count_posts, count_users

            async def with_own(fn):
                async with SessionLocal() as session:
                    return await fn(session)

            async def stats():
                return await asyncio.gather(with_own(count_users), with_own(count_posts))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Each task takes the lock around its use of the shared session: one at a time.
        Valid(_LOCKED.format(first="pass"), path="app/views.py", files=_FILES),
        # Sequential awaits on one session.
        Valid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.repo import count_posts, count_users

            async def stats(session: AsyncSession):
                users = await count_users(session)
                posts = await count_posts(session)
                return users, posts
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Only one operation uses the session; the other is an HTTP call.
        Valid(
            """
            import asyncio
            import httpx
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.repo import count_users

            async def stats(session: AsyncSession, client: httpx.AsyncClient):
                return await asyncio.gather(count_users(session), client.get("https://example.com"))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Two different sessions.
        Valid(
            """
            import asyncio
            from app.db import SessionLocal
            from app.repo import count_posts, count_users

            async def stats():
                async with SessionLocal() as a, SessionLocal() as b:
                    return await asyncio.gather(count_users(a), count_posts(b))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Nested coroutines that each open their own session.
        Valid(
            """
            import asyncio
            from sqlalchemy import func, select
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.db import SessionLocal
            from app.models import Post, User

            async def stats(db: AsyncSession):
                async def count(model):
                    async with SessionLocal() as db:
                        return await db.scalar(select(func.count()).select_from(model))

                return await asyncio.gather(count(User), count(Post))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Nested coroutines that take the session they use as a parameter, each its own.
        Valid(
            """
            import asyncio
            from sqlalchemy import func, select
            from app.db import SessionLocal
            from app.models import Post, User

            async def stats():
                async with SessionLocal() as db, SessionLocal() as other:
                    async def count(db, model):
                        return await db.scalar(select(func.count()).select_from(model))

                    return await asyncio.gather(count(db, User), count(other, Post))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Not a session: an aiohttp ClientSession shared by requests is fine.
        Valid(
            """
            import asyncio
            import aiohttp

            async def fetch_all(urls):
                async with aiohttp.ClientSession() as session:
                    return await asyncio.gather(*[session.get(url) for url in urls])
            """,
            path="app/views.py",
            files=_FILES,
        ),
    )
    INVALID = (
        # One use outside the lock: the tasks' statements overlap there.
        Invalid(
            _LOCKED.format(first="await session.execute(text('SELECT 1'))"),
            path="app/views.py",
            files=_FILES,
            line=14,
        ),
        # A repository whose methods both run on the session it holds.
        Invalid(
            _REPO_GATHER.format(cls="StatsRepository"),
            path="app/views.py",
            files=_REPO_FILES,
            line=5,
            expected_message=(
                "`asyncio.gather()` runs 2 operations on `repo.session` at once: an "
                'AsyncSession runs one statement at a time ("another operation is in '
                'progress") — give each task its own session, or await them one by one'
            ),
        ),
        Invalid(
            """
            import asyncio
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.repo import count_posts, count_users

            async def stats(session: AsyncSession):
                return await asyncio.gather(count_users(session), count_posts(session))
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`asyncio.gather()` runs 2 operations on `session` at once: an AsyncSession runs "
                'one statement at a time ("another operation is in progress") — give each task '
                "its own session, or await them one by one"
            ),
        ),
        # A comprehension of coroutines, each with the session.
        Invalid(
            """
            import asyncio
            from app.db import SessionLocal
            from app.repo import load

            async def load_all(keys):
                async with SessionLocal() as session:
                    return await asyncio.gather(*(load(session, k) for k in keys))
            """,
            path="app/views.py",
            files=_FILES,
            line=7,
        ),
        # The session's own methods, side by side.
        Invalid(
            """
            import asyncio
            from sqlalchemy import text
            from app.db import SessionLocal

            async def warm():
                async with SessionLocal() as s:
                    await asyncio.gather(s.execute(text("SELECT 1")), s.execute(text("SELECT 2")))
            """,
            path="app/views.py",
            files=_FILES,
            line=7,
        ),
        # Nested coroutines that use the enclosing function's session.
        Invalid(
            """
            import asyncio
            from sqlalchemy import func, select
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.models import Post, User

            async def stats(db: AsyncSession):
                async def count(model):
                    return await db.scalar(select(func.count()).select_from(model))

                return await asyncio.gather(count(User), count(Post))
            """,
            path="app/views.py",
            files=_FILES,
            line=10,
            expected_message=(
                "`asyncio.gather()` runs 2 operations on `db` at once: an AsyncSession runs "
                'one statement at a time ("another operation is in progress") — give each task '
                "its own session, or await them one by one"
            ),
        ),
        # A TaskGroup spawning tasks in a loop.
        Invalid(
            """
            import asyncio
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.repo import load

            async def load_all(session: AsyncSession, keys):
                async with asyncio.TaskGroup() as tg:
                    for key in keys:
                        tg.create_task(load(session, key))
            """,
            path="app/views.py",
            files=_FILES,
            line=8,
        ),
        # A unit of work's session passed by keyword.
        Invalid(
            """
            import asyncio
            from app.db import SessionLocal
            from app.repo import count_posts, count_users

            class Stats:
                def __init__(self):
                    self.session = SessionLocal()

                async def both(self):
                    return await asyncio.gather(
                        count_users(session=self.session), count_posts(session=self.session)
                    )
            """,
            path="app/views.py",
            files=_FILES,
            line=10,
        ),
    )

    @calls_to(ending=_RUNNERS)
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        tail = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if tail not in _RUNNERS:
            return
        if isinstance(func, ast.Attribute) and func.attr in _SPAWNS:
            self._task_group(node)
            return
        if not isinstance(func, (ast.Name, ast.Attribute)) or not node.args:
            return
        flow = flow_for(self.ctx, node)
        qualified = flow.qualify(func)
        if qualified not in _GATHERS:
            return
        sessions = session_names(flow)
        counts: dict[str, int] = {}
        for arg in node.args:
            many = isinstance(arg, ast.Starred)
            inner = arg.value if isinstance(arg, ast.Starred) else arg
            if isinstance(inner, (ast.List, ast.Tuple, ast.Set)):
                elements: list[ast.expr] = list(inner.elts)
                many = False
            else:
                elements = [inner]
            for element in elements:
                for key in self._sessions_in(flow, element, sessions):
                    counts[key] = counts.get(key, 0) + (2 if many else 1)
        for key, count in counts.items():
            if count >= 2:
                label = (
                    "several" if any(isinstance(a, ast.Starred) for a in node.args) else str(count)
                )
                self.report(node, runner=f"{self.ctx.text(func)}()", count=label, session=key)
                return

    def _task_group(self, node: ast.Call) -> None:
        """`tg.create_task(f(session))` twice (or in a loop) in one task group."""
        func = node.func
        assert isinstance(func, ast.Attribute)
        if not isinstance(func.value, ast.Name) or not node.args:
            return
        flow = flow_for(self.ctx, node)
        group = self._group(flow, func.value.id, node)
        if group is None:
            return
        sessions = session_names(flow)
        mine = set()
        for arg in (*node.args, *(kw.value for kw in node.keywords)):
            mine |= set(self._sessions_in(flow, arg, sessions))
        if not mine:
            return
        in_loop = any(
            contains(loop, node) and contains(group, loop)
            for loop in flow.loops
            if isinstance(loop, (ast.For, ast.AsyncFor, ast.While))
        )
        spawns = [
            c
            for c in flow.calls_on(func.value.id)
            if isinstance(c.func, ast.Attribute) and c.func.attr in _SPAWNS and contains(group, c)
        ]
        first_other = None
        for other in spawns:
            if other is node:
                continue
            shared = set()
            for arg in (*other.args, *(kw.value for kw in other.keywords)):
                shared |= set(self._sessions_in(flow, arg, sessions))
            if shared & mine:
                first_other = other
                break
        if not in_loop and (
            first_other is None
            or (first_other.lineno, first_other.col_offset) > (node.lineno, node.col_offset)
        ):
            return
        key = sorted(mine)[0]
        self.report(node, runner="TaskGroup", count="several", session=key)

    @staticmethod
    def _group(flow: FunctionFlow, name: str, node: ast.Call) -> ast.AST | None:
        for with_node in flow.withs:
            if not contains(with_node, node):
                continue
            for item in with_node.items:
                if isinstance(item.optional_vars, ast.Name) and item.optional_vars.id == name:
                    made = (
                        flow.qualify(item.context_expr.func)
                        if isinstance(item.context_expr, ast.Call)
                        else None
                    )
                    if made in (
                        "asyncio.TaskGroup",
                        "anyio.create_task_group",
                        "trio.open_nursery",
                    ):
                        return with_node
        return None

    def _sessions_in(
        self, flow: FunctionFlow, expr: ast.expr, sessions: Mapping[str, object]
    ) -> list[str]:
        """Session keys an awaitable expression uses: `s.execute(...)`, `f(s)`, `f(session=s)`,
        a comprehension of such calls."""
        if isinstance(expr, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            expr = expr.elt
        if not isinstance(expr, ast.Call):
            if isinstance(expr, ast.Await):
                expr = expr.value
            if not isinstance(expr, ast.Call):
                return []
        found: list[str] = []
        func = expr.func
        candidates = [func.value] if isinstance(func, ast.Attribute) else []
        candidates += [*expr.args, *(kw.value for kw in expr.keywords)]
        callee = self._own_coroutine(flow, func)
        for candidate in candidates:
            if not isinstance(candidate, (ast.Name, ast.Attribute)):
                continue
            key = receiver_key(candidate)
            if key is None or key in found:
                continue
            if (key in sessions or flow.session_of(candidate) is not None) and (
                callee is None or not _serialized(callee, expr, candidate)
            ):
                found.append(key)
        if isinstance(func, ast.Name):
            found += [key for key in _closed_over(flow, func.id, sessions) if key not in found]
        elif isinstance(func, ast.Attribute):
            found += [key for key in _held_sessions(flow, func) if key not in found]
        return found


    def _own_coroutine(self, flow: FunctionFlow, func: ast.expr) -> ast.AsyncFunctionDef | None:
        """The ``async def`` a bare name calls, when this module defines it (at its top
        level or inside the calling function)."""
        if not isinstance(func, ast.Name):
            return None
        for scope in (flow.node, self.ctx.tree):
            for node in ast.walk(scope):
                if isinstance(node, ast.AsyncFunctionDef) and node.name == func.id:
                    return node
        return None


def _serialized(function: ast.AsyncFunctionDef, call: ast.Call, session: ast.expr) -> bool:
    """Whether ``function`` uses the session ``call`` passes it only inside ``async with``
    blocks on a lock (``async with lock:``, ``async with self._db_lock:``): the tasks
    take turns, one statement at a time."""
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    param: str | None = None
    for position, arg in enumerate(call.args):
        if arg is session and position < len(positional):
            param = positional[position].arg
    for keyword in call.keywords:
        if keyword.value is session:
            param = keyword.arg
    if param is None:
        return False
    locked = [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.AsyncWith) and any(_is_lock(i.context_expr) for i in node.items)
    ]
    uses = [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Name) and node.id == param and isinstance(node.ctx, ast.Load)
    ]
    return bool(uses) and all(any(contains(block, use) for block in locked) for use in uses)


def _is_lock(expr: ast.expr) -> bool:
    """``lock``, ``self._lock``, ``db_lock``: a name that says it is a lock (a semaphore
    may let several tasks in at once)."""
    name = expr.attr if isinstance(expr, ast.Attribute) else getattr(expr, "id", "")
    return "lock" in name.lower()


def _held_sessions(flow: FunctionFlow, func: ast.Attribute) -> list[str]:
    """``repo.count()`` on an object of a project class whose async method runs statements
    on its own ``self.session``: that session, as ``repo.session``."""
    receiver = receiver_key(func.value)
    if receiver is None or flow.index is None:
        return []
    instance = flow.value(func.value)
    if not isinstance(instance, InstanceValue):
        return []
    method = flow.index.function(f"{instance.cls}.{func.attr}")
    if method is None or not method.is_async or not method.is_method:
        return []
    module = flow.index.file_of_class(instance.cls)
    if module is None or not any(
        target.partition(".")[0] in SQLA_MODULES for target in module.names.imports.values()
    ):
        return []  # `self._conn.execute()` of a module without SQLAlchemy: psycopg's, asyncpg's
    return sorted(
        {
            f"{receiver}.{path[0]}"
            for position, iterated, path in method.reads
            if position == 0
            and not iterated
            and len(path) == 2
            and path[1].endswith("()")
            and path[1][:-2] in _STATEMENTS
        }
    )


def _closed_over(flow: FunctionFlow, name: str, sessions: Mapping[str, object]) -> list[str]:
    """Sessions of this function that its nested ``async def name`` uses without a
    binding of its own: ``async def count(model): return await db.scalar(...)`` closes
    over the caller's ``db``."""
    nested = next(
        (
            node
            for node in ast.walk(flow.node)
            if isinstance(node, ast.AsyncFunctionDef)
            and node.name == name
            and node is not flow.node
        ),
        None,
    )
    if nested is None:
        return []
    arguments = nested.args
    own = {a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)} | {
        a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None
    }
    own |= {
        node.id
        for node in ast.walk(nested)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }
    found: list[str] = []
    for call in ast.walk(nested):
        if not isinstance(call, ast.Call):
            continue
        func = call.func
        used = [func.value] if isinstance(func, ast.Attribute) else []
        used += [*call.args, *(kw.value for kw in call.keywords)]
        for candidate in used:
            if not isinstance(candidate, (ast.Name, ast.Attribute)):
                continue
            key = receiver_key(candidate)
            if key is None or key not in sessions or key.partition(".")[0] in own:
                continue
            if key not in found:
                found.append(key)
    return found
