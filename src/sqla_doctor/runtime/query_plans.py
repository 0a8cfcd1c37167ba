"""PostgreSQL query plans for the opt-in sequential-scan detector (SQD355).

A plan is asked for once per statement shape and server, on a connection of its own made
with the driver module directly: never the user's connection or transaction, never the
engine's pool (which the program may be short of), and so never seen by our own
listeners. The connection is autocommit, with short statement and lock timeouts, and is
closed at once. Bound values are sent to the server with the ``EXPLAIN`` (the plan for
``lower(email) = $1`` depends on them) but never kept: plan text is redacted before any
of it is stored.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.engine import URL

from sqla_doctor.runtime.redact import redact_literals

# Shapes explained per process, then no more: memory stays bounded.
MAX_SHAPES: Final = 2_048
# How long another thread running the same shape waits for its plan.
_WAIT_SECONDS: Final = 3.0
_TIMEOUTS: Final = "SET statement_timeout = '2s'; SET lock_timeout = '200ms'"
_DOLLAR: Final = re.compile(r"\$(\d+)")
logger = logging.getLogger("sqla_doctor")
# What each PostgreSQL engine's dialect really connected with (connect_args, a password
# or search_path set by a do_connect listener), as SQLAlchemy's do_connect event handed
# it: the same list and dict objects, so listeners that run after ours are seen too.
_connect_params: weakref.WeakKeyDictionary[Any, tuple[list[Any], dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)
# asyncpg's connect() keywords that psycopg spells differently.
_ASYNCPG_TO_LIBPQ: Final = {
    "database": "dbname",
    "host": "host",
    "port": "port",
    "user": "user",
    "password": "password",
}
_NUMBER: Final = re.compile(r"(?<![\w$.])-?\d+(?:\.\d+)?(?![\w.])")
# VERBOSE plans qualify columns with their table: lower((users.email)::text).
_FUNCTION_ON_COLUMN: Final = re.compile(r"\b(\w+)\(\(?(?:\w+\.)?(\w+)\)?(?:::[\w ]+)?[,)]")
_OPERATOR: Final = r"(?:=|<|>|<=|>=|~~|~~\*)"
# A column on either side of a comparison: `(users.email = ?)` or `(? = visits.user_id)`.
_COMPARED_COLUMN: Final = re.compile(
    rf"\(\(?(?:\w+\.)?([A-Za-z_]\w*)\)?(?:::[\w ]+)? {_OPERATOR} "
    rf"|{_OPERATOR} \(?(?:\w+\.)?([A-Za-z_]\w*)\)?(?:::[\w ]+)?\)"
)


@dataclass(frozen=True)
class Index:
    name: str
    definition: str  # CREATE INDEX ... ON table USING btree (lower(email))


@dataclass(frozen=True)
class Scan:
    """A sequential scan in a plan, with what it costs and what could have served it."""

    schema: str
    table: str
    rows: int  # the table's size as the planner knows it
    filter: str  # redacted: literals replaced by ?
    indexes: tuple[Index, ...]

    def function_on_column(self) -> tuple[str, str] | None:
        """``("lower", "email")`` when the filter applies a function to a column."""
        match = _FUNCTION_ON_COLUMN.search(self.filter)
        return (match.group(1), match.group(2)) if match else None

    def compared_column(self) -> str | None:
        match = _COMPARED_COLUMN.search(self.filter)
        return (match.group(1) or match.group(2)) if match else None

    def plain_index_on(self, column: str) -> Index | None:
        """An index whose first key is the bare column (useless for ``f(column)``)."""
        pattern = re.compile(rf"\(\s*\"?{re.escape(column)}\"?\s*[,)]")
        for index in self.indexes:
            keys = index.definition.partition(" USING ")[2] or index.definition
            if pattern.search(keys):
                return index
        return None


def redact(text: str) -> str:
    """Plan text without the literal values the planner inlined from bound parameters."""
    # Numbers too: in a plan they are values the planner inlined, not SQL of the program.
    return _NUMBER.sub("?", redact_literals(text, mask="?"))


class Planner:
    """Plans per (server, statement), computed once each; thread-safe, bounded."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict[tuple[str, str], tuple[Scan, ...]] = {}
        self._running: dict[tuple[str, str], threading.Event] = {}
        self.explained = 0  # how many EXPLAINs ran (tests check that opting out runs none)

    def clear(self) -> None:
        with self._lock:
            self._plans.clear()
            self.explained = 0

    def scans(self, url: URL, dialect: Any, sql: str, parameters: Any) -> tuple[Scan, ...]:
        connect = _connect_params.get(dialect)
        server = url.render_as_string(hide_password=True)
        if connect is not None:
            # Two engines on one URL may see different schemas (options=-csearch_path=...).
            settings = connect[1]
            server += f" {settings.get('options')} {settings.get('server_settings')}"
        key = (server, sql)
        with self._lock:
            known = self._plans.get(key)
            running = self._running.get(key)
            if known is None and running is None:
                if len(self._plans) >= MAX_SHAPES:
                    return ()
                # Claimed now, so that concurrent runs of one shape explain it once.
                running = self._running[key] = threading.Event()
                mine = True
            else:
                mine = False
        if known is not None:
            return known
        assert running is not None
        if not mine:
            running.wait(_WAIT_SECONDS)
            with self._lock:
                return self._plans.get(key, ())
        try:
            found = _explain(url, dialect.driver, connect, sql, parameters)
        except Exception as error:
            # No plan (a timeout, a lock, a statement EXPLAIN refuses): no finding. Said at
            # debug level, so that a silence can be explained (an engine made with creator=).
            logger.debug("SQD355: no plan for a statement: %s", type(error).__name__)
            found = ()
        with self._lock:
            self._plans[key] = found
            self.explained += 1
            del self._running[key]
        running.set()
        return found


planner = Planner()


def note_connect(dialect: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
    """Remember what a PostgreSQL engine connects with (the ``do_connect`` event)."""
    if dialect.name == "postgresql":
        _connect_params[dialect] = (cargs, cparams)


def _connect(url: URL, driver: str, connect: tuple[list[Any], dict[str, Any]] | None) -> Any:
    """A new DBAPI connection to the same server with a synchronous driver, made with the
    parameters the engine's own connections were made with when they are known."""
    sync = url.set(drivername="postgresql+psycopg")
    try:
        dialect_class = sync.get_dialect()
        # The dialect class imports without its driver: psycopg itself may be missing.
        dbapi = dialect_class.import_dbapi()
    except ImportError:
        sync = url.set(drivername="postgresql+psycopg2")
        dialect_class = sync.get_dialect()
        dbapi = dialect_class.import_dbapi()
    url_args, url_kwargs = dialect_class().create_connect_args(sync)
    args, kwargs = (
        _libpq_params(driver, connect, url_args, url_kwargs)
        if connect is not None
        else (url_args, url_kwargs)
    )
    connection = dbapi.connect(*args, **{"connect_timeout": 2, **kwargs})
    connection.autocommit = True
    return connection


def _libpq_params(
    driver: str,
    connect: tuple[list[Any], dict[str, Any]],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> tuple[Sequence[Any], Mapping[str, Any]]:
    """The engine's connect parameters for psycopg: as they are from psycopg or
    psycopg2, translated from asyncpg's keywords."""
    cargs, cparams = connect
    if driver in ("psycopg", "psycopg_async", "psycopg2"):
        return list(cargs), dict(cparams)  # libpq keywords already
    if driver == "asyncpg":
        merged = dict(kwargs)
        for name, libpq in _ASYNCPG_TO_LIBPQ.items():
            if cparams.get(name) is not None:
                merged[libpq] = cparams[name]
        settings = cparams.get("server_settings") or {}
        if settings:
            merged["options"] = " ".join(f"-c{k}={v}" for k, v in settings.items())
        return args, merged
    return args, kwargs


def _statement_for(driver: str, sql: str, parameters: Any) -> tuple[str, Any]:
    """The statement in the pyformat style of psycopg, whatever the user's driver was."""
    if driver == "asyncpg":
        values = list(parameters or ())
        named = {f"p{index + 1}": value for index, value in enumerate(values)}
        converted = _DOLLAR.sub(lambda m: f"%(p{m.group(1)})s", sql.replace("%", "%%"))
        return converted, named
    return sql, parameters


def _explain(
    url: URL,
    driver: str,
    connect: tuple[list[Any], dict[str, Any]] | None,
    sql: str,
    parameters: Any,
) -> tuple[Scan, ...]:
    statement, values = _statement_for(driver, sql, parameters)
    connection = _connect(url, driver, connect)
    try:
        cursor = connection.cursor()
        cursor.execute(_TIMEOUTS)
        cursor.execute("EXPLAIN (FORMAT JSON, VERBOSE) " + statement, values or None)
        raw = cursor.fetchone()[0]
        plan = json.loads(raw) if isinstance(raw, str) else raw
        found: list[Scan] = []
        for node in _seq_scans(plan[0]["Plan"]):
            schema = node.get("Schema", "public")
            table = node.get("Relation Name")
            if not table or "Filter" not in node:
                continue
            found.append(
                Scan(
                    schema=schema,
                    table=table,
                    rows=_table_rows(cursor, schema, table),
                    filter=redact(node["Filter"]),
                    indexes=_indexes(cursor, schema, table),
                )
            )
        return tuple(found)
    finally:
        connection.close()


def _seq_scans(node: dict[str, Any]) -> list[dict[str, Any]]:
    found = [node] if node.get("Node Type") == "Seq Scan" else []
    for child in node.get("Plans", ()):
        found.extend(_seq_scans(child))
    return found


def _table_rows(cursor: Any, schema: str, table: str) -> int:
    cursor.execute(
        "SELECT c.reltuples, s.n_live_tup FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid "
        "WHERE n.nspname = %s AND c.relname = %s",
        (schema, table),
    )
    row = cursor.fetchone()
    if row is None:
        return 0
    estimate, live = row
    # reltuples is -1 until the table is first vacuumed or analysed.
    return int(estimate) if estimate is not None and estimate >= 0 else int(live or 0)


def _indexes(cursor: Any, schema: str, table: str) -> tuple[Index, ...]:
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s "
        "ORDER BY indexname",
        (schema, table),
    )
    return tuple(Index(name, definition) for name, definition in cursor.fetchall())
