"""Models for read tracking (SQD257, SQD258): a wide entity, eager mappings, inheritance,
hybrids, deferred columns and a dataclass-mapped class."""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import Engine, ForeignKey, String, Text, func, select
from sqlalchemy.ext.asyncio import AsyncAttrs, AsyncEngine, AsyncSession
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    MappedAsDataclass,
    Session,
    column_property,
    mapped_column,
    relationship,
)

from sqla_doctor.config import RuntimeConfig


class ReadBase(AsyncAttrs, DeclarativeBase):
    pass


class Plan(ReadBase):
    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))


class Account(ReadBase):
    """Twelve columns (one deferred by the mapping, so eleven load), a hybrid, and
    relationships: one plain, one loaded by ``selectin`` in the mapping."""

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), doc="the account's name")
    email: Mapped[str] = mapped_column(String(100))
    phone: Mapped[str] = mapped_column(String(20), default="")
    street: Mapped[str] = mapped_column(String(100), default="")
    city: Mapped[str] = mapped_column(String(50), default="")
    country: Mapped[str] = mapped_column(String(50), default="")
    timezone: Mapped[str] = mapped_column(String(50), default="UTC")
    locale: Mapped[str] = mapped_column(String(10), default="en")
    notes: Mapped[str] = mapped_column(Text, default="")
    plan_id: Mapped[int | None] = mapped_column(ForeignKey("plans.id"))
    biography: Mapped[str] = mapped_column(Text, default="", deferred=True)

    plan: Mapped[Plan | None] = relationship()
    orders: Mapped[list[Order]] = relationship(back_populates="account")
    badges: Mapped[list[Badge]] = relationship(lazy="selectin")

    @hybrid_property
    def label(self) -> str:
        # Works on instances (str) and on the class (SQL concatenation).
        return self.name + " <" + self.email + ">"

    def __repr__(self) -> str:
        return f"Account({self.name!r})"


class Order(ReadBase):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[int] = mapped_column(default=0)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    account: Mapped[Account] = relationship(back_populates="orders")


class Badge(ReadBase):
    __tablename__ = "badges"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))


Account.order_count = column_property(
    select(func.count(Order.id)).where(Order.account_id == Account.id).scalar_subquery()
)


class Employee(ReadBase):
    """Joined-table inheritance: Engineer has a table of its own."""

    __tablename__ = "employees"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "employee",
    }


class Engineer(Employee):
    __tablename__ = "engineers"

    id: Mapped[int] = mapped_column(ForeignKey("employees.id"), primary_key=True)
    language: Mapped[str] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "engineer"}


class Vehicle(ReadBase):
    """Single-table inheritance: Car's column is in the same table."""

    __tablename__ = "vehicles"

    id: Mapped[int] = mapped_column(primary_key=True)
    wheels: Mapped[int] = mapped_column(default=4)
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "vehicle",
    }


class Car(Vehicle):
    seats: Mapped[int | None] = mapped_column(default=None)
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "car"}


class DataBase(MappedAsDataclass, DeclarativeBase):
    pass


class Note(DataBase):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    text: Mapped[str] = mapped_column(String(100))
    tags: Mapped[list[Tag]] = relationship(default_factory=list, repr=False)


class Tag(DataBase):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    note_id: Mapped[int | None] = mapped_column(ForeignKey("notes.id"), default=None)


ACCOUNTS = 4  # with 3 orders and 2 badges each


def seed_reads() -> list[object]:
    plan = Plan(title="pro")
    accounts: list[object] = [
        Account(
            name=f"account{i}",
            email=f"a{i}@example.com",
            plan=plan,
            orders=[Order(total=j) for j in range(3)],
            badges=[Badge() for _ in range(2)],
        )
        for i in range(ACCOUNTS)
    ]
    return [
        *accounts,
        Engineer(name="ada", language="python"),
        Employee(name="bob"),
        Car(seats=5),
        Vehicle(wheels=2),
    ]


def seed_notes() -> list[object]:
    return [Note(text="hello", tags=[Tag(), Tag()])]


TRACK_READS = RuntimeConfig(track_reads=True)


def create_and_seed(engine: Engine) -> Engine:
    ReadBase.metadata.create_all(engine)
    DataBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(seed_reads())
        session.add_all(seed_notes())
        session.commit()
    return engine


async def create_and_seed_async(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as connection:
        await connection.run_sync(ReadBase.metadata.create_all)
        await connection.run_sync(DataBase.metadata.create_all)
    async with AsyncSession(engine) as session:
        session.add_all(seed_reads())
        session.add_all(seed_notes())
        await session.commit()
    return engine
