"""SQD252 across sessions: a helper that opens a session per call, called in a loop."""

from __future__ import annotations

import sys
import time
import weakref

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.runtime import session_loops

from .models import USERS, User
from .support import line_of, of_code, one, relative

IDS = list(range(1, USERS + 1))


def _name_of(engine: Engine, user_id: int) -> str:
    with Session(engine) as session:
        return session.get(User, user_id).name  # type: ignore[union-attr]  # line:helper-get


def _names_of(engine: Engine, user_ids: list[int]) -> list[str]:
    with Session(engine) as session:
        return list(session.scalars(select(User.name).where(User.id.in_(user_ids))))


def test_a_helper_opening_a_session_per_call_in_a_loop_is_reported_under_install(
    engine: Engine,
) -> None:
    sqla_doctor.install(mode="collect")
    names = [_name_of(engine, user_id) for user_id in IDS]  # line:loop
    assert len(names) == USERS
    finding = one(sqla_doctor.collected(), "SQD252")
    here = relative(__file__)
    assert finding.location.line == line_of("helper-get")
    assert finding.message == (
        f"SELECT … FROM users ran at least {USERS}× from {here}:{line_of('helper-get')} "
        f"with {USERS} different parameter sets — _name_of() runs it in a new session on "
        f"each call, and the loop at {here}:{line_of('loop')} calls _name_of() once per "
        "item: load them all in one query in one session instead, "
        "`session.scalars(select(User).where(User.id.in_(ids)))` (a _name_of() that takes "
        "the whole list), or at least open one session around the loop and pass it to "
        "_name_of() rather than a session and a transaction per item"
    )
    assert [related.location.line for related in finding.related] == [line_of("loop")]


def test_the_helper_taking_the_whole_list_is_the_silent_twin(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    names = _names_of(engine, IDS)
    assert len(names) == USERS
    assert not sqla_doctor.collected()


def test_under_track_the_advice_is_the_same(engine: Engine) -> None:
    """track() always saw the repeats; it told each session to keep a lookup dict."""
    with sqla_doctor.track(mode="collect") as uow:
        names = [_name_of(engine, user_id) for user_id in IDS]  # line:tracked-loop
    assert len(names) == USERS
    message = one(uow.findings, "SQD252").message
    assert message.startswith(f"SELECT … FROM users ran {USERS}× from ")
    assert (
        f"_name_of() runs it in a new session on each call, and the loop at "
        f"{relative(__file__)}:{line_of('tracked-loop')} calls _name_of() once per item"
    ) in message
    assert "while that result is kept" not in message


def test_below_the_threshold_is_silent(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    names = [_name_of(engine, user_id) for user_id in IDS[:-1]]
    assert len(names) == USERS - 1
    assert not sqla_doctor.collected()


def test_one_session_passed_to_the_helper_keeps_the_sessions_own_advice(engine: Engine) -> None:
    """A loop of get()s in one session: the session's unit reports it, once, with the
    lookup-dict advice; the loop's unit counts one session and says nothing."""

    def name_of(session: Session, user_id: int) -> str:
        return session.get(User, user_id).name  # type: ignore[union-attr]

    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        names = [name_of(session, user_id) for user_id in IDS]
    assert len(names) == USERS
    message = one(sqla_doctor.collected(), "SQD252").message
    assert "while that result is kept" in message
    assert "new session" not in message


def test_a_helper_called_once_per_request_is_not_a_loop(engine: Engine) -> None:
    """Each request's handler is a new frame, though it may reuse the address of the
    one before: the helper is called once from each, and nothing repeats."""

    def handle(user_id: int) -> str:
        return _name_of(engine, user_id)

    sqla_doctor.install(mode="collect")
    for _ in range(3):
        for user_id in IDS:
            handle(user_id)
    assert not sqla_doctor.collected()


def test_a_helper_that_writes_per_item_is_left_alone(engine: Engine) -> None:
    """Committing each item in a session of its own isolates the items (one failure
    does not undo the others): per-item work, not a lookup to batch."""

    def rename(user_id: int) -> None:
        with Session(engine) as session:
            user = session.get(User, user_id)
            assert user is not None
            user.name = f"{user.name}!"
            session.commit()

    sqla_doctor.install(mode="collect")
    for user_id in IDS:
        rename(user_id)
    assert not of_code(sqla_doctor.collected(), "SQD252")


def test_a_consumer_pausing_between_items_is_left_alone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop waiting for its next item (a queue, a socket) between calls handles
    items as they come; the ones it has could not have been loaded together."""
    monkeypatch.setattr(session_loops, "LOOP_PAUSE_SECONDS", 0.01)
    sqla_doctor.install(mode="collect")
    for user_id in IDS:
        time.sleep(0.03)
        _name_of(engine, user_id)
    assert not sqla_doctor.collected()


def test_the_loops_unit_dies_with_its_frame(engine: Engine) -> None:
    """Nothing keeps the loop's frame, its locals or its unit once it returns."""

    class Token:
        pass

    units: list[weakref.ref[session_loops.LoopUnit]] = []
    tokens: list[weakref.ref[Token]] = []

    def loop() -> None:
        token = Token()
        tokens.append(weakref.ref(token))
        for user_id in IDS:
            _name_of(engine, user_id)
        units.append(weakref.ref(sys._getframe().f_trace.unit))  # type: ignore[union-attr]

    sqla_doctor.install(mode="collect")
    loop()
    assert one(sqla_doctor.collected(), "SQD252")
    assert tokens[0]() is None, "the loop's locals died with it"
    unit = units[0]()
    assert unit is None or not unit.active, "its unit ended with it"


async def test_an_async_helper_awaited_in_a_loop_is_reported(async_engine: AsyncEngine) -> None:
    async def name_of(user_id: int) -> str:
        async with AsyncSession(async_engine) as session:
            user = await session.get(User, user_id)  # line:async-helper-get
            assert user is not None
            return user.name

    sqla_doctor.install(mode="collect")
    names = [await name_of(user_id) for user_id in IDS]
    assert len(names) == USERS
    finding = one(sqla_doctor.collected(), "SQD252")
    assert finding.location.line == line_of("async-helper-get")
    assert "name_of() runs it in a new session on each call" in finding.message
    assert "`(await session.scalars(select(User).where(User.id.in_(ids))))`" in finding.message
