"""Bound parameter values and rendered literals never reach any output unless opted in.

Real programs on real SQLite: an N+1 whose lazy loads bind a secret, the same statement
run again with it, a statement with it rendered inline (``literal_execute``), a flush that
fails with an IntegrityError whose message quotes it, a pending object's key read, a
forgotten commit. Each surface a finding reaches is read back: the five report formats,
the Python warning, the ``PitfallError``, the log record, the OpenTelemetry span and
metrics, ``sqla-doctor run``'s files and output, and the pytest plugin's terminal output.

``show-parameters = true`` is the one opt-in: it adds an example parameter set and the
unredacted SQL to a finding's ``details``, which the JSON report and the log record carry.
The text, SARIF, GitHub and HTML reports and OpenTelemetry never show ``details``, so they
never show parameters, opted in or not.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

import sqla_doctor
from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Finding
from sqla_doctor.report import FORMATS, ReportContext, render
from sqla_doctor.runtime.unit_of_work import process

from . import secret_app

APP_SOURCE = Path(secret_app.__file__).read_text(encoding="utf-8")


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setattr(secret_app, "SECRET", value)
    monkeypatch.setenv("SQLA_DOCTOR_TEST_SECRET", value)
    return value


@pytest.fixture(autouse=True)
def _doctor_left_as_found() -> Iterator[None]:
    yield
    sqla_doctor.uninstall()
    process.reset_collected()


def run_app(config: RuntimeConfig) -> list[Finding]:
    engine = secret_app.make_engine()
    try:
        with sqla_doctor.track(config=config) as unit:
            secret_app.main(engine)
    finally:
        engine.dispose()
    assert {f.code for f in unit.findings} >= secret_app.EXPECTED_CODES
    return unit.findings


def rendered(findings: list[Finding], root: Path) -> dict[str, str]:
    context = ReportContext(root=str(root), command="run")
    return {fmt: render(fmt, findings, context) for fmt in FORMATS}


def test_no_report_format_shows_a_bound_or_literal_value(secret: str, tmp_path: Path) -> None:
    findings = run_app(RuntimeConfig(mode="collect"))
    for fmt, text in rendered(findings, tmp_path).items():
        assert secret not in text, fmt
    # The Finding objects themselves (what on_finding callbacks and uow.findings hand out).
    assert secret not in repr(findings)


def test_literal_rendered_sql_is_redacted_not_dropped(secret: str) -> None:
    findings = run_app(RuntimeConfig(mode="collect"))
    statements = [str(f.details.get("statement", "")) for f in findings if f.code == "SQD252"]
    inline = [s for s in statements if "token = '?'" in s]
    assert inline, statements  # the literal_execute statement, its value masked
    assert all(secret not in s for s in statements)


def test_show_parameters_puts_values_in_details_only(secret: str, tmp_path: Path) -> None:
    findings = run_app(RuntimeConfig(mode="collect", show_parameters=True))
    reports = rendered(findings, tmp_path)
    document = json.loads(reports["json"])
    repeated = [f["details"] for f in document["findings"] if f["code"] == "SQD252"]
    assert any(secret in str(d.get("parameters", "")) for d in repeated)
    assert any(f"'{secret}-1'" in str(d.get("statement", "")) for d in repeated)
    # Formats without `details` have no opt-in: they never show parameters.
    for fmt in ("text", "sarif", "github", "html"):
        assert secret not in reports[fmt], fmt


def test_warn_mode_warnings_carry_no_value(secret: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        findings = run_app(RuntimeConfig(mode="warn"))
    assert len(caught) >= len(secret_app.EXPECTED_CODES)
    assert findings
    for warning in caught:
        assert secret not in str(warning.message)


def test_raise_mode_error_carries_no_value(secret: str) -> None:
    engine = secret_app.make_engine()
    with pytest.raises(sqla_doctor.PitfallError) as raised, sqla_doctor.track(mode="raise"):
        secret_app.main(engine)
    engine.dispose()
    text = str(raised.value) + "".join(getattr(raised.value, "__notes__", ()))
    assert "SQD251" in text
    assert secret not in text


def test_install_log_mode_records_carry_no_value(
    secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqla_doctor")
    sqla_doctor.install(mode="log", config=RuntimeConfig(mode="log"))
    secret_app.main()
    sqla_doctor.uninstall()
    records = [r for r in caplog.records if hasattr(r, "sqla_doctor")]
    assert {r.sqla_doctor["code"] for r in records} >= secret_app.EXPECTED_CODES
    for record in records:
        assert secret not in record.getMessage()
        assert secret not in json.dumps(record.sqla_doctor, default=str)


def test_log_records_carry_values_when_opted_in(
    secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sqla_doctor")
    run_app(RuntimeConfig(mode="log", show_parameters=True))
    payloads = [
        json.dumps(r.sqla_doctor, default=str) for r in caplog.records if hasattr(r, "sqla_doctor")
    ]
    assert any(secret in p for p in payloads)  # details.parameters, as documented
    messages = [r.getMessage() for r in caplog.records]
    assert all(secret not in m for m in messages)


def test_open_telemetry_spans_and_metrics_carry_no_value(secret: str) -> None:
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from sqla_doctor.integrations.otel import OpenTelemetryReporter

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    reporter = OpenTelemetryReporter(meter_provider=meter_provider)
    try:
        for show in (False, True):  # no opt-in path: never, whatever the setting
            with tracer_provider.get_tracer("tests").start_as_current_span("job"):
                findings = run_app(RuntimeConfig(mode="collect", show_parameters=show))
                for finding in findings:
                    reporter.on_finding(finding)
        exported = [s.to_json() for s in spans.get_finished_spans()]
        assert sum(json.loads(s)["events"] != [] for s in exported) == 2
        metrics = reader.get_metrics_data()
        assert metrics is not None
        for text in (*exported, metrics.to_json()):
            assert secret not in text
    finally:
        meter_provider.shutdown()
        tracer_provider.shutdown()


# -- `sqla-doctor run -- python app.py`: the real CLI in a subprocess ----------------------


def sqla_doctor_cli() -> list[str]:
    script = shutil.which("sqla-doctor", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "sqla_doctor"]


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP_SOURCE, encoding="utf-8")
    return tmp_path


def cli_run(app_dir: Path, fmt: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    out = app_dir / f"report.{fmt}"
    proc = subprocess.run(
        [
            *sqla_doctor_cli(),
            "run",
            "--format",
            fmt,
            "-o",
            str(out),
            "--",
            sys.executable,
            "app.py",
        ],
        cwd=app_dir,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return out.read_text(encoding="utf-8"), proc


@pytest.mark.parametrize("fmt", ["json", "html", "text"])
def test_sqla_doctor_run_reports_carry_no_value(secret: str, app_dir: Path, fmt: str) -> None:
    report, proc = cli_run(app_dir, fmt)
    for code in secret_app.EXPECTED_CODES:
        assert code in report
    if fmt == "html":
        assert "Statements" in report  # the statement table, literal SQL included
        assert "token = &#x27;?&#x27;" in report
    assert secret not in report
    assert secret not in proc.stdout + proc.stderr


LITERAL_APP = """
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class Parent(Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str]
    children: Mapped[list["Child"]] = relationship()

class Child(Base):
    __tablename__ = "children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("parents.id"))

engine = create_engine("sqlite://", connect_args={"check_same_thread": False})
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add_all(Parent(token="SECRET", children=[Child()]) for _ in range(3))
    session.commit()
    for parent in session.scalars(select(Parent).where(Parent.token == "SECRET")):
        print(len(parent.children), {"token": "SECRET"}["token"] == parent.token)
"""


def test_html_excerpts_of_runtime_findings_mask_the_literals_near_them(
    secret: str, tmp_path: Path
) -> None:
    # A secret typed into the program itself, on the lines around the N+1.
    (tmp_path / "app.py").write_text(LITERAL_APP.replace("SECRET", secret), encoding="utf-8")
    report, _ = cli_run(tmp_path, "html")
    assert "SQD251" in report
    assert 'class="excerpt"' in report
    assert secret not in report


def test_sqla_doctor_run_show_parameters_from_pyproject(secret: str, app_dir: Path) -> None:
    (app_dir / "pyproject.toml").write_text(
        "[tool.sqla-doctor.runtime]\nshow-parameters = true\n", encoding="utf-8"
    )
    report, proc = cli_run(app_dir, "json")
    details = [f["details"] for f in json.loads(report)["findings"] if f["code"] == "SQD252"]
    assert any(secret in str(d.get("parameters", "")) for d in details)
    assert secret not in proc.stdout + proc.stderr


# -- the pytest plugin, from outside -------------------------------------------------------

PYTEST_TESTS = """
import contextlib

from sqlalchemy import literal, select

import app
from app import Account


def test_every_pitfall(engine):
    app.main(engine)


def test_query_budget(engine, sqla_assert_num_queries):
    from sqlalchemy.orm import Session

    with sqla_assert_num_queries(1), Session(engine) as session:
        for n in range(3):
            value = literal(f"{app.SECRET}-{n}", literal_execute=True)
            session.scalars(select(Account).where(Account.token == value)).all()
"""

PYTEST_CONFTEST = """
import pytest

import app


@pytest.fixture
def engine():
    engine = app.make_engine()
    yield engine
    engine.dispose()
"""


@pytest.mark.parametrize("verbosity", ["-q", "-vv"])
def test_pytest_plugin_output_carries_no_value(
    secret: str, pytester: pytest.Pytester, verbosity: str
) -> None:
    pytester.makepyfile(app=APP_SOURCE, conftest=PYTEST_CONFTEST, test_app=PYTEST_TESTS)
    result = pytester.runpytest_subprocess("--sqla-doctor", verbosity, "-rA")
    result.assert_outcomes(failed=2)
    output = result.stdout.str() + result.stderr.str()
    for code in secret_app.EXPECTED_CODES:
        assert code in output
    assert "Expected to perform 1 queries but 3 were done" in output
    if verbosity == "-vv":
        assert "token = '?'" in output  # the queries are listed, their values masked
    assert secret not in output


def test_secret_is_in_no_source_the_outputs_could_quote() -> None:
    """The checks above mean something only if the value never appears in code."""
    assert "s3cr3t" not in APP_SOURCE
    assert os.environ.get("SQLA_DOCTOR_TEST_SECRET") is None
    assert textwrap.dedent(PYTEST_TESTS).count("SECRET") == 1
