"""SQD153: a query that autoflushed pending objects, and its twins."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, ForeignKey, String, Text, event, func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import sqla_doctor

from .models import Post, User
from .support import line_of, of_code, one, relative


def test_object_changed_after_its_autoflush_is_reported(engine: Engine) -> None:
    """The detector's own example: the query INSERTs the user before its bio is set,
    and the commit UPDATEs the same row."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)  # line:add
        posts = session.scalar(select(func.count()).select_from(Post))  # line:query
        user.bio = f"{posts} posts"
        session.commit()  # line:commit
    finding = one(uow.findings, "SQD153")
    here = relative(__file__)
    assert finding.location.line == line_of("query")
    assert finding.message == (
        f"query at {here}:{line_of('query')} autoflushed 1 pending object(s) (1 User) before "
        "running — the objects were not complete yet: INSERTed half-built, then changed "
        "(User.bio), an UPDATE of the rows it had just inserted; set their values before "
        "querying, or build them inside `with session.no_autoflush:` and flush once they are"
    )
    assert [r.location.line for r in finding.related] == [line_of("add"), line_of("commit")]
    assert finding.details["changed_after"] == ["User.bio"]
    assert finding.severity.value == "info"


def test_setting_the_values_before_the_query_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        posts = session.scalar(select(func.count()).select_from(Post))
        session.add(User(name="ada", bio=f"{posts} posts"))
        session.commit()
    assert not uow.findings


def test_lookup_then_add_loop_autoflushes_complete_objects_silently(engine: Engine) -> None:
    """Each lookup autoflushes the previous iteration's post, complete: nothing wrong."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        added = []
        for title, author in [("a", "user1"), ("b", "user2"), ("c", "user3")]:
            author_id = session.scalar(select(User.id).where(User.name == author))
            added.append(Post(title=title, author_id=author_id))
            session.add(added[-1])
        # The lookups did autoflush: the first two posts are rows already.
        assert [inspect(post).persistent for post in added] == [True, True, False]
        session.commit()
    assert not uow.findings


def test_add_then_count_is_silent(engine: Engine) -> None:
    """A duplicate check after add() autoflushes the new row, which is complete."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        total = session.scalar(select(func.count()).select_from(User))
        assert user.id is not None
        session.commit()
    assert total == 6
    assert not uow.findings


def test_setting_the_value_it_already_had_is_not_a_change(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = User(name="ada")
        session.add(user)
        session.scalar(select(func.count()).select_from(User))
        user.name = "ada"
        session.commit()
    assert not uow.findings


def test_change_seen_in_a_later_autoflush_is_reported_at_the_first_query(
    engine: Engine,
) -> None:
    """A loop that adds, then looks up and completes: the next iteration's autoflush
    UPDATEs the previous object."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for name in ["ada", "bob"]:
            user = User(name=name)
            session.add(user)
            user.bio = session.scalar(select(User.name).where(User.id == 1))  # line:loop
        session.commit()
    finding = one(uow.findings, "SQD153")
    assert finding.location.line == line_of("loop")
    assert "then changed (User.bio), an UPDATE" in finding.message


def test_change_still_unflushed_when_the_unit_ends_is_reported(engine: Engine) -> None:
    with Session(engine) as session:
        with sqla_doctor.track(mode="collect") as uow:
            user = User(name="ada")
            session.add(user)
            posts = session.scalar(select(func.count()).select_from(Post))  # line:unit-end
            user.bio = f"{posts} posts"
        session.rollback()
    finding = one(uow.findings, "SQD153")
    assert finding.location.line == line_of("unit-end")
    assert "INSERTed half-built, then changed (User.bio); set their values" in finding.message


def test_no_autoflush_block_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        with session.no_autoflush:
            session.add(User(name="ada"))
            session.scalar(select(func.count()).select_from(User))
        session.commit()
    assert not uow.findings


def test_explicit_flush_before_the_query_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.add(User(name="ada"))
        session.flush()
        session.scalar(select(func.count()).select_from(User))
        session.commit()
    assert not uow.findings


def test_autoflush_of_changes_only_is_not_reported(engine: Engine) -> None:
    """Only pending (new) objects count: flushing an UPDATE first is what users expect."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        user.name = "renamed"
        session.scalars(select(User)).all()
        session.commit()
    assert not uow.findings


def test_lazy_load_that_autoflushes_is_reported_at_the_attribute(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        post = Post(title="draft", author_id=2)
        session.add(post)
        assert user.posts  # line:lazy
        post.title = f"draft {len(user.posts)}"
        session.commit()
    assert one(uow.findings, "SQD153").location.line == line_of("lazy")


def test_commit_flush_is_not_an_autoflush(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.add(User(name="ada"))
        session.commit()
        session.scalars(select(User)).all()
    assert not of_code(uow.findings, "SQD153")


async def test_async_object_changed_after_its_autoflush_is_reported(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = User(name="ada")
        session.add(user)
        posts = await session.scalar(select(func.count()).select_from(Post))  # line:async-query
        user.bio = f"{posts} posts"
        await session.commit()
    finding = one(uow.findings, "SQD153")
    assert finding.location.line == line_of("async-query")
    assert "then changed (User.bio), an UPDATE" in finding.message


async def test_async_lookup_then_add_loop_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        added = []
        for title, author in [("a", "user1"), ("b", "user2")]:
            author_id = await session.scalar(select(User.id).where(User.name == author))
            added.append(Post(title=title, author_id=author_id))
            session.add(added[-1])
        assert inspect(added[0]).persistent  # autoflushed by the second lookup
        await session.commit()
    assert not uow.findings


async def test_async_explicit_flush_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        user = User(name="ada")
        session.add(user)
        await session.flush()
        posts = await session.scalar(select(func.count()).select_from(Post))
        user.bio = f"{posts} posts"
        await session.commit()
    assert not uow.findings


def import_post(session: Session, title: str, author_name: str) -> str:
    """The post is added before its author is looked up: the lookup autoflushes it
    half-built (author_id NULL), and the program catches the error."""
    try:
        post = Post(title=title)
        session.add(post)
        author = select(User.id).where(User.name == author_name)
        post.author_id = session.scalar(author)  # line:lookup
        session.commit()
        return "imported"
    except IntegrityError:
        session.rollback()
        return "failed"


def test_an_autoflush_that_fails_is_reported_even_when_caught(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert import_post(session, "draft", "user1") == "failed"
    finding = one(uow.findings, "SQD153")
    here = relative(__file__)
    assert finding.location.line == line_of("lookup")
    assert finding.message == (
        f"query at {here}:{line_of('lookup')} autoflushed 1 pending object(s) (1 Post) before "
        "running — the flush failed with IntegrityError: those objects were not complete "
        "yet; set their values before querying, or build them inside "
        "`with session.no_autoflush:` and flush once they are"
    )


def test_looking_up_first_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        author_id = session.scalar(select(User.id).where(User.name == "user1"))
        session.add(Post(title="draft", author_id=author_id))
        session.commit()
    assert not of_code(uow.findings, "SQD153")


async def test_async_autoflush_that_fails_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        post = Post(title="draft")
        session.add(post)
        try:
            post.author_id = await session.scalar(select(User.id))  # line:async-lookup
        except IntegrityError:
            await session.rollback()
    finding = one(uow.findings, "SQD153")
    assert finding.location.line == line_of("async-lookup")
    assert "the flush failed with IntegrityError" in finding.message


# -- columns the flush itself sets (a before_update hook): not the program's changes ---


class StampedBase(DeclarativeBase):
    pass


class Ticket(StampedBase):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    summary: Mapped[str | None] = mapped_column(Text)
    revision: Mapped[int] = mapped_column(default=0)
    notes: Mapped[list[Note]] = relationship()


class Note(StampedBase):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id"))


@event.listens_for(Ticket, "before_update")
def _count_revisions(_mapper: object, _connection: object, ticket: Ticket) -> None:
    """The audit-column hook: every UPDATE of a ticket bumps its revision."""
    ticket.revision = (ticket.revision or 0) + 1


@pytest.fixture
def tickets(engine: Engine) -> Engine:
    StampedBase.metadata.create_all(engine)
    return engine


def test_a_column_a_before_update_hook_sets_is_not_listed_as_a_change(tickets: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(tickets) as session:
        ticket = Ticket(title="disk full")
        session.add(ticket)
        open_tickets = session.scalar(select(func.count()).select_from(Ticket))
        ticket.summary = f"{open_tickets} open"
        session.commit()
        assert ticket.revision == 1
    finding = one(uow.findings, "SQD153")
    assert finding.details["changed_after"] == ["Ticket.summary"]
    assert "then changed (Ticket.summary), an UPDATE" in finding.message


def test_a_hooks_column_after_a_collection_append_is_silent(tickets: Engine) -> None:
    """Appending to the new ticket's notes makes it dirty, and its before_update hook
    sets a column at the next flush: the program changed no column of the row."""
    with sqla_doctor.track(mode="collect") as uow, Session(tickets) as session:
        ticket = Ticket(title="disk full", summary="no space left")
        session.add(ticket)
        session.scalar(select(func.count()).select_from(Ticket))
        ticket.notes.append(Note())
        session.commit()
        assert ticket.revision == 1
    assert not of_code(uow.findings, "SQD153")
