"""SQD158: one AsyncSession used by concurrent asyncio tasks, on aiosqlite and asyncpg."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import anyio
import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import sqla_doctor
from pgserver import PgDatabase

from .models import Base, Post, User, seed_objects
from .support import line_of, of_code, one, relative

HERE = relative(__file__)


async def load_users(session: AsyncSession) -> list[User]:
    return list((await session.scalars(select(User))).all())  # line:users


async def load_posts(session: AsyncSession) -> list[Post]:
    return list((await session.scalars(select(Post))).all())  # line:posts


async def test_gather_of_two_loaders_on_one_session_names_both_call_sites(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        users, posts = await asyncio.gather(load_users(session), load_posts(session))  # line:start
    # aiosqlite serializes the statements: nothing fails, the results are right...
    assert len(users) == 5
    assert len(posts) == 10
    # ...and the sharing is reported all the same.
    finding = one(uow.findings, "SQD158")
    lines = {finding.location.line, finding.related[0].location.line}
    assert lines == {line_of("users"), line_of("posts")}
    assert [(r.location.line, r.message) for r in finding.related[1:]] == [
        (line_of("start"), "asyncio.gather() started these tasks here")
    ]
    assert finding.location.path == HERE
    assert "two asyncio tasks at once" in finding.message
    assert "load_users" in finding.message
    assert "load_posts" in finding.message
    assert "async with session_factory() as session" in finding.message


async def test_gather_of_the_session_methods_themselves_points_at_the_gather(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        statements = (session.execute(select(User)), session.execute(select(Post)))
        await asyncio.gather(*statements)  # line:gather
    finding = one(uow.findings, "SQD158")
    assert (finding.location.path, finding.location.line) == (HERE, line_of("gather"))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is 3.11+")
async def test_task_group_sharing_a_session_with_lazy_loads_is_reported(
    async_engine: AsyncEngine,
) -> None:
    async def posts_of(user: User) -> int:
        return len(await user.awaitable_attrs.posts)  # line:lazy

    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        users = (await session.scalars(select(User))).all()
        async with asyncio.TaskGroup() as group:  # line:group
            counts = [group.create_task(posts_of(user)) for user in users]
    assert [c.result() for c in counts] == [2] * 5
    finding = one(uow.findings, "SQD158")
    assert finding.location.line == line_of("lazy")
    assert (finding.related[-1].location.line, finding.related[-1].message) == (
        line_of("group"),
        "the TaskGroup that started these tasks ends here",
    )


async def rename(session: AsyncSession, user_id: int) -> None:
    await asyncio.sleep(0)
    user = await session.get(User, user_id)  # line:rename-get
    assert user is not None
    user.name = f"renamed {user_id}"
    await session.flush()  # line:rename-flush


async def test_tasks_overlapping_at_several_operations_are_one_finding(
    async_engine: AsyncEngine,
) -> None:
    # Each task's get() and flush() overlap another's: one transaction, one fix.
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        # Every task to its end, whatever one of them raised.
        await asyncio.gather(
            *(rename(session, user_id) for user_id in range(1, 6)), return_exceptions=True
        )
    finding = one(uow.findings, "SQD158")
    assert finding.location.line in {line_of("rename-get"), line_of("rename-flush")}


async def test_tasks_created_one_by_one_name_no_starting_line(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        tasks = [asyncio.create_task(load_users(session)), asyncio.create_task(load_posts(session))]
        for task in tasks:
            await task
    finding = one(uow.findings, "SQD158")
    assert len(finding.related) == 1
    assert finding.related[0].message.endswith("operation on the same session")


async def test_a_gather_over_another_session_is_not_named(async_engine: AsyncEngine) -> None:
    async def unrelated() -> None:
        async with AsyncSession(async_engine) as other:
            await asyncio.gather(load_users(other), asyncio.sleep(0.05))

    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        tasks = [asyncio.create_task(load_users(session)), asyncio.create_task(load_posts(session))]
        await unrelated()
        await asyncio.gather(*tasks)
    finding = one(uow.findings, "SQD158")
    assert len(finding.related) == 1


async def test_tasks_of_an_anyio_task_group_read_as_two_tasks(async_engine: AsyncEngine) -> None:
    """anyio (Starlette's task groups) names each task after the function it runs and
    runs it in a coroutine of its own, TaskHandle._run_coro: that wrapper is not named,
    and the second task of the same name is "another" one."""
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(async_engine) as session,
        anyio.create_task_group() as group,
    ):
        for _ in range(2):
            group.start_soon(load_users, session)
    finding = one(uow.findings, "SQD158")
    task = f"task {load_users.__module__}.load_users"
    assert finding.message.startswith(
        f"AsyncSession used by two asyncio tasks at once: {task} began an operation at "
        f"{HERE}:{line_of('users')} while another {task}'s operation from "
        f"{HERE}:{line_of('users')} was still waiting for the database"
    )
    assert finding.related[0].message == f"another {task}'s operation on the same session"


async def test_sequential_awaits_on_one_session_are_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        await load_users(session)
        await load_posts(session)
        session.add(User(name="new"))
        await session.commit()
        for user in await load_users(session):
            await user.awaitable_attrs.posts
    assert not of_code(uow.findings, "SQD158")


async def test_one_session_per_task_is_silent(async_engine: AsyncEngine) -> None:
    factory = async_sessionmaker(async_engine)

    async def users() -> list[User]:
        async with factory() as session:
            return await load_users(session)

    async def posts() -> list[Post]:
        async with factory() as session:
            return await load_posts(session)

    async with sqla_doctor.track(mode="collect") as uow:
        await asyncio.gather(users(), posts(), users(), posts())
    assert not of_code(uow.findings, "SQD158")


async def test_gather_over_different_sessions_is_silent(async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(async_engine) as first,
        AsyncSession(async_engine) as second,
    ):
        await asyncio.gather(load_users(first), load_posts(second))
        await asyncio.gather(first.execute(text("SELECT 1")), second.execute(text("SELECT 1")))
    assert not of_code(uow.findings, "SQD158")


async def test_each_task_in_its_own_unit_reports_in_the_one_that_overlapped(
    async_engine: AsyncEngine,
) -> None:
    async def tracked(loader: object, session: AsyncSession) -> sqla_doctor.UnitOfWork:
        async with sqla_doctor.track(mode="collect") as uow:
            await loader(session)  # type: ignore[operator]
        return uow

    async with AsyncSession(async_engine) as session:
        units = await asyncio.gather(tracked(load_users, session), tracked(load_posts, session))
    assert sum(len(of_code(u.findings, "SQD158")) for u in units) == 1


# -- PostgreSQL: asyncpg raises for real, and the error is explained ---------------------


@pytest.fixture
async def pg_async_engine(pg_database: PgDatabase) -> AsyncIterator[AsyncEngine]:
    # A database of its own: a connection broken by concurrent use may still hold locks
    # when the test ends; the database is dropped WITH (FORCE).
    engine = create_async_engine(pg_database.async_url)
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        session.add_all(seed_objects())
        await session.commit()
    yield engine
    await asyncio.wait_for(engine.dispose(), 10)


async def test_asyncpg_error_from_a_shared_session_is_explained(
    pg_async_engine: AsyncEngine,
) -> None:
    """The program fails (how depends on the timing); the traceback says why."""

    async def finish(session: AsyncSession) -> None:
        await session.commit()  # line:commit

    async def program() -> None:
        async with tracker, AsyncSession(pg_async_engine) as session:
            await session.execute(text("SELECT 1"))
            await asyncio.gather(load_users(session), finish(session))

    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(SQLAlchemyError, match="another operation is in progress") as raised:
        await program()
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD158")
    lines = {finding.location.line, finding.related[0].location.line}
    assert lines == {line_of("users"), line_of("commit")}
    if sys.version_info >= (3, 11):
        notes = "\n".join(getattr(raised.value, "__notes__", []))
        assert "SQD158" in notes
        assert f"{HERE}:{line_of('commit')}" in notes


async def test_asyncpg_one_session_per_task_is_silent(pg_async_engine: AsyncEngine) -> None:
    factory = async_sessionmaker(pg_async_engine)

    async def users() -> list[User]:
        async with factory() as session:
            return await load_users(session)

    async with sqla_doctor.track(mode="collect") as uow:
        results = await asyncio.gather(*(users() for _ in range(8)))
    assert [len(r) for r in results] == [5] * 8
    assert not of_code(uow.findings, "SQD158")
