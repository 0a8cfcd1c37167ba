"""SQD257: relationships loaded eagerly that nothing read (track-reads on)."""

from __future__ import annotations

import gc
import pickle
from typing import Any

import pytest
from sqlalchemy import Engine, ForeignKey, String, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    ORMExecuteState,
    Session,
    joinedload,
    lazyload,
    mapped_column,
    relationship,
    selectinload,
    with_loader_criteria,
)
from sqlalchemy.orm.attributes import InstrumentedAttribute

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .read_models import TRACK_READS, Account, create_and_seed, create_and_seed_async
from .support import line_of, of_code, one, relative

HERE = relative(__file__)
# The mapping's lazy="selectin" of Account.badges is read or switched off where a test
# is about something else.
NO_BADGES = lazyload(Account.badges)


@pytest.fixture
def read_engine(engine: Engine) -> Engine:
    return create_and_seed(engine)


@pytest.fixture
async def read_async_engine(async_engine: AsyncEngine) -> AsyncEngine:
    return await create_and_seed_async(async_engine)


def serialize(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """A serializer of the kind frameworks have: it reads attributes by name."""
    out: dict[str, Any] = {}
    for field in fields:
        value = getattr(obj, field)
        out[field] = [serialize(v, ("id",)) for v in value] if isinstance(value, list) else value
    return out


def test_an_eager_load_pickled_into_a_cache_was_used(read_engine: Engine) -> None:
    # The cached copies carry their orders to whoever reads the cache later.
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        accounts = s.scalars(statement).all()
        cached = pickle.dumps(accounts)
        names = [account.name for account in accounts]
    assert len(names) == 4
    assert sum(len(a.orders) for a in pickle.loads(cached)) > 0
    assert not of_code(uow.findings, "SQD257")


RETURNING = sqla_doctor.track(mode="collect", config=TRACK_READS)


@RETURNING
def accounts_with_orders(session: Session) -> list[Account]:
    statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
    return list(session.scalars(statement))


@RETURNING
def names_of_accounts_with_orders(session: Session) -> list[str]:
    statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
    return [a.name for a in session.scalars(statement)]  # line:kept-query


def test_an_eager_load_a_decorated_function_returns_is_left_to_its_caller(
    read_engine: Engine,
) -> None:
    # An endpoint decorated with track() whose response model reads the orders after
    # the call: its unit ends before those reads.
    with Session(read_engine) as session:
        accounts = accounts_with_orders(session)
        orders = sum(len(a.orders) for a in accounts)
    assert orders > 0
    assert RETURNING.last is not None
    assert not of_code(RETURNING.last.findings, "SQD257")


def test_an_eager_load_the_decorated_function_never_read_nor_returned_is_reported(
    read_engine: Engine,
) -> None:
    with Session(read_engine) as session:
        assert len(names_of_accounts_with_orders(session)) == 4
    assert RETURNING.last is not None
    finding = one(RETURNING.last.findings, "SQD257")
    assert finding.location.line == line_of("kept-query")


def test_selectinload_never_read_is_reported_at_the_query(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        accounts = s.scalars(statement).all()  # line:query
        names = [account.name for account in accounts]
    assert names == ["account0", "account1", "account2", "account3"]
    finding = one(uow.findings, "SQD257")
    assert finding.location.path == HERE
    assert finding.location.line == line_of("query")
    assert finding.message == (
        f"`select(Account)` at {HERE}:{line_of('query')}: selectinload(Account.orders) "
        "loaded 12 Order object(s) for 4 Account object(s), and Account.orders was never "
        "read — drop the option"
    )
    assert finding.details["subject"] == "Account.orders"
    assert finding.details["children"] == 12
    assert finding.fix_hint == "remove selectinload(Account.orders)"


def test_read_for_one_parent_is_enough(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        accounts = s.scalars(statement).all()
        assert len(accounts[2].orders) == 3
    assert not of_code(uow.findings, "SQD257")


def test_objects_passed_to_a_serializer_that_reads_it_are_silent(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(selectinload(Account.orders))
        payload = [serialize(a, ("name", "orders", "badges")) for a in s.scalars(statement)]
    assert len(payload[0]["orders"]) == 3
    assert not of_code(uow.findings, "SQD257")


def test_without_track_reads_nothing_is_reported(read_engine: Engine) -> None:
    config = RuntimeConfig(track_reads=False)
    with sqla_doctor.track(mode="collect", config=config) as uow, Session(read_engine) as s:
        statement = select(Account).options(selectinload(Account.orders))
        assert [a.name for a in s.scalars(statement)]
    assert not of_code(uow.findings, "SQD257")
    assert not of_code(uow.findings, "SQD258")


def test_mapping_level_eager_load_suggests_lazyload(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        accounts = s.scalars(select(Account)).all()  # line:mapping
        assert accounts[0].email == "a0@example.com"
    finding = one(uow.findings, "SQD257")
    assert finding.location.line == line_of("mapping")
    assert finding.message.endswith(
        'Account.badges (lazy="selectin" in the mapping) loaded 8 Badge object(s) for 4 '
        "Account object(s), and Account.badges was never read — map it with "
        'lazy="select", or add .options(lazyload(Account.badges)) to this query'
    )


def test_lazyload_option_switches_the_mapping_off(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        accounts = s.scalars(select(Account).options(NO_BADGES)).all()
        assert accounts
    assert not of_code(uow.findings, "SQD257")


def test_joinedload_of_a_many_to_one_counts_distinct_targets(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(joinedload(Account.plan), NO_BADGES)
        accounts = s.scalars(statement).all()  # line:joined
        assert len(accounts) == 4
    finding = one(uow.findings, "SQD257")
    assert finding.location.line == line_of("joined")
    assert "joinedload(Account.plan) loaded 1 Plan object(s) for 4 Account object(s)" in (
        finding.message
    )


def _emails(engine: Engine) -> list[str]:
    with Session(engine) as session:
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        return [a.email for a in session.scalars(statement)]  # line:helper


def test_parents_gone_before_the_end_are_judged_on_their_reads(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow:
        assert len(_emails(read_engine)) == 4
    finding = one(uow.findings, "SQD257")
    assert finding.location.line == line_of("helper")
    # Nobody was left to count the orders of.
    assert "selectinload(Account.orders) loaded Order objects for 4 Account object(s)" in (
        finding.message
    )


def test_install_reports_once_the_session_objects_are_gone(read_engine: Engine) -> None:
    sqla_doctor.install(mode="collect", config=TRACK_READS)
    assert len(_emails(read_engine)) == 4
    gc.collect()
    # The next event looks at the sessions garbage collection reported.
    with Session(read_engine) as session:
        session.execute(select(1))
    found = of_code(sqla_doctor.collected(), "SQD257")
    assert [f.location.line for f in found] == [line_of("helper")]


def test_install_waits_while_the_objects_can_still_be_read(read_engine: Engine) -> None:
    sqla_doctor.install(mode="collect", config=TRACK_READS)
    with Session(read_engine, expire_on_commit=False) as session:
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        accounts = session.scalars(statement).all()
        session.commit()
    # Read after the session's transaction ended: a serializer after the request's commit.
    assert sum(len(a.orders) for a in accounts) == 12
    del accounts, session
    gc.collect()
    with Session(read_engine) as other:
        other.execute(select(1))
    assert not of_code(sqla_doctor.collected(), "SQD257")


def test_objects_still_alive_at_exit_are_judged(read_engine: Engine) -> None:
    # A script's module-level loop: its objects live until the interpreter exits.
    sqla_doctor.install(mode="collect", config=TRACK_READS)
    session = Session(read_engine)
    statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
    accounts = session.scalars(statement).all()  # line:alive-at-exit
    assert [a.email for a in accounts]
    session.close()
    sqla_doctor.runtime.shutdown()
    found = of_code(sqla_doctor.collected(), "SQD257")
    assert [f.location.line for f in found] == [line_of("alive-at-exit")]
    assert accounts  # still alive when shutdown() judged them


async def test_async_selectinload_never_read_is_reported(read_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        AsyncSession(read_async_engine) as session,
    ):
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        accounts = (await session.scalars(statement)).all()  # line:async
        assert [a.name for a in accounts]
    finding = one(uow.findings, "SQD257")
    assert finding.location.line == line_of("async")
    assert "loaded 12 Order object(s) for 4 Account object(s)" in finding.message


async def test_async_mapping_level_eager_load_suggests_raiseload(
    read_async_engine: AsyncEngine,
) -> None:
    """lazy="select" in an async app's mapping would raise MissingGreenlet where read."""
    async with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        AsyncSession(read_async_engine) as session,
    ):
        accounts = (await session.scalars(select(Account))).all()  # line:async-mapping
        assert accounts[0].email == "a0@example.com"
    finding = one(uow.findings, "SQD257")
    assert finding.location.line == line_of("async-mapping")
    assert finding.message.endswith(
        "and Account.badges was never read — add .options(raiseload(Account.badges)) to "
        "this query"
    )
    assert finding.fix_hint == ".options(raiseload(Account.badges))"


async def test_async_mapping_level_eager_load_read_is_silent(
    read_async_engine: AsyncEngine,
) -> None:
    async with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        AsyncSession(read_async_engine) as session,
    ):
        accounts = (await session.scalars(select(Account))).all()
        assert sum(len(account.badges) for account in accounts) == 8
    assert not of_code(uow.findings, "SQD257")


async def test_async_awaitable_attrs_read_is_silent(read_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect", config=TRACK_READS) as uow,
        AsyncSession(read_async_engine) as session,
    ):
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        accounts = (await session.scalars(statement)).all()
        assert len(await accounts[0].awaitable_attrs.orders) == 3
    assert not of_code(uow.findings, "SQD257")


def test_a_relationship_whose_reads_cannot_be_seen_is_not_judged(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        accounts = s.scalars(statement).all()
        # As if the descriptor could not be switched (another library's class).
        Account.__dict__["orders"].__class__ = InstrumentedAttribute
        assert sum(len(a.orders) for a in accounts) == 12
    assert not of_code(uow.findings, "SQD257")


def every_account(state: ORMExecuteState) -> None:
    """SQLAlchemy's soft-delete / multi-tenant recipe: criteria added to every SELECT."""
    if state.is_select and not state.is_column_load and not state.is_relationship_load:
        criteria = with_loader_criteria(Account, Account.id > 0)
        state.statement = state.statement.options(criteria)


def test_a_statement_another_listener_copies_is_still_followed(read_engine: Engine) -> None:
    """The program's do_orm_execute listener runs after the doctor's and replaces the
    statement by a copy: the objects that copy loads are still the query's."""
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        event.listen(s, "do_orm_execute", every_account)
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        accounts = s.scalars(statement).all()  # line:copied
        names = [account.name for account in accounts]
    assert len(names) == 4
    finding = one(uow.findings, "SQD257")
    assert finding.location.line == line_of("copied")
    assert "selectinload(Account.orders) loaded 12 Order object(s)" in finding.message


def test_a_copied_statement_whose_relationship_is_read_is_silent(read_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(read_engine) as s:
        event.listen(s, "do_orm_execute", every_account)
        statement = select(Account).options(selectinload(Account.orders), NO_BADGES)
        assert sum(len(a.orders) for a in s.scalars(statement).all()) == 12
    assert not of_code(uow.findings, "SQD257")


# -- options chained below the query's own: selectinload(A.b).selectinload(B.c) --------


class ChainBase(DeclarativeBase):
    pass


class Shelf(ChainBase):
    __tablename__ = "shelves"

    id: Mapped[int] = mapped_column(primary_key=True)
    volumes: Mapped[list[Volume]] = relationship()


class Volume(ChainBase):
    __tablename__ = "volumes"

    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id"))
    title: Mapped[str] = mapped_column(String(50))
    pages: Mapped[list[Page]] = relationship()


class Page(ChainBase):
    __tablename__ = "pages"

    id: Mapped[int] = mapped_column(primary_key=True)
    volume_id: Mapped[int] = mapped_column(ForeignKey("volumes.id"))


@pytest.fixture
def shelves(engine: Engine) -> Engine:
    ChainBase.metadata.create_all(engine)
    with Session(engine) as session:
        for _ in range(3):
            volumes = [Volume(title=f"v{i}", pages=[Page(), Page()]) for i in range(2)]
            session.add(Shelf(volumes=volumes))
        session.commit()
    return engine


CHAIN = selectinload(Shelf.volumes).selectinload(Volume.pages)


def test_a_chained_option_whose_relationship_is_never_read_is_reported(shelves: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(shelves) as s:
        listed = s.scalars(select(Shelf).options(CHAIN)).all()  # line:chain
        titles = [volume.title for shelf in listed for volume in shelf.volumes]
    assert len(titles) == 6
    finding = one(uow.findings, "SQD257")
    assert finding.location.line == line_of("chain")
    assert finding.message == (
        f"`select(Shelf)` at {HERE}:{line_of('chain')}: selectinload(Shelf.volumes)"
        ".selectinload(Volume.pages) loaded 12 Page object(s) for 6 Volume object(s), and "
        "Volume.pages was never read — drop .selectinload(Volume.pages) from that option, "
        "keeping selectinload(Shelf.volumes)"
    )
    assert finding.fix_hint == "remove .selectinload(Volume.pages)"


def test_a_chained_option_whose_relationship_is_read_is_silent(shelves: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(shelves) as s:
        listed = s.scalars(select(Shelf).options(CHAIN)).all()
        pages = [len(volume.pages) for shelf in listed for volume in shelf.volumes]
    assert pages == [2] * 6
    assert not of_code(uow.findings, "SQD257")


def test_a_chain_never_read_at_all_is_reported_once_at_its_first_link(shelves: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(shelves) as s:
        listed = s.scalars(select(Shelf).options(CHAIN)).all()
        assert [shelf.id for shelf in listed] == [1, 2, 3]
    finding = one(uow.findings, "SQD257")
    assert finding.details["subject"] == "Shelf.volumes"


# -- options chained below a joinedload(): the joined objects come in the query's rows --

JOINED_CHAINS = {
    "chained": joinedload(Shelf.volumes).selectinload(Volume.pages),
    "options": joinedload(Shelf.volumes).options(selectinload(Volume.pages)),
    "joined": joinedload(Shelf.volumes).joinedload(Volume.pages),
}


@pytest.mark.parametrize("chain", JOINED_CHAINS.values(), ids=JOINED_CHAINS.keys())
def test_an_option_below_a_joinedload_whose_relationship_is_never_read_is_reported(
    shelves: Engine, chain: Any
) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(shelves) as s:
        listed = s.scalars(select(Shelf).options(chain)).unique().all()  # line:joined-chain
        titles = [volume.title for shelf in listed for volume in shelf.volumes]
    assert len(titles) == 6
    finding = one(uow.findings, "SQD257")
    assert finding.location.line == line_of("joined-chain")
    below = "joinedload" if chain is JOINED_CHAINS["joined"] else "selectinload"
    assert finding.message == (
        f"`select(Shelf)` at {HERE}:{line_of('joined-chain')}: joinedload(Shelf.volumes)"
        f".{below}(Volume.pages) loaded 12 Page object(s) for 6 Volume object(s), and "
        f"Volume.pages was never read — drop .{below}(Volume.pages) from that option, "
        "keeping joinedload(Shelf.volumes)"
    )


@pytest.mark.parametrize("chain", JOINED_CHAINS.values(), ids=JOINED_CHAINS.keys())
def test_an_option_below_a_joinedload_whose_relationship_is_read_is_silent(
    shelves: Engine, chain: Any
) -> None:
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(shelves) as s:
        listed = s.scalars(select(Shelf).options(chain)).unique().all()
        pages = [len(volume.pages) for shelf in listed for volume in shelf.volumes]
    assert pages == [2] * 6
    assert not of_code(uow.findings, "SQD257")


def test_a_joined_chain_never_read_at_all_is_reported_once_at_its_first_link(
    shelves: Engine,
) -> None:
    chain = JOINED_CHAINS["chained"]
    with sqla_doctor.track(mode="collect", config=TRACK_READS) as uow, Session(shelves) as s:
        listed = s.scalars(select(Shelf).options(chain)).unique().all()
        assert [shelf.id for shelf in listed] == [1, 2, 3]
    finding = one(uow.findings, "SQD257")
    assert finding.details["subject"] == "Shelf.volumes"
