"""SQD453: create_async_engine() given a URL whose driver is not async, explained."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import create_async_engine

import sqla_doctor

from .support import line_of, of_code, one, relative


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
