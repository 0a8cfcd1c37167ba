"""SQD302's advice follows what the query selects and what is called on it."""

from __future__ import annotations

import pytest

from sqla_doctor.static.rule import Invalid
from sqla_doctor.static.rules.query.legacy_query_api import LegacyQueryApi
from sqla_doctor.static.testing import run_example

HEADER = """
from sqlalchemy import func
from sqlalchemy.orm import Session
def view(session: Session, pk):
"""


@pytest.mark.parametrize(
    ("query", "message_end", "hint"),
    [
        (
            "return session.query(User).filter(User.active).all()",
            "use `session.scalars(select(...))`",
            "rewrite as `session.scalars(select(User).where(...))`",
        ),
        # Rows of two columns: scalars() would return the first column only.
        (
            "return dict(session.query(Service.binary, func.min(Service.version)).all())",
            "use `session.execute(select(...))`",
            "rewrite as "
            "`session.execute(select(Service.binary, func.min(Service.version)).where(...))`",
        ),
        # `.get(pk)` is advised only where it is called, and then alone.
        (
            "return session.query(User).get(pk)",
            "use `session.scalars(select(...))`",
            "rewrite as `session.get(User, pk)`",
        ),
        (
            "return session.query(User).options(load_only(User.id)).get(pk)",
            "use `session.scalars(select(...))`",
            "rewrite as `session.get(User, pk)`",
        ),
    ],
)
def test_the_advice_fits_the_query(query: str, message_end: str, hint: str) -> None:
    run = run_example(LegacyQueryApi, Invalid(HEADER + "    " + query + "\n"))
    [finding] = run.findings
    assert finding.message.endswith(message_end)
    assert finding.fix_hint == hint


def test_a_call_broken_after_its_parenthesis_is_quoted_on_one_line() -> None:
    query = "return session.query(\n        User.id,\n        User.name\n    ).all()"
    run = run_example(LegacyQueryApi, Invalid(HEADER + "    " + query + "\n"))
    [finding] = run.findings
    assert finding.message.startswith("`session.query(User.id, User.name)` is the legacy")
