"""SQD165: rollback() after one row's failed flush, and the session used again."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import sqla_doctor

from .support import line_of, of_code, one, relative

NAMES = ["a", "b", "a", "c"]


class Base(DeclarativeBase):
    pass


class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)


@pytest.fixture
def tags(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'tags.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def async_tags(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'tags.db'}")
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield engine
    await engine.dispose()


def _import_rolling_back(session: Session) -> None:
    for name in NAMES:
        session.add(Tag(name=name))
        try:
            session.flush()  # line:row-flush
        except IntegrityError:
            session.rollback()  # line:rollback
    session.commit()


def _count(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count(Tag.id))) or 0


def test_a_rollback_per_failed_row_that_goes_on_is_reported(tags: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(tags) as session:
        _import_rolling_back(session)
    assert _count(tags) == 1, "only the row after the duplicate is kept"
    finding = one(uow.findings, "SQD165")
    here = relative(__file__)
    assert finding.location.line == line_of("rollback")
    assert finding.message == (
        f"session.rollback() after the flush at {here}:{line_of('row-flush')} failed with "
        "IntegrityError (sqlite3.IntegrityError) discarded what this transaction had "
        "flushed before it (2 Tag inserted), not only the row that failed; the session "
        f"wrote again at {here}:{line_of('row-flush')} — put each row's write in a "
        "SAVEPOINT, `with session.begin_nested():`, and catch the error outside that "
        "block: a failed row then rolls back alone and the session stays usable, without "
        "session.rollback()"
    )
    assert [r.message for r in finding.related] == [
        "this flush failed",
        "the session wrote again here",
    ]


def test_it_is_reported_under_install(tags: Engine) -> None:
    sqla_doctor.install(mode="collect")
    with Session(tags) as session:
        _import_rolling_back(session)
    assert one(sqla_doctor.collected(), "SQD165").location.line == line_of("rollback")


def test_a_rollback_then_a_commit_with_nothing_new_is_reported(tags: Engine) -> None:
    """The duplicate was the last row: the commit after it commits nothing, and the
    program believes the earlier rows saved."""
    with sqla_doctor.track(mode="collect") as uow, Session(tags) as session:
        for name in ["a", "b", "a"]:
            session.add(Tag(name=name))
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
        session.commit()  # line:commit-after
    assert _count(tags) == 0
    finding = one(uow.findings, "SQD165")
    assert f"the session committed at {relative(__file__)}:{line_of('commit-after')}" in (
        finding.message
    )


def test_a_savepoint_per_row_is_the_silent_twin(tags: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(tags) as session:
        for name in NAMES:
            try:
                with session.begin_nested():
                    session.add(Tag(name=name))
            except IntegrityError:
                pass
        session.commit()
    assert _count(tags) == 3
    assert not uow.findings


def test_a_rollback_that_gives_up_is_silent(tags: Engine) -> None:
    """Rolling back and re-raising abandons the whole import: nothing is lost unawares."""

    def import_all(session: Session) -> None:
        for name in NAMES:
            session.add(Tag(name=name))
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
                raise
        session.commit()

    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(tags) as session,
        pytest.raises(IntegrityError),
    ):
        import_all(session)
    assert _count(tags) == 0
    assert not of_code(uow.findings, "SQD165")


def test_a_failure_with_nothing_flushed_before_is_silent(tags: Engine) -> None:
    with Session(tags) as session:
        session.add(Tag(name="a"))
        session.commit()
    with sqla_doctor.track(mode="collect") as uow, Session(tags) as session:
        for name in ["a", "b", "c"]:
            session.add(Tag(name=name))
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
    assert _count(tags) == 3
    assert not uow.findings


async def test_an_async_session_is_told_the_awaited_forms(async_tags: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_tags) as session:
        for name in NAMES:
            session.add(Tag(name=name))
            try:
                await session.flush()
            except IntegrityError:
                await session.rollback()  # line:async-rollback
        await session.commit()
    finding = one(uow.findings, "SQD165")
    assert finding.location.line == line_of("async-rollback")
    assert finding.message.startswith("await session.rollback() after the flush at ")
    assert "`async with session.begin_nested():`" in finding.message
