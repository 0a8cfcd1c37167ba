"""What the ASGI and WSGI middleware share: one unit of work per request, and its end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from contextvars import ContextVar, Token

from sqla_doctor.config import Config, RuntimeConfig
from sqla_doctor.integrations import UnitCallback
from sqla_doctor.integrations._unit import Units, callback_error, callbacks
from sqla_doctor.integrations.logging import log_findings
from sqla_doctor.runtime import PitfallError, SqlaDoctorWarning, Tracker, UnitOfWork
from sqla_doctor.runtime.internal_errors import internal_error
from sqla_doctor.runtime.unit_of_work import Settings

MODES = ("log", "warn", "raise", "collect")
HEADER_QUERIES = "x-sqla-doctor-queries"
HEADER_FINDINGS = "x-sqla-doctor-findings"

# Set while a request is watched, so that a middleware nested in another (a mounted
# sub-application, the same middleware added twice) does not start a second unit.
_in_request: ContextVar[bool] = ContextVar("sqla_doctor_in_request", default=False)


class Request:
    """One watched request: its tracker, its unit of work and the guard's token."""

    __slots__ = ("finished", "token", "tracker", "unit")

    def __init__(self, tracker: Tracker, unit: UnitOfWork, token: Token[bool]) -> None:
        self.tracker = tracker
        self.unit = unit
        self.token = token
        self.finished = False

    def headers(self) -> list[tuple[str, str]]:
        """The dev headers: statements run and findings reported so far."""
        return [
            (HEADER_QUERIES, str(self.unit.query_count)),
            (HEADER_FINDINGS, str(len(self.unit.findings))),
        ]


class Requests:
    """Starts and ends the units of work of one middleware's requests."""

    __slots__ = ("_late", "buffers", "headers", "mode", "on_unit", "units")

    def __init__(
        self,
        *,
        mode: str,
        headers: bool,
        on_unit: UnitCallback | Iterable[UnitCallback] | None,
        config: Config | RuntimeConfig | None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.headers = headers
        # Holding a complete response back until the unit ends gives exact header
        # counts, and lets raise mode fail the request before anything was sent.
        self.buffers = headers or mode == "raise"
        # In log mode the middleware writes the records itself, with the request.
        self.units = Units("collect" if mode == "log" else mode, config)
        self.on_unit = callbacks(on_unit)
        self._late: tuple[Settings, Settings] | None = None

    @staticmethod
    def nested() -> bool:
        return _in_request.get()

    def start(self) -> Request | None:
        try:
            tracker = self.units.tracker("request")
            unit = tracker.start()
            if self.mode == "log":
                unit.late_settings = self._logging(unit.settings)
        except Exception:
            internal_error("the start of a request")
            return None
        return Request(tracker, unit, _in_request.set(True))

    def _logging(self, settings: Settings) -> Settings:
        """The request's settings in log mode: what a leaked session reports after its
        request ended is logged, as the request's own findings were."""
        late = self._late
        if late is None or late[0] is not settings:
            late = self._late = (settings, settings.with_overrides(mode="log"))
        return late[1]

    def finish(
        self, request: Request, context: Mapping[str, str], error: BaseException | None = None
    ) -> BaseException | None:
        """End the request's unit; in raise mode, the ``PitfallError`` for the caller to raise."""
        if request.finished:
            return None
        request.finished = True
        deliberate: BaseException | None = None
        try:
            request.tracker.stop(error)
        except (PitfallError, SqlaDoctorWarning) as raised:
            # Raise mode, or a warning the user's filters turned into an error.
            deliberate = raised
        except Exception:
            internal_error("the end of a request")
        finally:
            # Ended in another context than it began in (a server that closes the
            # response from another thread): that context never saw the guard.
            with contextlib.suppress(ValueError):
                _in_request.reset(request.token)
        if self.mode == "log":
            try:
                log_findings(request.unit.findings, context)
            except Exception:
                internal_error("logging a request's findings")
        for callback in self.on_unit:
            try:
                callback(request.unit, context)
            except Exception:
                callback_error("on_unit callback", callback)
        return deliberate
