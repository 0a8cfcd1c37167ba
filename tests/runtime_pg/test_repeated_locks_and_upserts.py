"""SQD252 on PostgreSQL: the one statement that replaces a loop keeps what each run did,
the row lock of a SELECT ... FOR UPDATE and the ON CONFLICT clause of an upsert."""

from __future__ import annotations

from sqlalchemy import Engine, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

import sqla_doctor

from .models import Account

IDS = list(range(1, 6))


def test_a_locking_get_per_id_is_told_to_keep_the_lock(pg_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(pg_engine) as session:
        for account_id in IDS:
            account = session.get(Account, account_id, with_for_update=True)
            assert account is not None
            account.balance -= 1
        session.commit()
    (finding,) = uow.findings
    assert finding.code == "SQD252"
    assert finding.message.endswith(
        "; it locks the rows it reads (FOR UPDATE): add .with_for_update() to that one "
        "query so that it still does"
    )
    with sqla_doctor.track(mode="collect") as fixed, Session(pg_engine) as session:
        query = select(Account).where(Account.id.in_(IDS)).with_for_update()
        by_id = {account.id: account for account in session.scalars(query)}
        for account_id in IDS:
            by_id[account_id].balance -= 1
        session.commit()
    assert not fixed.findings


def test_a_skip_locked_select_per_id_is_told_its_arguments(pg_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(pg_engine) as session:
        for account_id in IDS:
            query = select(Account).where(Account.id == account_id)
            session.scalars(query.with_for_update(read=True, skip_locked=True)).all()
    (finding,) = uow.findings
    assert finding.message.endswith(
        "; it locks the rows it reads (FOR SHARE SKIP LOCKED): add "
        ".with_for_update(read=True, skip_locked=True) to that one query so that it still does"
    )


def test_a_get_per_id_without_a_lock_says_nothing_of_locks(pg_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(pg_engine) as session:
        for account_id in IDS:
            account = session.get(Account, account_id)
            assert account is not None
            account.balance += 1
        session.commit()
    (finding,) = uow.findings
    assert "locks the rows" not in finding.message


def test_an_upsert_per_row_is_told_to_run_the_upsert_as_one_executemany(
    pg_engine: Engine,
) -> None:
    rows = [{"id": i, "name": f"renamed{i}", "balance": 7} for i in (*IDS, 6)]
    with sqla_doctor.track(mode="collect") as uow, Session(pg_engine) as session:
        for row in rows:
            stmt = pg_insert(Account).values(**row)
            stmt = stmt.on_conflict_do_update(
                index_elements=["id"], set_={"name": stmt.excluded.name}
            )
            session.execute(stmt)
        session.commit()
    (finding,) = uow.findings
    assert finding.code == "SQD252"
    assert finding.fix_hint is not None
    assert finding.fix_hint.startswith(
        "build the upsert once, its new values taken from `stmt.excluded` (MySQL: "
        "`stmt.inserted`), and run it for every row in one executemany: "
        "`session.execute(stmt, rows)`"
    )
    with sqla_doctor.track(mode="collect") as fixed, Session(pg_engine) as session:
        stmt = pg_insert(Account)
        stmt = stmt.on_conflict_do_update(index_elements=["id"], set_={"name": stmt.excluded.name})
        session.execute(stmt, [{**row, "name": "again"} for row in rows])
        session.commit()
        assert set(session.scalars(select(Account.name))) == {"again"}
    assert not fixed.findings


def test_a_plain_insert_per_row_keeps_the_insert_advice(pg_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(pg_engine) as session:
        for i in range(10, 16):
            session.execute(insert(Account).values(id=i, name="n", balance=0))
        session.commit()
    (finding,) = uow.findings
    assert finding.fix_hint is not None
    assert finding.fix_hint.startswith("collect the rows and insert them in one executemany")
