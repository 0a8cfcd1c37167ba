"""ASGI middleware (Starlette, FastAPI, any ASGI app): one unit of work per HTTP request.

::

    from sqla_doctor.integrations.asgi import SqlaDoctorMiddleware

    app.add_middleware(SqlaDoctorMiddleware)                     # log each finding
    app.add_middleware(SqlaDoctorMiddleware, mode="raise", headers=True)  # development

The unit of work spans the whole ASGI call: the endpoint, a streamed body to its last
chunk, and background tasks that run after the response. It is pure ASGI, not
``BaseHTTPMiddleware``, so streaming responses stream and each request, however
concurrent, is its own unit (its own task, its own ContextVar value).

``mode``:

- ``"log"`` (default): each finding is one record on the ``sqla_doctor`` logger, with the
  request's method and route in ``record.sqla_doctor["context"]`` and in the message.
- ``"raise"``: a ``PitfallError`` listing the findings. A response that is not streamed
  is held back until the unit ends, so the error replaces it (the framework's error page,
  the server's 500); a streamed response has left already, and the error is raised after
  its last chunk.
- ``"warn"``: Python warnings at the user's lines; ``"collect"``: nothing but
  ``on_unit``.

``headers=True`` adds ``x-sqla-doctor-queries`` and ``x-sqla-doctor-findings`` to the
response (development only: they tell any client how your code talks to the database). A
response that is not streamed is held back until the unit ends, so the counts are
exact. Headers go out before a streamed body: for a streaming response they count the
statements run and the findings reported until its first chunk.

``on_unit`` is called with each request's ``UnitOfWork`` and its context
(``{"method": "GET", "route": "/users/{user_id}"}``, or ``"path"`` instead of ``"route"``
when no route matched): the OpenTelemetry reporter plugs in here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from sqla_doctor.config import Config, RuntimeConfig
from sqla_doctor.integrations import UnitCallback
from sqla_doctor.integrations._unit import callback_error
from sqla_doctor.integrations._web import Request, Requests
from sqla_doctor.runtime.internal_errors import internal_error

__all__ = ["SqlaDoctorMiddleware", "route_of"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def route_of(scope: Scope) -> str | None:
    """The route template the router matched (Starlette, FastAPI), or None."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    # Inside a Mount the route's path is relative to it; the mount's prefix is what
    # root_path gained below the application's own root.
    root_path = scope.get("root_path", "")
    app_root_path = scope.get("app_root_path")
    if (
        isinstance(app_root_path, str)
        and isinstance(root_path, str)
        and root_path.startswith(app_root_path)
        and root_path != app_root_path
    ):
        return root_path[len(app_root_path) :] + template
    return template


class SqlaDoctorMiddleware:
    """Watch each HTTP request as one unit of work; see the module's documentation."""

    __slots__ = ("_requests", "_route", "app")

    def __init__(
        self,
        app: ASGIApp,
        *,
        mode: str = "log",
        headers: bool = False,
        on_unit: UnitCallback | Iterable[UnitCallback] | None = None,
        route: Callable[[Scope], str | None] | None = None,
        config: Config | RuntimeConfig | None = None,
    ) -> None:
        self.app = app
        self._requests = Requests(mode=mode, headers=headers, on_unit=on_unit, config=config)
        self._route = route or route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._requests.nested():
            await self.app(scope, receive, send)
            return
        request = self._requests.start()
        if request is None:
            await self.app(scope, receive, send)
            return
        response = _Response(send, request, self._requests.headers, self._requests.buffers)
        try:
            await self.app(scope, receive, response.send)
        except BaseException as error:
            self._requests.finish(request, self._context(scope), error)
            # A complete response held back before the application failed (in a
            # background task, say) is what the client would have had without us.
            await response.flush_complete()
            raise
        deliberate = self._requests.finish(request, self._context(scope))
        if deliberate is not None and not response.started:
            raise deliberate
        await response.flush()
        if deliberate is not None:
            raise deliberate

    def _context(self, scope: Scope) -> dict[str, str]:
        context = {"method": str(scope.get("method", ""))}
        try:
            route = self._route(scope)
        except Exception:
            if self._route is route_of:
                internal_error("the route of a request")
            else:
                callback_error("route function", self._route)
            route = None
        if route:
            context["route"] = route
        else:
            context["path"] = str(scope.get("path", ""))
        return context


class _Response:
    """The application's ``send``: passes messages on, or holds a complete response back.

    Held: ``http.response.start`` and a final body. The first body message with
    ``more_body`` (a stream) or any other message sends what was held and everything after.
    """

    __slots__ = ("_add_headers", "_buffers", "_held", "_request", "_send", "started")

    def __init__(self, send: Send, request: Request, add_headers: bool, buffers: bool) -> None:
        self._send = send
        self._request = request
        self._add_headers = add_headers
        self._buffers = buffers
        self._held: list[Message] = []
        self.started = False

    async def send(self, message: Message) -> None:
        if self._buffers and not self.started and self._holds(message):
            self._held.append(message)
            return
        await self._send_all([*self._held, message])

    def _holds(self, message: Message) -> bool:
        kind = message.get("type")
        if kind == "http.response.start":
            return True
        return kind == "http.response.body" and not message.get("more_body", False)

    async def flush(self) -> None:
        """Send what is held (the unit has ended: the counts are final)."""
        if self._held:
            await self._send_all(self._held)

    async def flush_complete(self) -> None:
        if len(self._held) == 2 and not self.started:
            try:
                await self._send_all(self._held)
            except Exception:
                internal_error("sending a held response")

    async def _send_all(self, messages: list[Message]) -> None:
        self._held = []
        for message in messages:
            if message.get("type") == "http.response.start" and not self.started:
                self.started = True
                if self._add_headers:
                    message = self._with_headers(message)
            await self._send(message)

    def _with_headers(self, message: Message) -> Message:
        try:
            extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self._request.headers()]
            return {**message, "headers": [*message.get("headers", ()), *extra]}
        except Exception:
            internal_error("adding the response headers")
            return message
