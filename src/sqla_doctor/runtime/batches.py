"""How many rows one run of a statement takes on by its own text: a batch, not an item.

A loop that runs one SELECT per item is an N+1; a loop that runs one SELECT per batch
of items is the fix for a list too big for one query: ids looked up in chunks of 500
(`.where(Sku.id.in_(chunk))`, under the database's parameter limit), an export that
pages through a table by keyset (`.where(Event.id > last_id).order_by(Event.id)
.limit(500)`) or by offset. Told from the statement's SQL and the values bound to it:
the widest list of placeholders (an expanded IN), and the LIMIT of a page walk, a
LIMIT whose statement also compares a bound value with ``<``/``>`` or skips rows with a
non-zero OFFSET (a per-item query capped with ``.limit(100)`` is no page walk).
"""

from __future__ import annotations

import re
from typing import Any

# DBAPI placeholders: qmark and format (positional), pyformat and named, numeric
# (asyncpg's $1). A named one is not the second colon of a PostgreSQL cast (::INTEGER).
_PLACEHOLDER = re.compile(r"\?|%s|%\((?P<pyformat>\w+)\)s|\$(?P<numeric>\d+)|(?<!:):(?P<named>\w+)")
_ITEM = r"(?:%\(\w+\)s|[^()\s,])+"
_IN_LIST = re.compile(rf"\bIN\s*\((?P<items>\s*(?:{_ITEM}\s*,\s*)+{_ITEM}\s*)\)", re.IGNORECASE)
_LIMIT = re.compile(r"\bLIMIT\s+(?:(?P<literal>\d+)|(?=[?%$:]))", re.IGNORECASE)
_OFFSET = re.compile(r"\bOFFSET\s+(?:(?P<literal>\d+)|(?=[?%$:]))", re.IGNORECASE)
# Any one placeholder, as a pattern to embed.
PLACEHOLDER_SQL = r"(?:\?|%s|%\(\w+\)s|\$\d+|:\w+)"
_RANGE = re.compile(rf"(?<![<>])[<>]=?\s*{PLACEHOLDER_SQL}")


def rows_per_run(sql: str, parameters: Any) -> int:
    """The most rows one run of ``sql`` with ``parameters`` is written to take on: its
    widest IN list, or the LIMIT of a page walk; 0 when neither says."""
    widest = max((_list_length(found["items"]) for found in _IN_LIST.finditer(sql)), default=0)
    limit = _bound_int(sql, _LIMIT, parameters)
    if limit is None or not (_RANGE.search(sql) or (_bound_int(sql, _OFFSET, parameters) or 0)):
        return widest
    return max(widest, limit)


def limit_of(sql: str, parameters: Any) -> int | None:
    """The LIMIT of ``sql``, written in it or bound; None when it has none (or not an
    integer)."""
    return _bound_int(sql, _LIMIT, parameters)


def _list_length(items: str) -> int:
    """How many placeholders ``?, ?, ?`` (or ``$1::INTEGER, ...``) holds; 0 for a list
    of anything else."""
    inner = items.split(",")
    bound = all(_PLACEHOLDER.fullmatch(item.strip().partition("::")[0]) for item in inner)
    return len(inner) if bound else 0


def _bound_int(sql: str, clause: re.Pattern[str], parameters: Any) -> int | None:
    """The integer a LIMIT or OFFSET clause of ``sql`` takes: written in the SQL, or the
    value bound to its placeholder; None when there is no such clause or it is not an
    integer."""
    found = clause.search(sql)
    if found is None:
        return None
    if found.group("literal") is not None:
        return int(found.group("literal"))
    position = 0
    for placeholder in _PLACEHOLDER.finditer(sql):
        if placeholder.start() == found.end():
            value = _value(placeholder, position, parameters)
            return value if isinstance(value, int) and not isinstance(value, bool) else None
        if placeholder.group("pyformat") is None and placeholder.group("named") is None:
            position += 1
    return None


def _value(placeholder: re.Match[str], position: int, parameters: Any) -> Any:
    try:
        name = placeholder.group("pyformat") or placeholder.group("named")
        if name is not None:
            return parameters[name]
        numeric = placeholder.group("numeric")
        return parameters[int(numeric) - 1 if numeric is not None else position]
    except (LookupError, TypeError, ValueError):
        return None
