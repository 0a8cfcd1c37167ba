"""SQD452: a query on a pooled connection the database closed, explained; pre-ping avoids it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.runtime.unit_of_work import process

from .support import line_of, of_code, one, relative

CONFIG = RuntimeConfig(mode="collect")


def close_pooled_connection_behind_the_pools_back(engine: Engine) -> None:
    """What a server restart or an idle timeout does to a connection waiting in the pool."""
    pooled = engine.raw_connection()
    dbapi_connection = pooled.dbapi_connection
    pooled.close()
    assert dbapi_connection is not None
    dbapi_connection.close()


def test_query_on_a_closed_pooled_connection_is_explained(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'stale.db'}")
    close_pooled_connection_behind_the_pools_back(engine)
    tracker = sqla_doctor.track(config=CONFIG)
    with pytest.raises(DBAPIError) as raised, tracker, engine.connect() as connection:
        connection.execute(text("SELECT 1"))  # line:stale
    assert raised.value.connection_invalidated
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD452")
    assert finding.location.line == line_of("stale")
    assert finding.message.startswith(
        f"ProgrammingError at {relative(__file__)}:{line_of('stale')}: the database had closed "
        "this pooled connection before the statement ran"
    )
    assert finding.details["driver_error"] == "sqlite3.ProgrammingError"
    # A local engine: no line of the program creates it at module level.
    assert finding.related == ()
    if sys.version_info >= (3, 11):
        assert any("SQD452" in note for note in raised.value.__notes__)
    engine.dispose()


def test_a_session_on_a_closed_pooled_connection_costs_no_internal_error(tmp_path: Path) -> None:
    """The transaction's begin reads the DBAPI connection's autocommit flag, which a
    closed sqlite3 connection answers by raising: the doctor must not fail there."""
    engine = create_engine(f"sqlite:///{tmp_path / 'stale.db'}")
    close_pooled_connection_behind_the_pools_back(engine)
    errors_before = process.internal_errors
    tracker = sqla_doctor.track(config=CONFIG)
    with pytest.raises(DBAPIError), tracker, Session(engine) as session:
        session.execute(text("SELECT 1"))
    assert tracker.last is not None
    one(tracker.last.findings, "SQD452")
    assert process.internal_errors == errors_before
    engine.dispose()


def test_pool_pre_ping_is_the_silent_twin(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'stale.db'}", pool_pre_ping=True)
    close_pooled_connection_behind_the_pools_back(engine)
    with sqla_doctor.track(config=CONFIG) as uow, engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
    assert not of_code(uow.findings, "SQD452")
    engine.dispose()


# A module-level engine, as most programs make theirs: where pool_pre_ping=True goes.
module_engine = create_engine("sqlite://")  # line:create


def test_a_module_level_engine_is_pointed_at_where_pre_ping_goes() -> None:
    close_pooled_connection_behind_the_pools_back(module_engine)
    tracker = sqla_doctor.track(config=CONFIG)
    with pytest.raises(DBAPIError), tracker, module_engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    assert tracker.last is not None
    finding = one(tracker.last.findings, "SQD452")
    [related] = finding.related
    assert related.location.path == relative(__file__)
    assert related.location.line == line_of("create")
    assert related.message == "the engine is created here: add pool_pre_ping=True"
    module_engine.dispose()
