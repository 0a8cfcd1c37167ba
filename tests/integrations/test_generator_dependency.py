"""SQD151 names the FastAPI generator dependency whose session leaks on a failed request."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

import sqla_doctor

pytest.importorskip("fastapi")

from fastapi import Depends, FastAPI, HTTPException

from .models import User
from .support import line_of

# Module-level functions, as an application's are: SQD151 finds the endpoint by name.
SessionLocal: sessionmaker[Session] = sessionmaker()


def get_db() -> Iterator[Session]:  # line:get-db
    db = SessionLocal()
    yield db
    db.close()  # skipped when the endpoint raises


def get_db_closed() -> Iterator[Session]:
    with SessionLocal() as db:
        yield db


def get_db_finally() -> Iterator[Session]:
    db = SessionLocal()
    try:
        yield db
    finally:
        db.close()


def read_user(user_id: int, db: Session = Depends(get_db)) -> Any:  # noqa: B008
    user = db.get(User, user_id)  # line:leaky-query
    if user is None:
        raise HTTPException(status_code=404)
    return {"name": user.name}


def read_user_closed(user_id: int, db: Annotated[Session, Depends(get_db_closed)]) -> Any:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404)
    return {"name": user.name}


def read_user_finally(user_id: int, db: Session = Depends(get_db_finally)) -> Any:  # noqa: B008
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(status_code=404)
    return {"name": user.name}


@pytest.fixture
async def client(engine: Engine) -> AsyncIterator[httpx.AsyncClient]:
    SessionLocal.configure(bind=engine)
    app = FastAPI()
    app.get("/leaky/{user_id}")(read_user)
    app.get("/closed/{user_id}")(read_user_closed)
    app.get("/finally/{user_id}")(read_user_finally)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def leaks(client: httpx.AsyncClient, route: str) -> list[sqla_doctor.Finding]:
    sqla_doctor.install(mode="collect")
    statuses = [(await client.get(f"/{route}/{user_id}")).status_code for user_id in (1, 404)]
    assert statuses == [200, 404]
    gc.collect()
    sqla_doctor.uninstall()
    return [f for f in sqla_doctor.collected() if f.code == "SQD151"]


async def test_the_dependency_that_leaks_on_a_failed_request_is_named(
    client: httpx.AsyncClient,
) -> None:
    (finding,) = await leaks(client, "leaky")
    assert finding.location.line == line_of("leaky-query")
    path = finding.location.path
    assert finding.message.endswith(
        f"— the session comes from get_db() ({path}:{line_of('get-db')}), a generator "
        "dependency whose code after `yield` does not run when the request fails: write it "
        "as `with session_factory() as session: yield session` (or close the session in a "
        "finally block)"
    )
    assert (finding.related[0].location.line, finding.related[0].message) == (
        line_of("get-db"),
        "get_db() opened the session",
    )


@pytest.mark.parametrize("route", ["closed", "finally"])
async def test_dependencies_that_close_the_session_leak_nothing(
    client: httpx.AsyncClient, route: str
) -> None:
    assert await leaks(client, route) == []

