"""SQD101: async sessions that expire every object on commit."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cached_property

from sqla_doctor.findings import Applicability, Edit, Fix, Related, Severity
from sqla_doctor.static.context import FileContext
from sqla_doctor.static.flow import (
    Binding,
    FunctionFlow,
    ObjectsValue,
    contains,
    flow_for,
    worth_analysing,
)
from sqla_doctor.static.index.sessions import expire_on_commit
from sqla_doctor.static.objects import ObjectKind, SqlaObjects
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to
from sqla_doctor.static.syntax import call_keyword, has_star_kwargs, source_segment

_OPTION = "expire_on_commit"
# What the default costs, where no read after a commit is seen in the file.
_CONSEQUENCE = (
    "after `await session.commit()` reading an attribute of a loaded object raises "
    "MissingGreenlet"
)
# Session methods after which an object may have been loaded again (a refresh, or a
# query whose rows include it): a read after one of them is not known to be expired.
_RELOADS = frozenset(
    {
        "refresh", "execute", "scalars", "scalar", "get", "get_one", "exec", "stream",
        "stream_scalars", "merge", "run_sync",
    }
)
_SCOPED = (
    ast.ExceptHandler, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ListComp,
    ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.IfExp, ast.BoolOp,
)


@dataclass(frozen=True)
class Evidence:
    """An object of a session read after that session committed (and so expired it)."""

    name: str
    read: ast.AST  # the attribute read, or the `return`
    commit: ast.Call
    text: str


def read_after_commit(ctx: FileContext, flow: FunctionFlow, key: str) -> Evidence | None:
    """The first read of an object that session ``key`` loaded (or was given with
    ``add()``) before a ``commit()`` and that is read (or returned) after it, with no
    refresh or reload between, on every path from the commit."""
    calls = flow.calls_on(key)
    commits = [c for c in calls if _method(c) == "commit"]
    if not commits:
        return None
    reloads = [c for c in calls if _method(c) in _RELOADS]
    found: list[Evidence] = []
    for name, bindings in flow.bindings.items():
        for binding in bindings:
            if binding.kind != "assign" or binding.scope is not None:
                continue
            if not _session_object(ctx, flow, key, name, binding, calls):
                continue
            for commit in commits:
                if _pos(commit) <= binding.pos:
                    continue
                read = _read_after(flow, name, binding, commit, reloads)
                if read is not None:
                    found.append(_evidence(key, name, read, commit))
                    break
    return min(found, key=lambda e: _pos(e.read)) if found else None


def _evidence(key: str, name: str, read: ast.AST, commit: ast.Call) -> Evidence:
    where = f"`{key}.commit()` (line {commit.lineno})"
    if isinstance(read, ast.Attribute):
        text = (
            f"`{name}.{read.attr}` is read after {where} expired it, which raises "
            "MissingGreenlet"
        )
    else:
        text = (
            f"`{name}` is returned after {where} expired it, and reading any of its "
            "attributes raises MissingGreenlet"
        )
    return Evidence(name, read, commit, text)


def _method(call: ast.Call) -> str:
    return call.func.attr if isinstance(call.func, ast.Attribute) else ""


def _pos(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


def _end(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "end_lineno", 0) or 0, getattr(node, "end_col_offset", 0) or 0)


def _session_object(
    ctx: FileContext,
    flow: FunctionFlow,
    key: str,
    name: str,
    binding: Binding,
    calls: list[ast.Call],
) -> bool:
    value = flow.binding_value(binding)
    if isinstance(value, ObjectsValue):
        return value.receiver == key and not value.many
    made = binding.value
    if not isinstance(made, ast.Call) or ctx.index.model_for_expr(ctx, made.func) is None:
        return False
    # `user = User(...)` then `session.add(user)`: the session owns it from then on.
    for call in calls:
        if _method(call) not in ("add", "add_all") or not call.args:
            continue
        if _pos(call) > binding.pos and any(
            isinstance(n, ast.Name) and n.id == name for n in ast.walk(call.args[0])
        ):
            return True
    return False


def _read_after(
    flow: FunctionFlow, name: str, binding: Binding, commit: ast.Call, reloads: list[ast.Call]
) -> ast.AST | None:
    after = _end(commit)
    candidates: list[ast.AST] = [
        a
        for a in flow.attr_loads.get(name, ())
        if isinstance(a.ctx, ast.Load) and a.attr != "awaitable_attrs"
    ]
    candidates += [
        r for r in flow.returns if isinstance(r.value, ast.Name) and r.value.id == name
    ]
    for read in sorted(candidates, key=_pos):
        if _pos(read) < after:
            continue
        seen = read.value if isinstance(read, ast.Return) else read
        if seen is None or flow.binding(name, seen) is not binding:
            continue
        if any(after <= _pos(c) < _pos(read) for c in reloads):
            return None
        if not _follows(flow, commit, read):
            continue
        return read
    return None


def _follows(flow: FunctionFlow, commit: ast.AST, read: ast.AST) -> bool:
    """Whether the read runs after the commit whenever the commit runs: not in another
    branch of an ``if``, after a loop the commit is in, or out of its handler. The
    bodies of ``with`` and ``try`` run through, so a read after them still follows."""
    child: ast.AST = commit
    current = flow.parent(commit)
    while current is not None and current is not flow.node:
        if isinstance(current, (ast.If, ast.For, ast.AsyncFor, ast.While)):
            for block in (current.body, current.orelse):
                if any(stmt is child for stmt in block) and not (
                    _pos(block[0]) <= _pos(read) and _end(read) <= _end(block[-1])
                ):
                    return False
        elif isinstance(current, _SCOPED) and not contains(current, read):
            return False
        child = current
        current = flow.parent(current)
    return True


@dataclass(frozen=True)
class _Made:
    """Where a session or factory is made: ``node`` (the call, or the scoped registry
    wrapping it), the ``name`` it is bound to, if any, and the function it is made in."""

    node: ast.expr
    parent: ast.AST | None
    scope: ast.AST
    function: ast.FunctionDef | ast.AsyncFunctionDef | None
    name: str | None
    is_session: bool


def _assigned_name(parent: ast.AST | None, value: ast.expr) -> str | None:
    if isinstance(parent, ast.Assign) and len(parent.targets) == 1 and parent.value is value:
        target = parent.targets[0]
        return target.id if isinstance(target, ast.Name) else None
    if isinstance(parent, ast.AnnAssign) and parent.value is value:
        return parent.target.id if isinstance(parent.target, ast.Name) else None
    return None


def _calls_factory(expr: ast.expr | None, name: str) -> bool:
    """``name()``, ``name.begin()``."""
    if not isinstance(expr, ast.Call):
        return False
    func = expr.func
    if isinstance(func, ast.Attribute) and func.attr == "begin":
        func = func.value
    return isinstance(func, ast.Name) and func.id == name


def _within(ctx: FileContext, node: ast.AST, outer: ast.AST) -> bool:
    return node is outer or any(a is outer for a in ctx.ancestors(node))


_MODELS = {
    "app/__init__.py": "",
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
# Uses of `SessionLocal` in the examples: an object read after the commit.
_CREATE = """
            async def create_user(name):
                async with SessionLocal() as session:
                    user = User(name=name)
                    session.add(user)
                    await session.commit()
                    return user
            """
_RENAME = """
            async def rename(user_id, name):
                async with SessionLocal() as session:
                    user = await session.get(User, user_id)
                    user.name = name
                    await session.commit()
                    return user.name
            """


class ExpireOnCommitInAsync(Rule):
    """
    ## What it does
    Checks for async sessions that expire their objects on commit.

    That is `async_sessionmaker(...)`, `AsyncSession(...)` and
    `sessionmaker(..., class_=AsyncSession)` (SQLAlchemy's or SQLModel's) that leave
    `expire_on_commit` at its default, `True`, or set it to `True`.

    Where an application's sessions come from is reported as it is, once, with its fix,
    however many modules use them: a factory made at module level or on a class
    (`async_scoped_session(...)` around it included), or a session or factory made by a
    function that hands sessions out (returns or yields them, like a FastAPI dependency
    `get_session()`). When the same file reads one of their objects after a commit, the
    message names that read.

    A session made and used inline in a function (a test, a script) is reported only
    where that costs something: an object it loaded (`await session.get(...)`,
    `(await session.execute(...)).scalar_one()`, ...) or was given (`session.add(user)`)
    before `await session.commit()` is then read (`user.name`) or returned, with no
    `refresh()` or query on that session between.

    In test code (`tests/`, `test_*.py`, `conftest.py`) every factory and session counts
    as inline, a module-level factory and a fixture yielding sessions included: a test
    module's factory handed to the code under test is reported only when the file reads
    one of its objects after a commit.

    A value from configuration, `**options`, or a later
    `factory.configure(expire_on_commit=...)` in the same file stays silent.

    ## Why is this bad?
    Committing expires every object in the session, so the next attribute read loads it
    again. In async code that load is implicit I/O, which SQLAlchemy cannot do outside an
    `await`: reading `user.name` after `await session.commit()` raises `MissingGreenlet`
    (or, once the session is closed, `DetachedInstanceError`). Web handlers that commit
    and then return the object to a serializer hit this on every request.

    ## Example
    ```python
    SessionLocal = async_sessionmaker(engine)

    async def create_user(name: str) -> User:
        async with SessionLocal() as session:
            user = User(name=name)
            session.add(user)
            await session.commit()
            return user  # user.name raises MissingGreenlet when serialized
    ```

    Use instead:
    ```python
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
    ```

    ## Known problems
    Inline sessions are followed within one function: an object returned by a helper
    that committed is not followed, and any query on the session between the commit and
    the read is taken as having loaded the object again. A factory made in a function
    and stored on an attribute (`app.state.sessionmaker = ...`) or passed to another
    object counts as inline. A source is reported even when every caller refreshes after
    committing. Synchronous sessions in web handlers have a milder form of the same
    problem (a refresh query after each commit) and are not reported.

    ## Fix safety
    Unsafe: with `expire_on_commit=False`, attributes keep the values they had before the
    commit. Code that relied on reloading after commit — server-side defaults, triggers,
    values changed by another transaction — must `await session.refresh(obj)` instead.

    ## References
    - [Preventing implicit IO when using AsyncSession](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#asyncio-orm-avoid-lazyloads)
    - [`Session.params.expire_on_commit`](https://docs.sqlalchemy.org/en/20/orm/session_api.html#sqlalchemy.orm.Session.params.expire_on_commit)
    - [Committing: expiry](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    """

    code = "SQD101"
    name = "expire-on-commit-in-async"
    pitfalls = ("P05",)
    severity = Severity.WARNING
    fix = Applicability.UNSAFE
    message = "`{factory}` {state}: {consequence} — pass `expire_on_commit=False`"

    VALID = (
        Valid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
            from app.models import User
            SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
            Other = async_sessionmaker(bind=engine, class_=AsyncSession, expire_on_commit=False)
            async def main():
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    user = User(name="x")
                    session.add(user)
                    await session.commit()
                    return user.name
            """
            + _CREATE,
            files=_MODELS,
        ),
        # Configured from settings, or through **options: not knowable.
        Valid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
            from app.config import settings
            from app.models import User
            SESSION_OPTIONS = {"expire_on_commit": False}
            SessionLocal = async_sessionmaker(engine, expire_on_commit=settings.EXPIRE)
            b = async_sessionmaker(engine, **SESSION_OPTIONS)
            async def get_session():
                async with AsyncSession(engine, **SESSION_OPTIONS) as session:
                    yield session
            """
            + _CREATE,
            files=_MODELS,
        ),
        # Configured later on.
        Valid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker
            from app.models import User
            SessionLocal = async_sessionmaker()
            def init(engine):
                SessionLocal.configure(bind=engine, expire_on_commit=False)
            """
            + _CREATE,
            files=_MODELS,
        ),
        # Synchronous sessions are not this rule's business.
        Valid(
            """
            from sqlalchemy.orm import Session, sessionmaker
            SessionLocal = sessionmaker(engine)
            with Session(engine) as session:
                session.commit()
            """
        ),
        # Another library's async_sessionmaker.
        Valid(
            """
            from myorm import async_sessionmaker
            factory = async_sessionmaker(engine)
            """
        ),
        # Tests that commit, then query again: the objects read are loaded after the
        # commit, not expired by it.
        Valid(
            """
            from sqlalchemy import select
            from sqlmodel.ext.asyncio.session import AsyncSession
            from app.models import User
            async def test_create(engine):
                async with AsyncSession(engine) as session:
                    session.add(User(name="Deadpond"))
                    await session.commit()
                    result = await session.execute(select(User))
                    user = result.scalar_one()
                    assert user.name == "Deadpond"
            async def test_count(engine):
                async with AsyncSession(engine) as session:
                    user = await session.get(User, 1)
                    assert user.name == "x"
                    await session.commit()
            """,
            files=_MODELS,
        ),
        # Sessions used inline: refreshed after the commit; a commit in one branch and a
        # read in the other; a local factory whose sessions only execute; a local factory
        # handed to the code under test.
        Valid(
            """
            from sqlalchemy import delete
            from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
            from app.models import User
            from app.repositories import UserRepository
            async def test_create(engine):
                async with AsyncSession(engine) as session:
                    user = User(name="x")
                    session.add(user)
                    await session.commit()
                    await session.refresh(user)
                    assert user.name == "x"
            async def test_maybe_save(engine, save):
                async with AsyncSession(engine) as session:
                    user = await session.get(User, 1)
                    if save:
                        await session.commit()
                    else:
                        assert user.name == "x"
            async def test_purge(engine):
                factory = async_sessionmaker(engine)
                async with factory.begin() as session:
                    await session.execute(delete(User))
            async def test_repository(connection):
                factory = async_sessionmaker(bind=connection)
                repository = UserRepository(factory)
                assert await repository.count() == 0
            """,
            files=_MODELS,
        ),
        # A test module's factory handed to the code under test, and a fixture yielding
        # sessions: the tests never read an object after a commit.
        Valid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession
            from sqlalchemy.orm import sessionmaker
            from app.forms import build_form
            from app.models import User
            session_maker = sessionmaker(bind=engine, class_=AsyncSession)
            async def session():
                async with AsyncSession(engine) as session:
                    yield session
            async def test_form():
                form = await build_form(model=User, session_maker=session_maker)
                assert "name" in form.fields
            """,
            path="tests/test_forms.py",
            files=_MODELS,
        ),
    )
    INVALID = (
        # A test module's factory whose object the test reads after the commit.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession
            from sqlalchemy.orm import sessionmaker
            from app.models import User
            session_maker = sessionmaker(bind=engine, class_=AsyncSession)
            async def test_create():
                async with session_maker() as session:
                    user = User(name="x")
                    session.add(user)
                    await session.commit()
                    assert user.name == "x"
            """,
            path="tests/test_users.py",
            files=_MODELS,
            line=4,
        ),
        # A module-level factory, whether or not this file uses it.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker
            SessionLocal = async_sessionmaker(engine)
            """,
            expected_message=(
                "`async_sessionmaker()` keeps the default `expire_on_commit=True`: after "
                "`await session.commit()` reading an attribute of a loaded object raises "
                "MissingGreenlet — pass `expire_on_commit=False`"
            ),
            expected_fix="""
            from sqlalchemy.ext.asyncio import async_sessionmaker
            SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
            """,
        ),
        # Used in the same file: the message names the read.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker
            from app.models import User
            SessionLocal = async_sessionmaker(engine)
            """
            + _CREATE,
            files=_MODELS,
            line=3,
            expected_message=(
                "`async_sessionmaker()` keeps the default `expire_on_commit=True`: `user` is "
                "returned after `session.commit()` (line 9) expired it, and reading any of "
                "its attributes raises MissingGreenlet — pass `expire_on_commit=False`"
            ),
            expected_fix="""
            from sqlalchemy.ext.asyncio import async_sessionmaker
            from app.models import User
            SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
            """
            + _CREATE,
        ),
        # Multi-line with a trailing comma and a comment.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
            SessionLocal = async_sessionmaker(
                bind=engine,
                class_=AsyncSession,  # the default, spelled out
            )
            """,
            line=2,
            expected_fix="""
            from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
            SessionLocal = async_sessionmaker(
                bind=engine,
                class_=AsyncSession,  # the default, spelled out
                expire_on_commit=False,
            )
            """,
        ),
        # Explicitly True.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker
            from app.models import User
            SessionLocal = async_sessionmaker(engine, expire_on_commit=True, autoflush=False)
            """
            + _RENAME,
            files=_MODELS,
            expected_message=(
                "`async_sessionmaker()` sets `expire_on_commit=True`: `user.name` is read "
                "after `session.commit()` (line 9) expired it, which raises MissingGreenlet "
                "— pass `expire_on_commit=False`"
            ),
            expected_fix="""
            from sqlalchemy.ext.asyncio import async_sessionmaker
            from app.models import User
            SessionLocal = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
            """
            + _RENAME,
        ),
        # The 1.4 spelling: sessionmaker(class_=AsyncSession).
        Invalid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession
            from sqlalchemy.orm import sessionmaker
            async_session = sessionmaker(engine, class_=AsyncSession)
            """,
            expected_message=(
                "`sessionmaker(class_=AsyncSession)` keeps the default `expire_on_commit=True`: "
                "after `await session.commit()` reading an attribute of a loaded object "
                "raises MissingGreenlet — pass `expire_on_commit=False`"
            ),
        ),
        # AsyncSession made directly (SQLModel's): read after commit in the block, handed
        # out by a provider, returned bare.
        Invalid(
            """
            from sqlmodel.ext.asyncio.session import AsyncSession
            from app.models import User
            async def create(engine):
                async with AsyncSession(engine) as session:
                    user = User(name="x")
                    session.add(user)
                    await session.commit()
                    print(user.id)
            async def get_session():
                async with AsyncSession(engine) as session:
                    yield session
            def bare():
                return AsyncSession()
            """,
            files=_MODELS,
            count=3,
            line=4,
            expected_message=(
                "`AsyncSession()` keeps the default `expire_on_commit=True`: `user.id` is "
                "read after `session.commit()` (line 7) expired it, which raises "
                "MissingGreenlet — pass `expire_on_commit=False`"
            ),
            expected_fix="""
            from sqlmodel.ext.asyncio.session import AsyncSession
            from app.models import User
            async def create(engine):
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    user = User(name="x")
                    session.add(user)
                    await session.commit()
                    print(user.id)
            async def get_session():
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    yield session
            def bare():
                return AsyncSession(expire_on_commit=False)
            """,
        ),
        # Through a module alias, multi-line without a trailing comma; made and used in a
        # function, with a read after the commit.
        Invalid(
            """
            import sqlalchemy.ext.asyncio as sa_async
            from app.models import User
            async def run(engine):
                factory = sa_async.async_sessionmaker(
                    engine,
                    autoflush=False
                )
                async with factory() as session:
                    user = await session.get(User, 1)
                    await session.commit()
                    return user.name
            """,
            files=_MODELS,
            expected_fix="""
            import sqlalchemy.ext.asyncio as sa_async
            from app.models import User
            async def run(engine):
                factory = sa_async.async_sessionmaker(
                    engine,
                    autoflush=False,
                    expire_on_commit=False
                )
                async with factory() as session:
                    user = await session.get(User, 1)
                    await session.commit()
                    return user.name
            """,
        ),
        # Wrapped in async_scoped_session.
        Invalid(
            """
            from asyncio import current_task
            from sqlalchemy.ext.asyncio import async_scoped_session, async_sessionmaker
            Session = async_scoped_session(async_sessionmaker(engine), scopefunc=current_task)
            """,
        ),
        # Factories made by functions that hand them (or their sessions) out, and on a class.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker
            def make_sessionmaker(engine):
                return async_sessionmaker(engine)
            async def get_session(engine):
                factory = async_sessionmaker(engine)
                async with factory() as session:
                    yield session
            class Database:
                sessionmaker = async_sessionmaker()
            """,
            count=3,
            line=3,
        ),
        # Used in another module: reported once, where the factory is made, not at the
        # read in app/users.py.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker
            SessionLocal = async_sessionmaker(engine)
            async def get_session():
                async with SessionLocal() as session:
                    yield session
            """,
            path="app/db.py",
            files={
                **_MODELS,
                "app/users.py": """
                from fastapi import Depends
                from app.db import get_session
                from app.models import User
                async def rename(user_id: int, name: str, session=Depends(get_session)):
                    user = await session.get(User, user_id)
                    user.name = name
                    await session.commit()
                    return {"id": user.id, "name": user.name}
                """,
            },
            count=1,
            line=2,
        ),
    )

    @cached_property
    def objects(self) -> SqlaObjects:
        return SqlaObjects(self.ctx, self.ctx.dataflow)

    @cached_property
    def configured(self) -> set[str]:
        """Names given ``expire_on_commit`` later: ``Factory.configure(expire_on_commit=...)``."""
        names: set[str] = set()
        for node in ast.walk(self.ctx.tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "configure"
                and (call_keyword(node, _OPTION) is not None or has_star_kwargs(node))
            ):
                names.add(source_segment(self.ctx, node.func.value))
        return names

    @cached_property
    def functions(self) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
        return [
            node
            for node in ast.walk(self.ctx.tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]

    @calls_to(named=("async_sessionmaker", "AsyncSession", "sessionmaker"))
    def visit_Call(self, node: ast.Call) -> None:
        name = self.ctx.names.sqla_name(node.func)
        if name in ("async_sessionmaker", "AsyncSession"):
            factory = f"{name}()"
        elif name == "sessionmaker" and self._async_class(node):
            factory = "sessionmaker(class_=AsyncSession)"
        else:
            return
        if expire_on_commit(node) is not True or self._configured_later(node):
            return  # kept loaded, or not knowable (settings, `**options`)
        keyword = call_keyword(node, _OPTION)
        if keyword is None:
            state = "keeps the default `expire_on_commit=True`"
            edits = self._add_keyword(node, f"{_OPTION}=False")
        elif isinstance(keyword.value, ast.Constant) and keyword.value.value is True:
            state = "sets `expire_on_commit=True`"
            line, col, end_line, end_col = self.ctx.span(keyword.value)
            edits = (Edit(line, col, end_line, end_col, "False"),)
        else:
            return
        made = self._made(node, is_session=name == "AsyncSession")
        evidence = self._evidence(made)
        if evidence is None and not self._is_source(made):
            # A session used inline (a test, a script) is reported only where one of its
            # objects is read after the commit: tests that query again after committing
            # never read an expired object.
            return
        self.report(
            node,
            factory=factory,
            state=state,
            consequence=evidence.text if evidence is not None else _CONSEQUENCE,
            related=(
                [Related(self.ctx.location(evidence.read), "read after the commit")]
                if evidence is not None
                else []
            ),
            fix=Fix(
                description="pass expire_on_commit=False",
                edits=edits,
                applicability=Applicability.UNSAFE,
            ),
            hint="pass `expire_on_commit=False`, and `await session.refresh(obj)` where a "
            "value computed by the database is needed after the commit",
        )

    # Where the session or factory this call makes goes ---------------------------------
    def _made(self, node: ast.Call, *, is_session: bool) -> _Made:
        made: ast.expr = node
        parent = self.ctx.parent(node)
        if (
            isinstance(parent, ast.Call)
            and node in parent.args
            and self.ctx.names.sqla_name(parent.func) in ("scoped_session", "async_scoped_session")
        ):
            made, parent = parent, self.ctx.parent(parent)
        scope = self.ctx.enclosing_scope(made)
        function = scope if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        name = _assigned_name(parent, made)
        if (
            is_session
            and isinstance(parent, ast.withitem)
            and isinstance(parent.optional_vars, ast.Name)
        ):
            name = parent.optional_vars.id
        return _Made(made, parent, scope, function, name, is_session)

    def _is_source(self, made: _Made) -> bool:
        """Whether the call is where the application's sessions come from: made outside
        any function (a module-level or class-level factory), or by a function that hands
        them out (returns or yields the session, the factory, or a session of it).

        Never in test code: a test module's factory or fixture serves that module's tests,
        where a read after a commit fails the test run itself; those are reported where
        the file shows such a read."""
        if self.ctx.in_tests:
            return False
        if isinstance(made.scope, ast.Module):
            return True
        if isinstance(made.parent, (ast.Return, ast.Yield, ast.Lambda)):
            return True
        if made.function is None or made.name is None:
            return False
        flow = flow_for(self.ctx, made.function)
        handed = [r.value for r in flow.returns] + [y.value for y in flow.yields]
        if any(isinstance(v, ast.Name) and v.id == made.name for v in handed):
            return True
        if made.is_session:
            return False
        # A local factory: `return factory()`, or `async with factory() as s: yield s`.
        if any(_calls_factory(v, made.name) for v in handed):
            return True
        sessions = {
            key
            for key, bindings in flow.bindings.items()
            for binding in bindings
            if binding.kind in ("assign", "with") and _calls_factory(binding.value, made.name)
        }
        return any(isinstance(v, ast.Name) and v.id in sessions for v in handed)

    def _evidence(self, made: _Made) -> Evidence | None:
        """An object of a session this call makes, read after that session committed, in
        this file."""
        function = made.function
        if made.is_session:
            if function is None:
                return None
            flow = flow_for(self.ctx, function)
            if made.name is not None:
                found = read_after_commit(self.ctx, flow, made.name)
                if found is not None:
                    return found
            # A provider handing out the session: its callers in this file.
            qualname = self._qualname(function)
            if qualname is None or not self._is_source(made):
                return None
            return self._used_in_file({qualname}, None)
        if made.name is None:
            return None
        if function is not None:
            return self._used_in_file(set(), (made.name, function))
        if not isinstance(made.scope, ast.Module) or any(
            isinstance(a, ast.ClassDef) for a in self.ctx.ancestors(made.node)
        ):
            return None  # a class attribute: its uses are not followed
        module = self.ctx.facts.module
        return self._used_in_file({f"{module}.{made.name}" if module else made.name}, None)

    def _qualname(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
        if not isinstance(self.ctx.parent(function), ast.Module):
            return None
        module = self.ctx.facts.module
        return f"{module}.{function.name}" if module else function.name

    def _used_in_file(
        self,
        sources: set[str],
        local: tuple[str, ast.FunctionDef | ast.AsyncFunctionDef] | None,
    ) -> Evidence | None:
        """A session of this file made from ``sources`` (or from the factory ``local`` names
        inside a function) whose objects are read after a commit."""
        index = self.ctx.index
        # Providers of this file yielding sessions of those factories.
        for function in self.functions:
            qualname = self._qualname(function)
            facts = index.function(qualname) if qualname else None
            provider = facts.provider if facts is not None else None
            if provider is not None and provider.source in sources and qualname is not None:
                sources.add(qualname)
        for function in self.functions:
            if local is not None and not _within(self.ctx, function, local[1]):
                continue
            if not function.body or not worth_analysing(self.ctx, function):
                continue
            flow = flow_for(self.ctx, function)
            keys = [key for key, _, value in flow.sessions() if value.source in sources]
            if local is not None:
                # The flow knows factories by the index, which holds module-level ones:
                # `with factory() as s` on a local factory is matched by its name.
                keys += [
                    key
                    for key, bindings in flow.bindings.items()
                    for binding in bindings
                    if binding.kind in ("assign", "with")
                    and _calls_factory(binding.value, local[0])
                ]
            for key in keys:
                found = read_after_commit(self.ctx, flow, key)
                if found is not None:
                    return found
        return None

    def _async_class(self, node: ast.Call) -> bool:
        keyword = call_keyword(node, "class_")
        if keyword is None:
            return False
        return self.objects.annotation_kind(keyword.value) is ObjectKind.ASYNC_SESSION

    def _configured_later(self, node: ast.Call) -> bool:
        parent = self.ctx.parent(node)
        if isinstance(parent, ast.Assign) and len(parent.targets) == 1:
            target: ast.expr = parent.targets[0]
        elif isinstance(parent, ast.AnnAssign):
            target = parent.target
        else:
            return False
        return source_segment(self.ctx, target) in self.configured

    # Adding a keyword argument -----------------------------------------------------
    def _add_keyword(self, call: ast.Call, text: str) -> tuple[Edit, ...]:
        """Edits appending ``text`` as the last argument, in the call's own layout."""
        arguments: list[ast.expr | ast.keyword] = [*call.args, *call.keywords]
        _, _, end_line, end_col = self.ctx.span(call)
        if not arguments:
            # `AsyncSession()`: the call ends with its closing parenthesis.
            return (Edit(end_line, end_col - 1, end_line, end_col - 1, text),)
        last = max(arguments, key=lambda n: (n.lineno, n.col_offset))
        last_line, _, last_end_line, last_end_col = self.ctx.span(last)
        if last_end_line == end_line:
            return (Edit(last_end_line, last_end_col, last_end_line, last_end_col, f", {text}"),)
        # One argument a line: a new line, indented like the last argument.
        source_line = self.ctx.lines[last_line - 1]
        indent = source_line[: len(source_line) - len(source_line.lstrip())]
        rest = self.ctx.lines[last_end_line - 1]
        after = rest[last_end_col:]
        line_end = len(rest)
        if after.lstrip().startswith(","):
            return (Edit(last_end_line, line_end, last_end_line, line_end, f"\n{indent}{text},"),)
        if not after.strip():
            added = f",\n{indent}{text}"
            return (Edit(last_end_line, last_end_col, last_end_line, last_end_col, added),)
        # A comment follows the last argument: the comma before it, the argument after it.
        return (
            Edit(last_end_line, last_end_col, last_end_line, last_end_col, ","),
            Edit(last_end_line, line_end, last_end_line, line_end, f"\n{indent}{text}"),
        )
