"""SQD152: sessions that end without commit() while holding writes, and their twins."""

from __future__ import annotations

import asyncio
import contextlib
import gc

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
)
from sqlalchemy.orm import Session, scoped_session, sessionmaker

import sqla_doctor

from .models import USERS, User
from .support import line_of, of_code, one, relative

INSERT_NAMED = "INSERT INTO users (name) SELECT name FROM named"


def count_users(engine: Engine) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(User)) or 0


def test_added_object_discarded_by_close_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:  # line:with
        session.add(User(name="ada"))  # line:add
    assert count_users(engine) == USERS, "the pitfall: the row was silently lost"
    finding = one(uow.findings, "SQD152")
    here = relative(__file__)
    assert finding.location.line == line_of("with")
    assert finding.message == (
        f"Session closed at {here}:{line_of('with')} without commit(): 1 added object(s) "
        "(1 User) were never inserted — call `session.commit()` before the session ends, "
        "or use `with Session(engine) as session, session.begin():`"
    )
    assert [r.location.line for r in finding.related] == [line_of("add")]
    assert finding.severity.value == "error"


def test_objects_added_from_one_line_are_one_related_entry(engine: Engine) -> None:
    """A loop adding three objects from one line: one entry with the count, not three."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.add(User(name="first"))  # line:single-add
        for name in ("a", "b", "c"):
            session.add(User(name=name))  # line:loop-add
    finding = one(uow.findings, "SQD152")
    assert "4 added object(s) (4 User) were never inserted" in finding.message
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("single-add"), "User added here"),
        (line_of("loop-add"), "3 User added here"),
    ]


def test_objects_added_from_one_line_and_committed_are_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for name in ("a", "b", "c"):
            session.add(User(name=name))
        session.commit()
    assert not uow.findings


def test_commit_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.add(User(name="ada"))
        session.commit()
    assert count_users(engine) == USERS + 1
    assert not uow.findings


def test_session_begin_block_is_the_silent_twin(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session, session.begin():
        session.add(User(name="ada"))
    assert not uow.findings


def test_flushed_writes_rolled_back_by_close_are_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        session.add(User(name="ada"))
        session.flush()  # line:flush
        session.close()  # line:close
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("close")
    assert "the flushed writes (1 User inserted) were rolled back" in finding.message
    assert finding.related[0].location.line == line_of("flush")


def test_explicit_rollback_is_a_choice_not_a_loss(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        session.add(User(name="ada"))
        session.flush()
        session.rollback()
    assert not uow.findings


def finish_request(session: Session, other: Session, status: int) -> None:
    """advanced-alchemy's Flask extension after each request: commit a success only."""
    if status < 400:
        session.commit()
    session.close()


def finish_the_other_session(session: Session, other: Session, status: int) -> None:
    if status < 400:
        other.commit()
    session.close()  # line:other-close


def test_a_close_after_a_commit_this_request_skipped_is_a_choice(engine: Engine) -> None:
    """advanced-alchemy's own test_sync_no_autocommit_on_error failed under
    --sqla-doctor with 'Session closed at advanced_alchemy/extensions/flask/config.py:133
    without commit()', the failed request's writes its handler drops on purpose."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as other:
        session = Session(engine)
        session.add(User(name="failed request"))
        finish_request(session, other, 500)
    assert not uow.findings


def test_a_close_after_another_sessions_commit_is_still_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as other:
        session = Session(engine)
        session.add(User(name="failed request"))
        finish_the_other_session(session, other, 500)
    assert one(uow.findings, "SQD152").location.line == line_of("other-close")


def import_in_batches(session: Session, names: list[str]) -> None:
    for number, name in enumerate(names):
        session.add(User(name=name))
        if number % 100 == 99:
            session.commit()
    session.close()  # line:batch-close


def test_a_close_after_a_commit_per_batch_still_reports_the_short_last_batch(
    engine: Engine,
) -> None:
    """The commit above the close is in the loop: the rows after the last full batch
    are lost, which no request chose."""
    with sqla_doctor.track(mode="collect") as uow:
        import_in_batches(Session(engine), [f"imported {n}" for n in range(3)])
    assert count_users(engine) == USERS
    assert one(uow.findings, "SQD152").location.line == line_of("batch-close")


def test_changed_objects_discarded_by_close_are_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:  # line:dirty-with
        user = session.get(User, 1)
        assert user is not None
        user.name = "renamed"
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("dirty-with")
    assert "changes to 1 User were never written" in finding.message


def test_change_after_commit_then_close_is_reported(engine: Engine) -> None:
    """Setting an attribute begins no transaction; the close ends none; still lost."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        user = session.get(User, 1)
        assert user is not None
        session.commit()
        user.name = "renamed"
    assert "changes to 1 User were never written" in one(uow.findings, "SQD152").message


def test_changes_written_through_merge_into_another_session_are_silent(engine: Engine) -> None:
    # P18's fix: the object stays changed in the session that loaded it, and its
    # change reaches the database through the session it was merged into.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as reader:
        user = reader.get(User, 1)
        assert user is not None
        user.name = "renamed"
        with Session(engine) as writer:
            writer.merge(user)
            writer.commit()
    assert not uow.findings
    with Session(engine) as session:
        assert session.get_one(User, 1).name == "renamed"


def test_changes_next_to_another_sessions_write_of_another_row_are_reported(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as reader:
        user = reader.get(User, 1)
        assert user is not None
        user.name = "renamed"
        with Session(engine) as writer:
            writer.get_one(User, 2).name = "written"
            writer.commit()
    assert "changes to 1 User were never written" in one(uow.findings, "SQD152").message


def test_read_only_session_closing_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        assert session.scalars(select(User)).all()
    assert not uow.findings


def test_savepoint_rolled_back_then_commit_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        nested = session.begin_nested()
        session.add(User(name="ada"))
        session.flush()
        nested.rollback()
        session.commit()
    assert not uow.findings


def test_rows_of_a_rolled_back_savepoint_are_not_counted(engine: Engine) -> None:
    # The savepoint's row was skipped on purpose; only the later write is lost.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        nested = session.begin_nested()
        session.add(User(name="skipped"))
        session.flush()
        nested.rollback()
        session.add(User(name="kept"))
        session.flush()  # line:kept-flush
    finding = one(uow.findings, "SQD152")
    assert "the flushed writes (1 User inserted) were rolled back" in finding.message
    assert [r.location.line for r in finding.related] == [line_of("kept-flush")]


def test_objects_a_failed_savepoint_undid_are_not_called_never_inserted(engine: Engine) -> None:
    # An import skipping duplicates with a SAVEPOINT per row, the outer commit forgotten:
    # the duplicate's savepoint rolled back and expunged it; that is not the lost part.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for user_id in (USERS + 1, 1, USERS + 2):
            with contextlib.suppress(IntegrityError), session.begin_nested():
                session.add(User(id=user_id, name=f"imported {user_id}"))  # line:nested-add
    finding = one(uow.findings, "SQD152")
    assert "the flushed writes (2 User inserted) were rolled back" in finding.message
    assert "never inserted" not in finding.message
    assert line_of("nested-add") not in [r.location.line for r in finding.related]


async def test_objects_a_failed_async_savepoint_undid_are_not_called_never_inserted(
    async_engine: AsyncEngine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSession(async_engine) as session:
            for user_id in (USERS + 1, 1, USERS + 2):
                with contextlib.suppress(IntegrityError):
                    async with session.begin_nested():
                        session.add(User(id=user_id, name=f"imported {user_id}"))
    finding = one(uow.findings, "SQD152")
    assert "the flushed writes (2 User inserted) were rolled back" in finding.message
    assert "never inserted" not in finding.message


def test_an_object_added_after_a_failed_savepoint_is_still_never_inserted(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        with contextlib.suppress(IntegrityError), session.begin_nested():
            session.add(User(id=1, name="duplicate"))
        session.add(User(name="late"))  # line:late-add
    finding = one(uow.findings, "SQD152")
    assert "1 added object(s) (1 User) were never inserted" in finding.message
    assert [r.location.line for r in finding.related] == [line_of("late-add")]


def test_writes_the_session_executed_itself_are_reported(engine: Engine) -> None:
    # No flush: an ORM bulk INSERT and a text() UPDATE, run by the session, then closed.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:  # line:exec-with
        session.execute(insert(User), [{"name": "bulk1"}, {"name": "bulk2"}])  # line:bulk
        session.execute(text("UPDATE users SET name = upper(name)"))
    assert count_users(engine) == USERS, "the pitfall: the rows were silently lost"
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("exec-with")
    assert finding.message == (
        f"Session closed at {relative(__file__)}:{line_of('exec-with')} without commit(): "
        "the writes (2 statement(s) executed) were rolled back — call `session.commit()` "
        "before the session ends, or use `with Session(engine) as session, session.begin():`"
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("bulk"), "written here, never committed")
    ]


def test_executed_writes_committed_or_on_autocommit_are_silent(engine: Engine) -> None:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with sqla_doctor.track(mode="collect") as uow:
        with Session(engine) as session:
            session.execute(insert(User), [{"name": "bulk1"}])
            session.commit()
        with Session(engine) as session:
            session.execute(text("SELECT name FROM users")).all()
        with Session(autocommit) as session:
            session.execute(text("UPDATE users SET name = lower(name)"))
    assert not of_code(uow.findings, "SQD152")


async def test_async_session_executed_writes_are_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        await session.execute(insert(User), [{"name": "bulk1"}])  # line:abulk
    finding = one(uow.findings, "SQD152")
    assert "the writes (1 statement(s) executed) were rolled back" in finding.message
    assert "await session.commit()" in finding.message
    assert line_of("abulk") in [r.location.line for r in finding.related] + [finding.location.line]


def test_external_transaction_recipe_is_skipped(engine: Engine) -> None:
    """The test-suite recipe: a session bound to a connection whose caller rolls back."""
    with engine.connect() as connection, connection.begin() as transaction:
        with sqla_doctor.track(mode="collect") as uow:
            session = Session(bind=connection, join_transaction_mode="create_savepoint")
            session.add(User(name="ada"))
            session.flush()
            session.close()
        transaction.rollback()
    assert not of_code(uow.findings, "SQD152")


def add_and_forget(engine: Engine) -> None:
    session = Session(engine)
    session.add(User(name="ada"))  # line:forgotten


def test_session_collected_with_pending_objects_is_reported(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    add_and_forget(engine)
    gc.collect()
    sqla_doctor.runtime.shutdown()
    finding = one(sqla_doctor.collected(), "SQD152")
    assert finding.location.line == line_of("forgotten")
    assert finding.message.startswith("Session garbage-collected without commit(): 1 added object")


async def test_async_added_object_discarded_is_reported(async_engine: AsyncEngine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSession(async_engine) as session:  # line:async-with
            session.add(User(name="ada"))  # line:async-add
    finding = one(uow.findings, "SQD152")
    # AsyncSession closes in a shielded task, off the caller's stack: the task awaiting
    # its __aexit__ holds the `async with` line, as a sync `with` block would.
    assert finding.location.line == line_of("async-with")
    assert finding.message.startswith(
        f"Session closed at {relative(__file__)}:{line_of('async-with')} without commit()"
    )
    assert [r.location.line for r in finding.related] == [line_of("async-add")]
    assert "1 added object(s) (1 User) were never inserted" in finding.message
    # An AsyncSession's fix is awaited, and its block is `async with`.
    assert finding.message.endswith(
        " — call `await session.commit()` before the session ends, or use "
        "`async with AsyncSession(async_engine) as session, session.begin():`"
    )
    assert finding.fix_hint == "await session.commit()"


async def flush_async_and_forget(engine: AsyncEngine) -> AsyncConnection:
    session = AsyncSession(engine)
    session.add(User(name="ada"))
    await session.flush()  # line:async-flush
    # Returned, so that only the session is collected (see test_session_leak).
    return await session.connection()


async def test_async_session_collected_with_flushed_writes_gets_the_async_fix(
    async_engine: AsyncEngine,
) -> None:
    """Collected: no AsyncSession to ask, the awaited flush tells it was one."""
    sqla_doctor.install(mode="collect")
    connection = await flush_async_and_forget(async_engine)
    gc.collect()
    await connection.close()
    sqla_doctor.runtime.shutdown()
    finding = one(sqla_doctor.collected(), "SQD152")
    assert finding.location.line == line_of("async-flush")
    assert "the flushed writes (1 User inserted) were rolled back" in finding.message
    # `session = AsyncSession(engine)` made it, in the function that flushed.
    assert "`async with AsyncSession(engine) as session, session.begin():`" in finding.message
    assert "`with Session" not in finding.message


async def test_async_commit_is_the_silent_twin(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        session.add(User(name="ada"))
        await session.commit()
    assert not uow.findings


async def test_async_with_left_by_an_exception_drops_its_writes_silently(
    async_engine: AsyncEngine,
) -> None:
    # The async twin of a `with` block left by a raise: AsyncSession closes in a task
    # of its own, where the exception is not the one being handled.
    with sqla_doctor.track(mode="collect") as uow:
        try:
            async with AsyncSession(async_engine) as session:
                session.add(User(name="ada"))
                await session.flush()
                raise ValueError("invalid input")
        except ValueError:
            pass
        async with async_sessionmaker(async_engine).begin() as session:
            session.add(User(name="bob"))
            await session.flush()
    assert not of_code(uow.findings, "SQD152")


async def test_async_with_left_normally_still_reports_lost_writes(
    async_engine: AsyncEngine,
) -> None:
    # While another task is leaving its own `async with` by an exception.
    gate = asyncio.Event()

    async def failing() -> None:
        async with AsyncSession(async_engine):
            await gate.wait()
            raise ValueError("elsewhere")

    with sqla_doctor.track(mode="collect") as uow:
        other = asyncio.create_task(failing())
        async with AsyncSession(async_engine) as session:  # line:async-lost
            session.add(User(name="ada"))
            gate.set()
            await asyncio.sleep(0)
        with contextlib.suppress(ValueError):
            await other
    assert one(uow.findings, "SQD152").location.line == line_of("async-lost")


# The fix spells the program's own factory and name: a sessionmaker's begin() block, or
# the class's `with Session(engine) as s, s.begin():`. Module-level, as applications
# keep them (the fix names what the module's own namespace binds).
SessionLocal = sessionmaker()
AsyncSessionLocal = async_sessionmaker()


def bump_names(db: Session) -> None:
    for user in db.scalars(select(User)).all():
        user.name = user.name.upper()


def test_fix_names_the_programs_sessionmaker_and_its_name(engine: Engine) -> None:
    SessionLocal.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow, SessionLocal() as db:  # line:local-with
        bump_names(db)
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("local-with")
    assert finding.message.endswith(
        " — call `db.commit()` before the session ends, or use `with SessionLocal.begin() as db:`"
    )
    assert finding.fix_hint == "db.commit()"


def rename_all(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as db:  # line:param-with
        bump_names(db)


def test_a_factory_passed_as_a_parameter_gets_the_sessions_own_begin(
    session_factory: sessionmaker[Session],
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        rename_all(session_factory)
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("param-with")
    # Whatever the parameter is, the session it made has begin(): no guess at its type.
    assert finding.message.endswith("or use `with session_factory() as db, db.begin():`")


def test_the_named_begin_block_is_the_silent_twin(engine: Engine) -> None:
    SessionLocal.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow, SessionLocal.begin() as db:
        bump_names(db)
    assert not uow.findings
    with Session(engine) as check:
        name = check.scalars(select(User.name)).first()
    assert name is not None
    assert name == name.upper(), "the advice works: the block committed"


def test_explicit_close_names_the_assignment_that_made_the_session(engine: Engine) -> None:
    SessionLocal.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        db = SessionLocal()
        bump_names(db)
        db.close()  # line:local-close
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("local-close")
    assert "`with SessionLocal.begin() as db:`" in finding.message


async def bump_names_async(db: AsyncSession) -> None:
    for user in (await db.scalars(select(User))).all():
        user.name = user.name.upper()


async def test_async_fix_names_the_async_with_line_and_the_factory(
    async_engine: AsyncEngine,
) -> None:
    AsyncSessionLocal.configure(bind=async_engine)
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSessionLocal() as db:  # line:alocal-with
            await bump_names_async(db)
    finding = one(uow.findings, "SQD152")
    # Not the line of the query that began the transaction: the block that closed it.
    assert finding.location.line == line_of("alocal-with")
    assert finding.message.endswith(
        " — call `await db.commit()` before the session ends, or use "
        "`async with AsyncSessionLocal.begin() as db:`"
    )
    assert finding.fix_hint == "await db.commit()"


async def test_async_named_begin_block_is_the_silent_twin(async_engine: AsyncEngine) -> None:
    AsyncSessionLocal.configure(bind=async_engine)
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSessionLocal.begin() as db:
            await bump_names_async(db)
    assert not uow.findings
    async with AsyncSession(async_engine) as check:
        name = (await check.scalars(select(User.name))).first()
    assert name is not None
    assert name == name.upper(), "the advice works: the block committed"


# -- Core connections: "commit as you go" ---------------------------------------------------


def test_core_writes_closed_without_commit_are_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as conn:  # line:core-with
        conn.execute(insert(User).values(name="ada"))  # line:core-insert
    assert count_users(engine) == USERS, "the pitfall: closing rolled the insert back"
    finding = one(uow.findings, "SQD152")
    here = relative(__file__)
    assert finding.location.line == line_of("core-with")
    assert finding.message == (
        f"Connection closed at {here}:{line_of('core-with')} without commit(): its 1 write "
        "statement(s) were rolled back — call `conn.commit()` before the block ends (a "
        "Connection commits as you go), or use `with engine.begin() as conn:`"
    )
    assert [r.location.line for r in finding.related] == [line_of("core-insert")]


def test_core_twins_are_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        with engine.connect() as conn:
            conn.execute(insert(User).values(name="committed"))
            conn.commit()
        with engine.begin() as conn:
            conn.execute(insert(User).values(name="begun"))
        with engine.connect() as conn:
            conn.execute(insert(User).values(name="rolled back on purpose"))
            conn.rollback()
        with engine.connect() as conn:
            conn.execute(select(User)).all()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(insert(User).values(name="autocommit"))
        with contextlib.suppress(ValueError), engine.connect() as conn:
            conn.execute(insert(User).values(name="abandoned"))
            raise ValueError("an error path drops the write on purpose")
    assert not uow.findings
    assert count_users(engine) == USERS + 3


def test_sqlite_writes_that_begin_no_transaction_are_silent(engine: Engine) -> None:
    """sqlite3 begins a transaction only for a statement starting with INSERT/UPDATE/DELETE:
    a write behind a WITH, or DDL, alone, is committed at once (PostgreSQL: tests/runtime_pg)."""
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as conn:
        conn.execute(text(f"WITH named AS (SELECT 'ada' AS name) {INSERT_NAMED}"))
        conn.execute(text("CREATE TABLE audit (id INTEGER PRIMARY KEY)"))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit")).scalar_one() == 0
    assert count_users(engine) == USERS + 1
    assert not uow.findings


def test_sqlite_writes_inside_a_begun_transaction_are_counted(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as conn:  # line:begun
        conn.execute(insert(User).values(name="bob"))
        conn.execute(text(f"WITH named AS (SELECT 'ada' AS name) {INSERT_NAMED}"))
        conn.execute(text("CREATE TABLE audit (id INTEGER PRIMARY KEY)"))
    assert count_users(engine) == USERS
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("begun")
    assert "its 3 write statement(s) were rolled back, 1 of them DDL" in finding.message
    assert "`metadata.create_all(engine)` commits itself" in finding.message


def test_a_temporary_staging_table_thrown_away_is_silent(engine: Engine) -> None:
    """Rows written to a TEMP table die with the connection on purpose."""
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE staging (name VARCHAR)"))
        conn.execute(text('INSERT INTO "staging" (name) SELECT name FROM users'))
        assert conn.execute(text("SELECT count(*) FROM staging")).scalar_one() == USERS
    assert not uow.findings


def test_a_real_table_written_next_to_a_staging_table_is_reported(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, engine.connect() as conn:
        conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS staging (name VARCHAR)"))
        conn.execute(text("INSERT INTO staging (name) VALUES ('ada')"))
        conn.execute(text("INSERT INTO users (name) SELECT name FROM staging"))  # line:real
    [finding] = of_code(uow.findings, "SQD152")
    assert [r.location.line for r in finding.related] == [line_of("real")]
    assert "its 1 write statement(s)" in finding.message


async def test_async_core_writes_closed_without_commit_get_the_async_fix(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow:
        async with async_engine.connect() as conn:  # line:async-core-with
            await conn.execute(insert(User).values(name="ada"))  # line:async-core
        async with async_engine.begin() as conn:
            await conn.execute(insert(User).values(name="bob"))
    finding = one(uow.findings, "SQD152")
    # AsyncConnection closes in a shielded task of its own: the close is still the
    # `async with` line that awaits it, as for a sync `with engine.connect()`.
    assert finding.location.line == line_of("async-core-with")
    assert f"closed at {relative(__file__)}:{line_of('async-core-with')} without" in (
        finding.message
    )
    assert [(r.location.line, r.message) for r in finding.related] == [
        (line_of("async-core"), "written here, never committed")
    ]
    assert "`await conn.commit()`" in finding.message
    assert "`async with engine.begin() as conn:`" in finding.message


async def test_async_core_block_left_by_an_exception_drops_its_writes_silently(
    async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow:
        with contextlib.suppress(LookupError):
            async with async_engine.connect() as conn:
                await conn.execute(insert(User).values(name="ada"))
                raise LookupError("no such account")
        conn = await async_engine.connect()
        await conn.execute(insert(User).values(name="bob"))  # line:awaited-write
        await conn.close()  # line:awaited-close
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("awaited-close")
    assert [r.location.line for r in finding.related] == [line_of("awaited-write")]


# A web app's or worker's module-level scoped_session: remove() at the end of each
# request or job is its close.
db_session = scoped_session(sessionmaker())


def register(name: str, *, commit: bool) -> None:
    db_session.add(User(name=name))  # line:scoped-add
    if commit:
        db_session.commit()


def test_a_scoped_session_removed_without_commit_names_its_commit(engine: Engine) -> None:
    db_session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        try:
            register("ada", commit=False)
        finally:
            db_session.remove()
    finding = one(uow.findings, "SQD152")
    assert finding.message.endswith(
        "1 added object(s) (1 User) were never inserted — call `db_session.commit()` before "
        "the request or job ends (db_session is a scoped_session: its remove() discards what "
        "was not committed)"
    )
    assert finding.fix_hint == "db_session.commit()"
    assert line_of("scoped-add") in [r.location.line for r in finding.related]


def test_a_scoped_session_committed_before_remove_is_the_silent_twin(engine: Engine) -> None:
    db_session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        try:
            register("ada", commit=True)
        finally:
            db_session.remove()
    assert not uow.findings


class UnitOfWork:
    """The repository pattern's unit of work: __exit__ rolls back what was not committed."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def __enter__(self) -> UnitOfWork:
        self.session = self.factory()
        return self

    def __exit__(self, *args: object) -> None:
        self.rollback()  # line:uow-rollback
        self.session.close()

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()


def register_with_uow(factory: sessionmaker[Session], *, commit: bool, fail: bool = False) -> None:
    with UnitOfWork(factory) as uow:  # line:uow-with
        uow.session.add(User(name="ada"))  # line:uow-add
        if fail:
            raise LookupError("no such team")
        if commit:
            uow.commit()


def test_a_unit_of_work_whose_exit_rolls_back_an_uncommitted_block_is_reported(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        register_with_uow(sessionmaker(engine), commit=False)
    assert count_users(engine) == USERS, "the pitfall: the row was silently lost"
    finding = one(uow.findings, "SQD152")
    here = relative(__file__)
    assert finding.location.line == line_of("uow-with")
    assert finding.message == (
        f"Session rolled back by UnitOfWork.__exit__ ({here}:{line_of('uow-rollback')}) when "
        f"the with block at {here}:{line_of('uow-with')} ended without commit(): 1 added "
        "object(s) (1 User) were never inserted — call the unit of work's commit() before "
        "the with block ends (UnitOfWork's __exit__ rolls back what was not committed)"
    )
    assert finding.related[0].location.line == line_of("uow-add")


def test_a_unit_of_work_that_commits_or_fails_is_the_silent_twin(engine: Engine) -> None:
    factory = sessionmaker(engine)
    with sqla_doctor.track(mode="collect") as uow:
        register_with_uow(factory, commit=True)
        with contextlib.suppress(LookupError):
            register_with_uow(factory, commit=False, fail=True)
    assert count_users(engine) == USERS + 1
    assert not uow.findings


def add_and_close(session: Session) -> None:
    session.add(User(name="ada"))
    session.close()  # line:handed-close


def add_commit_and_close(session: Session) -> None:
    session.add(User(name="grace"))
    session.commit()
    session.close()


def test_a_session_the_function_was_handed_is_told_a_begin_block_that_runs(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        add_and_close(Session(engine))
        add_commit_and_close(Session(engine))
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("handed-close")
    begin = "with Session(engine) as session, session.begin():"
    assert finding.message.endswith(
        f" — call `session.commit()` before the session ends, or use `{begin}`"
    )
    # The block it names commits (Session.begin() on the class would be a TypeError).
    with Session(engine) as session, session.begin():
        session.add(User(name="linus"))
    assert count_users(engine) == USERS + 2


class ClosingUnitOfWork:
    """A unit of work whose __exit__ only closes its session (the close rolls back)."""

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory

    def __enter__(self) -> ClosingUnitOfWork:
        self.session = self.factory()
        return self

    def __exit__(self, *args: object) -> None:
        self.session.close()  # line:uow-close

    def commit(self) -> None:
        self.session.commit()


def register_with_closing_uow(factory: sessionmaker[Session], *, commit: bool) -> None:
    with ClosingUnitOfWork(factory) as work:  # line:closing-with
        work.session.add(User(name="ada"))  # line:closing-add
        if commit:
            work.commit()


def test_a_unit_of_work_whose_exit_closes_an_uncommitted_block_is_reported_at_the_block(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        register_with_closing_uow(sessionmaker(engine), commit=False)
    assert count_users(engine) == USERS
    finding = one(uow.findings, "SQD152")
    here = relative(__file__)
    assert finding.location.line == line_of("closing-with")
    assert finding.message == (
        f"Session closed by ClosingUnitOfWork.__exit__ ({here}:{line_of('uow-close')}) when "
        f"the with block at {here}:{line_of('closing-with')} ended without commit(): 1 added "
        "object(s) (1 User) were never inserted — call the unit of work's commit() before "
        "the with block ends (ClosingUnitOfWork's __exit__ closes the session, which rolls "
        "back what was not committed)"
    )
    assert finding.fix_hint == "work.commit()"
    assert finding.related[0].location.line == line_of("closing-add")


def test_a_unit_of_work_whose_exit_closes_a_committed_block_is_the_silent_twin(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        register_with_closing_uow(sessionmaker(engine), commit=True)
    assert count_users(engine) == USERS + 1
    assert not uow.findings


async def test_an_async_unit_of_work_whose_aexit_closes_is_reported_at_the_block(
    async_engine: AsyncEngine,
) -> None:
    factory = async_sessionmaker(async_engine)

    class AsyncClosingUnitOfWork:
        async def __aenter__(self) -> AsyncClosingUnitOfWork:
            self.session = factory()
            return self

        async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
            await self.session.close()

        async def commit(self) -> None:
            await self.session.commit()

    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncClosingUnitOfWork() as work:  # line:async-closing-uow
            work.session.add(User(name="ada"))
        async with AsyncClosingUnitOfWork() as work:
            work.session.add(User(name="grace"))
            await work.commit()
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("async-closing-uow")
    assert finding.message.startswith("Session closed by AsyncClosingUnitOfWork.__aexit__ (")
    assert finding.fix_hint == "await work.commit()"


class DryRun:
    """Rolls back whatever its block did, on purpose: it has no commit()."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *args: object) -> None:
        self.session.rollback()


def test_a_helper_that_only_rolls_back_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        with DryRun(session):
            session.add(User(name="preview"))
            session.flush()
        session.rollback()
    assert not uow.findings


async def test_an_async_unit_of_work_whose_aexit_rolls_back_is_reported(
    async_engine: AsyncEngine,
) -> None:
    factory = async_sessionmaker(async_engine)

    class AsyncUnitOfWork:
        async def __aenter__(self) -> AsyncSession:
            self.session = factory()
            return self.session

        async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
            await self.session.rollback()
            await self.session.close()

        async def commit(self) -> None:
            await self.session.commit()

    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncUnitOfWork() as session:  # line:async-uow
            session.add(User(name="ada"))
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("async-uow")
    assert finding.message.startswith("Session rolled back by AsyncUnitOfWork.__aexit__ (")


def test_a_flush_on_an_autocommit_engine_is_written_and_silent(engine: Engine) -> None:
    # AUTOCOMMIT: each statement of the flush is committed as it runs; the close that
    # follows loses nothing.
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with sqla_doctor.track(mode="collect") as uow, Session(autocommit) as session:
        session.add(User(name="ada"))
        session.flush()
    assert count_users(engine) == USERS + 1
    assert not of_code(uow.findings, "SQD152")


def test_an_object_never_flushed_on_an_autocommit_engine_is_still_lost(engine: Engine) -> None:
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    with sqla_doctor.track(mode="collect") as uow, Session(autocommit) as session:
        session.scalars(select(User.id)).all()
        session.add(User(name="ada"))
    assert count_users(engine) == USERS
    assert "1 added object(s) (1 User) were never inserted" in one(uow.findings, "SQD152").message


class InvalidEmail(Exception):
    pass


def check_email(email: str) -> None:
    if "@" not in email:
        raise InvalidEmail(email)


def signup(engine: Engine, email: str) -> str:
    """A form handler: the error it catches skips the commit in the same try body, and
    the session's `with` block then ends normally, rolling the new user back."""
    with Session(engine) as session:
        try:
            session.add(User(name=email))
            check_email(email)
            session.commit()
        except InvalidEmail:
            return "invalid email"
    return "ok"


def test_a_commit_skipped_by_an_error_the_block_catches_is_silent(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        assert signup(engine, "ada-at-example") == "invalid email"
        assert signup(engine, "ada@example.com") == "ok"
    assert count_users(engine) == USERS + 1
    assert not uow.findings


async def test_an_async_commit_skipped_by_an_error_the_block_catches_is_silent(
    async_engine: AsyncEngine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSession(async_engine) as session:
            try:
                session.add(User(name="ada"))
                await session.flush()
                check_email("ada")
                await session.commit()
            except InvalidEmail:
                pass
    assert not uow.findings


def test_a_commit_in_a_branch_not_taken_still_reports_lost_writes(engine: Engine) -> None:
    # Commits per batch of 100, and none after the loop: a short last batch is lost.
    # The commit is in the code, but no error skipped it.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:  # line:batch-with
        for number in range(3):
            try:
                session.add(User(name=f"user {number}"))
                if number % 100 == 99:
                    session.commit()
            except IntegrityError:
                session.rollback()
    assert count_users(engine) == USERS, "the pitfall: the rows were silently lost"
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("batch-with")
    assert "3 added object(s) (3 User) were never inserted" in finding.message


def test_an_error_caught_with_no_commit_after_the_write_reports_lost_writes(engine: Engine) -> None:
    # No commit follows the write in a try body: no error skipped one.
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:  # line:after-try
        session.add(User(name="ada"))
        with contextlib.suppress(InvalidEmail):
            check_email("ada")
    assert one(uow.findings, "SQD152").location.line == line_of("after-try")


def copy_users(source: Session, target: Session) -> None:
    for user in source.scalars(select(User)).all():
        target.add(User(name=f"{user.name} (copy)"))


def copy_step(engine: Engine) -> None:
    with Session(engine) as src, Session(engine) as dst:  # line:copy-with
        copy_users(src, dst)


def test_of_two_sessions_made_on_one_with_line_the_fix_names_the_one_that_lost_writes(
    engine: Engine,
) -> None:
    # An ETL step reads from one session and writes through the other, in a helper.
    with sqla_doctor.track(mode="collect") as uow:
        copy_step(engine)
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("copy-with")
    assert finding.fix_hint == "dst.commit()"
    assert finding.message.endswith(
        "call `dst.commit()` before the session ends, or use "
        "`with Session(engine) as dst, dst.begin():`"
    )


async def test_of_two_async_sessions_on_one_line_the_fix_names_the_one_that_wrote(
    async_engine: AsyncEngine,
) -> None:
    # AsyncSession closes in a task of its own: the line that added says which one.
    with sqla_doctor.track(mode="collect") as uow:
        async with AsyncSession(async_engine) as src, AsyncSession(async_engine) as dst:
            names = (await src.scalars(select(User.name))).all()
            dst.add_all(User(name=f"{name} (copy)") for name in names)
    assert one(uow.findings, "SQD152").fix_hint == "await dst.commit()"
