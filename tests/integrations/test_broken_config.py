"""A configuration that cannot be used is one error line, and the defaults: never a web
app answering 500, nor a doctor switched off without a word."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor import runtime
from sqla_doctor.integrations.asgi import SqlaDoctorMiddleware as AsgiMiddleware
from sqla_doctor.integrations.wsgi import SqlaDoctorMiddleware as WsgiMiddleware

from .models import User

BROKEN = {
    "misspelt-key": (
        "[tool.sqla-doctor.runtime]\nn-plus-one-treshold = 1\n",
        "n-plus-one-treshold",
    ),
    "static-key": ('[tool.sqla-doctor]\nselekt = ["ALL"]\n', "selekt"),
    "unknown-selector": ('[tool.sqla-doctor]\nselect = ["SQD9999"]\n', "SQD9999"),
    "unknown-mode": ('[tool.sqla-doctor.runtime]\nmode = "loud"\n', "loud"),
}


@pytest.fixture(params=sorted(BROKEN))
def broken(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The project's pyproject.toml holds one mistake; the mistake's word is yielded."""
    table, word = BROKEN[request.param]
    (tmp_path / "pyproject.toml").write_text(table)
    monkeypatch.chdir(tmp_path)
    # The project's configuration is read once per process: read this one.
    monkeypatch.setattr(runtime, "_loaded", None)
    monkeypatch.setattr(runtime, "config_errors", [])
    return word


def one_error_line(caplog: pytest.LogCaptureFixture, word: str) -> None:
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name == "sqla_doctor" and r.levelname == "ERROR"
    ]
    assert len(errors) == 1, errors
    assert word in errors[0]
    assert errors[0].endswith("; using the default settings")
    assert "\n" not in errors[0]


def n_plus_one(engine: Engine) -> int:
    with Session(engine) as session:
        return sum(len(user.posts) for user in session.scalars(select(User)).all())


async def test_the_asgi_middleware_serves_with_the_defaults(
    engine: Engine, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        n_plus_one(engine)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    units: list[sqla_doctor.UnitOfWork] = []
    watched = AsgiMiddleware(app, on_unit=lambda unit, context: units.append(unit))
    transport = httpx.ASGITransport(app=watched)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        statuses = [(await client.get("/")).status_code for _ in range(2)]
    assert statuses == [200, 200]
    one_error_line(caplog, broken)
    # Still watched, with the default settings: the N+1 is found.
    assert [f.code for f in units[0].findings] == ["SQD251"]


def test_the_wsgi_middleware_serves_with_the_defaults(
    engine: Engine, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        n_plus_one(engine)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    watched = WsgiMiddleware(app)
    with httpx.Client(transport=httpx.WSGITransport(app=watched), base_url="http://t") as client:
        assert client.get("/").status_code == 200
    one_error_line(caplog, broken)


def test_track_and_install_use_the_defaults(
    engine: Engine, broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        n_plus_one(engine)
    assert [f.code for f in uow.findings] == ["SQD251"]
    sqla_doctor.install(mode="collect")
    try:
        n_plus_one(engine)
    finally:
        sqla_doctor.uninstall()
    assert {f.code for f in sqla_doctor.collected()} <= {"SQD251"}
    one_error_line(caplog, broken)
