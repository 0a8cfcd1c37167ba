"""The blocks around a line of the program's source, read upwards by indentation.

Several explanations need the statement a line sits in (the ``try`` around a read, the
``with`` around a leaked session, the ``def`` or loop around a commit) while the program
runs. Parsing the module then is neither cheap nor always safe (see
``generator_dependency.parse_safely``), and a line's enclosing block headers are exactly
the lines above it with less indentation.
"""

from __future__ import annotations

import linecache
import re
from collections.abc import Iterator

FUNCTIONS = ("def ", "async def ")
SCOPES = (*FUNCTIONS, "class ")
WITHS = ("with ", "async with ")
# A ``def`` line, its indentation as group 1.
FUNCTION = re.compile(r"^(\s*)(?:async\s+)?def\s")
# A ``for``/``while`` statement's first line (stripped or not).
LOOP = re.compile(r"^\s*(?:async\s+)?(?:for|while)\b")


def indent(text: str) -> int:
    return len(text) - len(text.lstrip())


def enclosing_headers(filename: str, lineno: int, limit: int) -> Iterator[tuple[int, int, str]]:
    """The lines that open the blocks around line ``lineno`` of ``filename``, innermost
    first, at most ``limit`` lines up: each as its number, its indentation and its text
    without the indentation."""
    line = linecache.getline(filename, lineno)
    if not line.strip():
        return
    floor = indent(line)
    for number in range(lineno - 1, max(lineno - limit, 0), -1):
        text = linecache.getline(filename, number)
        stripped = text.strip()
        if not stripped or stripped.startswith("#") or indent(text) >= floor:
            continue
        floor = indent(text)
        yield number, floor, stripped
        if floor == 0:
            return
