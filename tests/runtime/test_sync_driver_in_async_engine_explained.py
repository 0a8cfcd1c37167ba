"""SQD453: create_async_engine() given a URL whose driver is not async, explained."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import create_engine
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import sqla_doctor

from .support import line_of, of_code, one, relative

SQLALCHEMY_2_1 = tuple(int(part) for part in sqlalchemy.__version__.split(".")[:2]) >= (2, 1)


def test_a_sync_sqlite_url_is_explained_with_the_async_scheme(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    tracker = sqla_doctor.track(mode="collect")
    with (
        pytest.raises(InvalidRequestError, match="requires an async driver") as raised,
        tracker,
    ):
        create_async_engine(url)  # line:create
    uow = tracker.last
    assert uow is not None
    finding = one(uow.findings, "SQD453")
    assert (finding.location.path, finding.location.line) == (
        relative(__file__),
        line_of("create"),
    )
    assert finding.message == (
        f"create_async_engine() at {relative(__file__)}:{line_of('create')} got a sqlite "
        "URL that selects the sync driver 'pysqlite' — name an async driver in the URL: "
        "sqlite+aiosqlite://"
    )
    assert str(tmp_path) not in repr(finding), "the URL is never shown"
    if sys.version_info >= (3, 11):
        assert raised.value.__notes__[0].startswith("sqla-doctor: SQD453")


def test_the_async_driver_twin_is_silent(tmp_path: Path) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'app.db'}")
    assert not of_code(uow.findings, "SQD453")
    assert engine.dialect.is_async


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def test_an_async_engine_around_a_sync_engine_names_async_engine(tmp_path: Path) -> None:
    sync_engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(InvalidRequestError, match="requires an async driver"), tracker:
        AsyncEngine(sync_engine)  # line:wrap
    uow = tracker.last
    assert uow is not None
    finding = one(uow.findings, "SQD453")
    assert finding.location.line == line_of("wrap")
    assert finding.message == (
        f"AsyncEngine() at {relative(__file__)}:{line_of('wrap')} got an Engine whose "
        "sqlite URL selects the sync driver 'pysqlite' — name an async driver in the URL: "
        "sqlite+aiosqlite://"
    )


@pytest.mark.skipif(_installed("MySQLdb"), reason="mysqlclient is installed")
def test_a_sync_default_driver_that_is_not_installed_is_explained() -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(ModuleNotFoundError, match="MySQLdb"), tracker:
        create_async_engine("mysql://app:s3cret@db/app")  # line:missing
    uow = tracker.last
    assert uow is not None
    finding = one(uow.findings, "SQD453")
    assert finding.location.line == line_of("missing")
    assert finding.message == (
        f"create_async_engine() at {relative(__file__)}:{line_of('missing')} got a mysql "
        "URL that selects the sync driver 'mysqldb' (not installed; an async engine could "
        "not use it anyway) — name an async driver in the URL: mysql+aiomysql:// or "
        "mysql+asyncmy://"
    )
    assert "s3cret" not in repr(finding), "the URL is never shown"


@pytest.mark.skipif(_installed("aiomysql"), reason="aiomysql is installed")
def test_a_missing_async_driver_is_not_explained() -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(ModuleNotFoundError, match="aiomysql"), tracker:
        create_async_engine("mysql+aiomysql://app@db/app")
    assert tracker.last is not None
    assert not of_code(tracker.last.findings, "SQD453")


@pytest.mark.skipif(_installed("MySQLdb"), reason="mysqlclient is installed")
def test_a_sync_engine_missing_its_driver_is_not_explained() -> None:
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(ModuleNotFoundError, match="MySQLdb"), tracker:
        create_engine("mysql://app@db/app")
    assert tracker.last is not None
    assert not of_code(tracker.last.findings, "SQD453")


@pytest.mark.skipif(SQLALCHEMY_2_1, reason="postgresql:// is psycopg (3) since 2.1")
def test_postgresql_without_a_driver_is_psycopg2_on_sqlalchemy_2_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg2", None)  # not installed, whether it is or not
    tracker = sqla_doctor.track(mode="collect")
    with pytest.raises(ModuleNotFoundError, match="psycopg2"), tracker:
        create_async_engine("postgresql://app:s3cret@db/app")  # line:pg
    uow = tracker.last
    assert uow is not None
    finding = one(uow.findings, "SQD453")
    assert finding.location.line == line_of("pg")
    assert "got a postgresql URL that selects the sync driver 'psycopg2' (not installed" in (
        finding.message
    )
    assert finding.message.endswith("postgresql+asyncpg:// or postgresql+psycopg://")
    assert "s3cret" not in repr(finding)


@pytest.mark.skipif(not SQLALCHEMY_2_1, reason="postgresql:// is psycopg2 before 2.1")
@pytest.mark.skipif(not _installed("psycopg"), reason="psycopg is not installed")
def test_postgresql_without_a_driver_is_async_psycopg_on_sqlalchemy_2_1() -> None:
    with sqla_doctor.track(mode="collect") as uow:
        engine = create_async_engine("postgresql://app@db/app")
    assert not of_code(uow.findings, "SQD453")
    assert (engine.dialect.driver, engine.dialect.is_async) == ("psycopg", True)
