"""SQD351: a new object's primary key read before the flush that assigns it."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy import Column, Engine, Integer, String, Table, inspect
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    MappedAsDataclass,
    Session,
    mapped_column,
    registry,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.orm.attributes import InstrumentedAttribute

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .models import User
from .support import line_of, one, relative

TRACK_READS = RuntimeConfig(track_reads=True)


class DataclassBase(MappedAsDataclass, DeclarativeBase):
    pass


@dataclasses.dataclass
class Invoice:
    """Its constructor sets ``id = None``, as SQLModel's does."""

    number: str
    id: int | None = None


imperative = registry(metadata=DataclassBase.metadata)
imperative.map_imperatively(
    Invoice,
    Table(
        "invoices",
        imperative.metadata,
        Column("id", Integer, primary_key=True),
        Column("number", String(20)),
    ),
)


class Receipt(DataclassBase):
    """The constructor leaves ``id`` unset: a read fires ``init_scalar``."""

    __tablename__ = "receipts"

    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    number: Mapped[str] = mapped_column(String(20), default="")


@pytest.fixture
def dataclass_engine(engine: Engine) -> Engine:
    DataclassBase.metadata.create_all(engine)
    return engine


def test_reading_the_id_of_an_added_object_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)  # line:add
        payload = {"id": user.id}  # line:read
        session.commit()
    assert payload == {"id": None}, "the pitfall: the id is None"
    finding = one(uow.findings, "SQD351")
    assert finding.location.path == relative(__file__)
    assert finding.location.line == line_of("read")
    assert finding.message == (
        "User.id read on a pending User before any flush — it is None until the INSERT; call "
        "session.flush() before reading it"
    )
    assert [r.location.line for r in finding.related] == [line_of("add")]


def test_flush_first_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        session.flush()
        assert user.id is not None
        session.commit()
    assert not uow.findings


def test_reading_the_id_of_a_transient_object_is_not_this_pitfall(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        assert User(name="ada").id is None
    assert not uow.findings


def test_repr_of_a_pending_object_is_ignored(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        assert repr(user) == "User(id=None, name='ada')"
        session.commit()
    assert not uow.findings


def response_for(user: User) -> dict[str, int | None]:
    user_id = user.id  # line:raising-read
    pytest.fail(f"not reached: {user_id}")


def test_raise_mode_fails_at_the_read(engine: Engine) -> None:
    """In raise mode the value is wrong right now: the exception comes from the read."""
    with Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        with pytest.raises(sqla_doctor.PitfallError) as raised, sqla_doctor.track(mode="raise"):
            response_for(user)
    assert raised.value.findings[0].location.line == line_of("raising-read")
    assert any(entry.lineno + 1 == line_of("raising-read") for entry in raised.traceback)


async def test_async_read_before_flush_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = User(name="ada")
        session.add(user)
        assert user.id is None  # line:async-read
        await session.commit()
    assert one(uow.findings, "SQD351").location.line == line_of("async-read")


class OrderRepository:
    """The repository shape: the session is an attribute, the flush is awaited."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def create(self, name: str) -> int | None:
        user = User(name=name)
        self.session.add(user)
        return user.id  # line:repo-read


async def test_async_fix_awaits_the_flush_of_the_session_as_the_code_names_it(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        assert await OrderRepository(session).create("ada") is None
        await session.commit()
    finding = one(uow.findings, "SQD351")
    assert finding.location.line == line_of("repo-read")
    assert finding.message.endswith("call await self.session.flush() before reading it")
    assert finding.fix_hint == "await self.session.flush()"


async def test_async_flush_first_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = User(name="ada")
        session.add(user)
        await session.flush()
        assert user.id is not None
        await session.commit()
    assert not uow.findings


def test_reading_an_id_the_constructor_set_to_none_is_reported(dataclass_engine: Engine) -> None:
    """SQLModel's ``Field(default=None, primary_key=True)`` and a dataclass's ``id = None``
    (classic mapping) put None in the object: its read fires no event, the read tracker
    sees it, switched on for that class's primary key alone."""
    with sqla_doctor.track(mode="collect") as uow, Session(dataclass_engine) as session:
        invoice = Invoice(number="A-1")
        session.add(invoice)  # line:dataclass-add
        url = f"/invoices/{invoice.id}"  # line:dataclass-read
        switched = {
            key
            for key, descriptor in inspect(Invoice).all_orm_descriptors.items()
            if type(descriptor) is not InstrumentedAttribute
        }
        session.commit()
    assert url == "/invoices/None", "the pitfall"
    finding = one(uow.findings, "SQD351")
    assert finding.location.line == line_of("dataclass-read")
    assert finding.message.startswith("Invoice.id read on a pending Invoice before any flush")
    assert [r.location.line for r in finding.related] == [line_of("dataclass-add")]
    assert switched == {"id"}, "the other attributes' reads are left alone while it is new"


def test_track_reads_off_leaves_the_id_set_to_none_unseen(dataclass_engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect", config=RuntimeConfig(track_reads=False)) as uow,
        Session(dataclass_engine) as session,
    ):
        invoice = Invoice(number="A-1")
        session.add(invoice)
        assert invoice.id is None
        session.commit()
    assert not uow.findings
    assert type(inspect(Invoice).all_orm_descriptors["id"]) is InstrumentedAttribute


def test_an_id_set_to_none_read_after_flush_is_the_silent_twin(dataclass_engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        Session(dataclass_engine) as session,
    ):
        invoice = Invoice(number="A-1")
        session.add(invoice)
        session.flush()
        assert invoice.id is not None
        session.commit()
        assert invoice.id is not None
    assert not uow.findings


def test_an_id_set_to_none_then_to_a_value_is_not_reported(dataclass_engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        Session(dataclass_engine) as session,
    ):
        invoice = Invoice(number="A-1")
        session.add(invoice)
        invoice.id = 42
        assert invoice.id == 42
        session.commit()
    assert not uow.findings


def new_invoice_id(session: Session) -> int | None:
    invoice = Invoice(number="A-1")
    session.add(invoice)
    return invoice.id  # line:dataclass-raise


def test_raise_mode_fails_at_the_read_of_an_id_set_to_none(dataclass_engine: Engine) -> None:
    with (
        Session(dataclass_engine) as session,
        sqla_doctor.track(mode="raise", config=TRACK_READS),
        pytest.raises(sqla_doctor.PitfallError) as raised,
    ):
        new_invoice_id(session)
    assert raised.value.findings[0].location.line == line_of("dataclass-raise")


def test_a_dataclass_repr_of_a_pending_object_is_ignored(dataclass_engine: Engine) -> None:
    """The ``__repr__`` that ``MappedAsDataclass`` generates is not the program's own: the
    repr() check must look past the user's line to find it (``print(receipt)``, logging)."""
    with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        Session(dataclass_engine) as session,
    ):
        receipt, invoice = Receipt(number="R-1"), Invoice(number="A-1")
        session.add_all([receipt, invoice])
        shown = f"{receipt!r} {invoice}"
        session.commit()
    assert shown == "Receipt(id=None, number='R-1') Invoice(number='A-1', id=None)"
    assert not uow.findings


# Flask-SQLAlchemy's db.session, a worker's db_session: a module-level scoped_session.
db_session = scoped_session(sessionmaker())


def test_an_object_added_through_a_scoped_session_names_its_flush(engine: Engine) -> None:
    db_session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        try:
            user = User(name="ada")
            db_session.add(user)
            payload = {"id": user.id}
            db_session.commit()
        finally:
            db_session.remove()
    assert payload == {"id": None}
    finding = one(uow.findings, "SQD351")
    assert finding.message.endswith("call db_session.flush() before reading it")
    assert finding.fix_hint == "db_session.flush()"


def test_a_scoped_session_flushed_first_is_the_silent_twin(engine: Engine) -> None:
    db_session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        try:
            user = User(name="ada")
            db_session.add(user)
            db_session.flush()
            assert user.id is not None
            db_session.commit()
        finally:
            db_session.remove()
    assert not uow.findings
