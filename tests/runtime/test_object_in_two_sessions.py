"""SQD156: an object given to a second session while attached to the first, explained."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor

from .models import Post, User
from .support import line_of, one, relative

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are 3.11+")


def add_to_second(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker, Session(engine) as first, Session(engine) as second:
        user = first.scalars(select(User)).first()  # line:load
        second.scalars(select(Post.id)).all()  # line:second-began
        second.add(user)  # line:add


def test_add_to_a_second_session_is_explained(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(InvalidRequestError, match="already attached") as raised:
        add_to_second(engine, tracker)
    uow = tracker.last
    assert uow is not None
    here = relative(__file__)
    finding = one(uow.findings, "SQD156")
    assert finding.location.path == here
    assert finding.location.line == line_of("add")
    assert finding.message == (
        "User object given to a second session while still attached to the session that "
        f"loaded it at {here}:{line_of('load')} — use user = second.merge(user) to get this "
        "session's copy, or close/expunge it from the first session first; keep one session "
        "per unit of work"
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("load"), "the first session loaded the User here"),
        (line_of("load"), "the first session began here"),
        (line_of("second-began"), "the second session began here"),
    ]
    assert finding.fix_hint == "user = second.merge(user)"
    assert raised.value.__notes__[0].startswith("sqla-doctor: SQD156 User object given")


def test_merge_twin_is_silent(engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine) as first,
        Session(engine) as second,
    ):
        user = first.scalars(select(User)).first()
        assert user is not None
        merged = second.merge(user)
        assert merged is not user
    assert not uow.findings


def test_pending_object_names_where_it_was_added(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")

    def run(first: Session) -> None:
        with tracker, Session(engine) as second:
            user = User(name="ada")
            first.add(user)  # line:first-add
            second.add(user)

    with Session(engine) as first, pytest.raises(InvalidRequestError):
        run(first)
    uow = tracker.last
    assert uow is not None
    assert f"added it at {relative(__file__)}:{line_of('first-add')}" in (
        one(uow.findings, "SQD156").message
    )


async def add_to_job(engine: AsyncEngine, tracker: sqla_doctor.Tracker) -> None:
    # A background task handed the request's object: it adds it to its own session.
    async with tracker, AsyncSession(engine) as request, AsyncSession(engine) as job:
        user = (await request.scalars(select(User))).first()  # line:async-load
        job.add(user)  # line:async-add


async def test_async_add_to_a_second_session_is_explained(async_engine: AsyncEngine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(InvalidRequestError, match="already attached"):
        await add_to_job(async_engine, tracker)
    uow = tracker.last
    assert uow is not None
    finding = one(uow.findings, "SQD156")
    here = relative(__file__)
    assert finding.location.line == line_of("async-add")
    assert finding.message.startswith(
        "User object given to a second session while still attached to the session that "
        f"loaded it at {here}:{line_of('async-load')} — use user = await job.merge(user) "
    )
    assert finding.fix_hint == "user = await job.merge(user)"


async def test_async_merge_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(async_engine) as request,
        AsyncSession(async_engine) as job,
    ):
        user = (await request.scalars(select(User))).first()
        assert user is not None
        merged = await job.merge(user)
        assert merged is not user
    assert not uow.findings
