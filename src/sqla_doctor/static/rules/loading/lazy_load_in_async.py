"""SQD202: a lazy relationship load in async code (MissingGreenlet)."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Applicability, Fix, Severity
from sqla_doctor.static.flow import (
    FunctionFlow,
    ObjectsValue,
    RowValue,
    contains,
    flow_for,
    worth_analysing,
)
from sqla_doctor.static.index.models import literal_str
from sqla_doctor.static.loader_fix import loader_edits
from sqla_doctor.static.navigation import (
    LazyAccess,
    Navigator,
    access_option,
    back_to_parent,
    row_entity_reads,
)
from sqla_doctor.static.rule import Invalid, Rule, Valid

_MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(AsyncAttrs, DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    posts: Mapped[list["Post"]] = relationship(back_populates="author")
    roles: Mapped[list["Role"]] = relationship(lazy="selectin")
    audit: Mapped[list["Audit"]] = relationship(lazy="raise")

class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    category: Mapped["Category"] = relationship()

class Role(Base):
    __tablename__ = "roles"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

class Audit(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

class Category(Base):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
"""
_DB = """
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

engine = create_async_engine("postgresql+asyncpg://app@db/app")
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)

async def get_session():
    async with SessionLocal() as session:
        yield session
"""
_FILES = {"app/__init__.py": "", "app/models.py": _MODELS, "app/db.py": _DB}
# Rows of an aliased entity: the option names the alias (`selectinload(User.posts)` on a
# query of `ua` raises ArgumentError).
# AsyncSession.stream() read in partitions (runtime scenario s159).
_STREAMED = """
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from app.db import SessionLocal
from app.models import Post

async def export():
    async with SessionLocal() as session:
        result = await session.stream(select(Post).execution_options(yield_per=100){options})
        async for partition in result.scalars().partitions():
            for post in partition:
                print(post.author.name)
"""
_ALIASED = """
from sqlalchemy import select
from sqlalchemy.orm import aliased, selectinload
from app.db import SessionLocal
from app.models import User

async def post_counts():
    async with SessionLocal() as session:
        ua = aliased(User)
        users = (await session.scalars(select(ua){options})).all()
        return {{u.id: len(u.posts) for u in users}}
"""
# Rows of an awaited execute() of an entity and a count, read by entity.
_ROWS = """
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from app.db import SessionLocal
from app.models import User

async def post_counts():
    async with SessionLocal() as session:
        stmt = select(User, func.length(User.name)){options}
        rows = (await session.execute(stmt)).all()
        return {{row.User.id: len({entity}.posts) for row in rows}}
"""
# A repository that FastAPI injects through an `Annotated[..., Depends()]` alias.
_REPO_FILES = {
    **_FILES,
    "app/repo.py": """
        from typing import Annotated
        from fastapi import Depends
        from sqlalchemy import select
        from sqlalchemy.ext.asyncio import AsyncSession
        from sqlalchemy.orm import selectinload
        from app.db import get_session
        from app.models import Post

        class PostRepository:
            def __init__(self, session: AsyncSession) -> None:
                self.session = session

            async def list(self) -> list[Post]:
                return list(await self.session.scalars(select(Post)))

            async def list_with_authors(self) -> list[Post]:
                stmt = select(Post).options(selectinload(Post.author))
                return list(await self.session.scalars(stmt))

        def get_repo(session: Annotated[AsyncSession, Depends(get_session)]) -> PostRepository:
            return PostRepository(session)

        RepoDep = Annotated[PostRepository, Depends(get_repo)]
        """,
}
_REPO_ROUTE = """
from app.repo import RepoDep

async def list_posts(repo: RepoDep):
    posts = await repo.{method}()
    return [{{"title": p.title, "author": p.author.name}} for p in posts]
"""


# A serializer reading each relationship under a flag of its own.
_FLAGGED_FILES = {
    **_FILES,
    "app/serializers.py": """
        def dump_post(post, include_author=True, include_category=False):
            data = {"title": post.title}
            if include_author:
                data["author"] = post.author.name
            if include_category:
                data["category"] = post.category.name
            return data
        """,
}
_FLAGGED_VIEW = """
from app.models import Post
from app.serializers import dump_post

async def show(session, post_id):
    post = await session.get(Post, post_id)
    return dump_post({args})
"""


class LazyLoadInAsync(Rule):
    """
    ## What it does
    Checks for async code that reads a relationship of an object loaded through an
    `AsyncSession` when neither the statement (`selectinload`, `joinedload`, …) nor the
    mapping (`lazy="selectin"`, `"joined"`, `"raise"`, …) loads it — directly, in a loop,
    in a helper or model method the object is passed to, or in a Pydantic
    `response_model` that FastAPI fills from it.

    ## Why is this bad?
    A lazy load needs to run SQL implicitly, which `asyncio` cannot do on attribute
    access: it raises `sqlalchemy.exc.MissingGreenlet: greenlet_spawn has not been
    called; can't call await_only() here`. Often only on the code path tests do not
    reach. Read after the `async with` block (or the helper) that closed the session, it
    raises `DetachedInstanceError` instead, and `awaitable_attrs` cannot load it either.

    ## Known problems
    Objects put in the session's identity map by another query (and so already loaded)
    are not tracked; a relationship loaded by `session.refresh(obj, ["rel"])` or read
    through `await obj.awaitable_attrs.rel` earlier in the function is accepted.
    A helper that reads a relationship only under `if flag:` is not reported for a
    call that passes that flag a false literal (`to_dto(project, include_members=False)`)
    or leaves off one defaulting to `False` or `None`.

    ## Example
    ```python
    async def show(session: AsyncSession, user_id: int):
        user = await session.get(User, user_id)
        return [post.title for post in user.posts]
    ```

    Use instead:
    ```python
    async def show(session: AsyncSession, user_id: int):
        user = await session.get(User, user_id, options=[selectinload(User.posts)])
        return [post.title for post in user.posts]
    ```
    or `posts = await user.awaitable_attrs.posts`, or `lazy="raise"` on the
    relationship so that the mistake is loud in every test.

    ## Fix safety
    Unsafe: the fix adds `selectinload()`/`joinedload()` to the statement, which runs an
    extra query (or a join) every time that statement runs.

    ## References
    - [Preventing Implicit IO when Using AsyncSession](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#asyncio-orm-avoid-lazyloads)
    - [MissingGreenlet](https://docs.sqlalchemy.org/en/20/errors.html#error-xd2s)
    """

    code = "SQD202"
    name = "lazy-load-in-async"
    pitfalls = ("P03",)
    severity = Severity.ERROR
    fix = Applicability.UNSAFE
    message = (
        "`{rel}` is lazy-loaded {where} in async code ({source}): this raises "
        "{error} — add {advice}{alternative}"
    )

    VALID = (
        Valid(
            _STREAMED.format(options=".options(joinedload(Post.author))"),
            path="app/export.py",
            files=_FILES,
        ),
        Valid(
            _ALIASED.format(options=".options(selectinload(ua.posts))"),
            path="app/jobs.py",
            files=_FILES,
        ),
        # Loaded with the block's query, read after the block: nothing left to load.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import selectinload
            from app.db import SessionLocal
            from app.models import User

            async def post_counts():
                async with SessionLocal() as session:
                    stmt = select(User).options(selectinload(User.posts))
                    users = (await session.scalars(stmt)).all()
                return {u.id: len(u.posts) for u in users}
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        Valid(
            _REPO_ROUTE.format(method="list_with_authors"), path="app/views.py", files=_REPO_FILES
        ),
        # Loaded by the statement, by the mapping (`selectin`), or loud by design (`raise`).
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import selectinload
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.models import User

            async def show(session: AsyncSession, user_id: int):
                user = await session.get(User, user_id, options=[selectinload(User.posts)])
                roles = [r.id for r in user.roles]
                stmt = select(User).options(selectinload(User.posts))
                users = (await session.scalars(stmt)).all()
                return [len(u.posts) for u in users], user.posts, user.audit
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Each post's author is the user whose posts were eager-loaded: the identity map
        # answers it, no IO.
        Valid(
            """
            from sqlalchemy.orm import selectinload
            from app.models import User

            async def show(session, user_id):
                user = await session.get(User, user_id, options=[selectinload(User.posts)])
                return [f"{post.title} by {post.author.name}" for post in user.posts]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # `awaitable_attrs` and `refresh(obj, [names])` load it explicitly.
        Valid(
            """
            from app.models import User

            async def show(session, user_id):
                user = await session.get(User, user_id)
                posts = await user.awaitable_attrs.posts
                await session.refresh(user, attribute_names=["audit"])
                return len(user.posts), user.name
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Sync code, and sync code run inside the greenlet by run_sync().
        Valid(
            """
            from app.models import User

            def show(session, user_id):
                return session.get(User, user_id).posts

            async def show_async(session, user_id):
                return await session.run_sync(lambda s: len(s.get(User, user_id).posts))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Objects created here are not loaded from the database: nothing to lazy-load.
        Valid(
            """
            from app.models import Post, User

            async def create(session):
                user = User(name="x", posts=[Post(title="t")])
                session.add(user)
                await session.flush()
                return [p.title for p in user.posts]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # A many-to-one chain that the statement joins.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload
            from app.models import Post

            async def feed(session):
                result = await session.execute(select(Post).options(joinedload(Post.author)))
                return [p.author.name for p in result.scalars()]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # A serializer reads a relationship only under `if flag:`, and the call leaves
        # the flag false: passed False (dstack's `include_members=False`), or left at its
        # False default.
        Valid(
            _FLAGGED_VIEW.format(args="post, include_author=False"),
            path="app/views.py",
            files=_FLAGGED_FILES,
        ),
        Valid(
            _FLAGGED_VIEW.format(args="post, False"),
            path="app/views.py",
            files=_FLAGGED_FILES,
        ),
        # The Rows' collection loaded with them, or a Row read for its count only.
        Valid(
            _ROWS.format(options=".options(selectinload(User.posts))", entity="row.User"),
            path="app/jobs.py",
            files=_FILES,
        ),
        Valid(
            _ROWS.format(options="", entity="row.User").replace("len(row.User.posts)", "row[1]"),
            path="app/jobs.py",
            files=_FILES,
        ),
    )
    INVALID = (
        # A Row's entity, by its class's name or its position.
        Invalid(
            _ROWS.format(options="", entity="row.User"),
            path="app/jobs.py",
            files=_FILES,
            line=10,
            expected_message=(
                "`User.posts` is lazy-loaded on `row.User` in async code (loaded at line 8): "
                "this raises MissingGreenlet — add `.options(selectinload(User.posts))` to "
                "that query or use `await row.User.awaitable_attrs.posts`"
            ),
        ),
        Invalid(_ROWS.format(options="", entity="row[0]"), path="app/jobs.py", files=_FILES),
        Invalid(
            _STREAMED.format(options=""),
            path="app/export.py",
            files=_FILES,
            line=11,
            expected_fix=_STREAMED.format(options=".options(joinedload(Post.author))"),
        ),
        Invalid(
            _ALIASED.format(options=""),
            path="app/jobs.py",
            files=_FILES,
            line=10,
            expected_message=(
                "`User.posts` is lazy-loaded on `u` in async code (loaded at line 9): this "
                "raises MissingGreenlet — add `.options(selectinload(ua.posts))` to that "
                "query or use `await u.awaitable_attrs.posts`"
            ),
            expected_fix=_ALIASED.format(options=".options(selectinload(ua.posts))"),
        ),
        # Read after the `async with` block closed the session: detached, not MissingGreenlet.
        Invalid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            async def post_counts():
                async with SessionLocal() as session:
                    users = (await session.scalars(select(User))).all()
                return {u.id: len(u.posts) for u in users}
            """,
            path="app/jobs.py",
            files=_FILES,
            line=8,
            expected_message=(
                "`User.posts` is lazy-loaded on `u` in async code (loaded at line 7): this "
                "raises DetachedInstanceError (the `async with` block at line 6 closed its "
                "session) — add `.options(selectinload(User.posts))` to that query"
            ),
        ),
        # Returned by a helper whose `async with` closed the session.
        Invalid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            async def load_users():
                async with SessionLocal() as session:
                    return list((await session.scalars(select(User))).all())

            async def post_counts():
                users = await load_users()
                return [len(u.posts) for u in users]
            """,
            path="app/jobs.py",
            files=_FILES,
            line=11,
            expected_message=(
                "`User.posts` is lazy-loaded on `u` in async code (loaded by `load_users()` at "
                "app/jobs.py:7): this raises DetachedInstanceError (`load_users()` closed its "
                "session) — add `.options(selectinload(User.posts))` to that query"
            ),
        ),
        Invalid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.models import User

            async def show(session: AsyncSession, user_id: int):
                user = await session.get(User, user_id)
                return [post.title for post in user.posts]
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`User.posts` is lazy-loaded on `user` in async code (loaded at line 5): "
                "this raises MissingGreenlet — add `options=[selectinload(User.posts)]` to "
                "that `get()` or use `await user.awaitable_attrs.posts`"
            ),
        ),
        # Rows from a method of a repository injected through a type alias.
        Invalid(
            _REPO_ROUTE.format(method="list"),
            path="app/views.py",
            files=_REPO_FILES,
            line=5,
            expected_message=(
                "`Post.author` is lazy-loaded on `p` in async code (loaded by `list()` at "
                "app/repo.py:14): this raises MissingGreenlet — add "
                "`.options(joinedload(Post.author))` to that query or use "
                "`await p.awaitable_attrs.author`"
            ),
        ),
        # The seed's shape: `(await s.execute(stmt)).scalars().all()` then a loop.
        Invalid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            async def report():
                stmt = select(User)
                async with SessionLocal() as s:
                    rows = (await s.execute(stmt)).scalars().all()
                    for u in rows:
                        print(u.posts)
            """,
            path="app/views.py",
            files=_FILES,
            line=10,
            expected_fix="""
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User
            from sqlalchemy.orm import selectinload

            async def report():
                stmt = select(User).options(selectinload(User.posts))
                async with SessionLocal() as s:
                    rows = (await s.execute(stmt)).scalars().all()
                    for u in rows:
                        print(u.posts)
            """,
        ),
        # FastAPI: a dependency's session, a response_model that walks `posts`.
        Invalid(
            """
            from typing import Annotated
            from fastapi import APIRouter, Depends
            from pydantic import BaseModel, ConfigDict
            from sqlalchemy import select
            from app.db import get_session
            from app.models import User

            router = APIRouter()

            class PostOut(BaseModel):
                model_config = ConfigDict(from_attributes=True)
                title: str

            class UserOut(BaseModel):
                model_config = ConfigDict(from_attributes=True)
                name: str
                posts: list[PostOut]

            @router.get("/users", response_model=list[UserOut])
            async def list_users(session=Depends(get_session)):
                result = await session.scalars(select(User))
                return result.all()
            """,
            path="app/api.py",
            files=_FILES,
            line=22,
        ),
        # A many-to-one read on each element of an eager-loaded collection (not the
        # author: that is the user itself, which the identity map holds).
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import selectinload
            from app.models import User

            async def feed(session, user_id):
                stmt = select(User).where(User.id == user_id).options(selectinload(User.posts))
                user = (await session.execute(stmt)).scalar_one()
                return [(p.title, p.category.name) for p in user.posts]
            """,
            path="app/views.py",
            files=_FILES,
            line=8,
        ),
        # An object from a repository in another module, serialized by a helper.
        Invalid(
            """
            from app.repo import get_user
            from app.serializers import dump_user

            async def show(session, user_id):
                user = await get_user(session, user_id)
                return dump_user(user)
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/repo.py": """
                from sqlalchemy import select
                from app.models import User

                async def get_user(session, user_id):
                    return await session.scalar(select(User).where(User.id == user_id))
                """,
                "app/serializers.py": """
                def dump_user(user):
                    return {"name": user.name, "posts": [p.title for p in user.posts]}
                """,
            },
            line=6,
        ),
        # The helper reads each relationship only under its own flag: one call sets both.
        Invalid(
            _FLAGGED_VIEW.format(args="post, False, include_category=True"),
            path="app/views.py",
            files=_FLAGGED_FILES,
            expected_message=(
                "`Post.category` is lazy-loaded on `post` in `dump_post()` "
                "(app/serializers.py:1) in async code (loaded at line 5): this raises "
                "MissingGreenlet — add `options=[joinedload(Post.category)]` to that `get()`"
            ),
        ),
    )

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        if not worth_analysing(self.ctx, node):
            return
        flow = flow_for(self.ctx, node)
        navigator = Navigator(flow, self.ctx.index, strict=True)
        seen: set[tuple[int, str, str]] = set()
        for bindings in list(flow.bindings.values()):
            for binding in bindings:
                if binding.kind not in ("assign", "for", "comp", "with"):
                    continue
                objects = flow.binding_value(binding)
                region = binding.scope or flow.node
                if isinstance(objects, RowValue) and objects.rows.is_async:
                    # `row.User.posts` / `row.author.posts` of an awaited execute()'s Rows.
                    for entity, attribute, loaded in row_entity_reads(flow, binding, region):
                        for access in navigator.on_attribute(attribute, loaded, per_row=False):
                            if not back_to_parent(self.ctx.index, access, loaded.path):
                                closed = _closed_by(flow, access)
                                self._report(access, self.ctx.text(entity), seen, closed)
                    continue
                if not isinstance(objects, ObjectsValue) or not objects.is_async:
                    continue
                for access in navigator.on_binding(binding, objects, region, per_row=False):
                    if self._loaded_explicitly(flow, binding.name, access) or back_to_parent(
                        self.ctx.index, access, objects.path
                    ):
                        continue
                    self._report(access, binding.name, seen, _closed_by(flow, access))
        for ret in flow.returns:
            objects = flow.value(ret.value)
            if isinstance(objects, ObjectsValue) and objects.is_async:
                for access in navigator.response_model(ret, objects):
                    self._report(access, None, seen, _closed_by(flow, access))

    @staticmethod
    def _loaded_explicitly(flow: FunctionFlow, name: str, access: LazyAccess) -> bool:
        """`await obj.awaitable_attrs.rel` or `refresh(obj, ["rel"])` before the read."""
        if len(access.path) != len(access.objects.path) + 1:
            return False
        attr = access.rel.attr
        for attribute in flow.attr_loads.get(name, ()):
            if attribute.attr != "awaitable_attrs":
                continue
            parent = flow.parent(attribute)
            if (
                isinstance(parent, ast.Attribute)
                and parent.attr == attr
                and not contains(parent, access.node)
                and _before(parent, access.node)
            ):
                return True
        for call in flow.calls:
            func = call.func
            if not (isinstance(func, ast.Attribute) and func.attr == "refresh" and call.args):
                continue
            if not (isinstance(call.args[0], ast.Name) and call.args[0].id == name):
                continue
            names = call.args[1] if len(call.args) > 1 else None
            for kw in call.keywords:
                if kw.arg == "attribute_names":
                    names = kw.value
            if isinstance(names, (ast.List, ast.Tuple, ast.Set)) and attr in {
                literal_str(e) for e in names.elts
            }:
                return True
        return False

    def _report(
        self,
        access: LazyAccess,
        obj: str | None,
        seen: set[tuple[int, str, str]],
        closed: str | None = None,
    ) -> None:
        rel = access.rel
        key = (id(access.node), rel.owner, rel.attr)
        if key in seen:
            return
        seen.add(key)
        loader = "selectinload" if rel.collection else "joinedload"
        option = access_option(self.ctx.index, access)
        loaded = access.objects
        stmt = loaded.stmt
        fix: Fix | None = None
        entity = loaded.entity
        if (
            stmt is not None
            and loaded.origin_path is None
            and len(access.path) == 1
            and entity is not None
        ):
            edits = loader_edits(self.ctx, stmt, loader, f"{self.ctx.text(entity)}.{rel.attr}")
            if edits is not None:
                option = edits[1]
                fix = Fix(
                    f"add `.options({option})` to the statement", edits[0], Applicability.UNSAFE
                )
        if loaded.origin_name is not None:
            source = f"loaded by `{loaded.origin_name}()` at {loaded.origin_path}:{loaded.line}"
        else:
            source = f"loaded at line {loaded.line}"
        direct = obj is not None and access.via is None and len(access.path) == len(loaded.path) + 1
        if obj is None:
            where = (
                f"while {access.via} is serialized"
                if access.via
                else "while the result is serialized"
            )
        else:
            where = f"on `{obj}`" + (f" in {access.via}" if access.via else "")
        alternative = f" or use `await {obj}.awaitable_attrs.{rel.attr}`" if direct else ""
        error = "MissingGreenlet"
        if closed is not None:
            # Detached, it cannot load at all: awaitable_attrs fails the same way.
            error = f"DetachedInstanceError ({closed} closed its session)"
            alternative = ""
        advice = f"`.options({option})` to that query"
        if stmt is None and loaded.origin_name is None and _session_get(loaded.node):
            # `session.get()` takes its loader options as a keyword, not `.options()`.
            advice = f"`options=[{option}]` to that `get()`"
        self.report(
            access.node,
            fix=fix,
            hint=(
                f'eager-load it with `{option}`, or set `lazy="raise"` so that every such '
                "access fails loudly"
            ),
            rel=rel.name,
            where=where,
            source=source,
            option=option,
            advice=advice,
            alternative=alternative,
            error=error,
        )


def _closed_by(flow: FunctionFlow, access: LazyAccess) -> str | None:
    """How the session that loaded the objects was closed before this read: the
    `async with` block around the load that the read comes after, or the helper that
    loaded them and closed its session."""
    loaded = access.objects
    returns = loaded.returns
    if returns is not None and returns.session_closed and loaded.origin_name is not None:
        return f"`{loaded.origin_name}()`"
    if loaded.node is None or loaded.receiver is None:
        return None
    for node in ast.walk(flow.node):
        if not isinstance(node, ast.AsyncWith) or not contains(node, loaded.node):
            continue
        if contains(node, access.node) or not _before(node, access.node):
            continue
        if any(
            isinstance(item.optional_vars, ast.Name) and item.optional_vars.id == loaded.receiver
            for item in node.items
        ):
            return f"the `async with` block at line {node.lineno}"
    return None


def _session_get(node: ast.AST | None) -> bool:
    """Whether the objects were loaded by `session.get(Model, pk)` (awaited or not)."""
    if isinstance(node, ast.Await):
        node = node.value
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
    )


def _before(node: ast.AST, other: ast.AST) -> bool:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0)) < (
        getattr(other, "lineno", 0),
        getattr(other, "col_offset", 0),
    )
