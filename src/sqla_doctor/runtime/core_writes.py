"""Which Core statements write something a rollback would lose (SQD152, commit as you go).

Read from the SQL text alone, cheaply: this runs for every statement of a Core
connection outside ``engine.begin()``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Final, Literal

WRITE: Final = "write"
DDL: Final = "ddl"
TEMP_TABLE: Final = "temp_table"
# PostgreSQL's LISTEN and UNLISTEN: not writes, but what a connection held on purpose does.
LISTEN: Final = "listen"
UNLISTEN: Final = "unlisten"

# A statement that reads: a plain SELECT (not one behind a WITH).
SELECT_SQL: Final = re.compile(r"\s*SELECT\b", re.IGNORECASE)
_WRITES: Final = ("INSERT", "UPDATE", "DELETE", "MERGE", "REPLAC")
_DDL: Final = ("CREATE", "ALTER ", "DROP ", "TRUNCA", "COMMEN")
# Databases whose DDL runs inside the transaction, and so is rolled back with it; MySQL
# commits DDL implicitly.
_TRANSACTIONAL_DDL: Final = frozenset({"postgresql", "mssql"})
# sqlite3's legacy transaction control (what SQLAlchemy uses) begins a transaction only
# before a statement that starts with INSERT/UPDATE/DELETE/REPLACE: DDL, or a write
# behind a WITH, runs in autocommit unless an earlier write began one.
_BEGINS_ONLY_FOR_DML: Final = "sqlite"
# Temporary tables live in one connection (or transaction) only: throwing away what
# was written to them is their purpose, not a lost write.
_TEMP_TABLE: Final = re.compile(
    r"CREATE\s+(?:(?:GLOBAL|LOCAL)\s+)?TEMP(?:ORARY)?\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"([\w.\"`\[\]]+)",
    re.IGNORECASE,
)
_TARGET: Final = re.compile(
    r"(?:INSERT\s+(?:OR\s+\w+\s+)?INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM|"
    r"MERGE\s+INTO|TRUNCATE\s+(?:TABLE\s+)?)\s*([\w.\"`\[\]]+)",
    re.IGNORECASE,
)
# A data-modifying statement behind a WITH: ``WITH x AS (...) INSERT ...``, or a CTE
# that deletes/updates and returns rows.
_CTE_WRITE: Final = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE)\b", re.IGNORECASE)


def _name(raw: str) -> str:
    """``pg_temp."Staging"`` -> ``staging``: the table's own name, unquoted."""
    return raw.rsplit(".", 1)[-1].strip('"`[]').lower()


def classify(
    statement: str, dialect: str, temp_tables: Collection[str], *, began: bool
) -> Literal["write", "ddl", "temp_table", "listen", "unlisten"] | None:
    """WRITE, DDL (only where a rollback undoes it), TEMP_TABLE (a ``CREATE TEMP TABLE``,
    whose name ``temp_table()`` reads), LISTEN, UNLISTEN or None: a read, a write to one of
    ``temp_tables``, or one the driver commits at once. ``began``: an earlier write of
    this transaction was counted.
    """
    text = statement.lstrip()
    head = text[:6].upper()
    if head.startswith(_WRITES):
        if temp_tables and _target(text) in temp_tables:
            return None
        return WRITE
    if head.startswith(_DDL):
        if _TEMP_TABLE.match(text) is not None:
            return TEMP_TABLE
        if head == "TRUNCA" and temp_tables and _target(text) in temp_tables:
            return None
        if dialect in _TRANSACTIONAL_DDL or (began and dialect == _BEGINS_ONLY_FOR_DML):
            return DDL
        return None
    if head.startswith("WITH") and _CTE_WRITE.search(text):
        return WRITE if began or dialect != _BEGINS_ONLY_FOR_DML else None
    if head == "LISTEN":
        return LISTEN
    if head == "UNLIST":
        return UNLISTEN
    return None


def temp_table(statement: str) -> str | None:
    """The name a ``CREATE TEMP TABLE`` statement creates."""
    found = _TEMP_TABLE.match(statement.lstrip())
    return _name(found.group(1)) if found is not None else None


def _target(text: str) -> str | None:
    found = _TARGET.match(text)
    return _name(found.group(1)) if found is not None else None
