"""A session a Flask app keeps in ``flask.g`` for the request: which name, and which
``teardown_appcontext`` functions were to close it.

Read while the app context is active (when the session begins a transaction): by the
time the session is found unclosed, the context and its ``g`` are gone.
"""

from __future__ import annotations

import linecache
import re
import sys
from typing import Any

from sqla_doctor.runtime.callsite import USER, CallSite, classify

# Teardown functions named, at most.
_MAX_TEARDOWNS = 2


class KeptInG:
    """``flask.g.<name>`` held the session; ``teardowns`` are the app's own
    ``teardown_appcontext`` functions (where each is defined)."""

    __slots__ = ("name", "teardowns")

    def __init__(self, name: str, teardowns: tuple[CallSite, ...]) -> None:
        self.name = name
        self.teardowns = teardowns


def kept_in_flask_g(session: Any) -> KeptInG | None:
    """Where ``flask.g`` of the active app context holds ``session`` (or the
    AsyncSession around it); None without Flask, an app context, or such a name."""
    flask = sys.modules.get("flask")
    if flask is None:
        return None
    try:
        if not flask.has_app_context():
            return None
        namespace = vars(flask.g._get_current_object())
        name = next(
            (
                key
                for key, value in namespace.items()
                if value is session or getattr(value, "sync_session", None) is session
            ),
            None,
        )
        if not isinstance(name, str):
            return None
        functions = list(flask.current_app.teardown_appcontext_funcs)
    except Exception:  # a Flask whose internals differ: nothing to say
        return None
    teardowns: list[CallSite] = []
    for function in functions:
        code = getattr(function, "__code__", None)
        if code is not None and classify(code.co_filename) == USER:
            teardowns.append(CallSite(code.co_filename, code.co_firstlineno, code.co_name))
            if len(teardowns) >= _MAX_TEARDOWNS:
                break
    return KeptInG(name, tuple(teardowns))


def assignment_to_g(filenames: list[str], name: str) -> CallSite | None:
    """The first line of these files that assigns ``g.<name>`` (``g.db = Session(engine)``)."""
    pattern = re.compile(rf"\bg\.{re.escape(name)}\s*=(?!=)")
    for filename in filenames:
        for number, text in enumerate(linecache.getlines(filename), start=1):
            if pattern.search(text):
                return CallSite(filename, number, "?")
    return None
