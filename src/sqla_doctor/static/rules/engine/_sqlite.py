"""Whether an engine call is surely for SQLite (shared by the engine rules)."""

from __future__ import annotations

import ast

from sqla_doctor.static.strings import StringFlow
from sqla_doctor.static.syntax import call_keyword

# Modules and functions whose names say they open SQLite connections: sqlite3, aiosqlite,
# sqlean (a sqlite3 build with extensions), a project's `sqlite_connection_factory`.
_SQLITE_WORDS = ("sqlite", "sqlean")


def sqlite_engine(call: ast.Call, strings: StringFlow) -> bool:
    """``create_engine(...)`` for SQLite: every URL it may get starts with ``sqlite``
    (through names and f-strings), ``connect_args`` sets ``check_same_thread``, an
    argument only the sqlite3 driver takes, or the connections come from a
    ``creator``/``async_creator`` that names SQLite (``lambda: sqlite3.connect(...)``,
    ``async_creator=sqlite_connection_factory(path)``)."""
    if any(_names_sqlite(call_keyword(call, k)) for k in ("creator", "async_creator")):
        return True
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


def _names_sqlite(keyword: ast.keyword | None) -> bool:
    if keyword is None:
        return False
    for node in ast.walk(keyword.value):
        name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
        if isinstance(name, str) and any(word in name.lower() for word in _SQLITE_WORDS):
            return True
    return False
