"""What the runtime doctor costs an ORM-heavy program, and whether its memory stays flat.

Runs each workload bare and with ``sqla_doctor.install()`` (detection on, ``collect``
mode so nothing is printed), alternating in one process so that both see the same CPU
frequency, caches and allocator state; the ratio of each pair's CPU time is taken and
the median ratio reported. The ``floor`` column is the same workload with a no-op
listener on each event the doctor listens to: what SQLAlchemy's event dispatch costs
before any detector runs, the part of the ratio no detector code can remove; the
``minimal`` column, the least an N+1 detector reading the public events can do (two
listeners, no unit of work, no report: see ``_minimal_listeners``). Then runs
200,000 statements with the doctor installed and reports how much traced memory grew.

    python benchmarks/runtime_overhead.py [--rounds 15] [--statements 200000] [--json]
        [--track-reads]

Targets (issue 5): simple reads <= 1.08x, lazy-load loop <= 1.05x, memory growth
<= 5 MB over 200,000 statements.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from sqlalchemy import ForeignKey, String, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
    sessionmaker,
)
from sqlalchemy.pool import StaticPool

import sqla_doctor
from sqla_doctor.config import Config, RuntimeConfig
from sqla_doctor.runtime import listeners


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    email: Mapped[str] = mapped_column(String(100))
    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    author: Mapped[User] = relationship(back_populates="posts")


USERS = 200
POSTS_PER_USER = 3

engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
Base.metadata.create_all(engine)
SessionLocal = sessionmaker(engine)
with SessionLocal() as setup:
    setup.add_all(
        User(
            name=f"user{i}",
            email=f"user{i}@example.com",
            posts=[Post(title=f"post {i}.{j}") for j in range(POSTS_PER_USER)],
        )
        for i in range(USERS)
    )
    setup.commit()


def simple_reads() -> None:
    """A request's worth of point reads: a session, get() by id, a select by name."""
    for i in range(1, 41):
        with SessionLocal() as session:
            user = session.get(User, i)
            assert user is not None
            session.scalars(select(User).where(User.name == f"user{i + 1}")).first()


def eager_loads() -> None:
    """Lists with their children loaded up front (selectinload)."""
    with SessionLocal() as session:
        for offset in range(0, USERS, 50):
            users = session.scalars(
                select(User).options(selectinload(User.posts)).offset(offset).limit(50)
            ).all()
            for user in users:
                len(user.posts)


def lazy_loop() -> None:
    """The N+1 itself: one lazy load per user (the doctor reports it)."""
    with SessionLocal() as session:
        users = session.scalars(select(User).limit(60)).all()
        for user in users:
            len(user.posts)


def flushes() -> None:
    """Objects added and flushed, then rolled back so the table stays the same."""
    with SessionLocal() as session:
        for batch in range(4):
            session.add_all(
                User(name=f"new{batch}.{k}", email=f"n{batch}.{k}@example.com") for k in range(10)
            )
            session.flush()
        session.rollback()


WORKLOADS: dict[str, Callable[[], None]] = {
    "simple_reads": simple_reads,
    "eager_loads": eager_loads,
    "lazy_loop": lazy_loop,
    "flushes": flushes,
}
TARGETS = {"simple_reads": 1.08, "lazy_loop": 1.05}
CONFIG = Config(runtime=RuntimeConfig(mode="collect"))


def _time(fn: Callable[[], None], repeat: int) -> float:
    # CPU time of this process: another busy process on the machine slows the wall
    # clock of both sides unevenly, but not this.
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return time.process_time() - start


def _calibrate(fn: Callable[[], None], budget: float = 0.15) -> int:
    repeat = 1
    while _time(fn, repeat) < budget:
        repeat *= 2
    return repeat


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _noop_before_cursor_execute(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    return statement, parameters


_NOOP_BY_EVENT: dict[str, Callable[..., Any]] = {
    "before_cursor_execute": _noop_before_cursor_execute  # registered with retval=True
}


def _floor_listeners() -> list[tuple[Any, str, Callable[..., Any], dict[str, Any]]]:
    """A no-op listener on every event the doctor listens to, registered the same way."""
    return [
        (target, name, _NOOP_BY_EVENT.get(name, _noop), kw)
        for target, name, _, kw in listeners._LISTENERS
    ]


def _minimal_listeners() -> list[tuple[Any, str, Callable[..., Any], dict[str, Any]]]:
    """The least an N+1 detector reading SQLAlchemy's public events can do.

    ``do_orm_execute`` tells a lazy load from the rest with ORMExecuteState's public
    attributes (the loader path, then the lazy-loaded parent), keys it on the
    relationship and the line of a frame at a fixed depth (the real walk to the user's
    frame costs more), and adds the parent to that key's set; ``before_cursor_execute``
    keeps the statement. No report, no unit of work, no other pitfall: a lower bound for
    the doctor's cost, not a tool.
    """
    groups: dict[tuple[Any, Any, int], set[int]] = {}
    statements: list[str] = []
    getframe = sys._getframe

    def on_execute(state: Any) -> None:
        path = state.loader_strategy_path
        if path is None or path.is_root:
            return
        parent = state.lazy_loaded_from
        if parent is None:
            return
        frame = getframe(5)
        key = (path, frame.f_code, frame.f_lineno)
        parents = groups.get(key)
        if parents is None:
            parents = groups[key] = set()
        parents.add(id(parent))

    def before_cursor_execute(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> tuple[str, Any]:
        if len(statements) < 1000:
            statements.append(statement)
        return statement, parameters

    return [
        (Session, "do_orm_execute", on_execute, {}),
        (Engine, "before_cursor_execute", before_cursor_execute, {"retval": True}),
    ]


def _orm_event_listener() -> list[tuple[Any, str, Callable[..., Any], dict[str, Any]]]:
    """A no-op ``do_orm_execute`` listener alone: the one event that tells a lazy load."""
    return [(Session, "do_orm_execute", _noop, {})]


_Listeners = list[tuple[Any, str, Callable[..., Any], dict[str, Any]]]
_LISTENER_SIDES: dict[str, Callable[[], _Listeners]] = {
    "floor": _floor_listeners,
    "orm_event": _orm_event_listener,
    "minimal": _minimal_listeners,
}


def _watch(side: str) -> Callable[[], None]:
    """Start watching as ``side`` says; returns what stops it.

    ``bare``: nothing; ``floor``: a no-op listener on each of the doctor's events;
    ``orm_event``: a no-op ``do_orm_execute`` listener alone; ``minimal``: the least an
    N+1 detector can do (``_minimal_listeners``); ``doctor``: ``sqla_doctor.install()``.
    """
    if side == "doctor":
        sqla_doctor.install(config=CONFIG)
        return sqla_doctor.uninstall
    if side in _LISTENER_SIDES:
        registered = _LISTENER_SIDES[side]()
        for target, name, fn, kw in registered:
            event.listen(target, name, fn, **kw)

        def stop() -> None:
            for target, name, fn, _ in registered:
                event.remove(target, name, fn)

        return stop
    return lambda: None


def overhead(rounds: int) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    sides = ("bare", "doctor", "floor", "minimal")
    for name, fn in WORKLOADS.items():
        for _ in range(3):  # warm SQLAlchemy's statement cache and every code path
            fn()
        for side in sides[1:]:
            stop = _watch(side)
            fn()
            stop()
        repeat = _calibrate(fn)
        ratios: list[float] = []
        floors: list[float] = []
        minimals: list[float] = []
        bare_times: list[float] = []
        for round_ in range(rounds):
            # Rotate which side runs first, so drift does not favour any.
            order = sides[round_ % len(sides) :] + sides[: round_ % len(sides)]
            timings = {}
            for side in order:
                stop = _watch(side)
                gc.collect()
                timings[side] = _time(fn, repeat)
                stop()
            ratios.append(timings["doctor"] / timings["bare"])
            floors.append(timings["floor"] / timings["bare"])
            minimals.append(timings["minimal"] / timings["bare"])
            bare_times.append(timings["bare"] / repeat)
        results[name] = {
            "ratio": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "floor": statistics.median(floors),
            "minimal": statistics.median(minimals),
            "bare_ms": statistics.median(bare_times) * 1000,
        }
    return results


def memory(statements: int) -> dict[str, float]:
    """Traced memory growth over ``statements`` statements, doctor installed."""
    sqla_doctor.install(config=CONFIG)
    executed = 0

    def run(count: int) -> int:
        done = 0
        with SessionLocal() as session:
            while done < count:
                # A long-lived session is the worst case: its unit of work never ends.
                for i in range(1, 51):
                    session.get(User, i)
                    done += 1
                users = session.scalars(select(User).limit(25)).all()
                done += 1
                for user in users:
                    len(user.posts)
                    done += 1
                session.expunge_all()
        return done

    try:
        executed += run(10_000)  # warm-up: caches fill here, not in the measurement
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        observed_before = sqla_doctor.runtime.statements_observed()
        executed += run(statements)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        observed = sqla_doctor.runtime.statements_observed() - observed_before
    finally:
        sqla_doctor.uninstall()
    return {"statements": observed, "growth_mb": (after - before) / 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--statements", type=int, default=200_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--track-reads",
        action="store_true",
        help="with track-reads on (SQD257, SQD258): attribute reads are observed",
    )
    args = parser.parse_args(argv)
    global CONFIG
    if args.track_reads:
        CONFIG = Config(runtime=RuntimeConfig(mode="collect", track_reads=True))
    import sqlalchemy

    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "sqlalchemy": sqlalchemy.__version__,
        "overhead": overhead(args.rounds),
        "memory": memory(args.statements) if args.statements else None,
    }
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"Python {results['python']}, SQLAlchemy {results['sqlalchemy']}, {args.rounds} rounds")
    print(
        f"{'workload':<14} {'bare':>9} {'ratio':>7} {'min':>7} {'max':>7} {'floor':>7} "
        f"{'minimal':>7}  target"
    )
    for name, row in results["overhead"].items():
        target = TARGETS.get(name)
        verdict = (
            ""
            if target is None
            else f"<= {target:.2f}x " + ("ok" if row["ratio"] <= target else "MISSED")
        )
        print(
            f"{name:<14} {row['bare_ms']:>7.2f}ms {row['ratio']:>6.3f}x "
            f"{row['ratio_min']:>6.3f}x {row['ratio_max']:>6.3f}x {row['floor']:>6.3f}x "
            f"{row['minimal']:>6.3f}x  {verdict}"
        )
    if results["memory"]:
        mem = results["memory"]
        verdict = "ok" if mem["growth_mb"] <= 5 else "MISSED"
        print(
            f"memory: {mem['growth_mb']:+.2f} MB over {mem['statements']:,} statements "
            f"(target <= 5 MB: {verdict})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
