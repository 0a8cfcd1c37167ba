"""A program whose statements carry a secret as bound parameters and rendered literals.

Run in-process by the tests (they set ``SECRET``) and as a script under ``sqla-doctor run``
(the secret comes from ``$SQLA_DOCTOR_TEST_SECRET``, so it is in no source file and in no
command line: whatever output shows it got it from the database traffic). Each scenario
is a pitfall the runtime doctor reports, with the secret where a careless report would
copy it from.
"""

from __future__ import annotations

import contextlib
import os

from sqlalchemy import Engine, ForeignKey, String, create_engine, literal, select, text
from sqlalchemy.exc import IntegrityError, PendingRollbackError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

SECRET = os.environ.get("SQLA_DOCTOR_TEST_SECRET", "")


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(80), unique=True)
    grants: Mapped[list[Grant]] = relationship(back_populates="account")


class Grant(Base):
    __tablename__ = "grants"
    id: Mapped[int] = mapped_column(primary_key=True)
    # The foreign key is the secret token: every lazy load binds it.
    account_token: Mapped[str] = mapped_column(ForeignKey("accounts.token"))
    account: Mapped[Account] = relationship(back_populates="grants")


def make_engine(url: str = "sqlite://") -> Engine:
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Account(token=f"{SECRET}-{i}", grants=[Grant(), Grant()]) for i in range(4))
        session.commit()
    return engine


def n_plus_one(engine: Engine) -> None:
    """SQD251: one lazy load per account, each bound to the account's secret token."""
    with Session(engine) as session:
        for account in session.scalars(select(Account).where(Account.token.startswith(SECRET))):
            len(account.grants)


def repeated(engine: Engine) -> None:
    """SQD252 with identical parameters: the secret, six times."""
    with Session(engine) as session:
        for _ in range(6):
            session.scalars(select(Account).where(Account.token == f"{SECRET}-0")).all()


def repeated_literal(engine: Engine) -> None:
    """SQD252 on SQL that holds the secret itself: literal_execute renders it inline."""
    with Session(engine) as session:
        for _ in range(6):
            value = literal(f"{SECRET}-1", literal_execute=True)
            session.scalars(select(Account).where(Account.token == value)).all()


def repeated_text(engine: Engine) -> None:
    """SQD252 through Core: text() with a bound secret."""
    with engine.connect() as connection:
        for _ in range(6):
            statement = text("SELECT id FROM accounts WHERE token = :token")
            connection.execute(statement, {"token": f"{SECRET}-2"}).all()


def failed_flush(engine: Engine) -> None:
    """SQD155: IntegrityError (whose message quotes the duplicated secret), no rollback."""
    with Session(engine) as session:
        session.add(Account(token=f"{SECRET}-0"))
        with contextlib.suppress(IntegrityError):
            session.commit()
        with contextlib.suppress(PendingRollbackError):
            session.scalars(select(Account).where(Account.token == f"{SECRET}-3")).all()
        session.rollback()


def pending_primary_key(engine: Engine) -> dict[str, object]:
    """SQD351: a pending object's id read before the flush; its other column is secret."""
    with Session(engine) as session:
        account = Account(token=f"{SECRET}-pending")
        session.add(account)
        payload: dict[str, object] = {"id": account.id}
        session.rollback()
        return payload


def forgotten_commit(engine: Engine) -> None:
    """SQD152: a flushed secret row thrown away by close()."""
    session = Session(engine)
    session.add(Account(token=f"{SECRET}-forgotten"))
    session.flush()
    session.close()


SCENARIOS = (
    n_plus_one,
    repeated,
    repeated_literal,
    repeated_text,
    failed_flush,
    pending_primary_key,
    forgotten_commit,
)
# What the scenarios must make the doctor report, or the test proves nothing.
EXPECTED_CODES = {"SQD152", "SQD155", "SQD251", "SQD252", "SQD351"}


def main(engine: Engine | None = None) -> None:
    engine = engine or make_engine()
    for scenario in SCENARIOS:
        scenario(engine)


if __name__ == "__main__":
    main()
