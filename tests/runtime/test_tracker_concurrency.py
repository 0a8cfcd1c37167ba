"""One ``track()`` object shared by many threads and tasks at once; ``current_unit()``."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

import sqla_doctor
from sqla_doctor.runtime.unit_of_work import UnitOfWork

THREADS = 32
TASKS = 500


def test_one_decorator_shared_by_32_threads(engine: Engine) -> None:
    tracker = sqla_doctor.track("handler", mode="collect")
    barrier = threading.Barrier(THREADS)
    results: dict[int, tuple[int, UnitOfWork | None, UnitOfWork | None]] = {}
    errors: list[BaseException] = []

    @tracker
    def handler(statements: int) -> UnitOfWork | None:
        unit = sqla_doctor.current_unit()
        with engine.connect() as connection:
            for _ in range(statements):
                connection.execute(text("SELECT 1"))
        assert sqla_doctor.current_unit() is unit
        return unit

    def worker(index: int) -> None:
        try:
            barrier.wait(10)
            for round_ in range(3):
                statements = 1 + (index + round_) % 4
                unit = handler(statements)
                results[index * 3 + round_] = (statements, unit, sqla_doctor.current_unit())
        except BaseException as error:
            errors.append(error)

    with_block = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in with_block:
        thread.start()
    for thread in with_block:
        thread.join()
    assert not errors
    assert len(results) == THREADS * 3
    for statements, unit, after in results.values():
        assert unit is not None
        assert not unit.active
        assert unit.query_count == statements  # nobody else's statements counted
        assert after is None
    assert len({id(unit) for _, unit, _ in results.values()}) == THREADS * 3
    assert tracker._open == {}


def test_one_tracker_as_a_with_block_in_32_threads(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    barrier = threading.Barrier(THREADS)
    counts: list[tuple[int, int]] = []

    def worker(index: int) -> None:
        barrier.wait(10)
        with tracker as uow:
            assert sqla_doctor.current_unit() is uow
            barrier.wait(10)  # every thread inside its block at once
            with engine.connect() as connection:
                for _ in range(index % 5):
                    connection.execute(text("SELECT 1"))
        counts.append((index % 5, uow.query_count))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(counts) == THREADS
    assert all(expected == seen for expected, seen in counts)
    assert tracker._open == {}


async def test_one_decorator_shared_by_500_tasks(async_engine: AsyncEngine) -> None:
    tracker = sqla_doctor.track(mode="collect")

    @tracker
    async def handler(statements: int) -> UnitOfWork | None:
        unit = sqla_doctor.current_unit()
        async with async_engine.connect() as connection:
            for _ in range(statements):
                await connection.execute(text("SELECT 1"))
                await asyncio.sleep(0)
        assert sqla_doctor.current_unit() is unit
        return unit

    wanted = [1 + i % 3 for i in range(TASKS)]
    units = await asyncio.gather(*(handler(n) for n in wanted))
    assert all(u is not None for u in units)
    assert [u.query_count for u in units if u is not None] == wanted
    assert len({id(u) for u in units}) == TASKS
    assert sqla_doctor.current_unit() is None
    assert tracker._open == {}


async def test_current_unit_is_the_innermost_and_shared_with_child_tasks() -> None:
    assert sqla_doctor.current_unit() is None
    async with sqla_doctor.track(mode="collect") as outer:
        assert sqla_doctor.current_unit() is outer
        with sqla_doctor.track(mode="collect") as inner:
            assert sqla_doctor.current_unit() is inner
        assert sqla_doctor.current_unit() is outer

        async def child() -> UnitOfWork | None:
            return sqla_doctor.current_unit()

        assert await asyncio.create_task(child()) is outer
        assert await asyncio.to_thread(sqla_doctor.current_unit) is outer
    assert sqla_doctor.current_unit() is None
