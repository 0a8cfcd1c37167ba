"""Whether an engine call is surely for SQLite (shared by the engine rules)."""

from __future__ import annotations

import ast

from sqla_doctor.static.strings import StringFlow
from sqla_doctor.static.syntax import call_keyword


def sqlite_engine(call: ast.Call, strings: StringFlow) -> bool:
    """``create_engine(...)`` for SQLite: every URL it may get starts with ``sqlite``
    (through names and f-strings), or ``connect_args`` sets ``check_same_thread``, an
    argument only the sqlite3 driver takes."""
    connect_args = call_keyword(call, "connect_args")
    if connect_args is not None and isinstance(connect_args.value, ast.Dict):
        for key in connect_args.value.keys:
            if isinstance(key, ast.Constant) and key.value == "check_same_thread":
                return True
    url = call.args[0] if call.args else None
    if url is None:
        keyword = call_keyword(call, "url")
        url = keyword.value if keyword is not None else None
    if url is None:
        return False
    schemes = [
        p.text.partition("://")[0].split("+", 1)[0].strip().lower()
        for p in strings.prefixes(url)
        if "://" in p.text
    ]
    return bool(schemes) and all(scheme == "sqlite" for scheme in schemes)
