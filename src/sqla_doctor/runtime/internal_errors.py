"""The doctor's own failures: counted, logged once per place, never raised into the program.

Every listener, detector and integration reports an error of its own here (sentry-python's
``capture_internal_exceptions``); ``sqla-doctor run`` reports the count at exit.
"""

from __future__ import annotations

import logging

from sqla_doctor.runtime.unit_of_work import process

logger = logging.getLogger("sqla_doctor")
_reported: set[str] = set()


def internal_error(where: str) -> None:
    """Count a failure of sqla-doctor's own at ``where``; log it (with the traceback being
    handled) the first time that place fails."""
    process.internal_errors += 1
    if where not in _reported:
        _reported.add(where)
        logger.warning(
            "sqla-doctor: internal error in %s; the program is unaffected, but please "
            "report this with the traceback below",
            where,
            exc_info=True,
        )
