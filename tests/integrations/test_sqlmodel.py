"""A SQLModel app under track(): `table=True` models, `Relationship()`, `session.exec()`.
Its `Field(default=None, primary_key=True)` puts None in a new object, which no
attribute event reports when read.

No ``from __future__ import annotations``: SQLModel reads the annotations at class
creation."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import joinedload
from sqlmodel import Field, Relationship, Session, SQLModel, create_engine, select

import sqla_doctor

from .support import line_of

HEROES = 4


class Team(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    heroes: list["Hero"] = Relationship(back_populates="team")


class Hero(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str
    team_id: int | None = Field(default=None, foreign_key="team.id")
    team: Team | None = Relationship(back_populates="heroes")


@pytest.fixture
def sqlmodel_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'heroes.db'}")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        for i in range(HEROES):
            session.add(Hero(name=f"hero{i}", team=Team(name=f"team{i}")))
        session.commit()
    yield engine
    engine.dispose()


def create_hero(engine: Engine, *, flush: bool) -> str:
    with Session(engine) as session:
        hero = Hero(name="new")
        session.add(hero)  # line:add
        if flush:
            session.flush()
        url = f"/heroes/{hero.id}"  # line:read
        session.commit()
        return url


def test_a_new_heros_id_read_before_flush_is_reported(sqlmodel_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        url = create_hero(sqlmodel_engine, flush=False)
    assert url == "/heroes/None", "the pitfall"
    (finding,) = uow.findings
    assert finding.code == "SQD351"
    assert finding.location.line == line_of("read")
    assert finding.related[0].location.line == line_of("add")
    assert finding.message.startswith("Hero.id read on a pending Hero before any flush")


def test_flush_before_reading_the_id_is_the_silent_twin(sqlmodel_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        url = create_hero(sqlmodel_engine, flush=True)
    assert url != "/heroes/None"
    assert uow.findings == []


def test_printing_a_new_hero_is_not_a_read_of_its_id(sqlmodel_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(sqlmodel_engine) as session:
        hero = Hero(name="new")
        session.add(hero)
        shown = f"{hero!r} {hero}"
        session.commit()
    assert "id=None" in shown
    assert uow.findings == []


def test_relationship_per_row_of_session_exec_is_an_n_plus_one(sqlmodel_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(sqlmodel_engine) as session:
        heroes = session.exec(select(Hero)).all()  # line:exec
        names = [hero.team.name for hero in heroes if hero.team]  # line:team
    assert len(names) == HEROES
    (finding,) = uow.findings
    assert finding.code == "SQD251"
    assert finding.location.line == line_of("team")
    assert finding.related[0].location.line == line_of("exec")
    assert finding.fix_hint == ".options(joinedload(Hero.team))"


def test_joinedload_is_the_silent_twin(sqlmodel_engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(sqlmodel_engine) as session:
        statement = select(Hero).options(joinedload(Hero.team))  # type: ignore[arg-type]
        names = [hero.team.name for hero in session.exec(statement).all() if hero.team]
    assert len(names) == HEROES
    assert uow.findings == []
