"""SQD252: the same statement again and again from one place, and its fixed twins."""

from __future__ import annotations

import contextvars
import functools
import gc
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
    with_parent,
)

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .collection_models import (
    LEDGERS,
    Change,
    Ledger,
    Posting,
    Watcher,
    create_and_seed_ledgers,
)
from .models import USERS, Post, User
from .support import line_of, of_code, one, relative

IDS = list(range(1, USERS + 1))
QUERY = text("SELECT name FROM users WHERE id = :id")


def test_session_get_in_a_loop_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        names = [session.get(User, user_id).name for user_id in IDS]  # type: ignore[union-attr]  # line:get
    assert len(names) == USERS
    finding = one(uow.findings, "SQD252")
    here = relative(__file__)
    assert finding.location.line == line_of("get")
    assert finding.message == (
        f"SELECT … FROM users ran {USERS}× from {here}:{line_of('get')} with {USERS} different "
        "parameter sets — session.get() runs a SELECT for each User the session does not "
        "hold: load them in one query, `by_id = {user.id: user for user in "
        "session.scalars(select(User).where(User.id.in_(ids)))}`, and look each one up there "
        "(while that result is kept, session.get() finds them in the session without SQL)"
    )
    assert finding.details["parameter_sets"] == USERS
    assert "parameters" not in finding.details, "bound values are never kept by default"


def test_gets_after_loading_the_rows_in_one_query_are_the_silent_twin(engine: Engine) -> None:
    """SQD252's advice for session.get() in a loop, followed: one SELECT in all."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        ids = IDS
        by_id = {user.id: user for user in session.scalars(select(User).where(User.id.in_(ids)))}
        names = [session.get(User, user_id).name for user_id in IDS]  # type: ignore[union-attr]
    assert names == [by_id[user_id].name for user_id in IDS]
    assert uow.query_count == 1
    assert not uow.findings


def test_a_statement_is_named_by_its_own_from_not_a_subquerys_in_its_columns(
    engine: Engine,
) -> None:
    # A column_property count renders as a scalar subquery before the statement's FROM.
    counted = text(
        "SELECT users.name, (SELECT count(posts.id) FROM posts WHERE posts.author_id = users.id)"
        " AS n FROM users WHERE users.id = :id"
    )
    derived = text("SELECT t.name FROM (SELECT name, id FROM users) AS t WHERE t.id = :id")
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
        for user_id in IDS:
            connection.execute(counted, {"id": user_id})  # line:counted
        for user_id in IDS:
            connection.execute(derived, {"id": user_id})  # line:derived
    found = {f.location.line: f.message for f in of_code(uow.findings, "SQD252")}
    assert found[line_of("counted")].startswith(f"SELECT … FROM users ran {USERS}×")
    # Only a subquery names a table: it is still the one shown.
    assert found[line_of("derived")].startswith(f"SELECT … FROM users ran {USERS}×")


class StockBase(DeclarativeBase):
    pass


class Stock(StockBase):
    __tablename__ = "stock"
    warehouse: Mapped[str] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(primary_key=True)
    quantity: Mapped[int]


STOCK_KEYS = [("north", f"sku{i}") for i in range(USERS)]


@pytest.fixture
def stock_engine() -> Iterator[Engine]:
    stock_engine = create_engine("sqlite://")
    StockBase.metadata.create_all(stock_engine)
    with Session(stock_engine) as session:
        session.add_all(Stock(warehouse=w, sku=s, quantity=2) for w, s in STOCK_KEYS)
        session.commit()
    yield stock_engine
    stock_engine.dispose()


def test_session_get_of_a_composite_key_in_a_loop_is_told_the_tuple_lookup(
    stock_engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(stock_engine) as session:
        total = sum(session.get_one(Stock, key).quantity for key in STOCK_KEYS)  # line:get-pair
    assert total == 2 * USERS
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("get-pair")
    assert finding.message.endswith(
        "session.get_one() runs a SELECT for each Stock the session does not hold: load them in "
        "one query, `by_key = {(stock.warehouse, stock.sku): stock for stock in "
        "session.scalars(select(Stock).where(tuple_(Stock.warehouse, Stock.sku).in_(keys)))}`, "
        "and look each one up there (while that result is kept, session.get() finds them in "
        "the session without SQL)"
    )


def test_the_tuple_lookup_of_a_composite_key_is_the_silent_twin(stock_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(stock_engine) as session:
        keys = STOCK_KEYS
        found = session.scalars(select(Stock).where(tuple_(Stock.warehouse, Stock.sku).in_(keys)))
        by_key = {(stock.warehouse, stock.sku): stock for stock in found}
        total = sum(session.get_one(Stock, key).quantity for key in STOCK_KEYS)
    assert total == 2 * USERS == sum(stock.quantity for stock in by_key.values())
    assert uow.query_count == 1
    assert not uow.findings


def test_a_tracked_lookup_called_per_id_does_not_hide_the_repeats(engine: Engine) -> None:
    lookup = sqla_doctor.track("lookup", mode="collect")

    @lookup
    def name_of(session: Session, user_id: int) -> str:
        return session.get(User, user_id).name  # type: ignore[union-attr]  # line:tracked-get

    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        names = [name_of(session, user_id) for user_id in IDS]
    assert len(names) == USERS
    assert lookup.last is not None
    assert not lookup.last.findings
    assert one(uow.findings, "SQD252").location.line == line_of("tracked-get")


def test_values_written_into_the_sql_still_make_one_statement(engine: Engine) -> None:
    """An f-string, ``literal_execute`` or IN lists of other lengths: one shape per loop."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in IDS:
            session.execute(text(f"SELECT name FROM users WHERE id = {user_id}"))  # line:fstr
            literal = bindparam("name", f"user{user_id}", literal_execute=True)
            session.scalars(select(User).where(User.name == literal)).all()  # line:literal
            session.scalars(select(User).where(User.id.in_(IDS[:user_id]))).all()  # line:in
    findings = {f.location.line: f for f in of_code(uow.findings, "SQD252")}
    assert set(findings) == {line_of("fstr"), line_of("literal"), line_of("in")}
    for finding in findings.values():
        assert finding.details["count"] == USERS
        assert finding.details["parameter_sets"] == USERS
    assert "user3" not in repr(list(findings.values())), "literal values are not shown"


def test_one_query_with_in_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User).where(User.id.in_(IDS))).all()
    assert len(users) == USERS
    assert not uow.findings
    assert uow.query_count == 1


def test_text_in_a_loop_on_a_core_connection_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
        for user_id in IDS:
            connection.execute(QUERY, {"id": user_id})  # line:text
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("text")
    assert finding.details["statement"] == "SELECT name FROM users WHERE id = ?"
    # No entity, no loader option: the one query in SQL, by the column compared.
    assert finding.message.endswith(
        "fetch the rows in one query instead of one per iteration: JOIN them into the "
        "query the loop reads, or ask for all of them at once, `WHERE id IN :ids` with "
        '`text(...).bindparams(bindparam("ids", expanding=True))` (Core: '
        "`table.c.id.in_(ids)`)"
    )
    assert "Model" not in finding.message
    one_query = text("SELECT name FROM users WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    with engine.connect() as connection:
        assert len(connection.execute(one_query, {"ids": IDS}).all()) == len(IDS)


SQL_IN_ADVICE = (
    "fetch the rows in one query instead of one per iteration: JOIN them into the "
    "query the loop reads, or ask for all of them at once, `WHERE id IN :ids` with "
    '`text(...).bindparams(bindparam("ids", expanding=True))` (Core: `table.c.id.in_(ids)`)'
)


def test_text_in_a_loop_through_a_session_is_told_the_sql_in_list(engine: Engine) -> None:
    """session.execute(text(...)) goes through the ORM, but a text() statement has no
    entity: `.where(Model.id.in_(ids))` or a loader option cannot apply to it."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in IDS:
            session.execute(QUERY, {"id": user_id}).scalar_one()  # line:session-text
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("session-text")
    assert finding.message.endswith(SQL_IN_ADVICE)
    one_query = text("SELECT name FROM users WHERE id IN :ids").bindparams(
        bindparam("ids", expanding=True)
    )
    with sqla_doctor.track(mode="collect") as twin, Session(engine) as session:
        assert len(session.execute(one_query, {"ids": IDS}).all()) == len(IDS)
    assert not twin.findings


async def test_text_in_a_loop_through_an_async_session_is_told_the_sql_in_list(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        for user_id in IDS:
            (await session.execute(QUERY, {"id": user_id})).scalar_one()  # line:async-text
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("async-text")
    assert finding.message.endswith(SQL_IN_ADVICE)


def test_a_select_of_no_table_in_a_loop_is_not_told_to_fetch_rows(engine: Engine) -> None:
    """A value the database computes per item (`SELECT :n * 2`) has no rows to fetch in
    one query: the advice is to compute it once for all, or in Python."""
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
        doubled = [connection.scalar(text("SELECT :n * 2"), {"n": n}) for n in IDS]  # line:no-table
    assert doubled == [2 * n for n in IDS]
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("no-table")
    assert finding.message.endswith(
        "it reads no table: compute the values in Python, or all of them in one statement, "
        "instead of one round trip per iteration"
    )
    assert "fetch the rows" not in finding.message


def test_a_write_sqlalchemy_cannot_name_is_not_told_it_reads_no_table(engine: Engine) -> None:
    """SQLite's `INSERT OR REPLACE INTO` has no FROM either, but it writes a table."""
    upsert = text("INSERT OR REPLACE INTO users (id, name) VALUES (:id, :name)")
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
        for user_id in IDS:
            connection.execute(upsert, {"id": user_id, "name": f"user{user_id}"})
    assert "reads no table" not in one(uow.findings, "SQD252").message


def test_identical_parameters_say_reuse_the_result(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for _ in range(6):
            session.execute(text("SELECT count(*) FROM users")).scalar()
    finding = one(uow.findings, "SQD252")
    assert "with identical parameters — run it once and reuse the result" in finding.message


def test_a_worker_polling_once_per_transaction_is_silent(engine: Engine) -> None:
    """The same query with the same values, once per transaction: a queue polled between
    commits sees new rows each time; reusing the first result would be the bug."""
    pending = text("SELECT id FROM users WHERE name LIKE 'job%'")
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for _ in range(6):
            session.execute(pending).all()
            session.commit()
    with sqla_doctor.track(mode="collect") as fresh:
        for _ in range(6):
            with Session(engine) as polling:
                polling.execute(pending).all()
    assert uow.query_count == fresh.query_count == 6
    assert not uow.findings
    assert not fresh.findings


def test_a_core_connection_polling_between_commits_is_silent(engine: Engine) -> None:
    """Commit as you go on one Connection: each commit ends the transaction the previous
    poll ran in, as a session's commit does."""
    pending = text("SELECT id FROM users WHERE name LIKE 'job%'")
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
        for _ in range(6):
            connection.execute(pending).all()
            connection.commit()
    assert uow.query_count == 6
    assert not uow.findings


def test_a_core_connection_repeating_within_one_transaction_is_reported(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
        connection.execute(text("SELECT count(*) FROM users")).scalar()
        connection.commit()
        for _ in range(5):
            connection.execute(text("SELECT count(*) FROM users")).scalar()  # line:core
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("core")
    assert "ran 5× " in finding.message
    assert "with identical parameters — run it once and reuse the result" in finding.message


def test_a_leaked_connection_stays_collectable(engine: Engine) -> None:
    """The detector remembers the transaction of a repeat weakly: a connection the
    program drops without closing still goes back to the pool when it is collected."""
    with sqla_doctor.track(mode="collect"):
        connection = engine.connect()
        for _ in range(3):
            connection.execute(text("SELECT count(*) FROM users")).scalar()
        dropped = weakref.ref(connection.get_transaction())
        del connection
        gc.collect()
        assert dropped() is None


def test_the_same_query_repeated_within_one_of_the_transactions_is_reported(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.execute(text("SELECT count(*) FROM users")).scalar()
        session.commit()
        for _ in range(5):
            session.execute(text("SELECT count(*) FROM users")).scalar()  # line:again
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("again")
    assert "ran 5× " in finding.message
    assert "with identical parameters — run it once and reuse the result" in finding.message


def test_a_sessions_report_before_its_end_says_the_count_is_a_lower_bound(engine: Engine) -> None:
    """Under install(), a session reports at the end of each transaction: a loop that
    commits every few items goes on running the statement after the first report."""
    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        for round_ in range(2):
            for user_id in IDS:
                session.execute(QUERY, {"id": user_id + round_}).scalar()
            session.commit()
    finding = one(sqla_doctor.collected(), "SQD252")
    assert finding.message.startswith("SELECT … FROM users ran at least 5× from ")
    assert finding.details["count"] == USERS


def test_a_sessions_report_as_it_closes_gives_the_final_count(engine: Engine) -> None:
    """Under install(), the transaction close() ends is the session's last."""
    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        for user_id in IDS:
            session.execute(QUERY, {"id": user_id}).scalar()
    finding = one(sqla_doctor.collected(), "SQD252")
    assert finding.message.startswith(f"SELECT … FROM users ran {USERS}× from ")


def test_a_sessionmaker_begin_block_reports_the_final_count(engine: Engine) -> None:
    """`with SessionLocal.begin()` commits and then closes: its commit ends the session's
    last transaction, so the count is not a lower bound."""
    sqla_doctor.install(mode="collect")
    with sessionmaker(engine).begin() as session:
        for user_id in IDS:
            session.execute(QUERY, {"id": user_id}).scalar()
    finding = one(sqla_doctor.collected(), "SQD252")
    assert finding.message.startswith(f"SELECT … FROM users ran {USERS}× from ")


def test_a_begin_block_inside_a_longer_session_still_reports_a_lower_bound(
    engine: Engine,
) -> None:
    """`with session.begin()` commits, and the session goes on to the next batch."""
    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        for round_ in range(2):
            with session.begin():
                for user_id in IDS:
                    session.execute(QUERY, {"id": user_id + round_}).scalar()
    finding = one(sqla_doctor.collected(), "SQD252")
    assert finding.message.startswith(f"SELECT … FROM users ran at least {USERS}× from ")


def test_an_explicit_unit_reports_the_final_count(engine: Engine) -> None:
    """The same loop in track(): reported at the unit's end, with how often it ran."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for round_ in range(2):
            for user_id in IDS:
                session.execute(QUERY, {"id": user_id + round_}).scalar()
            session.commit()
    assert one(uow.findings, "SQD252").message.startswith(
        f"SELECT … FROM users ran {2 * USERS}× from "
    )


def test_below_the_threshold_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in IDS[:4]:
            session.get(User, user_id)
    assert not uow.findings


def test_a_walk_of_the_table_one_page_after_another_is_silent(engine: Engine) -> None:
    """Each page starts after the last key of the page before (fastcrud's
    get_multi_by_cursor() in its test's while loop, the windowed range query that walks
    a large table in batches): there is no one query to fetch them all in its place."""
    with Session(engine) as session:
        session.add_all(User(name=f"more{i}") for i in range(USERS))
        session.commit()
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        names: list[str] = []
        last = 0
        while True:
            page = session.scalars(
                select(User).where(User.id > last).order_by(User.id).limit(2)
            ).all()
            if not page:
                break
            names += [user.name for user in page]
            last = page[-1].id
    assert len(names) == 2 * USERS  # five pages, then the empty one that ends the walk
    assert not uow.findings


def test_a_page_of_each_parents_rows_in_a_loop_is_still_reported(engine: Engine) -> None:
    """The keyset walk's near miss: the WHERE also matches each user's id, one query per
    user where one query for all of them would do."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            page = select(Post).where(Post.author_id == user.id, Post.id > 0)
            session.scalars(page.order_by(Post.id).limit(2)).all()  # line:page
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("page")


def test_one_helper_called_from_several_places_is_not_a_loop(engine: Engine) -> None:
    """Statements are keyed on the line and its caller, as Prosopite keys on the stack."""

    def name_of(session: Session, user_id: int) -> str:
        return session.execute(QUERY, {"id": user_id}).scalar_one()

    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        name_of(session, 1)
        name_of(session, 2)
        name_of(session, 3)
        name_of(session, 4)
        name_of(session, 5)
        name_of(session, 1)
    assert not uow.findings


def test_reflecting_the_schema_table_by_table_is_silent(engine: Engine) -> None:
    """Reflection reads SQLite's schema table once per table: the library's loop."""
    with engine.begin() as conn:
        for name in ("r1", "r2", "r3", "r4", "r5", "r6"):
            conn.execute(text(f"CREATE TABLE {name} (id INTEGER PRIMARY KEY)"))
    with sqla_doctor.track(mode="collect") as uow:
        MetaData().reflect(engine)
        inspector = inspect(engine)
        columns = [inspector.get_columns(name) for name in inspector.get_table_names()]
    assert columns
    assert not uow.findings


def test_a_table_of_the_program_named_like_a_catalog_is_still_counted(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE information (id INTEGER PRIMARY KEY, name TEXT)"))
    lookup = text("SELECT name FROM information WHERE id = :id")
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as conn:
        for key in IDS:
            conn.execute(lookup, {"id": key})
    assert one(uow.findings, "SQD252").message.startswith("SELECT … FROM information ran")


def test_lazy_loads_are_left_to_the_lazy_load_detector(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts
    assert of_code(uow.findings, "SQD251")
    assert not of_code(uow.findings, "SQD252")


def test_lazy_loads_each_in_a_savepoint_are_left_to_the_lazy_load_detector(
    engine: Engine,
) -> None:
    # begin_nested() emits its SAVEPOINT as the lazy load takes the connection, after
    # the load's do_orm_execute: the SAVEPOINT is not the load's statement.
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine) as session,
        session.begin(),
    ):
        for user in session.scalars(select(User)).all():
            with session.begin_nested():
                assert user.posts
    assert of_code(uow.findings, "SQD251")
    assert not of_code(uow.findings, "SQD252")


async def test_async_lazy_loads_each_in_a_savepoint_are_left_to_the_lazy_load_detector(
    async_engine: AsyncEngine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSession(async_engine) as session, session.begin():
            for user in (await session.scalars(select(User))).all():
                async with session.begin_nested():
                    assert await user.awaitable_attrs.posts
    assert of_code(uow.findings, "SQD251")
    assert not of_code(uow.findings, "SQD252")


def test_lazy_loads_after_a_begin_listeners_begin_are_left_to_the_lazy_load_detector(
    engine: Engine,
) -> None:
    # The pysqlite recipe for SAVEPOINT support: the "begin" event emits BEGIN itself,
    # as the first statement of each transaction takes the connection.
    event.listen(engine, "begin", _emit_begin)
    try:
        with (
            sqla_doctor.track(mode="collect") as uow,
            Session(engine, expire_on_commit=False) as session,
        ):
            for user in session.scalars(select(User)).all():
                session.commit()
                assert user.posts
    finally:
        event.remove(engine, "begin", _emit_begin)
    assert of_code(uow.findings, "SQD251")
    assert not of_code(uow.findings, "SQD252")


def test_lazy_loads_after_an_after_begin_listeners_sql_are_left_to_the_lazy_load_detector(
    engine: Engine,
) -> None:
    # A per-transaction setting (PostgreSQL's SET LOCAL; here SQLite's
    # defer_foreign_keys) runs as each transaction's first statement takes the connection.
    event.listen(Session, "after_begin", _per_transaction_setting)
    try:
        with (
            sqla_doctor.track(mode="collect") as uow,
            Session(engine, expire_on_commit=False) as session,
        ):
            for user in session.scalars(select(User)).all():
                session.commit()
                assert user.posts
    finally:
        event.remove(Session, "after_begin", _per_transaction_setting)
    assert of_code(uow.findings, "SQD251")
    assert not of_code(uow.findings, "SQD252")


def _per_transaction_setting(session: Session, transaction: object, connection: Connection) -> None:
    connection.exec_driver_sql("PRAGMA defer_foreign_keys = ON")


def _emit_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def test_a_query_repeated_in_a_savepoint_per_item_is_still_reported(engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine) as session,
        session.begin(),
    ):
        for user_id in IDS:
            with session.begin_nested():
                session.scalars(select(Post).where(Post.author_id == user_id)).all()  # line:nested
    assert one(uow.findings, "SQD252").location.line == line_of("nested")


def test_flush_statements_are_not_counted(engine: Engine) -> None:
    """A flush's INSERTs write what the program added: the flush per object is what
    is reported, not its statement."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for i in range(8):
            session.add(User(name=f"new{i}"))
            session.flush()
        session.rollback()
    assert one(uow.findings, "SQD252").details["subject"] == "session.flush()"


def test_show_parameters_adds_one_example(engine: Engine) -> None:
    config = RuntimeConfig(mode="collect", show_parameters=True)
    with sqla_doctor.track(config=config) as uow, Session(engine) as session:
        for user_id in IDS:
            session.get(User, user_id)
    assert one(uow.findings, "SQD252").details["parameters"] == "(1,)"


async def test_async_get_in_a_loop_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        for user_id in IDS:
            await session.get(User, user_id)  # line:async-get
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("async-get")
    assert (
        "`by_id = {user.id: user for user in (await "
        "session.scalars(select(User).where(User.id.in_(ids))))}`"
    ) in finding.message


async def test_async_gets_after_loading_the_rows_are_the_silent_twin(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        ids = IDS
        stmt = select(User).where(User.id.in_(ids))
        by_id = {user.id: user for user in (await session.scalars(stmt))}
        for user_id in IDS:
            assert await session.get(User, user_id) is by_id[user_id]
    assert uow.query_count == 1
    assert not uow.findings


async def test_async_in_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        users = (await session.scalars(select(User).where(User.id.in_(IDS)))).all()
    assert len(users) == USERS
    assert not uow.findings


RENAME = text("UPDATE users SET name = :name WHERE id = :id")


def test_a_loop_of_updates_is_told_to_run_one_executemany(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.begin() as connection:
        for user_id in IDS:
            connection.execute(RENAME, {"name": f"renamed {user_id}", "id": user_id})  # line:upd
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("upd")
    assert finding.message.endswith(
        f"UPDATE users ran {USERS}× from {relative(__file__)}:{line_of('upd')} with {USERS} "
        "different parameter sets — collect the changes and run one executemany: "
        "`connection.execute(stmt, [{...}, {...}])` with a list of parameter dicts, instead "
        "of one UPDATE per iteration"
    )
    assert "fetch the rows" not in finding.message
    assert "renamed" not in repr(finding), "bound values are never shown"


def test_orm_updates_and_inserts_in_a_loop_name_the_orm_bulk_forms(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in IDS:
            session.execute(update(User).where(User.id == user_id).values(name="x"))  # line:orm
            session.execute(insert(User).values(name=f"new {user_id}"))  # line:ins
            session.execute(delete(User).where(User.name == f"new {user_id}"))  # line:del
        session.commit()
    findings = {f.location.line: f.message for f in of_code(uow.findings, "SQD252")}
    assert set(findings) == {line_of("orm"), line_of("ins"), line_of("del")}
    assert (
        "run one ORM bulk UPDATE by primary key: "
        '`session.execute(update(Model), [{"id": 1, "name": ...}, ...])`'
    ) in findings[line_of("orm")]
    assert (
        "insert them in one executemany: `session.execute(insert(Model), [{...}, {...}])`"
    ) in findings[line_of("ins")]
    assert findings[line_of("del")].endswith(
        "delete the rows in one statement: `delete(Model).where(Model.id.in_(ids))`, "
        "instead of one DELETE per iteration"
    )
    assert not any("fetch the rows" in message for message in findings.values())


def test_a_bulk_method_called_per_row_is_told_to_take_every_row_at_once(
    engine: Engine,
) -> None:
    """bulk_insert_mappings() and bulk_save_objects() write through the unit of work, so
    their INSERTs are a Connection's: the fix names the method the program called."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in IDS:
            session.bulk_insert_mappings(User, [{"name": f"new {user_id}"}])  # line:mappings
            session.bulk_save_objects([User(name=f"saved {user_id}")])  # line:objects
        session.commit()
    findings = {f.location.line: f.message for f in of_code(uow.findings, "SQD252")}
    assert set(findings) == {line_of("mappings"), line_of("objects")}
    assert findings[line_of("mappings")].endswith(
        "bulk_insert_mappings() takes a list: collect the rows and make one call, "
        "`session.bulk_insert_mappings(User, rows)` (or `session.execute(insert(User), "
        "rows)`), instead of one bulk_insert_mappings() per iteration"
    )
    assert findings[line_of("objects")].endswith(
        "bulk_save_objects() takes a list: collect the rows and make one call, "
        "`session.bulk_save_objects(objects)`, instead of one bulk_save_objects() per "
        "iteration"
    )


def test_one_bulk_call_with_every_row_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.bulk_insert_mappings(User, [{"name": f"new {i}"} for i in IDS])
        session.bulk_save_objects([User(name=f"saved {i}") for i in IDS])
        session.commit()
    assert not of_code(uow.findings, "SQD252")


def test_one_executemany_of_updates_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.begin() as connection:
        connection.execute(RENAME, [{"name": f"renamed {i}", "id": i} for i in IDS])
    assert not of_code(uow.findings, "SQD252")


def test_the_same_update_repeated_is_told_to_run_once(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.begin() as connection:
        for _ in IDS:
            connection.execute(RENAME, {"name": "same", "id": 1})
    finding = one(uow.findings, "SQD252")
    assert finding.message.endswith(
        "with identical parameters — the same write with the same values: run it once, "
        "outside the loop"
    )


def test_a_count_and_a_fetch_from_one_line_are_told_apart(engine: Engine) -> None:
    """Two statements of one table from one line are two findings: their names differ,
    and a count is told to group, not to fetch rows."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in IDS:
            of_author = Post.author_id == user_id
            found = (session.scalar(select(func.count()).where(of_author)), session.scalars(select(Post).where(of_author)).first())  # noqa: E501  # line:both
            assert found[0] == 2
    shapes = sorted(f.message.split(" ran ")[0] for f in of_code(uow.findings, "SQD252"))
    assert shapes == ["SELECT count(…) … FROM posts", "SELECT … FROM posts"]
    count = next(f for f in uow.findings if f.message.startswith("SELECT count("))
    assert count.location.line == line_of("both")
    # Named by the column the WHERE compares with each user's id.
    assert count.message.endswith(
        "compute the count() for all of them in one query grouped by author_id: "
        "`select(Post.author_id, func.count()).where(Post.author_id.in_(ids))"
        ".group_by(Post.author_id)`"
    )


def test_a_legacy_query_count_per_parent_is_told_the_column_to_group_by(engine: Engine) -> None:
    """Query.count() wraps the query, `SELECT count(*) FROM (SELECT ... WHERE ...)`: the
    column compared is read inside the subquery, as for select(func.count()).where()."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.query(User).all():
            n = session.query(Post).filter_by(author_id=user.id).count()  # line:query-count
            assert n == 2
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("query-count")
    assert finding.message.endswith(
        "compute the count() for all of them in one query grouped by author_id: "
        "`select(Post.author_id, func.count()).where(Post.author_id.in_(ids))"
        ".group_by(Post.author_id)`"
    )
    with sqla_doctor.track(mode="collect") as twin, Session(engine) as session:
        stmt = select(Post.author_id, func.count()).where(Post.author_id.in_(IDS))
        counts = dict(session.execute(stmt.group_by(Post.author_id)).all())
    assert counts == dict.fromkeys(IDS, 2)
    assert not twin.findings


def test_a_query_per_parent_is_told_the_column_to_fetch_them_all_by(engine: Engine) -> None:
    """``with_parent()`` (or ``Post.author_id == user.id``) once per user: the foreign key
    it compares names the one query, and the collection it fills the loader option."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            of_user = with_parent(user, User.posts)
            posts = session.scalars(select(Post).where(of_user)).all()  # line:with-parent
            assert len(posts) == 2
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("with-parent")
    assert finding.message.endswith(
        "fetch the Post rows for all of them in one query instead of one per iteration, "
        "`select(Post).where(Post.author_id.in_(ids))`, and group them by author_id; or add "
        ".options(selectinload(User.posts)) to the query that loads the User objects and "
        "read user.posts"
    )
    with Session(engine) as session:  # the advice, run: every user's posts at once
        posts = session.scalars(select(Post).where(Post.author_id.in_(IDS))).all()
        assert len(posts) == 2 * len(IDS)


def test_a_select_by_primary_key_per_item_is_told_to_look_them_up(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in IDS:
            session.scalars(select(User).where(User.id == user_id)).one()
    assert one(uow.findings, "SQD252").message.endswith(
        "fetch the User rows for all of them in one query instead of one per iteration, "
        "`select(User).where(User.id.in_(ids))`, and look each one up by id"
    )


def test_a_select_by_another_column_per_item_names_its_values(engine: Engine) -> None:
    with Session(engine) as session:
        names = list(session.scalars(select(User.name).order_by(User.id)))
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for name in names:
            session.scalars(select(User).where(User.name == name)).one()
    message = one(uow.findings, "SQD252").message
    assert message.endswith("`select(User).where(User.name.in_(names))`, and group them by name")
    with Session(engine) as session:  # the advice, run
        assert len(session.scalars(select(User).where(User.name.in_(names))).all()) == USERS


def test_a_core_query_per_item_names_the_values_of_its_column(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as connection:
        for user_id in IDS:
            connection.execute(
                text("SELECT id FROM users WHERE name = :name"), {"name": f"u{user_id}"}
            )
    message = one(uow.findings, "SQD252").message
    assert '`WHERE name IN :names` with `text(...).bindparams(bindparam("names", ' in message
    assert "(Core: `table.c.name.in_(names)`)" in message


def interleave_first_executions(session: Session) -> None:
    """Hold each of two worker threads' first ORM execution until the other's has begun:
    both run between the other's do_orm_execute and its statement's cursor event, as
    workers sharing a session do when the scheduler switches at the wrong moment."""
    barrier = threading.Barrier(2, timeout=10)
    seen: set[int] = set()

    def wait_for_the_other(_state: object) -> None:
        thread = threading.get_ident()
        if thread not in seen:
            seen.add(thread)
            barrier.wait()

    event.listen(session, "do_orm_execute", wait_for_the_other)


def in_two_workers(names: Callable[[list[int]], list[str]]) -> list[list[str]]:
    """``names`` of half the ids in each of two pool threads, in the unit of work of the
    caller (as asyncio.to_thread() and Starlette's threadpool copy the context)."""
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, names, ids) for ids in (IDS[::2], IDS[1::2])
        ]
        return [future.result() for future in futures]


def test_workers_sharing_a_session_get_the_fix_for_their_own_statement(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.execute(text("SELECT 1"))  # the transaction begins before the workers
        interleave_first_executions(session)

        def names(ids: list[int]) -> list[str]:
            return [session.get(User, user_id).name for user_id in ids]  # type: ignore[union-attr]

        found = in_two_workers(names)
    assert sum(map(len, found)) == USERS
    assert "session.get() runs a SELECT for each User" in one(uow.findings, "SQD252").message


def test_workers_sharing_a_session_that_load_in_one_query_are_the_silent_twin(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.execute(text("SELECT 1"))
        interleave_first_executions(session)

        def names(ids: list[int]) -> list[str]:
            return list(session.scalars(select(User.name).where(User.id.in_(ids))))

        found = in_two_workers(names)
    assert sum(map(len, found)) == USERS
    assert not of_code(uow.findings, "SQD252")


def test_a_query_per_parent_with_another_filter_keeps_it_and_is_not_told_the_collection(
    engine: Engine,
) -> None:
    """The collection holds every post, not only the ones the query filters: no option."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in IDS:
            session.scalars(
                select(Post).where(Post.author_id == user_id, Post.title != "draft")
            ).all()
    message = one(uow.findings, "SQD252").message
    assert "`select(Post).where(Post.author_id.in_(ids), ...)`" in message
    assert "selectinload" not in message


@pytest.fixture
def ledgers(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'ledgers.db'}")
    create_and_seed_ledgers(engine)
    yield engine
    engine.dispose()


def statements_run(engine: Engine) -> list[str]:
    """The SQL the engine runs from now on (to check that an advice is one query)."""
    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_a_write_only_collection_queried_per_parent_is_not_told_a_loader_option(
    ledgers: Engine,
) -> None:
    """selectinload(Ledger.entries) raises "does not support object population": the
    fix is one query for the postings of all ledgers."""
    with sqla_doctor.track(mode="collect") as uow, Session(ledgers) as session:
        for ledger in session.scalars(select(Ledger)).all():
            assert len(session.scalars(ledger.entries.select()).all()) == 2  # line:write-only
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("write-only")
    assert finding.message.endswith(
        '— Ledger.entries is lazy="write_only", which no loader option loads: fetch the '
        "Posting rows of all the Ledger objects in one query, "
        "select(Posting).where(Posting.ledger_id.in_(ids)), and group them by ledger_id; "
        "if each needs its whole collection, map Ledger.entries as a loadable "
        "relationship (Mapped[list[Posting]]) and add .options(selectinload("
        "Ledger.entries)) to the query that loads the Ledger objects"
    )
    # The advice, followed: one query.
    seen = statements_run(ledgers)
    with Session(ledgers) as session:
        ids = list(range(1, LEDGERS + 1))
        postings = session.scalars(select(Posting).where(Posting.ledger_id.in_(ids))).all()
    assert len(postings) == 2 * LEDGERS
    assert len(seen) == 1


def test_a_dynamic_collection_read_per_parent_is_not_told_a_loader_option(
    ledgers: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(ledgers) as session:
        for ledger in session.scalars(select(Ledger)).all():
            assert len(ledger.changes.all()) == 2  # line:dynamic
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("dynamic")
    assert 'Ledger.changes is lazy="dynamic", which no loader option loads: fetch the ' in (
        finding.message
    )
    assert "select(Change).where(Change.ledger_id.in_(ids)), and group them by ledger_id" in (
        finding.message
    )


def test_a_dynamic_collection_counted_per_parent_is_told_one_grouped_count(
    ledgers: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(ledgers) as session:
        for ledger in session.scalars(select(Ledger)).all():
            assert ledger.changes.count() == 2  # line:count
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("count")
    assert finding.message.startswith("SELECT count(…) … FROM changes ran")
    assert finding.message.endswith(
        '— Ledger.changes is lazy="dynamic", which no loader option loads: compute the '
        "count() for all the Ledger objects in one query, select(Change.ledger_id, "
        "func.count()).where(Change.ledger_id.in_(ids)).group_by(Change.ledger_id)"
    )
    seen = statements_run(ledgers)
    with Session(ledgers) as session:
        ids = list(range(1, LEDGERS + 1))
        counts = session.execute(
            select(Change.ledger_id, func.count())
            .where(Change.ledger_id.in_(ids))
            .group_by(Change.ledger_id)
        ).all()
    assert dict(counts) == dict.fromkeys(ids, 2)
    assert len(seen) == 1


def test_a_write_only_collection_through_a_secondary_table_is_told_a_join(
    ledgers: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(ledgers) as session:
        for ledger in session.scalars(select(Ledger)).all():
            assert session.scalars(ledger.watchers.select()).all()  # line:secondary
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("secondary")
    assert (
        "fetch the Watcher rows of all the Ledger objects in one query, "
        "select(Ledger.id, Watcher).join(Ledger.watchers).where(Ledger.id.in_(ids)), and "
        "group them by Ledger.id;" in finding.message
    )
    seen = statements_run(ledgers)
    with Session(ledgers) as session:
        ids = list(range(1, LEDGERS + 1))
        pairs = session.execute(
            select(Ledger.id, Watcher).join(Ledger.watchers).where(Ledger.id.in_(ids))
        ).all()
    assert sorted(ledger_id for ledger_id, _ in pairs) == ids
    assert len(seen) == 1


def test_the_same_query_written_by_hand_keeps_the_usual_advice(ledgers: Engine) -> None:
    """The twin: no write_only or dynamic relationship runs it, so none is named."""
    with sqla_doctor.track(mode="collect") as uow, Session(ledgers) as session:
        for ledger in session.scalars(select(Ledger)).all():
            of_ledger = Posting.ledger_id == ledger.id
            assert len(session.scalars(select(Posting).where(of_ledger)).all()) == 2
    finding = one(uow.findings, "SQD252")
    assert finding.message.endswith(
        "fetch the Posting rows for all of them in one query instead of one per iteration, "
        "`select(Posting).where(Posting.ledger_id.in_(ids))`, and group them by ledger_id"
    )


def test_an_ordinary_collection_read_per_parent_keeps_the_loader_option(
    ledgers: Engine,
) -> None:
    """The twin: a relationship a loader option loads is SQD251's, with selectinload."""
    with sqla_doctor.track(mode="collect") as uow, Session(ledgers) as session:
        for ledger in session.scalars(select(Ledger)).all():
            assert len(ledger.lines) == 1
    assert not of_code(uow.findings, "SQD252")
    assert one(uow.findings, "SQD251").message.endswith(
        "add .options(selectinload(Ledger.lines)) to that query"
    )


async def test_a_write_only_collection_queried_per_parent_under_asyncio(
    tmp_path: Path,
) -> None:
    sync = create_engine(f"sqlite:///{tmp_path / 'ledgers.db'}")
    create_and_seed_ledgers(sync)
    sync.dispose()
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledgers.db'}")
    try:
        with sqla_doctor.track(mode="collect") as uow:
            async with AsyncSession(engine) as session:
                for ledger in (await session.scalars(select(Ledger))).all():
                    await session.scalars(ledger.entries.select())  # line:async-write-only
        finding = one(uow.findings, "SQD252")
        assert finding.location.line == line_of("async-write-only")
        assert 'Ledger.entries is lazy="write_only", which no loader option loads' in (
            finding.message
        )
    finally:
        await engine.dispose()


def test_merge_in_a_loop_is_told_to_load_the_rows_first(engine: Engine) -> None:
    """merge() SELECTs each object the session does not hold: a loader option or an IN
    query the merges never see would not help; rows loaded first and kept do."""
    incoming = [User(id=user_id, name=f"renamed {user_id}") for user_id in IDS]
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in incoming:
            session.merge(user)  # line:merge
        session.commit()
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("merge")
    assert finding.message.endswith(
        "— session.merge() loads each User the session does not hold with a SELECT of its "
        "own: load them first in one query and keep the result, `existing = "
        "session.scalars(select(User).where(User.id.in_(ids))).all()`, so that each merge() "
        "of an existing row finds its object in the session (new objects: session.add() "
        "them); for rows that all exist, one ORM bulk UPDATE writes the values, "
        '`session.execute(update(User), [{"id": ..., ...}, ...])`; merge(obj, load=False) '
        "skips the SELECT only for detached objects that still match their rows (from a "
        "cache), and writes none of their values"
    )


def test_merges_after_loading_the_rows_in_one_query_are_the_silent_twin(engine: Engine) -> None:
    incoming = [User(id=user_id, name=f"renamed {user_id}") for user_id in IDS]
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        seen = statements_run(engine)
        existing = session.scalars(select(User).where(User.id.in_(IDS))).all()
        for user in incoming:
            session.merge(user)
        session.commit()
    assert len(existing) == USERS
    assert not of_code(uow.findings, "SQD252")
    assert [sql.split()[0] for sql in seen].count("SELECT") == 1
    with Session(engine) as session:
        assert session.scalars(select(User.name).order_by(User.id)).all() == [
            f"renamed {user_id}" for user_id in IDS
        ]


def test_a_bulk_update_by_primary_key_is_the_merge_loops_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        seen = statements_run(engine)
        rows = [{"id": user_id, "name": f"renamed {user_id}"} for user_id in IDS]
        session.execute(update(User), rows)
        session.commit()
    assert not of_code(uow.findings, "SQD252")
    assert [sql.split()[0] for sql in seen] == ["UPDATE"]


async def test_async_merge_in_a_loop_is_told_to_load_the_rows_first(
    async_engine: AsyncEngine,
) -> None:
    incoming = [User(id=user_id, name=f"renamed {user_id}") for user_id in IDS]
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        for user in incoming:
            await session.merge(user)  # line:async-merge
        await session.commit()
    finding = one(uow.findings, "SQD252")
    assert finding.location.line == line_of("async-merge")
    assert "— session.merge() loads each User the session does not hold" in finding.message


def _add_and_flush_each(session: Session, names: list[str]) -> list[int]:
    ids = []
    for name in names:
        user = User(name=name)
        session.add(user)
        session.flush()  # line:flush-per-row
        ids.append(user.id)
    return ids


NEW_NAMES = [f"new{number}" for number in range(USERS)]


def test_a_flush_per_new_object_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        ids = _add_and_flush_each(session, NEW_NAMES)
        session.commit()
    assert len(set(ids)) == USERS
    finding = one(uow.findings, "SQD252")
    here = relative(__file__)
    assert finding.location.line == line_of("flush-per-row")
    assert finding.message == (
        f"session.flush() ran {USERS}× from {here}:{line_of('flush-per-row')} in one "
        "transaction, inserting a User each time — add the User objects with "
        "session.add_all() and flush once, after the loop: that flush sets every primary "
        "key (user.id can be read then) and can send the rows in one batched INSERT "
        "(insertmanyvalues) instead of a round trip and a unit-of-work pass per row; an "
        "object that needs another's new key gets it through a relationship "
        "(`child.parent = parent`), which the one flush fills in order (a flush per row to "
        "catch each row's IntegrityError belongs in a SAVEPOINT per row, `with "
        "session.begin_nested():`, which is not counted)"
    )


def test_a_flush_per_new_object_is_reported_under_install(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        _add_and_flush_each(session, NEW_NAMES)
        session.commit()
    assert one(sqla_doctor.collected(), "SQD252").message.startswith(
        f"session.flush() ran at least {USERS}× from "
    )


def test_a_parent_and_child_flushed_per_row_name_both(engine: Engine) -> None:
    """A loop that flushes the parent for its key, then the child: told the relationship."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for name in NEW_NAMES:
            user = User(name=name)
            session.add(user)
            session.flush()
            session.add(Post(title=f"{name}'s first", author_id=user.id))
            session.flush()
        session.commit()
    messages = [f.message for f in of_code(uow.findings, "SQD252")]
    assert len(messages) == 2
    assert all("(`child.parent = parent`)" in message for message in messages)
    assert any("inserting a Post each time" in message for message in messages)


def test_add_all_and_one_flush_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = [User(name=name) for name in NEW_NAMES]
        session.add_all(users)
        session.flush()
        ids = [user.id for user in users]
        session.commit()
    assert len(set(ids)) == USERS
    assert not of_code(uow.findings, "SQD252")


def test_a_flush_per_object_below_the_threshold_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        _add_and_flush_each(session, NEW_NAMES[:-1])
        session.commit()
    assert not of_code(uow.findings, "SQD252")


def test_a_savepoint_per_row_is_not_a_flush_per_row(engine: Engine) -> None:
    """Skipping the rows that fail needs each row in a SAVEPOINT of its own."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for name in NEW_NAMES:
            with session.begin_nested():
                session.add(User(name=name))
        session.commit()
    assert not of_code(uow.findings, "SQD252")


def test_a_commit_per_row_is_not_a_flush_per_row(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for name in NEW_NAMES:
            session.add(User(name=name))
            session.commit()
    assert not of_code(uow.findings, "SQD252")


def test_flushes_that_change_loaded_objects_are_not_counted(engine: Engine) -> None:
    """A flush per changed object writes an UPDATE the loop could batch too, but the
    rule is about new objects whose keys the loop reads."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        for user in users:
            user.name = f"{user.name}!"
            session.flush()
        session.commit()
    assert not of_code(uow.findings, "SQD252")


def _jobs_on_one_thread(
    engine: Engine, job: Callable[[scoped_session[Session], Any], Any], inputs: list[Any]
) -> None:
    """A thread pool's worker running each job on its thread's scoped session, removed
    only when the pool is done."""
    registry = scoped_session(sessionmaker(engine))
    with ThreadPoolExecutor(max_workers=1) as pool:
        list(pool.map(functools.partial(job, registry), inputs))
        pool.submit(registry.remove).result()


def _name(registry: scoped_session[Session], user_id: int) -> str:
    return registry.get(User, user_id).name  # type: ignore[union-attr]  # line:per-job


def _names(registry: scoped_session[Session], user_ids: list[int]) -> list[str]:
    return [registry.get(User, user_id).name for user_id in user_ids]  # type: ignore[union-attr]  # line:job-loop


def test_jobs_a_thread_pool_runs_on_one_session_are_not_a_loop(engine: Engine) -> None:
    """Each job is a call of the program's function by the pool's worker: one get()
    per job, repeated by the pool, not by a loop of the program (the scoped session
    never removed between jobs is SQD151's)."""
    sqla_doctor.install(mode="collect")
    _jobs_on_one_thread(engine, _name, IDS * 2)
    assert not of_code(sqla_doctor.collected(), "SQD252")


def test_a_loop_inside_a_job_the_pool_runs_is_reported(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    _jobs_on_one_thread(engine, _names, [IDS])
    assert one(sqla_doctor.collected(), "SQD252").location.line == line_of("job-loop")


class EventBase(DeclarativeBase):
    pass


class Event(EventBase):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]


EVENTS = 600


@pytest.fixture
def event_engine() -> Iterator[Engine]:
    event_engine = create_engine("sqlite://")
    EventBase.metadata.create_all(event_engine)
    with event_engine.begin() as connection:
        connection.execute(insert(Event), [{"kind": f"k{i % 7}"} for i in range(EVENTS)])
    yield event_engine
    event_engine.dispose()


def export_by_keyset(session: Session, page_size: int) -> int:
    """Pages through the table, each page after the last id of the one before."""
    exported, last_id = 0, 0
    while page := session.scalars(
        select(Event).where(Event.id > last_id).order_by(Event.id).limit(page_size)
    ).all():
        exported += len(page)
        last_id = page[-1].id
    return exported


def test_an_export_paging_by_keyset_is_silent(event_engine: Engine) -> None:
    # One SELECT per page of 100 rows is how a table too big for one query is read.
    with sqla_doctor.track(mode="collect") as uow, Session(event_engine) as session:
        assert export_by_keyset(session, 100) == EVENTS
    assert uow.query_count == EVENTS // 100 + 1
    assert not uow.findings


def test_a_walk_one_row_per_query_by_keyset_is_reported(event_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(event_engine) as session:
        assert export_by_keyset(session, 1) == EVENTS
    assert one(uow.findings, "SQD252").details["count"] == EVENTS + 1


def test_an_export_paging_by_offset_is_silent(event_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(event_engine) as session:
        kinds = [
            session.scalars(select(Event.kind).order_by(Event.id).offset(start).limit(50)).all()
            for start in range(0, EVENTS, 50)
        ]
    assert sum(map(len, kinds)) == EVENTS
    assert not uow.findings


def test_ids_looked_up_in_chunks_are_silent(event_engine: Engine) -> None:
    wanted = list(range(1, EVENTS + 1, 2))
    with sqla_doctor.track(mode="collect") as uow, Session(event_engine) as session:
        found = [
            kind
            for start in range(0, len(wanted), 50)
            for kind in session.scalars(
                select(Event.kind).where(Event.id.in_(wanted[start : start + 50]))
            )
        ]
    assert len(found) == len(wanted)
    assert not uow.findings


def test_a_query_per_item_capped_by_a_limit_is_still_reported(event_engine: Engine) -> None:
    # A LIMIT alone is a cap, not a page: each kind's latest events, one query per kind.
    with sqla_doctor.track(mode="collect") as uow, Session(event_engine) as session:
        latest = {
            kind: session.scalars(  # line:capped
                select(Event.id).where(Event.kind == kind).order_by(Event.id.desc()).limit(100)
            ).all()
            for kind in [f"k{i}" for i in range(7)]
        }
    assert len(latest) == 7
    assert one(uow.findings, "SQD252").location.line == line_of("capped")
