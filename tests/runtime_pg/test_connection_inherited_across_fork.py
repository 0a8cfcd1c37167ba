"""SQD166 on PostgreSQL: `multiprocessing` workers forked with the parent's pooled
connection, under `sqla-doctor run`; the `dispose(close=False)` initializer is silent.

One worker, so that the parent and the child never talk over the shared socket at the
same moment (two would, and could hang): the program works, and is still wrong.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sqla_doctor.runtime import runner

PROGRAM = """
import multiprocessing

from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from models import Account

engine = create_engine({url!r})
with engine.connect() as connection:
    connection.execute(text("SELECT 1"))


def init():
    {init}


def balance(account_id):
    with Session(engine) as session:
        return session.scalar(select(Account.balance).where(Account.id == account_id))


if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(1, initializer=init) as pool:
        print(sum(pool.map(balance, [1, 2, 3])))
"""


def run(tmp_path: Path, database_url: str, init: str) -> tuple[int, list[dict[str, object]]]:
    (tmp_path / "models.py").write_text((Path(__file__).parent / "models.py").read_text())
    (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM).format(url=database_url, init=init))
    out = tmp_path / "report.json"
    code = runner.main(["prog.py"], fail=True, fmt="json", output=str(out))
    findings: list[dict[str, object]] = json.loads(out.read_text())["findings"]
    return code, findings


def line(tmp_path: Path, text: str) -> int:
    lines = (tmp_path / "prog.py").read_text().splitlines()
    return next(number for number, source in enumerate(lines, start=1) if text in source)


def test_workers_querying_through_the_parents_connection_are_reported(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, findings = run(tmp_path, database_url, init="pass")

    assert capfd.readouterr().out.strip() == "300"  # it works, by luck of timing
    assert code == 1
    [finding] = [f for f in findings if f["code"] == "SQD166"]
    query = line(tmp_path, "session.scalar(")
    assert (finding["location"]["path"], finding["location"]["line"]) == ("prog.py", query)  # type: ignore[index]
    assert str(finding["message"]).startswith(
        f"Pooled connection inherited across fork: this process checked out, at prog.py:{query}, "
        "a connection its parent process opened — both processes now hold the same "
        "connection, one socket and one server session"
    )
    assert [(r["location"]["line"], r["message"]) for r in finding["related"]] == [  # type: ignore[attr-defined]
        (line(tmp_path, "engine.connect()"), "the parent process opened the connection here"),
        (
            line(tmp_path, "engine = create_engine("),
            "the engine is created here, before the fork: each process needs its own pool",
        ),
    ]
    assert finding["fix_hint"] == "engine.dispose(close=False) at the start of each child"


def test_workers_that_dispose_the_inherited_pool_are_silent(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, findings = run(tmp_path, database_url, init="engine.dispose(close=False)")

    assert capfd.readouterr().out.strip() == "300"
    assert [f["code"] for f in findings] == []
    assert code == 0


def test_workers_that_dispose_with_close_end_the_parents_sessions_and_are_reported(
    tmp_path: Path,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    code, findings = run(tmp_path, database_url, init="engine.dispose()")

    assert capfd.readouterr().out.strip() == "300"
    assert code == 1
    [finding] = [f for f in findings if f["code"] == "SQD166"]
    dispose = line(tmp_path, "engine.dispose()")
    assert (finding["location"]["path"], finding["location"]["line"]) == ("prog.py", dispose)  # type: ignore[index]
    assert finding["message"] == (
        f"Pooled connection inherited across fork: this process closed, at prog.py:{dispose}, "
        "a pooled connection its parent process opened — closing it ends the parent's "
        "server session too (the driver says goodbye to the server on the socket both "
        "processes share), so the parent's next statement on it fails with \"server closed "
        'the connection unexpectedly" — pass close=False: engine.dispose(close=False) drops '
        "the inherited pool without touching the parent's connections, and this process "
        "opens its own"
    )
    assert finding["fix_hint"] == "engine.dispose(close=False)"
