"""SQD106: external I/O while a session holds a checked-out connection."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import (
    ClientValue,
    FactoryValue,
    FunctionFlow,
    InstanceValue,
    SessionValue,
    contains,
    flow_for,
    io_kind,
    loads_through_given_session,
    receiver_key,
    worth_analysing,
)
from sqla_doctor.static.index.functions import FunctionFacts
from sqla_doctor.static.lifecycle import QUERIES, session_names
from sqla_doctor.static.navigation import Navigator
from sqla_doctor.static.rule import Invalid, Rule, Valid

_RELEASE = frozenset({"commit", "rollback", "close", "remove"})
# Schedule a coroutine to run in the background instead of waiting for it.
_SPAWNERS = frozenset(
    {"create_task", "ensure_future", "start_soon", "add_task", "run_coroutine_threadsafe"}
)
_CLIENT_METHODS = frozenset(
    {
        "get",
        "post",
        "put",
        "patch",
        "delete",
        "head",
        "options",
        "request",
        "send",
        "stream",
        "sendmail",
        "send_message",
        "ws_connect",
    }
)
_FILES = {
    "app/__init__.py": "",
    "app/db.py": """
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine("postgresql+asyncpg://app@db/app")
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
    """,
    "app/models.py": """
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str]
        verified: Mapped[bool] = mapped_column(default=False)
    """,
}

# A helper that loads objects through the session it is given.
_QUERY_FILES = {
    **_FILES,
    "app/queries.py": """
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import AsyncSession
    from app.models import User

    async def unverified(session: AsyncSession) -> list[User]:
        return list(await session.scalars(select(User).where(User.verified.is_(False))))

    class UserRepository:
        def __init__(self, session: AsyncSession) -> None:
            self.session = session

        async def unverified(self) -> list[User]:
            return list(await self.session.scalars(select(User).where(User.verified.is_(False))))
    """,
}
# A service whose repository shares its session.
_REPOSITORY_QUERY = """
import httpx
from sqlalchemy.ext.asyncio import AsyncSession
from app.queries import UserRepository

class Reminders:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.users = UserRepository(session)

    async def send(self):
        users = await self.users.unverified(){release}
        async with httpx.AsyncClient() as client:
            for user in users:
                await client.post("https://mail.example.com/send", json={{"to": user.email}})
                user.reminded = True
        await self.session.commit()
"""
_HELPER_QUERY = """
import httpx
from sqlalchemy.ext.asyncio import AsyncSession
from app.queries import unverified

async def remind(session: AsyncSession):
    emails = [user.email for user in await unverified(session)]{release}
    async with httpx.AsyncClient() as client:
        for email in emails:
            await client.post("https://mail.example.com/send", json={{"to": email}})
"""

# A `scoped_session` registry used directly, as Flask's classic recipe does.
_SCOPED = """
import requests
from sqlalchemy import create_engine
from sqlalchemy.orm import scoped_session, sessionmaker
from app.models import User

db_session = scoped_session(sessionmaker(bind=create_engine("postgresql://app@db/app")))

def sync_user(user_id):
    user = db_session.get(User, user_id){release}
    profile = requests.get(f"https://crm.example.com/{{user_id}}", timeout=5).json()
    db_session.get(User, user_id).email = profile["email"]
    db_session.commit()
"""


class ConnectionHeldDuringIo(Rule):
    """
    ## What it does
    Checks for an HTTP request (`httpx`, `requests`, `aiohttp`, `urllib`), an SMTP call
    or a sleep (`asyncio.sleep`, `time.sleep`) made after a session has run a query
    (itself, or in a project function it is passed to that returns what it loaded:
    `users = active_users(session)`, or in a method of a repository made from it:
    `self.users.unverified()` after `self.users = UserRepository(session)`) and before
    it commits, rolls back or closes —
    directly, through a client such as
    `httpx.AsyncClient`, or through a project function that makes the call itself
    (with its own client, or one it is handed: `http: aiohttp.ClientSession`). A
    coroutine scheduled with `asyncio.create_task()` (`ensure_future`, `start_soon`)
    runs beside the code, which does not wait for it, and is not counted. Test code
    (`tests/`, `test_*.py`, `conftest.py`) is not checked.

    ## Why is this bad?
    The first query checks a connection out of the pool and holds it, inside a
    transaction, until the session commits or closes. While the code waits on a slow
    API, that connection serves nobody; with a few concurrent requests the pool is
    empty and everything else queues: `TimeoutError: QueuePool limit of size 5
    overflow 10 reached`. On PostgreSQL the open transaction also holds its locks
    (`idle in transaction`).

    ## Example
    ```python
    async with SessionLocal() as s:
        user = await s.get(User, 1)
        await some_http_call()  # connection held
        await s.commit()
    ```

    Use instead:
    ```python
    async with SessionLocal() as s:
        user = await s.get(User, 1)
    await some_http_call()
    async with SessionLocal() as s:
        ...
    ```
    Acquire late, release early: read what the call needs, end the transaction, then
    call out.

    ## References
    - [Connection pooling](https://docs.sqlalchemy.org/en/20/core/pooling.html)
    - [Session transaction lifecycle](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html)
    """

    code = "SQD106"
    name = "connection-held-during-io"
    pitfalls = ("P07",)
    severity = Severity.WARNING
    message = (
        "`{call}` ({kind}) runs while `{session}` holds a database connection (query at line "
        "{line}, transaction still open) — commit or close first, or make the call before "
        "querying"
    )

    VALID = (
        # The repository's query, then a commit, then the requests.
        Valid(
            _REPOSITORY_QUERY.format(release="\n        await self.session.commit()"),
            path="app/reminders.py",
            files=_QUERY_FILES,
        ),
        # The helper's query, then a commit, then the requests.
        Valid(
            _HELPER_QUERY.format(release="\n    await session.commit()"),
            path="app/reminders.py",
            files=_QUERY_FILES,
        ),
        Valid(
            _SCOPED.format(release="\n    db_session.remove()"), path="app/views.py", files=_FILES
        ),
        # The query is on a path that returns before the request is made.
        Valid(
            """
            import httpx
            from sqlalchemy.ext.asyncio import AsyncSession

            async def refresh(session: AsyncSession, user, token):
                if token is None:
                    await session.refresh(user)
                    return user
                async with httpx.AsyncClient() as client:
                    await client.post("https://auth.example.com/token", data={"t": token})
                return user
            """,
            path="app/auth.py",
            files=_FILES,
        ),
        # Scheduled beside the work, not waited for.
        Valid(
            """
            import asyncio
            from app.db import SessionLocal
            from app.models import User

            async def heartbeat(user_id):
                while True:
                    await asyncio.sleep(30)

            async def index(user_id):
                async with SessionLocal() as session:
                    user = await session.get(User, user_id)
                    task = asyncio.create_task(heartbeat(user.id))
                    user.indexed = True
                    await session.commit()
                    task.cancel()
            """,
            path="app/tasks.py",
            files=_FILES,
        ),
        # Test code: a test waiting for a row between queries starves no one.
        Valid(
            """
            import time
            from sqlalchemy.orm import Session
            from app.models import User

            def wait_for_user(db_session: Session, name):
                while True:
                    user = db_session.query(User).filter_by(name=name).first()
                    if user is not None:
                        return user
                    time.sleep(0.5)
            """,
            path="tests/integration/test_users.py",
            files=_FILES,
        ),
        Valid(
            """
            import httpx
            from app.db import SessionLocal
            from app.models import User

            async def verify(user_id):
                async with SessionLocal() as s:
                    user = await s.get(User, user_id)
                    email = user.email
                async with httpx.AsyncClient() as client:
                    await client.post("https://mail.example/verify", json={"to": email})
            """,
            path="app/tasks.py",
            files=_FILES,
        ),
        # Committed before the call; the call before the first query.
        Valid(
            """
            import asyncio
            import httpx
            from app.models import User

            async def verify(session, user_id):
                response = await httpx.AsyncClient().get("https://example.com")
                user = await session.get(User, user_id)
                user.verified = True
                await session.commit()
                await asyncio.sleep(1)
            """,
            path="app/tasks.py",
            files=_FILES,
        ),
        # Something named `session` that is not SQLAlchemy's.
        Valid(
            """
            import aiohttp
            import time

            async def crawl(urls):
                async with aiohttp.ClientSession() as session:
                    for url in urls:
                        await session.get(url)
                        time.sleep(0.1)
            """,
            path="app/tasks.py",
            files=_FILES,
        ),
        # No query yet: `add()` does not check out a connection.
        Valid(
            """
            import requests
            from app.models import User

            def create(session, email):
                session.add(User(email=email))
                requests.post("https://hooks.example/created", json={"email": email})
                session.commit()
            """,
            path="app/tasks.py",
            files=_FILES,
        ),
        # Not I/O: building a client, a timeout object.
        Valid(
            """
            import httpx
            from app.models import User

            async def setup(session):
                await session.get(User, 1)
                client = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
                await session.commit()
                return client
            """,
            path="app/tasks.py",
            files=_FILES,
        ),
    )
    INVALID = (
        # The query runs in a method of a repository made from the service's session.
        Invalid(
            _REPOSITORY_QUERY.format(release=""),
            path="app/reminders.py",
            files=_QUERY_FILES,
            line=14,
        ),
        # The query runs in a helper of another module, given the session.
        Invalid(
            _HELPER_QUERY.format(release=""),
            path="app/reminders.py",
            files=_QUERY_FILES,
            line=9,
            expected_message=(
                "`client.post(\"https://mail.example.com/send\", js...` (HTTP request) "
                "runs while `session` holds a database connection (query at line 6, "
                "transaction still open) — commit or close first, or make the call before "
                "querying"
            ),
        ),
        Invalid(
            _SCOPED.format(release=""),
            path="app/views.py",
            files=_FILES,
            line=10,
            expected_message=(
                '`requests.get(f"https://crm.example.com/{user_id...` (HTTP request) runs '
                "while `db_session` holds a database connection (query at line 9, transaction "
                "still open) — commit or close first, or make the call before querying"
            ),
        ),
        # The seed's shape.
        Invalid(
            """
            from app.db import SessionLocal
            from app.external import some_http_call
            from app.models import User

            async def handler():
                async with SessionLocal() as s:
                    user = await s.get(User, 1)
                    await some_http_call()
                    await s.commit()
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/external.py": """
                import httpx

                async def some_http_call():
                    async with httpx.AsyncClient() as client:
                        return await client.get("https://api.example.com/slow")
                """,
            },
            line=8,
            expected_message=(
                "`some_http_call()` (HTTP request, in `some_http_call()`) runs while `s` holds a "
                "database connection (query at line 7, transaction still open) — commit or close "
                "first, or make the call before querying"
            ),
        ),
        # A FastAPI dependency's session and an httpx client.
        Invalid(
            """
            import httpx
            from fastapi import Depends
            from sqlalchemy import select
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.models import User

            async def sync_user(user_id: int, session: AsyncSession = Depends()):
                user = (await session.scalars(select(User).where(User.id == user_id))).one()
                async with httpx.AsyncClient() as client:
                    profile = await client.get(f"https://crm.example/users/{user.email}")
                user.verified = profile.status_code == 200
                await session.commit()
            """,
            path="app/views.py",
            files=_FILES,
            line=10,
        ),
        # A helper handed the caller's client (a parameter annotated as one) waits on it.
        Invalid(
            """
            import aiohttp
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            async def fetch(http: aiohttp.ClientSession, url: str) -> str:
                async with http.get(url) as resp:
                    return await resp.text()

            async def crawl():
                async with SessionLocal() as db, aiohttp.ClientSession() as http:
                    users = (await db.scalars(select(User))).all()
                    for user in users:
                        print(await fetch(http, f"https://crm.example/{user.id}"))
            """,
            path="app/views.py",
            files=_FILES,
            line=14,
        ),
        # A sync worker that sleeps between retries with a transaction open.
        Invalid(
            """
            import time
            import requests
            from sqlalchemy.orm import Session
            from app.models import User

            def notify(session: Session):
                users = session.query(User).filter(User.verified.is_(False)).all()
                for user in users:
                    requests.post("https://hooks.example", json={"id": user.id})
                    time.sleep(0.5)
                session.commit()
            """,
            path="app/jobs.py",
            files=_FILES,
            line=9,
        ),
        # Flask-SQLAlchemy's db.session and urllib.
        Invalid(
            """
            from urllib.request import urlopen
            from flask_sqlalchemy import SQLAlchemy
            from sqlalchemy import text

            db = SQLAlchemy()

            def refresh_rates():
                db.session.execute(text("SELECT 1"))
                rates = urlopen("https://rates.example/today").read()
                db.session.commit()
                return rates
            """,
            line=9,
        ),
        # asyncio.sleep in a polling loop on one session.
        Invalid(
            """
            import asyncio
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            async def wait_for_verification(user_id):
                async with SessionLocal() as session:
                    while True:
                        user = await session.scalar(select(User).where(User.id == user_id))
                        if user.verified:
                            return user
                        await asyncio.sleep(2)
            """,
            path="app/tasks.py",
            files=_FILES,
            line=12,
        ),
        # The branch with the query goes on to the request.
        Invalid(
            """
            import httpx
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.models import User

            async def refresh(session: AsyncSession, user_id, token):
                if token is None:
                    user = await session.get(User, user_id)
                    token = user.token
                async with httpx.AsyncClient() as client:
                    await client.post("https://auth.example.com/token", data={"t": token})
            """,
            path="app/auth.py",
            files=_FILES,
            line=10,
        ),
        # Awaited through gather: this code waits for it.
        Invalid(
            """
            import asyncio
            from app.db import SessionLocal
            from app.models import User

            async def pause(user_id):
                await asyncio.sleep(30)

            async def index(user_id):
                async with SessionLocal() as session:
                    user = await session.get(User, user_id)
                    await asyncio.gather(pause(user.id))
                    await session.commit()
            """,
            path="app/tasks.py",
            files=_FILES,
            line=11,
        ),
    )

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # A test polling the database between sleeps holds one connection of a pool
        # nobody else is waiting on.
        if self.ctx.in_tests or not worth_analysing(self.ctx, node):
            return
        flow = flow_for(self.ctx, node)
        sessions = {**session_names(flow), **_scoped_registries(flow)}
        if not sessions:
            return
        io_calls = [
            (call, kind) for call in flow.calls if (kind := self._io(flow, call)) is not None
        ]
        if not io_calls:
            return
        for key, session in sessions.items():
            self._check(flow, key, session, io_calls)

    visit_AsyncFunctionDef = visit_FunctionDef

    def _check(
        self,
        flow: FunctionFlow,
        key: str,
        session: SessionValue,
        io_calls: list[tuple[ast.Call, str]],
    ) -> None:
        events: list[tuple[tuple[int, int], str, ast.Call]] = []
        for call in flow.calls_on(key):
            func = call.func
            assert isinstance(func, ast.Attribute)
            if func.attr in QUERIES:
                events.append(((call.lineno, call.col_offset), "query", call))
            elif func.attr in _RELEASE:
                events.append(((call.lineno, call.col_offset), "release", call))
        for call, _ in io_calls:
            events.append(((call.lineno, call.col_offset), "io", call))
        # A project function that commits ends the transaction of a shared session
        # (`db.session`, `self.session`) or of one it is given.
        for call in flow.calls:
            if not isinstance(call.func, (ast.Name, ast.Attribute)) or call in flow.calls_on(key):
                continue
            loader = Navigator(flow, self.ctx.index, strict=False).callee(call)
            if loader is not None and _queries_given_session(flow, loader, call, key):
                events.append(((call.lineno, call.col_offset), "query", call))
                continue
            qualified = flow.qualify(call.func)
            function = self.ctx.index.function(qualified) if qualified else None
            if (
                function is not None
                and function.commits
                and (
                    session.how in ("flask", "attr", "scoped")
                    or any(
                        receiver_key(a) == key
                        for a in (*call.args, *(k.value for k in call.keywords))
                        if isinstance(a, (ast.Name, ast.Attribute))
                    )
                )
            ):
                events.append(((call.lineno, call.col_offset), "release", call))
        # Leaving `with Factory() as s:` closes it; leaving `with s.begin():` commits.
        for with_node in flow.withs:
            for item in with_node.items:
                expr = item.context_expr
                bound = isinstance(item.optional_vars, ast.Name) and item.optional_vars.id == key
                begins = (
                    isinstance(expr, ast.Call)
                    and isinstance(expr.func, ast.Attribute)
                    and expr.func.attr == "begin"
                    and receiver_key(expr.func.value) == key
                )
                if bound or begins:
                    end = (with_node.end_lineno or with_node.lineno, with_node.end_col_offset or 0)
                    events.append((end, "release", with_node))  # type: ignore[arg-type]
        events.sort(key=lambda e: e[0])
        held: list[ast.Call] = []
        kinds = {id(c): k for c, k in io_calls}
        for _, event, call in events:
            if event == "query":
                held.append(call)
            elif event == "release":
                held = []
            else:
                query = next((q for q in held if _reaches(flow, q, call)), None)
                if query is None:
                    continue
                text = self.ctx.text(call)
                if len(text) > 50:
                    text = text[:47] + "..."
                self.report(call, call=text, kind=kinds[id(call)], session=key, line=query.lineno)
                return

    def _io(self, flow: FunctionFlow, call: ast.Call) -> str | None:
        func = call.func
        spawner = flow.parent(call)
        if isinstance(spawner, ast.Call) and call in spawner.args and _spawns(spawner):
            # `asyncio.create_task(heartbeat())`: the coroutine runs beside this code,
            # which does not wait for it.
            return None
        if isinstance(func, ast.Attribute) and func.attr in _CLIENT_METHODS:
            receiver = flow.value(func.value)
            if isinstance(receiver, ClientValue):
                return receiver.kind
        if not isinstance(func, (ast.Name, ast.Attribute)):
            return None
        if receiver_key(func) is None:
            return None
        qualified = flow.qualify(func)
        if qualified is None:
            return None
        kind = io_kind(qualified)
        if kind is not None:
            return kind
        function = self.ctx.index.function(qualified)
        if function is not None and function.io_call is not None:
            inner = io_kind(function.io_call) or "external I/O"
            return f"{inner}, in `{function.name}()`"
        return None


def _queries_given_session(
    flow: FunctionFlow, function: FunctionFacts, call: ast.Call, key: str
) -> bool:
    """``users = active_users(session)``, ``self.invoices.unpaid()``: a project function
    that returns objects it loaded through the session it is given, or a method of an
    object built around this function's session (a repository made with
    ``InvoiceRepository(session)``), has run a query on it, which checked a connection
    out."""
    returns = function.returns
    if returns is None or not loads_through_given_session(returns) or function.commits:
        return False
    if any(
        receiver_key(a) == key
        for a in (*call.args, *(k.value for k in call.keywords))
        if isinstance(a, (ast.Name, ast.Attribute))
    ):
        return True
    return function.is_method and _built_around(flow, call, key)


def _built_around(flow: FunctionFlow, call: ast.Call, key: str) -> bool:
    """Whether the receiver of the method ``call`` is an instance made from the session
    ``key`` names: here (``InvoiceRepository(session).unpaid()``), or in the method
    that set the attribute (``self.session = session`` and ``self.invoices =
    InvoiceRepository(session)`` in ``__init__``, for ``self.session``)."""
    func = call.func
    if not isinstance(func, ast.Attribute):
        return False
    instance = flow.value(func.value)
    if not isinstance(instance, InstanceValue) or instance.made is None:
        return False
    made = instance.made
    arguments = [
        key_
        for a in (*made.args, *(k.value for k in made.keywords))
        if isinstance(a, (ast.Name, ast.Attribute)) and (key_ := receiver_key(a)) is not None
    ]
    if key in arguments:
        return True
    # Made in another method: its `session` is what it stored as `self.session`.
    owner, _, attr = key.partition(".")
    return owner == "self" and not contains(flow.node, made) and attr in arguments


def _scoped_registries(flow: FunctionFlow) -> dict[str, SessionValue]:
    """``db_session.get(...)`` on a ``scoped_session`` registry: the thread's session,
    which holds its connection from that query until a commit or ``remove()``."""
    found: dict[str, SessionValue] = {}
    for key, calls in flow.receiver_calls.items():
        if not calls:
            continue
        func = calls[0].func
        assert isinstance(func, ast.Attribute)
        registry = flow.value(func.value)
        if isinstance(registry, FactoryValue) and registry.scoped:
            found[key] = SessionValue(
                registry.is_async, "scoped", func.value, registry.source, scoped=True
            )
    return found


def _spawns(call: ast.Call) -> bool:
    """``asyncio.create_task(...)``, ``tg.start_soon(...)``, ``background.add_task(...)``."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    return name in _SPAWNERS


def _reaches(flow: FunctionFlow, query: ast.AST, later: ast.AST) -> bool:
    """Whether control can go from ``query`` on to ``later``: not when the query sits in a
    block that ends in ``return`` or ``raise`` and ``later`` lies outside it."""
    node: ast.AST | None = query
    while node is not None and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        parent = flow.parent(node)
        for field in ("body", "orelse", "finalbody"):
            block = getattr(parent, field, None)
            if (
                isinstance(block, list)
                and node in block
                and isinstance(block[-1], (ast.Return, ast.Raise))
                and not any(contains(stmt, later) for stmt in block)
            ):
                return False
        node = parent
    return True
