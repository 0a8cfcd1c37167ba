"""OpenTelemetry: findings as span events, and metrics a fleet of services can be watched by.

Needs the ``otel`` extra (``pip install 'sqla-doctor[otel]'``, which brings
``opentelemetry-api``); the application brings the SDK and its exporters. Nothing here
sets a global provider.

::

    from sqla_doctor.integrations.asgi import SqlaDoctorMiddleware
    from sqla_doctor.integrations.otel import OpenTelemetryReporter

    otel = OpenTelemetryReporter()
    otel.observe_pool(engine, name="primary")
    app.add_middleware(SqlaDoctorMiddleware, on_unit=otel)

A reporter is an ``on_unit`` callback: at the end of each unit of work (a request, a
test, a ``track()`` block passed to ``otel(unit)``) it

- adds one ``sqla_doctor.finding`` event per finding to the *current* span (the request's
  server span, when the OpenTelemetry instrumentation runs outside the middleware),
  with the attributes ``sqla_doctor.code``, ``sqla_doctor.name``, ``sqla_doctor.severity``,
  ``sqla_doctor.message``, ``code.file.path`` and ``code.line.number``; never bound
  parameter values nor the finding's details;
- sets ``sqla_doctor.queries`` and ``sqla_doctor.findings`` on that span;
- adds to the counters ``sqla_doctor.queries`` (statements sent to the database),
  ``sqla_doctor.findings`` (by code, name and severity) and ``sqla_doctor.lazy_loads``
  (lazy loads that formed an N+1: SQD251 relationships, SQD253 attributes), with the
  request's ``http.request.method`` and ``http.route`` when there is one.

``observe_pool(engine)`` reports ``sqla_doctor.pool.saturation`` (checked-out connections
over what the pool may open, ``pool_size + max_overflow``) and
``sqla_doctor.pool.checked_out`` for a ``QueuePool``, whenever the SDK collects.

Without a unit of work, after ``sqla_doctor.install(on_finding=otel.on_finding)``, each
finding still becomes a span event and a count; use one way or the other, not both.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sqla_doctor.integrations import require

require("opentelemetry.trace", extra="otel", integration="otel")
require("opentelemetry.metrics", extra="otel", integration="otel")

from opentelemetry import metrics, trace  # noqa: E402 - after the guard that names the extra
from opentelemetry.metrics import CallbackOptions, Observation  # noqa: E402

if TYPE_CHECKING:
    from sqla_doctor.findings import Finding
    from sqla_doctor.runtime import UnitOfWork

__all__ = ["EVENT_NAME", "OpenTelemetryReporter"]

EVENT_NAME = "sqla_doctor.finding"
_SCOPE = "sqla_doctor"


def finding_attributes(finding: Finding) -> dict[str, str | int]:
    """A finding as span-event attributes: what and where, never parameters or details."""
    return {
        "sqla_doctor.code": finding.code,
        "sqla_doctor.name": finding.name,
        "sqla_doctor.severity": finding.severity.value,
        "sqla_doctor.message": finding.message,
        "code.file.path": finding.location.path,
        "code.line.number": finding.location.line,
    }


def _request_attributes(context: Mapping[str, str]) -> dict[str, str]:
    # Only the route template: a raw path would give each URL its own time series.
    attributes = {}
    if context.get("method"):
        attributes["http.request.method"] = context["method"]
    if context.get("route"):
        attributes["http.route"] = context["route"]
    return attributes


class _Pool:
    __slots__ = ("name", "ref")

    def __init__(self, pool: Any, name: str) -> None:
        self.ref = weakref.ref(pool)
        self.name = name


class OpenTelemetryReporter:
    """Span events and metrics for units of work; see the module's documentation."""

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        from sqla_doctor import __version__

        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        if meter_provider is None:
            meter = metrics.get_meter(_SCOPE, __version__)
        else:
            meter = meter_provider.get_meter(_SCOPE, __version__)
        self._queries = meter.create_counter(
            "sqla_doctor.queries",
            unit="{statement}",
            description="Statements sent to the database, per unit of work's context",
        )
        self._findings = meter.create_counter(
            "sqla_doctor.findings",
            unit="{finding}",
            description="Pitfalls the runtime doctor found, by rule",
        )
        self._lazy_loads = meter.create_counter(
            "sqla_doctor.lazy_loads",
            unit="{load}",
            description="Lazy loads that formed an N+1 (SQD251 relationships, SQD253 attributes)",
        )
        self._pools: list[_Pool] = []
        self._pools_lock = threading.Lock()
        meter.create_observable_gauge(
            "sqla_doctor.pool.saturation",
            callbacks=[self._observe_saturation],
            unit="1",
            description="Checked-out connections over pool_size + max_overflow",
        )
        meter.create_observable_gauge(
            "sqla_doctor.pool.checked_out",
            callbacks=[self._observe_checked_out],
            unit="{connection}",
            description="Connections checked out of the pool",
        )

    # -- units of work and findings ------------------------------------------------------

    def __call__(self, unit: UnitOfWork, context: Mapping[str, str] | None = None) -> None:
        """Report a unit of work that ended (the ``on_unit`` callback of the middleware)."""
        attributes = _request_attributes(context or {})
        span = trace.get_current_span()
        findings = list(unit.findings)
        own: trace.Span | None = None
        if not span.is_recording() and span.get_span_context().is_valid:
            # The request's span ended before the unit did (FastAPI's own span ends with
            # the response): a short child span of it carries the findings instead.
            own = span = self._tracer.start_span(
                "sqla_doctor.unit_of_work", context=trace.set_span_in_context(span)
            )
        try:
            for finding in findings:
                span.add_event(EVENT_NAME, finding_attributes(finding))
                self._count(finding, attributes)
            if span.is_recording():
                span.set_attribute("sqla_doctor.queries", unit.query_count)
                span.set_attribute("sqla_doctor.findings", len(findings))
        finally:
            if own is not None:
                own.end()
        if unit.query_count:
            self._queries.add(unit.query_count, attributes)

    def on_finding(self, finding: Finding) -> None:
        """Report one finding as it is found: ``install(on_finding=reporter.on_finding)``."""
        trace.get_current_span().add_event(EVENT_NAME, finding_attributes(finding))
        self._count(finding, {})

    def _count(self, finding: Finding, attributes: Mapping[str, str]) -> None:
        rule = {
            "sqla_doctor.code": finding.code,
            "sqla_doctor.name": finding.name,
            "sqla_doctor.severity": finding.severity.value,
            **attributes,
        }
        self._findings.add(1, rule)
        loads = finding.details.get("loads")
        if isinstance(loads, int) and not isinstance(loads, bool) and loads > 0:
            self._lazy_loads.add(loads, {"sqla_doctor.code": finding.code, **attributes})

    # -- pools ---------------------------------------------------------------------------

    def observe_pool(self, engine: Any, *, name: str | None = None) -> None:
        """Report an engine's pool (``Engine`` or ``AsyncEngine``) while the engine lives."""
        sync_engine = getattr(engine, "sync_engine", engine)
        pool = sync_engine.pool
        if name is None:
            name = sync_engine.url.render_as_string(hide_password=True)
        with self._pools_lock:
            self._pools.append(_Pool(pool, name))

    def _live_pools(self) -> Iterator[tuple[Any, str]]:
        with self._pools_lock:
            self._pools = [p for p in self._pools if p.ref() is not None]
            pools = [(p.ref(), p.name) for p in self._pools]
        for pool, name in pools:
            # Only a QueuePool has a size to saturate; NullPool and StaticPool do not.
            if pool is not None and callable(getattr(pool, "checkedout", None)):
                yield pool, name

    def _observe_saturation(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for pool, name in self._live_pools():
            size = pool.size()
            # QueuePool keeps max_overflow private; -1 means no limit.
            overflow = getattr(pool, "_max_overflow", 0)
            capacity = size + overflow if overflow >= 0 else size
            if capacity > 0:
                ratio = pool.checkedout() / capacity
                observations.append(Observation(ratio, {"db.client.connection.pool.name": name}))
        return observations

    def _observe_checked_out(self, options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(pool.checkedout(), {"db.client.connection.pool.name": name})
            for pool, name in self._live_pools()
        ]
