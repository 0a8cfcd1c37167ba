"""SQD255: MissingGreenlet explained (the lazy load or refresh, its line, the fix)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import ForeignKey, select
from sqlalchemy.exc import MissingGreenlet, StatementError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    joinedload,
    mapped_column,
    relationship,
    selectin_polymorphic,
    selectinload,
    undefer,
)

import sqla_doctor

from .models import Post, User
from .support import line_of, one, relative

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are 3.11+"),
    # aiosqlite's cursor() coroutine, created by the failed implicit IO, is never awaited.
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def _missing_greenlet(error: BaseException) -> bool:
    inner = getattr(error, "orig", None)
    return isinstance(error, MissingGreenlet) or isinstance(inner, MissingGreenlet)


async def posts_without_await(engine: AsyncEngine, tracker: sqla_doctor.Tracker) -> None:
    async with tracker, AsyncSession(engine) as session:
        users = (await session.scalars(select(User))).all()  # line:query
        print(users[0].posts)  # line:access


async def test_lazy_load_in_async_code_is_explained(async_engine: AsyncEngine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    # SQLAlchemy 2.1 wraps MissingGreenlet in a StatementError; 2.0 raises it as it is.
    with pytest.raises((StatementError, MissingGreenlet)) as raised:
        await posts_without_await(async_engine, tracker)
    assert _missing_greenlet(raised.value)
    uow = tracker.last
    assert uow is not None
    here = relative(__file__)
    finding = one(uow.findings, "SQD255")
    assert finding.location.path == here
    assert finding.location.line == line_of("access")
    assert finding.message == (
        f"User.posts lazy-loaded in async code without await (the User was loaded by the "
        f"query at {here}:{line_of('query')}) — add .options(selectinload(User.posts)) to "
        "that query, or `await user.awaitable_attrs.posts`, or declare the relationship "
        'with lazy="selectin" (or lazy="raise" to fail early)'
    )
    assert [r.location.line for r in finding.related] == [line_of("query")]
    assert raised.value.__notes__[0].startswith(f"sqla-doctor: SQD255 {finding.message}")


async def test_selectinload_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        stmt = select(User).options(selectinload(User.posts))
        users = (await session.scalars(stmt)).all()
        assert len(users[0].posts) == 2
    assert not uow.findings


async def test_awaitable_attrs_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = await session.get(User, 1)
        assert user is not None
        assert len(await user.awaitable_attrs.posts) == 2
    assert not uow.findings


async def name_after_commit(engine: AsyncEngine, tracker: sqla_doctor.Tracker) -> None:
    async with tracker, AsyncSession(engine) as session:
        user = await session.get(User, 1)
        assert user is not None
        await session.commit()  # line:commit
        print(user.name)  # line:expired


async def test_expired_attribute_after_commit_names_the_commit(async_engine: AsyncEngine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises((StatementError, MissingGreenlet)) as raised:
        await name_after_commit(async_engine, tracker)
    assert _missing_greenlet(raised.value)
    uow = tracker.last
    assert uow is not None
    here = relative(__file__)
    finding = one(uow.findings, "SQD255")
    assert finding.location.line == line_of("expired")
    assert finding.message.startswith(
        f"User.name refreshed in async code without await (expired by the commit at "
        f"{here}:{line_of('commit')}: expire_on_commit=True) — create the session with "
        "expire_on_commit=False"
    )
    assert "`await session.refresh(user)`" in finding.message


async def test_expire_on_commit_false_twin_is_silent(async_engine: AsyncEngine) -> None:
    factory = async_sessionmaker(async_engine, expire_on_commit=False)
    async with sqla_doctor.track(mode="collect") as uow, factory() as session:
        user = await session.get(User, 1)
        assert user is not None
        await session.commit()
        assert user.name == "user0"
    assert not uow.findings


async def test_decorated_coroutine_gets_the_note_in_warn_mode(async_engine: AsyncEngine) -> None:
    @sqla_doctor.track
    async def handler() -> None:
        async with AsyncSession(async_engine) as session:
            user = await session.get(User, 1)
            assert user is not None
            print(user.posts)

    with pytest.raises((StatementError, MissingGreenlet)) as raised:
        await handler()
    assert any(n.startswith("sqla-doctor: SQD255") for n in raised.value.__notes__)


async def test_caught_error_is_explained_when_it_is_raised(async_engine: AsyncEngine) -> None:
    # A web framework catches what a handler raises and answers 500: the error never
    # leaves the unit of work, and is explained all the same, once.
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        users = (await session.scalars(select(User))).all()
        try:
            print(users[0].posts)  # line:caught
        except (StatementError, MissingGreenlet) as error:
            caught = error
    assert _missing_greenlet(caught)
    finding = one(uow.findings, "SQD255")
    assert finding.location.line == line_of("caught")
    assert finding.message.startswith("User.posts lazy-loaded in async code without await")
    assert [n for n in caught.__notes__ if n.startswith("sqla-doctor:")] == [
        f"sqla-doctor: SQD255 {finding.message}\n"
        f"  {relative(__file__)}:{finding.related[0].location.line}: "
        "the query that loaded the User"
    ]


async def test_caught_error_is_explained_under_install(async_engine: AsyncEngine) -> None:
    sqla_doctor.install(mode="collect")
    async with AsyncSession(async_engine) as session:
        user = await session.get(User, 1)
        assert user is not None
        await session.commit()  # line:install-commit
        with pytest.raises((StatementError, MissingGreenlet)):
            print(user.name)  # line:install-expired
    finding = one(sqla_doctor.collected(), "SQD255")
    assert finding.location.line == line_of("install-expired")
    assert f":{line_of('install-commit')}: expire_on_commit=True" in finding.message


async def test_expired_relationship_read_after_a_reload_is_a_lazy_load(
    async_engine: AsyncEngine,
) -> None:
    # The commit expired User.posts with the columns; the select loads the columns
    # again, so reading posts is a lazy load, whose fix is a loader option.
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = await session.get(User, 1)
        await session.commit()
        again = (await session.scalars(select(User).where(User.id == 1))).one()  # line:reload
        assert again is user
        with pytest.raises((StatementError, MissingGreenlet)):
            print(again.posts)
    finding = one(uow.findings, "SQD255")
    assert finding.message.startswith(
        "User.posts lazy-loaded in async code without await (the User was loaded by the "
        f"query at {relative(__file__)}:{line_of('reload')})"
    )


async def test_lazy_loads_that_failed_are_not_an_n_plus_one(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        users = (await session.scalars(select(User))).all()
        assert len(users) > 2
        for user in users:
            with contextlib.suppress(StatementError, MissingGreenlet):
                print(user.posts)
    assert [f.code for f in uow.findings] == ["SQD255"]


class PlainBase(DeclarativeBase):  # no AsyncAttrs: no awaitable_attrs
    pass


class Team(PlainBase):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    members: Mapped[list[Member]] = relationship()


class Member(PlainBase):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))


async def test_a_class_without_asyncattrs_is_not_told_to_await_awaitable_attrs(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'teams.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PlainBase.metadata.create_all)
    async with AsyncSession(engine) as session, session.begin():
        session.add(Team(members=[Member()]))
    tracker = sqla_doctor.track(mode="collect")

    async def members_without_await() -> None:
        async with tracker, AsyncSession(engine) as session:
            team = (await session.scalars(select(Team))).one()
            print(team.members)

    with pytest.raises((StatementError, MissingGreenlet)):
        await members_without_await()
    await engine.dispose()
    assert tracker.last is not None
    message = one(tracker.last.findings, "SQD255").message
    assert "add the AsyncAttrs mixin to Team's base and `await team.awaitable_attrs.members`" in (
        message
    )


async def bio_without_await(engine: AsyncEngine, tracker: sqla_doctor.Tracker) -> None:
    async with tracker, AsyncSession(engine, expire_on_commit=False) as session:
        users = (await session.scalars(select(User))).all()  # line:deferred-query
        print(users[0].bio)  # line:deferred


async def test_a_deferred_column_is_told_undefer_not_expire_on_commit(
    async_engine: AsyncEngine,
) -> None:
    """Nothing expired User.bio (and the session does not expire on commit): the query
    never loaded it."""
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises((StatementError, MissingGreenlet)):
        await bio_without_await(async_engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD255")
    here = relative(__file__)
    assert finding.location.line == line_of("deferred")
    assert finding.message == (
        "User.bio loaded in async code without await (deferred: not loaded by the query at "
        f"{here}:{line_of('deferred-query')}) — add .options(undefer(User.bio)) to that "
        "query, or `await user.awaitable_attrs.bio`"
    )
    assert finding.fix_hint == ".options(undefer(User.bio))"


async def test_undefer_is_the_deferred_columns_silent_twin(async_engine: AsyncEngine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSession(async_engine) as session:
            stmt = select(User).options(undefer(User.bio))
            users = (await session.scalars(stmt)).all()
            assert users[0].bio
    assert not uow.findings


class Person(PlainBase):
    __tablename__ = "people"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "person",
    }


class Admin(Person):
    __tablename__ = "admins"
    id: Mapped[int] = mapped_column(ForeignKey("people.id"), primary_key=True)
    level: Mapped[int]
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "admin"}


async def test_a_subclass_column_a_base_class_query_left_out_is_told_selectin_polymorphic(
    tmp_path: Path,
) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'people.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PlainBase.metadata.create_all)
    async with AsyncSession(engine) as session, session.begin():
        session.add(Admin(level=3))
    tracker = sqla_doctor.track(mode="collect")

    async def level_without_await(query: Any) -> int:
        async with tracker, AsyncSession(engine, expire_on_commit=False) as session:
            people = (await session.scalars(query)).all()  # line:people
            return sum(p.level for p in people if isinstance(p, Admin))  # line:level

    with pytest.raises((StatementError, MissingGreenlet)):
        await level_without_await(select(Person))
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD255")
    here = relative(__file__)
    assert finding.location.line == line_of("level")
    assert finding.message == (
        f"Admin.level loaded in async code without await (the query at {here}:"
        f"{line_of('people')} selected Person, which leaves Admin's own table out) — add "
        ".options(selectin_polymorphic(Person, [Admin])) to that query, or add the "
        "AsyncAttrs mixin to Admin's base and `await admin.awaitable_attrs.level`"
    )
    names = {"selectin_polymorphic": selectin_polymorphic, "Person": Person, "Admin": Admin}
    assert finding.fix_hint is not None
    option = eval(finding.fix_hint.removeprefix(".options"), names)
    with sqla_doctor.track(mode="collect") as fixed:
        assert await level_without_await(select(Person).options(option)) == 3
    assert not fixed.findings
    await engine.dispose()


async def test_an_object_from_session_get_is_told_its_options_argument(
    async_engine: AsyncEngine,
) -> None:
    """session.get() has no .options(): the option goes in its options=[...]."""
    tracker = sqla_doctor.track(mode="collect")

    async def posts_of_one_user(options: list[Any]) -> int:
        async with tracker, AsyncSession(async_engine) as session:
            user = await session.get(User, 1, options=options)  # line:get
            assert user is not None
            return len(user.posts)  # line:get-posts

    with pytest.raises((StatementError, MissingGreenlet)):
        await posts_of_one_user([])
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD255")
    here = relative(__file__)
    assert finding.location.line == line_of("get-posts")
    assert finding.message == (
        "User.posts lazy-loaded in async code without await (the User was loaded by the "
        f"session.get() at {here}:{line_of('get')}) — pass options=[selectinload(User.posts)] "
        "to that session.get(), or `await user.awaitable_attrs.posts`, or declare the "
        'relationship with lazy="selectin" (or lazy="raise" to fail early)'
    )
    assert finding.fix_hint == "options=[selectinload(User.posts)]"
    tracker = sqla_doctor.track(mode="collect")
    assert await posts_of_one_user([selectinload(User.posts)]) == 2
    assert tracker.last is not None
    assert not tracker.last.findings


async def test_an_object_from_a_stream_with_yield_per_is_told_the_query_option(
    async_engine: AsyncEngine,
) -> None:
    """yield_per reaches the event among the load options session.get() passes: the
    streamed query still takes .options(...)."""
    tracker = sqla_doctor.track(mode="collect")

    async def authors_of_posts(options: list[Any]) -> list[str]:
        names = []
        async with tracker, AsyncSession(async_engine) as session:
            stmt = select(Post).options(*options).execution_options(yield_per=2)
            async for post in await session.stream_scalars(stmt):  # line:stream
                names.append(post.author.name)  # line:stream-author
        return names

    with pytest.raises((StatementError, MissingGreenlet)):
        await authors_of_posts([])
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD255")
    here = relative(__file__)
    assert finding.location.line == line_of("stream-author")
    assert finding.message.startswith(
        "Post.author lazy-loaded in async code without await (the Post was loaded by the "
        f"query at {here}:{line_of('stream')}) — add .options(joinedload(Post.author)) to "
        "that query"
    )
    assert finding.fix_hint == ".options(joinedload(Post.author))"
    tracker = sqla_doctor.track(mode="collect")
    assert len(await authors_of_posts([joinedload(Post.author)])) == 10
    assert tracker.last is not None
    assert not tracker.last.findings


# -- an object the program created: no query loaded it -----------------------------------


async def test_relationship_of_an_object_the_program_created_is_told_refresh_with_its_name(
    async_engine: AsyncEngine,
) -> None:
    # A create endpoint: the new row names its author by key, then the response reads
    # the relationship. No query loaded the Post, so no loader option can load it.
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        post = Post(title="new", author_id=1)
        session.add(post)
        await session.flush()  # line:created-flush
        with pytest.raises((StatementError, MissingGreenlet)):
            print(post.author)  # line:created-read
    finding = one(uow.findings, "SQD255")
    assert finding.location.line == line_of("created-read")
    assert finding.message == (
        "Post.author lazy-loaded in async code without await (the Post was created by the "
        "program, not loaded by a query) — load it once the Post is written: "
        '`await session.refresh(post, ["author"])` after the commit or flush (it reloads '
        "what the commit expired too; refresh(post) alone leaves its relationships "
        "unloaded), or "
        "`await post.awaitable_attrs.author`"
    )
    assert finding.fix_hint == 'await session.refresh(post, ["author"])'
    assert [r.location.line for r in finding.related] == [line_of("created-flush")]


async def test_refresh_naming_the_relationship_is_the_created_objects_silent_twin(
    async_engine: AsyncEngine,
) -> None:
    factory = async_sessionmaker(async_engine, expire_on_commit=False)
    async with sqla_doctor.track(mode="collect") as uow, factory() as session:
        post = Post(title="new", author_id=1)
        session.add(post)
        await session.commit()
        await session.refresh(post, ["author"])
        assert post.author.name == "user0"
    assert not uow.findings


async def test_a_created_objects_relationship_expired_by_commit_also_needs_its_columns(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        post = Post(title="new", author_id=1)
        session.add(post)
        await session.commit()  # line:created-commit
        with pytest.raises((StatementError, MissingGreenlet)):
            print(post.author)
    message = one(uow.findings, "SQD255").message
    assert f"; the commit at {relative(__file__)}:{line_of('created-commit')} expired it)" in (
        message
    )
    # expire_on_commit=False alone would still leave the relationship unloaded.
    assert "expire_on_commit=False" not in message
    assert '`await session.refresh(post, ["author"])` after the commit or flush' in message


async def test_refresh_naming_the_relationship_also_reloads_what_the_commit_expired(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        post = Post(title="new", author_id=1)
        session.add(post)
        await session.commit()
        await session.refresh(post, ["author"])
        assert (post.title, post.author.name) == ("new", "user0")
    assert not uow.findings


async def test_columns_one_commit_expired_read_by_a_serializer_are_one_finding(
    async_engine: AsyncEngine,
) -> None:
    # pydantic's from_attributes reads every field and goes on past each error: one
    # commit, one mistake, one fix.
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = await session.get(User, 1)
        await session.commit()
        for attribute in ("id", "name"):
            with contextlib.suppress(StatementError, MissingGreenlet):
                getattr(user, attribute)  # line:serializer
    finding = one(uow.findings, "SQD255")
    assert finding.location.line == line_of("serializer")
    assert finding.message.startswith("User.id refreshed in async code without await")


async def test_a_created_object_refreshed_after_commit_is_told_refresh_with_the_name(
    async_engine: AsyncEngine,
) -> None:
    # SQLModel's tutorial shape: commit, then refresh() for the columns; the lazy
    # relationship stays unloaded, and no query loaded the Post to give an option to.
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        post = Post(title="new", author_id=1)
        session.add(post)
        await session.commit()
        await session.refresh(post)
        with pytest.raises((StatementError, MissingGreenlet)):
            print(post.author)
    message = one(uow.findings, "SQD255").message
    assert "(no query of this session loaded the Post;" in message
    assert '`await session.refresh(post, ["author"])` after the commit or flush' in message
    assert ".options(" not in message
