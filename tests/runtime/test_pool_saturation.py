"""SQD451: a pool close to exhaustion, and the pool timeout explained, naming the holders."""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool, QueuePool

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Finding

from .models import Base, User
from .support import line_of, of_code, one, relative

# A full pool is reported once a connection stays out this long after it filled.
CONFIG = RuntimeConfig(mode="collect", pool_saturation_ratio=0.8, held_connection_seconds=0.05)


@pytest.fixture
def small_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'small.db'}", pool_size=2, max_overflow=0, pool_timeout=0.05
    )
    yield engine
    engine.dispose()


def open_report_session(engine: Engine) -> Session:
    session = Session(engine)
    session.execute(text("SELECT 1"))  # line:holder
    return session


def test_last_connection_checked_out_is_reported_with_who_holds_the_others(
    small_engine: Engine,
) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        held = open_report_session(small_engine)
        with small_engine.connect() as connection:  # line:saturating
            connection.execute(text("SELECT 2"))
            time.sleep(0.1)  # the pool stays full
        held.close()
    finding = one(uow.findings, "SQD451")
    here = relative(__file__)
    assert finding.location.line == line_of("saturating")
    url = repr(small_engine.url)
    assert finding.message.startswith(
        f"pool of {url} at 2/2 connections (pool_size 2 + max_overflow 0) after the checkout at "
        f"{here}:{line_of('saturating')} — held by: this checkout (Connection, held 0."
    )
    # The saturating checkout holds one of the two connections; the other is named.
    assert (
        f"; thread MainThread) and 1 other: {here}:{line_of('holder')} in "
        "open_report_session (Session, held "
    ) in finding.message
    assert (
        f"s, then returned after its query at {here}:{line_of('holder')}; thread MainThread)"
    ) in finding.message
    assert finding.message.endswith(
        "— close sessions before slow work and return connections early (see SQD157, SQD160), "
        "fix leaks (SQD151, SQD154), or size pool_size + max_overflow for the concurrency "
        "(`sqla-doctor pool`)"
    )
    assert len(finding.details["holders"]) == 1
    assert finding.details["checkout"].startswith("(Connection, held 0.")
    # A fixture's engine: no module-level line creates it.
    assert [r.message for r in finding.related] == ["holds a connection"]


def hold_a_connection(engine: Engine, both_out: threading.Barrier | None) -> list[Finding]:
    """A worker that keeps its connection through slow work (a report, an HTTP call)."""
    with sqla_doctor.track(config=CONFIG) as uow:
        connection = engine.connect()  # line:thread-holder
        connection.execute(text("SELECT 1"))
        if both_out is not None:
            both_out.wait(5)  # both connections are out now: the pool is full
        time.sleep(0.1)
        connection.close()
    return uow.findings


def run_workers(engine: Engine, both_out: threading.Barrier | None) -> list[Finding]:
    found: list[Finding] = []

    def work() -> None:
        found.extend(hold_a_connection(engine, both_out))

    workers = [threading.Thread(target=work, name=f"worker-{i}") for i in range(2)]
    for worker in workers:
        worker.start()
        if both_out is None:
            worker.join()  # one after the other
    for worker in workers:
        worker.join()
    return found


def test_the_saturating_checkout_counts_as_a_holder_and_threads_are_named(
    small_engine: Engine,
) -> None:
    finding = one(run_workers(small_engine, threading.Barrier(2)), "SQD451")
    here = relative(__file__)
    holder = f"{here}:{line_of('thread-holder')}"
    match = re.search(
        rf"held by: this checkout \(Connection, held [\d.]+s, [^;]*; thread (worker-\d)\) "
        rf"and 1 other: {re.escape(holder)} in hold_a_connection \(Connection, held "
        rf"[\d.]+s[^;]*; thread (worker-\d)\) — ",
        finding.message,
    )
    assert match is not None, finding.message
    assert {match.group(1), match.group(2)} == {"worker-0", "worker-1"}


def test_workers_one_after_the_other_are_the_silent_twin(small_engine: Engine) -> None:
    assert not of_code(run_workers(small_engine, None), "SQD451")


def test_a_pool_full_for_an_instant_is_silent(small_engine: Engine) -> None:
    # Two requests' short queries fill a pool of two for a moment: nobody waited.
    with sqla_doctor.track(config=CONFIG) as uow:
        held = open_report_session(small_engine)
        with small_engine.connect() as connection:
            connection.execute(text("SELECT 2"))
        held.close()
        time.sleep(0.1)
    assert not of_code(uow.findings, "SQD451")


def test_one_connection_at_a_time_is_the_silent_twin(small_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        for _ in range(5):
            with Session(small_engine) as session:
                session.execute(text("SELECT 1"))
    assert not of_code(uow.findings, "SQD451")


def test_a_pool_of_one_used_by_one_thread_is_silent(tmp_path: Path) -> None:
    """Full at every checkout, yet nobody ever waits: no contention, nothing to say."""
    single = create_engine(f"sqlite:///{tmp_path / 'one.db'}", pool_size=1, max_overflow=0)
    with sqla_doctor.track(config=CONFIG) as uow:
        for _ in range(3):
            with Session(single) as session:
                session.execute(text("SELECT 1"))
    single.dispose()
    assert not of_code(uow.findings, "SQD451")


def test_pools_without_a_limit_are_silent(tmp_path: Path) -> None:
    unlimited = create_engine(f"sqlite:///{tmp_path / 'a.db'}", pool_size=1, max_overflow=-1)
    unpooled = create_engine(f"sqlite:///{tmp_path / 'b.db'}", poolclass=NullPool)
    with sqla_doctor.track(config=CONFIG) as uow:
        for engine in (unlimited, unpooled):
            with engine.connect() as first, engine.connect() as second:
                first.execute(text("SELECT 1"))
                second.execute(text("SELECT 1"))
    assert not of_code(uow.findings, "SQD451")
    unlimited.dispose()
    unpooled.dispose()


def test_pool_timeout_is_explained_with_the_holders(small_engine: Engine) -> None:
    # Installed, the doctor knows the checkouts of every request, not only this one's.
    sqla_doctor.install(config=CONFIG)
    held = [open_report_session(small_engine), open_report_session(small_engine)]
    tracker = sqla_doctor.track(config=CONFIG)
    with pytest.raises(PoolTimeoutError) as raised, tracker, Session(small_engine) as session:
        session.execute(text("SELECT 3"))  # line:timed-out
    uow = tracker.last
    assert uow is not None
    finding = one(uow.findings, "SQD451")
    here = relative(__file__)
    assert finding.location.line == line_of("timed-out")
    assert finding.message.startswith(
        f"checkout at {here}:{line_of('timed-out')} timed out: QueuePool limit of size 2 "
        f"overflow 0 reached — held by: {here}:{line_of('holder')} in open_report_session "
        "(Session, held "
    )
    assert len(finding.details["holders"]) == 2
    if sys.version_info >= (3, 11):
        notes = "\n".join(getattr(raised.value, "__notes__", []))
        assert "SQD451" in notes
        assert f"{here}:{line_of('holder')}" in notes
    for session in held:
        session.close()


async def test_async_pool_saturation_names_the_holder(tmp_path: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'async.db'}", pool_size=2, max_overflow=0
    )
    async with sqla_doctor.track(config=CONFIG) as uow:
        first = AsyncSession(engine)
        await first.execute(text("SELECT 1"))  # line:async-holder
        async with AsyncSession(engine) as second:
            await second.execute(text("SELECT 2"))  # line:async-saturating
            await asyncio.sleep(0.1)
        await first.close()
    finding = one(uow.findings, "SQD451")
    assert finding.location.line == line_of("async-saturating")
    # Both connections are held by this test's task: named with its coroutine.
    task = r"task [^ ]+ \(test_async_pool_saturation_names_the_holder\)"
    assert re.search(
        rf"held by: this checkout \(Session, [^;]*; {task}\) and 1 other: "
        rf"{re.escape(relative(__file__))}:{line_of('async-holder')} in "
        rf"test_async_pool_saturation_names_the_holder \(Session, [^;]*; {task}\) — ",
        finding.message,
    ), finding.message
    await engine.dispose()


def test_a_holder_whose_session_is_closing_is_not_said_to_run_a_statement(
    tmp_path: Path,
) -> None:
    """The pool's reset of the closing Session's connection runs after its ROLLBACK and
    before the checkin: a checkout there times out, the holder is giving it back."""
    engine = create_engine(
        f"sqlite:///{tmp_path / 'closing.db'}", pool_size=1, max_overflow=0, pool_timeout=0.01
    )
    timed_out: list[BaseException] = []

    @event.listens_for(engine, "reset")
    def check_out_during_reset(*args: object) -> None:
        if not timed_out:
            try:
                engine.connect()
            except PoolTimeoutError as error:
                timed_out.append(error)
                raise  # the pool logs it: the error is explained as logged

    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.execute(text("SELECT 1"))  # line:closing
    engine.dispose()
    assert timed_out
    finding = one(uow.findings, "SQD451")
    here = relative(__file__)
    assert re.search(
        rf"held by: {re.escape(here)}:{line_of('closing')} in "
        r"test_a_holder_whose_session_is_closing_is_not_said_to_run_a_statement \(Session, "
        rf"held 0\.\d\ds, giving it back after its query at {re.escape(here)}:"
        rf"{line_of('closing')}; thread MainThread\)",
        finding.message,
    ), finding.message


# Holders that take turns: none keeps its connection `held-connection-seconds`, but the
# pool stays full that long because each returned connection goes to a waiting request.
TURNS = RuntimeConfig(mode="collect", held_connection_seconds=0.2)


def handle_request(engine: Engine, slow_call_inside: bool) -> list[Finding]:
    """One request of a threaded server, watched as the middleware would watch it."""
    with sqla_doctor.track(config=TURNS) as uow:
        with Session(engine) as session:
            session.execute(text("SELECT 1"))  # line:turn-taker
            if slow_call_inside:
                time.sleep(0.15)  # a payment API called with the connection held
        if not slow_call_inside:
            time.sleep(0.15)
    return uow.findings


def serve(engine: Engine, slow_call_inside: bool, requests: int = 6) -> list[Finding]:
    with ThreadPoolExecutor(max_workers=requests) as pool:
        started = [pool.submit(handle_request, engine, slow_call_inside) for _ in range(requests)]
        return [f for request in started for f in request.result()]


@pytest.fixture
def patient_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'turns.db'}", pool_size=2, max_overflow=0, pool_timeout=10
    )
    yield engine
    engine.dispose()


def test_a_pool_full_while_holders_take_turns_is_reported(patient_engine: Engine) -> None:
    turns = [
        f for f in of_code(serve(patient_engine, True), "SQD451") if f.details["event"] == "turns"
    ]
    assert len(turns) == 1
    finding = turns[0]
    here = relative(__file__)
    assert finding.location.line == line_of("turn-taker")
    assert re.match(
        rf"pool of {re.escape(repr(patient_engine.url))} has been full \(2/2 connections, "
        r"pool_size 2 \+ max_overflow 0\) for 0\.\d\ds, its holders taking turns: "
        rf"\d checkout\(s\) waited for a connection another one returned, the last at "
        rf"{re.escape(here)}:{line_of('turn-taker')} — held by: {re.escape(here)}:"
        rf"{line_of('turn-taker')} in handle_request \(Session, held ",
        finding.message,
    ), finding.message


def test_a_pool_released_before_the_slow_call_is_the_silent_twin(
    patient_engine: Engine,
) -> None:
    assert not of_code(serve(patient_engine, False), "SQD451")


def test_a_full_stretch_that_ends_with_the_last_holders_returning_is_reported(
    patient_engine: Engine,
) -> None:
    """Four requests on a pool of two: the two that waited got their connections 0.15 s
    in, under the threshold, and no checkout came after it; the pool was full 0.3 s."""
    turns = [
        f
        for f in of_code(serve(patient_engine, True, requests=4), "SQD451")
        if f.details["event"] == "turns"
    ]
    assert len(turns) == 1
    finding = turns[0]
    assert finding.location.line == line_of("turn-taker")
    assert re.match(
        rf"pool of {re.escape(repr(patient_engine.url))} has been full \(2/2 "
        r"connections, pool_size 2 \+ max_overflow 0\) for 0\.\d\ds, its holders taking "
        r"turns: \d checkout\(s\) waited for a connection another one returned",
        finding.message,
    ), finding.message


def test_four_requests_released_before_the_slow_call_are_the_silent_twin(
    patient_engine: Engine,
) -> None:
    assert not of_code(serve(patient_engine, False, requests=4), "SQD451")


def test_two_holders_that_never_wait_for_each_other_are_silent(patient_engine: Engine) -> None:
    # Full for longer than the threshold, but no checkout ever waited: nothing queued.
    with ThreadPoolExecutor(max_workers=2) as pool:
        requests = [pool.submit(handle_request, patient_engine, True) for _ in range(2)]
        found = [f for request in requests for f in request.result()]
    assert not [f for f in of_code(found, "SQD451") if f.details["event"] == "turns"]


async def test_async_tasks_taking_turns_on_a_full_pool_are_reported(tmp_path: Path) -> None:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}", pool_size=2, max_overflow=0
    )

    async def handle(slow_call_inside: bool) -> list[Finding]:
        async with sqla_doctor.track(config=TURNS) as uow:
            async with AsyncSession(engine) as session:
                await session.execute(text("SELECT 1"))  # line:async-turn-taker
                if slow_call_inside:
                    await asyncio.sleep(0.15)
            if not slow_call_inside:
                await asyncio.sleep(0.15)
        return uow.findings

    bad = await asyncio.gather(*(handle(True) for _ in range(6)))
    fixed = await asyncio.gather(*(handle(False) for _ in range(6)))
    await engine.dispose()
    turns = [
        f for f in of_code([f for u in bad for f in u], "SQD451") if f.details["event"] == "turns"
    ]
    assert len(turns) == 1
    assert turns[0].location.line == line_of("async-turn-taker")
    assert not of_code([f for u in fixed for f in u], "SQD451")


# A module-level engine, as most programs make theirs: where pool_size goes.
module_engine = create_engine(  # line:create
    "sqlite://", poolclass=QueuePool, pool_size=2, max_overflow=0, pool_timeout=0.05
)
CREATED = "the engine is created here: pool_size and max_overflow go there"


def test_a_full_pool_of_a_module_level_engine_points_at_its_create_engine_line() -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        held = open_report_session(module_engine)
        with module_engine.connect() as connection:
            connection.execute(text("SELECT 2"))
            time.sleep(0.1)  # the pool stays full
        held.close()
    finding = one(uow.findings, "SQD451")
    created = [r for r in finding.related if r.message == CREATED]
    assert [(r.location.path, r.location.line) for r in created] == [
        (relative(__file__), line_of("create"))
    ]


def test_a_pool_timeout_of_a_module_level_engine_points_at_its_create_engine_line() -> None:
    held = [open_report_session(module_engine), open_report_session(module_engine)]
    tracker = sqla_doctor.track(config=CONFIG)
    with pytest.raises(PoolTimeoutError), tracker, Session(module_engine) as session:
        session.execute(text("SELECT 3"))
    for each in held:
        each.close()
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD451")
    created = [r for r in finding.related if r.message == CREATED]
    assert [r.location.line for r in created] == [line_of("create")]


def swallowing_job(engine: Engine, slow_call_inside: bool) -> str:
    """A worker that turns any failure into its result, as a job runner's may."""
    try:
        with Session(engine) as session:
            session.execute(text("SELECT 1"))  # line:swallowed
            if slow_call_inside:
                time.sleep(0.3)
                return "ok"
        time.sleep(0.3)
        return "ok"
    except Exception as error:
        return type(error).__name__


def run_jobs(engine: Engine, slow_call_inside: bool) -> list[str]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda _: swallowing_job(engine, slow_call_inside), range(4)))


@pytest.fixture
def impatient_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'impatient.db'}", pool_size=2, max_overflow=0, pool_timeout=0.1
    )
    yield engine
    engine.dispose()


def test_a_pool_timeout_a_worker_catches_is_explained_as_it_leaves_the_session(
    impatient_engine: Engine,
) -> None:
    """The error never reaches a unit's end, the excepthook or a log: it is explained
    as the session's `with` block passes it on."""
    sqla_doctor.install(mode="collect")
    results = run_jobs(impatient_engine, slow_call_inside=True)
    assert sorted(results) == ["TimeoutError", "TimeoutError", "ok", "ok"]
    finding = one(sqla_doctor.collected(), "SQD451")
    here = relative(__file__)
    assert finding.location.line == line_of("swallowed")
    assert finding.message.startswith(
        f"checkout at {here}:{line_of('swallowed')} timed out: QueuePool limit of size 2 "
        f"overflow 0 reached — held by: {here}:{line_of('swallowed')} in swallowing_job "
        "(Session, held "
    )


def test_workers_that_release_the_connection_before_the_slow_call_are_the_silent_twin(
    impatient_engine: Engine,
) -> None:
    sqla_doctor.install(mode="collect")
    assert run_jobs(impatient_engine, slow_call_inside=False) == ["ok"] * 4
    assert not of_code(sqla_doctor.collected(), "SQD451")


def add_in_begin_block(session_factory: sessionmaker[Session]) -> str:
    """`with factory.begin():` around an add(): the first checkout is the flush its exit
    makes, so when the block passes the timeout on, the traceback holds no line of the
    program yet."""
    try:
        with session_factory.begin() as session:  # line:begin-block
            session.add(User(name="ada"))
    except PoolTimeoutError as error:
        return type(error).__name__
    return "ok"


def test_a_pool_timeout_raised_by_a_begin_blocks_commit_points_at_the_block(
    tmp_path: Path,
) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'one.db'}", pool_size=1, max_overflow=0, pool_timeout=0.05
    )
    Base.metadata.create_all(engine)
    sqla_doctor.install(mode="collect")
    leaked = open_report_session(engine)
    assert add_in_begin_block(sessionmaker(engine)) == "TimeoutError"
    finding = one(sqla_doctor.collected(), "SQD451")
    here = relative(__file__)
    assert finding.location.line == line_of("begin-block")
    assert finding.message.startswith(
        f"checkout at {here}:{line_of('begin-block')} timed out: QueuePool limit of size 1 "
        f"overflow 0 reached — held by: {here}:{line_of('holder')} in open_report_session "
    )
    leaked.close()
    assert add_in_begin_block(sessionmaker(engine)) == "ok"
    engine.dispose()
