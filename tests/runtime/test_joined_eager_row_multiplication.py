"""SQD256: collections joined-eager-loaded, with the rows they multiplied."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, joinedload, lazyload, selectinload

import sqla_doctor
from sqla_doctor.config import ConfigError, RuntimeConfig
from sqla_doctor.config import load as load_config

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
def moderate_engine(engine: Engine) -> Engine:
    """3 authors with 2 books of 3 chapters and 2 awards each: moderate data."""
    EagerBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(seed_authors(chapters=3, awards=2))
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
        assert [len(a.awards) for a in authors] == [20, 20, 20]
    finding = one(uow.findings, "SQD256")
    assert finding.location.path == HERE
    assert finding.location.line == line_of("joined")
    assert finding.message == (
        f"`select(Author)` at {HERE}:{line_of('joined')} joined-eager-loaded the collection "
        "Author.awards: 3 Author object(s) came back as 60 rows (20.0× per Author) — load the "
        "collection(s) with .options(selectinload(Author.awards)) instead"
    )
    assert finding.details["factor"] == 20.0
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
    # Per author: 2 books × 10 chapters (Book.chapters is lazy="joined") × 20 awards.
    assert (
        "joined-eager-loaded the collections Author.books, Book.chapters and Author.awards "
        "side by side (a cartesian product: one row per combination of their children): "
        "3 Author object(s) came back as 1200 rows (400.0× per Author)"
    ) in finding.message
    assert finding.message.endswith(
        ".options(selectinload(Author.books).selectinload(Book.chapters), "
        'selectinload(Author.awards)) instead, or map Book.chapters with lazy="selectin" '
        '(lazy="joined" in the mapping joins it into every query)'
    )


def test_collection_joined_by_the_mapping_is_reported(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        books = session.scalars(select(Book)).unique().all()  # line:mapping
        assert len(books) == 6
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("mapping")
    assert "the collection Book.chapters: 6 Book object(s) came back as 60 rows (10.0×" in (
        finding.message
    )
    assert finding.message.endswith(
        "load the collection(s) with .options(selectinload(Book.chapters)) instead, or map "
        'Book.chapters with lazy="selectin" (lazy="joined" in the mapping joins it into every '
        "query)"
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
        statement = select(Author).options(joinedload(Author.books), joinedload(Author.awards))
        session.scalars(statement).unique().all()  # line:known
        assert known
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("known")
    assert (
        "joined-eager-loaded the collections Author.books, Book.chapters and Author.awards "
        "side by side (a cartesian product: one row per combination of their children) — "
        "load the collection(s)"
    ) in finding.message
    assert finding.details["factor"] is None


def test_one_collection_with_no_numbers_is_not_reported(eager_engine: Engine) -> None:
    """Unmeasured, one collection may be small: only a cartesian product is reported."""
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        known = session.scalars(select(Author)).all()
        session.scalars(select(Author).options(joinedload(Author.awards))).unique().all()
        assert known
    assert not of_code(uow.findings, "SQD256")


def test_side_by_side_parents_collected_before_the_end_were_counted_as_the_next_loaded(
    eager_engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = (
            select(Author)
            .where(FIRST_THREE)
            .options(joinedload(Author.books), joinedload(Author.awards))
        )
        last = None
        for author in session.scalars(statement).unique():  # line:streamed
            last = author
        # Only the last author is left at the end; the two before it were counted when
        # the next one loaded: 400 rows each.
        gc.collect()
        session.scalars(select(Author).where(Author.id == 4)).all()
        assert last is not None
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("streamed")
    assert "3 Author object(s) came back as 1200 rows (400.0× per Author)" in finding.message


def test_one_collection_whose_parents_were_collected_is_counted_as_it_loaded(
    eager_engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = select(Author).where(FIRST_THREE).options(joinedload(Author.awards))
        last = None
        for author in session.scalars(statement).unique():  # line:streamed-one
            last = author
        gc.collect()
        session.scalars(select(Author).where(Author.id == 4)).all()
        assert last is not None
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("streamed-one")
    assert "3 Author object(s) came back as 60 rows (20.0× per Author)" in finding.message


# -- a helper that loads, sums and returns a number: the parents die before the end -----


def awards_total(session: Session, *loader: object) -> int:
    """The shape of a report helper: nothing it loaded outlives the call."""
    statement = select(Author).options(*loader)  # type: ignore[arg-type]
    authors = session.scalars(statement).unique().all()  # line:helper
    return sum(len(a.awards) + len(a.books) for a in authors)


def add_lonely_author(engine: Engine) -> None:
    """An author without books or awards: one LEFT OUTER JOIN row of NULLs."""
    with Session(engine) as session:
        session.add(Author(name="lonely"))
        session.commit()


def test_joinedload_in_a_helper_that_returns_a_number_is_reported(eager_engine: Engine) -> None:
    add_lonely_author(eager_engine)
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        assert awards_total(session, joinedload(Author.awards)) == 3 * 20 + 1 + 3 * 2
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("helper")
    # 3 × 20 awards, the newcomer's 1 and the lonely author's row of NULLs: 62 rows.
    assert "5 Author object(s) came back as 62 rows (12.4× per Author)" in finding.message
    # The same figures as the exact count over parents still alive at the end.
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = select(Author).options(joinedload(Author.awards))
        authors = session.scalars(statement).unique().all()
        assert len(authors) == 5
    assert (one(uow.findings, "SQD256").details["rows"], len(authors)) == (62, 5)


def test_nested_joinedload_in_a_helper_counts_the_chain(eager_engine: Engine) -> None:
    add_lonely_author(eager_engine)
    nested = joinedload(Author.books).joinedload(Book.chapters)
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        assert awards_total(session, nested, selectinload(Author.awards)) == 3 * 20 + 1 + 3 * 2
    finding = one(uow.findings, "SQD256")
    # 3 authors × 2 books × 10 chapters, plus one row each for the two authors
    # without books.
    assert (
        "the nested collections Author.books and Book.chapters: 5 Author object(s) came "
        "back as 62 rows (12.4× per Author)"
    ) in finding.message
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        authors = session.scalars(select(Author).options(nested)).unique().all()
        assert len(authors) == 5
    assert one(uow.findings, "SQD256").details["rows"] == 62


def test_helper_twins_are_silent(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        assert awards_total(session, selectinload(Author.awards)) == 3 * 20 + 1 + 3 * 2
        assert awards_total(session, joinedload(Author.publisher)) == 3 * 20 + 1 + 3 * 2
        nested = selectinload(Author.books).selectinload(Book.chapters)
        assert awards_total(session, nested, joinedload(Author.publisher)) == 67
    assert not of_code(uow.findings, "SQD256")


def test_small_multiplication_in_a_helper_is_a_near_miss(moderate_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(moderate_engine) as session:
        assert awards_total(session, joinedload(Author.awards)) == 3 * 2 + 1 + 3 * 2
    assert not of_code(uow.findings, "SQD256")
    # Measured all the same (7 rows for 4 authors): only the minimums kept it quiet.
    config = RuntimeConfig(mode="collect", joined_eager_min_rows=0, joined_eager_min_factor=0)
    with sqla_doctor.track(config=config) as uow, Session(moderate_engine) as session:
        assert awards_total(session, joinedload(Author.awards)) == 13
    assert "4 Author object(s) came back as 7 rows (1.8× per Author)" in (
        one(uow.findings, "SQD256").message
    )


def genres_total(session: Session, loader: object) -> int:
    """A helper that streams its result: each author is gone once counted."""
    statement = select(Author).options(loader)  # type: ignore[arg-type]
    total = 0
    for author in session.scalars(statement).unique():  # line:genres
        total += len(author.genres)
    return total


def test_a_many_to_many_whose_children_are_shared_counts_their_rows(
    eager_engine: Engine,
) -> None:
    # Each genre object loads once, for the first author: its other rows loaded no
    # object, and nothing but the authors' collections counts them.
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        assert genres_total(session, joinedload(Author.genres)) == 3 * 20
        assert not session.identity_map, "counting them kept none of them alive"
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("genres")
    # Counted when the next author loaded, and the newcomer, last and without genres
    # (one row of NULLs), as it was collected.
    assert "4 Author object(s) came back as 61 rows (15.2× per Author)" in finding.message
    assert ".options(selectinload(Author.genres))" in finding.message


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_parents_expired_by_the_transactions_end_are_counted_as_they_were(
    eager_engine: Engine, end: str
) -> None:
    # A report that commits (or rolls back) before its next query: every author is still
    # there, expired, their genres gone from their __dict__. The ones before the last
    # were counted as the next loaded; the last, as the commit was about to expire it.
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = select(Author).options(joinedload(Author.genres))
        authors = session.scalars(statement).unique().all()  # line:expired-genres
        assert sum(len(a.genres) for a in authors) == 3 * 20
        if end == "commit":
            session.commit()
        else:
            session.rollback()
        session.scalars(select(Author).where(Author.id == 4)).all()
        assert all("genres" not in vars(a) for a in authors)
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("expired-genres")
    assert "4 Author object(s) came back as 61 rows (15.2× per Author)" in finding.message


def test_expired_parents_of_a_selectinload_are_the_silent_twin(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        statement = select(Author).options(selectinload(Author.genres))
        authors = session.scalars(statement).all()
        assert sum(len(a.genres) for a in authors) == 3 * 20
        session.commit()
        session.scalars(select(Author).where(Author.id == 4)).all()
    assert not of_code(uow.findings, "SQD256")


def test_a_shared_many_to_many_selectinload_is_the_silent_twin(eager_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(eager_engine) as session:
        assert genres_total(session, selectinload(Author.genres)) == 3 * 20
    assert not of_code(uow.findings, "SQD256")


# -- moderate data: a joinedload() of a small collection is a reasonable choice --------


def moderate_joinedloads(engine: Engine) -> list[object]:
    """The objects loaded, kept by the caller until they are counted (the unit's end).

    One session each, so that every query loads (and is measured on) its own parents.
    """
    with Session(engine) as session:
        nested = select(Author).options(joinedload(Author.books).joinedload(Book.chapters))
        authors = session.scalars(nested).unique().all()  # line:moderate-nested
        # 3 authors × 2 books × 3 chapters (+ the newcomer): 19 rows for 4 (4.8×).
        assert [len(b.chapters) for a in authors for b in a.books] == [3] * 6
    with Session(engine) as session:
        statement = select(Author).options(joinedload(Author.awards))
        awarded = session.scalars(statement).unique().all()  # line:moderate-awards
        assert [len(a.awards) for a in awarded] == [2, 2, 2, 1]
    with Session(engine) as session:
        books = session.scalars(select(Book)).unique().all()  # line:moderate-mapping
        assert len(books) == 6
    return [*authors, *awarded, *books]


def test_moderate_joinedload_of_a_collection_is_a_near_miss(moderate_engine: Engine) -> None:
    """A few authors with a few books of a few chapters: what the tutorials call moderate
    data, where joinedload() of a collection is a fine choice."""
    with sqla_doctor.track(mode="collect") as uow:
        loaded = moderate_joinedloads(moderate_engine)
    assert not of_code(uow.findings, "SQD256")
    # The same queries were measured, and only the minimums kept them quiet.
    config = RuntimeConfig(mode="collect", joined_eager_min_rows=0, joined_eager_min_factor=0)
    with sqla_doctor.track(config=config) as uow:
        loaded = moderate_joinedloads(moderate_engine)
    assert loaded
    lines = sorted(f.location.line for f in of_code(uow.findings, "SQD256"))
    assert lines == sorted(
        line_of(marker) for marker in ("moderate-nested", "moderate-awards", "moderate-mapping")
    )
    assert all(f.details["factor"] is not None for f in uow.findings)


def test_cartesian_product_of_sibling_collections_is_reported_on_small_data(
    moderate_engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(moderate_engine) as session:
        statement = (
            select(Author)
            .where(Author.id == 1)
            .options(joinedload(Author.books), joinedload(Author.awards))
        )
        author = session.scalars(statement).unique().one()  # line:small-cartesian
        assert len(author.awards) == 2
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("small-cartesian")
    # 2 books × 3 chapters × 2 awards: 12 rows, far under joined-eager-min-rows.
    assert "side by side (a cartesian product" in finding.message
    assert "1 Author object(s) came back as 12 rows (12.0× per Author)" in finding.message


def test_the_minimums_are_settings(eager_engine: Engine) -> None:
    assert RuntimeConfig().joined_eager_min_rows == 50
    assert RuntimeConfig().joined_eager_min_factor == 3.0
    statement = select(Author).where(FIRST_THREE).options(joinedload(Author.awards))
    # 60 rows, 20.0× per author: just under each raised minimum, then both met.
    for config, reported in [
        (RuntimeConfig(mode="collect", joined_eager_min_rows=61), False),
        (RuntimeConfig(mode="collect", joined_eager_min_factor=20.5), False),
        (RuntimeConfig(mode="collect", joined_eager_min_rows=60, joined_eager_min_factor=20), True),
    ]:
        with sqla_doctor.track(config=config) as uow, Session(eager_engine) as session:
            authors = session.scalars(statement).unique().all()
            assert len(authors) == 3
        assert bool(of_code(uow.findings, "SQD256")) is reported, config


def test_the_minimums_are_read_from_pyproject(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        "[tool.sqla-doctor.runtime]\njoined-eager-min-rows = 10\njoined-eager-min-factor = 2\n"
    )
    runtime = load_config(pyproject).runtime
    assert runtime.joined_eager_min_rows == 10
    assert runtime.joined_eager_min_factor == 2.0
    assert isinstance(runtime.joined_eager_min_factor, float)
    pyproject.write_text("[tool.sqla-doctor.runtime]\njoined-eager-min-factor = -1\n")
    with pytest.raises(ConfigError, match="joined-eager-min-factor must be a non-negative"):
        load_config(pyproject)
    pyproject.write_text('[tool.sqla-doctor.runtime]\njoined-eager-min-rows = "many"\n')
    with pytest.raises(ConfigError, match="joined-eager-min-rows"):
        load_config(pyproject)


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
    assert "3 Author object(s) came back as 60 rows (20.0× per Author)" in finding.message


async def test_async_selectinload_twin_is_silent(eager_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(eager_async_engine) as session,
    ):
        statement = select(Author).options(selectinload(Author.awards))
        authors = (await session.scalars(statement)).all()
        assert authors
    assert not of_code(uow.findings, "SQD256")


async def async_awards_total(session: AsyncSession, *loader: object) -> int:
    statement = select(Author).where(FIRST_THREE).options(*loader)  # type: ignore[arg-type]
    authors = (await session.scalars(statement)).unique().all()  # line:async-helper
    return sum(len(a.awards) for a in authors)


async def test_async_joinedload_in_a_helper_that_returns_a_number_is_reported(
    eager_async_engine: AsyncEngine,
) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(eager_async_engine) as session,
    ):
        assert await async_awards_total(session, joinedload(Author.awards)) == 60
    finding = one(uow.findings, "SQD256")
    assert finding.location.line == line_of("async-helper")
    assert "3 Author object(s) came back as 60 rows (20.0× per Author)" in finding.message


async def test_async_selectinload_in_a_helper_is_silent(eager_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(eager_async_engine) as session,
    ):
        assert await async_awards_total(session, selectinload(Author.awards)) == 60
        many_to_one = (joinedload(Author.publisher), selectinload(Author.awards))
        assert await async_awards_total(session, *many_to_one) == 60
    assert not of_code(uow.findings, "SQD256")
