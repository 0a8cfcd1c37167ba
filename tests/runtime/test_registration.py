"""Registering the listeners, whatever state the program's mappers are in."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, configure_mappers, mapped_column

import sqla_doctor


def test_listeners_register_while_a_mapper_declared_later_waits_for_configuration(
    engine: Engine,
) -> None:
    """advanced-alchemy's unit suite hung in its first test under --sqla-doctor: the
    listeners' registration read a configured mapper's columns, which configures the
    registry's new mappers first, and the doctor's own mapper_configured listener waited
    for the lock its registration held. The watchdog only keeps a deadlock from hanging
    the run; the twin behaviour is that Invoice, configured later, is still watched."""

    class LedgerBase(DeclarativeBase):
        pass

    class Account(LedgerBase):
        __tablename__ = "accounts"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(50))

    configure_mappers()

    class Invoice(LedgerBase):
        """Declared once Account is configured: the registry has a new mapper again."""

        __tablename__ = "invoices"
        id: Mapped[int] = mapped_column(primary_key=True)
        account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))

    assert Account.__mapper__.configured
    assert not Invoice.__mapper__.configured
    LedgerBase.metadata.create_all(engine)
    found: list[str] = []

    def first_unit() -> None:
        with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
            invoice = Invoice(account_id=1)
            session.add(invoice)
            assert invoice.id is None
            session.rollback()
        found.extend(f.code for f in uow.findings)

    worker = threading.Thread(target=first_unit, daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "registering the listeners deadlocked"
    assert found == ["SQD351"]
