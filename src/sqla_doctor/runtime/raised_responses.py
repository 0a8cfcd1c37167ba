"""Whether an exception is a web framework's successful response, raised for control flow.

Falcon's redirects (``raise falcon.HTTPSeeOther(url)``), Bottle's ``redirect()`` (it
raises ``HTTPResponse``), Pyramid's ``raise HTTPFound(url)`` and CherryPy's
``HTTPRedirect`` are exceptions whose status is a 2xx or 3xx: the client gets a success.
A session that a ``with`` block or a plugin's ``finally`` rolls back or closes while one
passes loses the request's writes, unlike one left by an error, where dropping them is
what the error path means. Known by its class (a name in its MRO says HTTP or Redirect)
and its status; nothing is imported from any framework.
"""

from __future__ import annotations

import re
import sys
from types import FrameType
from typing import Any

from sqla_doctor.runtime.callsite import next_frame

# Where each framework keeps the status: Bottle and Falcon `status_code`, WebOb (Pyramid)
# `status_int` and `code`, CherryPy's HTTPRedirect `status`, Falcon also "303 See Other".
_STATUS_ATTRIBUTES = ("status_code", "status_int", "code", "status")
_STATUS_TEXT = re.compile(r"\d{3}\b")
# Frames walked up from a rollback or close in AsyncSession's greenlet to the __aexit__.
_MAX_FRAMES = 64


def passing_response() -> str | None:
    """The raised success response passing where a session is rolled back or closed
    (see raised_response()). Inside AsyncSession's greenlet the exception being handled
    is not visible: the one given to the ``__exit__`` or ``__aexit__`` above (``async
    with factory.begin()`` runs SessionTransaction's ``__exit__(self, type_, value,
    traceback)`` in it) is."""
    handled = sys.exc_info()[1]
    if handled is not None:
        return raised_response(handled)
    frame: FrameType | None = sys._getframe(1)
    greenlet: Any = None
    for _ in range(_MAX_FRAMES):
        if frame is None:
            break
        if frame.f_code.co_name in ("__exit__", "__aexit__"):
            value = frame.f_locals.get("value")
            if isinstance(value, BaseException):
                return raised_response(value)
        frame, greenlet = next_frame(frame, greenlet)
    return None


def raised_response(error: BaseException | None) -> str | None:
    """``"falcon's HTTPSeeOther (303)"`` when ``error`` is a response with a 2xx or 3xx
    status raised as an exception; None for anything else (an error response too)."""
    if error is None or not any(
        "HTTP" in cls.__name__ or "Redirect" in cls.__name__ for cls in type(error).__mro__
    ):
        return None
    status = _status(error)
    if status is None or not 200 <= status < 400:
        return None
    package = type(error).__module__.partition(".")[0]
    owner = "" if package == "__main__" else f"{package}'s "
    return f"{owner}{type(error).__name__} ({status})"


def _status(error: BaseException) -> int | None:
    for attribute in _STATUS_ATTRIBUTES:
        try:
            value = getattr(error, attribute, None)
        except Exception:  # a property of the framework's that needs its request
            continue
        if isinstance(value, str):
            match = _STATUS_TEXT.match(value)
            value = int(match.group()) if match else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None
