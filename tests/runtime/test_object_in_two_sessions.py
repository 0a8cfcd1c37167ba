"""SQD156: an object given to a second session while attached to the first, explained."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor

from .collection_models import Change, Ledger, Posting, create_and_seed_ledgers
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


def post_by(window: Session, engine: Engine, author: User, *, copy: bool) -> str | None:
    """A desktop app's action: a post by the window's current user, in its own session;
    the error is caught and shown, as a dialog would."""
    try:
        with Session(engine) as action, action.begin():
            if copy:
                author = action.get(User, author.id) or author
            action.add(Post(author=author, title="hi"))  # line:cascade-add
    except InvalidRequestError as error:
        return type(error).__name__
    return None


def test_a_cascade_into_a_second_session_is_reported_even_when_caught(engine: Engine) -> None:
    # add() cascades Post.author into the action's session; SQLAlchemy raises inside
    # add() before any event, and the program catches it: seen as the Post is added.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as window:
        current_user = window.get(User, 1)  # line:window-load
        assert current_user is not None
        assert post_by(window, engine, current_user, copy=False) == "InvalidRequestError"
    finding = one(uow.findings, "SQD156")
    here = relative(__file__)
    assert finding.location.line == line_of("cascade-add")
    assert finding.message == (
        "User object reached through Post.author, added to a second session while still "
        f"attached to the session that loaded it at {here}:{line_of('window-load')} — set "
        "Post.author to this session's copy (merge() or get() it there), or set its foreign "
        "key column instead, or close/expunge it from the first session first; keep one "
        "session per unit of work"
    )
    assert finding.fix_hint is None


def test_a_cascade_error_that_escapes_is_reported_once_and_explained(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with (
        pytest.raises(InvalidRequestError, match="already attached") as raised,
        tracker,
        Session(engine) as window,
        Session(engine) as action,
    ):
        action.add(Post(author=window.get(User, 1), title="hi"))  # line:escaping-add
    uow = tracker.last
    assert uow is not None
    finding = one(uow.findings, "SQD156")
    assert finding.location.line == line_of("escaping-add")
    assert "reached through Post.author" in finding.message
    [note] = raised.value.__notes__
    assert note.startswith(f"sqla-doctor: SQD156 {finding.message}\n")


@pytest.mark.parametrize("closed", [False, True], ids=["own-copy", "first-closed"])
def test_a_post_by_this_sessions_copy_or_a_detached_user_is_silent(
    engine: Engine, closed: bool
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as window:
        current_user = window.get(User, 1)
        assert current_user is not None
        if closed:
            window.close()
        assert post_by(window, engine, current_user, copy=not closed) is None
    assert not uow.findings


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'ledgers.db'}")
    create_and_seed_ledgers(engine)
    yield engine
    engine.dispose()


def test_a_write_only_collection_member_of_another_session_is_reported(ledgers: Engine) -> None:
    # A write_only (or dynamic) collection keeps a marker in __dict__, not its members:
    # they are the attribute's pending history, which add()'s cascade follows too.
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(ledgers) as first,
        Session(ledgers) as second,
    ):
        posting = first.get(Posting, 1)  # line:posting-load
        assert posting is not None
        with pytest.raises(InvalidRequestError, match="already attached"):
            second.add(Ledger(id=100, entries=[posting]))  # line:write-only-add
    finding = one(uow.findings, "SQD156")
    assert finding.location.line == line_of("write-only-add")
    assert finding.message.startswith(
        "Posting object reached through Ledger.entries, added to a second session while "
        f"still attached to the session that loaded it at {relative(__file__)}:"
        f"{line_of('posting-load')} — "
    )


def test_new_members_of_write_only_and_dynamic_collections_are_silent(ledgers: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(ledgers) as session:
        session.add(Ledger(id=100, entries=[Posting()], changes=[Change(), Change()]))
        session.commit()
        assert session.scalar(select(func.count(Change.id)).where(Change.ledger_id == 100)) == 2
    assert not uow.findings
