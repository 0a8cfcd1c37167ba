"""Queries a program's own before_flush hook runs are the program's, not the flush's.

The doctor's before_flush listener is registered before the program's (under `sqla-doctor
run`, as soon as SQLAlchemy is imported), so it runs first: what the program's hook
loads or queries per object is an N+1 like any other, not the unit of work's own SQL.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, joinedload

import sqla_doctor

from .models import Post
from .support import line_of, of_code, one


class AuditedSession(Session):
    """A session class with the program's own flush hook."""


def check_authors(session: Session, flush_context: Any, instances: Any) -> None:
    for post in list(session.dirty):
        if isinstance(post, Post):
            assert post.author.name  # line:hook-lazy


def count_posts(session: Session, flush_context: Any, instances: Any) -> None:
    for post in list(session.dirty):
        if isinstance(post, Post):
            same_author = select(func.count()).where(Post.author_id == post.author_id)
            session.scalar(same_author)  # line:hook-count


@pytest.fixture
def hooked() -> Iterator[None]:
    yield
    for hook in (check_authors, count_posts):
        if event.contains(AuditedSession, "before_flush", hook):
            event.remove(AuditedSession, "before_flush", hook)


def retitle_posts(engine: Engine, *options: Any) -> None:
    with AuditedSession(engine) as session:
        posts = session.scalars(select(Post).options(*options)).all()
        for post in posts:
            post.title += "!"
        session.commit()  # line:hook-commit


def test_lazy_loads_in_a_before_flush_hook_are_an_n_plus_one(engine: Engine, hooked: None) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        # Registered after the doctor's listener, as a program's is under `run`.
        event.listen(AuditedSession, "before_flush", check_authors)
        retitle_posts(engine)
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("hook-lazy")
    assert finding.message.startswith("Post.author lazy-loaded")


def test_the_hooks_loader_option_is_the_silent_twin(engine: Engine, hooked: None) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        event.listen(AuditedSession, "before_flush", check_authors)
        retitle_posts(engine, joinedload(Post.author))
    assert not of_code(uow.findings, "SQD251")


def test_a_query_per_object_in_a_before_flush_hook_is_a_repeated_statement(
    engine: Engine, hooked: None
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        event.listen(AuditedSession, "before_flush", count_posts)
        retitle_posts(engine)
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("hook-count")


def test_the_flushs_own_statements_stay_the_flushs(engine: Engine, hooked: None) -> None:
    # The UPDATEs the flush runs per changed post are the unit of work's: not repeated.
    with sqla_doctor.track(mode="collect") as uow:
        event.listen(AuditedSession, "before_flush", check_authors)
        retitle_posts(engine, joinedload(Post.author))
    assert not uow.findings


def posts_by_same_author(mapper: Any, connection: Connection, target: Post) -> None:
    same_author = select(func.count()).where(Post.author_id == target.author_id)
    assert connection.scalar(same_author)  # line:mapper-hook


def titles_only(mapper: Any, connection: Connection, target: Post) -> None:
    assert target.title.endswith("!")


@pytest.fixture
def mapper_hooked() -> Iterator[None]:
    yield
    for hook in (posts_by_same_author, titles_only):
        if event.contains(Post, "after_update", hook):
            event.remove(Post, "after_update", hook)


def test_a_select_per_row_in_a_mapper_listener_is_told_the_flush_calls_it_per_row(
    engine: Engine, mapper_hooked: None
) -> None:
    # Run during the unit of work's own execution, these SELECTs were counted as the
    # flush's statements, at the commit line, and never reported.
    with sqla_doctor.track(mode="collect") as uow:
        event.listen(Post, "after_update", posts_by_same_author)
        retitle_posts(engine)
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("mapper-hook")
    assert finding.message.endswith(
        "— posts_by_same_author() is a mapper event listener the flush calls once per row: "
        "use the values the row's object holds (`target`), or query for every flushed "
        "object at once in an after_flush or before_flush session listener (session.new, "
        "session.dirty)"
    )


def test_a_mapper_listener_reading_its_target_is_the_silent_twin(
    engine: Engine, mapper_hooked: None
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        event.listen(Post, "after_update", titles_only)
        retitle_posts(engine)
    assert not uow.findings


async def test_a_mapper_listeners_select_per_row_under_asyncio_is_reported(
    async_engine: AsyncEngine, mapper_hooked: None
) -> None:
    async with sqla_doctor.track(mode="collect") as uow:
        event.listen(Post, "after_update", posts_by_same_author)
        async with AsyncSession(async_engine) as session:
            for post in (await session.scalars(select(Post))).all():
                post.title += "!"
            await session.commit()
    assert one(uow.findings, "SQD252").location.line == line_of("mapper-hook")


def retitle_one(engine: Engine, post_id: int) -> None:
    with Session(engine) as session:
        post = session.get_one(Post, post_id)
        post.title += "!"
        session.commit()


def test_a_mapper_listeners_select_once_per_job_is_the_silent_twin(
    engine: Engine, mapper_hooked: None
) -> None:
    # One row per job, each job's own transaction, the pool's worker calling: each run
    # is a job of its own, not the flush iterating.
    with sqla_doctor.track(mode="collect") as uow:
        event.listen(Post, "after_update", posts_by_same_author)
        with ThreadPoolExecutor(1) as pool:
            list(pool.map(functools.partial(retitle_one, engine), range(1, 7)))
    assert not of_code(uow.findings, "SQD252")
