"""SQD157: a connection held while the code sleeps or waits on something else."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.runtime.unit_of_work import process

from .models import Post, User
from .support import line_of, of_code, one, relative

# Thresholds small enough for a fast suite, pauses well past them.
# A close() or commit() on a loaded CI machine can take a tenth of a second: the
# threshold stays well above that, the pause well above the threshold.
HELD = 0.25
PAUSE = 0.6
CONFIG = RuntimeConfig(mode="collect", held_connection_seconds=HELD)
# Where several tasks or threads interleave, the ones that do not wait still sit between
# two statements while the others run (0.11 s seen on a loaded machine): a threshold ten
# times larger, and the same ratio for the pause that must cross it.
CONCURRENT_HELD = 0.5
CONCURRENT_PAUSE = 1.2
CONCURRENT = RuntimeConfig(mode="collect", held_connection_seconds=CONCURRENT_HELD)


def slow_external_call() -> None:
    time.sleep(PAUSE)  # stands for an HTTP request


@pytest.fixture
def slow_engine(tmp_path: Path) -> Iterator[Engine]:
    """SQLite with a ``sleep(seconds)`` SQL function: time spent inside the database."""
    engine = create_engine(f"sqlite:///{tmp_path / 'slow.db'}")

    @event.listens_for(engine, "connect")
    def add_sleep(dbapi_connection: object, record: object) -> None:
        dbapi_connection.create_function("sleep", 1, time.sleep)  # type: ignore[attr-defined]

    yield engine
    engine.dispose()


def test_session_held_across_a_slow_call_is_reported_at_the_next_query(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        session.scalars(select(User)).all()  # line:first-query
        slow_external_call()
        session.get(User, 1)  # line:next-query
    finding = one(uow.findings, "SQD157")
    here = relative(__file__)
    assert finding.location.path == here
    assert finding.location.line == line_of("next-query")
    assert finding.message.startswith(
        f"Session held its pooled connection idle for {finding.details['idle_seconds']:.2f}s "
        f"(threshold {HELD}s) after the query at {here}:{line_of('first-query')} until the next "
        f"statement at {here}:{line_of('next-query')} — no other request can use the "
        "connection meanwhile: make the slow call"
    )
    assert PAUSE <= finding.details["idle_seconds"] < PAUSE + 1
    assert finding.details["last_query"] == f"{here}:{line_of('first-query')}"
    assert [r.message for r in finding.related] == [
        "last query before the gap",
        "connection checked out here",
    ]


def test_slow_call_before_the_session_block_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        slow_external_call()
        with Session(engine) as session:
            session.scalars(select(User)).all()
            session.get(User, 1)
    assert not of_code(uow.findings, "SQD157")


def test_gap_before_commit_is_reported_at_the_commit(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        user = session.get(User, 1)  # line:load
        assert user is not None
        user.name = "renamed"
        slow_external_call()
        session.commit()  # line:commit
    finding = one(uow.findings, "SQD157")
    # The commit's flush is the next statement: the UPDATE, from the commit() line.
    assert finding.location.line == line_of("commit")
    assert f"until the next statement at {relative(__file__)}:{line_of('commit')}" in (
        finding.message
    )
    assert finding.details["last_query"].endswith(f":{line_of('load')}")


@pytest.fixture
def slow_unit_of_work() -> Iterator[None]:
    """The flush takes PAUSE between its INSERT INTO users and its INSERT INTO posts, as
    SQLAlchemy's unit of work does ordering and building the parameters of a batch of
    tens of thousands of objects (a probe saw 2.3 s for 30 000 orders with 3 lines each)."""

    def build_parameters(mapper: object, connection: object, target: object) -> None:
        time.sleep(PAUSE)

    event.listen(Post, "before_insert", build_parameters)
    yield
    event.remove(Post, "before_insert", build_parameters)


@pytest.mark.usefixtures("slow_unit_of_work")
def test_time_between_a_flushs_own_statements_is_not_idle(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        session.get(User, 1)
        session.add(User(name="importer", posts=[Post(title="imported")]))
        session.commit()
    assert uow.query_count >= 3
    assert not of_code(uow.findings, "SQD157")
    assert not of_code(uow.findings, "SQD160")


@pytest.mark.usefixtures("slow_unit_of_work")
def test_slow_call_after_a_slow_flush_is_still_reported(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        session.add(User(name="importer", posts=[Post(title="imported")]))
        session.flush()  # line:flush
        slow_external_call()
        session.get(User, 1)  # line:after-flush
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("after-flush")
    assert finding.details["last_query"].endswith(f":{line_of('flush')}")
    # The flush's own PAUSE is not in it: only the slow call's.
    assert PAUSE <= finding.details["idle_seconds"] < 2 * PAUSE


@pytest.mark.parametrize("step", ["after_flush_postexec", "after_commit"])
def test_the_end_of_a_commit_is_not_idle(engine: Engine, step: str) -> None:
    """Between a commit's flush and its COMMIT, SQLAlchemy releases the flushed objects
    (0.7 s for 120 000 of them on 2.0); between the COMMIT and the connection's return,
    it expires the session's objects. A listener's pause stands for that work."""

    def sqlalchemy_at_work(*args: object) -> None:
        time.sleep(PAUSE)

    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        session.get(User, 1)
        session.add(User(name="imported"))
        event.listen(Session, step, sqlalchemy_at_work)
        try:
            session.commit()
        finally:
            event.remove(Session, step, sqlalchemy_at_work)
    assert not of_code(uow.findings, "SQD157")


def test_a_core_connection_idle_after_commit_is_still_reported(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, engine.connect() as connection:
        connection.execute(text("UPDATE users SET name = 'x' WHERE id = 1"))
        connection.commit()  # line:core-commit
        slow_external_call()
        connection.execute(text("SELECT 1"))  # line:core-next
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("core-next")


def test_a_long_lived_session_does_not_keep_its_old_checkouts_alive(engine: Engine) -> None:
    """The session's record knows its connection's checkout (to stop its idle clock for a
    flush) only weakly: a module-level session must not keep every old unit alive."""
    session = Session(engine)

    def unit_of_work() -> weakref.ref[object]:
        with sqla_doctor.track(config=CONFIG):
            session.execute(text("SELECT 1"))
            session.commit()
        held = process.records[id(session)].checkout
        checkout = held() if isinstance(held, weakref.ref) else held
        assert checkout is not None
        return weakref.ref(checkout)

    gone = contextvars.copy_context().run(unit_of_work)
    gc.collect()
    assert gone() is None
    session.close()


def test_gap_after_commit_is_silent_the_connection_went_back_to_the_pool(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:
        session.get(User, 1)
        session.commit()
        slow_external_call()
        session.get(User, 2)
    assert not of_code(uow.findings, "SQD157")


QUICK = RuntimeConfig(mode="collect", held_connection_seconds=0.03)
# Building ten thousand objects takes SQLAlchemy 0.03–0.5 s, within the 100 µs an object
# the detector allows (1 s). Four times as many take longer than QUICK even on the
# fastest machine seen (0.028 s for ten thousand), within an allowance of 4 s.
LARGE_RESULT = 10_000
HUGE_RESULT = 40_000


def add_posts(engine: Engine, count: int) -> Engine:
    with Session(engine) as session:
        rows = [{"title": f"t{i}", "author_id": 1} for i in range(count)]
        session.execute(insert(Post), rows)
        session.commit()
    return engine


@pytest.fixture
def many_posts(engine: Engine) -> Engine:
    return add_posts(engine, LARGE_RESULT)


@pytest.fixture
def huge_posts(engine: Engine) -> Engine:
    return add_posts(engine, HUGE_RESULT)


def test_building_a_large_results_objects_is_not_idle(huge_posts: Engine) -> None:
    """After the SELECT returns, `.all()` builds forty thousand objects before the next
    statement: the connection was busy with the result, not held by a slow call."""
    with sqla_doctor.track(config=QUICK) as uow, Session(huge_posts) as session:
        started = time.perf_counter()
        posts = session.scalars(select(Post)).all()
        built = time.perf_counter() - started
        session.get(User, 1)
    assert len(posts) >= HUGE_RESULT
    assert built > QUICK.held_connection_seconds  # the gap the old code reported
    assert not of_code(uow.findings, "SQD157")


def test_a_slow_call_after_a_large_result_is_still_reported(many_posts: Engine) -> None:
    with sqla_doctor.track(config=QUICK) as uow, Session(many_posts) as session:
        posts = session.scalars(select(Post)).all()  # line:large-result
        time.sleep(1.5)  # longer than the 1 s the objects account for
        session.get(User, 1)  # line:after-large-result
    assert len(posts) >= LARGE_RESULT
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("after-large-result")
    assert finding.details["last_query"].endswith(f":{line_of('large-result')}")


def test_closing_a_session_right_after_a_large_result_is_not_idle(huge_posts: Engine) -> None:
    """`.all()` builds forty thousand objects and the block ends: building them, then
    detaching them all as close() empties the identity map, is SQLAlchemy's work before
    the connection goes back to the pool, not the program holding it. Any gap counts."""
    config = RuntimeConfig(mode="collect", held_connection_seconds=0.0)
    with sqla_doctor.track(config=config) as uow, Session(huge_posts) as session:
        posts = session.scalars(select(Post)).all()
    assert len(posts) >= HUGE_RESULT
    assert not of_code(uow.findings, "SQD157")


def test_a_slow_call_between_a_large_result_and_the_close_is_still_reported(
    many_posts: Engine,
) -> None:
    with sqla_doctor.track(config=QUICK) as uow, Session(many_posts) as session:  # line:closed
        session.scalars(select(Post)).all()  # line:result-before-close
        time.sleep(1.5)  # longer than the 1 s the objects account for
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("closed")
    assert finding.details["resumed_by"] == "rollback"
    assert finding.details["last_query"].endswith(f":{line_of('result-before-close')}")
    assert finding.details["idle_seconds"] >= 1.5


def test_a_slow_call_before_the_close_is_reported_once(engine: Engine) -> None:
    """The close rolls back, then returns the connection: one gap, one finding."""
    with sqla_doctor.track(config=CONFIG) as uow, Session(engine) as session:  # line:closes
        session.get(User, 1)  # line:before-close
        slow_external_call()
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("closes")
    assert finding.details["resumed_by"] == "rollback"
    assert finding.details["last_query"].endswith(f":{line_of('before-close')}")


def test_gap_under_the_threshold_is_silent(engine: Engine) -> None:
    config = RuntimeConfig(mode="collect", held_connection_seconds=5.0)
    with sqla_doctor.track(config=config) as uow, Session(engine) as session:
        session.get(User, 1)
        slow_external_call()
        session.get(User, 2)
    assert not of_code(uow.findings, "SQD157")


def test_long_query_is_time_in_the_database_not_idle(slow_engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow, slow_engine.connect() as connection:
        connection.execute(text("SELECT 1"))
        connection.execute(text("SELECT sleep(:seconds)"), {"seconds": PAUSE})
        connection.execute(text("SELECT 2"))
    assert not of_code(uow.findings, "SQD157")
    # The statement timings the HTML report shows, aligned with the statements.
    assert uow.statements == ["SELECT 1", "SELECT sleep(?)", "SELECT 2"]
    assert len(uow.durations) == 3
    assert uow.durations[1] >= PAUSE
    assert uow.durations[0] < PAUSE
    assert uow.durations[2] < PAUSE


def test_core_connection_held_across_a_slow_call_is_reported_at_close(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:  # noqa: SIM117 - the line of the `with` below
        with engine.connect() as connection:  # line:connect
            connection.execute(text("SELECT count(*) FROM users"))  # line:count
            slow_external_call()
    finding = one(uow.findings, "SQD157")
    assert finding.message.startswith("Connection held its pooled connection idle")
    # A Connection has no session to close or open again: its own block is named.
    assert finding.message.endswith(
        " — no other request can use the connection meanwhile: make the slow call (HTTP "
        "request, sleep, file or queue I/O) before the `with engine.connect()` (or "
        "`engine.begin()`) block, or end that block (committed) before it and take a "
        "connection again after, and keep transactions short"
    )
    assert "session" not in finding.message
    assert finding.details["last_query"].endswith(f":{line_of('count')}")
    assert finding.details["resumed_by"] == "rollback"
    assert finding.location.line == line_of("connect")


def test_a_loop_with_a_slow_call_per_row_is_one_finding(engine: Engine) -> None:
    """The first gap follows the query before the loop, the next ones the loop's own
    UPDATE: the same wait, at the same line."""
    with sqla_doctor.track(config=CONFIG) as uow, engine.begin() as connection:
        ids = connection.execute(text("SELECT id FROM users")).scalars().all()[:3]
        for user_id in ids:
            slow_external_call()
            connection.execute(  # line:per-row
                text("UPDATE users SET name = 'x' WHERE id = :id"), {"id": user_id}
            )
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("per-row")


def test_a_loop_that_makes_its_slow_calls_first_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG) as uow:
        with engine.connect() as connection:
            ids = connection.execute(text("SELECT id FROM users")).scalars().all()[:3]
        names = {}
        for user_id in ids:
            slow_external_call()
            names[user_id] = "x"
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE users SET name = :name WHERE id = :id"),
                [{"id": key, "name": value} for key, value in names.items()],
            )
    assert not of_code(uow.findings, "SQD157")


def test_only_the_task_that_waited_is_reported_among_concurrent_ones(engine: Engine) -> None:
    # Threads: each its own unit of work, as a web server's requests are.
    import threading

    results: dict[str, list[str]] = {}
    gaps: dict[str, list[float]] = {}

    def request(name: str, wait: bool) -> None:
        with sqla_doctor.track(config=CONCURRENT) as uow, Session(engine) as session:
            session.get(User, 1)
            if wait:
                time.sleep(CONCURRENT_PAUSE)
            session.get(User, 2)
        results[name] = [f.code for f in uow.findings]
        gaps[name] = [f.details["idle_seconds"] for f in uow.findings]

    threads = [threading.Thread(target=request, args=(f"t{i}", i == 0)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["t0"] == ["SQD157"]
    assert gaps["t0"][0] >= CONCURRENT_PAUSE
    assert all(results[f"t{i}"] == [] for i in range(1, 4))


async def test_async_session_held_across_await_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(config=CONFIG) as uow, AsyncSession(async_engine) as session:
        await session.get(User, 1)  # line:async-get
        await asyncio.sleep(PAUSE)  # stands for `await http.get(...)`
        await session.get(User, 2)  # line:async-next
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("async-next")
    assert finding.details["last_query"].endswith(f":{line_of('async-get')}")


async def test_async_sleep_outside_the_session_is_the_silent_twin(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(config=CONFIG) as uow:
        async with AsyncSession(async_engine) as session:
            await session.get(User, 1)
        await asyncio.sleep(PAUSE)
        async with AsyncSession(async_engine) as session:
            await session.get(User, 2)
    assert not of_code(uow.findings, "SQD157")


@pytest.fixture
async def slow_async_engine(async_engine: AsyncEngine) -> AsyncEngine:
    """The async engine with a ``sleep(seconds)`` SQL function, run in aiosqlite's thread."""

    @event.listens_for(async_engine.sync_engine, "connect")
    def add_sleep(dbapi_connection: object, record: object) -> None:
        dbapi_connection.create_function("sleep", 1, time.sleep)  # type: ignore[attr-defined]

    await async_engine.dispose()  # the seeding's pooled connection has no sleep()
    return async_engine


CANCELLED = RuntimeConfig(
    mode="collect", held_connection_seconds=HELD, idle_transaction_seconds=HELD
)


async def test_a_query_cancelled_by_a_timeout_runs_on_and_is_not_idle(
    slow_async_engine: AsyncEngine,
) -> None:
    # asyncio.timeout cancels the await, SQLAlchemy invalidates the connection, and
    # closing it waits for aiosqlite's thread to finish the statement: the database's time.
    async with sqla_doctor.track(config=CANCELLED) as uow:
        try:
            async with asyncio.timeout(0.05), AsyncSession(slow_async_engine) as session:
                await session.execute(text("SELECT sleep(:s)"), {"s": PAUSE})
        except TimeoutError:
            pass
        async with AsyncSession(slow_async_engine) as session:
            await session.get(User, 1)
    assert [f.code for f in uow.findings] == []


async def test_a_slow_call_after_a_cancelled_query_in_a_new_session_is_still_reported(
    slow_async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(config=CANCELLED) as uow:
        try:
            async with asyncio.timeout(0.05), AsyncSession(slow_async_engine) as session:
                await session.execute(text("SELECT sleep(:s)"), {"s": PAUSE})
        except TimeoutError:
            pass
        async with AsyncSession(slow_async_engine) as session:
            await session.get(User, 1)
            await asyncio.sleep(PAUSE)
            await session.get(User, 2)  # line:after-cancelled
    assert one(uow.findings, "SQD157").location.line == line_of("after-cancelled")


async def test_concurrent_tasks_in_one_unit_report_only_the_waiting_one(
    async_engine: AsyncEngine,
) -> None:
    async def quick(user_id: int) -> None:
        async with AsyncSession(async_engine) as session:
            await session.get(User, user_id)
            await session.get(User, user_id + 1)

    async def waits() -> None:
        async with AsyncSession(async_engine) as session:
            await session.get(User, 1)
            await asyncio.sleep(CONCURRENT_PAUSE)
            await session.get(User, 3)  # line:task-next

    async with sqla_doctor.track(config=CONCURRENT) as uow:
        await asyncio.gather(waits(), *(quick(i) for i in range(1, 4)))
    finding = one(uow.findings, "SQD157")
    assert finding.location.line == line_of("task-next")
    assert finding.details["idle_seconds"] >= CONCURRENT_PAUSE
