"""SQD153: a query that autoflushed pending objects, and its twins."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor

from .models import Post, User
from .support import line_of, of_code, one, relative


def test_query_that_flushes_a_new_object_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.add(User(name="ada"))  # line:add
        total = session.scalar(select(func.count()).select_from(User))  # line:query
        session.commit()
    assert total == 6
    finding = one(uow.findings, "SQD153")
    here = relative(__file__)
    assert finding.location.line == line_of("query")
    assert finding.message == (
        f"query at {here}:{line_of('query')} autoflushed 1 pending object(s) (1 User) before "
        "running — flush explicitly where the write belongs, or build the objects inside "
        "`with session.no_autoflush:`"
    )
    assert [r.location.line for r in finding.related] == [line_of("add")]
    assert finding.severity.value == "info"


def test_no_autoflush_block_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        with session.no_autoflush:
            session.add(User(name="ada"))
            session.scalar(select(func.count()).select_from(User))
        session.commit()
    assert not uow.findings


def test_explicit_flush_before_the_query_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.add(User(name="ada"))
        session.flush()
        session.scalar(select(func.count()).select_from(User))
        session.commit()
    assert not uow.findings


def test_autoflush_of_changes_only_is_not_reported(engine: Engine) -> None:
    """Only pending (new) objects count: flushing an UPDATE first is what users expect."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        user.name = "renamed"
        session.scalars(select(User)).all()
        session.commit()
    assert not uow.findings


def test_lazy_load_that_autoflushes_is_reported_at_the_attribute(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        session.add(Post(title="draft", author_id=2))
        assert user.posts  # line:lazy
        session.commit()
    assert one(uow.findings, "SQD153").location.line == line_of("lazy")


def test_commit_flush_is_not_an_autoflush(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.add(User(name="ada"))
        session.commit()
        session.scalars(select(User)).all()
    assert not of_code(uow.findings, "SQD153")


async def test_async_query_that_flushes_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        session.add(User(name="ada"))
        await session.scalar(select(func.count()).select_from(User))  # line:async-query
        await session.commit()
    assert one(uow.findings, "SQD153").location.line == line_of("async-query")


async def test_async_explicit_flush_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        session.add(User(name="ada"))
        await session.flush()
        await session.scalar(select(func.count()).select_from(User))
        await session.commit()
    assert not uow.findings


def import_post(session: Session, title: str, author_name: str) -> str:
    """The post is added before its author is looked up: the lookup autoflushes it
    half-built (author_id NULL), and the program catches the error."""
    try:
        post = Post(title=title)
        session.add(post)
        author = select(User.id).where(User.name == author_name)
        post.author_id = session.scalar(author)  # line:lookup
        session.commit()
        return "imported"
    except IntegrityError:
        session.rollback()
        return "failed"


def test_an_autoflush_that_fails_is_reported_even_when_caught(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert import_post(session, "draft", "user1") == "failed"
    finding = one(uow.findings, "SQD153")
    here = relative(__file__)
    assert finding.location.line == line_of("lookup")
    assert finding.message == (
        f"query at {here}:{line_of('lookup')} autoflushed 1 pending object(s) (1 Post) before "
        "running — the flush failed with IntegrityError: those objects were not complete "
        "yet; set their values before querying, or build them inside "
        "`with session.no_autoflush:` and flush once they are"
    )


def test_looking_up_first_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        author_id = session.scalar(select(User.id).where(User.name == "user1"))
        session.add(Post(title="draft", author_id=author_id))
        session.commit()
    assert not of_code(uow.findings, "SQD153")


async def test_async_autoflush_that_fails_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        post = Post(title="draft")
        session.add(post)
        try:
            post.author_id = await session.scalar(select(User.id))  # line:async-lookup
        except IntegrityError:
            await session.rollback()
    finding = one(uow.findings, "SQD153")
    assert finding.location.line == line_of("async-lookup")
    assert "the flush failed with IntegrityError" in finding.message
