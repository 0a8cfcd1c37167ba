"""OpenTelemetry: span events and metrics, read back from the SDK's in-memory exporters."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

import sqla_doctor
from sqla_doctor.integrations import MissingDependency, require

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sqla_doctor.integrations.otel import EVENT_NAME, OpenTelemetryReporter

from .models import USERS, User
from .support import line_of


class Telemetry:
    """An SDK tracer provider and meter provider of the test's own; no global is set."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.tracer = self.tracer_provider.get_tracer("tests")
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def span(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans.get_finished_spans() if s.name == name]
        return span

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found = []
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric:
                        found.extend(item.data.data_points)
        return found

    def total(self, metric: str, **attributes: Any) -> float:
        return sum(
            point.value
            for point in self.points(metric)
            if all(point.attributes.get(k) == v for k, v in attributes.items())
        )


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.meter_provider.shutdown()
    telemetry.tracer_provider.shutdown()


def n_plus_one(engine: Engine) -> None:
    with Session(engine) as session:
        for user in session.scalars(select(User)).all():
            assert user.posts  # line:n+1


def test_a_unit_becomes_span_events_and_counters(engine: Engine, telemetry: Telemetry) -> None:
    reporter = OpenTelemetryReporter(meter_provider=telemetry.meter_provider)

    with telemetry.tracer.start_as_current_span("GET /users"):
        with sqla_doctor.track(mode="collect") as unit:
            n_plus_one(engine)
        reporter(unit, {"method": "GET", "route": "/users"})

    span = telemetry.span("GET /users")
    (event,) = span.events
    assert event.name == EVENT_NAME
    assert event.attributes is not None
    assert dict(event.attributes) == {
        "sqla_doctor.code": "SQD251",
        "sqla_doctor.name": "n-plus-one-lazy-load",
        "sqla_doctor.severity": "warning",
        "sqla_doctor.message": unit.findings[0].message,
        "code.file.path": unit.findings[0].location.path,
        "code.line.number": line_of("n+1"),
    }
    assert span.attributes is not None
    assert span.attributes["sqla_doctor.queries"] == 1 + USERS
    assert span.attributes["sqla_doctor.findings"] == 1
    route = {"http.request.method": "GET", "http.route": "/users"}
    assert telemetry.total("sqla_doctor.queries", **route) == 1 + USERS
    assert telemetry.total("sqla_doctor.findings", **{"sqla_doctor.code": "SQD251"}) == 1
    assert telemetry.total("sqla_doctor.lazy_loads", **route) == USERS


def test_bound_parameters_never_reach_the_span(engine: Engine, telemetry: Telemetry) -> None:
    reporter = OpenTelemetryReporter(meter_provider=telemetry.meter_provider)
    secret = "hunter2-secret-value"

    with telemetry.tracer.start_as_current_span("job"):
        with sqla_doctor.track(mode="collect") as unit, Session(engine) as session:
            for _ in range(6):
                session.execute(text("SELECT :secret"), {"secret": secret})
        reporter(unit)

    span = telemetry.span("job")
    assert [e.attributes["sqla_doctor.code"] for e in span.events if e.attributes] == ["SQD252"]
    assert secret not in repr(span.to_json())


async def test_asgi_requests_report_on_the_request_span(
    engine: Engine, telemetry: Telemetry
) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    from sqla_doctor.integrations.asgi import SqlaDoctorMiddleware

    def users(request: Request) -> PlainTextResponse:
        n_plus_one(engine)
        return PlainTextResponse("ok")

    reporter = OpenTelemetryReporter(meter_provider=telemetry.meter_provider)
    app: Any = Starlette(routes=[Route("/users", users)])
    app.add_middleware(SqlaDoctorMiddleware, on_unit=reporter)
    tracer = telemetry.tracer

    async def traced(scope: Any, receive: Any, send: Any) -> None:
        # What OpenTelemetry's ASGI instrumentation does: a server span around the app.
        with tracer.start_as_current_span(f"{scope['method']} {scope['path']}"):
            await app(scope, receive, send)

    transport = httpx.ASGITransport(app=traced)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/users")).text == "ok"

    span = telemetry.span("GET /users")
    assert [e.name for e in span.events] == [EVENT_NAME]
    assert telemetry.total("sqla_doctor.queries", **{"http.route": "/users"}) == 1 + USERS


def test_on_finding_reports_findings_of_install(engine: Engine, telemetry: Telemetry) -> None:
    reporter = OpenTelemetryReporter(meter_provider=telemetry.meter_provider)
    sqla_doctor.install(mode="collect", on_finding=reporter.on_finding)

    with telemetry.tracer.start_as_current_span("handler"):
        n_plus_one(engine)

    assert [e.name for e in telemetry.span("handler").events] == [EVENT_NAME]
    assert telemetry.total("sqla_doctor.lazy_loads") == USERS


def test_pool_saturation_is_observed(engine: Engine, telemetry: Telemetry) -> None:
    reporter = OpenTelemetryReporter(meter_provider=telemetry.meter_provider)
    reporter.observe_pool(engine, name="primary")
    size = engine.pool.size()  # type: ignore[attr-defined]

    with engine.connect(), engine.connect():
        (saturation,) = telemetry.points("sqla_doctor.pool.saturation")
        (checked_out,) = telemetry.points("sqla_doctor.pool.checked_out")
    assert saturation.attributes == {"db.client.connection.pool.name": "primary"}
    assert saturation.value == pytest.approx(2 / (size + 10))
    assert checked_out.value == 2
    (after,) = telemetry.points("sqla_doctor.pool.saturation")
    assert after.value == 0


def test_findings_of_a_request_whose_span_already_ended_go_to_a_child_span(
    engine: Engine, telemetry: Telemetry
) -> None:
    # FastAPI's own request span ends with the response, before the unit reports.
    reporter = OpenTelemetryReporter(
        meter_provider=telemetry.meter_provider, tracer_provider=telemetry.tracer_provider
    )
    request = telemetry.tracer.start_span("GET /users")
    with trace.use_span(request, end_on_exit=False):
        with sqla_doctor.track(mode="collect") as unit:
            n_plus_one(engine)
        request.end()
        reporter(unit, {"method": "GET", "route": "/users"})

    assert not telemetry.span("GET /users").events
    child = telemetry.span("sqla_doctor.unit_of_work")
    assert child.parent is not None
    assert child.parent.span_id == request.get_span_context().span_id
    assert [event.attributes["sqla_doctor.code"] for event in child.events] == ["SQD251"]
    assert child.attributes is not None
    assert child.attributes["sqla_doctor.findings"] == 1


def test_no_span_is_fine(engine: Engine, telemetry: Telemetry) -> None:
    reporter = OpenTelemetryReporter(meter_provider=telemetry.meter_provider)
    with sqla_doctor.track(mode="collect") as unit:
        n_plus_one(engine)

    reporter(unit)

    assert trace.get_current_span().is_recording() is False
    assert telemetry.total("sqla_doctor.queries") == 1 + USERS


def test_a_missing_extra_is_named() -> None:
    with pytest.raises(MissingDependency, match=r"pip install 'sqla-doctor\[otel\]'"):
        require("sqla_doctor_no_such_module", extra="otel", integration="otel")

    # Without opentelemetry at all, importing the integration says which extra to install.
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import sqla_doctor.integrations.otel\n"
        "except ImportError as error:\n"
        "    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "sqla_doctor.integrations.otel needs 'opentelemetry.trace'" in result.stdout
    assert "pip install 'sqla-doctor[otel]'" in result.stdout
