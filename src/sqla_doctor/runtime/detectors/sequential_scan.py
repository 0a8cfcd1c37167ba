"""SQD355: PostgreSQL reads a whole large table to answer a filter (opt-in EXPLAIN)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.detector import (
    COLUMN_LOAD,
    CORE,
    LAZY_LOAD,
    OTHER,
    RELATIONSHIP_LOAD,
    SELECT,
    Detector,
    Statement,
)
from sqla_doctor.runtime.query_plans import Scan, planner

if TYPE_CHECKING:
    from sqla_doctor.config import RuntimeConfig

_FILTERED: Final = re.compile(r"\s*(?:SELECT|WITH|UPDATE|DELETE)\b", re.IGNORECASE)
_WHERE: Final = re.compile(r"\bWHERE\b", re.IGNORECASE)


class SequentialScan(Detector):
    """
    ## What it does
    On PostgreSQL, asks the server for the plan of each statement shape that filters rows
    (once per shape per process) and reports a sequential scan of a table larger than
    `seq-scan-min-rows`: the plan's filter, the table's size, and the index that would
    serve it — in particular when the filter applies a function (`lower(email)`) to a
    column whose index holds the bare column, which PostgreSQL cannot use for it.

    This detector is off unless `explain-seq-scans = true` in
    `[tool.sqla-doctor.runtime]`, because it issues SQL of its own: a plain `EXPLAIN`
    (never `EXPLAIN ANALYZE`, so the statement is not run twice) on a separate,
    short-lived, autocommit connection made with the driver directly — never the
    program's connection, transaction or pool — with a 2 s statement timeout and a 200 ms
    lock timeout, so a program holding locks is never blocked by it. Bound values are sent
    with the `EXPLAIN` (the plan depends on them) and redacted from everything reported.
    Statements written by a flush are not explained. The connection is made with the
    parameters the engine's own connections used (`connect_args`, a password or
    `search_path` set by a `do_connect` listener, asyncpg's `server_settings`), so it
    sees the schema the program sees.

    ## Why is this bad?
    A filter PostgreSQL cannot answer from an index reads every row of the table: fast
    on a developer's hundred rows, seconds per request on production's millions. The most
    common cause is invisible in the Python source: `func.lower(User.email) == email`
    next to `email = mapped_column(index=True)` looks indexed, but a B-tree index on
    `email` cannot serve `lower(email)`.

    ## Example
    ```python
    class User(Base):
        __tablename__ = "users"
        email: Mapped[str] = mapped_column(index=True)

    session.scalars(select(User).where(func.lower(User.email) == email.lower()))
    ```

    Use instead:
    ```python
    class User(Base):
        __tablename__ = "users"
        __table_args__ = (Index("ix_users_email_lower", func.lower(email)),)
        email: Mapped[str] = mapped_column(index=True)
    ```

    The static rule SQD306 (`function-on-indexed-column`) finds the same mistake in
    source when the model and the query are both in the project; this detector asks the
    database itself, so it also sees filters built dynamically, raw SQL, and missing
    indexes on foreign keys that lazy loads filter on.

    ## Known problems
    An engine made with `creator=`, or whose connections were all made before
    `install()`, has no recorded connect parameters: the plan is asked for with the URL's
    alone, and a statement on tables that URL cannot see gets no plan and no finding
    (said at debug level on the `sqla_doctor` logger). `schema_translate_map` is not
    applied to the EXPLAIN.

    ## References
    - [PostgreSQL: Indexes on Expressions](https://www.postgresql.org/docs/current/indexes-expressional.html)
    - [PostgreSQL: Using EXPLAIN](https://www.postgresql.org/docs/current/using-explain.html)
    - [SQLAlchemy: Functional indexes](https://docs.sqlalchemy.org/en/20/core/constraints.html#functional-indexes)
    """

    code = "SQD355"
    name = "sequential-scan"
    pitfalls = ("P16",)
    severity = Severity.WARNING
    execution_kinds = frozenset({SELECT, OTHER, CORE, LAZY_LOAD, RELATIONSHIP_LOAD, COLUMN_LOAD})
    message = "Seq Scan on {table} (~{rows:,} rows) for the filter {filter} — {fix}"

    @classmethod
    def enabled(cls, runtime: RuntimeConfig) -> bool:
        return runtime.explain_seq_scans

    def on_before_cursor_execute(self, statement: Statement) -> None:
        connection = statement.connection
        if connection is None or statement.executemany or statement.in_flush:
            return
        dialect = connection.dialect
        if dialect.name != "postgresql":
            return
        sql = statement.sql
        if not _FILTERED.match(sql) or _WHERE.search(sql) is None:
            return
        scans = planner.scans(connection.engine.url, dialect, sql, statement.parameters)
        for scan in scans:
            if scan.rows < self.config.seq_scan_min_rows:
                continue
            site = statement.site
            self.report(
                site,
                key=(scan.schema, scan.table, scan.filter, site.key if site else None),
                subject=scan.table,
                hint=_index_hint(scan),
                details={
                    "table": f"{scan.schema}.{scan.table}",
                    "rows": scan.rows,
                    "filter": scan.filter,
                    "indexes": [index.name for index in scan.indexes],
                },
                table=scan.table,
                rows=scan.rows,
                filter=scan.filter,
                fix=_fix(scan),
            )


def _fix(scan: Scan) -> str:
    applied = scan.function_on_column()
    if applied is not None:
        function, column = applied
        plain = scan.plain_index_on(column)
        if plain is not None and function == "date":
            # A day's rows are a range of the bare column, which its index serves; an
            # index on date(column) cannot even be made for a timestamptz column (the
            # day depends on the session's time zone).
            return (
                f"the index {plain.name} on ({column}) cannot serve date({column}); compare "
                f"the bare column with a half-open range, which that index serves: "
                f"`Model.{column} >= start, Model.{column} < start + timedelta(days=1)` "
                f"({column} >= :day AND {column} < :day + 1 day), or add an index on the "
                f"expression (timestamp without time zone only): {_index_hint(scan)}"
            )
        if plain is not None:
            return (
                f"the index {plain.name} on ({column}) cannot serve {function}({column}); "
                f"add an index on the expression: {_index_hint(scan)}"
            )
        return f"add an index on the expression: {_index_hint(scan)}"
    compared = scan.compared_column()
    if compared is not None:
        return f"no index on {scan.table}.{compared} serves it; add one: {_index_hint(scan)}"
    return "add an index that serves this filter, or make the filter use an existing one"


def _index_hint(scan: Scan) -> str:
    applied = scan.function_on_column()
    if applied is not None:
        function, column = applied
        return (
            f'Index("ix_{scan.table}_{column}_{function}", func.{function}({column})) '
            f"in __table_args__ (CREATE INDEX ON {scan.table} ({function}({column})))"
        )
    compared = scan.compared_column()
    if compared is not None:
        return (
            f"mapped_column(index=True) on {compared} (CREATE INDEX ON {scan.table} ({compared}))"
        )
    return f"an index on {scan.table} matching the filter"
