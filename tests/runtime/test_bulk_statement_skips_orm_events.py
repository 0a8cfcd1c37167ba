"""SQD352: bulk ORM UPDATE/DELETE on a class with listeners, validators or cascades."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, func, insert, select, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Mapper, Session, selectinload

import sqla_doctor

from .bulk_models import Account, BulkBase, Entry, Label, seed_accounts
from .support import line_of, of_code, one, relative

HERE = relative(__file__)
MODELS = relative(__file__.replace("test_bulk_statement_skips_orm_events", "bulk_models"))
FIX = "load the objects and change them, or do the same work in the statement"
DELETE_FIX = (
    "load the objects with .options(selectinload(Account.entries)) and `session.delete()` "
    "each one, or do the same work in the statement"
)


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


def _listener_line(name: str) -> int:
    return line_of(name, __file__.replace("test_bulk_statement_skips_orm_events", "bulk_models"))


def test_bulk_update_of_a_class_with_a_listener_and_a_validator_is_reported(
    bulk_engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        statement = update(Account).where(Account.id == 1).values(email="NEW@EXAMPLE.COM")
        session.execute(statement)  # line:update
        session.commit()
    finding = one(uow.findings, "SQD352")
    assert finding.location.path == HERE
    assert finding.location.line == line_of("update")
    touch = f"{MODELS}:{_listener_line('touch')}"
    validator = f"{MODELS}:{_listener_line('validator')}"
    assert finding.message == (
        f"`update(Account)` at {HERE}:{line_of('update')} ran as one UPDATE statement and "
        f"skipped the `before_update` listener `touch` ({touch}) and the validator "
        f"`Account.normalize_email` (email) ({validator}) for these rows — {FIX}"
    )
    assert finding.details["subject"] == "Account"


def test_validator_of_a_column_the_update_does_not_set_is_not_named(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.execute(update(Account).values(name="renamed"))
        session.commit()
    message = one(uow.findings, "SQD352").message
    assert "`touch`" in message
    assert "normalize_email" not in message


def test_bulk_delete_names_delete_listeners_and_the_orm_cascade(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.execute(delete(Entry).where(Entry.account_id == 4))
        session.execute(delete(Account).where(Account.id == 4))  # line:delete
        session.commit()
    finding = one(uow.findings, "SQD352")
    assert finding.location.line == line_of("delete")
    assert "ran as one DELETE statement and skipped the `after_delete` listener `audit_delete`" in (
        finding.message
    )
    assert "the ORM delete cascade of `Account.entries`" in finding.message
    assert "touch" not in finding.message
    # A DELETE's objects are not changed but deleted, one by one.
    assert finding.message.endswith(f"for these rows — {DELETE_FIX}")
    assert "change them" not in finding.message
    assert finding.fix_hint is not None
    assert finding.fix_hint.startswith(
        "load the objects with .options(selectinload(Account.entries)) and `session.delete()` "
        "each one (the ORM then runs listeners and cascades)"
    )


def delete_accounts_one_by_one(engine: Engine, *options: Any) -> sqla_doctor.UnitOfWork:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        statement = select(Account).options(*options)
        for account in session.scalars(statement).all():
            session.delete(account)  # line:cascade
        session.commit()
        assert session.scalar(select(func.count(Entry.id))) == 0
    return uow


def test_following_the_delete_fix_runs_the_cascade_without_a_query_per_object(
    bulk_engine: Engine,
) -> None:
    """What the fix says, to the letter: the cascade finds each account's entries loaded
    already, so the loop is neither a bulk statement nor an N+1."""
    uow = delete_accounts_one_by_one(bulk_engine, selectinload(Account.entries))
    assert not uow.findings
    # The accounts, their entries, one DELETE per table, the count.
    assert uow.query_count == 5


def test_deleting_one_by_one_without_the_option_is_an_n_plus_one(bulk_engine: Engine) -> None:
    """Why the fix names the option: without it the cascade lazy-loads per account."""
    uow = delete_accounts_one_by_one(bulk_engine)
    assert one(uow.findings, "SQD251").location.line == line_of("cascade")
    assert not of_code(uow.findings, "SQD352")


def test_delete_fix_names_no_option_for_a_class_without_cascades(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.execute(delete(Entry).where(Entry.account_id == 4))  # line:no-cascade
        session.commit()
    assert not of_code(uow.findings, "SQD352")  # no listener, no cascade on Entry
    listener = event.listens_for(Entry, "before_delete")(lambda *args: None)
    try:
        with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
            session.execute(delete(Entry).where(Entry.account_id == 3))  # line:entry-delete
            session.commit()
    finally:
        event.remove(Entry, "before_delete", listener)
    message = one(uow.findings, "SQD352").message
    assert message.endswith(
        "load the objects and `session.delete()` each one, or do the same work in the statement"
    )


def test_legacy_query_delete_is_told_to_delete_each_object(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.query(Entry).filter(Entry.account_id == 4).delete()
        session.query(Account).filter(Account.id == 4).delete()  # line:query-delete
        session.commit()
    finding = one(uow.findings, "SQD352")
    assert finding.location.line == line_of("query-delete")
    assert "ran as one DELETE statement and skipped the `after_delete` listener" in (
        finding.message
    )
    assert finding.message.endswith(f"— {DELETE_FIX}")


def test_synchronize_session_fetch_is_still_a_bulk_statement(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        statement = update(Account).values(active=False)
        session.execute(statement.execution_options(synchronize_session="fetch"))  # line:fetch
        session.commit()
    assert one(uow.findings, "SQD352").location.line == line_of("fetch")


def test_an_update_sqlalchemy_refuses_before_running_it_is_not_reported(
    bulk_engine: Engine,
) -> None:
    """synchronize_session="evaluate" cannot evaluate lower() in Python: nothing ran."""
    statement = (
        update(Account)
        .where(func.lower(Account.name) == "a")
        .values(active=False)
        .execution_options(synchronize_session="evaluate")
    )
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        with pytest.raises(InvalidRequestError):
            session.execute(statement)
        session.rollback()
    assert not of_code(uow.findings, "SQD352")


def test_an_evaluated_update_that_runs_is_reported(bulk_engine: Engine) -> None:
    statement = (
        update(Account)
        .where(Account.name == "a")
        .values(active=False)
        .execution_options(synchronize_session="evaluate")
    )
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.execute(statement)  # line:evaluated
        session.commit()
    assert one(uow.findings, "SQD352").location.line == line_of("evaluated")


def test_bulk_update_by_primary_key_and_legacy_query_update_are_reported(
    bulk_engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.execute(update(Account), [{"id": 1, "email": "X@Y.Z"}])  # line:by-pk
        session.query(Account).filter(Account.id == 2).update({"name": "b"})  # line:legacy
        session.commit()
    findings = of_code(uow.findings, "SQD352")
    assert sorted(f.location.line for f in findings) == [line_of("by-pk"), line_of("legacy")]
    by_pk = next(f for f in findings if f.location.line == line_of("by-pk"))
    assert "normalize_email` (email)" in by_pk.message


def test_listener_on_every_mapper_is_named(bulk_engine: Engine) -> None:
    def audit_everything(mapper: Mapper[object], connection: object, target: object) -> None:
        pass

    event.listen(Mapper, "before_update", audit_everything)
    try:
        with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
            session.execute(update(Label).values(text="x"))  # line:every
            session.commit()
    finally:
        event.remove(Mapper, "before_update", audit_everything)
    finding = one(uow.findings, "SQD352")
    assert "listener `test_listener_on_every_mapper_is_named.<locals>.audit_everything`" in (
        finding.message
    )


def test_per_object_changes_are_the_silent_twin(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        account = session.get(Account, 1)
        assert account is not None
        account.email = "NEW@EXAMPLE.COM"
        session.delete(session.get(Account, 2))
        session.commit()
        account = session.get(Account, 1)
        assert account is not None
        assert account.email == "new@example.com"
    assert not of_code(uow.findings, "SQD352")


def test_class_without_listeners_is_silent(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.execute(update(Label).values(text="x"))
        session.execute(delete(Label).where(Label.id == 1))
        session.commit()
    assert not of_code(uow.findings, "SQD352")


def test_core_statements_on_the_table_are_not_reported(bulk_engine: Engine) -> None:
    table = Account.__table__
    with sqla_doctor.track(mode="collect") as uow:
        with bulk_engine.begin() as connection:
            connection.execute(update(Account).values(name="core"))
            connection.execute(update(table).values(name="core"))
        with Session(bulk_engine) as session:
            session.execute(update(table).values(name="table"))
            session.commit()
    assert not of_code(uow.findings, "SQD352")


def test_select_is_not_a_bulk_statement(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.scalars(select(Account)).all()
    assert not of_code(uow.findings, "SQD352")


async def test_async_bulk_update_is_reported(bulk_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(bulk_async_engine) as session,
    ):
        await session.execute(update(Account).values(email="A@B.C"))  # line:async
        await session.commit()
    finding = one(uow.findings, "SQD352")
    assert finding.location.line == line_of("async")
    assert "`touch`" in finding.message
    assert "normalize_email" in finding.message


async def test_async_per_object_twin_is_silent(bulk_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(bulk_async_engine) as session,
    ):
        account = await session.get(Account, 1)
        assert account is not None
        account.email = "A@B.C"
        await session.commit()
    assert not of_code(uow.findings, "SQD352")


def test_legacy_bulk_save_objects_skipping_a_listener_is_reported(bulk_engine: Engine) -> None:
    """bulk_save_objects() writes with no flush and no ORM execution: before_update is skipped."""
    with Session(bulk_engine) as session:
        accounts = session.scalars(select(Account)).all()
    for account in accounts:
        account.name = account.name.upper()
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.bulk_save_objects(accounts)  # line:bulk-save
        session.commit()
    finding = one(uow.findings, "SQD352")
    assert finding.location.line == line_of("bulk-save")
    assert finding.message.startswith(
        f"`session.bulk_save_objects()` at {HERE}:{line_of('bulk-save')} ran as one UPDATE "
        "statement and skipped the `before_update` listener `touch`"
    )
    assert finding.details["method"] == "bulk_save_objects"
    assert "validator" not in finding.message, "objects ran their validators when set"


def test_legacy_bulk_mappings_are_reported_per_statement(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.bulk_update_mappings(Account, [{"id": 1, "name": "x"}])  # line:bulk-update
        session.bulk_insert_mappings(  # line:bulk-insert
            Account, [{"email": "NEW@EXAMPLE.COM", "name": "new"}]
        )
        session.commit()
    findings = {f.location.line: f for f in of_code(uow.findings, "SQD352")}
    assert set(findings) == {line_of("bulk-update"), line_of("bulk-insert")}
    inserted = findings[line_of("bulk-insert")]
    assert "the validator `Account.normalize_email` (email)" in inserted.message


def test_legacy_bulk_methods_on_a_class_without_listeners_and_core_writes_are_silent(
    bulk_engine: Engine,
) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.bulk_insert_mappings(Label, [{"text": "bulk"}])
        session.commit()
        with bulk_engine.begin() as conn:
            conn.execute(update(Account.__table__).values(name="core by choice"))
    assert not of_code(uow.findings, "SQD352")


# -- the ORM bulk INSERT: 2.0's successor of bulk_insert_mappings() skips them too --------


def test_orm_bulk_insert_skipping_a_validator_is_reported(bulk_engine: Engine) -> None:
    rows = [{"email": "NEW@EXAMPLE.COM", "name": "new"}]
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.execute(insert(Account), rows)  # line:orm-insert
        session.commit()
        stored = session.scalar(select(Account.email).where(Account.name == "new"))
    assert stored == "NEW@EXAMPLE.COM", "the pitfall: the validator never ran"
    finding = one(uow.findings, "SQD352")
    assert finding.location.line == line_of("orm-insert")
    assert finding.message == (
        f"`insert(Account)` at {HERE}:{line_of('orm-insert')} ran as one INSERT statement "
        "and skipped the validator `Account.normalize_email` (email) "
        f"({MODELS}:{_listener_line('validator')}) for these rows — create the objects and "
        "`session.add_all()` them, or do the same work in the statement"
    )


def test_adding_the_objects_is_the_orm_bulk_inserts_silent_twin(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.add_all([Account(email="NEW@EXAMPLE.COM", name="new")])
        session.commit()
        stored = session.scalar(select(Account.email).where(Account.name == "new"))
    assert stored == "new@example.com"
    assert not of_code(uow.findings, "SQD352")


def test_orm_bulk_insert_of_a_class_without_listeners_is_silent(bulk_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(bulk_engine) as session:
        session.execute(insert(Label), [{"text": "a"}, {"text": "b"}])
        session.execute(insert(Account.__table__), [{"email": "T@X", "name": "table"}])
        session.commit()
    assert not of_code(uow.findings, "SQD352")


async def test_async_orm_bulk_insert_is_reported(bulk_async_engine: AsyncEngine) -> None:
    async with (
        sqla_doctor.track(mode="collect") as uow,
        AsyncSession(bulk_async_engine) as session,
    ):
        await session.execute(insert(Account), [{"email": "A@B.C", "name": "x"}])  # line:ainsert
        await session.commit()
    finding = one(uow.findings, "SQD352")
    assert finding.location.line == line_of("ainsert")
    assert "normalize_email" in finding.message
