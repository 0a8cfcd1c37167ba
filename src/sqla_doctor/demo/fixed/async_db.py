"""The async half of the app (FastAPI-style). Not imported by the sync demo run."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import selectinload

from .models import User

async_engine = create_async_engine(
    "postgresql+asyncpg://bookstore@db.internal/bookstore", pool_pre_ping=True
)
AsyncSessionLocal = async_sessionmaker(async_engine, expire_on_commit=False)


async def user_order_totals() -> dict[str, float]:
    async with AsyncSessionLocal() as session:
        stmt = select(User).options(selectinload(User.orders))
        users = (await session.execute(stmt)).scalars().all()
        return {user.email: sum(order.total for order in user.orders) for user in users}


async def shutdown() -> None:
    await async_engine.dispose()
