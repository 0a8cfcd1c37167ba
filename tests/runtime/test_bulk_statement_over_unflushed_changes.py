"""SQD353: a bulk UPDATE/DELETE that ran, without autoflush, over unflushed changes."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, bindparam, delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor

from .bulk_models import Account, BulkBase, Label, seed_accounts
from .support import line_of, of_code, one, relative

HERE = relative(__file__)


@pytest.fixture
def bulk_engine(engine: Engine) -> Engine:
    BulkBase.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(seed_accounts())
        session.commit()
    return engine


@pytest.fixture
async def bulk_async_engine(async_engine: AsyncEngine) -> AsyncEngine:
    async with async_engine.begin() as connection:
        await connection.run_sync(BulkBase.metadata.create_all)
    async with AsyncSession(async_engine) as session:
        session.add_all(seed_accounts())
        await session.commit()
    return async_engine


def _name(session: Session, account_id: int) -> str | None:
    return session.scalar(select(Account.name).where(Account.id == account_id))


def test_update_in_no_autoflush_discards_the_pending_change(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        account = session.get(Account, 1)
        assert account is not None
        with session.no_autoflush:
            account.name = "Ada"
            statement = update(Account).where(Account.id == 1).values(name="Bob")
            session.execute(statement)  # line:update
        session.commit()
        # What the finding says happened: the change to "Ada" is gone.
        assert _name(session, 1) == "Bob"
    finding = one(uow.findings, "SQD353")
    assert finding.location.path == HERE
    assert finding.location.line == line_of("update")
    assert finding.message == (
        f"`update(Account)` at {HERE}:{line_of('update')} ran without autoflush while the "
        "session held unflushed changes to 1 Account object(s) (Account.name): the statement "
        "discards those changes (it expires the changed attributes) — call session.flush() "
        "before the statement"
    )
    assert finding.severity.value == "error"


def test_synchronize_session_false_lets_the_flush_overwrite_the_statement(
    bulk_engine: Engine,
) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(bulk_engine, autoflush=False) as session,
    ):
        account = session.get(Account, 1)
        assert account is not None
        account.name = "Ada"
        statement = update(Account).where(Account.id == 1).values(name="Bob")
        session.execute(statement.execution_options(synchronize_session=False))  # line:nosync
        session.commit()
        assert _name(session, 1) == "Ada"
    finding = one(uow.findings, "SQD353")
    assert finding.location.line == line_of("nosync")
    assert "the next flush writes those changes over the statement's values" in finding.message


def test_new_objects_escape_a_bulk_delete(bulk_engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(bulk_engine, autoflush=False) as session,
    ):
        session.add(Account(email="new@example.com", name="new", active=False))
        session.execute(delete(Account).where(Account.active.is_(False)))  # line:delete
        session.commit()
        assert session.scalars(select(Account.name).where(Account.active.is_(False))).all() == [
            "new"
        ]
    finding = one(uow.findings, "SQD353")
    assert finding.location.line == line_of("delete")
    assert "held 1 new Account object(s): the new rows are inserted after the statement" in (
        finding.message
    )


def test_a_bulk_delete_whose_where_compares_an_unflushed_change_is_reported(
    bulk_engine: Engine,
) -> None:
    """The program deactivated account 2, then deleted the inactive accounts: the DELETE
    chose its rows by the database's `active`, which the change had not reached."""
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(bulk_engine, autoflush=False) as session,
    ):
        account = session.get(Account, 2)
        assert account is not None
        account.active = False
        session.execute(delete(Account).where(Account.active.is_(False)))  # line:compared
        session.commit()
        # What the finding says happened: account 2 survived the DELETE.
        assert session.get(Account, 2) is not None
    finding = one(uow.findings, "SQD353")
    assert finding.location.line == line_of("compared")
    assert finding.message == (
        f"`delete(Account)` at {HERE}:{line_of('compared')} ran without autoflush while the "
        "session held unflushed changes to 1 Account object(s) (Account.active) that its "
        "WHERE compares: it picked its rows by the values the database still had, not by "
        "those changes — call session.flush() before the statement"
    )
    assert finding.details["compared_attributes"] == ["active"]


def test_a_bulk_delete_whose_where_compares_no_changed_attribute_is_silent(
    bulk_engine: Engine,
) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(bulk_engine, autoflush=False) as session,
    ):
        account = session.get(Account, 2)
        assert account is not None
        account.name = "Ada"
        session.execute(delete(Account).where(Account.active.is_(False)))
        session.commit()
        assert session.get(Account, 2) is not None
    assert not of_code(uow.findings, "SQD353")


def test_a_bulk_update_whose_where_compares_an_unflushed_change_is_reported(
    bulk_engine: Engine,
) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(bulk_engine, autoflush=False) as session,
    ):
        account = session.get(Account, 3)
        assert account is not None
        account.email = "closed@example.com"
        statement = update(Account).where(Account.email.like("closed%")).values(active=False)
        session.execute(statement.execution_options(synchronize_session=False))  # line:where
        session.commit()
        assert account.active is True
    finding = one(uow.findings, "SQD353")
    assert finding.location.line == line_of("where")
    assert "(Account.email) that its WHERE compares" in finding.message


def test_execution_option_autoflush_false_is_reported(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        account = session.get(Account, 2)
        assert account is not None
        account.name = "Ada"
        statement = update(Account).values(name="Bob").execution_options(autoflush=False)
        session.execute(statement)  # line:option
        session.commit()
    assert one(uow.findings, "SQD353").location.line == line_of("option")


def test_autoflush_on_is_the_silent_twin(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        account = session.get(Account, 1)
        assert account is not None
        account.name = "Ada"
        session.add(Account(email="new@example.com", name="new"))
        session.execute(update(Account).values(active=False))
        session.commit()
        assert session.scalars(select(Account).where(Account.active.is_(True))).all() == []
    assert not of_code(uow.findings, "SQD353")


def test_explicit_flush_before_the_statement_is_silent(bulk_engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(bulk_engine, autoflush=False) as session,
    ):
        account = session.get(Account, 1)
        assert account is not None
        account.name = "Ada"
        session.flush()
        session.execute(update(Account).where(Account.id == 1).values(name="Bob"))
        session.commit()
    assert not of_code(uow.findings, "SQD353")


def test_change_to_an_attribute_the_update_does_not_set_is_silent(bulk_engine: Engine) -> None:
    """The flush writes only the changed column: both writes survive."""
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(bulk_engine, autoflush=False) as session,
    ):
        account = session.get(Account, 1)
        assert account is not None
        account.email = "ada@example.com"
        session.execute(update(Account).where(Account.id == 1).values(name="Bob"))
        session.commit()
        assert _name(session, 1) == "Bob"
        assert account.email == "ada@example.com"
    assert not of_code(uow.findings, "SQD353")


def test_changes_to_another_class_are_silent(bulk_engine: Engine) -> None:
    with (
        sqla_doctor.track(mode="collect") as uow,
        Session(bulk_engine, autoflush=False) as session,
    ):
        account = session.get(Account, 1)
        assert account is not None
        account.name = "Ada"
        session.add(Account(email="new@example.com", name="new"))
        session.execute(update(Label).values(text="x"))
        session.commit()
    assert not of_code(uow.findings, "SQD353")


ACCOUNTS = Account.__table__


def core_update_on_the_sessions_connection(
    engine: Engine, *, change: str, statement: Any, rows: Any = None, flush: bool = False
) -> tuple[list[Any], str | None]:
    """Account 1's ``change`` attribute changed in the ORM, then a Core statement run
    through session.connection(), which neither autoflushes nor expires anything."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        account = session.get(Account, 1)
        assert account is not None
        setattr(account, change, "Ada")
        if flush:
            session.flush()
        session.connection().execute(statement, rows)  # line:core-update
        session.commit()
        name = _name(session, 1)
    return of_code(uow.findings, "SQD353"), name


@pytest.mark.parametrize(
    ("statement", "rows"),
    [
        (update(ACCOUNTS).values(name="Bob"), None),
        (
            update(ACCOUNTS).where(ACCOUNTS.c.id == bindparam("account_id")),
            [{"account_id": 1, "name": "Bob"}],
        ),
    ],
    ids=["values", "executemany"],
)
def test_a_core_update_on_the_sessions_connection_is_overwritten_by_the_flush(
    bulk_engine: Engine, statement: Any, rows: Any
) -> None:
    findings, name = core_update_on_the_sessions_connection(
        bulk_engine, change="name", statement=statement, rows=rows
    )
    # What the finding says happened: the flush at commit() wrote "Ada" over "Bob".
    assert name == "Ada"
    [finding] = findings
    assert finding.location.line == line_of("core-update")
    assert finding.message == (
        f"`update(accounts)` at {HERE}:{line_of('core-update')} ran without autoflush while "
        "the session held unflushed changes to 1 Account object(s) (Account.name): a Core "
        "statement on the session's connection neither flushes nor expires anything: the "
        "next flush writes those changes over the statement's values — call session.flush() "
        "before the statement"
    )


@pytest.mark.parametrize(
    ("change", "statement", "flush"),
    [
        ("name", update(ACCOUNTS).values(name="Bob"), True),
        ("email", update(ACCOUNTS).values(name="Bob"), False),
        ("name", update(Label.__table__).values(text="x"), False),
    ],
    ids=["flushed-first", "another-column", "another-table"],
)
def test_a_core_update_over_nothing_it_loses_is_silent(
    bulk_engine: Engine, change: str, statement: Any, flush: bool
) -> None:
    findings, _ = core_update_on_the_sessions_connection(
        bulk_engine, change=change, statement=statement, flush=flush
    )
    assert findings == []


async def test_async_no_autoflush_update_is_reported(bulk_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(bulk_async_engine, autoflush=False) as session,
    ):
        account = await session.get(Account, 1)
        assert account is not None
        account.name = "Ada"
        await session.execute(update(Account).values(name="Bob"))  # line:async
        await session.commit()
    assert one(uow.findings, "SQD353").location.line == line_of("async")


async def test_async_flush_first_twin_is_silent(bulk_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(bulk_async_engine, autoflush=False) as session,
    ):
        account = await session.get(Account, 1)
        assert account is not None
        account.name = "Ada"
        await session.flush()
        await session.execute(update(Account).values(name="Bob"))
        await session.commit()
    assert not of_code(uow.findings, "SQD353")


def sql_update_on_the_sessions_connection(
    engine: Engine, sql: str, *, driver: bool, flush: bool = False
) -> tuple[list[Any], str | None]:
    """Account 1's name changed in the ORM, then an UPDATE written as SQL run through
    session.connection(): no autoflush, nothing expired."""
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        account = session.get(Account, 1)
        assert account is not None
        account.name = "Ada"
        if flush:
            session.flush()
        connection = session.connection()
        if driver:
            connection.exec_driver_sql(sql)  # line:sql-update
        else:
            connection.execute(text(sql))  # line:text-update
        session.commit()
        name = _name(session, 1)
    return of_code(uow.findings, "SQD353"), name


@pytest.mark.parametrize(
    ("sql", "driver", "line"),
    [
        ("UPDATE accounts SET name = 'Bob' WHERE id = 1", False, "text-update"),
        ('update "accounts" set active = 1, "name" = upper(name) || \'!\'', True, "sql-update"),
    ],
    ids=["text", "exec_driver_sql"],
)
def test_an_update_written_as_sql_on_the_sessions_connection_is_reported(
    bulk_engine: Engine, sql: str, driver: bool, line: str
) -> None:
    findings, name = sql_update_on_the_sessions_connection(bulk_engine, sql, driver=driver)
    assert name == "Ada"  # the flush at commit() wrote the ORM change over the statement's
    [finding] = findings
    assert finding.location.line == line_of(line)
    assert finding.message.startswith(
        f"`UPDATE accounts` at {HERE}:{line_of(line)} ran without autoflush while the session "
        "held unflushed changes to 1 Account object(s) (Account.name): SQL run on the "
        "session's connection neither flushes nor expires anything"
    )
    assert "'Bob'" not in repr(finding)


@pytest.mark.parametrize(
    ("sql", "flush"),
    [
        ("UPDATE accounts SET name = 'Bob' WHERE id = 1", True),
        ("UPDATE accounts SET email = 'x@example.com' WHERE name = 'Ada'", False),
        ("UPDATE accounts SET active = (name = 'Bob')", False),
        ("UPDATE labels SET text = 'name'", False),
        ("DELETE FROM labels WHERE text = 'name'", False),
        ("SELECT name FROM accounts WHERE id = 1", False),
    ],
    ids=[
        "flushed-first",
        "another-column",
        "name-in-an-expression",
        "another-table",
        "delete-another-table",
        "select",
    ],
)
def test_sql_over_nothing_it_loses_is_silent(bulk_engine: Engine, sql: str, flush: bool) -> None:
    findings, _ = sql_update_on_the_sessions_connection(bulk_engine, sql, driver=True, flush=flush)
    assert findings == []


async def test_async_sql_update_on_the_sessions_connection_is_reported(
    bulk_async_engine: AsyncEngine,
) -> None:
    async with sqla_doctor.track(mode="collect") as uow, AsyncSession(bulk_async_engine) as session:
        account = await session.get(Account, 1)
        assert account is not None
        account.name = "Ada"
        connection = await session.connection()
        await connection.execute(text("UPDATE accounts SET name = 'Bob'"))  # line:async-sql
        await session.commit()
    assert one(uow.findings, "SQD353").location.line == line_of("async-sql")
