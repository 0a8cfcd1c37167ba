"""Relationships no loader option loads (write_only, dynamic), beside an ordinary one."""

from __future__ import annotations

from sqlalchemy import Column, Engine, ForeignKey, Table
from sqlalchemy.orm import (
    DeclarativeBase,
    DynamicMapped,
    Mapped,
    Session,
    WriteOnlyMapped,
    mapped_column,
    relationship,
)

LEDGERS = 6


class CollectionBase(DeclarativeBase):
    pass


watching = Table(
    "watching",
    CollectionBase.metadata,
    Column("ledger_id", ForeignKey("ledgers.id"), primary_key=True),
    Column("watcher_id", ForeignKey("watchers.id"), primary_key=True),
)


class Ledger(CollectionBase):
    __tablename__ = "ledgers"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Too many to load: queried with entries.select().
    entries: WriteOnlyMapped[Posting] = relationship()
    # The legacy spelling: changes.all(), changes.count().
    changes: DynamicMapped[Change] = relationship()
    # Through an association table.
    watchers: WriteOnlyMapped[Watcher] = relationship(secondary=watching)
    lines: Mapped[list[Line]] = relationship()


class Posting(CollectionBase):
    __tablename__ = "postings"

    id: Mapped[int] = mapped_column(primary_key=True)
    ledger_id: Mapped[int] = mapped_column(ForeignKey("ledgers.id"))


class Change(CollectionBase):
    __tablename__ = "changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    ledger_id: Mapped[int] = mapped_column(ForeignKey("ledgers.id"))


class Watcher(CollectionBase):
    __tablename__ = "watchers"

    id: Mapped[int] = mapped_column(primary_key=True)


class Line(CollectionBase):
    __tablename__ = "lines"

    id: Mapped[int] = mapped_column(primary_key=True)
    ledger_id: Mapped[int] = mapped_column(ForeignKey("ledgers.id"))


def create_and_seed_ledgers(engine: Engine) -> None:
    """Ledgers with two postings, two changes, one watcher and one line each."""
    CollectionBase.metadata.create_all(engine)
    with Session(engine) as session:
        for number in range(1, LEDGERS + 1):
            session.add(Ledger(id=number))
            session.add_all([Posting(ledger_id=number), Posting(ledger_id=number)])
            session.add_all([Change(ledger_id=number), Change(ledger_id=number)])
            session.add(Line(ledger_id=number))
        session.flush()
        for number in range(1, LEDGERS + 1):
            session.get_one(Ledger, number).watchers.add(Watcher(id=number))
        session.commit()
