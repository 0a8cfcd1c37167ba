"""SQD251: a relationship lazy-loaded per parent from one line, and its fixed twins."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import pytest
from sqlalchemy import Engine, ForeignKey, Select, create_engine, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    aliased,
    contains_eager,
    immediateload,
    joinedload,
    mapped_column,
    relationship,
    selectin_polymorphic,
    selectinload,
    sessionmaker,
    with_polymorphic,
)

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .fixtures import suppressed
from .models import USERS, Comment, Post, User
from .support import line_of, of_code, one, relative


def test_loop_over_users_reading_posts_is_reported_with_loop_query_and_fix(
    engine: Engine,
) -> None:
    """The message names the relationship, the loop line, the query line and the option."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()  # line:query
        for user in users:
            assert len(user.posts) == 2  # line:loop
    finding = one(uow.findings, "SQD251")
    here = relative(__file__)
    assert finding.location.path == here
    assert finding.location.line == line_of("loop")
    assert finding.message == (
        f"User.posts lazy-loaded {USERS}× from {here}:{line_of('loop')} "
        f"(parents loaded by the query at {here}:{line_of('query')}) — "
        "add .options(selectinload(User.posts)) to that query"
    )
    assert finding.related[0].location.line == line_of("query")
    assert finding.fix_hint == ".options(selectinload(User.posts))"
    assert finding.details["distinct_parents"] == USERS
    assert finding.pitfalls == ("P01",)


def test_a_sessions_report_before_its_end_says_the_count_is_a_lower_bound(
    engine: Engine,
) -> None:
    """Under install(), a session reports at the end of each transaction: a loop that
    commits after each parent goes on lazy-loading after the first report."""
    sqla_doctor.install(mode="collect")
    with Session(engine, expire_on_commit=False) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts
            session.commit()
    finding = one(sqla_doctor.collected(), "SQD251")
    loads = finding.details["loads"]
    assert loads < USERS
    assert finding.message.startswith(f"User.posts lazy-loaded at least {loads}× from ")


def test_a_sessions_report_at_its_end_gives_the_final_count(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts
    finding = one(sqla_doctor.collected(), "SQD251")
    assert finding.message.startswith(f"User.posts lazy-loaded {USERS}× from ")


def test_a_sessionmaker_begin_block_reports_the_final_count(engine: Engine) -> None:
    """`with SessionLocal.begin()`: the commit that ends the block ends the session too."""
    sqla_doctor.install(mode="collect")
    with sessionmaker(engine).begin() as session:
        for user in session.scalars(select(User)).all():
            assert user.posts
    finding = one(sqla_doctor.collected(), "SQD251")
    assert finding.message.startswith(f"User.posts lazy-loaded {USERS}× from ")


def test_an_explicit_unit_reports_the_final_count_of_a_loop_that_commits(
    engine: Engine,
) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine, expire_on_commit=False) as session,
    ):
        for user in session.scalars(select(User)).all():
            assert user.posts
            session.commit()
    assert one(uow.findings, "SQD251").message.startswith(
        f"User.posts lazy-loaded {USERS}× from "
    )


def test_a_selectinload_rerun_per_object_a_commit_expired_is_told_the_commit(
    engine: Engine,
) -> None:
    """The query's option loaded the posts; a commit per user expired every User, and
    each one read is reloaded alone, with a load of its posts: not immediateload()."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User).options(selectinload(User.posts))).all()
        for user in users:
            assert user.posts  # line:expired-read
            session.commit()  # line:expiring-commit
    finding = one(uow.findings, "SQD251")
    here = relative(__file__)
    assert finding.location.line == line_of("expired-read")
    assert finding.message == (
        f"User.posts lazy-loaded {USERS - 1}× from {here}:{line_of('expired-read')} as each "
        f"expired User was reloaded, one at a time — the commit at "
        f"{here}:{line_of('expiring-commit')} expired them: commit after the loop, or create "
        "the session with expire_on_commit=False"
    )
    assert finding.fix_hint == "expire_on_commit=False"
    assert [r.location.line for r in finding.related] == [line_of("expiring-commit")]


async def test_an_async_selectinload_rerun_per_object_a_commit_expired_is_told_the_commit(
    async_engine: AsyncEngine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSession(async_engine) as session:
            query = select(User).options(selectinload(User.posts))
            users = (await session.scalars(query)).all()
            for user in users:
                assert await user.awaitable_attrs.posts
                await session.commit()  # line:async-expiring-commit
    finding = one(uow.findings, "SQD251")
    assert "as each expired User was reloaded, one at a time" in finding.message
    assert finding.related[0].location.line == line_of("async-expiring-commit")


def test_a_commit_per_object_without_expiring_them_is_the_silent_twin(engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine, expire_on_commit=False) as session,
    ):
        users = session.scalars(select(User).options(selectinload(User.posts))).all()
        for user in users:
            assert user.posts
            session.commit()
    assert not of_code(uow.findings, "SQD251")


def test_selectinload_twin_is_silent(engine: Engine) -> None:
    """The fix from the message makes the finding go away."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User).options(selectinload(User.posts))).all()
        for user in users:
            assert len(user.posts) == 2
    assert not uow.findings
    assert uow.query_count == 2


def users_by_raw_sql(option: bool) -> Any:
    statement = select(User).from_statement(text("SELECT * FROM users ORDER BY id"))
    return statement.options(selectinload(User.posts)) if option else statement


def test_parents_loaded_by_from_statement_text_name_that_query(engine: Engine) -> None:
    """select(User).from_statement(text(...)) is no SELECT to ORMExecuteState.is_select,
    yet it loads the parents: the message and the related lines name it."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(users_by_raw_sql(option=False)).all()  # line:raw-query
        for user in users:
            assert len(user.posts) == 2
    finding = one(uow.findings, "SQD251")
    here = relative(__file__)
    assert f"(parents loaded by the query at {here}:{line_of('raw-query')}) — " in (
        finding.message
    )
    assert finding.message.endswith("add .options(selectinload(User.posts)) to that query")
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("raw-query"), "the query that loaded the parents")
    ]


def test_from_statement_text_with_the_option_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(users_by_raw_sql(option=True)).all()
        for user in users:
            assert len(user.posts) == 2
    assert not uow.findings


def test_many_to_one_suggests_joinedload(engine: Engine) -> None:
    """A scalar relationship is best joined; a collection is best selectin-loaded."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        posts = session.scalars(select(Post)).all()
        # Expunge the authors that loading the posts did not bring in; nothing is cached.
        titles = [post.author.name for post in posts]
    assert len(titles) == 2 * USERS
    finding = one(uow.findings, "SQD251")
    assert "Post.author lazy-loaded" in finding.message
    assert ".options(joinedload(Post.author))" in finding.message


def test_joinedload_twin_for_many_to_one_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        posts = session.scalars(select(Post).options(joinedload(Post.author))).all()
        assert {post.author.name for post in posts}
    assert not of_code(uow.findings, "SQD251")


def test_a_query_that_joins_the_collection_is_told_contains_eager(engine: Engine) -> None:
    # The JOIN filters the users; contains_eager() reads the posts from it, and the
    # message says that the collection then holds only the matching rows.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        stmt = select(User).join(User.posts).where(Post.title.like("post %.1"))
        users = session.scalars(stmt).unique().all()
        assert all(len(user.posts) == 2 for user in users)
    finding = one(uow.findings, "SQD251")
    assert finding.message.endswith(
        "that query already joins Post: add .options(contains_eager(User.posts)) and "
        ".unique() to fill User.posts from the joined rows; it then holds only the rows "
        "the query keeps (selectinload(User.posts) loads all of them)"
    )
    assert finding.fix_hint == ".options(contains_eager(User.posts))"


def test_a_query_that_joins_the_many_to_one_is_told_contains_eager(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        stmt = select(Post).join(Post.author).where(User.name != "nobody")
        assert all(post.author.name for post in session.scalars(stmt))
    finding = one(uow.findings, "SQD251")
    assert finding.message.endswith(
        "that query already joins User: add .options(contains_eager(Post.author)) to fill "
        "it from the join"
    )


@pytest.mark.parametrize("join", ["entity", "on-clause", "alias"])
def test_a_join_that_may_follow_another_path_keeps_the_usual_option(
    engine: Engine, join: str
) -> None:
    # join(User), an explicit ON clause or of_type() may join another path to the same
    # class: contains_eager() would then fill the relationship with the wrong rows.
    author = aliased(User)
    stmt = {
        "entity": select(Post).join(User),
        "on-clause": select(Post).join(User, Post.author_id == User.id),
        "alias": select(Post).join(Post.author.of_type(author)),
    }[join]
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert all(post.author.name for post in session.scalars(stmt))
    assert ".options(joinedload(Post.author))" in one(uow.findings, "SQD251").message


def test_contains_eager_twin_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        stmt = select(Post).join(Post.author).options(contains_eager(Post.author))
        assert all(post.author.name for post in session.scalars(stmt))
    assert not of_code(uow.findings, "SQD251")


def test_a_join_to_another_table_keeps_the_usual_option(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        stmt = select(Post).join(Post.comments).where(Comment.body != "")
        assert all(post.author.name for post in session.scalars(stmt))
    assert ".options(joinedload(Post.author))" in one(uow.findings, "SQD251").message


def test_immediateload_is_told_to_become_selectinload(engine: Engine) -> None:
    """immediateload() looks eager, and runs a lazy load per parent as the rows load."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        stmt = select(User).options(immediateload(User.posts))
        users = session.scalars(stmt).all()  # line:immediate
    assert sum(len(user.posts) for user in users) == 2 * USERS
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("immediate")
    assert finding.message.endswith(
        "immediateload(User.posts) runs one SELECT per User: use "
        ".options(selectinload(User.posts)) on that query instead"
    )
    assert finding.fix_hint == ".options(selectinload(User.posts))"
    with sqla_doctor.track(mode="collect") as fixed, Session(engine) as session:
        users = session.scalars(select(User).options(selectinload(User.posts))).all()
    assert sum(len(user.posts) for user in users) == 2 * USERS
    assert not fixed.findings


class ShelfBase(DeclarativeBase):
    pass


class Shelf(ShelfBase):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    boxes: Mapped[list[Box]] = relationship(lazy="immediate")


class Box(ShelfBase):
    __tablename__ = "boxes"
    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("shelves.id"))


def test_a_relationship_mapped_lazy_immediate_is_told_selectin() -> None:
    engine = create_engine("sqlite://")
    ShelfBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Shelf(boxes=[Box()]) for _ in range(3))
        session.commit()
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert len(session.scalars(select(Shelf)).all()) == 3
    assert one(uow.findings, "SQD251").message.endswith(
        'Shelf.boxes is lazy="immediate", which runs one SELECT per Shelf: add '
        '.options(selectinload(Shelf.boxes)) to that query, or declare the relationship '
        'lazy="selectin"'
    )
    with sqla_doctor.track(mode="collect") as fixed, Session(engine) as session:
        assert len(session.scalars(select(Shelf).options(selectinload(Shelf.boxes))).all()) == 3
    assert not fixed.findings
    engine.dispose()


def test_one_parent_read_twice_is_not_an_n_plus_one(engine: Engine) -> None:
    """Loads are counted per distinct parent: one user's posts, expired and reloaded."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        for _ in range(3):
            session.expire(user, ["posts"])
            assert user.posts
    assert not of_code(uow.findings, "SQD251")


def test_single_lazy_load_is_below_the_threshold(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        assert user.posts
    assert not uow.findings


def test_threshold_comes_from_the_runtime_config(engine: Engine) -> None:
    config = RuntimeConfig(mode="collect", n_plus_one_threshold=USERS + 1)
    with sqla_doctor.track(config=config) as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts
    assert not uow.findings


def test_n_plus_one_hidden_in_a_helper_points_at_the_helper(engine: Engine) -> None:
    """The lazy load happens in a to_dict()-style helper: that is the line to look at."""

    def to_dict(user: User) -> dict[str, Any]:
        return {"name": user.name, "posts": [p.title for p in user.posts]}  # line:helper

    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        payload = [to_dict(user) for user in session.scalars(select(User)).all()]
    assert len(payload) == USERS
    assert one(uow.findings, "SQD251").location.line == line_of("helper")


def post_count(session: Session, user_id: int) -> int:
    user = session.get(User, user_id)  # line:get-per-id
    assert user is not None
    return len(user.posts)  # line:posts-per-id


def test_an_object_fetched_per_id_is_told_to_load_them_all_in_one_query(engine: Engine) -> None:
    """A loop of session.get(): an option on each get still runs two queries per id."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        counts = [post_count(session, user_id) for user_id in range(1, USERS + 1)]
    assert sum(counts) > 0
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("posts-per-id")
    where = f"{relative(__file__)}:{line_of('get-per-id')}"
    assert finding.message == (
        f"User.posts lazy-loaded {USERS}× from {relative(__file__)}:{line_of('posts-per-id')} "
        f"(each User loaded by its own query at {where}) — load the User objects in one query "
        "with .options(selectinload(User.posts)) (e.g. select(User).where(User.id.in_(ids))) "
        "instead of one query per User"
    )
    assert [r.location.line for r in finding.related] == [line_of("get-per-id")]


def test_objects_fetched_in_one_query_with_the_option_are_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(
            select(User).where(User.id.in_(range(1, USERS + 1))).options(selectinload(User.posts))
        ).all()
        assert sum(len(user.posts) for user in users) > 0
    assert not uow.findings


def titles_of_all(session: Session) -> list[str]:
    users = session.scalars(select(User)).all()  # line:rerun-query
    return [post.title for user in users for post in user.posts]


def test_a_query_run_again_for_several_parents_keeps_the_option_on_it(engine: Engine) -> None:
    """A task run twice in one process: its query loads several parents each time."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for _ in range(2):
            titles_of_all(session)
            session.expire_all()
    finding = one(uow.findings, "SQD251")
    assert f"(parents loaded by the query at {relative(__file__)}:" in finding.message
    assert finding.message.endswith("add .options(selectinload(User.posts)) to that query")


per_user = sqla_doctor.track("per user", mode="collect")


@per_user
def titles(user: User) -> list[str]:
    return [post.title for post in user.posts]  # line:tracked-helper


def test_a_tracked_helper_called_per_row_does_not_hide_the_n_plus_one(engine: Engine) -> None:
    """Each call's own unit sees one lazy load; the unit around them sees the loop."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()  # line:tracked-query
        assert all(titles(user) for user in users)
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("tracked-helper")
    assert finding.details["distinct_parents"] == USERS
    assert finding.related[0].location.line == line_of("tracked-query")
    assert per_user.last is not None
    assert per_user.last.query_count == 1
    assert not per_user.last.findings, "one lazy load in each call's own unit"


def test_a_tracked_helper_over_eager_loaded_rows_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User).options(selectinload(User.posts))).all()
        assert all(titles(user) for user in users)
    assert not uow.findings


def test_an_n_plus_one_inside_the_nested_unit_is_reported_once(engine: Engine) -> None:
    """The inner unit reports it; the unit around it, which saw the same loads, lists it once."""

    @sqla_doctor.track(mode="collect")
    def report() -> int:
        with Session(engine) as session:
            return sum(len(u.posts) for u in session.scalars(select(User)))  # line:inner-loop

    tracker = sqla_doctor.track(mode="collect")
    with tracker as outer:
        report()
        report()
    findings = of_code(outer.findings, "SQD251")
    assert [f.location.line for f in findings] == [line_of("inner-loop")]


async def test_tracked_coroutines_awaited_per_row_do_not_hide_the_n_plus_one(
    async_engine: AsyncEngine,
) -> None:
    @sqla_doctor.track(mode="collect")
    async def titles_of(user: User) -> list[str]:
        return [p.title for p in await user.awaitable_attrs.posts]  # line:async-tracked

    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        users = (await session.scalars(select(User))).all()
        for user in users:
            assert await titles_of(user)
    assert one(uow.findings, "SQD251").location.line == line_of("async-tracked")


def test_nested_n_plus_one_suggests_the_chained_option(engine: Engine) -> None:
    """Posts loaded lazily per user, then comments per post: both are reported."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            for post in user.posts:  # line:outer
                assert post.comments  # line:inner
    findings = of_code(uow.findings, "SQD251")
    by_line = {f.location.line: f for f in findings}
    assert set(by_line) == {line_of("outer"), line_of("inner")}
    inner = by_line[line_of("inner")]
    assert "parents loaded by the lazy load of User.posts" in inner.message
    assert "selectinload(User.posts).selectinload(Post.comments)" in inner.message


@pytest.mark.parametrize(
    ("code", "reported"),
    [
        (suppressed.noqa_by_code, False),
        (suppressed.noqa_by_name, False),
        (suppressed.bare_noqa, False),
        (suppressed.noqa_for_another_code, True),
    ],
)
def test_noqa_on_the_loop_line(
    engine: Engine, code: Callable[[Session], None], reported: bool
) -> None:
    """``# noqa: SQD251`` (or the name, or a bare noqa) on the user's line silences it."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        code(session)
    assert bool(of_code(uow.findings, "SQD251")) is reported


def test_allow_pattern_on_the_relationship(engine: Engine) -> None:
    config = RuntimeConfig(mode="collect", allow=("SQD251:User.posts",))
    with sqla_doctor.track(config=config) as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts
    assert not uow.findings


def test_a_relationship_refreshed_per_object_is_told_one_reloading_query(
    engine: Engine,
) -> None:
    """session.refresh(user, ["posts"]) reloads the posts: an option on the query that
    first loaded the users would reload nothing."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            session.refresh(user, ["posts"])  # line:refresh
    finding = one(uow.findings, "SQD251")
    here = relative(__file__)
    assert finding.location.line == line_of("refresh")
    assert finding.message == (
        f"User.posts lazy-loaded {USERS}× from {here}:{line_of('refresh')} by "
        "session.refresh(), one User at a time — reload all of them in one query instead: "
        "session.scalars(select(User).where(User.id.in_(ids)).options(selectinload("
        "User.posts)).execution_options(populate_existing=True))"
    )
    assert finding.fix_hint == (
        ".options(selectinload(User.posts)).execution_options(populate_existing=True)"
    )


def test_the_reloading_query_is_the_refresh_loops_silent_twin(engine: Engine) -> None:
    """The advice, followed: one query for the users, one for their posts, and the posts
    another connection added since are there."""
    with Session(engine) as session:
        users = session.scalars(select(User).options(selectinload(User.posts))).all()
        ids = [user.id for user in users]
        with engine.begin() as connection:
            connection.execute(insert(Post), [{"title": "new", "author_id": i} for i in ids])
        with sqla_doctor.track(mode="collect") as uow:
            reloaded = session.scalars(
                select(User)
                .where(User.id.in_(ids))
                .options(selectinload(User.posts))
                .execution_options(populate_existing=True)
            ).all()
        assert uow.query_count == 2
        assert not uow.findings
        assert [len(user.posts) for user in reloaded] == [3] * USERS


async def test_async_refresh_of_a_relationship_per_object_is_told_one_reloading_query(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        for user in (await session.scalars(select(User))).all():
            await session.refresh(user, ["posts"])  # line:async-refresh
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("async-refresh")
    assert "by session.refresh(), one User at a time — reload all of them in one query" in (
        finding.message
    )


async def test_async_awaitable_attrs_loop_is_reported(async_engine: AsyncEngine) -> None:
    """Under AsyncSession the lazy load runs in SQLAlchemy's greenlet; the site is found."""
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        users = (await session.scalars(select(User))).all()  # line:async-query
        for user in users:
            assert len(await user.awaitable_attrs.posts) == 2  # line:async-loop
    finding = one(uow.findings, "SQD251")
    assert finding.location.path == relative(__file__)
    assert finding.location.line == line_of("async-loop")
    assert finding.related[0].location.line == line_of("async-query")


async def test_async_selectinload_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        users = (await session.scalars(select(User).options(selectinload(User.posts)))).all()
        for user in users:
            assert len(user.posts) == 2
    assert not uow.findings


async def test_async_run_sync_loop_is_reported(async_engine: AsyncEngine) -> None:
    def titles(sync_session: Session) -> list[str]:
        users = sync_session.scalars(select(User)).all()
        return [post.title for user in users for post in user.posts]  # line:run-sync

    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        assert len(await session.run_sync(titles)) == 2 * USERS
    assert one(uow.findings, "SQD251").location.line == line_of("run-sync")


TEMPLATE = """<ul>
{% for user in users %}
  <li>{{ user.name }}: {% for post in user.posts %}{{ post.title }} {% endfor %}</li>
{% endfor %}
</ul>
"""


def test_an_n_plus_one_in_a_jinja_template_points_at_the_templates_line(
    engine: Engine, tmp_path: Path
) -> None:
    # Jinja compiles the template to Python that keeps the template's file name but has
    # its own line numbers: the finding shows the template's.
    (tmp_path / "users.html").write_text(TEMPLATE)
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(tmp_path), autoescape=True)
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        templates.get_template("users.html").render(users=users)
    finding = one(uow.findings, "SQD251")
    assert finding.location.path == str(tmp_path / "users.html")
    assert finding.location.line == 3


class TreeBase(DeclarativeBase):
    pass


class Node(TreeBase):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    children: Mapped[list[Node]] = relationship()


def render(node: Node) -> int:
    return 1 + sum(render(child) for child in node.children)  # line:tree


@pytest.fixture
def tree() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    TreeBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Node(children=[Node(children=[Node(), Node()]) for _ in range(3)]))
        session.commit()
    yield engine
    engine.dispose()


def test_a_tree_walked_level_by_level_suggests_one_recursive_option(tree: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(tree) as session:
        root = session.scalars(select(Node).where(Node.parent_id.is_(None))).one()  # line:root
        assert render(root) == 10
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("tree")
    assert finding.fix_hint == ".options(selectinload(Node.children, recursion_depth=-1))"
    # The option goes on the query of the first level, not on the lazy loads.
    assert finding.message.endswith(
        "load the whole tree up front: .options(selectinload(Node.children, "
        f"recursion_depth=-1)) on the query that loads Node (at {relative(__file__)}:"
        f"{line_of('root')})"
    )
    assert (finding.related[0].location.line, finding.related[0].message) == (
        line_of("root"),
        "the query that loaded the first Node objects",
    )


def test_the_recursive_option_is_the_silent_twin(tree: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(tree) as session:
        query = select(Node).where(Node.parent_id.is_(None))
        root = session.scalars(query.options(selectinload(Node.children, recursion_depth=-1))).one()
        assert render(root) == 10
    assert not uow.findings


class Category(TreeBase):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"))
    parent: Mapped[Category | None] = relationship(remote_side=[id])


@pytest.fixture
def categories() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    TreeBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Category(name="leaf", parent=Category(name="top")) for _ in range(4))
        session.commit()
    yield engine
    engine.dispose()


def breadcrumbs(engine: Engine, query: Select[tuple[Category]]) -> list[str]:
    with Session(engine) as session:
        leaves = session.scalars(query).all()  # line:leaves
        return [f"{leaf.parent.name}/{leaf.name}" for leaf in leaves if leaf.parent]  # line:crumb


def test_a_self_referential_relationship_read_one_level_down_is_told_the_query_option(
    categories: Engine,
) -> None:
    """Each leaf's parent is read once, none through another: no tree is walked, and the
    leaves came from the query, not from the lazy loads of Category.parent."""
    leaves = select(Category).where(Category.name == "leaf")
    with sqla_doctor.track(mode="collect") as uow:
        assert len(breadcrumbs(categories, leaves)) == 4
    finding = one(uow.findings, "SQD251")
    here = relative(__file__)
    assert finding.location.line == line_of("crumb")
    assert finding.message == (
        f"Category.parent lazy-loaded 4× from {here}:{line_of('crumb')} (parents loaded by "
        f"the query at {here}:{line_of('leaves')}) — add .options(joinedload(Category.parent)) "
        "to that query"
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("leaves"), "the query that loaded the parents")
    ]
    with sqla_doctor.track(mode="collect") as fixed:
        assert len(breadcrumbs(categories, leaves.options(joinedload(Category.parent)))) == 4
    assert not fixed.findings


def path_to_top(engine: Engine) -> list[str]:
    with Session(engine) as session:
        node = session.scalars(select(Category).where(Category.name == "c0")).one()
        names = []
        while node is not None:
            names.append(node.name)
            node = node.parent  # line:climb
        return names


def test_a_self_referential_relationship_climbed_level_by_level_is_still_a_tree(
    categories: Engine,
) -> None:
    with Session(categories) as session:
        chain = Category(name="c2", parent=Category(name="c3"))
        session.add(Category(name="c0", parent=Category(name="c1", parent=chain)))
        session.commit()
    with sqla_doctor.track(mode="collect") as uow:
        assert path_to_top(categories) == ["c0", "c1", "c2", "c3"]
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("climb")
    assert finding.fix_hint == ".options(selectinload(Category.parent, recursion_depth=-1))"


class PolyBase(DeclarativeBase):
    pass


class Club(PolyBase):
    __tablename__ = "club"
    id: Mapped[int] = mapped_column(primary_key=True)
    members: Mapped[list[Party]] = relationship()


class Party(PolyBase):
    __tablename__ = "party"
    id: Mapped[int] = mapped_column(primary_key=True)
    club_id: Mapped[int | None] = mapped_column(ForeignKey("club.id"))
    kind: Mapped[str]
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "party",
    }


class Customer(Party):
    __tablename__ = "customer"
    id: Mapped[int] = mapped_column(ForeignKey("party.id"), primary_key=True)
    orders: Mapped[list[Order]] = relationship()
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "customer"}


class Order(PolyBase):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    total: Mapped[int]


class Supplier(Party):
    __tablename__ = "supplier"
    id: Mapped[int] = mapped_column(ForeignKey("party.id"), primary_key=True)
    invoices: Mapped[list[Invoice]] = relationship()
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "supplier"}


class Invoice(PolyBase):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    supplier_id: Mapped[int] = mapped_column(ForeignKey("supplier.id"))
    total: Mapped[int]


POLY_NAMES = {
    "select": select,
    "selectinload": selectinload,
    "joinedload": joinedload,
    "selectin_polymorphic": selectin_polymorphic,
    "Club": Club,
    "Party": Party,
    "Customer": Customer,
    "Supplier": Supplier,
}


@pytest.fixture
def parties() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    PolyBase.metadata.create_all(engine)
    with Session(engine) as session:
        members: list[Party] = [Customer(orders=[Order(total=i)]) for i in range(4)]
        session.add(Club(members=[*members, Party()]))
        session.commit()
    yield engine
    engine.dispose()


def total_of(parties: Iterable[Party]) -> int:
    return sum(o.total for p in parties if isinstance(p, Customer) for o in p.orders)  # line:poly


def test_a_base_class_query_is_told_to_load_the_subclass_with_its_relationship(
    parties: Engine,
) -> None:
    """select(Party) ignores selectinload(Customer.orders) alone (P01): the option the
    finding names, added to the query as it is written, removes the lazy loads."""
    with sqla_doctor.track(mode="collect") as uow, Session(parties) as session:
        query = select(Party).options(selectinload(Customer.orders))
        assert total_of(session.scalars(query).all()) == 6
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("poly")
    option = "selectin_polymorphic(Party, [Customer]), selectinload(Customer.orders)"
    assert finding.fix_hint == f".options({option})"
    assert finding.message.endswith(
        f"add .options({option}) to that query: it selects Party, and an option on "
        "Customer.orders alone is ignored there"
    )
    with sqla_doctor.track(mode="collect") as fixed, Session(parties) as session:
        query = eval(f"select(Party){finding.fix_hint}", dict(POLY_NAMES))
        assert total_of(session.scalars(query).all()) == 6
    assert not fixed.findings
    assert fixed.query_count == 3


def test_relationships_of_two_subclasses_after_one_base_class_query_get_one_option(
    parties: Engine,
) -> None:
    """Customers' orders and suppliers' invoices read after one select(Party): each
    finding names both subclasses in one selectin_polymorphic(), since the two
    one-subclass options together raise InvalidRequestError ('Loader strategy replacement
    selectin_polymorphic(Party) is in conflict with existing strategy')."""

    def totals(parties: Iterable[Party]) -> int:
        return sum(
            o.total
            for p in parties
            if isinstance(p, Customer | Supplier)
            for o in (p.orders if isinstance(p, Customer) else p.invoices)  # line:both
        )

    with Session(parties) as session:
        session.add_all(Supplier(invoices=[Invoice(total=10)]) for _ in range(3))
        session.commit()
    with sqla_doctor.track(mode="collect") as uow, Session(parties) as session:
        assert totals(session.scalars(select(Party)).all()) == 36
    findings = [f for f in uow.findings if f.code == "SQD251"]
    option = (
        "selectin_polymorphic(Party, [Customer, Supplier]), "
        "selectinload(Customer.orders), selectinload(Supplier.invoices)"
    )
    assert sorted(f.details["relationship"] for f in findings) == [
        "Customer.orders",
        "Supplier.invoices",
    ]
    assert all(f.location.line == line_of("both") for f in findings)
    assert all(f.fix_hint == f".options({option})" for f in findings)
    with sqla_doctor.track(mode="collect") as fixed, Session(parties) as session:
        query = eval(f"select(Party).options({option})", dict(POLY_NAMES))
        assert totals(session.scalars(query).all()) == 36
    assert not fixed.findings


def test_a_with_polymorphic_query_is_told_the_path_through_its_entity(parties: Engine) -> None:
    """select(poly) raises ArgumentError for selectinload(Customer.orders) (and for the
    selectin_polymorphic() advice a select(Party) gets): the path starts from poly."""
    poly = with_polymorphic(Party, [Customer])
    with sqla_doctor.track(mode="collect") as uow, Session(parties) as session:
        assert total_of(session.scalars(select(poly)).all()) == 6
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("poly")
    assert finding.fix_hint == ".options(selectinload(poly.Customer.orders))"
    assert finding.message.endswith(
        "add .options(selectinload(poly.Customer.orders)) to that query, poly being the "
        "with_polymorphic(Party, [Customer]) it selects: an option on Customer.orders alone "
        "does not apply to it"
    )
    with sqla_doctor.track(mode="collect") as fixed, Session(parties) as session:
        query = eval(f"select(poly){finding.fix_hint}", {**POLY_NAMES, "poly": poly})
        assert total_of(session.scalars(query).all()) == 6
    assert not fixed.findings


def test_a_subclass_query_keeps_the_plain_option(parties: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(parties) as session:
        assert total_of(session.scalars(select(Customer)).all()) == 6
    finding = one(uow.findings, "SQD251")
    assert finding.fix_hint == ".options(selectinload(Customer.orders))"
    with sqla_doctor.track(mode="collect") as fixed, Session(parties) as session:
        query = eval(f"select(Customer){finding.fix_hint}", dict(POLY_NAMES))
        assert total_of(session.scalars(query).all()) == 6
    assert not fixed.findings


def test_a_relationship_to_the_base_class_is_chained_through_of_type(parties: Engine) -> None:
    """selectinload(Club.members).selectinload(Customer.orders) raises ArgumentError."""
    with sqla_doctor.track(mode="collect") as uow, Session(parties) as session:
        clubs = session.scalars(select(Club)).all()
        assert sum(total_of(club.members) for club in clubs) == 6
    finding = one(uow.findings, "SQD251")
    assert finding.fix_hint == (
        ".options(selectinload(Club.members.of_type(Customer)).selectinload(Customer.orders))"
    )
    with sqla_doctor.track(mode="collect") as fixed, Session(parties) as session:
        clubs = session.scalars(eval(f"select(Club){finding.fix_hint}", dict(POLY_NAMES))).all()
        assert [len(club.members) for club in clubs] == [5]
        assert sum(total_of(club.members) for club in clubs) == 6
    assert not fixed.findings


def posts_of_top_users(session: Session, option: Callable[[Any], Any] | None) -> int:
    """A leaderboard: users ranked in a subquery, selected through aliased(User, ...)."""
    ranked = select(User).order_by(User.id.desc()).limit(USERS).subquery()
    top = aliased(User, ranked)
    query = select(top) if option is None else select(top).options(option(top))
    return sum(len(user.posts) for user in session.scalars(query))  # line:aliased


def test_an_aliased_entity_is_told_the_path_through_the_alias(engine: Engine) -> None:
    # select(top) raises ArgumentError for selectinload(User.posts): the path starts
    # from the alias the query selects.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert posts_of_top_users(session, None) > 0
    finding = one(uow.findings, "SQD251")
    assert finding.location.line == line_of("aliased")
    assert finding.fix_hint == ".options(selectinload(alias.posts))"
    assert finding.message.endswith(
        "add .options(selectinload(alias.posts)) to that query, alias being the "
        "aliased(User) it selects: an option on User.posts alone does not apply to it"
    )


def test_the_option_through_the_alias_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert posts_of_top_users(session, lambda top: selectinload(top.posts)) > 0
    assert not uow.findings
    assert uow.query_count == 2
