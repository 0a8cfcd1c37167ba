"""SQD253: expired or deferred attributes reloaded one object at a time."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker, undefer

import sqla_doctor

from .models import USERS, User
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
    assert (
        "they were deferred: load them with the query, .options(undefer(User.bio))"
        in finding.message
    )


def test_undefer_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        bios = [user.bio for user in session.scalars(select(User).options(undefer(User.bio))).all()]
    assert len(bios) == USERS
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
    assert one(uow.findings, "SQD253").location.line == line_of("async-reload")


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
