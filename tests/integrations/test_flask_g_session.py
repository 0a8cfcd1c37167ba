"""SQD151 for a session a Flask app keeps in flask.g for the request."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.runtime.listeners import shutdown

pytest.importorskip("flask")

from flask import Flask, g

from .models import User
from .support import line_of


def of_code(findings: list[Any], code: str) -> list[Any]:
    return [finding for finding in findings if finding.code == code]


def one(findings: list[Any], code: str) -> Any:
    matching = of_code(findings, code)
    assert len(matching) == 1, [f"{f.code} {f.message}" for f in findings]
    return matching[0]


def flask_app(engine: Engine, *, close_on_error: bool, teardown: bool = True) -> Flask:
    app = Flask(__name__)

    def get_session() -> Session:
        if "db" not in g:
            g.db = Session(engine)  # line:kept-in-g
        return g.db  # type: ignore[no-any-return]

    if teardown:

        @app.teardown_appcontext
        def close_session(exc: BaseException | None) -> None:  # line:teardown
            db = g.pop("db", None)
            if db is not None and (exc is None or close_on_error):
                db.close()

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> dict[str, Any]:
        db = get_session()
        found = db.scalars(select(User).where(User.id == user_id)).one()  # line:query
        return {"name": found.name}

    return app


def _collected_after(app: Flask, *user_ids: int) -> list[Any]:
    sqla_doctor.install(mode="collect")
    client = app.test_client()
    for user_id in user_ids:
        client.get(f"/users/{user_id}")
    gc.collect()
    # A session still alive (the test client keeps the failed request's traceback) is
    # judged as at exit.
    shutdown()
    return sqla_doctor.collected()


def test_a_session_in_g_left_open_by_the_teardown_is_traced_to_g_and_the_teardown(
    engine: Engine,
) -> None:
    findings = _collected_after(flask_app(engine, close_on_error=False), 1, 999)
    finding = one(findings, "SQD151")
    assert finding.location.line == line_of("query")
    here = finding.location.path
    assert finding.message.endswith(
        f"— it was kept in flask.g.db for the request ({here}:{line_of('kept-in-g')}), and "
        "the app context ended without closing it: close it in close_session() "
        f"({here}:{line_of('teardown') - 1}) whatever happened, `db = g.pop(\"db\", None)` "
        "then `if db is not None: db.close()` — Flask runs teardown functions after a "
        "failed request too, with the error as their argument"
    )
    assert [r.message for r in finding.related][:1] == ["the session was kept in flask.g.db here"]


def test_a_teardown_that_always_closes_is_the_silent_twin(engine: Engine) -> None:
    findings = _collected_after(flask_app(engine, close_on_error=True), 1, 999)
    assert not of_code(findings, "SQD151")


def test_an_app_without_a_teardown_is_told_to_add_one(engine: Engine) -> None:
    findings = _collected_after(flask_app(engine, close_on_error=True, teardown=False), 1)
    message = one(findings, "SQD151").message
    assert "nothing closes it when the app context ends: add `@app.teardown_appcontext" in (
        message
    )


def writing_app(engine: Engine, *, commit: bool) -> Flask:
    app = Flask(__name__)

    def get_session() -> Session:
        if "db" not in g:
            g.db = Session(engine)
        return g.db  # type: ignore[no-any-return]

    @app.teardown_appcontext
    def close_session(exc: BaseException | None) -> None:
        db = g.pop("db", None)
        if db is not None:
            db.close()  # line:g-close

    @app.post("/users")
    def create() -> tuple[dict[str, Any], int]:
        get_session().add(User(name="new"))  # line:g-add
        if commit:
            get_session().commit()
        return {}, 201

    return app


def test_writes_a_teardown_closes_are_told_to_commit_not_a_with_block_of_g_pop(
    engine: Engine,
) -> None:
    with writing_app(engine, commit=False).test_client() as client:
        sqla_doctor.install(mode="collect")
        assert client.post("/users").status_code == 201
    findings = sqla_doctor.collected()
    finding = one(findings, "SQD152")
    assert finding.location.line == line_of("g-close")
    # `db = g.pop("db", None)` fetched the session; `with g.pop(...) as db, db.begin():`
    # was the advice.
    assert finding.message.endswith(
        "— commit where the writes are made, after them, or call `db.commit()` here before "
        "it is closed when no error ended the request"
    )
    assert finding.fix_hint == "db.commit()"
    assert [r.location.line for r in finding.related] == [line_of("g-add")]


def test_the_view_that_commits_is_the_silent_twin_of_the_teardown_close(engine: Engine) -> None:
    with writing_app(engine, commit=True).test_client() as client:
        sqla_doctor.install(mode="collect")
        assert client.post("/users").status_code == 201
    assert not of_code(sqla_doctor.collected(), "SQD152")
    with Session(engine) as session:
        assert session.scalar(select(User).where(User.name == "new")) is not None
