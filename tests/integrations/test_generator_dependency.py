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


LeakyDbFinally = Annotated[Session, Depends(get_db_finally)]


class Settings:
    page_size = 20


def get_settings() -> Iterator[Settings]:
    settings = Settings()
    yield settings  # no finally, and nothing to close: not where a session comes from


# Under `from __future__ import annotations` (this module's), an alias is only a string
# in the endpoint's signature.
LeakyDb = Annotated[Session, Depends(get_db)]


class UserRepository:
    def __init__(self, db: Session) -> None:
        self.db = db

    def name_of(self, user_id: int) -> str:
        user = self.db.get(User, user_id)  # line:repository-query
        if user is None:
            raise HTTPException(status_code=404)
        return user.name


class UserService(UserRepository):
    """A class dependency: FastAPI calls it for a bare `Depends()`."""

    def __init__(self, db: Session = Depends(get_db)) -> None:  # noqa: B008
        super().__init__(db)


def get_repository(db: Session = Depends(get_db)) -> UserRepository:  # noqa: B008
    return UserRepository(db)


def get_repository_finally(db: LeakyDbFinally) -> UserRepository:
    return UserRepository(db)


def read_user(user_id: int, db: Session = Depends(get_db)) -> Any:  # noqa: B008
    user = db.get(User, user_id)  # line:leaky-query
    if user is None:
        raise HTTPException(status_code=404)
    return {"name": user.name}


def read_user_alias(user_id: int, db: LeakyDb) -> Any:
    user = db.get(User, user_id)  # line:alias-query
    if user is None:
        raise HTTPException(status_code=404)
    return {"name": user.name}


def read_user_repository(
    user_id: int,
    users: UserRepository = Depends(get_repository),  # noqa: B008
) -> Any:
    return {"name": users.name_of(user_id)}


def read_user_service(user_id: int, users: Annotated[UserService, Depends()]) -> Any:
    return {"name": users.name_of(user_id)}


def read_user_service_default(
    user_id: int,
    users: UserService = Depends(),  # noqa: B008
) -> Any:
    return {"name": users.name_of(user_id)}


def read_user_repository_finally(
    user_id: int,
    users: Annotated[UserRepository, Depends(get_repository_finally)],
) -> Any:
    leaked = SessionLocal()  # the endpoint's own session, not the dependency's
    leaked.get(User, user_id)  # line:own-session
    return {"name": users.name_of(user_id)}


def read_user_with_settings(
    user_id: int,
    settings: Settings = Depends(get_settings),  # noqa: B008
) -> Any:
    leaked = SessionLocal()
    user = leaked.get(User, user_id)  # line:settings-own-session
    return {"name": user.name if user else None, "page": settings.page_size}


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
    app.get("/alias/{user_id}")(read_user_alias)
    app.get("/repository/{user_id}")(read_user_repository)
    app.get("/repository-finally/{user_id}")(read_user_repository_finally)
    app.get("/settings/{user_id}")(read_user_with_settings)
    app.get("/service/{user_id}")(read_user_service)
    app.get("/service-default/{user_id}")(read_user_service_default)
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
        "as `with SessionLocal() as db: yield db` (or close the session in a "
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


@pytest.mark.parametrize(
    ("route", "query"),
    [
        ("alias", "alias-query"),
        ("repository", "repository-query"),
        ("service", "repository-query"),
        ("service-default", "repository-query"),
    ],
    ids=[
        "string-annotation-alias",
        "sub-dependency-repository",
        "class-dependency-annotated",
        "class-dependency-default",
    ],
)
async def test_the_dependency_is_named_through_an_alias_or_a_sub_dependency(
    client: httpx.AsyncClient, route: str, query: str
) -> None:
    # install() alone keeps only the query's frame (and its caller's line): the endpoint
    # is found from that line, and get_db() through get_repository()'s own Depends.
    (finding,) = await leaks(client, route)
    assert finding.location.line == line_of(query)
    assert f"the session comes from get_db() ({finding.location.path}:" in finding.message


@pytest.mark.parametrize(
    ("route", "query"),
    [("repository-finally", "own-session"), ("settings", "settings-own-session")],
    ids=["guarded-dependency", "dependency-yielding-no-session"],
)
async def test_a_session_the_endpoint_opened_itself_names_no_dependency(
    client: httpx.AsyncClient, route: str, query: str
) -> None:
    sqla_doctor.install(mode="collect")
    assert (await client.get(f"/{route}/1")).status_code == 200
    gc.collect()
    sqla_doctor.uninstall()
    (finding,) = [f for f in sqla_doctor.collected() if f.code == "SQD151"]
    assert finding.location.line == line_of(query)
    assert "generator dependency" not in finding.message
    # The endpoint made it: the fix names its call and its name.
    assert "close it: `with SessionLocal() as leaked:`" in finding.message
