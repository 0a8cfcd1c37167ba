"""Models with ORM listeners, validators and cascades, for the bulk-statement detectors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column, relationship, validates


class BulkBase(AsyncAttrs, DeclarativeBase):
    pass


class Timestamped:
    updated_at: Mapped[datetime | None] = mapped_column(default=None)


class Account(Timestamped, BulkBase):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(50))
    active: Mapped[bool] = mapped_column(default=True)
    entries: Mapped[list[Entry]] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )

    @validates("email")  # line:validator
    def normalize_email(self, key: str, value: str) -> str:
        return value.lower()


class Entry(BulkBase):
    __tablename__ = "entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    account: Mapped[Account] = relationship(back_populates="entries")


class Label(BulkBase):
    """No listener, no validator, no cascade: bulk statements skip nothing here."""

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(50))


@event.listens_for(Timestamped, "before_update", propagate=True)  # line:touch
def touch(mapper: Mapper[Account], connection: Connection, target: Timestamped) -> None:
    target.updated_at = datetime(2024, 1, 1)


@event.listens_for(Account, "after_delete")
def audit_delete(mapper: Mapper[Account], connection: Connection, target: Account) -> None:
    pass


ACCOUNTS = 4


def seed_accounts() -> list[object]:
    accounts: list[object] = [
        Account(email=f"a{i}@example.com", name=f"account{i}", entries=[Entry(), Entry()])
        for i in range(ACCOUNTS)
    ]
    return [*accounts, *(Label(text=f"label{i}") for i in range(3))]
