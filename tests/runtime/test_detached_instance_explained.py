"""SQD254: DetachedInstanceError explained (what, where loaded, where detached, fix)."""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import pickle
import sys
from pathlib import Path
from typing import Any, ClassVar

import pydantic
import pytest
from sqlalchemy import Engine, ForeignKey, create_engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectin_polymorphic,
    selectinload,
    sessionmaker,
    with_polymorphic,
)
from sqlalchemy.orm.attributes import InstrumentedAttribute
from sqlalchemy.orm.exc import DetachedInstanceError

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.runtime import errors

from .fixtures.detached_noqa import read_posts_after_close
from .models import Post, User
from .support import line_of, of_code, one, relative

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are 3.11+")


def posts_after_the_block(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker:
        with Session(engine) as session:  # line:with
            users = session.scalars(select(User)).all()  # line:query
        print(users[0].posts)  # line:access


def test_relationship_read_after_the_with_block_is_explained(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError) as raised:
        posts_after_the_block(engine, tracker)
    here = relative(__file__)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert finding.location.path == here
    assert finding.location.line == line_of("access")
    assert finding.message == (
        f"User.posts lazy-loaded on a detached User: its session was closed at "
        f"{here}:{line_of('with')} — add .options(selectinload(User.posts)) to the query at "
        f"{here}:{line_of('query')}, or read User.posts inside the session block"
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("query"), "the User was loaded by this query"),
        (line_of("with"), "its session was closed here"),
    ]
    assert finding.fix_hint == ".options(selectinload(User.posts))"
    assert finding.pitfalls == ("P02",)
    assert raised.value.__notes__[0].startswith(f"sqla-doctor: SQD254 {finding.message}")


def test_loader_option_twin_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        with Session(engine) as session:
            users = session.scalars(select(User).options(selectinload(User.posts))).all()
        assert len(users[0].posts) == 2
    assert not uow.findings


def author_after_close(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker:
        session = Session(engine)
        post = session.scalars(select(Post)).first()
        session.close()  # line:close
        assert post is not None
        print(post.author)


def test_many_to_one_suggests_joinedload_and_close_call_is_the_site(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        author_after_close(engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert "Post.author lazy-loaded" in finding.message
    assert f"its session was closed at {relative(__file__)}:{line_of('close')}" in finding.message
    assert ".options(joinedload(Post.author))" in finding.message


def name_after_commit_and_close(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker:
        with Session(engine) as session:  # line:expired-with
            user = session.get(User, 1)
            assert user is not None
            session.commit()  # line:commit
        print(user.name)  # line:expired-access


def test_expired_by_commit_then_closed_names_the_commit(engine: Engine) -> None:
    """'attribute refresh operation cannot proceed': the commit expired it."""
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError) as raised:
        name_after_commit_and_close(engine, tracker)
    here = relative(__file__)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert "attribute refresh operation" in str(raised.value)
    assert finding.location.line == line_of("expired-access")
    assert finding.message == (
        f"User.name refreshed on a detached User: the commit at {here}:{line_of('commit')} "
        f"expired it (expire_on_commit=True), then its session was closed at "
        f"{here}:{line_of('expired-with')} — create the session with expire_on_commit=False, "
        "or read User.name before the commit / inside the session block"
    )
    assert line_of("commit") in [r.location.line for r in finding.related]


def test_expire_on_commit_false_twin_is_silent(engine: Engine) -> None:
    factory = sessionmaker(engine, expire_on_commit=False)
    with sqla_doctor.track(mode="collect") as uow:
        with factory() as session:
            user = session.get(User, 1)
            session.commit()
        assert user is not None
        assert user.name == "user0"
    assert not uow.findings


def create_post(engine: Engine, refresh: bool = False) -> Post:
    """A create endpoint's helper: the row names its author by key."""
    with sessionmaker(engine, expire_on_commit=False)() as session:  # line:create-with
        post = Post(title="new", author_id=1)
        session.add(post)
        session.commit()
        if refresh:
            session.refresh(post, ["author"])
        return post


def create_post_and_refresh(engine: Engine) -> Post:
    """SQLModel's tutorial shape: commit, then refresh() to get the columns back."""
    with Session(engine) as session:
        post = Post(title="new", author_id=1)
        session.add(post)
        session.commit()  # line:refresh-commit
        session.refresh(post)  # the columns, not the lazy relationships
        return post


def test_a_created_object_refreshed_after_commit_is_not_told_expire_on_commit(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        post = create_post_and_refresh(engine)
        assert post.title == "new"
        with pytest.raises(DetachedInstanceError):
            print(post.author)  # line:refreshed-author
    finding = one(uow.findings, "SQD254")
    assert finding.location.line == line_of("refreshed-author")
    # expire_on_commit=False would keep what was loaded: the author never was.
    assert "expire_on_commit=False" not in finding.message
    assert finding.message.endswith(
        'load it before the session closes with `session.refresh(post, ["author"])` after '
        "the commit (it reloads what the commit expired too), or read Post.author inside "
        "the session block"
    )


def test_a_relationship_of_an_object_the_program_created_is_told_refresh_not_an_option(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        post = create_post(engine)
        with pytest.raises(DetachedInstanceError):
            print(post.author)  # line:created-author
    finding = one(uow.findings, "SQD254")
    here = relative(__file__)
    assert finding.location.line == line_of("created-author")
    # No query loaded the Post: an option on "the query that loads the Post" is no fix.
    assert finding.message == (
        f"Post.author lazy-loaded on a detached Post: its session was closed at "
        f"{here}:{line_of('create-with')} — the Post was created by the program, not loaded "
        'by a query: load it before the session closes with `session.refresh(post, ["author"])` '
        "after the commit (it reloads what the commit expired too), or read Post.author "
        "inside the session block"
    )
    assert finding.fix_hint == 'session.refresh(post, ["author"])'


def test_refresh_naming_the_relationship_is_the_created_objects_silent_twin(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        post = create_post(engine, refresh=True)
        assert post.author.name == "user0"
    assert not uow.findings


def posts_after_expunge(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        session.expunge(user)  # line:expunge
        print(user.posts)


def test_expunged_object_names_the_expunge(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        posts_after_expunge(engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert f"expunged from its session at {relative(__file__)}:{line_of('expunge')}" in (
        finding.message
    )


def posts_after_expunge_all(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    """A cache warmer: loads, detaches everything to keep it, reads a relationship later;
    the session stays open."""
    with tracker, Session(engine) as session:
        cache = {u.id: u for u in session.scalars(select(User))}  # line:warm-query
        session.expunge_all()  # line:expunge-all
        print(cache[1].posts)  # line:cached-read


def test_expunge_all_is_named_as_such_not_as_a_close(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        posts_after_expunge_all(engine, tracker)
    here = relative(__file__)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert finding.location.line == line_of("cached-read")
    assert finding.message == (
        f"User.posts lazy-loaded on a detached User: it was expunged by session.expunge_all() "
        f"at {here}:{line_of('expunge-all')} — add .options(selectinload(User.posts)) to the "
        f"query at {here}:{line_of('warm-query')}, or read User.posts before "
        "session.expunge_all(); to use it with a session again, re-attach it: "
        "`user = session.merge(user, load=False)`"
    )
    assert (line_of("expunge-all"), "session.expunge_all() detached it here") in [
        (r.location.line, r.message) for r in finding.related
    ]


def test_expunge_all_twin_with_the_loader_option_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        statement = select(User).options(selectinload(User.posts))
        cache = {u.id: u for u in session.scalars(statement)}
        session.expunge_all()
        assert len(cache[1].posts) == 2
    assert not uow.findings


def posts_of_an_unpickled_copy(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    """A cache keeps the pickled user; a later read of the copy's posts."""
    with tracker:
        with Session(engine) as session:
            user = session.scalars(select(User).where(User.id == 1)).one()  # line:pickled-query
            blob = pickle.dumps(user)
        cached = pickle.loads(blob)  # line:unpickle
        print(cached.posts)  # line:unpickled-read


def test_an_unpickled_copy_is_not_taken_for_an_object_the_program_created(
    engine: Engine,
) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        posts_of_an_unpickled_copy(engine, tracker)
    here = relative(__file__)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert finding.location.line == line_of("unpickled-read")
    assert finding.message == (
        f"User.posts lazy-loaded on a detached User: it is a copy made by pickle.loads() at "
        f"{here}:{line_of('unpickle')}, which belongs to no session — add "
        f".options(selectinload(User.posts)) to the query at {here}:{line_of('pickled-query')}, "
        "or read User.posts before the object is pickled; to use it with a session again, "
        "re-attach it: `user = session.merge(user, load=False)`"
    )
    assert (line_of("unpickle"), "pickle.loads() made the copy here") in [
        (r.location.line, r.message) for r in finding.related
    ]


def test_a_deep_copy_is_named_as_such(engine: Engine) -> None:
    with Session(engine) as session:
        user = session.scalars(select(User).where(User.id == 1)).one()
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError), tracker:
        print(copy.deepcopy(user).posts)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert "it is a copy made by copy.deepcopy() at " in finding.message
    assert "read User.posts before the object is copied" in finding.message


def test_pickling_after_the_loader_option_or_merging_the_copy_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        with Session(engine) as session:
            statement = select(User).where(User.id == 1).options(selectinload(User.posts))
            blob = pickle.dumps(session.scalars(statement).one())
        assert len(pickle.loads(blob).posts) == 2
        with Session(engine) as session:
            blob = pickle.dumps(session.scalars(select(User).where(User.id == 1)).one())
        with Session(engine) as session:
            user = session.merge(pickle.loads(blob), load=False)
            assert len(user.posts) == 2
    assert not uow.findings


async def async_posts_after_expunge_all(engine: AsyncEngine, tracker: sqla_doctor.Tracker) -> None:
    async with tracker, AsyncSession(engine) as session:
        users = (await session.scalars(select(User))).all()
        session.expunge_all()  # line:async-expunge-all
        print(users[0].posts)


async def test_async_expunge_all_is_named_as_such(async_engine: AsyncEngine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        await async_posts_after_expunge_all(async_engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert (
        f"it was expunged by session.expunge_all() at {relative(__file__)}:"
        f"{line_of('async-expunge-all')}"
    ) in finding.message
    assert finding.message.endswith("`user = session.merge(user, load=False)`")


async def async_posts_after_close(engine: AsyncEngine, tracker: sqla_doctor.Tracker) -> None:
    async with tracker:
        session = AsyncSession(engine)
        users = (await session.scalars(select(User))).all()
        await session.close()
        print(users[0].posts)


async def test_async_close_is_still_a_close(async_engine: AsyncEngine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        await async_posts_after_close(async_engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    assert "its session was closed" in finding.message
    assert "expunge" not in finding.message


async def async_posts_after_the_block(
    engine: AsyncEngine, tracker: sqla_doctor.Tracker, *, begin: bool, option: bool = False
) -> int:
    factory = async_sessionmaker(engine, expire_on_commit=False)
    statement = select(User).options(selectinload(User.posts)) if option else select(User)
    async with tracker:
        if begin:
            async with factory.begin() as session:  # line:async-begin-with
                users = (await session.scalars(statement)).all()
        else:
            async with factory() as session:  # line:async-with
                users = (await session.scalars(statement)).all()
        return len(users[0].posts)  # line:async-access


@pytest.mark.parametrize("begin", [False, True], ids=["session", "begin"])
async def test_async_with_block_end_is_named(async_engine: AsyncEngine, begin: bool) -> None:
    """AsyncSession.__aexit__ closes in a task of its own (shielded, and for begin() one
    task deeper), off the program's stack: the line is the `async with` awaiting it."""
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        await async_posts_after_the_block(async_engine, tracker, begin=begin)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    here = relative(__file__)
    block = line_of("async-begin-with" if begin else "async-with")
    assert finding.location.line == line_of("async-access")
    assert (
        f"its session was closed when the `async with` block at {here}:{block} ended — "
    ) in finding.message
    assert (block, "its session was closed when this block ended") in [
        (r.location.line, r.message) for r in finding.related
    ]


async def test_async_with_block_twin_with_the_loader_option_is_silent(
    async_engine: AsyncEngine,
) -> None:
    tracker = sqla_doctor.track(mode="collect")
    assert await async_posts_after_the_block(async_engine, tracker, begin=False, option=True) == 2
    assert tracker.last is not None
    assert not tracker.last.findings


def bio_after_close(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker:
        with Session(engine) as session:
            user = session.get(User, 1)
        assert user is not None
        print(user.bio)


def test_deferred_column_suggests_undefer(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        bio_after_close(engine, tracker)
    assert tracker.last is not None
    # Loaded by session.get(), which takes its options as an argument.
    assert "pass options=[undefer(User.bio)] to the session.get() at" in (
        one(tracker.last.findings, "SQD254").message
    )


@pytest.mark.parametrize("mode", ["warn", "raise", "log"])
def test_the_original_exception_reaches_the_caller_in_every_mode(engine: Engine, mode: str) -> None:
    """Never replaced by a PitfallError or a warning: the same exception, with one note."""
    with pytest.raises(DetachedInstanceError) as raised:
        bio_after_close(engine, sqla_doctor.track(mode=mode))
    explained = [n for n in raised.value.__notes__ if n.startswith("sqla-doctor:")]
    assert len(explained) == 1
    assert explained[0].startswith("sqla-doctor: SQD254 User.bio loaded (deferred)")


def test_noqa_on_the_access_line_silences_the_note(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")

    def run() -> None:
        with tracker:
            read_posts_after_close(engine)

    with pytest.raises(DetachedInstanceError) as raised:
        run()
    assert tracker.last is not None
    assert not of_code(tracker.last.findings, "SQD254")
    assert not getattr(raised.value, "__notes__", [])


def test_uncaught_exception_is_explained_on_the_installed_path(engine: Engine) -> None:
    """``sqla-doctor run``'s excepthook: no track(), the process's live sessions."""
    sqla_doctor.install(mode="collect")
    session = Session(engine)
    users = session.scalars(select(User)).all()  # line:installed-query
    session.close()  # line:installed-close
    try:
        print(users[0].posts)  # line:installed-access
    except DetachedInstanceError as error:
        explained = errors.explain_uncaught(error)
        notes = error.__notes__
    here = relative(__file__)
    assert [f.location.line for f in explained] == [line_of("installed-access")]
    assert f"its session was closed at {here}:{line_of('installed-close')}" in notes[0]
    assert f"the query at {here}:{line_of('installed-query')}" in notes[0]
    assert one(sqla_doctor.collected(), "SQD254").location.line == line_of("installed-access")


_CACHE: dict[int, User] = {}


def cached_user(session: Session, user_id: int) -> User:
    if user_id not in _CACHE:
        user = session.get(User, user_id)  # line:cache-get
        assert user is not None
        _CACHE[user_id] = user
    return _CACHE[user_id]


def first_request(engine: Engine, user_id: int) -> None:
    with Session(engine) as session:  # line:cache-first
        cached_user(session, user_id)


def first_requests(engine: Engine) -> None:
    """Two requests fill the cache; the second's statements let the doctor see the first
    session collected (and drop its record), as a running program's next ones do."""
    first_request(engine, 1)
    gc.collect()
    first_request(engine, 2)
    gc.collect()


def posts_in_a_later_request(engine: Engine) -> list[str]:
    """The second request's session is open; the cached User's session is gone."""
    with Session(engine) as session:
        author = cached_user(session, 1)
        try:
            return [post.title for post in author.posts]  # line:cache-read
        except DetachedInstanceError as error:
            explained = errors.explain_uncaught(error)
            return [f.message for f in explained]


def test_an_object_cached_past_its_collected_session_is_told_to_merge(engine: Engine) -> None:
    """s521: a module-level cache keeps an object after its session was closed and
    garbage-collected; a later session's block reads its relationship."""
    sqla_doctor.install(mode="collect")
    _CACHE.clear()
    first_requests(engine)

    [message] = posts_in_a_later_request(engine)

    here = relative(__file__)
    assert message == (
        "User.posts lazy-loaded on a detached User: its session was closed at "
        f"{here}:{line_of('cache-first')} — pass options=[selectinload(User.posts)] to the "
        f"session.get() at {here}:{line_of('cache-get')}, or read User.posts inside the "
        "session block; it outlived its session and is read inside another session's block "
        "(`session`, in posts_in_a_later_request()): re-attach it there with "
        "`author = session.merge(author, load=False)`, or cache its key and load it in each "
        "session"
    )
    _CACHE.clear()


def test_the_cached_object_is_told_to_merge_when_explained_while_raised(engine: Engine) -> None:
    """`sqla-doctor run` notes reads: the error is explained as it is raised, while the
    frames that hold the later session are still on the stack."""
    sqla_doctor.install(config=RuntimeConfig(mode="collect", track_reads=True))
    _CACHE.clear()
    first_requests(engine)

    def later_request() -> None:
        with Session(engine) as db:
            cached = cached_user(db, 1)
            with contextlib.suppress(DetachedInstanceError):
                print(cached.posts)  # line:cache-read-raised

    later_request()
    finding = one(sqla_doctor.collected(), "SQD254")
    assert finding.location.line == line_of("cache-read-raised")
    assert finding.message.endswith(
        "it outlived its session and is read inside another session's block (`db`, in "
        "later_request()): re-attach it there with `cached = db.merge(cached, load=False)`, "
        "or cache its key and load it in each session"
    )
    _CACHE.clear()


def posts_for_a_view(db: Session) -> list[str]:
    """A framework's request session, handed in: open for the whole view."""
    author = cached_user(db, 1)
    try:
        return [post.title for post in author.posts]
    except DetachedInstanceError as error:
        return [f.message for f in errors.explain_uncaught(error)]


class UnboundProxy:
    """A context-local proxy outside its context (Flask's ``current_user``): reading its
    ``__class__``, as isinstance() does, raises."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # type: ignore[override]
        raise RuntimeError("Working outside of request context.")


def posts_for_a_view_with_a_proxy(user: object, db: Session) -> list[str]:
    """``user``, a local before ``db``, is looked at first."""
    author = cached_user(db, 1)
    try:
        return [post.title for post in author.posts]
    except DetachedInstanceError as error:
        return [f.message for f in errors.explain_uncaught(error)]


def test_a_proxy_among_the_reading_frames_locals_is_not_resolved(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    _CACHE.clear()
    first_requests(engine)

    with Session(engine) as request_session:
        [message] = posts_for_a_view_with_a_proxy(UnboundProxy(), request_session)

    assert message.endswith(
        "`author = db.merge(author, load=False)`, or cache its key and load it in each session"
    )
    _CACHE.clear()


def posts_after_an_earlier_block(engine: Engine) -> list[str]:
    """``session`` is left over from a block that ended: the read is in no session."""
    with Session(engine) as session:
        session.get(User, 2)
    author = _CACHE[1]
    try:
        return [post.title for post in author.posts]
    except DetachedInstanceError as error:
        return [f.message for f in errors.explain_uncaught(error)]


def test_a_session_handed_in_is_the_one_told_to_merge_and_a_leftover_one_is_not(
    engine: Engine,
) -> None:
    sqla_doctor.install(mode="collect")
    _CACHE.clear()
    first_requests(engine)

    with Session(engine) as request_session:
        [in_view] = posts_for_a_view(request_session)
    [after_block] = posts_after_an_earlier_block(engine)

    assert in_view.endswith(
        "(`db`, in posts_for_a_view()): re-attach it there with "
        "`author = db.merge(author, load=False)`, or cache its key and load it in each session"
    )
    assert after_block.endswith("or read User.posts inside the session block")
    _CACHE.clear()


def test_an_object_of_a_collected_session_read_outside_any_session_is_not_told_to_merge(
    engine: Engine,
) -> None:
    sqla_doctor.install(mode="collect")
    _CACHE.clear()
    first_requests(engine)

    author = _CACHE[1]
    try:
        print(author.posts)
    except DetachedInstanceError as error:
        [finding] = errors.explain_uncaught(error)
    here = relative(__file__)
    assert finding.message.endswith(
        f"its session was closed at {here}:{line_of('cache-first')} — pass "
        f"options=[selectinload(User.posts)] to the session.get() at "
        f"{here}:{line_of('cache-get')}, or read User.posts inside the session block"
    )
    _CACHE.clear()


def test_the_cached_object_merged_into_the_later_session_is_silent(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    _CACHE.clear()
    first_requests(engine)

    with Session(engine) as session:
        author = session.merge(cached_user(session, 1), load=False)
        assert len(author.posts) == 2
    assert not of_code(sqla_doctor.collected(), "SQD254")
    _CACHE.clear()


def test_excepthook_chains_to_the_previous_hook(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    seen: list[BaseException] = []
    previous = sys.excepthook
    sys.excepthook = lambda kind, value, tb: seen.append(value)
    try:
        errors.install_hooks()
        with Session(engine) as session:
            user = session.get(User, 1)
        assert user is not None
        try:
            print(user.posts)
        except DetachedInstanceError as error:
            sys.excepthook(type(error), error, error.__traceback__)
    finally:
        errors.uninstall_hooks()
        sys.excepthook = previous
    assert len(seen) == 1
    assert seen[0].__notes__[0].startswith("sqla-doctor: SQD254")


def test_a_logged_error_is_explained_and_chains_to_the_previous_factory(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    sqla_doctor.install(mode="collect")
    made: list[logging.LogRecord] = []
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(previous(*args, **kwargs))
        return made[-1]

    logging.setLogRecordFactory(factory)
    try:
        errors.install_hooks()
        with Session(engine) as session:
            user = session.get(User, 1)
        assert user is not None
        try:
            print(user.posts)  # line:logged
        except DetachedInstanceError as error:
            logging.getLogger("server").exception("request failed")
            notes = list(error.__notes__)
        other = AttributeError("not a database error")
        try:
            raise other
        except AttributeError:
            logging.getLogger("server").exception("not a database error")
        assert not hasattr(other, "__notes__")
        errors.uninstall_hooks()
        assert logging.getLogRecordFactory() is factory
    finally:
        errors.uninstall_hooks()
        logging.setLogRecordFactory(previous)
    assert len(made) == 2
    assert [n.split(" ")[1] for n in notes] == ["SQD254"]
    assert one(sqla_doctor.collected(), "SQD254").location.line == line_of("logged")
    assert notes[0] in caplog.text


def posts_after_close_then_expunge(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker:
        session = Session(engine)
        with session:
            users = session.scalars(select(User)).all()
        # Used again after close(): this expunge is not one more object of that close.
        user = session.get(User, 2)
        assert user is not None
        assert user not in users  # a new object, loaded after the close
        session.expunge(user)  # line:expunge-after-close
        print(user.posts)


def test_expunge_after_a_close_names_the_expunge(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        posts_after_close_then_expunge(engine, tracker)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    here = relative(__file__)
    assert f"expunged from its session at {here}:{line_of('expunge-after-close')}" in (
        finding.message
    )


def users_then_close(engine: Engine, query: Any = None) -> list[User]:
    with Session(engine) as session:  # line:caught-with
        return list(session.scalars(query if query is not None else select(User)))


def test_an_error_the_program_catches_is_explained_while_raised(engine: Engine) -> None:
    """A CLI prints the error and goes on: it never reaches a unit's end, a log or the
    excepthook. Read tracking (on under ``sqla-doctor run``) sees the failed read."""
    sqla_doctor.install(config=RuntimeConfig(mode="collect", track_reads=True))
    users = users_then_close(engine)
    printed = []
    try:
        print(len(users[0].posts))  # line:caught-access
    except Exception as error:
        printed.append(type(error).__name__)
    assert printed == ["DetachedInstanceError"]
    finding = one(sqla_doctor.collected(), "SQD254")
    here = relative(__file__)
    assert finding.location.line == line_of("caught-access")
    assert f"its session was closed at {here}:{line_of('caught-with')}" in finding.message


def read_through_a_new_session(engine: Engine, obj: Any, key: str) -> Any:
    """sqladmin's get_prop_value(): a detached object's attribute, read again in a new
    session when the read fails."""
    try:
        return getattr(obj, key)  # line:by-name-access
    except DetachedInstanceError:
        with Session(engine) as session:
            session.add(obj)
            return getattr(obj, key)


def test_an_error_the_program_catches_by_name_and_handles_is_not_explained(
    engine: Engine,
) -> None:
    """sqladmin's own test of get_prop_value() failed under --sqla-doctor with 'User.posts
    lazy-loaded on a detached User', a read its handler made succeed."""
    sqla_doctor.install(config=RuntimeConfig(mode="collect", track_reads=True))
    users = users_then_close(engine)
    assert len(read_through_a_new_session(engine, users[0], "posts")) == 2
    assert not of_code(sqla_doctor.collected(), "SQD254")


def log_and_raise_again(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker:
        users = users_then_close(engine)
        try:
            print(users[0].posts)
        except DetachedInstanceError:
            logging.getLogger(__name__).info("no posts")
            raise


def test_an_error_caught_by_name_then_raised_again_is_still_explained(engine: Engine) -> None:
    """The near miss: a handler that names the error and raises it again hands it on."""
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError):
        log_and_raise_again(engine, tracker)
    assert tracker.last is not None
    assert one(tracker.last.findings, "SQD254")


def test_pydantic_turning_it_into_a_validation_error_is_explained(engine: Engine) -> None:
    pydantic = pytest.importorskip("pydantic")

    class PostOut(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(from_attributes=True)
        title: str

    class UserOut(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(from_attributes=True)
        name: str
        posts: list[PostOut]

    sqla_doctor.install(config=RuntimeConfig(mode="collect", track_reads=True))
    users = users_then_close(engine)
    with pytest.raises(pydantic.ValidationError):
        UserOut.model_validate(users[0])  # line:validate
    finding = one(sqla_doctor.collected(), "SQD254")
    assert finding.location.line == line_of("validate")
    assert finding.message.startswith("User.posts lazy-loaded on a detached User")


def test_caught_twin_with_the_loader_option_is_silent(engine: Engine) -> None:
    sqla_doctor.install(config=RuntimeConfig(mode="collect", track_reads=True))
    users = users_then_close(engine, select(User).options(selectinload(User.posts)))
    assert all(len(user.posts) == 2 for user in users)
    assert not of_code(sqla_doctor.collected(), "SQD254")


class PostOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(from_attributes=True)
    title: str


class UserOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(from_attributes=True)
    name: str
    posts: list[PostOut]


def respond(users: list[User]) -> str:
    """A handler that turns every error into a 500, as a web framework does."""
    try:
        return repr([UserOut.model_validate(user) for user in users])  # line:track-validate
    except pydantic.ValidationError:
        return "500"


def test_a_swallowed_error_inside_track_is_explained_without_track_reads(
    engine: Engine,
) -> None:
    """track() covers the classes whose objects left their session in it: pydantic's
    ValidationError hides the DetachedInstanceError from the unit's end."""
    with sqla_doctor.track(mode="collect") as uow:
        response = respond(users_then_close(engine))
    assert response == "500"
    finding = one(uow.findings, "SQD254")
    assert finding.location.line == line_of("track-validate")
    here = relative(__file__)
    assert f"its session was closed at {here}:{line_of('caught-with')}" in finding.message


def test_the_loader_option_inside_track_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        query = select(User).options(selectinload(User.posts))
        response = respond(users_then_close(engine, query))
    assert response.startswith("[UserOut(")
    assert not uow.findings


def test_track_reads_set_off_leaves_the_classes_alone(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect", config=RuntimeConfig(track_reads=False)) as uow:
        assert respond(users_then_close(engine)) == "500"
    assert not of_code(uow.findings, "SQD254")
    assert type(User.__dict__["posts"]) is InstrumentedAttribute


class StaffBase(DeclarativeBase):
    pass


class Employee(StaffBase):
    __tablename__ = "employee"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]
    __mapper_args__: ClassVar[dict[str, Any]] = {
        "polymorphic_on": "kind",
        "polymorphic_identity": "employee",
    }


class Engineer(Employee):
    __tablename__ = "engineer"
    id: Mapped[int] = mapped_column(ForeignKey("employee.id"), primary_key=True)
    language: Mapped[str]
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "engineer"}


def list_staff(engine: Engine, query: Any) -> list[Employee]:
    with Session(engine) as session:  # line:staff-close
        return list(session.scalars(query))  # line:staff-query


def test_a_subclass_column_a_base_class_query_left_out_is_not_blamed_on_a_commit(
    tmp_path: Path,
) -> None:
    """Nothing committed: select(Employee) never loaded Engineer.language."""
    engine = create_engine(f"sqlite:///{tmp_path / 'staff.db'}")
    StaffBase.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(Engineer(language="py"))
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(DetachedInstanceError), tracker:
        languages = [e.language for e in list_staff(engine, select(Employee))]  # line:lang
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    here = relative(__file__)
    assert finding.location.line == line_of("lang")
    assert finding.message == (
        f"Engineer.language loaded on a detached Engineer: its session was closed at "
        f"{here}:{line_of('staff-close')} — the query at {here}:{line_of('staff-query')} "
        "selected Employee, which leaves Engineer's own table out: add "
        ".options(selectin_polymorphic(Employee, [Engineer])) to it, or read "
        "Engineer.language inside the session block"
    )
    with sqla_doctor.track(mode="collect") as fixed:
        option = selectin_polymorphic(Employee, [Engineer])
        languages = [e.language for e in list_staff(engine, select(Employee).options(option))]
    assert languages == ["py"]
    assert not fixed.findings
    engine.dispose()


def user_by_id(engine: Engine, options: list[Any]) -> User | None:
    with Session(engine) as session:
        return session.get(User, 1, options=options)  # line:by-id


def test_an_object_from_session_get_is_told_its_options_argument(engine: Engine) -> None:
    """session.get() has no .options(): the option goes in its options=[...]."""
    tracker = sqla_doctor.track(mode="collect")

    def read_posts() -> None:
        with tracker:
            user = user_by_id(engine, [])
            assert user is not None
            print(user.posts)  # line:by-id-posts

    with pytest.raises(DetachedInstanceError):
        read_posts()
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    here = relative(__file__)
    assert finding.location.line == line_of("by-id-posts")
    assert finding.message.endswith(
        f"pass options=[selectinload(User.posts)] to the session.get() at {here}:"
        f"{line_of('by-id')}, or read User.posts inside the session block"
    )
    assert finding.fix_hint == "options=[selectinload(User.posts)]"
    assert finding.related[0].message == "the User was loaded by this session.get()"
    with sqla_doctor.track(mode="collect") as fixed:
        user = user_by_id(engine, [selectinload(User.posts)])
        assert user is not None
        assert len(user.posts) == 2
    assert not fixed.findings


def users_reloaded(engine: Engine, options: list[Any]) -> list[User]:
    with Session(engine) as session:
        fresh = select(User).options(*options).execution_options(populate_existing=True)
        return list(session.scalars(fresh))  # line:reloaded


def test_a_query_with_execution_options_is_not_taken_for_session_get(engine: Engine) -> None:
    """populate_existing (as yield_per and autoflush) reaches the event among the load
    options session.get() passes: the query still takes .options(...)."""
    tracker = sqla_doctor.track(mode="collect")

    def read_posts() -> None:
        with tracker:
            print(users_reloaded(engine, [])[0].posts)  # line:reloaded-posts

    with pytest.raises(DetachedInstanceError):
        read_posts()
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD254")
    here = relative(__file__)
    assert finding.location.line == line_of("reloaded-posts")
    assert finding.message.endswith(
        f"add .options(selectinload(User.posts)) to the query at {here}:"
        f"{line_of('reloaded')}, or read User.posts inside the session block"
    )
    assert finding.fix_hint == ".options(selectinload(User.posts))"
    with sqla_doctor.track(mode="collect") as fixed:
        assert len(users_reloaded(engine, [selectinload(User.posts)])[0].posts) == 2
    assert not fixed.findings


class Repo(StaffBase):
    __tablename__ = "repo"
    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("engineer.id"))


Engineer.repos = relationship(Repo)


def test_a_subclass_relationship_is_told_the_option_the_query_takes(tmp_path: Path) -> None:
    """selectinload(Engineer.repos) alone is ignored by select(Employee) and refused by
    select(poly): each query is told the option it takes."""
    engine = create_engine(f"sqlite:///{tmp_path / 'repos.db'}")
    StaffBase.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        session.add(Engineer(language="py", repos=[Repo()]))
    poly = with_polymorphic(Employee, [Engineer])
    messages = []
    for query in (select(Employee), select(poly)):
        tracker = sqla_doctor.track(mode="collect")

        def read_repos(query: Any = query, tracker: sqla_doctor.Tracker = tracker) -> None:
            with tracker:
                print([len(e.repos) for e in list_staff(engine, query)])

        with pytest.raises(DetachedInstanceError):
            read_repos()
        assert tracker.last is not None
        messages.append(one(tracker.last.findings, "SQD254").message)
    where = f"the query at {relative(__file__)}:{line_of('staff-query')}"
    assert (
        "add .options(selectin_polymorphic(Employee, [Engineer]), selectinload(Engineer.repos)) "
        f"to {where}: it selects Employee, and an option on Engineer.repos alone is ignored "
        "there, or read Engineer.repos inside the session block"
    ) in messages[0]
    assert (
        f"add .options(selectinload(poly.Engineer.repos)) to {where}, poly being the "
        "with_polymorphic(Employee, [Engineer]) it selects: an option on Engineer.repos alone "
        "does not apply to it"
    ) in messages[1]
    with sqla_doctor.track(mode="collect") as fixed:
        fixes = (
            select(Employee).options(
                selectin_polymorphic(Employee, [Engineer]), selectinload(Engineer.repos)
            ),
            select(poly).options(selectinload(poly.Engineer.repos)),
        )
        for query in fixes:
            assert [len(e.repos) for e in list_staff(engine, query)] == [1]
    assert not fixed.findings
    engine.dispose()
