"""The ASGI middleware, through real Starlette and FastAPI apps over httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import warnings
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, selectinload

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Finding
from sqla_doctor.runtime import PitfallError, UnitOfWork

pytest.importorskip("starlette")
pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

from sqla_doctor.integrations.asgi import SqlaDoctorMiddleware

from .models import USERS, User
from .support import line_of


class Units:
    """An ``on_unit`` callback that keeps what each request's unit of work saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[UnitOfWork, dict[str, str]]] = []

    def __call__(self, unit: UnitOfWork, context: Mapping[str, str]) -> None:
        self.seen.append((unit, dict(context)))

    def only(self) -> tuple[UnitOfWork, dict[str, str]]:
        assert len(self.seen) == 1, self.seen
        return self.seen[0]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def starlette_app(engine: Engine, **options: Any) -> Starlette:
    def users(request: Request) -> JSONResponse:
        # A sync endpoint: Starlette runs it in its thread pool.
        with Session(engine) as session:
            names = [f"{u.name}:{len(u.posts)}" for u in session.scalars(select(User))]  # line:n+1
        return JSONResponse(names)

    def users_fixed(request: Request) -> JSONResponse:
        with Session(engine) as session:
            query = select(User).options(selectinload(User.posts))
            names = [f"{u.name}:{len(u.posts)}" for u in session.scalars(query)]
        return JSONResponse(names)

    def user(request: Request) -> PlainTextResponse:
        with Session(engine) as session:
            found = session.get(User, int(request.path_params["user_id"]))
            return PlainTextResponse(found.name if found else "")

    def stream(request: Request) -> StreamingResponse:
        def rows() -> Iterator[str]:
            with Session(engine) as session:
                for u in session.scalars(select(User)).all():
                    yield f"{u.name}:{len(u.posts)}\n"  # line:stream

        return StreamingResponse(rows(), media_type="text/plain")

    app = Starlette(
        routes=[
            Route("/users", users),
            Route("/users/fixed", users_fixed),
            Route("/users/{user_id:int}", user),
            Route("/stream", stream),
        ]
    )
    app.add_middleware(SqlaDoctorMiddleware, **options)
    return app


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(app: Any, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def doctor_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if hasattr(r, "sqla_doctor")]


async def test_log_mode_logs_each_finding_with_method_and_route(
    engine: Engine, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqla_doctor")
    client = client_for(starlette_app(engine))

    response = await client.get("/users")

    assert response.status_code == 200
    assert len(response.json()) == USERS
    (record,) = doctor_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.sqla_doctor["code"] == "SQD251"
    assert record.sqla_doctor["line"] == line_of("n+1")
    assert record.sqla_doctor["context"] == {"method": "GET", "route": "/users"}
    assert record.getMessage().startswith("GET /users: ")
    assert "User.posts lazy-loaded 4×" in record.getMessage()


async def test_the_fixed_endpoint_logs_nothing(
    engine: Engine, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqla_doctor")
    units = Units()
    client = client_for(starlette_app(engine, on_unit=units))

    assert (await client.get("/users/fixed")).status_code == 200

    assert doctor_records(caplog) == []
    unit, _ = units.only()
    assert unit.query_count == 2
    assert unit.findings == []


async def test_the_route_is_the_template_not_the_path(engine: Engine, client_for: Any) -> None:
    units = Units()
    client = client_for(starlette_app(engine, on_unit=units))

    assert (await client.get("/users/3")).text == "user2"
    assert (await client.get("/nowhere")).status_code == 404

    assert [context for _, context in units.seen] == [
        {"method": "GET", "route": "/users/{user_id}"},
        {"method": "GET", "path": "/nowhere"},
    ]


async def test_the_route_of_a_mounted_app_includes_the_mount(
    engine: Engine, client_for: Any
) -> None:
    units = Units()
    inner = starlette_app(engine)
    app = Starlette(routes=[Mount("/api", app=inner)])
    app.add_middleware(SqlaDoctorMiddleware, on_unit=units)
    client = client_for(app)

    assert (await client.get("/api/users/1")).text == "user0"

    # The inner app's own middleware saw a request already watched: one unit, not two.
    _, context = units.only()
    assert context == {"method": "GET", "route": "/api/users/{user_id}"}


async def test_headers_count_queries_and_findings_of_the_whole_request(
    engine: Engine, client_for: Any
) -> None:
    client = client_for(starlette_app(engine, headers=True))

    bad = await client.get("/users")
    good = await client.get("/users/fixed")

    assert bad.headers["x-sqla-doctor-queries"] == str(1 + USERS)
    assert bad.headers["x-sqla-doctor-findings"] == "1"
    assert good.headers["x-sqla-doctor-queries"] == "2"
    assert good.headers["x-sqla-doctor-findings"] == "0"
    assert len(bad.json()) == USERS


async def test_a_streamed_body_is_inside_the_unit_to_its_last_chunk(
    engine: Engine, client_for: Any
) -> None:
    units = Units()
    client = client_for(starlette_app(engine, headers=True, on_unit=units))

    response = await client.get("/stream")

    assert response.text.splitlines() == [f"user{i}:2" for i in range(USERS)]
    unit, context = units.only()
    assert context == {"method": "GET", "route": "/stream"}
    assert unit.query_count == 1 + USERS
    (finding,) = unit.findings
    assert finding.code == "SQD251"
    assert finding.location.line == line_of("stream")
    assert finding.details["loads"] == USERS
    # The headers left with the first chunk: the users' query and the first lazy load.
    assert response.headers["x-sqla-doctor-queries"] == "2"
    assert response.headers["x-sqla-doctor-findings"] == "0"


async def test_concurrent_requests_are_separate_units(engine: Engine, client_for: Any) -> None:
    units = Units()
    client = client_for(starlette_app(engine, headers=True, on_unit=units))
    paths = ["/users", "/users/fixed", "/stream", "/users/2"] * 5

    responses = await asyncio.gather(*(client.get(path) for path in paths))

    assert all(r.status_code == 200 for r in responses)
    expected_queries = {"/users": 1 + USERS, "/users/fixed": 2, "/users/2": 1}
    for path, response in zip(paths, responses, strict=True):
        if path in expected_queries:
            assert response.headers["x-sqla-doctor-queries"] == str(expected_queries[path])
    assert len(units.seen) == len(paths)
    for unit, context in units.seen:
        route = context["route"]
        if route in ("/users", "/stream"):
            assert len(unit.findings) == 1, [f"{f.code} {f.message}" for f in unit.findings]
            (finding,) = unit.findings
            assert finding.details["loads"] == USERS, "another request's loads were counted"
            assert unit.query_count == 1 + USERS
        else:
            assert unit.findings == []


async def test_raise_mode_fails_the_request_before_its_response_is_sent(
    engine: Engine, client_for: Any
) -> None:
    app = starlette_app(engine, mode="raise")

    with pytest.raises(PitfallError, match=r"SQD251 User\.posts lazy-loaded 4×") as raised:
        await client_for(app).get("/users")
    assert codes(list(raised.value.findings)) == ["SQD251"]

    # What the server does with it: Starlette's error middleware answers 500.
    response = await client_for(app, raise_app_exceptions=False).get("/users")
    assert response.status_code == 500
    assert (await client_for(app).get("/users/fixed")).status_code == 200


async def test_raise_mode_after_a_streamed_response_raises_after_its_last_chunk(
    engine: Engine, client_for: Any
) -> None:
    app = starlette_app(engine, mode="raise")

    response = await client_for(app, raise_app_exceptions=False).get("/stream")
    assert response.status_code == 200
    assert len(response.text.splitlines()) == USERS

    with pytest.raises(PitfallError, match="SQD251"):
        await client_for(app).get("/stream")


async def test_a_failing_callback_never_reaches_the_application(
    engine: Engine, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(unit: UnitOfWork, context: Mapping[str, str]) -> None:
        raise RuntimeError("a bug in the user's callback")

    client = client_for(starlette_app(engine, on_unit=broken, headers=True))

    response = await client.get("/users/fixed")

    assert response.status_code == 200
    assert "the on_unit callback" in caplog.text
    assert "a bug in the user's callback" in caplog.text


async def test_the_applications_error_is_not_replaced(engine: Engine, client_for: Any) -> None:
    def boom(request: Request) -> JSONResponse:
        with Session(engine) as session:
            for u in session.scalars(select(User)):
                assert u.posts
        raise LookupError("the application's own error")

    app = Starlette(routes=[Route("/boom", boom)])
    app.add_middleware(SqlaDoctorMiddleware, mode="raise", headers=True)

    with pytest.raises(LookupError, match="the application's own error") as raised:
        await client_for(app).get("/boom")
    if sys.version_info >= (3, 11):
        # The findings ride along as a note, never instead of the application's error.
        assert any("SQD251" in note for note in raised.value.__notes__)


def test_an_unknown_mode_is_refused_where_it_is_written() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        SqlaDoctorMiddleware(Starlette(), mode="loud")


async def test_fastapi_async_endpoint_with_a_dependency(
    async_engine: AsyncEngine, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqla_doctor")
    units = Units()
    app = FastAPI()

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with AsyncSession(async_engine) as session:
            yield session

    @app.get("/items/{item_id}")
    async def item(
        item_id: int,
        # FastAPI declares dependencies this way; Annotated would need module-level names.
        session: AsyncSession = Depends(get_session),  # noqa: B008
    ) -> dict[str, Any]:
        users = (await session.scalars(select(User))).all()
        posts = [len(await u.awaitable_attrs.posts) for u in users]  # line:fastapi
        return {"item": item_id, "posts": posts}

    app.add_middleware(SqlaDoctorMiddleware, on_unit=units, headers=True)
    response = await client_for(app).get("/items/7")

    assert response.json() == {"item": 7, "posts": [2] * USERS}
    assert response.headers["x-sqla-doctor-queries"] == str(1 + USERS)
    unit, context = units.only()
    assert context == {"method": "GET", "route": "/items/{item_id}"}
    (finding,) = unit.findings
    assert finding.location.line == line_of("fastapi")
    (record,) = doctor_records(caplog)
    assert record.getMessage().startswith("GET /items/{item_id}: ")


async def test_a_route_function_of_ones_own(
    engine: Engine, client_for: Any, caplog: pytest.LogCaptureFixture
) -> None:
    units = Units()
    named = client_for(starlette_app(engine, on_unit=units, route=lambda scope: "users-api"))
    assert (await named.get("/users/1")).status_code == 200

    def broken(scope: Any) -> str:
        raise KeyError("no route here")

    failing = client_for(starlette_app(engine, on_unit=units, route=broken))
    assert (await failing.get("/users/1")).status_code == 200

    assert [context for _, context in units.seen] == [
        {"method": "GET", "route": "users-api"},
        {"method": "GET", "path": "/users/1"},
    ]
    assert "the route function" in caplog.text


class PostOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    title: str


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    name: str
    posts: list[PostOut]


def response_model_app(
    engine: Engine, units: Units, config: RuntimeConfig | None = None
) -> FastAPI:
    """Endpoints that return ORM objects for FastAPI to serialize after they return."""
    app = FastAPI()

    def get_session() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    @app.get("/open", response_model=list[UserOut])
    def session_still_open(session: Session = Depends(get_session)) -> Any:  # noqa: B008
        return session.scalars(select(User)).all()  # line:serialized-open

    @app.get("/open/fixed", response_model=list[UserOut])
    def session_still_open_fixed(session: Session = Depends(get_session)) -> Any:  # noqa: B008
        return session.scalars(select(User).options(selectinload(User.posts))).all()

    @app.get("/closed", response_model=list[UserOut])
    def session_closed() -> Any:
        with Session(engine) as session:  # line:serialized-closed
            return session.scalars(select(User)).all()  # line:serialized-query

    @app.get("/closed/fixed", response_model=list[UserOut])
    def session_closed_fixed() -> Any:
        with Session(engine) as session:
            return session.scalars(select(User).options(selectinload(User.posts))).all()

    app.add_middleware(SqlaDoctorMiddleware, on_unit=units, config=config)
    return app


async def test_an_n_plus_one_of_response_serialization_is_reported_at_the_query(
    engine: Engine, client_for: Any
) -> None:
    # No line of the program is on the stack while pydantic reads User.posts: the line
    # to change is the query that loaded the users.
    units = Units()
    response = await client_for(response_model_app(engine, units)).get("/open")

    assert response.status_code == 200
    unit, _ = units.only()
    (finding,) = unit.findings
    assert finding.code == "SQD251"
    assert finding.location.line == line_of("serialized-open")
    assert finding.location.path.endswith("test_asgi.py")
    assert "selectinload(User.posts)" in finding.message
    where_read, query = finding.related
    assert "pydantic" in where_read.location.path
    assert where_read.message.startswith("where it happened: in pydantic")
    assert query.location.line == line_of("serialized-open")


@pytest.mark.parametrize(
    ("config", "where"),
    [
        # The read is seen as it fails, inside pydantic.
        (None, "pydantic"),
        # Without read tracking: from FastAPI's ResponseValidationError, which keeps only
        # the text of the DetachedInstanceError that pydantic caught, and the object.
        (RuntimeConfig(track_reads=False), "fastapi"),
    ],
)
async def test_a_detached_read_of_response_serialization_is_explained_once(
    engine: Engine, client_for: Any, config: RuntimeConfig | None, where: str
) -> None:
    units = Units()
    client = client_for(response_model_app(engine, units, config), raise_app_exceptions=False)
    response = await client.get("/closed")

    assert response.status_code == 500
    unit, _ = units.only()
    (finding,) = unit.findings
    assert finding.code == "SQD254"
    assert finding.location.line == line_of("serialized-query")
    assert f"closed at {finding.location.path}:{line_of('serialized-closed')}" in (
        finding.message
    )
    assert "selectinload(User.posts)" in finding.message
    assert where in finding.related[0].location.path


async def test_response_serialization_of_loaded_objects_is_silent(
    engine: Engine, client_for: Any
) -> None:
    units = Units()
    client = client_for(response_model_app(engine, units))
    for path in ("/open/fixed", "/closed/fixed"):
        response = await client.get(path)
        assert response.status_code == 200
        assert len(response.json()) == USERS
    assert [unit.findings for unit, _ in units.seen] == [[], []]


def async_users_app(async_engine: AsyncEngine) -> FastAPI:
    """An async endpoint whose objects FastAPI serializes, lazy-loading, after it returned."""
    app = FastAPI()

    async def get_session() -> AsyncIterator[AsyncSession]:
        async with AsyncSession(async_engine) as session:
            yield session

    @app.get("/users", response_model=list[UserOut])
    async def users(session: AsyncSession = Depends(get_session)) -> Any:  # noqa: B008
        return (await session.scalars(select(User))).all()  # line:serialized-async

    return app


async def get_users(client: httpx.AsyncClient) -> httpx.Response:
    with warnings.catch_warnings():
        # The driver's coroutine that MissingGreenlet left unawaited, not ours.
        warnings.simplefilter("ignore", RuntimeWarning)
        response = await client.get("/users")  # line:client-call
        gc.collect()
    return response


async def test_a_missing_greenlet_of_response_serialization_is_reported_at_the_query(
    async_engine: AsyncEngine, client_for: Any
) -> None:
    # The test's own client call is above the middleware: not the request's line.
    units = Units()
    app = async_users_app(async_engine)
    app.add_middleware(SqlaDoctorMiddleware, on_unit=units)
    response = await get_users(client_for(app, raise_app_exceptions=False))

    assert response.status_code == 500
    unit, _ = units.only()
    (finding,) = unit.findings
    assert finding.code == "SQD255"
    assert finding.location.line == line_of("serialized-async")
    assert "pydantic" in finding.related[0].location.path


async def test_without_the_middleware_a_test_clients_call_is_not_the_requests_line(
    async_engine: AsyncEngine, client_for: Any
) -> None:
    # install() alone (as `sqla-doctor run -- pytest` does) and httpx's ASGITransport:
    # the test's `await client.get()` is the innermost line of the program on the stack
    # while pydantic serializes, but it only drives the app; the line to change is the
    # endpoint's query.
    sqla_doctor.install(mode="collect")
    client = client_for(async_users_app(async_engine), raise_app_exceptions=False)
    response = await get_users(client)
    sqla_doctor.uninstall()

    assert response.status_code == 500
    findings = [f for f in sqla_doctor.collected() if f.code == "SQD255"]
    assert [f.location.line for f in findings] == [line_of("serialized-async")]
    assert line_of("client-call") not in [r.location.line for r in findings[0].related]


@pytest.mark.parametrize("commits", [False, True])
async def test_a_leaked_sessions_lost_writes_are_logged_when_it_is_collected(
    engine: Engine, client_for: Any, caplog: pytest.LogCaptureFixture, commits: bool
) -> None:
    """The request's unit ended with the session still open (SQD151); its flushed
    INSERT is rolled back when the garbage collector takes the session, after the
    request: logged then (SQD152), though nothing called install(). A session left
    open after its commit holds no connection and lost nothing: no finding."""

    def leak(request: Request) -> JSONResponse:
        session = Session(engine)
        session.add(User(name="new"))
        session.flush()  # line:leaked-flush
        if commits:
            session.commit()
        return JSONResponse({"ok": True})

    app = starlette_app(engine)
    app.router.routes.append(Route("/leak", leak, methods=["POST"]))
    caplog.set_level(logging.INFO, logger="sqla_doctor")
    client = client_for(app)

    assert (await client.post("/leak")).status_code == 200
    gc.collect()
    # The next request's events are where the doctor hears of the collected session.
    assert (await client.get("/users/fixed")).status_code == 200

    records = [r.sqla_doctor for r in doctor_records(caplog)]
    assert [r["code"] for r in records] == ([] if commits else ["SQD151", "SQD152"])
    if not commits:
        lost = records[1]
        assert lost["line"] == line_of("leaked-flush")
        assert "the flushed writes (1 User inserted) were rolled back" in lost["message"]
