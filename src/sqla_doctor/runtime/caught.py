"""Whether the program catches an exception by its class's name, read from its source.

An error the program swallows (``except Exception: print(...)``, pydantic turning it into
a ``ValidationError``) is explained as it is raised, since nothing else will see it. One
the program catches by name, ``except DetachedInstanceError:``, it knows and handles:
sqladmin's ``get_prop_value()`` reads an attribute of a detached object that way and, when
it fails, adds the object to a new session and reads it again. Explaining that error
would fail every test that reaches the handler, for a read that succeeded.

The ``try`` around a frame's line is found by indentation (``source_blocks``), and its
``except`` clauses downwards. Asked only while such an error is raised.
"""

from __future__ import annotations

import linecache
import re
from types import FrameType

from sqla_doctor.runtime import source_blocks
from sqla_doctor.runtime.source_blocks import SCOPES, enclosing_headers

# The frames looked at, from the one that will receive the error outwards.
_MAX_FRAMES = 6
# Lines read upwards to an enclosing ``try``, and downwards to its last clause, at most.
_MAX_LINES = 400
_NAMES = re.compile(r"[A-Za-z_][\w.]*")


def caught_by_name(live: FrameType, name: str) -> bool:
    """Whether ``live`` or one of the few frames that called it runs its current line
    inside a ``try`` block with an ``except`` clause that names ``name``
    (``except DetachedInstanceError:``, ``except (orm_exc.DetachedInstanceError,
    KeyError):``)."""
    frame: FrameType | None = live
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return False
        if _inside_try_naming(frame.f_code.co_filename, frame.f_lineno, name):
            return True
        frame = frame.f_back
    return False


def _inside_try_naming(filename: str, lineno: int, name: str) -> bool:
    for number, indent, header in enclosing_headers(filename, lineno, _MAX_LINES):
        if header.startswith(SCOPES):
            return False
        if header.startswith("try:") and _clause_names(filename, number, indent, name):
            return True
    return False


def _clause_names(filename: str, try_line: int, indent: int, name: str) -> bool:
    """Whether an ``except`` clause of the ``try`` at ``try_line`` names ``name``."""
    clause: str | None = None  # an except clause read so far, up to its colon
    for number in range(try_line + 1, try_line + _MAX_LINES):
        text = linecache.getline(filename, number)
        if not text:
            return False
        stripped = text.strip()
        if clause is not None:
            clause += " " + stripped
        elif not stripped or stripped.startswith("#") or source_blocks.indent(text) > indent:
            continue
        elif source_blocks.indent(text) < indent:
            return False
        elif stripped.startswith("except"):
            clause = stripped
        elif not stripped.startswith(("else", "finally")):
            return False  # the next statement: no more clauses
        if clause is not None and clause.split("#", 1)[0].rstrip().endswith(":"):
            names = _NAMES.findall(clause.split("#", 1)[0])
            if any(found == name or found.endswith("." + name) for found in names):
                return True
            clause = None
    return False
