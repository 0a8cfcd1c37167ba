"""The WSGI middleware, through a real Flask app over httpx's WSGI transport."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, selectinload

import sqla_doctor
from sqla_doctor.runtime import PitfallError, UnitOfWork

pytest.importorskip("flask")

from flask import Flask, Response, stream_with_context

from sqla_doctor.integrations.wsgi import SqlaDoctorMiddleware

from .models import USERS, User
from .support import line_of


class Units:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[UnitOfWork, dict[str, str]]] = []

    def __call__(self, unit: UnitOfWork, context: Mapping[str, str]) -> None:
        with self.lock:
            self.seen.append((unit, dict(context)))

    def only(self) -> tuple[UnitOfWork, dict[str, str]]:
        assert len(self.seen) == 1, self.seen
        return self.seen[0]


def flask_app(engine: Engine, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.get("/users")
    def users() -> list[str]:
        with Session(engine) as session:
            return [f"{u.name}:{len(u.posts)}" for u in session.scalars(select(User))]  # line:n+1

    @app.get("/users/fixed")
    def users_fixed() -> list[str]:
        with Session(engine) as session:
            query = select(User).options(selectinload(User.posts))
            return [f"{u.name}:{len(u.posts)}" for u in session.scalars(query)]

    @app.get("/users/<int:user_id>")
    def user(user_id: int) -> str:
        with Session(engine) as session:
            found = session.get(User, user_id)
            return found.name if found else ""

    @app.get("/stream")
    def stream() -> Response:
        def rows() -> Iterator[str]:
            with Session(engine) as session:
                for u in session.scalars(select(User)).all():
                    yield f"{u.name}:{len(u.posts)}\n"  # line:stream

        return Response(stream_with_context(rows()), mimetype="text/plain")

    @app.get("/users/<int:user_id>/posts")
    def user_posts(user_id: int) -> str:
        with Session(engine) as session:  # line:detached-with
            found = session.get(User, user_id)
        return str(len(found.posts)) if found else ""  # line:detached

    @sqla_doctor.track(mode="collect")
    def summary(u: User) -> str:
        return f"{u.name}:{len(u.posts)}"  # line:tracked-helper

    @app.get("/users/summaries")
    def summaries() -> list[str]:
        with Session(engine) as session:
            return [summary(u) for u in session.scalars(select(User))]

    app.wsgi_app = SqlaDoctorMiddleware(app.wsgi_app, **options)  # type: ignore[method-assign]
    return app


def client(app: Flask) -> httpx.Client:
    return httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://testserver")


def test_log_mode_logs_each_finding_with_method_and_rule(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqla_doctor")
    with client(flask_app(engine)) as http:
        response = http.get("/users")

    assert response.status_code == 200
    (record,) = [r for r in caplog.records if hasattr(r, "sqla_doctor")]
    assert record.sqla_doctor["code"] == "SQD251"
    assert record.sqla_doctor["line"] == line_of("n+1")
    assert record.sqla_doctor["context"] == {"method": "GET", "route": "/users"}
    assert record.getMessage().startswith("GET /users: ")


def test_an_error_flask_turns_into_a_500_is_explained(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # Flask catches it, logs it and answers 500: it never reaches the middleware.
    units = Units()
    with client(flask_app(engine, on_unit=units)) as http:
        response = http.get("/users/2/posts")

    assert response.status_code == 500
    unit, _ = units.only()
    [finding] = [f for f in unit.findings if f.code == "SQD254"]
    assert finding.location.line == line_of("detached")
    assert f":{line_of('detached-with')}" in finding.message
    [logged] = [r for r in caplog.records if r.exc_info and r.name != "sqla_doctor"]
    assert logged.exc_info is not None
    notes = getattr(logged.exc_info[1], "__notes__", [])
    assert [n for n in notes if n.startswith("sqla-doctor: SQD254")]


def test_the_route_is_flasks_url_rule(engine: Engine) -> None:
    units = Units()
    with client(flask_app(engine, on_unit=units)) as http:
        assert http.get("/users/2").text == "user1"
        assert http.get("/nowhere").status_code == 404

    assert [context for _, context in units.seen] == [
        {"method": "GET", "route": "/users/<int:user_id>"},
        {"method": "GET", "path": "/nowhere"},
    ]


def test_headers_count_queries_and_findings(engine: Engine) -> None:
    with client(flask_app(engine, headers=True)) as http:
        bad = http.get("/users")
        good = http.get("/users/fixed")

    assert bad.headers["x-sqla-doctor-queries"] == str(1 + USERS)
    assert bad.headers["x-sqla-doctor-findings"] == "1"
    assert good.headers["x-sqla-doctor-queries"] == "2"
    assert good.headers["x-sqla-doctor-findings"] == "0"


def test_a_tracked_helper_per_row_is_still_the_requests_n_plus_one(engine: Engine) -> None:
    """The application decorates its per-row helper with track(): the request still sees it."""
    units = Units()
    with client(flask_app(engine, headers=True, on_unit=units)) as http:
        response = http.get("/users/summaries")

    assert response.headers["x-sqla-doctor-findings"] == "1"
    unit, _ = units.only()
    [finding] = unit.findings
    assert (finding.code, finding.location.line) == ("SQD251", line_of("tracked-helper"))


def test_the_unit_ends_when_the_streamed_body_is_closed(engine: Engine) -> None:
    units = Units()
    http = client(flask_app(engine, on_unit=units))
    with http, http.stream("GET", "/stream") as response:
        lines = []
        for line in response.iter_lines():
            lines.append(line)
            assert units.seen == [], "the unit ended before the body did"
    assert lines == [f"user{i}:2" for i in range(USERS)]
    unit, context = units.only()
    assert context == {"method": "GET", "route": "/stream"}
    assert unit.query_count == 1 + USERS
    (finding,) = unit.findings
    assert finding.location.line == line_of("stream")
    assert finding.details["loads"] == USERS


def test_streamed_headers_count_what_happened_before_the_body(engine: Engine) -> None:
    units = Units()
    with client(flask_app(engine, headers=True, on_unit=units)) as http:
        response = http.get("/stream")

    assert len(response.text.splitlines()) == USERS
    # Sent with the first chunk, read one chunk ahead: the users' query and two loads.
    assert response.headers["x-sqla-doctor-queries"] == "3"
    assert response.headers["x-sqla-doctor-findings"] == "0"
    unit, _ = units.only()
    assert unit.query_count == 1 + USERS


def test_raise_mode_fails_the_request_before_its_response_is_sent(engine: Engine) -> None:
    with client(flask_app(engine, mode="raise")) as http:
        with pytest.raises(PitfallError, match="SQD251"):
            http.get("/users")
        assert http.get("/users/fixed").status_code == 200


def test_concurrent_requests_in_threads_are_separate_units(engine: Engine) -> None:
    units = Units()
    app = flask_app(engine, headers=True, on_unit=units)
    paths = ["/users", "/users/fixed", "/users/3"] * 6

    def get(path: str) -> httpx.Response:
        with client(app) as http:
            return http.get(path)

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(get, paths))

    expected = {"/users": 1 + USERS, "/users/fixed": 2, "/users/3": 1}
    for path, response in zip(paths, responses, strict=True):
        assert response.headers["x-sqla-doctor-queries"] == str(expected[path])
    assert len(units.seen) == len(paths)
    for unit, context in units.seen:
        if context["route"] == "/users":
            (finding,) = unit.findings
            assert finding.details["loads"] == USERS
        else:
            assert unit.findings == []


def test_nested_middleware_watch_a_request_once(engine: Engine) -> None:
    outer, inner = Units(), Units()
    app = flask_app(engine, on_unit=inner)
    app.wsgi_app = SqlaDoctorMiddleware(app.wsgi_app, on_unit=outer)  # type: ignore[method-assign]

    with client(app) as http:
        http.get("/users/fixed")

    assert len(outer.seen) == 1
    assert inner.seen == []


def test_the_applications_error_reaches_the_server(engine: Engine) -> None:
    app = flask_app(engine, mode="raise")
    app.config["PROPAGATE_EXCEPTIONS"] = True

    @app.get("/boom")
    def boom() -> str:
        raise LookupError("the application's own error")

    with client(app) as http, pytest.raises(LookupError, match="own error"):
        http.get("/boom")
    # The guard was reset: the next request is watched again.
    units = Units()
    app.wsgi_app = SqlaDoctorMiddleware(app.wsgi_app, on_unit=units)  # type: ignore[method-assign]
    with client(app) as http:
        http.get("/users/fixed")
    assert len(units.seen) == 1


def test_a_failing_callback_is_logged_with_its_traceback_once(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(unit: UnitOfWork, context: Mapping[str, str]) -> None:
        raise RuntimeError("the exporter is down")

    app = flask_app(engine, on_unit=broken, mode="collect")
    with client(app) as http:
        statuses = [http.get("/users/fixed").status_code for _ in range(5)]
    assert statuses == [200] * 5, "the requests go on"
    errors = [r for r in caplog.records if r.name == "sqla_doctor" and r.levelname == "ERROR"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None
    assert "the exporter is down" in str(errors[0].exc_info[1])


def test_a_start_response_taking_two_arguments_is_called_with_two(engine: Engine) -> None:
    # PEP 3333's exc_info is optional: hand-written servers and test harnesses take
    # `(status, headers)` only, and the middleware must call them as the app did.
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        with Session(engine) as session:
            names = [f"{u.name}:{len(u.posts)}" for u in session.scalars(select(User))]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [",".join(names).encode()]

    started: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]]) -> Any:
        started.append(status)
        return lambda data: None

    units = Units()
    wrapped = SqlaDoctorMiddleware(app, on_unit=units, mode="collect")
    body = wrapped({"REQUEST_METHOD": "GET", "PATH_INFO": "/users"}, start_response)
    try:
        content = b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()

    assert started == ["200 OK"]
    assert content.count(b":") == USERS
    unit, _ = units.only()
    assert [f.code for f in unit.findings] == ["SQD251"]


def call_flask_app(app: Flask, path: str, *, close: bool) -> bytes:
    """A hand-written harness: join the body, and close it only when told to."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "localhost"}
    environ |= {"SERVER_PORT": "80", "wsgi.url_scheme": "http"}
    body = app.wsgi_app(environ, lambda status, headers: lambda data: None)
    content = b"".join(body)
    if close:
        body.close()  # type: ignore[attr-defined]
    return content


@pytest.mark.parametrize("close", [False, True], ids=["never-closed", "closed"])
def test_the_unit_ends_when_the_body_is_read_to_its_end(engine: Engine, close: bool) -> None:
    # PEP 3333 has the server close the body; a harness joining the chunks does not, and
    # the request's N+1 was never reported. Read to its end, the request is over; a
    # close() after that reports nothing again.
    units = Units()
    app = flask_app(engine, on_unit=units)
    torn_down: list[int] = []
    app.teardown_request(lambda error: torn_down.append(len(units.seen)))

    content = call_flask_app(app, "/users", close=close)

    assert content.count(b":") == USERS
    unit, context = units.only()
    assert context == {"method": "GET", "route": "/users"}
    assert [(f.code, f.location.line) for f in unit.findings] == [("SQD251", line_of("n+1"))]
    assert torn_down == [0], "Flask's teardown runs inside the unit, before it ends"


def test_the_unit_ends_when_the_response_is_dropped_unread(engine: Engine) -> None:
    # Werkzeug's test client pulls the first chunk and hands back the response; a test
    # that only looks at the status drops it unread and unclosed.
    units = Units()
    app = flask_app(engine, on_unit=units)
    assert app.test_client().get("/users").status_code == 200
    unit, context = units.only()
    assert context == {"method": "GET", "route": "/users"}
    assert [(f.code, f.location.line) for f in unit.findings] == [("SQD251", line_of("n+1"))]


def test_a_request_after_one_dropped_unread_is_a_unit_of_its_own(engine: Engine) -> None:
    units = Units()
    http = flask_app(engine, on_unit=units).test_client()
    assert http.get("/users/fixed").status_code == 200
    assert http.get("/users").status_code == 200
    assert [context["route"] for _, context in units.seen] == ["/users/fixed", "/users"]
    assert [f.code for f in units.seen[0][0].findings] == []
    assert [f.code for f in units.seen[1][0].findings] == ["SQD251"]


def test_a_response_dropped_in_another_thread_leaves_that_threads_unit_alone(
    engine: Engine,
) -> None:
    # The cyclic collector may free a response anywhere: ending its request's unit there
    # would reset the unit that thread is in. (In a context of its own: the request's
    # unit stays open in it.)
    units = Units()
    responses: list[object] = []
    seen: list[object] = []

    def drop_it() -> None:
        with sqla_doctor.track(mode="collect") as outer:
            responses.clear()
            seen.append(sqla_doctor.current_unit() is outer)

    def request_then_drop_it_elsewhere() -> None:
        responses.append(flask_app(engine, on_unit=units).test_client().get("/users"))
        thread = threading.Thread(target=drop_it)
        thread.start()
        thread.join()

    contextvars.copy_context().run(request_then_drop_it_elsewhere)
    assert seen == [True]


def test_a_body_read_to_its_end_without_a_pitfall_reports_nothing(engine: Engine) -> None:
    units = Units()
    content = call_flask_app(flask_app(engine, on_unit=units), "/users/fixed", close=False)
    assert content.count(b":") == USERS
    unit, _ = units.only()
    assert unit.findings == []
