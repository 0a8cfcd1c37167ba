"""SQD355: opt-in EXPLAIN on PostgreSQL finds filters answered by reading a whole table."""

from __future__ import annotations

import datetime
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, ForeignKey, String, create_engine, func, select, text
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.runtime.query_plans import planner, redact

from .support import line_of, of_code, one

SECRET = "Ada.Lovelace-s3cr3t@example.com"
ROWS = 3_000
EXPLAIN = RuntimeConfig(explain_seq_scans=True, seq_scan_min_rows=1_000)


class Base(DeclarativeBase):
    pass


class Member(Base):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(120), index=True)
    city: Mapped[str] = mapped_column(String(40))
    visits: Mapped[list[Visit]] = relationship(back_populates="member")


class Visit(Base):
    __tablename__ = "visits"
    id: Mapped[int] = mapped_column(primary_key=True)
    # No index on the foreign key: every lazy load of Member.visits reads the whole table.
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    member: Mapped[Member] = relationship(back_populates="visits")


class Booking(Base):
    __tablename__ = "bookings"
    id: Mapped[int] = mapped_column(primary_key=True)
    made_at: Mapped[datetime.datetime] = mapped_column(index=True)


class Tiny(Base):
    __tablename__ = "tiny"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(20))


@pytest.fixture(autouse=True)
def _fresh_planner() -> Iterator[None]:
    planner.clear()
    yield
    planner.clear()


@pytest.fixture
def url(pg_database: Any) -> str:
    engine = create_engine(pg_database.url)
    Base.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            Member.__table__.insert(),
            [{"email": f"user{i}@example.com", "city": f"city{i % 50}"} for i in range(ROWS)],
        )
        connection.execute(
            Visit.__table__.insert(), [{"member_id": 1 + i % ROWS} for i in range(ROWS)]
        )
        connection.execute(Tiny.__table__.insert(), [{"code": f"c{i}"} for i in range(10)])
        start = datetime.datetime(2026, 1, 1)
        connection.execute(
            Booking.__table__.insert(),
            [{"made_at": start + datetime.timedelta(minutes=7 * i)} for i in range(ROWS)],
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))
    engine.dispose()
    return str(pg_database.url)


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    yield engine
    engine.dispose()


def test_function_on_indexed_column_is_explained_with_the_index_that_would_serve_it(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect", config=EXPLAIN) as uow, Session(engine) as session:
        stmt = select(Member).where(func.lower(Member.email) == SECRET.lower())
        session.scalars(stmt).all()  # line:lower
    finding = one(uow.findings, "SQD355")
    assert finding.location.line == line_of("lower")
    assert finding.message.startswith(f"Seq Scan on members (~{ROWS:,} rows) for the filter ")
    assert "lower(" in finding.message
    assert "the index ix_members_email on (email) cannot serve lower(email)" in finding.message
    assert 'Index("ix_members_email_lower", func.lower(email))' in (finding.fix_hint or "")
    assert finding.details["indexes"] == ["ix_members_email", "members_pkey"]
    assert SECRET.lower() not in repr(finding), "a bound value reached the finding"


def test_functional_index_is_the_silent_twin(engine: Engine) -> None:
    with engine.begin() as connection:
        # Raw DDL: an Index() object would attach itself to the shared Table for good.
        connection.execute(text("CREATE INDEX ix_members_email_lower ON members (lower(email))"))
        connection.execute(text("ANALYZE members"))
    with sqla_doctor.track(mode="collect", config=EXPLAIN) as uow, Session(engine) as session:
        session.scalars(select(Member).where(func.lower(Member.email) == SECRET)).all()
        session.scalars(select(Member).where(Member.email == SECRET)).all()
    assert not of_code(uow.findings, "SQD355")
    assert planner.explained == 2


def test_unindexed_foreign_key_filtered_by_lazy_loads(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=EXPLAIN) as uow, Session(engine) as session:
        members = session.scalars(select(Member).where(Member.id <= 3)).all()
        for member in members:
            len(member.visits)  # line:lazy
    finding = one(uow.findings, "SQD355")
    assert finding.location.line == line_of("lazy")
    assert "Seq Scan on visits" in finding.message
    assert "no index on visits.member_id serves it" in finding.message
    # One shape, explained once, however many parents loaded it.
    assert planner.explained == 2


def test_small_tables_and_statements_without_filters_are_not_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=EXPLAIN) as uow, Session(engine) as session:
        session.scalars(select(Tiny).where(Tiny.code == "c1")).all()
        session.scalars(select(Member).limit(5)).all()
    assert not of_code(uow.findings, "SQD355")
    assert planner.explained == 1  # only the filtered one was asked about


def test_off_by_default_issues_no_sql_of_its_own(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.scalars(select(Member).where(func.lower(Member.email) == SECRET)).all()
    assert uow.query_count == 1
    assert planner.explained == 0
    assert not of_code(uow.findings, "SQD355")


def test_explain_never_runs_in_the_programs_transaction(engine: Engine) -> None:
    """The program holds an exclusive lock on the table inside its transaction: on its own
    connection EXPLAIN would just run; on a separate one it waits, gives up at its lock
    timeout, and the program carries on with its result and no finding."""
    with sqla_doctor.track(mode="collect", config=EXPLAIN) as uow, Session(engine) as session:
        session.execute(text("LOCK TABLE members IN ACCESS EXCLUSIVE MODE"))
        rows = session.scalars(
            select(Member).where(func.lower(Member.email) == "user7@example.com")
        )
        assert [m.email for m in rows] == ["user7@example.com"]
        session.commit()
    assert not of_code(uow.findings, "SQD355")
    assert uow.query_count == 2  # the LOCK and the SELECT: nothing of ours on this connection


def test_async_engine_with_asyncpg(url: str, pg_database: Any) -> None:
    import asyncio

    async def main() -> Any:
        engine = create_async_engine(pg_database.async_url)
        try:
            track = sqla_doctor.track(mode="collect", config=EXPLAIN)
            async with track as uow, async_sessionmaker(engine)() as session:
                stmt = select(Member).where(func.lower(Member.email) == SECRET)
                (await session.scalars(stmt)).all()  # line:async
            return uow
        finally:
            await engine.dispose()

    uow = asyncio.run(main())
    finding = one(uow.findings, "SQD355")
    assert finding.location.line == line_of("async")
    assert "cannot serve lower(email)" in finding.message
    assert SECRET.lower() not in repr(finding)


@pytest.fixture
def tenant_url(url: str) -> str:
    """The same tables in a schema of their own, which connections reach by search_path."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE SCHEMA tenant"))
        for table in ("visits", "members", "tiny"):
            connection.execute(text(f"ALTER TABLE public.{table} SET SCHEMA tenant"))
    engine.dispose()
    return url


def test_a_schema_chosen_by_connect_args_is_explained_there(tenant_url: str) -> None:
    """The EXPLAIN connection is made with the engine's own connect parameters."""
    engine = create_engine(tenant_url, connect_args={"options": "-csearch_path=tenant"})
    try:
        track = sqla_doctor.track(mode="collect", config=EXPLAIN)
        with track as uow, Session(engine) as session:
            stmt = select(Member).where(func.lower(Member.email) == SECRET)
            assert session.scalars(stmt).all() == []  # line:tenant
    finally:
        engine.dispose()
    finding = one(uow.findings, "SQD355")
    assert finding.location.line == line_of("tenant")
    assert finding.details["table"] == "tenant.members"


def test_asyncpg_server_settings_choose_the_schema_too(tenant_url: str, pg_database: Any) -> None:
    import asyncio

    async def main() -> Any:
        engine = create_async_engine(
            pg_database.async_url, connect_args={"server_settings": {"search_path": "tenant"}}
        )
        try:
            track = sqla_doctor.track(mode="collect", config=EXPLAIN)
            async with track as uow, async_sessionmaker(engine)() as session:
                stmt = select(Member).where(func.lower(Member.email) == SECRET)
                (await session.scalars(stmt)).all()  # line:async-tenant
            return uow
        finally:
            await engine.dispose()

    finding = one(asyncio.run(main()).findings, "SQD355")
    assert finding.location.line == line_of("async-tenant")
    assert finding.details["table"] == "tenant.members"


def test_many_threads_explain_each_shape_once(engine: Engine) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with sqla_doctor.track(mode="collect", config=EXPLAIN) as uow, Session(engine) as s:
                s.scalars(select(Member).where(func.lower(Member.email) == SECRET)).all()
            assert len(of_code(uow.findings, "SQD355")) == 1
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert planner.explained == 1


def test_plan_text_is_redacted() -> None:
    assert redact("(lower((members.email)::text) = 'a''b@x.org'::text)") == (
        "(lower((members.email)::text) = ?::text)"
    )
    assert redact("((members.id > 42) AND (members.score < -1.5) AND (col2 = $1))") == (
        "((members.id > ?) AND (members.score < ?) AND (col2 = $1))"
    )


def test_a_psycopg2_program_is_explained_without_psycopg_3(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The most common install has psycopg2 only: SQLAlchemy's psycopg dialect class
    imports without its driver, so the plan's connection falls back when the driver
    itself is missing (it did not: no plan, no finding)."""
    pytest.importorskip("psycopg2")
    engine = create_engine(url.replace("+psycopg:", "+psycopg2:"))
    monkeypatch.setitem(sys.modules, "psycopg", None)  # psycopg 3 not installed
    try:
        with sqla_doctor.track(mode="collect", config=EXPLAIN) as uow, Session(engine) as session:
            session.scalars(select(Member).where(func.lower(Member.email) == SECRET)).all()
            session.scalars(select(Tiny).where(Tiny.code == "c1")).all()
    finally:
        engine.dispose()
    [finding] = of_code(uow.findings, "SQD355")
    assert "cannot serve lower(email)" in finding.message
    assert planner.explained == 2


def test_date_of_an_indexed_timestamp_is_told_the_range_the_index_serves(engine: Engine) -> None:
    day = datetime.date(2026, 1, 3)
    start = datetime.datetime(2026, 1, 3)
    with sqla_doctor.track(mode="collect", config=EXPLAIN) as uow, Session(engine) as session:
        session.scalars(select(Booking).where(func.date(Booking.made_at) == day)).all()
        session.scalars(  # the silent twin: the range the index serves
            select(Booking).where(
                Booking.made_at >= start, Booking.made_at < start + datetime.timedelta(days=1)
            )
        ).all()
    [finding] = of_code(uow.findings, "SQD355")
    assert (
        "the index ix_bookings_made_at on (made_at) cannot serve date(made_at); compare the "
        "bare column with a half-open range, which that index serves: `Model.made_at >= "
        "start, Model.made_at < start + timedelta(days=1)`"
    ) in finding.message
    assert planner.explained == 2
