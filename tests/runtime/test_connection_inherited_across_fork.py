"""SQD166: a forked child checks out a pooled connection its parent opened."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

import sqla_doctor
from sqla_doctor.config import RuntimeConfig

from .support import line_of, relative

CONFIG = RuntimeConfig(mode="collect")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")


def in_child(work: Callable[[], None]) -> list[dict[str, Any]]:
    """Run ``work`` in a forked child under track(); the findings it reported, as dicts."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            tracker = sqla_doctor.track(config=CONFIG)
            with tracker:
                work()
            assert tracker.last is not None
            found = [
                {
                    "code": f.code,
                    "line": f.location.line,
                    "message": f.message,
                    "related": [(r.location.line, r.message) for r in f.related],
                    "details": f.details,
                }
                for f in tracker.last.findings
            ]
            with os.fdopen(write_end, "w") as out:
                json.dump(found, out)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as result:
        data = result.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the child failed"
    found: list[dict[str, Any]] = json.loads(data)
    return found


def codes(found: list[dict[str, Any]]) -> list[str]:
    return [f["code"] for f in found]


def used_by_the_parent(engine: Engine) -> None:
    with sqla_doctor.track(config=CONFIG), engine.connect() as connection:  # line:parent
        connection.execute(text("SELECT 1"))


def query_twice(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(text("SELECT 1"))  # line:child
    with Session(engine) as session:
        session.execute(text("SELECT 2"))


def test_a_child_querying_through_its_parents_pooled_connection_is_reported(
    tmp_path: Path,
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    used_by_the_parent(engine)

    found = [f for f in in_child(lambda: query_twice(engine)) if f["code"] == "SQD166"]

    assert len(found) == 1, found  # once for the connection, not once per checkout
    finding = found[0]
    assert finding["line"] == line_of("child")
    assert finding["message"] == (
        "Pooled connection inherited across fork: this process checked out, at "
        f"{relative(__file__)}:{line_of('child')}, a connection its parent process opened — "
        "SQLite's file locks belong to the process that opened the database, so a "
        "connection carried across fork() lets both processes think they hold the lock, "
        "and their writes can corrupt the file — call engine.dispose(close=False) first "
        "thing in each child (multiprocessing's Pool(initializer=...), gunicorn's "
        "post_fork, Celery's worker_process_init) so it opens connections of its own, or "
        "create the engine after the fork"
    )
    assert finding["related"] == [
        [line_of("parent"), "the parent process opened the connection here"]
    ]
    assert finding["details"]["opened_by_pid"] == os.getpid()
    engine.dispose()


def test_a_child_that_disposes_the_inherited_pool_first_is_silent(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    used_by_the_parent(engine)

    def work() -> None:
        engine.dispose(close=False)
        query_twice(engine)

    assert "SQD166" not in codes(in_child(work))
    engine.dispose()


def test_a_child_closing_its_copy_of_a_sqlite_connection_is_silent(tmp_path: Path) -> None:
    """Closing releases only the child's own file locks: engine.dispose() is no harm here."""
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    used_by_the_parent(engine)

    def work() -> None:
        engine.dispose()
        query_twice(engine)

    assert "SQD166" not in codes(in_child(work))
    engine.dispose()


def test_a_child_with_an_engine_of_its_own_is_silent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    used_by_the_parent(engine)

    def work() -> None:
        own = create_engine(url)
        query_twice(own)
        own.dispose()

    assert "SQD166" not in codes(in_child(work))
    engine.dispose()


def test_the_parent_reusing_its_connection_after_forking_is_silent(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'app.db'}")
    used_by_the_parent(engine)
    assert "SQD166" not in codes(in_child(lambda: None))

    tracker = sqla_doctor.track(config=CONFIG)
    with tracker:
        query_twice(engine)
    assert tracker.last is not None
    assert "SQD166" not in [f.code for f in tracker.last.findings]
    engine.dispose()


def test_an_in_memory_database_copied_into_the_child_is_silent() -> None:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    used_by_the_parent(engine)

    assert "SQD166" not in codes(in_child(lambda: query_twice(engine)))
    engine.dispose()
