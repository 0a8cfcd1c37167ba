"""Sessions an uncaught exception left open: the program's close() never ran.

When the main script dies of an uncaught exception, the interpreter keeps it in
``sys.last_value`` (``sys.last_exc`` from Python 3.12) before the excepthook and the exit
handlers run, and its traceback keeps the unwound frames, with their variables, alive.
A session one of those frames holds (a local, ``self.session``, a module global, a
module-level ``scoped_session``) whose code closes it (``close``, ``remove``) was
left open by the crash, not by a leak: the line that closes it comes after the one that
raised. Reporting it at exit as "never closed" or "call commit()" would blame code that
does both.

Read only at exit, and only after such a crash. No attribute of the user's objects is
read through ``getattr``: instance dictionaries are read directly, and a
``scoped_session`` is asked only whether its registry holds a session.
"""

from __future__ import annotations

import sys
from types import FrameType, GetSetDescriptorType, ModuleType, TracebackType
from typing import Any

from sqla_doctor.runtime.async_sessions import sync_session

# Names whose presence in a frame's code says it ends its session's work itself.
_CLOSING_NAMES = frozenset({"close", "remove"})
_MAX_FRAMES = 200
_MAX_VALUES = 50_000
_MAX_CHAINED = 5


def fatal_exception() -> BaseException | None:
    """The uncaught exception the program is dying of, or None (also in a REPL, where a
    past exception did not end the program)."""
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return None
    raised = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if not isinstance(raised, BaseException) or isinstance(raised, SystemExit):
        return None
    return raised


def sessions_left_by_crash() -> set[int]:
    """Ids of the Sessions that frames the fatal exception unwound hold and would have
    closed: the crash, not a leak, kept them open."""
    raised = fatal_exception()
    if raised is None:
        return set()
    try:
        return _held(_unwound_frames(raised))
    except Exception:
        return set()


def _unwound_frames(raised: BaseException) -> list[FrameType]:
    frames: list[FrameType] = []
    seen: set[int] = set()
    error: BaseException | None = raised
    for _ in range(_MAX_CHAINED):
        if error is None or id(error) in seen:
            break
        seen.add(id(error))
        tb: TracebackType | None = error.__traceback__
        while tb is not None and len(frames) < _MAX_FRAMES:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        # An error raised while handling another (in an except or finally block) unwound
        # the frames of both.
        error = error.__cause__ or error.__context__
    return frames


def _held(frames: list[FrameType]) -> set[int]:
    from sqlalchemy.orm import Session, scoped_session

    found: set[int] = set()
    budget = [_MAX_VALUES]
    for frame in frames:
        if not _CLOSING_NAMES.intersection(frame.f_code.co_names):
            continue
        namespace = frame.f_globals if frame.f_code.co_name == "<module>" else frame.f_locals
        for value in list(namespace.values()):
            if budget[0] <= 0:
                return found
            try:
                _note(value, found, budget, Session, scoped_session)
                instance_dict = _instance_dict(value)
                if instance_dict is not None:
                    for inner in list(instance_dict.values())[:100]:
                        _note(inner, found, budget, Session, scoped_session)
            except Exception:
                continue
    return found


def _note(value: Any, found: set[int], budget: list[int], session_type: Any, scoped: Any) -> None:
    # By type(), never isinstance(): that reads ``__class__``, which a proxy (Flask's
    # current_app) resolves by running its code.
    budget[0] -= 1
    kind = type(value)
    if issubclass(kind, session_type):
        found.add(id(value))
        return
    session = sync_session(value)
    if session is not None:
        found.add(id(session))
        return
    registry = None
    if issubclass(kind, scoped):
        registry = value.registry
    elif "sqlalchemy.ext.asyncio" in sys.modules:
        from sqlalchemy.ext.asyncio import async_scoped_session

        if issubclass(kind, async_scoped_session):
            registry = value.registry
    if registry is not None and registry.has():
        current = registry()
        inner = sync_session(current)
        if inner is not None:
            current = inner
        if issubclass(type(current), session_type):
            found.add(id(current))


def _instance_dict(value: Any) -> dict[str, Any] | None:
    """An ordinary object's own attributes (``self.session``), read without running any
    of its code; None for modules, classes and objects with a ``__dict__`` of their own."""
    if issubclass(type(value), (type, ModuleType)):
        return None
    for klass in type(value).__mro__:
        descriptor = klass.__dict__.get("__dict__")
        if descriptor is not None:
            if type(descriptor) is not GetSetDescriptorType:
                return None
            found = object.__getattribute__(value, "__dict__")
            return found if type(found) is dict else None
    return None
