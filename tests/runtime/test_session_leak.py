"""SQD151: sessions that keep their connection, at the end of the unit of work or at GC."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import unittest
from collections.abc import AsyncIterator, Iterator

import pydantic
import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_scoped_session,
    async_sessionmaker,
)
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.util import greenlet_spawn

import sqla_doctor

from .fixtures import one_factory
from .models import User
from .support import line_of, of_code, one, relative


def sync_fix(call: str, name: str = "session") -> str:
    """The fix names the call that made the session and the name it was given."""
    return f"close it: `with {call} as {name}:` (or {name}.close() in a finally block)"


def async_fix(call: str) -> str:
    return (
        f"close it: `async with {call} as session:` (or `await session.close()` in a finally block)"
    )


# Module level, as an application's helpers are: SQD151 reads them from the module.
ScopeFactory: sessionmaker[Session] = sessionmaker()


@contextlib.contextmanager
def session_scope() -> Iterator[Session]:  # line:scope
    session = ScopeFactory()
    yield session
    session.commit()  # skipped, with the close, when the block raises
    session.close()


@contextlib.contextmanager
def timed() -> Iterator[float]:
    yield 0.0  # no finally either, but nothing of a session's


def find_user(name: str) -> int:
    with session_scope() as session:
        user = session.scalars(select(User).where(User.name == name)).first()  # line:scoped
        if user is None:
            raise LookupError(name)
        return user.id


def find_user_timed(name: str) -> int:
    with timed():
        session = ScopeFactory()
        user = session.scalars(select(User).where(User.name == name)).first()  # line:timed
        if user is None:
            raise LookupError(name)
        return user.id


def open_and_forget(factory: sessionmaker[Session]) -> Session:
    session = factory()
    session.scalars(select(User)).all()  # line:leak
    return session


def test_session_still_holding_its_connection_at_the_end_is_reported(
    session_factory: sessionmaker[Session],
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        leaked = open_and_forget(session_factory)  # line:caller
    finding = one(uow.findings, "SQD151")
    here = relative(__file__)
    assert finding.location.line == line_of("leak")
    assert finding.message.startswith(
        f"Session whose transaction began at {here}:{line_of('leak')} still holds its "
        "connection at the end of the unit of work"
    )
    assert finding.message.endswith(f" — {sync_fix('factory()')}")
    assert finding.fix_hint == "with factory() as session: ..."
    stack = finding.details["stack"]
    assert stack[0] == f"{here}:{line_of('leak')} in open_and_forget"
    assert stack[1].startswith(f"{here}:{line_of('caller')} in ")
    leaked.close()


class UserRepository:
    """A repository that opens its own session and has a close() for it."""

    def __init__(self) -> None:
        self.session = ScopeFactory()  # line:repository-made

    def names(self) -> list[str]:
        return list(self.session.scalars(select(User.name)))  # line:repository-query

    def close(self) -> None:
        self.session.close()


def test_a_session_a_repository_made_in_init_is_traced_to_its_class(engine: Engine) -> None:
    ScopeFactory.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        repository = UserRepository()
        repository.names()
    finding = one(uow.findings, "SQD151")
    here = relative(__file__)
    assert finding.location.line == line_of("repository-query")
    assert finding.message.endswith(
        f" — UserRepository keeps the session it made at {here}:{line_of('repository-made')} "
        "(`self.session = ScopeFactory()`) and nothing closes it: give UserRepository a "
        "close() that calls `self.session.close()`, called in a finally block (or make "
        "UserRepository a context manager), or hand UserRepository a session from "
        "`with ScopeFactory() as session:`"
    )
    assert finding.fix_hint == "self.session.close()"
    made = finding.related[0]
    assert (made.location.path, made.location.line) == (here, line_of("repository-made"))
    assert made.message == "UserRepository made the session here"
    repository.close()


# sqlalchemy-mixins' test modules: one session for every test of the module.
shared = Session()  # line:module-made


def names_through_the_module_session() -> list[str]:
    return list(shared.scalars(select(User.name)))  # line:module-query


def test_a_module_level_session_is_named_and_told_to_end_each_use(engine: Engine) -> None:
    """Told `with Session(engine) as session:` before, as if the reading function had
    made the session it reads through."""
    shared.bind = engine
    with sqla_doctor.track(mode="collect") as uow:
        names_through_the_module_session()
    finding = one(uow.findings, "SQD151")
    here = relative(__file__)
    assert finding.location.line == line_of("module-query")
    assert finding.message.endswith(
        f" — shared is a module-level Session ({here}:{line_of('module-made')}), kept from "
        "one use to the next with its transaction and connection: end each unit of work "
        "with `shared.commit()` or `shared.close()` (a closed session can be used again), "
        "or make a session for each one, `with Session() as session:`"
    )
    assert finding.fix_hint == "shared.close()"
    shared.close()


def test_a_module_level_session_closed_after_each_use_is_the_silent_twin(
    engine: Engine,
) -> None:
    shared.bind = engine
    with sqla_doctor.track(mode="collect") as uow:
        names_through_the_module_session()
        shared.close()
    assert not uow.findings


class UserNamesTest(unittest.TestCase):
    """sqlalchemy-mixins' TestTimestamps: a session per test made in setUp(), and a
    tearDown() that drops the tables and leaves the session open."""

    __test__ = False  # run by the tests below, under track()
    engine: Engine

    def setUp(self) -> None:
        self.session = Session(self.engine)  # line:test-case-made

    def test_names(self) -> None:
        assert list(self.session.scalars(select(User.name)))  # line:test-case-query


class ClosedUserNamesTest(UserNamesTest):
    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(self.session.close)


def test_a_session_a_test_cases_setup_made_is_told_to_close_after_each_test(
    engine: Engine,
) -> None:
    """A TestCase is no repository to give a close() or make a context manager: unittest
    calls its cleanups and tearDown() after each test."""
    UserNamesTest.engine = engine
    with sqla_doctor.track(mode="collect") as uow:
        result = UserNamesTest("test_names").run()
    assert result is not None
    assert result.wasSuccessful()
    finding = one(uow.findings, "SQD151")
    here = relative(__file__)
    assert finding.location.line == line_of("test-case-query")
    assert finding.message.endswith(
        f" — UserNamesTest makes a session for each test at {here}:"
        f"{line_of('test-case-made')} (`self.session = Session(self.engine)`) and nothing "
        "closes it: close it after each test, `self.addCleanup(self.session.close)` on the "
        "line after (or `self.session.close()` in tearDown())"
    )


def test_a_test_case_closing_its_session_in_a_cleanup_is_the_silent_twin(
    engine: Engine,
) -> None:
    ClosedUserNamesTest.engine = engine
    with sqla_doctor.track(mode="collect") as uow:
        result = ClosedUserNamesTest("test_names").run()
    assert result is not None
    assert result.wasSuccessful()
    assert not uow.findings


def test_a_repository_closed_in_a_finally_block_is_the_silent_twin(engine: Engine) -> None:
    ScopeFactory.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        repository = UserRepository()
        try:
            repository.names()
        finally:
            repository.close()
    assert not uow.findings


class ResetFailed(Exception):
    """A pool reset that fails as the session gives its connection back."""


def test_a_close_interrupted_while_returning_the_connection_is_not_a_session_left_open(
    engine: Engine,
) -> None:
    """The program closed the session; the close raised on the way (as an AsyncSession's
    close cancelled by asyncio.run() after a crash does): 'never closed' would be wrong."""

    def fail(connection: object) -> None:
        raise ResetFailed

    session = Session(engine)
    with sqla_doctor.track(mode="collect") as uow:
        session.scalars(select(User)).all()
        event.listen(engine, "rollback", fail)
        try:
            with pytest.raises(ResetFailed):
                session.close()
        finally:
            event.remove(engine, "rollback", fail)
    assert session.get_transaction() is None
    assert not of_code(uow.findings, "SQD151")
    # The twin: the same session, not closed, is reported.
    with sqla_doctor.track(mode="collect") as uow:
        session.scalars(select(User)).all()  # line:not-closed
    assert one(uow.findings, "SQD151").location.line == line_of("not-closed")
    session.close()


def test_with_block_is_the_silent_twin(session_factory: sessionmaker[Session]) -> None:
    with sqla_doctor.track(mode="collect") as uow, session_factory() as session:
        session.scalars(select(User)).all()
    assert not uow.findings


def test_committed_but_unclosed_session_holds_nothing(
    session_factory: sessionmaker[Session],
) -> None:
    """After commit() the connection went back to the pool: nothing leaks."""
    with sqla_doctor.track(mode="collect") as uow:
        session = session_factory()
        session.scalars(select(User)).all()
        session.commit()
    assert not uow.findings
    session.close()


def test_session_collected_while_holding_a_connection_is_reported(
    session_factory: sessionmaker[Session],
) -> None:
    sqla_doctor.install(mode="collect")
    open_and_forget(session_factory)
    gc.collect()
    sqla_doctor.runtime.shutdown()
    finding = one(sqla_doctor.collected(), "SQD151")
    assert finding.location.line == line_of("leak")
    assert "was garbage-collected while holding a connection" in finding.message
    assert finding.message.endswith(f" — {sync_fix('factory()')}")
    assert not of_code(sqla_doctor.collected(), "SQD154"), (
        "the session's leak, not its connection's"
    )


def test_session_bound_to_an_external_connection_is_not_ours(engine: Engine) -> None:
    with engine.connect() as connection:
        with sqla_doctor.track(mode="collect") as uow:
            session = Session(bind=connection)
            session.scalars(select(User)).all()
        session.close()
    assert not uow.findings


async def test_async_session_left_open_is_reported(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow:
        session = AsyncSession(async_engine)
        await session.scalars(select(User))  # line:async-leak
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("async-leak")
    # An AsyncSession is closed with `async with` or an awaited close(), not `with`.
    assert finding.message.endswith(f" — {async_fix('AsyncSession(async_engine)')}")
    assert "with Session(engine)" not in finding.message
    assert finding.fix_hint == "async with AsyncSession(async_engine) as session: ..."
    await session.close()


async def open_async_and_forget(factory: async_sessionmaker[AsyncSession]) -> AsyncConnection:
    session = factory()
    await session.execute(select(User))  # line:async-forgotten
    # Returned, so that only the session is collected: an aiosqlite connection collected
    # by the garbage collector answers its worker thread on a loop that may be closed.
    return await session.connection()


async def test_a_session_outliving_its_async_session_gets_the_async_fix(
    async_engine: AsyncEngine,
) -> None:
    """An unfinished coroutine can keep the sync Session while its AsyncSession is gone:
    ``async_session()`` then answers None, and the awaited line still tells."""
    async with sqla_doctor.track(mode="collect") as uow:
        session = AsyncSession(async_engine)
        await session.execute(select(User))  # line:outlived
        sync_session = session.sync_session
        del session
        gc.collect()
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("outlived")
    assert finding.message.endswith(f" — {async_fix('AsyncSession(async_engine)')}")
    await greenlet_spawn(sync_session.close)


async def test_async_session_collected_while_holding_a_connection_gets_the_async_fix(
    async_engine: AsyncEngine,
) -> None:
    """The FastAPI-style leak: the AsyncSession (and its sync Session) is gone when the
    finding is made, so the line that acquired the connection tells it was async."""
    sqla_doctor.install(mode="collect")
    connection = await open_async_and_forget(async_sessionmaker(async_engine))
    gc.collect()
    await connection.close()
    sqla_doctor.runtime.shutdown()
    finding = one(sqla_doctor.collected(), "SQD151")
    assert finding.location.line == line_of("async-forgotten")
    assert "was garbage-collected while holding a connection" in finding.message
    assert finding.message.endswith(f" — {async_fix('factory()')}")


async def test_async_with_block_is_the_silent_twin(async_engine: AsyncEngine) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(async_engine) as session:
        await session.scalars(select(User))
    assert not uow.findings


def flush_and_forget(factory: sessionmaker[Session]) -> None:
    session = factory()
    session.add(User(name="left behind"))
    session.flush()  # line:flush-leak


def test_a_failed_execution_elsewhere_does_not_take_over_the_next_leaks_line(
    session_factory: sessionmaker[Session],
) -> None:
    """A query that raised before reaching the database (PendingRollbackError) must not
    be taken for the operation that checks out the next session's connection."""
    from sqlalchemy.exc import IntegrityError, PendingRollbackError

    sqla_doctor.install(mode="collect")
    with session_factory() as session:
        session.add(User(id=1, name="duplicate"))
        with contextlib.suppress(IntegrityError):
            session.flush()
        with contextlib.suppress(PendingRollbackError):
            session.scalars(select(User)).all()  # line:reused
    flush_and_forget(session_factory)
    gc.collect()
    sqla_doctor.runtime.shutdown()
    leak = one(sqla_doctor.collected(), "SQD151")
    assert leak.location.line == line_of("flush-leak")
    reused = one(sqla_doctor.collected(), "SQD155")
    assert reused.location.line == line_of("reused")


# A scoped_session keeps its session until remove(): the fix names that call, on the
# name the program uses.
db_session = scoped_session(sessionmaker())
async_db_session = async_scoped_session(async_sessionmaker(), scopefunc=asyncio.current_task)


class Extension:
    """Flask-SQLAlchemy's shape: the scoped session is an attribute, ``db.session``."""

    def __init__(self) -> None:
        self.session = scoped_session(sessionmaker())


db = Extension()


def list_users() -> list[User]:
    return db_session.query(User).all()  # line:scoped-leak


def list_users_through_the_extension() -> list[User]:
    return db.session.query(User).all()  # line:extension-leak


def test_a_scoped_session_never_removed_is_told_to_call_remove(engine: Engine) -> None:
    db_session.configure(bind=engine)
    db.session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        list_users()
        list_users_through_the_extension()
    db_session.remove()
    db.session.remove()
    here = relative(__file__)
    found = {f.location.line: f for f in of_code(uow.findings, "SQD151")}
    assert set(found) == {line_of("scoped-leak"), line_of("extension-leak")}
    plain = found[line_of("scoped-leak")]
    assert plain.message == (
        f"Session whose transaction began at {here}:{line_of('scoped-leak')} still holds its "
        "connection at the end of the unit of work — db_session is a scoped_session: its "
        "session lives until `db_session.remove()`; call it when each request or job ends "
        "(Flask: in an "
        "`@app.teardown_appcontext` function; a worker: in a finally block)"
    )
    assert plain.fix_hint == "db_session.remove()"
    assert found[line_of("extension-leak")].fix_hint == "db.session.remove()"


def test_a_scoped_session_removed_at_the_end_is_the_silent_twin(engine: Engine) -> None:
    db_session.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        try:
            list_users()
        finally:
            db_session.remove()
    assert not of_code(uow.findings, "SQD151")


async def list_users_async() -> list[User]:
    return list((await async_db_session.scalars(select(User))).all())  # line:async-scoped


async def test_an_async_scoped_session_is_told_to_await_remove(async_engine: AsyncEngine) -> None:
    async_db_session.configure(bind=async_engine)
    async with sqla_doctor.track(mode="collect") as uow:
        await list_users_async()
    await async_db_session.remove()
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("async-scoped")
    assert "`await async_db_session.remove()`" in finding.message
    assert finding.fix_hint == "await async_db_session.remove()"


async def test_an_async_scoped_session_made_in_a_function_is_told_to_await_remove(
    async_engine: AsyncEngine,
) -> None:
    Tasks = async_scoped_session(
        async_sessionmaker(async_engine), scopefunc=asyncio.current_task
    )

    async def worker(name: str) -> User | None:
        # The registry is a closure's local: the module's globals do not have it.
        found = await Tasks.scalars(select(User).where(User.name == name))  # line:local-scoped
        return found.first()

    async with sqla_doctor.track(mode="collect") as uow:
        await asyncio.gather(worker("user1"), worker("user2"))
    for session in list(Tasks.registry.registry.values()):
        await session.close()
    found = of_code(uow.findings, "SQD151")
    assert found
    for finding in found:
        assert finding.location.line == line_of("local-scoped")
        assert "Tasks is a scoped_session: its session lives until `await Tasks.remove()`" in (
            finding.message
        )
        assert finding.fix_hint == "await Tasks.remove()"


async def test_a_local_name_that_is_not_a_scoped_session_gets_the_close_advice(
    async_engine: AsyncEngine,
) -> None:
    Tasks = async_sessionmaker(async_engine)
    session = Tasks()
    async with sqla_doctor.track(mode="collect") as uow:
        await session.scalars(select(User))  # line:local-plain
    await session.close()
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("local-plain")
    assert "scoped_session" not in finding.message


def test_a_session_scope_without_finally_is_named(engine: Engine) -> None:
    ScopeFactory.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        with contextlib.suppress(LookupError):
            find_user("nobody")
        gc.collect()
    finding = one(uow.findings, "SQD151")
    here = relative(__file__)
    assert finding.location.line == line_of("scoped")
    assert finding.message.endswith(
        f"— the session comes from session_scope() ({here}:{line_of('scope') - 1}), a "
        "@contextmanager generator whose code after `yield` does not run when its `with` "
        "block raises: write it as `with ScopeFactory.begin() as session: yield session` "
        "(commits when the block succeeds, rolls back when it raises, closes)"
    )


AsyncScopeFactory: async_sessionmaker[AsyncSession] = async_sessionmaker()
# The scopes' sessions, kept so that the test closes the leaked one itself (a collected
# aiosqlite connection warns, an error under this suite's filterwarnings).
opened_by_scopes: list[AsyncSession] = []


@contextlib.asynccontextmanager
async def async_session_scope() -> AsyncIterator[AsyncSession]:
    db = AsyncScopeFactory()
    opened_by_scopes.append(db)
    yield db
    await db.commit()  # skipped, with the close, when the block raises
    await db.close()


@contextlib.asynccontextmanager
async def async_session_scope_fixed() -> AsyncIterator[AsyncSession]:
    async with AsyncScopeFactory.begin() as db:
        opened_by_scopes.append(db)
        yield db


async def find_user_async(name: str) -> int:
    async with async_session_scope() as db:
        user = (await db.scalars(select(User).where(User.name == name))).first()  # line:ascoped
        if user is None:
            raise LookupError(name)
        return user.id


async def find_user_async_fixed(name: str) -> int:
    async with async_session_scope_fixed() as db:
        user = (await db.scalars(select(User).where(User.name == name))).first()
        if user is None:
            raise LookupError(name)
        return user.id


async def test_an_async_session_scope_without_finally_is_named_as_written(
    async_engine: AsyncEngine,
) -> None:
    AsyncScopeFactory.configure(bind=async_engine)
    with sqla_doctor.track(mode="collect") as uow, contextlib.suppress(LookupError):
        await find_user_async("nobody")
    await opened_by_scopes.pop().close()
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("ascoped")
    # The generator's own factory and name, in a block that commits as it did.
    assert finding.message.endswith(
        "write it as `async with AsyncScopeFactory.begin() as db: yield db` (commits when "
        "the block succeeds, rolls back when it raises, closes)"
    )


async def test_the_async_session_scope_written_as_advised_is_the_silent_twin(
    async_engine: AsyncEngine,
) -> None:
    AsyncScopeFactory.configure(bind=async_engine)
    with sqla_doctor.track(mode="collect") as uow, contextlib.suppress(LookupError):
        await find_user_async_fixed("nobody")
    await opened_by_scopes.pop().close()
    assert not of_code(uow.findings, "SQD151")


def test_a_context_manager_holding_no_session_is_not_named(engine: Engine) -> None:
    ScopeFactory.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        with contextlib.suppress(LookupError):
            find_user_timed("nobody")
        gc.collect()
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("timed")
    assert finding.message.endswith(f" — {sync_fix('ScopeFactory()')}")


SessionLocal: sessionmaker[Session] = sessionmaker()


def count_users_and_forget() -> int:
    db = SessionLocal()
    query = select(User)
    return len(db.scalars(query.where(User.id > 0)).all())  # line:factory-leak


def count_users_and_close() -> int:
    with SessionLocal() as db:
        query = select(User)
        return len(db.scalars(query.where(User.id > 0)).all())


def count_users_of(session: Session) -> int:
    return len(session.scalars(select(User)).all())  # line:given-leak


def test_a_session_made_by_a_factory_is_told_to_close_that_factorys_session(
    engine: Engine,
) -> None:
    """The fix names the call the function made and the name it chose, not
    ``Session(engine)``; ``query.where(`` on the same line is not taken for it."""
    SessionLocal.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        assert count_users_and_forget()
        gc.collect()
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("factory-leak")
    assert finding.message.endswith(
        " — close it: `with SessionLocal() as db:` (or db.close() in a finally block)"
    )
    assert finding.fix_hint == "with SessionLocal() as db: ..."


def test_the_factorys_session_in_a_with_block_is_the_silent_twin(engine: Engine) -> None:
    SessionLocal.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        assert count_users_and_close()
        gc.collect()
    assert not uow.findings


def test_a_session_made_elsewhere_keeps_the_generic_fix(engine: Engine) -> None:
    """The function was handed the session: what made it is not on its lines."""
    with sqla_doctor.track(mode="collect") as uow:
        session = Session(engine)
        assert count_users_of(session)
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("given-leak")
    assert finding.message.endswith(f" — {sync_fix('Session(engine)')}")
    session.close()


class UserOut(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(from_attributes=True)
    name: str


def load_and_commit(engine: Engine) -> tuple[Session, User]:
    session = Session(engine)
    user = session.get(User, 1)
    assert user is not None
    session.commit()  # line:leak-commit
    return session, user  # the session stays open: a request's, held by its framework


async def test_a_transaction_begun_by_a_serializer_names_the_programs_last_line(
    engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        session, user = load_and_commit(engine)
        # A framework serializes the response with no line of the program on the stack
        # (FastAPI's response_model): pydantic reads what the commit expired, and the
        # session's next transaction begins there.
        asyncio.get_running_loop().call_soon(UserOut.model_validate, user)
        await asyncio.sleep(0)
        del session, user
        gc.collect()
    finding = one(uow.findings, "SQD151")
    assert finding.location.line == line_of("leak-commit")
    assert (line_of("leak-commit"), "the program last used the session here") in [
        (r.location.line, r.message) for r in finding.related
    ]
    # The function's own `session = Session(engine)`, found from that line.
    assert finding.message.endswith(f" — {sync_fix('Session(engine)')}")


@sqla_doctor.track(mode="collect")
def names_of(session: Session) -> list[str]:
    return [u.name for u in session.scalars(select(User))]  # line:handed-query


@sqla_doctor.track(mode="collect")
def names_from_a_session_of_its_own(factory: sessionmaker[Session]) -> list[str]:
    session = factory()
    return [u.name for u in session.scalars(select(User))]  # line:own-leak


def test_a_session_a_decorated_function_is_called_with_is_its_callers(
    session_factory: sessionmaker[Session],
) -> None:
    # The caller closes it after the call: the end of the call's unit is too early to
    # judge it (under install() too, which sees its connection checked out).
    sqla_doctor.install(mode="collect")
    with session_factory() as session:
        assert len(names_of(session)) == 5
    gc.collect()
    assert not of_code(sqla_doctor.collected(), "SQD151")


def test_a_session_the_decorated_function_opens_and_leaves_open_is_reported(
    session_factory: sessionmaker[Session],
) -> None:
    sqla_doctor.install(mode="collect")
    leaked: list[Session] = []  # kept alive: still open when the call's unit ends
    event.listen(session_factory, "after_begin", lambda s, *_: leaked.append(s))
    assert len(names_from_a_session_of_its_own(session_factory)) == 5
    finding = one(sqla_doctor.collected(), "SQD151")
    assert finding.location.line == line_of("own-leak")
    leaked[0].close()


@sqla_doctor.track(mode="collect")
async def async_names_of(session: AsyncSession) -> list[str]:
    return [u.name for u in (await session.scalars(select(User))).all()]


async def test_an_async_session_an_endpoint_is_called_with_is_its_callers(
    async_engine: AsyncEngine,
) -> None:
    # A FastAPI endpoint decorated with track(): its yield dependency closes the session
    # after the endpoint returned.
    sqla_doctor.install(mode="collect")
    async with AsyncSession(async_engine) as session:
        assert len(await async_names_of(session)) == 5
    assert not of_code(sqla_doctor.collected(), "SQD151")


def test_a_session_made_on_another_line_is_told_to_use_the_modules_factory(
    engine: Engine,
) -> None:
    one_factory.JobSession.configure(bind=engine)
    with sqla_doctor.track(mode="collect") as uow:
        assert one_factory.mark_done(1) == "user0"
    finding = one(uow.findings, "SQD151")
    assert finding.location.path.endswith("fixtures/one_factory.py")
    assert finding.location.line == line_of("job-refresh", one_factory.__file__)
    assert finding.message.endswith(f" — {sync_fix('JobSession()')}")
    assert finding.fix_hint == "with JobSession() as session: ..."
    one_factory.kept.pop().close()
