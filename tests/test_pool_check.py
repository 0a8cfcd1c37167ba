"""`sqla-doctor pool URL` against a real PostgreSQL server."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.pool import QueuePool

from helpers import run_cli

pytestmark = pytest.mark.postgres


def test_pools_that_fit(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "pool", pg_url, "--workers", "4")
    assert result.code == 0, result.err
    assert "max_connections                    100" in result.out
    assert "superuser_reserved_connections      -3" in result.out
    assert "Pools: 4 workers × (pool_size 5 + max_overflow 10) = 60 connections" in result.out
    assert "OK: the pools fit" in result.out


def test_pools_that_do_not_fit_explain_the_numbers(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(capsys, "pool", pg_url, "--workers", "8", "--pool-size", "10")
    assert result.code == 1
    assert "the pools need 160 connections but only" in result.out
    assert "QueuePool limit of size 10 overflow 10 reached" in result.out
    assert "PgBouncer" in result.out


def test_connections_in_use_are_counted(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Connections other clients hold now reduce what is available."""
    engine = create_engine(pg_url, poolclass=QueuePool, pool_size=7)
    held: list[Any] = [engine.connect() for _ in range(7)]
    try:
        result = run_cli(capsys, "pool", pg_url)
    finally:
        for connection in held:
            connection.close()
        engine.dispose()
    line = next(row for row in result.out.splitlines() if "in use now by other clients" in row)
    assert int(line.split()[-1]) <= -7


def test_async_urls_are_accepted_and_passwords_hidden(
    pg_async_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = pg_async_url.replace("postgres@", "postgres:s3cret@")
    result = run_cli(capsys, "pool", url)
    assert result.code == 0, result.err
    assert "s3cret" not in result.out
    assert "postgresql+asyncpg://postgres:***@" in result.out


def test_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "pool", "postgresql+psycopg://nobody:pw@127.0.0.1:1/db")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "cannot query postgresql+psycopg://nobody:***@127.0.0.1:1/db" in result.err


def test_non_postgres_url_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "pool", "sqlite:///app.db")
    assert result.code == 2
    assert "only PostgreSQL servers are supported" in result.err
