"""The async half of the app (FastAPI-style). Not imported by the sync demo run."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from .models import User

async_engine = create_async_engine("postgresql://bookstore@db.internal/bookstore")
AsyncSessionLocal = async_sessionmaker(async_engine)


async def user_order_totals() -> dict[str, float]:
    async with AsyncSessionLocal() as session:
        users = (await session.execute(select(User))).scalars().all()
        return {user.email: sum(order.total for order in user.orders) for user in users}
