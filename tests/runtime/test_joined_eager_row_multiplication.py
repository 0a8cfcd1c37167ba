"""SQD256: collections joined-eager-loaded, with the rows they multiplied."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, joinedload, lazyload, selectinload

import sqla_doctor

from .eager_models import Author, Book, EagerBase, seed_authors
from .support import line_of, of_code, one, relative

HERE = relative(__file__)


@pytest.fixture
def eager_engine(engine: Engine) -> Engine:
    EagerBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(seed_authors())
        session.commit()
    return engine


@pytest.fixture
async def eager_async_engine(async_engine: AsyncEngine) -> AsyncEngine:
    async with async_engine.begin() as connection:
        await connection.run_sync(EagerBase.metadata.create_all)
    async with AsyncSession(async_engine) as session:
        session.add_all(seed_authors())
        await session.commit()
    return async_engine


FIRST_THREE = Author.id <= 3


def test_joinedload_of_a_collection_is_reported_with_its_row_factor(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = select(Author).where(FIRST_THREE).options(joinedload(Author.awards))
        authors = session.scalars(statement).unique().all()  # line:joined
        assert [len(a.awards) for a in authors] == [2, 2, 2]
    finding = one(uow.findings, "SQD256")
    assert finding.location.path == HERE
    assert finding.location.line == line_of("joined")
    assert finding.message == (
        f"`select(Author)` at {HERE}:{line_of('joined')} joined-eager-loaded the collection "
        "Author.awards: 3 Author object(s) came back as 6 rows (2.0× per Author) — load the "
        "collection(s) with .options(selectinload(Author.awards)) instead"
    )
    assert finding.details["factor"] == 2.0
    assert finding.details["subject"] == "Author.awards"


def test_two_collections_side_by_side_are_a_cartesian_product(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = (
            select(Author)
            .where(FIRST_THREE)
            .options(joinedload(Author.books), joinedload(Author.awards))
        )
        authors = session.scalars(statement).unique().all()  # line:cartesian
        # The next query is where the first one's rows are counted.
        session.scalars(select(Author).where(Author.id == 4)).all()
        assert len(authors) == 3
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("cartesian")
    # Per author: 2 books × 3 chapters (Book.chapters is lazy="joined") × 2 awards.
    assert (
        "joined-eager-loaded the collections Author.books, Book.chapters and Author.awards "
        "side by side (a cartesian product: one row per combination of their children): "
        "3 Author object(s) came back as 36 rows (12.0× per Author)"
    ) in finding.message
    assert finding.message.endswith(
        ".options(selectinload(Author.books).selectinload(Book.chapters), "
        "selectinload(Author.awards)) instead"
    )


def test_collection_joined_by_the_mapping_is_reported(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        books = session.scalars(select(Book)).unique().all()  # line:mapping
        assert len(books) == 6
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("mapping")
    assert "the collection Book.chapters: 6 Book object(s) came back as 18 rows (3.0×" in (
        finding.message
    )


def test_selectinload_is_the_silent_twin(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = select(Author).options(
            selectinload(Author.awards), selectinload(Author.books).selectinload(Book.chapters)
        )
        authors = session.scalars(statement).all()
        books = session.scalars(select(Book).options(lazyload(Book.chapters))).all()
        titles = session.scalars(select(Book.title)).all()
        assert len(titles) == 6
        assert authors
        assert books
    assert not of_code(uow.findings, "SQD256")


def test_joinedload_of_a_many_to_one_is_silent(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = select(Author).options(joinedload(Author.publisher))
        authors = session.scalars(statement).all()
        assert authors[0].publisher is not None
    assert not of_code(uow.findings, "SQD256")


def test_collections_of_at_most_one_child_multiply_nothing(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = select(Author).where(Author.id == 4).options(joinedload(Author.awards))
        authors = session.scalars(statement).unique().all()
        assert len(authors[0].awards) == 1
    assert not of_code(uow.findings, "SQD256")


def test_parents_already_in_the_session_give_no_numbers(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        known = session.scalars(select(Author)).all()
        statement = select(Author).options(joinedload(Author.awards))
        session.scalars(statement).unique().all()  # line:known
        assert known
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("known")
    assert "joined-eager-loaded the collection Author.awards — load the collection(s)" in (
        finding.message
    )
    assert finding.details["factor"] is None


async def test_async_joinedload_of_a_collection_is_reported(
    eager_async_engine: AsyncEngine,
) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(eager_async_engine) as session,
    ):
        statement = select(Author).where(FIRST_THREE).options(joinedload(Author.awards))
        authors = (await session.scalars(statement)).unique().all()  # line:async
        assert len(authors) == 3
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("async")
    assert "3 Author object(s) came back as 6 rows (2.0× per Author)" in finding.message


async def test_async_selectinload_twin_is_silent(eager_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(eager_async_engine) as session,
    ):
        statement = select(Author).options(selectinload(Author.awards))
        authors = (await session.scalars(statement)).all()
        assert authors
    assert not of_code(uow.findings, "SQD256")
