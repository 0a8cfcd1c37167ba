"""SQD159: one Session used by several threads; the hand-overs that stay silent.

Also: a session closed (or committed) by another thread than the one that began it is
not a leak (SQD151) nor a forgotten commit (SQD152).
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import sqla_doctor

from .models import Post, User, create_and_seed, seed_objects
from .support import line_of, of_code, one, relative

HERE = relative(__file__)


def in_thread(fn: Callable[[], Any], *, share_unit: bool = False) -> None:
    """Run ``fn`` in another thread and wait: a hand-over, never an overlap."""
    target = contextvars.copy_context().run if share_unit else None
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target(fn) if target is not None else fn()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name="worker")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def users(session: Session) -> list[User]:
    return list(session.scalars(select(User)))  # line:users


def posts(session: Session) -> list[Post]:
    return list(session.scalars(select(Post)))  # line:posts


@pytest.mark.parametrize("share_unit", [False, True], ids=["plain-thread", "copied-context"])
def test_threads_taking_turns_are_not_reported(engine: Engine, share_unit: bool) -> None:
    """One thread after another, never at once: how a framework iterates a sync generator
    (Starlette's StreamingResponse) or runs a dependency in its threadpool."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users(session)
        in_thread(lambda: posts(session), share_unit=share_unit)
        session.execute(text("SELECT 1"))
        session.commit()
    assert not of_code(uow.findings, "SQD159")


def test_a_sync_generator_iterated_from_threadpool_threads_is_silent(engine: Engine) -> None:
    def rows() -> Iterator[str]:
        with Session(engine) as session:
            for user in session.scalars(select(User)).all():
                yield f"{user.name}:{len(user.posts)}"

    with sqla_doctor.track(mode="collect") as uow:
        generator = rows()
        produced: list[str] = []

        def step() -> None:
            produced.append(next(generator, ""))

        while not produced or produced[-1]:
            in_thread(step, share_unit=True)  # each step in a thread of its own
    assert len(produced) == len(seed_objects()) + 1  # and the end
    assert all(":" in row for row in produced[:-1])
    assert not of_code(uow.findings, "SQD159")


@pytest.fixture
def slow_engine(tmp_path: Any) -> Iterator[tuple[Engine, threading.Event, threading.Event]]:
    """SQLite with a ``hold()`` SQL function that blocks inside the DBAPI call."""
    engine = create_engine(f"sqlite:///{tmp_path / 'slow.db'}")
    entered, release = threading.Event(), threading.Event()

    def hold() -> int:
        entered.set()
        release.wait(10)
        return 1

    @event.listens_for(engine, "connect")
    def _functions(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.create_function("hold", 0, hold)

    create_and_seed(engine)
    yield engine, entered, release
    release.set()
    engine.dispose()


def test_an_operation_while_another_thread_runs_a_statement_is_concurrent(
    slow_engine: tuple[Engine, threading.Event, threading.Event],
) -> None:
    engine, entered, release = slow_engine
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.execute(text("SELECT 1"))
        worker = threading.Thread(
            target=contextvars.copy_context().run,
            args=(lambda: session.execute(select(func.hold())),),  # line:held
        )
        worker.start()
        assert entered.wait(10)
        try:
            # pysqlite's connection lock makes this statement wait for the other one; the
            # session's state is shared meanwhile.
            releaser = threading.Timer(0.2, release.set)
            releaser.start()
            session.execute(select(User.name))  # line:meanwhile
        finally:
            release.set()
            worker.join()
        session.commit()
    finding = one(uow.findings, "SQD159")
    assert finding.location.line == line_of("meanwhile")
    assert [r.location.line for r in finding.related] == [line_of("held")]
    assert "two threads at once" in finding.message
    assert finding.details["concurrent"] is True


def test_hand_over_after_commit_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users(session)
        session.commit()

        def worker() -> None:
            posts(session)
            session.commit()

        in_thread(worker)
        users(session)  # a new transaction: the worker committed before handing it back
        session.commit()
    assert not of_code(uow.findings, "SQD159")


def test_one_way_hand_over_inside_a_transaction_is_silent(engine: Engine) -> None:
    """The first thread never uses it again: a hand-over, not sharing."""
    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        users(session)

        def worker() -> None:
            posts(session)
            session.add(User(name="from the worker"))
            session.commit()
            session.close()

        in_thread(worker)
    assert not of_code(uow.findings, "SQD159")
    assert not of_code(uow.findings, "SQD151")
    assert not of_code(uow.findings, "SQD152")


def test_scoped_session_across_threads_is_silent(engine: Engine) -> None:
    registry = scoped_session(sessionmaker(engine))
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(5):
            users(registry())
            posts(registry())
        registry().commit()
        registry.remove()

    with sqla_doctor.track(mode="collect") as uow:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(worker,))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not of_code(uow.findings, "SQD159")


def test_one_session_per_thread_is_silent(session_factory: sessionmaker[Session]) -> None:
    def worker() -> None:
        with session_factory() as session:
            users(session)
            posts(session)
            session.commit()

    with sqla_doctor.track(mode="collect") as uow:
        threads = [
            threading.Thread(target=contextvars.copy_context().run, args=(worker,))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not of_code(uow.findings, "SQD159")


# -- closed elsewhere: not a leak --------------------------------------------------------


def test_session_closed_by_another_thread_is_not_a_leak(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        users(session)
        in_thread(session.close)
    assert not of_code(uow.findings, "SQD151")


def test_session_committed_by_another_thread_then_closed_is_not_a_leak(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        session.add(User(name="ada"))
        session.flush()
        in_thread(session.commit)
        session.close()
    assert not of_code(uow.findings, "SQD151")
    assert not of_code(uow.findings, "SQD152")


def test_session_closed_by_another_tracked_thread_is_not_a_leak_in_either(
    engine: Engine,
) -> None:
    def closer() -> None:
        with sqla_doctor.track(mode="collect") as inner:
            session.close()
        units.append(inner)

    units = []
    with sqla_doctor.track(mode="collect") as outer:
        session = Session(engine)
        users(session)
        in_thread(closer)
    assert not of_code([*outer.findings, *units[0].findings], "SQD151")


def test_a_real_leak_is_still_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        users(session)
        in_thread(lambda: None)
    assert of_code(uow.findings, "SQD151")
    session.close()


async def test_session_closed_in_another_task_is_not_a_leak(engine: Engine) -> None:
    import asyncio

    session = Session(engine)

    async def begin() -> sqla_doctor.UnitOfWork:
        async with sqla_doctor.track(mode="collect") as uow:
            users(session)
        return uow

    async def close() -> sqla_doctor.UnitOfWork:
        async with sqla_doctor.track(mode="collect") as uow:
            session.close()
        return uow

    first = asyncio.ensure_future(begin())
    # The first unit ends with the session open: that one is a leak of the first unit...
    assert of_code((await first).findings, "SQD151")
    # ...but a session begun in a unit and closed by another task before it ends is not.
    async with sqla_doctor.track(mode="collect") as outer:
        session = Session(engine)
        users(session)
        await asyncio.ensure_future(close())
    assert not of_code(outer.findings, "SQD151")
