"""Column types as a migration writes them, and which type changes PostgreSQL makes cheaply.

PostgreSQL rewrites the table (and rebuilds its indexes) on ``ALTER COLUMN ... TYPE`` unless
the old type is binary coercible to the new one: ``varchar(n)`` to a longer ``varchar``,
``varchar`` to ``text`` and back to unbounded ``varchar``, ``numeric(p, s)`` to a wider
precision with the same scale, or to unconstrained ``numeric``. Shortening a ``varchar``
does not rewrite but scans every row under the same ACCESS EXCLUSIVE lock.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from sqla_doctor.static.index.names import NameResolver

_FAMILIES = {
    "string": "varchar",
    "varchar": "varchar",
    "unicode": "varchar",
    "nvarchar": "varchar",
    "character varying": "varchar",
    "text": "text",
    "unicodetext": "text",
    "clob": "text",
    "numeric": "numeric",
    "decimal": "numeric",
    "integer": "integer",
    "int": "integer",
    "int4": "integer",
    "biginteger": "bigint",
    "bigint": "bigint",
    "int8": "bigint",
    "smallinteger": "smallint",
    "smallint": "smallint",
    "int2": "smallint",
    "datetime": "timestamp",
    "timestamp": "timestamp",
    "date": "date",
    "boolean": "boolean",
    "float": "float",
    "double": "float",
    "double precision": "float",
    "real": "real",
    "uuid": "uuid",
    "uuid_": "uuid",
    "json": "json",
    "jsonb": "jsonb",
    "enum": "enum",
    "timestamptz": "timestamptz",
    "char": "char",
    "character": "char",
    "cidr": "cidr",
    "inet": "inet",
    "interval": "interval",
    "time": "time",
    "largebinary": "bytea",
    "bytea": "bytea",
    "array": "array",
}


@dataclass(frozen=True)
class ColumnType:
    family: str
    text: str
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    timezone: bool | None = None
    name: str | None = None  # an enum's type name


def _int(node: ast.expr | None) -> int | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    ):
        return node.value
    return None


def from_python(node: ast.expr | None, resolver: NameResolver) -> ColumnType | None:
    """``sa.String(length=255)``, ``sa.VARCHAR(50)``, ``postgresql.TIMESTAMP(timezone=True)``."""
    if node is None:
        return None
    call = node if isinstance(node, ast.Call) else None
    target = call.func if call is not None else node
    if isinstance(target, ast.Attribute):
        raw = target.attr
    elif isinstance(target, ast.Name):
        qualified = resolver.qualify(target)
        raw = qualified.rpartition(".")[2] if qualified else target.id
    else:
        return None
    family = _FAMILIES.get(raw.lower(), raw.lower())
    text = ast.unparse(node)
    if call is None:
        return ColumnType(family, text)

    def argument(position: int, keyword: str) -> ast.expr | None:
        for item in call.keywords:
            if item.arg == keyword:
                return item.value
        return call.args[position] if 0 <= position < len(call.args) else None

    timezone_node = argument(0, "timezone") if family in ("timestamp", "time") else None
    timezone = timezone_node.value if isinstance(timezone_node, ast.Constant) else None
    if family == "timestamp" and timezone is True:
        family = "timestamptz"
    return ColumnType(
        family,
        text,
        length=_int(argument(0, "length")) if family in ("varchar", "char") else None,
        precision=_int(argument(0, "precision")) if family == "numeric" else None,
        scale=_int(argument(1, "scale")) if family == "numeric" else None,
        timezone=timezone if isinstance(timezone, bool) else None,
        name=_str(argument(-1, "name")) if family == "enum" else None,
    )


def _str(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


_SQL_TYPE = re.compile(
    r"^\s*(?P<name>[A-Za-z_][A-Za-z0-9_ ]*?)\s*(?:\(\s*(?P<a>\d+)\s*(?:,\s*(?P<b>\d+)\s*)?\))?\s*$"
)


def from_sql(text: str) -> ColumnType | None:
    """``VARCHAR ( 255 )``, ``numeric(12, 2)``, ``bigint`` (tokens joined by spaces)."""
    match = _SQL_TYPE.match(text)
    if not match:
        return None
    name = " ".join(match.group("name").lower().split())
    family = _FAMILIES.get(name, name)
    if name in ("timestamp with time zone",):
        family = "timestamptz"
    elif name.startswith("timestamp"):
        family = "timestamp"
    first = int(match.group("a")) if match.group("a") else None
    second = int(match.group("b")) if match.group("b") else None
    return ColumnType(
        family,
        text.strip(),
        length=first if family in ("varchar", "char") else None,
        precision=first if family == "numeric" else None,
        scale=second if family == "numeric" else None,
    )


def change_cost(old: ColumnType | None, new: ColumnType) -> str | None:
    """ "rewrite", "scan", or None when PostgreSQL changes only the catalogue (or when the
    old type is unknown and the new one accepts any old text type)."""
    if old is None:
        if new.family == "text" or (new.family == "varchar" and new.length is None):
            return None
        return "rewrite"
    if old.family == new.family:
        if new.family == "enum":
            # The same PostgreSQL type (its new values came from ALTER TYPE ... ADD
            # VALUE), or every row cast to another.
            same = old.name == new.name if old.name is not None else old.text == new.text
            return None if same else "rewrite"
        if new.family in ("varchar", "char"):
            if new.length is None or (old.length is not None and new.length >= old.length):
                return None
            return "scan" if new.family == "varchar" else "rewrite"
        if new.family == "numeric":
            if new.precision is None:
                return None
            if (
                old.precision is not None
                and new.precision >= old.precision
                and ((old.scale or 0) == (new.scale or 0))
            ):
                return None
            return "rewrite"
        if old.text == new.text or (old.length, old.precision, old.scale, old.timezone) == (
            new.length,
            new.precision,
            new.scale,
            new.timezone,
        ):
            return None
        return "rewrite"
    if old.family == "varchar" and new.family == "text":
        return None
    if old.family == "text" and new.family == "varchar":
        return None if new.length is None else "scan"
    if (old.family, new.family) == ("cidr", "inet"):
        return None
    return "rewrite"
