"""SQD101: async sessions that expire every object on commit."""

from __future__ import annotations

import ast
from functools import cached_property

from sqla_doctor.findings import Applicability, Edit, Fix, Severity
from sqla_doctor.static.dataflow import (
    ObjectKind,
    SqlaObjects,
    call_keyword,
    has_star_kwargs,
    source_segment,
)
from sqla_doctor.static.rule import Invalid, Rule, Valid

_OPTION = "expire_on_commit"


class ExpireOnCommitInAsync(Rule):
    """
    ## What it does
    Checks for async sessions that expire their objects on commit.

    That is `async_sessionmaker(...)`, `AsyncSession(...)` and
    `sessionmaker(..., class_=AsyncSession)` (SQLAlchemy's or SQLModel's) that leave
    `expire_on_commit` at its default, `True`, or set it to `True`.

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
    Synchronous sessions in web handlers have a milder form of the same problem (a
    refresh query after each commit) and are not reported.

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
    message = (
        "`{factory}` {state}: after `await session.commit()` reading an attribute of a "
        "loaded object raises MissingGreenlet — pass `expire_on_commit=False`"
    )

    VALID = (
        Valid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
            SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
            Other = async_sessionmaker(bind=engine, class_=AsyncSession, expire_on_commit=False)
            async def main():
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    await session.commit()
            """
        ),
        # Configured from settings, or through **options: not knowable.
        Valid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker
            from app.config import settings
            SESSION_OPTIONS = {"expire_on_commit": False}
            a = async_sessionmaker(engine, expire_on_commit=settings.EXPIRE)
            b = async_sessionmaker(engine, **SESSION_OPTIONS)
            """
        ),
        # Configured later on.
        Valid(
            """
            from sqlalchemy.ext.asyncio import async_sessionmaker
            SessionLocal = async_sessionmaker()
            def init(engine):
                SessionLocal.configure(bind=engine, expire_on_commit=False)
            """
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
    )
    INVALID = (
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
            SessionLocal = async_sessionmaker(engine, expire_on_commit=True, autoflush=False)
            """,
            expected_message=(
                "`async_sessionmaker()` sets `expire_on_commit=True`: after "
                "`await session.commit()` reading an attribute of a loaded object raises "
                "MissingGreenlet — pass `expire_on_commit=False`"
            ),
            expected_fix="""
            from sqlalchemy.ext.asyncio import async_sessionmaker
            SessionLocal = async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
            """,
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
        # AsyncSession made directly, SQLModel's AsyncSession, no arguments at all.
        Invalid(
            """
            from sqlmodel.ext.asyncio.session import AsyncSession
            async def get_session():
                async with AsyncSession(engine) as session:
                    yield session
            def bare():
                return AsyncSession()
            """,
            count=2,
            line=3,
            expected_fix="""
            from sqlmodel.ext.asyncio.session import AsyncSession
            async def get_session():
                async with AsyncSession(engine, expire_on_commit=False) as session:
                    yield session
            def bare():
                return AsyncSession(expire_on_commit=False)
            """,
        ),
        # Through a module alias, multi-line without a trailing comma.
        Invalid(
            """
            import sqlalchemy.ext.asyncio as sa_async
            factory = sa_async.async_sessionmaker(
                engine,
                autoflush=False
            )
            """,
            expected_fix="""
            import sqlalchemy.ext.asyncio as sa_async
            factory = sa_async.async_sessionmaker(
                engine,
                autoflush=False,
                expire_on_commit=False
            )
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

    def visit_Call(self, node: ast.Call) -> None:
        name = self.ctx.names.sqla_name(node.func)
        if name in ("async_sessionmaker", "AsyncSession"):
            factory = f"{name}()"
        elif name == "sessionmaker" and self._async_class(node):
            factory = "sessionmaker(class_=AsyncSession)"
        else:
            return
        if has_star_kwargs(node) or self._configured_later(node):
            return
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
        self.report(
            node,
            factory=factory,
            state=state,
            fix=Fix(
                description="pass expire_on_commit=False",
                edits=edits,
                applicability=Applicability.UNSAFE,
            ),
            hint="pass `expire_on_commit=False`, and `await session.refresh(obj)` where a "
            "value computed by the database is needed after the commit",
        )

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
