"""Each thread and each asyncio task is its own unit of work; shared ones stay consistent."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import Engine, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.runtime.unit_of_work import UnitOfWork

from .models import User
from .support import of_code


def test_threads_each_get_their_own_unit_of_work(engine: Engine) -> None:
    results: dict[int, UnitOfWork] = {}
    barrier = threading.Barrier(4)

    def work(statements: int) -> None:
        with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
            barrier.wait()
            for _ in range(statements):
                connection.execute(text("SELECT 1"))
        results[statements] = uow

    threads = [threading.Thread(target=work, args=(n,)) for n in (3, 5, 7, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {n: uow.query_count for n, uow in results.items()} == {3: 3, 5: 5, 7: 7, 9: 9}
    assert not of_code(results[3].findings, "SQD252")
    assert of_code(results[9].findings, "SQD252")


def test_statements_outside_the_tracking_thread_are_not_counted(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        thread = threading.Thread(target=lambda: Session(engine).close())
        other = threading.Thread(target=lambda: engine.connect().execute(text("SELECT 1")).close())
        thread.start(), other.start()
        thread.join(), other.join()
    assert uow.query_count == 0


async def test_asyncio_tasks_each_get_their_own_unit_of_work(async_engine: AsyncEngine) -> None:
    async def request(lazy_loads: bool) -> UnitOfWork:
        async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
            users = (await session.scalars(select(User))).all()
            for user in users:
                await asyncio.sleep(0)  # interleave with the other tasks
                if lazy_loads:
                    await user.awaitable_attrs.posts
        return uow

    units = await asyncio.gather(request(True), request(False), request(True), request(False))
    assert [bool(of_code(u.findings, "SQD251")) for u in units] == [True, False, True, False]
    assert [u.query_count for u in units] == [6, 1, 6, 1]


async def test_tasks_started_inside_a_unit_share_it(async_engine: AsyncEngine) -> None:
    async def one_query() -> None:
        async with AsyncSession(async_engine) as session:
            await session.execute(text("SELECT 1"))

    async with sqla_doctor.track(mode="collect") as uow:
        await asyncio.gather(*(one_query() for _ in range(6)))
    assert uow.query_count == 6


async def test_to_thread_carries_the_unit_of_work(engine: Engine) -> None:
    """asyncio.to_thread copies the context: the thread's statements count here."""

    def blocking() -> None:
        with engine.connect() as connection:
            for _ in range(3):
                connection.execute(text("SELECT 1"))

    async with sqla_doctor.track(mode="collect") as uow:
        await asyncio.gather(*(asyncio.to_thread(blocking) for _ in range(4)))
    assert uow.query_count == 12
