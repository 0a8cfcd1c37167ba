"""The read tracker behind SQD257 and SQD258: what it switches, what it sees, and that the
program cannot tell (track-reads on), nor anything changes with it off."""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import pickle
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Engine, ForeignKey, String, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    defer,
    load_only,
    mapped_column,
    relationship,
    selectinload,
    undefer,
)
from sqlalchemy.orm.attributes import InstrumentedAttribute

import sqla_doctor
from sqla_doctor.config import ConfigError, RuntimeConfig
from sqla_doctor.config import load as load_config
from sqla_doctor.runtime import reads
from sqla_doctor.runtime.unit_of_work import process

from .read_models import (
    TRACK_READS,
    Account,
    Car,
    Employee,
    Engineer,
    Note,
    Order,
    ReadBase,
    Tag,
    Vehicle,
    create_and_seed,
    create_and_seed_async,
)
from .support import of_code

MODELS = (Account, Order, Employee, Engineer, Vehicle, Car, Note, Tag)


@pytest.fixture
def read_engine(engine: Engine) -> Engine:
    return create_and_seed(engine)


@pytest.fixture
async def read_async_engine(async_engine: AsyncEngine) -> AsyncEngine:
    return await create_and_seed_async(async_engine)


@pytest.fixture
def tracking() -> Iterator[None]:
    """Tracking on, as a detector turns it on, for the models of this module."""
    assert reads.enable()
    for model in MODELS:
        assert reads.cover(inspect(model))
    yield
    sqla_doctor.uninstall()


def descriptor_classes(*models: type[Any]) -> set[type[Any]]:
    return {
        type(descriptor)
        for model in models
        for descriptor in inspect(model).all_orm_descriptors.values()
        if isinstance(descriptor, InstrumentedAttribute)
    }


def watched(obj: object) -> reads.Watch:
    watch = reads.watch(obj)
    assert watch is not None
    return watch


# -- off: nothing changes ------------------------------------------------------------------


def test_unset_by_default_and_set_from_the_toml_key(tmp_path: Path) -> None:
    # Unset, the entry point decides: off for install() and track(), on under run.
    assert RuntimeConfig().track_reads is None
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.sqla-doctor.runtime]\ntrack-reads = true\n")
    assert load_config(pyproject).runtime.track_reads is True
    pyproject.write_text("[tool.sqla-doctor.runtime]\ntrack-reads = false\n")
    assert load_config(pyproject).runtime.track_reads is False
    pyproject.write_text("[tool.sqla-doctor.runtime]\ntrack-reads = 1\n")
    with pytest.raises(ConfigError, match="track-reads must be true or false"):
        load_config(pyproject)


def test_with_track_reads_off_no_descriptor_is_switched(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(read_engine) as session:
        statement = select(Account).options(selectinload(Account.orders))
        assert [a.name for a in session.scalars(statement)]
    assert descriptor_classes(*MODELS) == {InstrumentedAttribute}
    assert not reads.healthy()
    assert not {f.code for f in uow.findings} & {"SQD257", "SQD258"}


# -- on: what is switched, and back --------------------------------------------------------


def test_a_tracked_query_switches_its_mapper_and_uninstall_switches_back(
    read_engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS), Session(read_engine) as s:
        assert s.scalars(select(Account)).all()
        assert descriptor_classes(Account) == {reads.ReadTracked}
        # Hybrids and other descriptors are left alone.
        assert type(inspect(Account).all_orm_descriptors["label"]).__name__ == "hybrid_property"
    sqla_doctor.uninstall()
    assert descriptor_classes(*MODELS) == {InstrumentedAttribute}
    assert reads._swapped == {}
    assert reads._watched == {}


def test_class_level_expressions_are_unchanged(tracking: None, read_engine: Engine) -> None:
    name = inspect(Account).all_orm_descriptors["name"]
    assert type(name) is reads.ReadTracked
    assert Account.name is name
    assert Account.name.__doc__ == "the account's name"
    statement = (
        select(Account.name, Account.label)
        .where(Account.name == "account1", Account.orders.any(Order.total > 1))
        .order_by(Account.id)
    )
    assert "EXISTS (SELECT 1" in str(statement)
    with Session(read_engine) as session:
        assert session.execute(statement).all() == [("account1", "account1 <a1@example.com>")]
        assert session.scalars(select(Account).where(Account.label.like("account2%"))).one()
    sqla_doctor.uninstall()
    # The same statement built again without tracking compiles to the same SQL.
    assert str(statement) == str(
        select(Account.name, Account.label)
        .where(Account.name == "account1", Account.orders.any(Order.total > 1))
        .order_by(Account.id)
    )


def test_reads_of_an_instance_are_noted_and_values_unchanged(
    tracking: None, read_engine: Engine
) -> None:
    with Session(read_engine) as session:
        account = session.scalars(select(Account).where(Account.id == 1)).one()
        watch = watched(account)
        assert account.label == "account0 <a0@example.com>"  # a hybrid reads two columns
        assert account.order_count == 3  # a column_property
        assert account.biography == ""  # deferred: loaded on first read
        assert [o.total for o in account.orders] == [0, 1, 2]
        assert account.plan is not None
        assert watch.keys == {"name", "email", "order_count", "biography", "orders", "plan"}
        # Writes are not reads.
        account.notes = "x"
        assert "notes" not in watch.keys
        # Objects nobody watches are not tracked.
        assert account.orders[0] is not None
        assert reads._watched.keys() == {id(account)}


def test_deferred_and_undeferred_columns(tracking: None, read_engine: Engine) -> None:
    with Session(read_engine) as session:
        statement = select(Account).options(undefer(Account.biography), defer(Account.notes))
        account = session.scalars(statement).first()
        assert account is not None
        watch = watched(account)
        assert "biography" in inspect(account).dict
        assert account.biography == ""
        assert account.notes == ""
        assert watch.keys == {"biography", "notes"}
        partial = session.scalars(select(Order).options(load_only(Order.total))).first()
        assert partial is not None
        assert partial.account_id == 1


def test_joined_table_inheritance(tracking: None, read_engine: Engine) -> None:
    assert descriptor_classes(Employee, Engineer) == {reads.ReadTracked}
    with Session(read_engine) as session:
        people = session.scalars(select(Employee).order_by(Employee.id)).all()
        engineer = next(p for p in people if isinstance(p, Engineer))
        watch = watched(engineer)
        assert (engineer.name, engineer.language, engineer.kind) == ("ada", "python", "engineer")
        assert watch.keys == {"name", "language", "kind"}
        assert session.scalars(select(Engineer.name).where(Engineer.language == "python")).one()


def test_single_table_inheritance(tracking: None, read_engine: Engine) -> None:
    assert descriptor_classes(Vehicle, Car) == {reads.ReadTracked}
    with Session(read_engine) as session:
        car = session.scalars(select(Car)).one()
        watch = watched(car)
        assert (car.wheels, car.seats) == (4, 5)
        assert watch.keys == {"wheels", "seats"}
        assert session.scalars(select(Vehicle).where(Vehicle.wheels == 2)).one().wheels == 2


def test_dataclass_mapped_classes(tracking: None, read_engine: Engine) -> None:
    with Session(read_engine) as session:
        note = session.scalars(select(Note)).one()
        watch = watched(note)
        assert repr(note) == "Note(id=1, text='hello')"  # tags has repr=False
        assert watch.keys == {"id", "text"}
        assert note != Note(text="hello")  # dataclass __eq__ reads the fields (id differs)
        assert dataclasses.asdict(note)["text"] == "hello"
        assert len(note.tags) == 2
        fresh = Note(text="new")
        assert fresh.text == "new"
        session.add(fresh)
        session.flush()
        assert fresh.id == 2


def test_repr_pickle_and_copy(tracking: None, read_engine: Engine) -> None:
    with Session(read_engine) as session:
        account = session.scalars(select(Account).where(Account.id == 2)).one()
        watch = watched(account)
        assert repr(account) == "Account('account1')"
        loaded = pickle.loads(pickle.dumps(account))
        assert loaded.name == "account1"
        assert session.merge(loaded) is account
        shallow = copy.copy(account)
        assert shallow.email == "a1@example.com"
        # The copy shares the original's __dict__ contents, not its identity.
        assert watch.keys == {"name"}


async def test_async_awaitable_attrs(tracking: None, read_async_engine: AsyncEngine) -> None:
    async with AsyncSession(read_async_engine) as session:
        account = (await session.scalars(select(Account).where(Account.id == 1))).one()
        watch = watched(account)
        orders = await account.awaitable_attrs.orders
        assert len(orders) == 3
        assert await account.awaitable_attrs.name == "account0"
        assert watch.keys == {"orders", "name"}


def test_mappers_configured_after_tracking_started_are_covered() -> None:
    assert reads.enable()

    class LateBase(DeclarativeBase):
        pass

    class Shelf(LateBase):
        __tablename__ = "shelves"
        id: Mapped[int] = mapped_column(primary_key=True)

    class Book(LateBase):
        __tablename__ = "late_books"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str] = mapped_column(String(20))
        shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id"))
        shelf: Mapped[Shelf] = relationship(backref="books")

    sqla_doctor.track(config=TRACK_READS)  # registers the listeners
    with sqla_doctor.track(config=TRACK_READS):
        LateBase.registry.configure()
    # Shelf.books, the backref, was added to Shelf when Book was configured.
    assert type(Shelf.__dict__["books"]) is reads.ReadTracked
    assert descriptor_classes(Book, Shelf) == {reads.ReadTracked}
    sqla_doctor.uninstall()
    assert descriptor_classes(Book, Shelf) == {InstrumentedAttribute}
    LateBase.registry.dispose()


# -- memory and failures -------------------------------------------------------------------


def test_tracked_objects_are_not_kept_alive(tracking: None, read_engine: Engine) -> None:
    with Session(read_engine) as session:
        account = session.scalars(select(Account).where(Account.id == 3)).one()
        watch = watched(account)
        assert account.name == "account2"
        ref = weakref.ref(account)
        session.expunge_all()
        del account
        gc.collect()
        assert ref() is None
        assert watch() is None
        # What was read stays known; the address is free for a new object.
        assert watch.keys == {"name"}
        assert watch.oid not in reads._watched


def test_the_detectors_cap_what_they_track(
    read_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqla_doctor.runtime import followed_queries

    # Each of SQD257 and SQD258 watches at most this many objects.
    monkeypatch.setattr(followed_queries, "MAX_TRACKED", 2)
    with sqla_doctor.track(mode="collect", config=TRACK_READS), Session(read_engine) as s:
        accounts = s.scalars(select(Account).options(selectinload(Account.orders))).all()
        assert len(accounts) == 4
        assert len(reads._watched) == 2


def test_a_failing_tracker_switches_everything_back_and_stays_quiet(
    read_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(set[str]):
        def add(self, key: str) -> None:
            raise RuntimeError("boom")

    try:
        with (
            sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
            Session(read_engine) as s,
        ):
            statement = select(Account).options(selectinload(Account.orders))
            accounts = s.scalars(statement).all()
            for account in accounts:
                watch = reads._watched[id(account)]
                watch.keys = Broken()
            with caplog.at_level(logging.WARNING, logger="sqla_doctor"):
                # The program gets its values; the tracker gives up.
                assert [a.name for a in accounts] == [f"account{i}" for i in range(4)]
            assert descriptor_classes(*MODELS) == {InstrumentedAttribute}
            assert not reads.healthy()
            assert not reads.enable()
        # It reports nothing rather than reads it could not see.
        assert not of_code(uow.findings, "SQD257")
        assert not of_code(uow.findings, "SQD258")
        assert len([r for r in caplog.records if "read tracker failed" in r.message]) == 1
    finally:
        process.internal_errors = 0
    sqla_doctor.uninstall()
    assert reads.enable()


def test_runs_on_this_sqlalchemy() -> None:
    # The suite runs on SQLAlchemy 2.0 and 2.1; this names the one that ran.
    assert sqlalchemy.__version__.startswith(("2.0", "2.1"))
    assert ReadBase.registry.mappers
