"""Findings as structured records on the ``sqla_doctor`` logger, with their context."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.integrations.logging import LOGGER_NAME, log_context, log_finding

from .models import USERS, User
from .support import line_of


def n_plus_one(engine: Engine) -> None:
    with Session(engine) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts  # line:n+1


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER_NAME and hasattr(r, "sqla_doctor")]


@pytest.fixture(autouse=True)
def _capture(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)


def test_log_mode_records_carry_the_context_of_their_block(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with log_context(job="nightly-sync"), sqla_doctor.track(mode="log"):
        n_plus_one(engine)

    (record,) = records(caplog)
    assert record.levelno == logging.WARNING
    assert record.sqla_doctor["code"] == "SQD251"
    assert record.sqla_doctor["line"] == line_of("n+1")
    assert record.sqla_doctor["details"]["loads"] == USERS
    assert record.sqla_doctor["context"] == {"job": "nightly-sync"}
    assert record.getMessage().startswith("nightly-sync: ")
    assert f"SQD251 User.posts lazy-loaded {USERS}×" in record.getMessage()


def test_without_a_context_the_runtimes_record_is_unchanged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with sqla_doctor.track(mode="collect") as unit:
        n_plus_one(engine)

    log_finding(unit.findings[0])

    (record,) = records(caplog)
    assert "context" not in record.sqla_doctor
    assert record.getMessage().startswith(unit.findings[0].location.path)


def test_contexts_nest_and_percent_signs_are_text(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with sqla_doctor.track(mode="collect") as unit:
        n_plus_one(engine)

    with log_context(method="GET"):
        log_finding(unit.findings[0], {"route": "/100%/{id}"})

    (record,) = records(caplog)
    assert record.sqla_doctor["context"] == {"method": "GET", "route": "/100%/{id}"}
    assert record.getMessage().startswith("GET /100%/{id}: ")


def test_other_records_of_the_logger_are_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    with log_context(job="x"):
        logging.getLogger(LOGGER_NAME).warning("plain %s", "message")

    (record,) = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert record.getMessage() == "plain message"
