"""Sessions opened one per call by a helper that a loop calls once per item.

Outside ``track()`` each Session is its own implicit unit of work, so that a server's
requests are not counted together; but then ``def name_of(uid): with Session(engine) as
s: return s.get(User, uid).name``, called for each id of a list, runs its SELECT once in
each of fifteen units and no unit sees it repeat. Sessions whose first event comes from
a function of the program called by another of its frames (the loop) get, as the parent
of their implicit unit, one unit per live loop frame: the repeat-counting detectors that
look across sessions (SQD252) count there.

The loop frame is told apart from a later frame at the same address (a request
handler's, after the previous request's returned) by a marker in its ``f_trace``: the
frame holds the marker and its unit, so both die with the frame, and the doctor never
keeps a frame alive. ``f_trace`` is only read by a Python trace function; none may be
set (a debugger, coverage's tracer) and one already in the frame is never replaced.
"""

from __future__ import annotations

import sys
import time
from types import FrameType
from typing import Any, ClassVar, Final

from sqla_doctor.runtime.callsite import USER, classify, next_frame
from sqla_doctor.runtime.internal_errors import internal_error
from sqla_doctor.runtime.unit_of_work import _ENDED, Settings, UnitOfWork

# Frames walked from a listener to the innermost frame of the program, at most.
_MAX_FRAMES: Final = 96
# A loop over a list calls its helper back to back; a consumer waiting on a queue or a
# socket between calls is not iterating over items it already has: after a pause this
# long between one session's end and the next one's start, counting starts again.
LOOP_PAUSE_SECONDS: Final = 1.0
# The detectors that count across the sessions of one loop (by code): SQD251 and SQD253
# would tell a query that loads one object per session to eager-load for many.
_ACROSS_SESSIONS: Final = frozenset({"SQD252"})
_settings_for_loops: dict[int, tuple[Settings, Settings]] = {}


class LoopUnit(UnitOfWork):
    """The unit of one loop frame's sessions: only detectors that count across them."""

    across_sessions: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "loop", explicit=False)
        # A session of the loop wrote: per-item work in a transaction of its own (an
        # import committing row by row, a job handler), not a lookup to batch.
        self.wrote = False
        self.last_end: float | None = None

    def checkpoint(self) -> None:
        if self.active and not self.wrote:
            super().checkpoint()

    def session_ended(self, wrote: bool) -> None:
        self.wrote = self.wrote or wrote
        self.last_end = time.perf_counter()

    def drop(self) -> None:
        """Its loop is over: each session's end reported what it could already. Its
        detectors refer back to it; without them it goes by reference counting."""
        with self.lock:
            self.active = False
            self._detectors = []
            self.handlers = _ENDED


class _LoopMarker:
    """Kept in the loop frame's ``f_trace``: dies with the frame, and its unit with it.

    Called only if a Python trace function is set after it was placed; it then asks for
    no events, and stays the frame's marker."""

    __slots__ = ("unit",)

    def __init__(self, unit: LoopUnit) -> None:
        self.unit = unit

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        return None

    def __del__(self) -> None:
        # The frame is being freed: nothing of it is running any more.
        try:
            self.unit.drop()
        except Exception:
            internal_error("end of a loop's sessions")


def _loop_settings(settings: Settings) -> Settings:
    known = _settings_for_loops.get(id(settings))
    if known is not None and known[0] is settings:
        return known[1]
    detectors = tuple(d for d in settings.detectors if d.code in _ACROSS_SESSIONS)
    derived = Settings(
        mode=settings.mode,
        runtime=settings.runtime,
        root=settings.root,
        detectors=detectors,
        per_file_ignores=settings.per_file_ignores,
        allow=settings.allow,
    )
    if len(_settings_for_loops) >= 8:
        _settings_for_loops.clear()
    _settings_for_loops[id(settings)] = (settings, derived)
    return derived


def _loop_frame() -> FrameType | None:
    """The frame of the program that called the function the program runs now, when
    both are the program's own (not a framework's dispatch, not the event loop)."""
    frame: FrameType | None = sys._getframe(1)
    greenlet: Any = None
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        if classify(frame.f_code.co_filename) == USER:
            break
        # An AsyncSession's statements run in a greenlet: its parent awaits them.
        frame, greenlet = next_frame(frame, greenlet)
    else:
        return None
    if frame.f_code.co_name == "<module>":
        return None
    loop = frame.f_back
    if loop is None or classify(loop.f_code.co_filename) != USER:
        return None
    return loop


def loop_unit(settings: Settings) -> LoopUnit | None:
    """The unit counting the sessions opened under the loop frame that calls the
    function now opening one; None when there is no such frame, or it cannot be
    marked. Costs one short walk per session, none per statement."""
    if sys.gettrace() is not None:
        return None
    loop = _loop_frame()
    if loop is None:
        return None
    marker = loop.f_trace
    if isinstance(marker, _LoopMarker):
        unit = marker.unit
        ended = unit.last_end
        if (
            unit.active
            and unit.settings.runtime is settings.runtime
            and (ended is None or time.perf_counter() - ended <= LOOP_PAUSE_SECONDS)
        ):
            return unit
        unit.drop()
    elif marker is not None:
        return None
    unit = LoopUnit(_loop_settings(settings))
    loop.f_trace = _LoopMarker(unit)
    return unit
