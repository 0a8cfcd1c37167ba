"""SQD351: a new object's primary key read before the flush that assigns it."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor

from .models import User
from .support import line_of, one, relative


def test_reading_the_id_of_an_added_object_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)  # line:add
        payload = {"id": user.id}  # line:read
        session.commit()
    assert payload == {"id": None}, "the pitfall: the id is None"
    finding = one(uow.findings, "SQD351")
    assert finding.location.path == relative(__file__)
    assert finding.location.line == line_of("read")
    assert finding.message == (
        "User.id read on a pending User before any flush — it is None until the INSERT; call "
        "session.flush() (await session.flush() with AsyncSession) before reading it"
    )
    assert [r.location.line for r in finding.related] == [line_of("add")]


def test_flush_first_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        session.flush()
        assert user.id is not None
        session.commit()
    assert not uow.findings


def test_reading_the_id_of_a_transient_object_is_not_this_pitfall(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        assert User(name="ada").id is None
    assert not uow.findings


def test_repr_of_a_pending_object_is_ignored(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        assert repr(user) == "User(id=None, name='ada')"
        session.commit()
    assert not uow.findings


def response_for(user: User) -> dict[str, int | None]:
    user_id = user.id  # line:raising-read
    pytest.fail(f"not reached: {user_id}")


def test_raise_mode_fails_at_the_read(engine: Engine) -> None:
    """In raise mode the value is wrong right now: the exception comes from the read."""
    with Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        with pytest.raises(sqla_doctor.PitfallError) as raised, sqla_doctor.track(mode="raise"):
            response_for(user)
    assert raised.value.findings[0].location.line == line_of("raising-read")
    assert any(entry.lineno + 1 == line_of("raising-read") for entry in raised.traceback)


async def test_async_read_before_flush_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = User(name="ada")
        session.add(user)
        assert user.id is None  # line:async-read
        await session.commit()
    assert one(uow.findings, "SQD351").location.line == line_of("async-read")


async def test_async_flush_first_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = User(name="ada")
        session.add(user)
        await session.flush()
        assert user.id is not None
        await session.commit()
    assert not uow.findings
