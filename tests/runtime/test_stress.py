"""Stress (issue 8): 32 threads and 500 asyncio tasks, every detector on, for a while.

Each job is one unit of work of a known kind (an N+1, a leak, a pending primary-key read,
a commit, a rollback, a session shared by two threads or two tasks, a clean one), run
over and over by many workers at once. The doctor must not raise into the program, every
job must get its right result, every expected finding must be reported exactly once in
its own unit and none in the others, and memory must stay flat.

A couple of seconds in CI; ``--run-slow`` runs the long variants. The PostgreSQL twin is
test_stress_pg.py (psycopg threads, asyncpg tasks).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import itertools
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, selectinload

import sqla_doctor
from sqla_doctor.runtime.unit_of_work import process

from .models import USERS, Base, Post, User, create_and_seed, seed_objects

THREADS = 32
TASKS = 500
# The codes the workload provokes; any of them anywhere else is a false positive.
WATCHED = frozenset({"SQD151", "SQD152", "SQD158", "SQD159", "SQD251", "SQD351"})
SYNC_JOBS: dict[str, frozenset[str]] = {
    "n_plus_one": frozenset({"SQD251"}),
    "clean": frozenset(),
    "leak": frozenset({"SQD151"}),
    "pending_pk": frozenset({"SQD351"}),
    "commit": frozenset(),
    "rollback": frozenset(),
    "shared_threads": frozenset({"SQD159"}),
}
ASYNC_JOBS: dict[str, frozenset[str]] = {
    "n_plus_one": frozenset({"SQD251"}),
    "clean": frozenset(),
    "pending_pk": frozenset({"SQD351"}),
    "commit": frozenset(),
    "shared_tasks": frozenset({"SQD158"}),
}


# -- the jobs: each returns its result, checked against what it must be -------------------

# Thread id -> (set once its `SELECT 1 AS held` is in the driver, what it waits for there).
_HOLDS: dict[int, tuple[threading.Event, threading.Event]] = {}


def hold_statements(engine: Engine) -> None:
    """Let the shared-session job keep a statement in the driver until told."""

    @event.listens_for(engine, "before_cursor_execute")
    def _hold(conn: object, cursor: object, statement: str, *args: object) -> None:
        hold = _HOLDS.get(threading.get_ident())
        if hold is not None and "AS held" in statement:
            inside, release = hold
            inside.set()
            release.wait(10)



def sync_job(kind: str, engine: Engine, leaked: list[Session]) -> object:
    if kind == "n_plus_one":
        with Session(engine) as session:
            return sum(len(user.posts) for user in session.scalars(select(User)))
    if kind == "clean":
        with Session(engine) as session:
            users = session.scalars(select(User).options(selectinload(User.posts))).all()
            return sum(len(user.posts) for user in users)
    if kind == "leak":
        session = Session(engine)
        leaked.append(session)  # closed after its unit ended, by the worker
        return len(session.scalars(select(User)).all())
    if kind == "pending_pk":
        with Session(engine) as session:
            user = User(name="pending")
            session.add(user)
            seen = user.id
            session.rollback()
            return seen
    if kind == "commit":
        with Session(engine) as session:
            post = session.get(Post, 1)
            assert post is not None
            post.title = "post 0.0"  # rewritten to what it was: results stay stable
            session.commit()
            return post.title
    if kind == "rollback":
        with Session(engine) as session:
            session.add(User(name="never"))
            session.flush()
            session.rollback()
            return session.scalar(select(User.id).where(User.name == "never"))
    if kind == "shared_threads":
        # Truly at once: this thread's statement is held in the driver (by hold_statements)
        # until the other thread's query on the same session has begun.
        with Session(engine) as session:
            first = len(session.scalars(select(User)).all())
            me = threading.get_ident()
            inside, other_began = threading.Event(), threading.Event()

            def began(state: object) -> None:
                if threading.get_ident() != me:
                    other_began.set()

            event.listen(session, "do_orm_execute", began)
            box: list[int] = []
            # As asyncio.to_thread() runs it: in a copy of this thread's context.
            def other_query() -> None:
                inside.wait(10)
                box.append(len(session.scalars(select(Post)).all()))

            other = threading.Thread(target=contextvars.copy_context().run, args=(other_query,))
            _HOLDS[me] = (inside, other_began)
            try:
                other.start()
                session.execute(text("SELECT 1 AS held"))
            finally:
                _HOLDS.pop(me, None)
                other.join()
            return (first, box[0], len(session.scalars(select(User)).all()))
    raise AssertionError(kind)


SYNC_RESULTS: dict[str, object] = {
    "n_plus_one": USERS * 2,
    "clean": USERS * 2,
    "leak": USERS,
    "pending_pk": None,
    "commit": "post 0.0",
    "rollback": None,
    "shared_threads": (USERS, USERS * 2, USERS),
}


async def async_job(kind: str, engine: AsyncEngine) -> object:
    if kind == "n_plus_one":
        async with AsyncSession(engine) as session:
            total = 0
            for user in (await session.scalars(select(User))).all():
                total += len(await user.awaitable_attrs.posts)
            return total
    if kind == "clean":
        async with AsyncSession(engine) as session:
            stmt = select(User).options(selectinload(User.posts))
            return sum(len(u.posts) for u in (await session.scalars(stmt)).all())
    if kind == "pending_pk":
        async with AsyncSession(engine) as session:
            user = User(name="pending")
            session.add(user)
            seen = user.id
            await session.rollback()
            return seen
    if kind == "commit":
        async with AsyncSession(engine) as session:
            post = await session.get(Post, 2)
            assert post is not None
            post.title = title = "post 0.1"
            await session.commit()
            return title
    if kind == "shared_tasks":
        async with AsyncSession(engine) as session:
            # Both tasks finish before the session closes (else close() fails too).
            users, posts = await asyncio.gather(
                session.scalars(select(User)), session.scalars(select(Post)), return_exceptions=True
            )
            if isinstance(users, SQLAlchemyError) or isinstance(posts, SQLAlchemyError):
                # Under load the second task often starts while the first one is still
                # connecting: SQLAlchemy refuses ("isce"), as it would without the doctor.
                return REFUSED
            assert not isinstance(users, BaseException)
            assert not isinstance(posts, BaseException)
            return (len(users.all()), len(posts.all()))
    raise AssertionError(kind)


REFUSED = "refused by SQLAlchemy"
ASYNC_RESULTS: dict[str, object] = {
    "n_plus_one": USERS * 2,
    "clean": USERS * 2,
    "pending_pk": None,
    "commit": "post 0.1",
    "shared_tasks": (USERS, USERS * 2),
}


# -- running them -------------------------------------------------------------------------


class Tally:
    """What the workers saw, checked once they stopped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: Counter[str] = Counter()
        self.problems: list[str] = []

    def check(
        self,
        kind: str,
        result: object,
        wanted: object,
        unit: sqla_doctor.UnitOfWork,
        expected: frozenset[str],
    ) -> None:
        codes = Counter(f.code for f in unit.findings if f.code in WATCHED)
        problem = None
        if result != wanted and result is not REFUSED:
            problem = f"{kind}: result {result!r}, wanted {wanted!r}"
        elif set(codes) != expected or any(n != 1 for n in codes.values()):
            problem = f"{kind}: findings {dict(codes)}, wanted each of {sorted(expected)} once"
        with self.lock:
            self.runs[kind] += 1
            if problem is not None and len(self.problems) < 20:
                self.problems.append(problem)

    def assert_clean(self, kinds: dict[str, frozenset[str]]) -> None:
        assert not self.problems, self.problems
        assert set(self.runs) == set(kinds), self.runs
        assert process.internal_errors == 0


def run_threads(engine: Engine, seconds: float, tally: Tally) -> None:
    kinds = list(SYNC_JOBS)
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def worker(index: int) -> None:
        try:
            barrier.wait(30)
            for kind in itertools.islice(itertools.cycle(kinds), index % len(kinds), None):
                leaked: list[Session] = []
                with sqla_doctor.track(kind, mode="collect") as unit:
                    result = sync_job(kind, engine, leaked)
                for session in leaked:
                    session.close()
                tally.check(kind, result, SYNC_RESULTS[kind], unit, SYNC_JOBS[kind])
                if time.monotonic() > stop:
                    return
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]


async def run_tasks(engine: AsyncEngine, seconds: float, tally: Tally) -> None:
    kinds = list(ASYNC_JOBS)
    stop = time.monotonic() + seconds

    async def worker(index: int) -> None:
        for kind in itertools.islice(itertools.cycle(kinds), index % len(kinds), None):
            async with sqla_doctor.track(kind, mode="collect") as unit:
                result = await async_job(kind, engine)
            tally.check(kind, result, ASYNC_RESULTS[kind], unit, ASYNC_JOBS[kind])
            if time.monotonic() > stop:
                return

    await asyncio.gather(*(worker(i) for i in range(TASKS)))


def memory_growth(run_once: Callable[[], None], rounds: int) -> float:
    """MB traced memory grew over ``rounds`` more runs, after a warm-up run."""
    run_once()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(rounds):
            run_once()
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / 1e6
    finally:
        tracemalloc.stop()


# -- SQLite -------------------------------------------------------------------------------


@pytest.fixture
def stress_engine(tmp_path: Path) -> Iterator[Engine]:
    # A pool for every thread, and patience for SQLite's one writer at a time.
    engine = create_engine(
        f"sqlite:///{tmp_path / 'stress.db'}",
        pool_size=THREADS + 8,
        connect_args={"timeout": 60},
    )
    hold_statements(engine)
    create_and_seed(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def stress_async_engine(tmp_path: Path) -> AsyncEngine:
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'stress_async.db'}",
        pool_size=64,
        max_overflow=0,
        pool_timeout=120,
        connect_args={"timeout": 60},
    )
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    async with AsyncSession(engine) as session:
        session.add_all(seed_objects())
        await session.commit()
    return engine


def stress_threads(engine: Engine, seconds: float) -> None:
    tally = Tally()
    run_threads(engine, seconds, tally)
    tally.assert_clean(SYNC_JOBS)


async def stress_tasks(engine: AsyncEngine, seconds: float) -> None:
    try:
        tally = Tally()
        await run_tasks(engine, seconds, tally)
        tally.assert_clean(ASYNC_JOBS)
    finally:
        await engine.dispose()


def test_32_threads_every_detector_on(stress_engine: Engine) -> None:
    stress_threads(stress_engine, 2.0)


async def test_500_tasks_every_detector_on(stress_async_engine: AsyncEngine) -> None:
    await stress_tasks(stress_async_engine, 2.0)


def test_memory_stays_flat_under_threads(stress_engine: Engine) -> None:
    def run_once() -> None:
        tally = Tally()
        run_threads(stress_engine, 0.3, tally)
        tally.assert_clean(SYNC_JOBS)

    assert memory_growth(run_once, 3) < 2.0


@pytest.mark.slow
def test_32_threads_for_30_seconds(stress_engine: Engine) -> None:
    stress_threads(stress_engine, 30.0)


@pytest.mark.slow
async def test_500_tasks_for_30_seconds(stress_async_engine: AsyncEngine) -> None:
    await stress_tasks(stress_async_engine, 30.0)
