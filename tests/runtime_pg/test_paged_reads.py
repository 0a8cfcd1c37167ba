"""SQD252 on PostgreSQL: a page walk or chunked lookup is told apart by its bound values,
which psycopg names (%(param_1)s) and asyncpg numbers ($2), each with a cast."""

from __future__ import annotations

from sqlalchemy import Engine, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor

from .models import Account

ACCOUNTS = 5 + 300


def add_accounts(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(insert(Account), [{"name": "a", "balance": 1} for _ in range(300)])


def test_a_keyset_page_walk_is_silent_and_a_row_walk_reported(pg_engine: Engine) -> None:
    add_accounts(pg_engine)
    for page_size, reported in ((60, False), (1, True)):
        with sqla_doctor.track(mode="collect") as uow, Session(pg_engine) as session:
            seen, last_id = 0, 0
            while page := session.scalars(
                select(Account.id).where(Account.id > last_id).order_by(Account.id).limit(page_size)
            ).all():
                seen, last_id = seen + len(page), page[-1]
        assert seen == ACCOUNTS
        assert bool(uow.findings) is reported


async def test_async_chunked_lookups_are_silent(
    pg_engine: Engine, pg_async_engine: AsyncEngine
) -> None:
    add_accounts(pg_engine)
    ids = list(range(1, ACCOUNTS + 1))
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(pg_async_engine) as session:
        found = 0
        for start in range(0, ACCOUNTS, 50):
            chunk = select(Account).where(Account.id.in_(ids[start : start + 50]))
            found += len((await session.scalars(chunk)).all())
    assert found == ACCOUNTS
    assert not uow.findings
