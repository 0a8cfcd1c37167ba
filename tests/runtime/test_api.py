"""track() and install(): units of work, modes, settings, suppressions, the guard."""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.config import Config, RuntimeConfig
from sqla_doctor.findings import Severity
from sqla_doctor.runtime.detector import Detector, OrmExecution
from sqla_doctor.runtime.listeners import statements, units
from sqla_doctor.runtime.modes import LoadingWarning, NPlusOneWarning, SqlaDoctorWarning
from sqla_doctor.runtime.unit_of_work import process

from .models import USERS, User
from .support import line_of, of_code, one, relative


def n_plus_one(engine: Engine) -> None:
    with Session(engine) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts  # line:n-plus-one


def test_track_returns_findings_and_query_count(engine: Engine) -> None:
    with sqla_doctor.track("listing", mode="collect") as uow:
        assert uow.active
        n_plus_one(engine)
    assert not uow.active
    assert uow.name == "listing"
    assert uow.query_count == 1 + USERS
    assert len(uow.statements) == 1 + USERS
    assert uow.duration is not None
    assert uow.duration > 0
    assert one(uow.findings, "SQD251").location.line == line_of("n-plus-one")


def test_track_as_a_decorator(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")

    @tracker
    def handler() -> str:
        n_plus_one(engine)
        return "done"

    assert handler() == "done"
    assert tracker.last is not None
    assert of_code(tracker.last.findings, "SQD251")
    assert handler() == "done"
    assert tracker.last.query_count == 1 + USERS, "each call is its own unit of work"


def test_bare_decorator_uses_the_configured_mode(engine: Engine) -> None:
    @sqla_doctor.track
    def handler() -> None:
        n_plus_one(engine)

    with pytest.warns(NPlusOneWarning):
        handler()


async def test_track_decorates_coroutines(async_engine: AsyncEngine) -> None:
    tracker = sqla_doctor.track(mode="collect")

    @tracker
    async def handler() -> int:
        async with AsyncSession(async_engine) as session:
            users = (await session.scalars(select(User))).all()
            return sum([len(await user.awaitable_attrs.posts) for user in users])

    assert await handler() == 2 * USERS
    assert tracker.last is not None
    assert of_code(tracker.last.findings, "SQD251")


def test_track_decorates_generators_for_their_whole_iteration(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")

    @tracker
    def rows() -> Iterator[str]:
        with Session(engine) as session:
            for user in session.scalars(select(User)).all():
                yield f"{user.name}:{len(user.posts)}"
        return "done"

    streamed = rows()
    assert tracker.last is None, "nothing runs before the first item is asked for"
    assert len(list(streamed)) == USERS
    assert tracker.last is not None
    assert tracker.last.query_count == 1 + USERS
    assert of_code(tracker.last.findings, "SQD251")


def test_a_generator_closed_early_ends_its_unit_without_an_error(engine: Engine) -> None:
    tracker = sqla_doctor.track(mode="collect")

    @tracker
    def rows() -> Iterator[int]:
        with Session(engine) as session:
            yield from session.scalars(select(User.id))

    streamed = rows()
    assert next(streamed) == 1
    streamed.close()
    assert tracker.last is not None
    assert tracker.last.query_count == 1
    assert sqla_doctor.current_unit() is None


async def test_track_decorates_async_generators(async_engine: AsyncEngine) -> None:
    tracker = sqla_doctor.track(mode="collect")

    @tracker
    async def rows(factor: int) -> AsyncIterator[int]:
        async with AsyncSession(async_engine) as session:
            async for user in await session.stream_scalars(select(User)):
                sent = yield factor * len(await user.awaitable_attrs.posts)
                if sent is not None:
                    factor = sent

    streamed = rows(1)
    assert await streamed.__anext__() == 2
    assert await streamed.asend(10) == 20, "values sent reach the generator"
    rest = [count async for count in streamed]
    assert rest == [20] * (USERS - 2)
    assert tracker.last is not None
    assert tracker.last.query_count == 1 + USERS
    assert of_code(tracker.last.findings, "SQD251")
    assert sqla_doctor.current_unit() is None


def test_nested_units_report_to_the_outer_one(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as outer:
        with sqla_doctor.track(mode="collect") as inner:
            n_plus_one(engine)
        with Session(engine) as session:
            session.get(User, 1)
    assert inner.query_count == 1 + USERS
    assert outer.query_count == 2 + USERS
    assert of_code(outer.findings, "SQD251") == of_code(inner.findings, "SQD251")


def test_warn_mode_points_the_warning_at_the_users_line(engine: Engine) -> None:
    with pytest.warns(NPlusOneWarning) as caught, sqla_doctor.track(mode="warn"):
        n_plus_one(engine)
    [warning] = caught.list
    assert warning.filename == __file__
    assert warning.lineno == line_of("n-plus-one")
    assert str(warning.message).startswith("SQD251 User.posts lazy-loaded")
    assert isinstance(warning.message, NPlusOneWarning)
    assert warning.message.finding is not None


def test_warning_categories_form_a_hierarchy() -> None:
    assert issubclass(NPlusOneWarning, LoadingWarning)
    assert issubclass(LoadingWarning, SqlaDoctorWarning)
    assert issubclass(SqlaDoctorWarning, UserWarning)


def test_warnings_filtered_into_errors_raise(engine: Engine) -> None:
    """What ``-W error::sqla_doctor.NPlusOneWarning`` does."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", NPlusOneWarning)
        with pytest.raises(NPlusOneWarning), sqla_doctor.track(mode="warn"):
            n_plus_one(engine)


def test_log_mode_writes_a_structured_record(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="sqla_doctor"), sqla_doctor.track(mode="log"):
        n_plus_one(engine)
    [record] = [r for r in caplog.records if hasattr(r, "sqla_doctor")]
    data: dict[str, Any] = record.sqla_doctor  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING
    assert data["code"] == "SQD251"
    assert data["path"] == relative(__file__)
    assert data["line"] == line_of("n-plus-one")
    assert data["details"]["relationship"] == "User.posts"


def test_raise_mode_raises_at_the_end_of_the_unit(engine: Engine) -> None:
    with pytest.raises(sqla_doctor.PitfallError) as raised, sqla_doctor.track(mode="raise"):
        n_plus_one(engine)
    assert [f.code for f in raised.value.findings] == ["SQD251"]
    assert "User.posts lazy-loaded" in str(raised.value)
    assert isinstance(raised.value, sqla_doctor.SqlaDoctorError)


def test_raise_mode_never_hides_the_applications_exception(engine: Engine) -> None:
    def failing_request() -> None:
        n_plus_one(engine)
        raise KeyError("the app's own error")

    with pytest.raises(KeyError) as raised, sqla_doctor.track(mode="raise"):
        failing_request()
    assert any("SQD251" in note for note in getattr(raised.value, "__notes__", []))


def test_collect_mode_emits_nothing(engine: Engine) -> None:
    """The suite runs with filterwarnings=error: a warning here would fail the test."""
    with sqla_doctor.track(mode="collect") as uow:
        n_plus_one(engine)
    assert uow.findings


def test_unknown_mode_is_refused_where_it_is_written() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        sqla_doctor.track(mode="shout")


def test_install_watches_code_outside_any_track(engine: Engine) -> None:
    """Each session is its own implicit unit of work, reported when its transaction ends."""
    sqla_doctor.install(mode="warn")
    with pytest.warns(NPlusOneWarning) as caught:
        n_plus_one(engine)
    assert caught.list[0].lineno == line_of("n-plus-one")
    assert [f.code for f in sqla_doctor.collected()] == ["SQD251"]


def test_install_counts_lazy_loads_per_session_not_per_process(engine: Engine) -> None:
    """One lazy load per request, over many requests, is not an N+1."""
    sqla_doctor.install(mode="collect")
    for user_id in range(1, USERS + 1):
        with Session(engine) as session:
            user = session.get(User, user_id)
            assert user is not None
            assert user.posts
    assert not sqla_doctor.collected()


def test_install_reads_the_projects_runtime_settings(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.sqla-doctor.runtime]\nmode = "collect"\nn-plus-one-threshold = 10\n'
    )
    monkeypatch.chdir(tmp_path)
    sqla_doctor.install()
    n_plus_one(engine)
    sqla_doctor.runtime.shutdown()
    assert not sqla_doctor.collected()


def test_ignore_turns_a_detector_off(engine: Engine) -> None:
    with sqla_doctor.track(config=RuntimeConfig(mode="collect", ignore=("SQD251",))) as uow:
        n_plus_one(engine)
    assert not uow.findings


def test_per_file_ignores_apply_to_runtime_findings(engine: Engine) -> None:
    config = Config(
        root=Path(__file__).resolve().parents[2],
        per_file_ignores={"tests/runtime/*": ("SQD2",)},
        runtime=RuntimeConfig(mode="collect"),
    )
    with sqla_doctor.track(config=config) as uow:
        n_plus_one(engine)
    assert not uow.findings


def test_allow_by_location(engine: Engine) -> None:
    allowed = f"{relative(__file__)}:{line_of('n-plus-one')}"
    with sqla_doctor.track(config=RuntimeConfig(mode="collect", allow=(allowed,))) as uow:
        n_plus_one(engine)
    assert not uow.findings


def test_bound_parameter_values_never_reach_findings(engine: Engine) -> None:
    with sqla_doctor.track(mode="collect") as uow, Session(engine) as session:
        for i in range(6):
            session.scalars(select(User).where(User.name == f"secret-{i}-value")).all()
        session.add(User(name="secret-added-value"))
        session.flush()
        session.close()
    assert {f.code for f in uow.findings} == {"SQD252", "SQD152"}
    assert "secret" not in repr(uow.findings)


class Exploding(Detector):
    """
    ## What it does
    Fails on every ORM execution, to prove the guard.

    ## Why is this bad?
    It is a test double.

    ## Example
    ```python
    pass
    ```
    """

    code = "SQD299"
    name = "exploding"
    pitfalls = ("P01",)
    severity = Severity.INFO
    message = "never"

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        raise RuntimeError("a bug in a detector")


def test_a_detector_that_raises_never_reaches_the_application(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = sqla_doctor.track(mode="collect")
    tracker._settings = replace(tracker.settings(), detectors=(Exploding,))
    with caplog.at_level(logging.WARNING, logger="sqla_doctor"), tracker as uow:
        n_plus_one(engine)
    assert uow.query_count == 1 + USERS
    assert process.internal_errors >= 1
    assert "internal error in do_orm_execute" in caplog.text
    process.internal_errors = 0


def test_uninstall_removes_every_listener(engine: Engine) -> None:
    sqla_doctor.install(mode="collect")
    assert event.contains(Session, "do_orm_execute", statements._on_do_orm_execute)
    sqla_doctor.uninstall()
    assert not event.contains(Session, "do_orm_execute", statements._on_do_orm_execute)
    assert not units._registered
    n_plus_one(engine)
    assert not sqla_doctor.collected()


def test_severity_of_each_detector_is_set() -> None:
    from sqla_doctor.findings import Kind
    from sqla_doctor.registry import registry

    runtime = registry().of_kind(Kind.RUNTIME)
    assert {c.code for c in runtime} >= {
        "SQD151",
        "SQD152",
        "SQD153",
        "SQD154",
        "SQD251",
        "SQD252",
        "SQD253",
        "SQD351",
    }
    for check in runtime:
        assert issubclass(check, Detector)
        assert check.doc().sections.get("References"), check.code
        assert "Use instead:" in check.doc().sections["Example"], check.code


def test_reaching_max_findings_is_said_once(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    # A cap must not look like a clean run: the findings past it are said to be dropped.
    capped = RuntimeConfig(mode="collect", max_findings=1)
    with sqla_doctor.track("capped", config=capped) as uow, Session(engine) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts  # SQD251
        for i in range(1, 8):
            session.get(User, i)  # SQD252 if kept
            session.expire_all()
    assert len(uow.findings) == 1
    warnings_ = [r.getMessage() for r in caplog.records if r.name == "sqla_doctor"]
    assert warnings_ == [
        "sqla-doctor: capped kept max-findings = 1 findings; the others are not reported"
    ]
