"""SQD253: expired or deferred attributes reloaded one object at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import Engine, ForeignKey, create_engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    defaultload,
    defer,
    load_only,
    mapped_column,
    relationship,
    selectin_polymorphic,
    selectinload,
    sessionmaker,
    undefer,
    with_polymorphic,
)

import sqla_doctor

from .models import USERS, Post, User
from .support import line_of, of_code, one, relative


def test_reading_objects_after_commit_is_reported_with_the_commit(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        session.commit()  # line:commit
        names = [user.name for user in users]  # line:reload
    assert len(names) == USERS
    finding = one(uow.findings, "SQD253")
    here = relative(__file__)
    assert finding.location.line == line_of("reload")
    assert finding.message == (
        f"User attributes (name) reloaded one object at a time {USERS}× from "
        f"{here}:{line_of('reload')} — the commit at {here}:{line_of('commit')} expired them: "
        "create the session with expire_on_commit=False, or read the values before committing"
    )
    assert finding.related[0].location.line == line_of("commit")
    assert finding.pitfalls == ("P01", "P05")
    assert finding.fix_hint == "sessionmaker(..., expire_on_commit=False)"


def test_objects_expired_by_expire_all_name_that_call(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()  # line:loaded
        session.expire_all()  # line:expire-all
        names = [user.name for user in users]  # line:after-expire
    assert len(names) == USERS
    finding = one(uow.findings, "SQD253")
    here = relative(__file__)
    assert finding.message == (
        f"User attributes (name) reloaded one object at a time {USERS}× from "
        f"{here}:{line_of('after-expire')} — the session.expire_all() at "
        f"{here}:{line_of('expire-all')} expired them, and each one reloads its own on first "
        f"read: run the query at {here}:{line_of('loaded')} again after it (one query "
        "refreshes every expired object it returns; their ids are expired too), or leave out "
        "the session.expire_all() if nothing changed the rows behind the session's back"
    )
    assert [r.location.line for r in finding.related] == [line_of("expire-all")]


def test_the_query_run_again_after_expire_all_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        session.expire_all()
        assert session.scalars(select(User)).all() == users
        assert [user.name for user in users]
    assert not uow.findings


def test_a_commit_after_expire_all_is_the_one_named(engine: Engine) -> None:
    """The latest expiry is the cause: the commit's, not the expire_all() before it."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        session.expire_all()
        session.scalars(select(User)).all()
        session.commit()  # line:commit-after-expire
        assert [user.name for user in users]
    message = one(uow.findings, "SQD253").message
    assert f"the commit at {relative(__file__)}:{line_of('commit-after-expire')}" in message
    assert "expire_all" not in message


def test_expire_all_inside_the_reading_loop_is_told_to_move_before_the_loop(
    engine: Engine,
) -> None:
    """Run again after each expire_all(), as the usual advice says, the query would load
    every row once per object: the call is the thing to move."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()  # line:loop-loaded
        names = []
        for user in users:  # line:loop
            session.expire_all()  # line:expire-in-loop
            names.append(user.name)
    assert len(names) == USERS
    finding = one(uow.findings, "SQD253")
    here = relative(__file__)
    assert finding.message.endswith(
        f"the session.expire_all() at {here}:{line_of('expire-in-loop')} runs inside the "
        f"loop at {here}:{line_of('loop')}, before each read, so each object reloads its "
        f"own: call it once, before the loop, then run the query at "
        f"{here}:{line_of('loop-loaded')} again (one query refreshes every expired object "
        "it returns), or leave it out if nothing changed the rows behind the session's back"
    )
    assert finding.fix_hint == "session.expire_all() once, before the loop"
    with sqla_doctor.track(mode="collect") as fixed, Session(engine) as session:
        users = session.scalars(select(User)).all()
        session.expire_all()
        users = session.scalars(select(User)).all()
        assert [user.name for user in users]
    assert not fixed.findings


def test_expire_per_object_names_the_expire_call(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        for user in users:
            session.expire(user)  # line:expire-one
        assert [user.name for user in users]
    message = one(uow.findings, "SQD253").message
    assert f"the session.expire() at {relative(__file__)}:{line_of('expire-one')}" in message
    # The loop expires, the reads come after it: run the query again after it.
    assert "inside the loop" not in message
    assert "again after it" in message


def test_a_sessions_report_before_its_end_says_the_count_is_a_lower_bound(
    engine: Engine,
) -> None:
    """Under install(), a loop that commits after each object (twice over them) is
    reported at the first commit past the threshold, while it goes on reloading."""
    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        users = session.scalars(select(User)).all()
        for user in users * 2:
            user.name = user.name.upper()
            session.commit()
    finding = one(sqla_doctor.collected(), "SQD253")
    loads = finding.details["loads"]
    assert loads < 2 * USERS - 1
    assert finding.message.startswith(
        f"User attributes (name) reloaded one object at a time at least {loads}× from "
    )


def test_an_explicit_unit_reports_the_final_count_of_a_loop_that_commits(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        for user in users * 2:
            user.name = user.name.upper()
            session.commit()
    assert one(uow.findings, "SQD253").message.startswith(
        f"User attributes (name) reloaded one object at a time {2 * USERS - 1}× from "
    )


def test_expire_on_commit_false_is_the_silent_twin(engine: Engine) -> None:
    factory = sessionmaker(engine, expire_on_commit=False)
    with sqla_doctor.track(mode="collect") as uow, factory() as session:
        users = session.scalars(select(User)).all()
        session.commit()
        assert [user.name for user in users]
    assert not uow.findings


def test_deferred_column_read_per_object_suggests_undefer(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        bios = [user.bio for user in session.scalars(select(User)).all()]  # line:deferred
    assert len(bios) == USERS
    finding = one(uow.findings, "SQD253")
    assert finding.location.line == line_of("deferred")
    # Never loaded before: the first load, not a reload (expired attributes are reloaded).
    here = relative(__file__)
    assert finding.message == (
        f"User attributes (bio) loaded one object at a time {USERS}× from "
        f"{here}:{line_of('deferred')} — they are deferred in the mapping: load them with the "
        f"query at {here}:{line_of('deferred')}, .options(undefer(User.bio))"
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("deferred"), "the query that loaded them")
    ]


def test_deferred_column_of_related_objects_gets_the_option_chained_from_the_query(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        posts = session.scalars(  # line:through-query
            select(Post).options(selectinload(Post.author))
        ).all()
        bios = [post.author.bio for post in posts]  # line:through-read
    assert len(bios) == 2 * USERS
    finding = one(uow.findings, "SQD253")
    assert finding.location.line == line_of("through-read")
    # undefer(User.bio) alone on select(Post) raises ArgumentError: it must be chained.
    option = ".options(defaultload(Post.author).undefer(User.bio))"
    assert finding.message.endswith(
        "they are deferred in the mapping and were loaded through Post.author: load them "
        f"with the query at {relative(__file__)}:{line_of('through-query')}, {option}"
    )
    assert finding.fix_hint == option
    assert [r.location.line for r in finding.related] == [line_of("through-query")]


def test_the_chained_undefer_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        posts = session.scalars(
            select(Post).options(
                selectinload(Post.author), defaultload(Post.author).undefer(User.bio)
            )
        ).all()
        bios = [post.author.bio for post in posts]
    assert len(bios) == 2 * USERS
    assert None not in bios
    assert not uow.findings


def test_undefer_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        bios = [user.bio for user in session.scalars(select(User).options(undefer(User.bio))).all()]
    assert len(bios) == USERS
    assert not uow.findings


def test_a_column_load_only_left_out_is_told_to_name_it_in_load_only(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        posts = session.scalars(select(Post).options(load_only(Post.title))).all()  # line:lo-q
        owners = [post.author_id for post in posts]  # line:lo-read
    assert len(owners) == 2 * USERS
    finding = one(uow.findings, "SQD253")
    here = relative(__file__)
    assert finding.location.line == line_of("lo-read")
    assert finding.message == (
        f"Post attributes (author_id) loaded one object at a time {2 * USERS}× from "
        f"{here}:{line_of('lo-read')} — the load_only(Post.title) on the query at "
        f"{here}:{line_of('lo-q')} left them out: name them in it too, "
        ".options(load_only(Post.title, Post.author_id))"
    )
    assert finding.fix_hint == ".options(load_only(Post.title, Post.author_id))"
    assert finding.related[0].location.line == line_of("lo-q")


def test_load_only_naming_every_column_read_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        stmt = select(Post).options(load_only(Post.title, Post.author_id))
        owners = [post.author_id for post in session.scalars(stmt).all()]
        # One post's left-out column read once is no N+1.
        assert session.scalars(select(Post).options(load_only(Post.title))).first().author_id
    assert len(owners) == 2 * USERS
    assert not uow.findings


def test_a_column_deferred_by_a_defer_option_is_told_to_drop_it(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        posts = session.scalars(select(Post).options(defer(Post.title))).all()  # line:defer-q
        titles = [post.title for post in posts]  # line:defer-read
    assert len(titles) == 2 * USERS
    finding = one(uow.findings, "SQD253")
    here = relative(__file__)
    assert finding.message == (
        f"Post attributes (title) loaded one object at a time {2 * USERS}× from "
        f"{here}:{line_of('defer-read')} — the defer(Post.title) on the query at "
        f"{here}:{line_of('defer-q')} left them out: drop that option, they are read anyway"
    )
    assert finding.fix_hint == "remove defer(Post.title)"


def test_load_only_chained_under_a_relationship_option_is_told_where_it_is(
    engine: Engine,
) -> None:
    # The posts keep the users' load path: their column loads were taken for relationship
    # loads, and went unreported.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        stmt = select(User).options(selectinload(User.posts).load_only(Post.title))
        users = session.scalars(stmt).all()  # line:chained-q
        owners = [post.author_id for user in users for post in user.posts]  # line:chained-read
    assert len(owners) == 2 * USERS
    finding = one(uow.findings, "SQD253")
    here = relative(__file__)
    assert finding.location.line == line_of("chained-read")
    assert finding.message == (
        f"Post attributes (author_id) loaded one object at a time {2 * USERS}× from "
        f"{here}:{line_of('chained-read')} — the load_only(Post.title) chained under "
        f"User.posts on the query at {here}:{line_of('chained-q')} left them out: name them "
        "in it too, .load_only(Post.title, Post.author_id)"
    )


def test_the_chained_load_only_naming_the_column_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        option = selectinload(User.posts).load_only(Post.title, Post.author_id)
        users = session.scalars(select(User).options(option)).all()
        owners = [post.author_id for user in users for post in user.posts]
    assert len(owners) == 2 * USERS
    assert not uow.findings


async def test_async_awaitable_attrs_of_a_load_only_query_are_reported(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, async_sessionmaker(async_engine)() as s:
        posts = (await s.scalars(select(Post).options(load_only(Post.title)))).all()
        for post in posts:
            assert await post.awaitable_attrs.author_id  # line:async-lo
    finding = one(uow.findings, "SQD253")
    assert finding.location.line == line_of("async-lo")
    assert finding.fix_hint == ".options(load_only(Post.title, Post.author_id))"


async def test_async_load_only_naming_the_column_is_the_silent_twin(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, async_sessionmaker(async_engine)() as s:
        stmt = select(Post).options(load_only(Post.title, Post.author_id))
        for post in (await s.scalars(stmt)).all():
            assert await post.awaitable_attrs.author_id
    assert not uow.findings


def test_the_same_object_reloaded_after_each_commit_is_not_an_n_plus_one(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        for i in range(6):
            user.name = f"renamed {i}"
            session.commit()
    assert not of_code(uow.findings, "SQD253")


def test_refresh_of_a_relationship_is_left_to_the_lazy_load_detector(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            session.refresh(user, ["posts"])
    assert not of_code(uow.findings, "SQD253")
    assert of_code(uow.findings, "SQD251")


async def test_async_awaitable_attrs_after_commit_is_reported(async_engine: AsyncEngine) -> None:
    factory = async_sessionmaker(async_engine)
    async with sqla_doctor.track(mode="collect") as uow, factory() as session:
        users = (await session.scalars(select(User))).all()
        await session.commit()
        for user in users:
            assert await user.awaitable_attrs.name  # line:async-reload
    finding = one(uow.findings, "SQD253")
    assert finding.location.line == line_of("async-reload")
    assert finding.fix_hint == "async_sessionmaker(..., expire_on_commit=False)"


async def test_async_expire_on_commit_false_twin_is_silent(async_engine: AsyncEngine) -> None:
    factory = async_sessionmaker(async_engine, expire_on_commit=False)
    async with sqla_doctor.track(mode="collect") as uow, factory() as session:
        users = (await session.scalars(select(User))).all()
        await session.commit()
        assert [user.name for user in users]
    assert not uow.findings


def test_refresh_in_a_loop_says_refresh(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            session.refresh(user)  # line:refresh
    finding = one(uow.findings, "SQD253")
    assert finding.location.line == line_of("refresh")
    assert finding.message.endswith(
        "session.refresh() one object at a time: reload them with one query, "
        "select(User).where(User.id.in_(ids)).execution_options(populate_existing=True)"
    )


def test_a_locking_refresh_in_a_loop_is_told_the_one_query_that_keeps_the_lock(
    engine: Engine,
) -> None:
    # Without .with_for_update() the one query would lock nothing.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            session.refresh(user, with_for_update={"nowait": True})  # line:refresh-lock
    finding = one(uow.findings, "SQD253")
    assert finding.location.line == line_of("refresh-lock")
    assert finding.message.endswith(
        "session.refresh() one object at a time: reload them with one query, "
        "select(User).where(User.id.in_(ids)).with_for_update(nowait=True)"
        ".execution_options(populate_existing=True) (it locks the rows it reads: "
        ".with_for_update(nowait=True) keeps the lock)"
    )
    assert finding.fix_hint == (
        ".with_for_update(nowait=True).execution_options(populate_existing=True)"
    )


def test_the_one_locking_reload_is_the_locking_refresh_loops_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        ids = [user.id for user in users]
        stmt = select(User).where(User.id.in_(ids)).with_for_update(nowait=True)
        session.scalars(stmt.execution_options(populate_existing=True)).all()
        assert all(user.name for user in users)
    assert not uow.findings


def test_one_reload_with_populate_existing_is_the_refresh_loops_silent_twin(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        users = session.scalars(select(User)).all()
        ids = [user.id for user in users]
        reloaded = session.scalars(
            select(User).where(User.id.in_(ids)).execution_options(populate_existing=True)
        ).all()
        assert [user.name for user in reloaded]
    assert not uow.findings


class StaffBase(DeclarativeBase):
    pass


class Team(StaffBase):
    __tablename__ = "team"
    id: Mapped[int] = mapped_column(primary_key=True)
    members: Mapped[list[Employee]] = relationship()


class Employee(StaffBase):
    __tablename__ = "employee"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int | None] = mapped_column(ForeignKey("team.id"))
    name: Mapped[str]
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


class Manager(Employee):
    __tablename__ = "manager"
    id: Mapped[int] = mapped_column(ForeignKey("employee.id"), primary_key=True)
    budget: Mapped[int]
    __mapper_args__: ClassVar[dict[str, Any]] = {"polymorphic_identity": "manager"}


ENGINEERS = 5


@pytest.fixture
def staff(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'staff.db'}")
    StaffBase.metadata.create_all(engine)
    with Session(engine) as session:
        members = [Engineer(name=f"e{i}", language="py") for i in range(ENGINEERS)]
        session.add(Team(members=[*members, Employee(name="boss")]))
        session.commit()
    yield engine
    engine.dispose()


def languages(staff: Iterable[Employee]) -> list[str]:
    return [e.language for e in staff if isinstance(e, Engineer)]  # line:language


def test_subclass_columns_a_base_class_query_left_out_are_told_selectin_polymorphic(
    staff: Engine,
) -> None:
    """select(Employee) loads no engineer's own columns: nothing expired them, and
    populate_existing would not load them either; the option the finding names does."""
    with sqla_doctor.track(mode="collect") as uow, Session(staff) as session:
        everyone = session.scalars(select(Employee)).all()  # line:base
        assert languages(everyone) == ["py"] * ENGINEERS
    finding = one(uow.findings, "SQD253")
    here = relative(__file__)
    assert finding.location.line == line_of("language")
    assert finding.message == (
        f"Engineer attributes (language) loaded one object at a time {ENGINEERS}× from "
        f"{here}:{line_of('language')} — the query at {here}:{line_of('base')} selected "
        "Employee, which leaves Engineer's own table out: add "
        ".options(selectin_polymorphic(Employee, [Engineer])) to it"
    )
    assert finding.related[0].location.line == line_of("base")
    assert finding.fix_hint == ".options(selectin_polymorphic(Employee, [Engineer]))"
    with sqla_doctor.track(mode="collect") as fixed, Session(staff) as session:
        names = {"select": select, "selectin_polymorphic": selectin_polymorphic}
        names |= {"Employee": Employee, "Engineer": Engineer}
        query = eval(f"select(Employee){finding.fix_hint}", names)
        assert languages(session.scalars(query).all()) == ["py"] * ENGINEERS
    assert not fixed.findings


def test_two_subclasses_a_base_class_query_left_out_are_told_one_option_naming_both(
    staff: Engine,
) -> None:
    """Engineers' languages and managers' budgets read after one select(Employee): each
    finding's option names both subclasses, since the two one-subclass options together
    raise InvalidRequestError ('Loader strategy replacement selectin_polymorphic(Employee)
    is in conflict with existing strategy')."""

    def read(staff: Iterable[Employee]) -> list[object]:
        return [
            e.language if isinstance(e, Engineer) else e.budget  # line:both
            for e in staff
            if isinstance(e, Engineer | Manager)
        ]

    with Session(staff) as session:
        session.add_all(Manager(name=f"m{i}", budget=i) for i in range(ENGINEERS))
        session.commit()
    with sqla_doctor.track(mode="collect") as uow, Session(staff) as session:
        assert len(read(session.scalars(select(Employee)).all())) == 2 * ENGINEERS
    findings = [f for f in uow.findings if f.code == "SQD253"]
    option = ".options(selectin_polymorphic(Employee, [Engineer, Manager]))"
    assert {f.message.split(": ")[0].split(" ")[0] for f in findings} == {"Engineer", "Manager"}
    assert all(f.location.line == line_of("both") for f in findings)
    assert all(f.fix_hint == option and f.message.endswith(f"add {option} to it") for f in findings)
    with sqla_doctor.track(mode="collect") as fixed, Session(staff) as session:
        names = {"select": select, "selectin_polymorphic": selectin_polymorphic}
        names |= {"Employee": Employee, "Engineer": Engineer, "Manager": Manager}
        query = eval(f"select(Employee){option}", names)
        assert len(read(session.scalars(query).all())) == 2 * ENGINEERS
    assert not fixed.findings


def test_subclass_objects_loaded_through_a_relationship_are_told_the_mapping(
    staff: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(staff) as session:
        team = session.scalars(select(Team)).one()
        assert languages(team.members) == ["py"] * ENGINEERS
    finding = one(uow.findings, "SQD253")
    assert finding.message.endswith(
        "they were loaded as Employee objects, which leaves Engineer's own table out: "
        'load it with them, __mapper_args__ = {..., "polymorphic_load": "selectin"} on Engineer'
    )


def test_with_polymorphic_is_the_silent_twin(staff: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(staff) as session:
        everyone = with_polymorphic(Employee, [Engineer])
        assert languages(session.scalars(select(everyone)).all()) == ["py"] * ENGINEERS
    assert not uow.findings


def test_subclass_objects_expired_by_a_commit_keep_the_commit_fix(staff: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(staff) as session:
        engineers = session.scalars(select(Engineer)).all()
        session.commit()
        assert languages(engineers) == ["py"] * ENGINEERS
    finding = one(uow.findings, "SQD253")
    assert "expired them: create the session with expire_on_commit=False" in finding.message
