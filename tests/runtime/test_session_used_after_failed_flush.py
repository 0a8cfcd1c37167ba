"""SQD155: a session used again after a failed flush without rollback(), and its twins."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from sqlalchemy import Engine, delete, event, select, text
from sqlalchemy.exc import IntegrityError, InvalidRequestError, PendingRollbackError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    scoped_session,
    sessionmaker,
)
from sqlalchemy.orm.exc import StaleDataError

import sqla_doctor

from .models import User
from .support import line_of, of_code, one, relative

notes = pytest.mark.skipif(sys.version_info < (3, 11), reason="exception notes are 3.11+")


def add_duplicate(session: Session) -> None:
    session.add(User(id=1, name="secret-value"))
    session.commit()  # line:failed-commit


def test_query_after_a_caught_integrity_error_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        with contextlib.suppress(IntegrityError):
            add_duplicate(session)
        with pytest.raises(PendingRollbackError):
            session.scalars(select(User)).all()  # line:reuse
    finding = one(uow.findings, "SQD155")
    here = relative(__file__)
    assert finding.location.path == here
    assert finding.location.line == line_of("reuse")
    assert finding.message == (
        f"Session used again after its flush at {here}:{line_of('failed-commit')} failed with "
        "IntegrityError (sqlite3.IntegrityError) and was not rolled back — this raises "
        "PendingRollbackError; call session.rollback() in the except block that caught it, "
        "or put the write in a SAVEPOINT with `with session.begin_nested():`"
    )
    assert [r.location.line for r in finding.related] == [line_of("failed-commit")]
    assert finding.pitfalls == ("P04",)
    assert "secret-value" not in repr(finding), "bound parameters are never shown"


def test_a_flush_after_a_caught_integrity_error_is_reported(engine: Engine) -> None:
    # An importer that catches every error: the next row's flush() and the final
    # commit() raise PendingRollbackError, both caught too. Only the flush has an event.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in (1, 1000):
            session.add(User(id=user_id, name="imported"))
            with contextlib.suppress(IntegrityError, PendingRollbackError):
                session.flush()  # line:import-flush
        with contextlib.suppress(PendingRollbackError):
            session.commit()
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("import-flush")
    assert [r.location.line for r in finding.related] == [line_of("import-flush")]


class VersionBase(DeclarativeBase):
    pass


class Counter(VersionBase):
    __tablename__ = "counter"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]
    version: Mapped[int] = mapped_column()
    __mapper_args__: ClassVar[dict[str, Any]] = {"version_id_col": version}


def lose_the_race(engine: Engine, session: Session, roll_back: bool) -> None:
    """Optimistic concurrency: another writer bumps the row's version first, so this
    session's flush raises StaleDataError, raised by the unit of work, not a statement."""
    VersionBase.metadata.create_all(engine)
    with Session(engine) as setup:
        setup.add(Counter(id=1, value=0))
        setup.commit()
    counter = session.get(Counter, 1)
    assert counter is not None
    with Session(engine) as other:
        winner = other.get(Counter, 1)
        assert winner is not None
        winner.value = 5
        other.commit()
    counter.value = 1
    try:
        session.flush()  # line:stale-flush
    except StaleDataError:
        if roll_back:
            session.rollback()


def test_a_stale_version_flush_is_named_by_its_error(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        lose_the_race(engine, session, roll_back=False)
        with pytest.raises(PendingRollbackError):
            session.scalars(select(Counter)).all()
    finding = one(uow.findings, "SQD155")
    assert finding.message.startswith(
        f"Session used again after its flush at {relative(__file__)}:{line_of('stale-flush')} "
        "failed with StaleDataError and was not rolled back"
    )


def test_a_stale_version_flush_rolled_back_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        lose_the_race(engine, session, roll_back=True)
        assert [c.value for c in session.scalars(select(Counter))] == [5]
    assert not of_code(uow.findings, "SQD155")


def test_a_flush_after_rollback_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in (1, 1000):
            session.add(User(id=user_id, name="imported"))
            try:
                session.flush()
            except IntegrityError:
                session.rollback()
        session.commit()
    assert not of_code(uow.findings, "SQD155")


def test_rollback_in_the_except_block_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        try:
            add_duplicate(session)
        except IntegrityError:
            session.rollback()
        assert len(session.scalars(select(User)).all()) == 5
    assert not of_code(uow.findings, "SQD155")


def test_savepoint_twin_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        try:
            with session.begin_nested():
                session.add(User(id=1, name="secret-value"))
        except IntegrityError:
            pass
        assert len(session.scalars(select(User)).all()) == 5
    assert not of_code(uow.findings, "SQD155")


def test_an_error_caught_inside_the_savepoint_block_says_to_catch_it_outside(
    engine: Engine,
) -> None:
    def import_one(session: Session) -> None:
        with session.begin_nested():
            session.add(User(id=1, name="secret-value"))
            with contextlib.suppress(IntegrityError):
                session.flush()
            session.get(User, 2)  # line:inside-savepoint

    # SQLAlchemy refuses the get(): "Can't operate on closed transaction inside context
    # manager".
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(engine) as session,
        pytest.raises(InvalidRequestError),
    ):
        import_one(session)
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("inside-savepoint")
    assert finding.message.endswith(
        "catch the error outside the `with session.begin_nested():` block, which then rolls "
        "back to the SAVEPOINT and leaves the session usable"
    )


@notes
def commit_again(engine: Engine, tracker: sqla_doctor.Tracker) -> None:
    with tracker, Session(engine) as session:
        with contextlib.suppress(IntegrityError):
            add_duplicate(session)
        session.add(User(name="new"))
        session.commit()  # line:commit-again


@notes
def test_pending_rollback_from_commit_is_explained_with_a_note(engine: Engine) -> None:
    """commit() runs no query: the PendingRollbackError is explained at the unit's end."""
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(PendingRollbackError) as raised:
        commit_again(engine, tracker)
    uow = tracker.last
    assert uow is not None
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("commit-again")
    note = "\n".join(raised.value.__notes__)
    assert note.startswith("sqla-doctor: SQD155 Session used again after its flush at")
    assert f":{line_of('failed-commit')}: this flush failed" in note


def test_installed_path_reports_the_reuse(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        with contextlib.suppress(IntegrityError):
            add_duplicate(session)
        with pytest.raises(PendingRollbackError):
            session.get(User, 2)  # line:installed-reuse
    finding = one(sqla_doctor.collected(), "SQD155")
    assert finding.location.line == line_of("installed-reuse")


async def test_async_reuse_after_failed_flush_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        session.add(User(id=1, name="secret-value"))
        with pytest.raises(IntegrityError):
            await session.commit()  # line:async-commit
        with pytest.raises(PendingRollbackError):
            await session.scalars(select(User))  # line:async-reuse
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("async-reuse")
    assert finding.related[0].location.line == line_of("async-commit")
    assert finding.message.endswith(
        "call await session.rollback() in the except block that caught it, or put the write "
        "in a SAVEPOINT with `async with session.begin_nested():`"
    )
    assert finding.fix_hint == "await session.rollback()"


async def test_async_rollback_twin_is_silent(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        session.add(User(id=1, name="secret-value"))
        with pytest.raises(IntegrityError):
            await session.commit()
        await session.rollback()
        assert len((await session.scalars(select(User))).all()) == 5
    assert not of_code(uow.findings, "SQD155")


@pytest.fixture
async def slow_async_engine(async_engine: AsyncEngine) -> AsyncEngine:
    """The async engine with a ``sleep(seconds)`` SQL function, run in aiosqlite's thread."""

    @event.listens_for(async_engine.sync_engine, "connect")
    def add_sleep(dbapi_connection: object, record: object) -> None:
        dbapi_connection.create_function("sleep", 1, time.sleep)  # type: ignore[attr-defined]

    await async_engine.dispose()  # the seeding's pooled connection has no sleep()
    return async_engine


async def test_reuse_after_a_query_cancelled_by_a_timeout_is_explained(
    slow_async_engine: AsyncEngine,
) -> None:
    units: list[Any] = []

    async def cancel_then_query() -> None:
        async with sqla_doctor.track(mode="collect") as uow, AsyncSession(slow_async_engine) as s:
            units.append(uow)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await s.execute(text("SELECT sleep(0.3)"))  # line:cancelled
            await s.scalars(select(User))  # line:after-cancel

    with pytest.raises(PendingRollbackError):
        await cancel_then_query()
    finding = one(units[0].findings, "SQD155")
    here = relative(__file__)
    assert finding.location.line == line_of("after-cancel")
    assert finding.message == (
        f"Session used again after its statement at {here}:{line_of('cancelled')} failed with "
        "CancelledError and was not rolled back — this raises PendingRollbackError; a "
        "cancellation (asyncio.timeout(), a cancelled task) makes SQLAlchemy invalidate the "
        "connection the statement ran on: call await session.rollback() in the except block "
        "that caught it, or leave this session and use a new one"
    )
    assert finding.related[0].location.line == line_of("cancelled")
    assert finding.fix_hint == "await session.rollback()"


async def test_a_caught_reuse_after_a_cancelled_query_is_reported_where_it_ran(
    slow_async_engine: AsyncEngine,
) -> None:
    # A framework answers 500 with the PendingRollbackError: reported as the query runs.
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(slow_async_engine) as s:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                await s.execute(text("SELECT sleep(0.3)"))
        with pytest.raises(PendingRollbackError):
            await s.scalars(select(User))  # line:caught-after-cancel
    assert one(uow.findings, "SQD155").location.line == line_of("caught-after-cancel")


async def test_rollback_after_a_cancelled_query_is_the_silent_twin(
    slow_async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(slow_async_engine) as s:
        try:
            async with asyncio.timeout(0.05):
                await s.execute(text("SELECT sleep(0.3)"))
        except TimeoutError:
            await s.rollback()
        assert len((await s.scalars(select(User))).all()) == 5
    assert not of_code(uow.findings, "SQD155")


# A worker's module-level scoped_session: each task of a thread gets the same session.
db_session = scoped_session(sessionmaker())


def create_duplicate_user() -> None:
    db_session.add(User(id=1, name="duplicate"))
    db_session.commit()  # line:task-commit


def first_user_id() -> int | None:
    return db_session.scalar(select(User.id).limit(1))  # line:next-task


def run_task(task: Callable[[], object], *, remove: bool) -> None:
    """What a worker does: run the task, log its failure, go on with the next one."""
    try:
        task()
    except (IntegrityError, PendingRollbackError):
        pass
    finally:
        if remove:
            db_session.remove()


def test_a_scoped_session_reused_by_the_next_task_is_told_to_call_remove(
    engine: Engine,
) -> None:
    db_session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        run_task(create_duplicate_user, remove=False)
        run_task(first_user_id, remove=False)
    db_session.remove()
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("next-task")
    assert finding.message.endswith(
        "PendingRollbackError; db_session is a scoped_session, whose session outlived the "
        "create_duplicate_user() whose flush failed: call db_session.rollback() in the "
        "except block that caught it, and `db_session.remove()` when each job or request "
        "ends (a worker: in a finally block)"
    )
    assert finding.fix_hint == "db_session.rollback()"


def test_a_scoped_session_removed_after_each_task_is_the_silent_twin(engine: Engine) -> None:
    db_session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        run_task(create_duplicate_user, remove=True)
        run_task(first_user_id, remove=True)
    assert not uow.findings


def test_a_scoped_session_reused_in_the_same_function_names_its_rollback(
    engine: Engine,
) -> None:
    db_session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        with contextlib.suppress(IntegrityError):
            db_session.add(User(id=1, name="duplicate"))
            db_session.commit()
        with contextlib.suppress(PendingRollbackError):
            db_session.scalars(select(User)).all()
    db_session.remove()
    finding = one(uow.findings, "SQD155")
    assert finding.message.endswith(
        "call db_session.rollback() in the except block that caught it, or put the write in "
        "a SAVEPOINT with `with db_session.begin_nested():`"
    )


# -- a loop that skips the rows that fail: rollback() would lose the ones before --------


def test_a_loop_with_rows_flushed_before_the_failure_is_told_the_savepoint_first(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        # A row flushed earlier in the same transaction, then a duplicate primary key.
        session.add(User(name="kept"))
        session.flush()  # an earlier row of the same transaction
        session.add(User(id=1, name="duplicate"))
        with contextlib.suppress(IntegrityError):
            session.flush()  # line:loop-failed
        session.add(User(name="after"))  # the loop's next row
        with pytest.raises(PendingRollbackError):
            session.flush()  # line:loop-reuse
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("loop-reuse")
    assert finding.message.endswith(
        "put each write in a SAVEPOINT with `with session.begin_nested():`, so that a "
        "failed one rolls back alone; session.rollback() in the except block would make "
        "the session usable but discard what this transaction flushed before the failure "
        "(1 User inserted)"
    )
    assert finding.fix_hint == "with session.begin_nested():"


def test_rollback_in_such_a_loop_loses_the_earlier_rows_and_the_savepoint_keeps_them(
    engine: Engine,
) -> None:
    """The advice, checked against SQLAlchemy: the rollback() fix silently drops 'kept'."""
    for savepoint in (False, True):
        with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
            for user_id, name in ((None, "kept"), (1, "duplicate"), (None, "after")):
                try:
                    if savepoint:
                        with session.begin_nested():
                            session.add(User(id=user_id, name=name))
                    else:
                        session.add(User(id=user_id, name=name))
                        session.flush()
                except IntegrityError:
                    if not savepoint:
                        session.rollback()
            session.commit()
        with Session(engine) as check:
            names = set(check.scalars(select(User.name)).all())
        assert "after" in names
        assert ("kept" in names) == savepoint
        assert not of_code(uow.findings, "SQD155")
        with Session(engine) as cleanup:
            cleanup.execute(delete(User).where(User.name.in_(["kept", "after"])))
            cleanup.commit()


async def test_async_loop_with_rows_flushed_before_the_failure_gets_the_async_savepoint(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        session.add(User(name="kept"))
        await session.flush()
        session.add(User(id=1, name="duplicate"))
        with contextlib.suppress(IntegrityError):
            await session.flush()
        session.add(User(name="after"))
        with pytest.raises(PendingRollbackError):
            await session.flush()  # line:async-loop-reuse
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("async-loop-reuse")
    assert "`async with session.begin_nested():`" in finding.message
    assert "await session.rollback() in the except block would" in finding.message


def consume(session: Session, user_ids: list[int], *, rollback: bool) -> list[str]:
    """A queue worker: one row and one commit per message; a failure is logged (here:
    kept as its class name) and the loop goes on with the next message."""
    failures = []
    for user_id in user_ids:
        session.add(User(id=user_id, name="message"))  # line:worker-add
        try:
            session.commit()  # line:worker-commit
        except Exception as error:
            failures.append(type(error).__name__)
            if rollback:
                session.rollback()
    return failures


def test_a_worker_loop_that_catches_the_pending_rollback_too_is_reported_at_its_add(
    engine: Engine,
) -> None:
    # commit() refuses a failed session before any event: what the doctor sees of the
    # messages after the duplicate is their add(), and the second one is reported.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        failures = consume(session, [1000, 1, 1001, 1002], rollback=False)
    assert failures == ["IntegrityError", "PendingRollbackError", "PendingRollbackError"]
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("worker-add")
    assert [r.location.line for r in finding.related] == [line_of("worker-commit")]
    assert finding.fix_hint == "session.rollback()"


def test_the_worker_loop_that_rolls_back_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        failures = consume(session, [1000, 1, 1001, 1002], rollback=True)
    assert failures == ["IntegrityError"]
    assert not of_code(uow.findings, "SQD155")


async def test_an_async_worker_loop_that_catches_the_pending_rollback_is_reported(
    async_engine: AsyncEngine,
) -> None:
    failures = []
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        for user_id in (1000, 1, 1001, 1002):
            session.add(User(id=user_id, name="message"))  # line:async-worker-add
            try:
                await session.commit()
            except Exception as error:
                failures.append(type(error).__name__)
    assert failures == ["IntegrityError", "PendingRollbackError", "PendingRollbackError"]
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("async-worker-add")
    assert finding.fix_hint == "await session.rollback()"


def test_one_message_after_the_failure_whose_pending_rollback_is_caught_is_reported(
    engine: Engine,
) -> None:
    # One add() since the failure, its commit()'s PendingRollbackError caught, and the
    # session closed: no second add() to report, and no error on its way out to explain.
    # The object could never be written; the failed transaction's end reports its add().
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        failures = consume(session, [1000, 1, 1001], rollback=False)
    assert failures == ["IntegrityError", "PendingRollbackError"]
    finding = one(uow.findings, "SQD155")
    assert finding.location.line == line_of("worker-add")
    assert [r.location.line for r in finding.related] == [line_of("worker-commit")]
    assert finding.fix_hint == "session.rollback()"


def test_one_message_after_the_failure_installed_is_reported_once(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    with Session(engine) as session:
        assert consume(session, [1000, 1, 1001], rollback=False)[-1] == "PendingRollbackError"
    assert one(sqla_doctor.collected(), "SQD155").location.line == line_of("worker-add")


@pytest.mark.parametrize("rollback", [True, False], ids=["rolled-back", "nothing-added"])
def test_a_failed_transaction_ending_with_nothing_added_since_is_silent(
    engine: Engine, rollback: bool
) -> None:
    # The failure rolled back in the except block, or the session closed right after the
    # caught failure: nothing was given to a session that could not write it.
    messages = [1000, 1, 1001] if rollback else [1000, 1001, 1]
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        failures = consume(session, messages, rollback=rollback)
    assert failures == ["IntegrityError"]
    assert not of_code(uow.findings, "SQD155")


def test_an_object_added_after_a_failure_caught_outside_its_savepoint_is_silent(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in (1, 1000):
            with contextlib.suppress(IntegrityError), session.begin_nested():
                session.add(User(id=user_id, name="imported"))
        session.commit()
        assert session.get(User, 1000) is not None
    assert not of_code(uow.findings, "SQD155")


def import_rows(session: Session, *, roll_back_savepoint: bool) -> None:
    """A row import that opens each row's SAVEPOINT with a plain begin_nested() call."""
    for user_id in (None, 1, None):
        savepoint = session.begin_nested()  # line:bare-savepoint
        session.add(User(id=user_id, name="secret-value"))
        try:
            session.flush()  # line:bare-flush
        except IntegrityError:
            if roll_back_savepoint:
                savepoint.rollback()


def test_a_savepoint_begun_without_with_is_told_to_roll_it_back(engine: Engine) -> None:
    # The error leaves the unit of work, as it would leave the program: the unit's end
    # explains it (begin_nested() raises it before any statement runs).
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(PendingRollbackError), tracker, Session(engine) as session:
        import_rows(session, roll_back_savepoint=False)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD155")
    assert finding.location.line == line_of("bare-savepoint")
    assert f"its flush at {relative(__file__)}:{line_of('bare-flush')}" in finding.message
    assert finding.message.endswith(
        "roll the failed SAVEPOINT back in the except block that caught the error "
        "(`savepoint = session.begin_nested()`, then `savepoint.rollback()`), or use "
        "`with session.begin_nested():` and catch the error outside that block"
    )
    assert finding.fix_hint == "savepoint.rollback()"


def test_the_savepoint_rolled_back_in_the_except_block_is_the_silent_twin(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        import_rows(session, roll_back_savepoint=True)
        session.commit()
    assert not of_code(uow.findings, "SQD155")


async def import_async(session: AsyncSession) -> None:
    for user_id in (1, None):
        await session.begin_nested()  # line:async-bare
        session.add(User(id=user_id, name="secret-value"))
        with contextlib.suppress(IntegrityError):
            await session.flush()


async def test_an_async_savepoint_begun_without_with_is_told_to_roll_it_back(
    async_engine: AsyncEngine,
) -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(PendingRollbackError):
        async with tracker, AsyncSession(async_engine) as session:
            await import_async(session)
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD155")
    assert finding.location.line == line_of("async-bare")
    assert (
        "(`savepoint = await session.begin_nested()`, then `await savepoint.rollback()`), "
        "or use `async with session.begin_nested():`"
    ) in finding.message
