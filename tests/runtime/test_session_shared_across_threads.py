"""SQD159: one Session used by several threads; the hand-overs that stay silent.

Also: a session closed (or committed) by another thread than the one that began it is
not a leak (SQD151) nor a forgotten commit (SQD152).
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, func, select, text
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import sqla_doctor

from .models import Post, User, create_and_seed, seed_objects
from .support import line_of, of_code, one, relative

HERE = relative(__file__)
# The module's one sessionmaker: SQD159's fix names it.
WorkerSessions: sessionmaker[Session] = sessionmaker()


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


@pytest.fixture
def connecting_engine(tmp_path: Any) -> Iterator[tuple[Engine, threading.Event, threading.Event]]:
    """SQLite whose next new connection blocks while connecting (a PostgreSQL server
    across the network), from the first connection after the seeding."""
    engine = create_engine(f"sqlite:///{tmp_path / 'connecting.db'}")
    create_and_seed(engine)
    engine.dispose()
    connecting, release = threading.Event(), threading.Event()

    @event.listens_for(engine, "connect")
    def _slow_connect(dbapi_connection: Any, record: Any) -> None:
        if not connecting.is_set():
            connecting.set()
            release.wait(10)

    yield engine, connecting, release
    release.set()
    engine.dispose()


def test_an_operation_while_another_thread_connects_explains_provisioning_error(
    connecting_engine: tuple[Engine, threading.Event, threading.Event],
) -> None:
    """A module-level session shared by ThreadPoolExecutor workers: the first one is
    still connecting, SQLAlchemy refuses the second one's query. No statement ran yet."""
    engine, connecting, release = connecting_engine
    shared = sessionmaker(engine)()

    def program() -> None:
        with tracker:
            worker = threading.Thread(
                target=contextvars.copy_context().run,
                args=(lambda: shared.execute(text("SELECT 1")),),  # line:connecting
            )
            worker.start()
            try:
                assert connecting.wait(10)
                shared.execute(select(User.name))  # line:refused
            finally:
                release.set()
                worker.join()
                shared.close()

    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(InvalidRequestError, match="provisioning a new connection") as raised:
        program()
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD159")
    assert finding.location.line == line_of("refused")
    assert [r.location.line for r in finding.related] == [line_of("connecting")]
    assert f"at {HERE}:{line_of('refused')} while thread Thread-" in finding.message
    assert (
        f"operation from {HERE}:{line_of('connecting')} was still acquiring the "
        "session's connection" in finding.message
    )
    assert finding.details["concurrent"] is True
    notes = getattr(raised.value, "__notes__", None)
    if notes is not None:
        assert any("SQD159" in note for note in notes)


def test_one_session_per_thread_while_another_connects_is_silent(
    connecting_engine: tuple[Engine, threading.Event, threading.Event],
) -> None:
    engine, connecting, release = connecting_engine
    factory = sessionmaker(engine)

    def job() -> None:
        with factory() as session:
            session.execute(text("SELECT 1"))

    with sqla_doctor.track(mode="collect") as uow:
        worker = threading.Thread(target=contextvars.copy_context().run, args=(job,))
        worker.start()
        try:
            assert connecting.wait(10)
            releaser = threading.Timer(0.2, release.set)
            releaser.start()
            with factory() as session:
                session.execute(select(User.name))
        finally:
            release.set()
            worker.join()
    assert not of_code(uow.findings, "SQD159")


def test_provisioning_error_after_the_other_thread_began_connecting_is_explained(
    connecting_engine: tuple[Engine, threading.Event, threading.Event],
) -> None:
    """The refused thread began its operation first and reached the connection second:
    no overlap was seen when it began, the threads of the transaction explain it."""
    engine, connecting, release = connecting_engine
    shared = sessionmaker(engine)()
    paused, resume = threading.Event(), threading.Event()
    first = threading.current_thread

    @event.listens_for(shared, "do_orm_execute")
    def _pause_first(state: Any) -> None:
        if first().name == "refused":
            paused.set()
            resume.wait(10)

    errors: list[BaseException] = []

    def refused() -> None:
        try:
            shared.execute(text("SELECT 1"))  # line:late
        except BaseException as error:
            errors.append(error)

    def connects() -> None:
        shared.execute(select(User.name))  # line:early

    def program() -> None:
        with tracker:
            run = contextvars.copy_context().run
            late = threading.Thread(target=run, args=(refused,), name="refused")
            early = threading.Thread(
                target=contextvars.copy_context().run, args=(connects,), name="connects"
            )
            late.start()
            try:
                assert paused.wait(10)
                early.start()
                assert connecting.wait(10)
                resume.set()
                late.join()
            finally:
                resume.set()
                release.set()
                late.join()
                early.join()
            raise errors[0]  # the program's close() below it never runs

    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(InvalidRequestError, match="provisioning a new connection"):
        program()
    shared.close()
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD159")
    assert finding.location.line == line_of("late")
    assert finding.message.startswith(
        "Session used by several threads at once (thread refused, thread connects): "
        f"InvalidRequestError at {HERE}:{line_of('late')} is SQLAlchemy refusing"
    )
    assert [r.location.line for r in finding.related] == [line_of("early")]


def test_a_query_while_another_thread_commits_explains_the_prepared_state_error(
    engine: Engine,
) -> None:
    """A module-level session: a worker thread commits while the main thread queries.
    Between the commit's flush and its COMMIT, SQLAlchemy refuses the query."""
    shared = Session(engine)
    committing, release = threading.Event(), threading.Event()

    def hold_the_commit(connection: object) -> None:
        if threading.current_thread().name == "committer":
            committing.set()
            release.wait(10)

    def commit_job() -> None:
        user = shared.get(User, 1)
        assert user is not None
        user.name = "renamed"
        shared.commit()  # line:committer-commit

    def program() -> None:
        with tracker:
            worker = threading.Thread(
                target=contextvars.copy_context().run, args=(commit_job,), name="committer"
            )
            worker.start()
            try:
                assert committing.wait(10)
                shared.execute(select(User.name))  # line:prepared
            finally:
                release.set()
                worker.join()

    event.listen(engine, "commit", hold_the_commit)
    tracker = sqla_doctor.track(mode="collect")
    try:
        with pytest.raises(InvalidRequestError, match="in 'prepared' state"):
            program()
    finally:
        event.remove(engine, "commit", hold_the_commit)
        shared.close()
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD159")
    assert finding.location.line == line_of("prepared")
    assert finding.message.startswith(
        f"Session used by two threads at once: thread MainThread began an operation at "
        f"{HERE}:{line_of('prepared')} while thread committer's commit() from "
        f"{HERE}:{line_of('committer-commit')} was still under way (SQLAlchemy refuses it "
        "until the COMMIT is done: \"This session is in 'prepared' state; no further SQL "
        'can be emitted within this transaction")'
    )
    assert [r.location.line for r in finding.related] == [line_of("committer-commit")]


def test_sql_in_an_after_commit_hook_of_one_thread_is_not_a_shared_session(
    engine: Engine,
) -> None:
    """The same refusal ('committed' state) from one thread's own hook: no other thread."""
    with Session(engine) as session:

        @event.listens_for(session, "after_commit")
        def _audit(committed: Session) -> None:
            committed.execute(text("SELECT 1"))

        with sqla_doctor.track(mode="collect") as uow:
            user = session.get(User, 1)
            assert user is not None
            user.name = "renamed"
            with pytest.raises(InvalidRequestError, match="in 'committed' state"):
                session.commit()
    assert not of_code(uow.findings, "SQD159")


def first_worker(shared: Session, started: threading.Event, done: list[bool]) -> None:
    """A pool worker that used the session and is still busy with its item."""
    shared.get(User, 1)  # line:midway-first
    started.set()
    while not done:
        time.sleep(0.001)  # rendering, uploading, ...


def second_worker(shared: Session) -> None:
    shared.get(User, 2)  # line:midway-second


def run_two_workers(engine: Engine, *, first_done_before_second: bool) -> list[Any]:
    shared = Session(engine)
    started, done = threading.Event(), []
    with sqla_doctor.track(mode="collect") as uow:
        run = contextvars.copy_context().run
        first = threading.Thread(target=run, args=(first_worker, shared, started, done))
        first.start()
        assert started.wait(10)
        if first_done_before_second:
            done.append(True)
            first.join()
        second = threading.Thread(
            target=contextvars.copy_context().run, args=(second_worker, shared)
        )
        second.start()
        second.join()
        done.append(True)
        first.join()
    shared.close()
    return of_code(uow.findings, "SQD159")


def test_a_worker_still_in_the_function_that_used_the_session_shares_it(engine: Engine) -> None:
    """No statement overlapped, but the first thread had not finished with the session."""
    findings = run_two_workers(engine, first_done_before_second=False)
    assert len(findings) == 1
    finding = findings[0]
    assert finding.location.line == line_of("midway-second")
    assert f"was still running the code that used it at {HERE}:{line_of('midway-first')}" in (
        finding.message
    )
    assert [r.location.line for r in finding.related] == [line_of("midway-first")]
    assert finding.message.endswith(
        "give each thread its own session (`with WorkerSessions() as session:` inside the "
        "thread, or a scoped_session); to hand a session to another thread, commit or "
        "close it first"
    )
    assert finding.fix_hint == "with WorkerSessions() as session: ..."


def test_a_worker_that_finished_before_the_next_began_is_the_silent_twin(engine: Engine) -> None:
    assert not run_two_workers(engine, first_done_before_second=True)


def look_up(shared: Session, user_id: int) -> None:
    shared.get(User, user_id)  # line:helper


def render(until: list[bool]) -> None:
    while not until:
        time.sleep(0.001)  # the item's own work, away from the session


def worker_in_its_task(shared: Session, used: threading.Event, until: list[bool]) -> None:
    """A pool worker's task: it looks its row up through a helper and goes on with the
    item, still in the task when the other thread takes the session."""
    look_up(shared, 1)
    used.set()
    render(until)


def run_worker_then_helper(engine: Engine, *, first_done_before_second: bool) -> list[Any]:
    shared = Session(engine)
    used, until = threading.Event(), []
    with sqla_doctor.track(mode="collect") as uow:
        first = threading.Thread(
            target=contextvars.copy_context().run,
            args=(worker_in_its_task, shared, used, until),
        )
        first.start()
        assert used.wait(10)
        if first_done_before_second:
            until.append(True)
            first.join()
        second = threading.Thread(target=contextvars.copy_context().run, args=(look_up, shared, 2))
        second.start()
        second.join()
        until.append(True)
        first.join()
    shared.close()
    return of_code(uow.findings, "SQD159")


def test_a_worker_still_in_its_task_after_the_helper_that_used_the_session_shares_it(
    engine: Engine,
) -> None:
    """The first thread left the function that used the session for its item's other
    work, in the same task: the second thread's lookup shares the transaction with it."""
    findings = run_worker_then_helper(engine, first_done_before_second=False)
    assert len(findings) == 1
    assert "while thread" in findings[0].message
    assert f"was still running the code that used it at {HERE}:{line_of('helper')}" in (
        findings[0].message
    )


def test_a_worker_whose_task_ended_before_the_next_began_is_the_silent_twin(
    engine: Engine,
) -> None:
    assert not run_worker_then_helper(engine, first_done_before_second=True)


def streamed_names(engine: Engine, pause: threading.Event | None) -> Iterator[str]:
    """A streaming response's body: each next() may run in another worker thread."""
    with Session(engine) as session:
        for user in session.scalars(select(User)).all():
            yield f"{user.name}:{len(user.posts)}"  # a lazy load per row
            while pause is not None and not pause.is_set():
                time.sleep(0.001)  # rendering this request's next chunk


def test_a_stream_resumed_by_a_thread_busy_with_another_stream_is_silent(
    engine: Engine,
) -> None:
    """Starlette runs each next() of two responses' generators in whichever worker is
    free: this stream's session moves from thread A to thread B while A is inside the
    same generator function for another request, with that request's own session."""
    pause = threading.Event()
    with sqla_doctor.track(mode="collect") as uow:
        first = streamed_names(engine, None)
        other = streamed_names(engine, pause)
        names: list[str] = []
        ready = threading.Event()

        def worker_a() -> None:
            names.append(next(first))  # this stream's first row, in thread A
            names.append(next(other))  # then the other stream's, also in thread A
            ready.set()
            names.append(next(other))  # blocked inside the other stream's body

        run = contextvars.copy_context().run
        a = threading.Thread(target=run, args=(worker_a,))
        a.start()
        assert ready.wait(10)
        b = threading.Thread(target=contextvars.copy_context().run, args=(lambda: list(first),))
        b.start()
        b.join()
        pause.set()
        a.join()
        for _ in other:
            pass
    assert len(names) == 3
    assert not of_code(uow.findings, "SQD159")


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


def name_of(shared: Session, user_id: int) -> str | None:
    user = shared.get(User, user_id)  # line:pooled
    return user.name if user is not None else None


def run_pool(
    engine: Engine, submit: Callable[[ThreadPoolExecutor, Session], list[Any]], *, workers: int = 3
) -> list[Any]:
    """The caller's session, used first by the caller, then handed to pool tasks."""
    shared = Session(engine)
    with sqla_doctor.track(mode="collect") as uow:
        users(shared)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            names = submit(pool, shared)
        assert sorted(names) == ["user0", "user1", "user2"]
    shared.close()
    return of_code(uow.findings, "SQD159")


def mapped(pool: ThreadPoolExecutor, shared: Session) -> list[Any]:
    return list(pool.map(lambda user_id: name_of(shared, user_id), [1, 2, 3]))


def name_then_work(shared: Session, user_id: int) -> str | None:
    name = name_of(shared, user_id)
    time.sleep(0.05)  # rendering, uploading: the task is not done with its row yet
    return name


def completed(pool: ThreadPoolExecutor, shared: Session) -> list[Any]:
    futures = [pool.submit(name_then_work, shared, user_id) for user_id in [1, 2, 3]]
    return [future.result() for future in as_completed(futures)]


def one_at_a_time(pool: ThreadPoolExecutor, shared: Session) -> list[Any]:
    return [pool.submit(name_of, shared, user_id).result() for user_id in [1, 2, 3]]


def test_pool_map_tasks_handed_one_session_are_reported_however_they_interleave(
    engine: Engine,
) -> None:
    """s08: three quick tasks may well run one after another on one worker; they were
    still submitted to run in parallel, with one session. Every run is reported."""
    pooled = 0
    for _ in range(5):
        [finding] = run_pool(engine, mapped)
        assert finding.location.line == line_of("pooled")
        if finding.message.startswith("Session used by two threads at once"):
            continue  # two of the tasks' statements did overlap this time
        pooled += 1
        assert finding.message.startswith(
            "Session handed to thread-pool tasks that run in parallel: thread ThreadPoolExecutor-"
        )
        assert (
            f"began an operation at {HERE}:{line_of('pooled')} in one of several tasks given "
            "the same session and submitted together (Executor.map(), as_completed(), wait()) "
            "to a pool of 3 threads"
        ) in finding.message
        # The caller's query, or another task's, whichever used the session last.
        assert [r.location.line for r in finding.related] in (
            [line_of("users")],
            [line_of("pooled")],
        )
    assert pooled


def test_submitted_tasks_still_working_with_one_session_are_reported(engine: Engine) -> None:
    """Tasks given the session by submit() and gathered with as_completed(): each is
    still busy with its row when the next one queries."""
    for _ in range(3):
        [finding] = run_pool(engine, completed)
        assert finding.location.line == line_of("pooled")


def test_pool_tasks_handed_the_session_one_at_a_time_are_silent(engine: Engine) -> None:
    """Each task is awaited before the next is submitted: turns, not parallel work."""
    for _ in range(3):
        assert not run_pool(engine, one_at_a_time)


def test_a_pool_of_one_thread_mapping_over_one_session_is_silent(engine: Engine) -> None:
    for _ in range(3):
        assert not run_pool(engine, mapped, workers=1)
