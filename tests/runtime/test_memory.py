"""Memory stays bounded however many statements run, and statements are capped."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.runtime.unit_of_work import MAX_STATEMENTS_KEPT

from .models import USERS, User


def workload(engine: Engine, statements: int) -> int:
    """The worst case: one long-lived session (its implicit unit never ends), N+1s included."""
    done = 0
    with Session(engine) as session:
        while done < statements:
            for user_id in range(1, USERS + 1):
                session.get(User, user_id)
                done += 1
            for user in session.scalars(select(User)).all():
                assert user.posts
                done += 1
            done += 1
            session.expunge_all()
    return done


def growth(engine: Engine, statements: int) -> float:
    sqla_doctor.install(mode="collect")
    workload(engine, 5_000)  # warm SQLAlchemy's caches and ours
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        workload(engine, statements)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / 1e6
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_statements(engine: Engine) -> None:
    assert growth(engine, 20_000) < 1.0


@pytest.mark.slow
def test_memory_growth_over_200k_statements_is_under_5_mb(engine: Engine) -> None:
    assert growth(engine, 200_000) < 5.0


def test_a_unit_keeps_only_the_first_statements(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow:
        workload(engine, 1_000)
    assert uow.query_count >= 1_000
    assert len(uow.statements) == MAX_STATEMENTS_KEPT
