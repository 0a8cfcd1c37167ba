"""WSGI middleware (Flask, any WSGI app): one unit of work per HTTP request.

::

    from sqla_doctor.integrations.wsgi import SqlaDoctorMiddleware

    app.wsgi_app = SqlaDoctorMiddleware(app.wsgi_app)           # Flask: log each finding
    app.wsgi_app = SqlaDoctorMiddleware(app.wsgi_app, mode="raise", headers=True)  # dev

The unit of work begins when the server calls the application and ends when the server
has read the response's last chunk, or closes it before that (a client that went away):
a streamed body (a generator, ``stream_with_context``) is inside the unit to its last
chunk, and so is Flask's request teardown, which runs as the middleware closes the
application's iterable then, as PEP 3333 requires the server to do next. A test harness
that joins the chunks and never calls ``close()`` still gets the request's findings, and
so does a test that drops the response unread (``client.get("/").status_code``): the
unit ends as the response is garbage-collected.

``mode`` and ``on_unit`` are the ASGI middleware's: ``"log"`` (default) logs each
finding with the request's method and route, ``"raise"`` raises a ``PitfallError``,
``"warn"`` warns, ``"collect"`` only calls ``on_unit``. The route is Flask's URL rule,
read when the application calls ``start_response`` (Flask forgets the request before the
body is closed), else the path.

With ``headers=True`` or ``mode="raise"`` the middleware reads one chunk ahead before
answering: a body of one chunk (an ordinary response) is complete before the status line
is sent, so the ``x-sqla-doctor-queries`` / ``x-sqla-doctor-findings`` counts are exact
and raise mode can fail the request with a 500. A body of several chunks is streamed;
its first chunk waits for its second, and the headers count what happened until then.
Without those options nothing is held back.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol

from sqla_doctor.config import Config, RuntimeConfig
from sqla_doctor.integrations import UnitCallback
from sqla_doctor.integrations._unit import callback_error
from sqla_doctor.integrations._web import Request, Requests
from sqla_doctor.runtime.internal_errors import internal_error
from sqla_doctor.runtime.unit_of_work import current

__all__ = ["SqlaDoctorMiddleware", "route_of"]

Environ = dict[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
Write = Callable[[bytes], object]


class StartResponse(Protocol):
    def __call__(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | tuple[None, None, None] | None = ...,
        /,
    ) -> Write: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def route_of(environ: Mapping[str, Any]) -> str | None:
    """The URL rule Flask (Werkzeug) matched for this request, or None."""
    request = environ.get("werkzeug.request")
    rule = getattr(getattr(request, "url_rule", None), "rule", None)
    return rule if isinstance(rule, str) else None


class SqlaDoctorMiddleware:
    """Watch each request as one unit of work; see the module's documentation."""

    __slots__ = ("_requests", "_route", "app")

    def __init__(
        self,
        app: WSGIApp,
        *,
        mode: str = "log",
        headers: bool = False,
        on_unit: UnitCallback | Iterable[UnitCallback] | None = None,
        route: Callable[[Mapping[str, Any]], str | None] | None = None,
        config: Config | RuntimeConfig | None = None,
    ) -> None:
        self.app = app
        self._requests = Requests(mode=mode, headers=headers, on_unit=on_unit, config=config)
        self._route = route or route_of

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self._requests.nested():
            return self.app(environ, start_response)
        request = self._requests.start()
        if request is None:
            return self.app(environ, start_response)
        response = _Response(self, environ, start_response, request)
        try:
            body = self.app(environ, response.start_response)
        except BaseException as error:
            self._requests.finish(request, response.context(), error)
            raise
        response.body = body
        return response

    def context(self, environ: Mapping[str, Any]) -> dict[str, str]:
        context = {"method": str(environ.get("REQUEST_METHOD", ""))}
        try:
            route = self._route(environ)
        except Exception:
            if self._route is route_of:
                internal_error("the route of a request")
            else:
                callback_error("route function", self._route)
            route = None
        if route:
            context["route"] = route
        else:
            context["path"] = str(environ.get("SCRIPT_NAME", "")) + str(
                environ.get("PATH_INFO", "")
            )
        return context


class _Response:
    """The response iterable the server sees; reading it to its end, or closing it, ends
    the request's unit."""

    __slots__ = (
        "_context",
        "_environ",
        "_exc_info",
        "_headers",
        "_middleware",
        "_request",
        "_start_response",
        "_status",
        "_write",
        "body",
        "started",
    )

    def __init__(
        self,
        middleware: SqlaDoctorMiddleware,
        environ: Environ,
        start_response: StartResponse,
        request: Request,
    ) -> None:
        self._middleware = middleware
        self._environ = environ
        self._start_response = start_response
        self._request = request
        self._status: str | None = None
        self._headers: list[tuple[str, str]] = []
        self._exc_info: ExcInfo | tuple[None, None, None] | None = None
        self._write: Write | None = None
        self._context: dict[str, str] | None = None
        self.body: Iterable[bytes] = ()
        self.started = False

    @property
    def _requests(self) -> Requests:
        return self._middleware._requests

    # -- what the application calls ------------------------------------------------------

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | tuple[None, None, None] | None = None,
        /,
    ) -> Write:
        # The application is still handling the request: Flask pops it (and its URL
        # rule) before the body is closed.
        self._context = self._middleware.context(self._environ)
        if not self._requests.buffers:
            self.started = True
            if self._requests.headers:  # pragma: no cover - headers imply buffering
                headers = [*headers, *self._request.headers()]
            return self._forward(status, headers, exc_info)
        if exc_info is not None and exc_info[0] is not None and self.started:
            # PEP 3333: headers already sent, so the server must see the error.
            return self._forward(status, headers, exc_info)
        self._status, self._headers, self._exc_info = status, headers, exc_info
        return self._legacy_write

    def _forward(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | tuple[None, None, None] | None,
    ) -> Write:
        # Called as the application called us: a start_response written for two
        # arguments (a test harness's `lambda status, headers: ...`) takes no third.
        if exc_info is None:
            return self._start_response(status, headers)
        return self._start_response(status, headers, exc_info)

    def _legacy_write(self, data: bytes) -> None:
        # The pre-iterable write() API sends at once: headers first, with counts so far.
        self._send_status()
        if self._write is not None:
            self._write(data)

    # -- what the server calls -----------------------------------------------------------

    def __iter__(self) -> Iterator[bytes]:
        if not self._requests.buffers:
            try:
                yield from self.body
            except Exception as error:
                self._end(error)
                raise
            self._exhausted()
            return
        chunks: list[bytes] = []
        iterator = iter(self.body)
        streaming = False
        try:
            for chunk in iterator:
                chunks.append(chunk)
                if len(chunks) == 2:
                    streaming = True
                    break
        except Exception as error:
            self._end(error)
            raise
        if not streaming:
            # The whole body is here: end the unit before the status line goes out.
            deliberate = self._end()
            if deliberate is not None:
                raise deliberate
        self._send_status()
        yield from chunks
        if streaming:
            yield from iterator
            self._exhausted()

    def _exhausted(self) -> None:
        # The server read the last chunk. It should close the body next (PEP 3333), but a
        # harness that only joins the chunks never does, and the request's findings would
        # never be reported; closing it here does what that close() would, and the
        # server's own close() then finds the unit ended.
        deliberate = self._end()
        if deliberate is not None:
            raise deliberate

    def __del__(self) -> None:
        # A harness that takes the status and drops the response unread (Werkzeug's test
        # client pulls the first chunk, and `client.get("/").status_code` is all a test
        # looks at) neither reads the body to its end nor closes it: the request's unit
        # would never end, its findings never be reported, and every later request of
        # that context would look nested in it and go unwatched. Only in the request's own
        # context, where its unit is still the current one: the cyclic collector may run
        # this in any thread, and ending the unit from there would reset that thread's.
        try:
            request = getattr(self, "_request", None)
            if (
                request is not None
                and not request.finished
                and not sys.is_finalizing()
                and current.get() is request.unit
            ):
                self._end()
        except Exception:
            internal_error("the end of a request whose response was dropped unread")

    def _send_status(self) -> None:
        if self.started or self._status is None:
            return
        self.started = True
        headers = self._headers
        if self._requests.headers:
            headers = [*headers, *self._request.headers()]
        self._write = self._forward(self._status, headers, self._exc_info)

    def close(self) -> None:
        deliberate = self._end()
        if deliberate is not None:
            raise deliberate

    def _end(self, error: BaseException | None = None) -> BaseException | None:
        """Close the application's iterable, then end the unit (once)."""
        if self._request.finished:
            return None
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        except BaseException as raised:
            self._requests.finish(self._request, self.context(), error or raised)
            raise
        return self._requests.finish(self._request, self.context(), error)

    def context(self) -> dict[str, str]:
        if self._context is None or "route" not in self._context:
            self._context = self._middleware.context(self._environ)
        return self._context
