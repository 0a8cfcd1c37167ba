"""The program behaves the same with and without the doctor: same SQL, same results."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

import sqla_doctor

from .models import User, create_and_seed

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(["ada", "bob", "cy"])),
        st.tuples(st.just("get"), st.integers(1, 7)),
        st.tuples(st.just("lazy"), st.integers(1, 7)),
        st.tuples(st.just("rename"), st.integers(1, 5)),
        st.tuples(st.sampled_from(["flush", "commit", "rollback", "query", "expire", "pk"])),
    ),
    max_size=25,
)


def run(operations: list[tuple[Any, ...]], doctor: bool) -> tuple[list[str], list[Any]]:
    engine = create_engine("sqlite://", poolclass=StaticPool)
    create_and_seed(engine)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    results: list[Any] = []
    added: list[User] = []
    if doctor:
        sqla_doctor.install(mode="collect")
    try:
        with Session(engine) as session:
            for operation in operations:
                name = operation[0]
                if name == "add":
                    added.append(User(name=operation[1]))
                    session.add(added[-1])
                elif name == "get":
                    user = session.get(User, operation[1])
                    results.append(user.name if user else None)
                elif name == "lazy":
                    user = session.get(User, operation[1])
                    results.append(sorted(p.title for p in user.posts) if user else None)
                elif name == "rename":
                    user = session.get(User, operation[1])
                    if user is not None:
                        user.name = f"renamed {len(results)}"
                elif name == "query":
                    results.append(sorted(session.scalars(select(User.name)).all()))
                elif name == "expire":
                    session.expire_all()
                elif name == "pk":
                    results.append([user.id for user in added if user in session])
                else:
                    getattr(session, name)()
    finally:
        if doctor:
            sqla_doctor.uninstall()
        engine.dispose()
    return statements, results


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS)
def test_same_statements_and_results_with_and_without_the_doctor(
    operations: list[tuple[Any, ...]],
) -> None:
    assert run(operations, doctor=False) == run(operations, doctor=True)
