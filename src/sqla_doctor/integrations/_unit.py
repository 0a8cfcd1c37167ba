"""What every integration does with a unit of work: start it, end it, never break the host.

Each unit gets a ``Tracker`` of its own, so that concurrent requests (threads or tasks)
never end one another's unit; the settings are resolved once per integration, not per
unit. Errors of the integration itself are logged once per place and swallowed, like the
runtime's handlers do; a ``PitfallError`` is the one exception that reaches the host, and
only in ``raise`` mode.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from typing import Any

from sqla_doctor.config import Config, RuntimeConfig
from sqla_doctor.integrations import UnitCallback
from sqla_doctor.runtime import Tracker
from sqla_doctor.runtime.unit_of_work import Settings, process

logger = logging.getLogger("sqla_doctor")


# How often each callback the user gave has raised (by the callback; a dead one's entry
# goes with it).
_callback_failures: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
# After the first failure (with its traceback), one line per this many more.
_FAILURES_PER_LINE = 1000


def callback_error(what: str, callback: object) -> None:
    """A function the user gave (``on_unit``, ``route``) raised: say so; the request goes on.

    The first failure is logged with its traceback; a callback failing on every request
    then gets one line per thousand failures, not a traceback per request.
    """
    try:
        count = _callback_failures.get(callback, 0) + 1
        _callback_failures[callback] = count
    except TypeError:  # not weakly referenceable, or unhashable: say it each time
        count = 1
    if count == 1:
        logger.error("sqla-doctor: the %s %r raised", what, callback, exc_info=True)
    elif count % _FAILURES_PER_LINE == 0:
        logger.error("sqla-doctor: the %s %r raised again (%d times)", what, callback, count)


def callbacks(on_unit: UnitCallback | Iterable[UnitCallback] | None) -> tuple[UnitCallback, ...]:
    if on_unit is None:
        return ()
    if callable(on_unit):
        return (on_unit,)
    return tuple(on_unit)


class _UnitTracker(Tracker):
    """A tracker whose settings were resolved by its integration."""

    def __init__(self, name: str | None, settings: Settings) -> None:
        self._resolved = settings
        super().__init__(name)

    def settings(self) -> Settings:
        return self._resolved


class Units:
    """Starts units of work with one integration's mode and configuration."""

    def __init__(self, mode: str | None, config: Config | RuntimeConfig | None = None) -> None:
        # Built now so that a wrong mode or configuration fails where it was written.
        template = Tracker(mode=mode, config=config)
        self.mode = mode
        self._fixed = template.settings() if config is not None else None
        self._cache: tuple[Settings | None, Settings] | None = None
        self.settings()

    def settings(self) -> Settings:
        """The fixed settings, or ``install()``'s (else the project's) with this mode."""
        if self._fixed is not None:
            return self._fixed
        # Looked up per unit: install() may run after the integration was set up.
        installed = process.settings
        cached = self._cache
        if cached is None or cached[0] is not installed:
            base = installed if installed is not None else Tracker().settings()
            cached = self._cache = (installed, base.with_overrides(mode=self.mode))
        return cached[1]

    def tracker(self, name: str | None = None) -> Tracker:
        return _UnitTracker(name, self.settings())
