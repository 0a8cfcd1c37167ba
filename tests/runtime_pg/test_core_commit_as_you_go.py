"""SQD152 for Core connections on PostgreSQL, whose DDL is transactional: what a
``with engine.connect()`` block that never commits really loses, checked on the server."""

from __future__ import annotations

from sqlalchemy import Column, Engine, Integer, MetaData, Table, create_engine, inspect, text
from sqlalchemy.orm import Session

import sqla_doctor

from .models import Account
from .support import line_of, one

AUDIT = MetaData()
Table("audit_log", AUDIT, Column("id", Integer, primary_key=True))


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def balance_total(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT sum(balance) FROM accounts")).scalar_one())


def test_create_all_on_a_connection_never_committed_is_reported(pg_engine: Engine) -> None:
    """SQLAlchemy 2.0's best-known surprise: ``create_all(conn)`` "does nothing"."""
    with sqla_doctor.track(mode="collect") as uow, pg_engine.connect() as conn:  # line:ddl
        AUDIT.create_all(conn)
    assert "audit_log" not in tables(pg_engine), "the pitfall: the CREATE TABLE was rolled back"
    finding = one(uow.findings, "SQD152")
    assert finding.location.line == line_of("ddl")
    assert "its 1 write statement(s) were rolled back, 1 of them DDL" in finding.message
    assert "`metadata.create_all(engine)` commits itself" in finding.message


def test_create_all_committed_is_the_silent_twin(pg_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        with pg_engine.connect() as conn:
            AUDIT.create_all(conn)
            conn.commit()
        AUDIT.drop_all(pg_engine)
        AUDIT.create_all(pg_engine)
    assert "audit_log" in tables(pg_engine)
    assert not uow.findings


def test_a_write_behind_a_with_clause_is_reported(pg_engine: Engine) -> None:
    statement = text(
        "WITH raised AS (UPDATE accounts SET balance = balance + 1 RETURNING id) "
        "SELECT count(*) FROM raised"
    )
    with sqla_doctor.track(mode="collect") as uow, pg_engine.connect() as conn:  # line:cte
        assert conn.execute(statement).scalar_one() == 5
    assert balance_total(pg_engine) == 500
    assert one(uow.findings, "SQD152").location.line == line_of("cte")


def test_a_temporary_staging_table_is_silent(pg_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, pg_engine.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE staging (LIKE accounts) ON COMMIT DROP"))
        conn.execute(text("INSERT INTO pg_temp.staging SELECT * FROM accounts"))
        conn.execute(text("UPDATE staging SET balance = 0"))
        total = conn.execute(
            text("SELECT sum(a.balance - s.balance) FROM accounts a JOIN staging s USING (id)")
        ).scalar_one()
    assert total == 500
    assert not uow.findings


def test_a_session_flushing_on_an_autocommit_engine_loses_nothing(pg_engine: Engine) -> None:
    """create_engine(url, isolation_level="AUTOCOMMIT"): psycopg commits each statement, so
    the flushed INSERT is on the server though the session closes without commit()."""
    autocommit = create_engine(pg_engine.url, isolation_level="AUTOCOMMIT")
    try:
        with sqla_doctor.track(mode="collect") as uow, Session(autocommit) as session:
            session.add(Account(name="kept", balance=7))
            session.flush()
        assert not uow.findings
        with pg_engine.connect() as conn:
            kept = conn.execute(text("SELECT balance FROM accounts WHERE name = 'kept'"))
            assert kept.scalar_one() == 7
    finally:
        autocommit.dispose()


def test_reflecting_the_catalog_table_by_table_is_no_repeated_query(pg_engine: Engine) -> None:
    """Reflection reads pg_catalog once per table (SQD252 would call it a loop)."""
    extra = MetaData()
    for number in range(6):
        Table(f"reflected_{number}", extra, Column("id", Integer, primary_key=True))
    extra.create_all(pg_engine)
    with sqla_doctor.track(mode="collect") as uow:
        inspector = inspect(pg_engine)
        columns = [inspector.get_columns(name) for name in inspector.get_table_names()]
        MetaData().reflect(pg_engine)
    assert len(columns) >= 6
    assert not [f for f in uow.findings if f.code == "SQD252"]
