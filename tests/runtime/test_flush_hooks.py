"""Queries a program's own before_flush hook runs are the program's, not the flush's.

The doctor's before_flush listener is registered before the program's (under `sqla-doctor
run`, as soon as SQLAlchemy is imported), so it runs first: what the program's hook
loads or queries per object is an N+1 like any other, not the unit of work's own SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
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
