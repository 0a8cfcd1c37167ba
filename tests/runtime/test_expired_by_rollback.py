"""A rollback expires every object whatever expire_on_commit says: SQD254 and SQD255 name
the rollback, and never suggest expire_on_commit=False for it."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import MissingGreenlet, StatementError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import DetachedInstanceError

import sqla_doctor

from .models import User
from .support import line_of, one, relative

pytestmark = [
    pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are 3.11+"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


class Refused(Exception):
    pass


def read_after_a_failed_transaction(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    factory = sessionmaker(engine, expire_on_commit=False)
    user = None
    with tracker:
        try:
            with factory() as session, session.begin():  # line:begin
                user = session.scalars(select(User).where(User.id == 1)).one()
                raise Refused
        except Refused:
            assert user is not None
            print(user.name)  # line:read


def test_detached_after_a_failed_transaction_names_the_rollback(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        read_after_a_failed_transaction(engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    here = relative(__file__)
    assert finding.location.line == line_of("read")
    assert finding.message.startswith(
        f"User.name refreshed on a detached User: the rollback at {here}:{line_of('begin')} "
        "expired it, then its session was closed at"
    )
    assert "expire_on_commit=False does not help here" in finding.message
    assert "create the session with expire_on_commit=False" not in finding.message


def read_after_commit_then_rollback(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker:
        session = Session(engine)
        user = session.get(User, 1)
        assert user is not None
        session.commit()
        user.name = "changed"
        session.rollback()  # line:rollback
        session.close()
        print(user.name)


def test_a_commit_then_a_rollback_blames_the_rollback(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        read_after_commit_then_rollback(engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert f"the rollback at {relative(__file__)}:{line_of('rollback')}" in finding.message
    assert "the commit at" not in finding.message


def read_after_rollback_then_commit(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker:
        with Session(engine) as session:
            session.get(User, 1)
            session.rollback()
            user = session.get(User, 1)
            assert user is not None
            session.commit()  # line:commit
        print(user.name)


def test_the_commit_is_still_named_when_no_rollback_followed(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        read_after_rollback_then_commit(engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert f"the commit at {relative(__file__)}:{line_of('commit')} expired it" in finding.message


async def test_missing_greenlet_after_a_rollback_names_the_rollback(
    async_engine: AsyncEngine,
) -> None:
    factory = async_sessionmaker(async_engine, expire_on_commit=False)
    async with sqla_doctor.track(mode="collect") as uow, factory() as session:
        user = await session.get(User, 1)
        assert user is not None
        await session.rollback()  # line:async-rollback
        with pytest.raises((StatementError, MissingGreenlet)):
            print(user.name)
    finding = one(uow.findings, "SQD255")
    assert finding.message.startswith(
        f"User.name refreshed in async code without await (expired by the rollback at "
        f"{relative(__file__)}:{line_of('async-rollback')})"
    )
    assert "expire_on_commit" not in finding.message


def read_after_a_rollback_then_a_commit(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    # expire_on_commit=False: the later commit expires nothing, the rollback did.
    with tracker:
        session = Session(engine, expire_on_commit=False)
        user = session.get(User, 1)
        assert user is not None
        user.name = "changed"
        session.rollback()  # line:rollback-first
        session.commit()
        session.close()
        print(user.name)


def test_a_rollback_then_a_commit_without_expire_on_commit_blames_the_rollback(
    engine: Engine,
) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        read_after_a_rollback_then_a_commit(engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert f"the rollback at {relative(__file__)}:{line_of('rollback-first')}" in (
        finding.message
    )
    assert "the commit at" not in finding.message
    assert "create the session with expire_on_commit=False" not in finding.message
