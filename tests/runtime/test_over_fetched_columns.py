"""SQD258: every column of a wide entity loaded, few read (track-reads on)."""

from __future__ import annotations

import pickle

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import (
    ORMExecuteState,
    Session,
    defer,
    lazyload,
    load_only,
    with_loader_criteria,
)

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .read_models import TRACK_READS, Account, Order, create_and_seed, create_and_seed_async
from .support import line_of, of_code, one, relative

HERE = relative(__file__)
# Account.badges is lazy="selectin" in the mapping; its load needs only the primary key.
NO_BADGES = lazyload(Account.badges)


@pytest.fixture
def read_engine(engine: Engine) -> Engine:
    return create_and_seed(engine)


@pytest.fixture
async def read_async_engine(async_engine: AsyncEngine) -> AsyncEngine:
    return await create_and_seed_async(async_engine)


def test_few_columns_read_is_reported_with_load_only(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        accounts = s.scalars(select(Account).options(NO_BADGES)).all()  # line:query
        rows = [(a.name, a.email) for a in accounts]
    assert len(rows) == 4
    finding = one(uow.findings, "SQD258")
    assert finding.location.path == HERE
    assert finding.location.line == line_of("query")
    # Eleven columns and the column_property; `biography` is deferred by the mapping.
    assert finding.message == (
        f"`select(Account)` at {HERE}:{line_of('query')} loaded all 12 columns of 4 Account "
        "object(s), and only 2 were used (name, email) — add "
        ".options(load_only(Account.id, Account.name, Account.email)) to that query"
    )
    assert finding.fix_hint == ".options(load_only(Account.id, Account.name, Account.email))"
    assert finding.details["read_columns"] == ["name", "email"]


def test_one_column_read_is_one_that_was_used(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        emails = [a.email for a in s.scalars(select(Account).options(NO_BADGES))]
    assert len(emails) == 4
    assert "of 4 Account object(s), and only 1 was used (email) — add " in (
        one(uow.findings, "SQD258").message
    )


def test_the_foreign_key_of_a_relationship_read_counts_as_used(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        accounts = s.scalars(select(Account).options(NO_BADGES)).all()
        plans = {a.plan.title for a in accounts if a.plan is not None}
    assert plans == {"pro"}
    finding = one(uow.findings, "SQD258")
    assert finding.fix_hint == ".options(load_only(Account.id, Account.plan_id))"


def test_reads_through_a_hybrid_and_repr_count(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        accounts = s.scalars(select(Account).options(NO_BADGES)).all()
        labels = [a.label for a in accounts]  # name and email
        text = repr(accounts[0])  # name
    assert labels[0] == "account0 <a0@example.com>"
    assert text == "Account('account0')"
    assert one(uow.findings, "SQD258").details["read_columns"] == ["name", "email"]


def test_load_only_is_silent(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(load_only(Account.name), NO_BADGES)
        assert [a.name for a in s.scalars(statement)]
        statement = select(Account).options(defer(Account.notes), NO_BADGES)
        assert [a.name for a in s.scalars(statement)]
    assert not of_code(uow.findings, "SQD258")


def test_entities_with_few_columns_are_silent(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        assert [o.id for o in s.scalars(select(Order))]
    assert not of_code(uow.findings, "SQD258")


def test_reading_most_columns_is_silent(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        for account in s.scalars(select(Account).options(NO_BADGES)):
            assert account.label
            assert (account.city, account.country, account.timezone) == ("", "", "UTC")
    assert not of_code(uow.findings, "SQD258")


def test_columns_read_around_their_attributes_are_not_reported_unused(
    read_engine: Engine,
) -> None:
    # A serializer reading the instance dict: load_only() would empty its output.
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        rows = [
            {k: v for k, v in vars(a).items() if not k.startswith("_")}
            for a in s.scalars(select(Account).options(NO_BADGES))
        ]
    assert len(rows) == 4
    assert "email" in rows[0]
    assert not of_code(uow.findings, "SQD258")


def test_objects_pickled_into_a_cache_count_every_loaded_column_as_read(
    read_engine: Engine,
) -> None:
    # The cache hands the objects, with every column they loaded, to later requests:
    # load_only() would leave the cached copies without them.
    cache: dict[str, bytes] = {}
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        accounts = s.scalars(select(Account).options(NO_BADGES)).all()
        cache["accounts"] = pickle.dumps(accounts)
        dropdown = [(a.id, a.name) for a in accounts]
    assert len(dropdown) == 4
    assert all(a.email for a in pickle.loads(cache["accounts"]))
    assert not of_code(uow.findings, "SQD258")


def test_the_same_dropdown_without_the_cache_is_reported(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        accounts = s.scalars(select(Account).options(NO_BADGES)).all()
        dropdown = [(a.id, a.name) for a in accounts]
    assert len(dropdown) == 4
    assert one(uow.findings, "SQD258").details["read_columns"] == ["id", "name"]


RETURNING = sqla_doctor.track(mode="collect", config=TRACK_READS)


@RETURNING
def all_accounts(session: Session) -> list[Account]:
    accounts = session.scalars(select(Account).options(NO_BADGES))
    return sorted(accounts, key=lambda a: a.name)


@RETURNING
def account_names(session: Session) -> list[tuple[int, str]]:
    return [(a.id, a.name) for a in session.scalars(select(Account).options(NO_BADGES))]


def test_objects_a_decorated_function_returns_are_left_to_its_caller(
    read_engine: Engine,
) -> None:
    # The caller (a response model, a template) reads their columns after the unit.
    with Session(read_engine) as session:
        rows = [(a.name, a.email, a.country) for a in all_accounts(session)]
    assert len(rows) == 4
    assert RETURNING.last is not None
    assert not of_code(RETURNING.last.findings, "SQD258")


def test_objects_the_decorated_function_keeps_to_itself_are_judged(read_engine: Engine) -> None:
    with Session(read_engine) as session:
        assert len(account_names(session)) == 4
    assert RETURNING.last is not None
    assert one(RETURNING.last.findings, "SQD258").details["read_columns"] == ["id", "name"]


def test_columns_read_on_any_object_of_the_query_count(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        accounts = s.scalars(select(Account).options(NO_BADGES)).all()
        assert accounts[0].label
        assert (accounts[1].city, accounts[2].country, accounts[3].timezone) == ("", "", "UTC")
    assert not of_code(uow.findings, "SQD258")


def test_thresholds_come_from_the_configuration(read_engine: Engine) -> None:
    config = RuntimeConfig(track_reads=True, over_fetch_min_columns=20)
    with sqla_doctor.track(mode="collect", config=config) as uow, Session(read_engine) as s:
        assert [a.name for a in s.scalars(select(Account).options(NO_BADGES))]
    assert not of_code(uow.findings, "SQD258")


def test_without_track_reads_nothing_is_reported(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(read_engine) as s:
        assert [a.name for a in s.scalars(select(Account).options(NO_BADGES))]
    assert not of_code(uow.findings, "SQD258")


async def test_async_few_columns_read_is_reported(read_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        AsyncSession(read_async_engine) as session,
    ):
        accounts = (await session.scalars(select(Account).options(NO_BADGES))).all()  # line:async
        assert [a.name for a in accounts]
    finding = one(uow.findings, "SQD258")
    assert finding.location.line == line_of("async")
    assert finding.fix_hint == ".options(load_only(Account.id, Account.name))"


async def test_async_load_only_is_silent(read_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        AsyncSession(read_async_engine) as session,
    ):
        statement = select(Account).options(load_only(Account.name), NO_BADGES)
        assert [a.name for a in (await session.scalars(statement)).all()]
    assert not of_code(uow.findings, "SQD258")


def test_a_one_row_lookup_is_silent(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        account = s.get(Account, 1, options=[NO_BADGES])
        assert account is not None
        assert account.name
        first = s.scalars(select(Account).options(NO_BADGES).where(Account.id == 2)).first()
        assert first is not None
        assert first.name
    assert not of_code(uow.findings, "SQD258")


def test_two_objects_are_silent(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(NO_BADGES).order_by(Account.id).limit(2)
        assert [a.name for a in s.scalars(statement)]
    assert not of_code(uow.findings, "SQD258")


def test_three_objects_are_reported(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(NO_BADGES).order_by(Account.id).limit(3)
        assert [a.name for a in s.scalars(statement)]  # line:three
    finding = one(uow.findings, "SQD258")
    assert finding.location.line == line_of("three")
    assert finding.details["objects"] == 3


def test_a_lookup_repeated_in_a_loop_adds_up(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        for key in (1, 2, 3):
            account = s.get(Account, key, options=[NO_BADGES])  # line:get
            assert account is not None
            assert account.name
    finding = one(uow.findings, "SQD258")
    assert finding.location.line == line_of("get")
    assert finding.details["objects"] == 3


def tenant_criteria(state: ORMExecuteState) -> None:
    """A multi-tenant listener: every SELECT gets the tenant's criteria (a copy of it)."""
    if state.is_select and not state.is_column_load and not state.is_relationship_load:
        state.statement = state.statement.options(with_loader_criteria(Account, Account.id > 0))


def test_a_query_another_listener_copies_inline_is_still_judged(read_engine: Engine) -> None:
    """The statement written inline is gone once the listener replaced it by its copy."""
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        event.listen(s, "do_orm_execute", tenant_criteria)
        rows = [(a.name, a.email) for a in s.scalars(select(Account).options(NO_BADGES))]
    assert len(rows) == 4
    assert "only 2 were used (name, email)" in one(uow.findings, "SQD258").message
