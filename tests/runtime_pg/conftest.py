"""The runtime doctor against a real PostgreSQL server: small pools, many threads and tasks.

Every test here uses the throwaway server of ``tests/pgserver.py`` (so it is marked
``postgres`` and fails rather than skips under CI), with a fresh database each.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.runtime.unit_of_work import process

from .models import Account, Base

# The small pool every test drains: two connections, no overflow, a short wait.
POOL = {"pool_size": 2, "max_overflow": 0, "pool_timeout": 0.5}
# How long the local "external service" takes to answer.
HTTP_DELAY = 0.3


@pytest.fixture(autouse=True)
def _doctor_is_uninstalled_after_each_test() -> Iterator[None]:
    yield
    gc.collect()
    sqla_doctor.uninstall()
    process.reset_collected()
    assert process.internal_errors == 0, "a handler failed; see the log"


@pytest.fixture
def database_url(pg_database: object) -> str:
    url: str = pg_database.url  # type: ignore[attr-defined]
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Account(name=f"account{i}", balance=100) for i in range(1, 6))
        session.commit()
    engine.dispose()
    return url


def _pool_of(request: pytest.FixtureRequest) -> dict[str, float]:
    """``POOL``, or the test module's own ``ENGINE_POOL`` when it sets one."""
    pool: dict[str, float] = getattr(request.module, "ENGINE_POOL", POOL)
    return pool


@pytest.fixture
def pg_engine(request: pytest.FixtureRequest, database_url: str) -> Iterator[Engine]:
    engine = create_engine(database_url, **_pool_of(request))  # type: ignore[arg-type]
    yield engine
    engine.dispose()


@pytest.fixture
async def pg_async_engine(
    request: pytest.FixtureRequest, pg_database: object, database_url: str
) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(pg_database.async_url, **_pool_of(request))  # type: ignore[attr-defined, arg-type]
    yield engine
    await engine.dispose()


class _SlowService(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        threading.Event().wait(HTTP_DELAY)
        body = b'{"avatar": "cat.png"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def slow_service() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering every GET after HTTP_DELAY seconds."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowService)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/profile"
    server.shutdown()
    server.server_close()
