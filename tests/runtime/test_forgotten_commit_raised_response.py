"""SQD152 for writes dropped while a web framework's successful response is raised as an
exception (Falcon's redirects, Bottle's redirect(), Pyramid's HTTPFound), and silence for
an error response, an exception that only looks like one, and the committed twins."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import NotFound
from werkzeug.routing import RequestRedirect

import sqla_doctor

from .models import User
from .support import line_of, one


class HTTPStatus(Exception):
    """The shape of falcon.HTTPStatus: a response raised to end the request early."""

    def __init__(self, status: str, location: str) -> None:
        super().__init__(status)
        self.status = status
        self.location = location


class HTTPSeeOther(HTTPStatus):
    def __init__(self, location: str) -> None:
        super().__init__("303 See Other", location)


class RetryLater(Exception):
    code = 302


def users(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(User)) or 0


def create_and_redirect(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:  # line:with
        user = User(name="ada")
        session.add(user)
        session.flush()
        raise HTTPSeeOther(f"/users/{user.id}")


def create_then_redirect_after_the_block(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:
        session.add(User(name="ada"))
    raise HTTPSeeOther("/users/")


def create_commit_and_redirect(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:
        session.add(User(name="ada"))
        session.commit()
        raise HTTPSeeOther("/users/")


def test_a_begin_block_left_by_a_raised_redirect_is_reported(engine: Engine) -> None:
    before = users(engine)
    with sqla_doctor.track(mode="collect") as uow, pytest.raises(HTTPSeeOther):
        create_and_redirect(sessionmaker(engine))
    assert users(engine) == before  # the redirect lost the row
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("with")
    assert "rolled back at" in finding.message
    assert "'s HTTPSeeOther (303) passed through it" in finding.message
    assert "the flushed writes (1 User inserted) were rolled back" in finding.message
    assert "call `session.commit()` before raising it, or raise it after the with block" in (
        finding.message
    )


def plugin(factory: sessionmaker[Session], view: Callable[[Session], object]) -> object:
    """A session-per-request plugin: commit when the view returns, roll back on errors."""
    session = factory()
    try:
        result = view(session)
        session.commit()
        return result
    except Exception:
        session.rollback()  # line:rollback
        raise
    finally:
        session.close()


def create_then_redirect(session: Session) -> object:
    session.add(User(name="ada"))
    raise RequestRedirect("http://localhost/users/")


def create_then_404(session: Session) -> object:
    session.add(User(name="ada"))
    raise NotFound()


def create_then_retry(session: Session) -> object:
    session.add(User(name="ada"))
    raise RetryLater()


def test_a_plugin_rolling_back_a_raised_redirect_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, pytest.raises(RequestRedirect):
        plugin(sessionmaker(engine), create_then_redirect)
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("rollback")
    assert "werkzeug's RequestRedirect (308)" in finding.message
    assert "1 added object(s) (1 User) were never inserted" in finding.message
    assert (
        "or commit where the session ends when a RequestRedirect with a status below 400 passes"
        in finding.message
    )


def closing_plugin(factory: sessionmaker[Session], view: Callable[[Session], object]) -> object:
    session = factory()
    try:
        result = view(session)
        session.commit()
        return result
    finally:
        session.close()  # line:close


def test_a_plugin_closing_past_a_raised_redirect_is_reported_at_its_close(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, pytest.raises(RequestRedirect):
        closing_plugin(sessionmaker(engine), create_then_redirect)
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("close")
    assert "closed at" in finding.message
    assert "as werkzeug's RequestRedirect (308) passed through it" in finding.message


@pytest.mark.parametrize("view", [create_then_404, create_then_retry])
def test_an_error_response_or_a_status_on_another_exception_is_silent(
    engine: Engine, view: Callable[[Session], object]
) -> None:
    with sqla_doctor.track(mode="collect") as uow, pytest.raises((NotFound, RetryLater)):
        plugin(sessionmaker(engine), view)
    with sqla_doctor.track(mode="collect") as closing, pytest.raises((NotFound, RetryLater)):
        closing_plugin(sessionmaker(engine), view)
    assert not uow.findings
    assert not closing.findings


@pytest.mark.parametrize(
    "create", [create_then_redirect_after_the_block, create_commit_and_redirect]
)
def test_a_redirect_raised_once_the_writes_are_committed_is_silent(
    engine: Engine, create: Callable[[sessionmaker[Session]], None]
) -> None:
    before = users(engine)
    with sqla_doctor.track(mode="collect") as uow, pytest.raises(HTTPSeeOther):
        create(sessionmaker(engine))
    assert users(engine) == before + 1
    assert not uow.findings


async def create_async(factory: async_sessionmaker[AsyncSession], error: Exception) -> None:
    async with factory.begin() as session:  # line:async-with
        session.add(User(name="ada"))
        await session.flush()
        raise error


async def test_an_async_begin_block_left_by_a_raised_redirect_is_reported(
    async_engine: AsyncEngine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, pytest.raises(HTTPSeeOther):
        await create_async(async_sessionmaker(async_engine), HTTPSeeOther("/users/"))
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("async-with")
    assert "call `await session.commit()` before raising it" in finding.message


async def test_an_async_begin_block_left_by_an_error_response_is_silent(
    async_engine: AsyncEngine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, pytest.raises(NotFound):
        await create_async(async_sessionmaker(async_engine), NotFound())
    assert not uow.findings
