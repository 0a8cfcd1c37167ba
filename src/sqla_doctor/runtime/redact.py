"""SQL as reports may show it: string literals replaced, unless ``show_parameters`` is on.

SQLAlchemy sends bound values separately from the SQL, except where it renders them into
the statement itself: ``literal_execute=True`` parameters, ``literal_binds``, some
dialects' LIMIT/OFFSET and expanding IN. Those values reach ``before_cursor_execute`` as
part of the SQL string, so SQL kept for a report has its string literals replaced.
Numbers are kept: they are what LIMIT 50 and IN (1, 2) render, and rarely secrets.
"""

from __future__ import annotations

import re

# A quoted SQL string: '' doubles a quote (standard SQL), a backslash escapes one (MySQL).
# An unterminated literal (SQL cut short) runs to the end.
_STRING = re.compile(r"'(?:[^'\\]|''|\\.)*(?:'|\Z)", re.DOTALL)
MASK = "'?'"


def redact_literals(sql: str, mask: str = MASK) -> str:
    """``sql`` with every quoted string literal replaced by ``mask``."""
    if "'" not in sql:  # the ORM's own SQL: bound parameters only
        return sql
    return _STRING.sub(mask, sql)


def shown_sql(sql: str, show_parameters: bool) -> str:
    """The SQL a report may show: as run with ``show_parameters``, else redacted."""
    return sql if show_parameters else redact_literals(sql)
