"""SQD301: SQL text built by formatting or concatenating values (SQL injection)."""

from __future__ import annotations

import ast
from functools import cached_property

from sqla_doctor.findings import Severity
from sqla_doctor.static.dataflow import (
    Interpolation,
    StringFlow,
    call_keyword,
    source_segment,
)
from sqla_doctor.static.rule import Invalid, Rule, Valid

_MAX_SHOWN = 3


def _short(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SqlBuiltFromStrings(Rule):
    """
    ## What it does
    Checks for `text()` and `exec_driver_sql()` given SQL spliced together from values
    that are not constants.

    The SQL may be built with an f-string, `%` formatting, `.format()`, `+` concatenation,
    `str.join()` or `.replace()`, in the call or in earlier statements of the same function
    (`sql = f"..."`, `sql += f" AND x = {v}"`, `clauses.append(...)`). `text()` is
    recognised under any import or alias (`sa.text`, `sql_text`, SQLModel's, Flask-
    SQLAlchemy's `db.text`); `exec_driver_sql()` on any receiver.

    Text fixed by the source stays silent: literals and literal-only concatenation,
    f-strings without placeholders, UPPER_CASE constants, numbers (`int(x)`, `len(x)`,
    `{n:d}`, `range()` indexes), lookups in a literal dict and conditional literals
    (`"ASC" if desc else "DESC"`), and generated bind-parameter lists
    (`", ".join(f":id{i}" for i in range(len(ids)))`), and identifiers quoted with their
    quote character doubled inside (`'"' + name.replace('"', '""') + '"'`, MSSQL's
    `"[" + name.replace("]", "]]") + "]"`, backticks).

    ## Why is this bad?
    Whatever the interpolated value contains becomes SQL: a name like `x' OR '1'='1` reads
    every row, and `'; DROP TABLE users; --` does worse. Bound parameters are sent apart
    from the statement, so the database never parses them as SQL; they also let the
    database cache the statement's plan.

    ## Example
    ```python
    def find_user(session: Session, name: str):
        sql = f"SELECT * FROM users WHERE name = '{name}'"
        return session.execute(text(sql)).all()
    ```

    Use instead:
    ```python
    def find_user(session: Session, name: str):
        sql = text("SELECT * FROM users WHERE name = :name")
        return session.execute(sql, {"name": name}).all()
    ```

    ## Known problems
    A value checked against an allowlist before it is interpolated
    (`if column not in ALLOWED: raise ...`) is still reported: the check is not tied to the
    string and drifts from it in refactors. Map the input through a literal dict instead
    (`column = SORTABLE[sort]`), which is recognised as safe, or suppress the line.
    Parameters annotated `int` are reported too (annotations are not checks); convert with
    `int(...)` where the value is interpolated, or bind it.

    Only the current function is followed: SQL built by a helper and returned is not
    seen, and a parameter passed to `text()` as is stays silent. UPPER_CASE names are
    trusted as constants.

    ## References
    - [Using textual SQL](https://docs.sqlalchemy.org/en/20/tutorial/data_select.html#tutorial-select-arbitrary-text)
    - [`text()` and bound parameters](https://docs.sqlalchemy.org/en/20/core/sqlelement.html#sqlalchemy.sql.expression.text)
    - [`Connection.exec_driver_sql()`](https://docs.sqlalchemy.org/en/20/core/connections.html#sqlalchemy.engine.Connection.exec_driver_sql)
    - [OWASP: SQL injection prevention](https://cheatsheetseries.owasp.org/cheatsheets/SQL_Injection_Prevention_Cheat_Sheet.html)
    """

    code = "SQD301"
    name = "sql-built-from-strings"
    pitfalls = ("P28",)
    severity = Severity.ERROR
    message = "`{sink}` receives SQL built {how} from {values} — bind them as parameters"

    VALID = (
        # Identifiers quoted with their quote character doubled inside (MSSQL brackets,
        # standard double quotes, MySQL backticks).
        Valid(
            """
            from sqlalchemy import text
            def copy_columns(conn, table, keys):
                columns = ", ".join("[" + table.c[k].name.replace("]", "]]") + "]" for k in keys)
                quoted = '"' + table.name.replace('"', '""') + '"'
                return conn.execute(text(f"SELECT {columns} FROM {quoted}"))
            """
        ),
        # Bound parameters, literals, literal concatenation, placeholder-free f-strings.
        Valid(
            """
            from sqlalchemy import text
            def find(session, name):
                session.execute(text("SELECT * FROM users WHERE name = :name"), {"name": name})
                session.execute(text("SELECT * FROM users " "WHERE active"))
                session.execute(text("SELECT * FROM users" + " WHERE active"))
                session.execute(text(f"SELECT * FROM users"))
                stmt = text("SELECT * FROM users WHERE name = :name").bindparams(name=name)
                return session.execute(stmt)
            """
        ),
        # Built step by step from literals only, in branches and loops.
        Valid(
            """
            import sqlalchemy as sa
            def search(conn, active, roles):
                sql = "SELECT id FROM users WHERE 1 = 1"
                if active:
                    sql += " AND active"
                params = {}
                for i, role in enumerate(roles):
                    sql += f" OR role = :role_{i}"
                    params[f"role_{i}"] = role
                return conn.execute(sa.text(sql), params)
            """
        ),
        # Constants, numbers, literal choices and literal-dict lookups cannot inject.
        Valid(
            """
            from sqlalchemy import text
            from app.settings import SCHEMA
            TABLE = "users"
            ORDER = {"name": "users.name", "newest": "users.created_at DESC"}
            def page(session, sort, descending, ids, limit):
                column = ORDER[sort]
                direction = "DESC" if descending else "ASC"
                marks = ", ".join(f":id{i}" for i in range(len(ids)))
                session.execute(text(
                    f"SELECT * FROM {SCHEMA}.{TABLE} WHERE id IN ({marks}) "
                    f"ORDER BY {column} {direction} LIMIT {int(limit)}"
                ))
            """
        ),
        # Placeholders for the driver, values passed separately.
        Valid(
            """
            def load(engine, ids):
                marks = ", ".join(["%s"] * len(ids))
                with engine.connect() as conn:
                    conn.exec_driver_sql(f"SELECT * FROM t WHERE id IN ({marks})", tuple(ids))
            """
        ),
        # Not SQLAlchemy's text(): an HTML/markup helper with the same name.
        Valid(
            """
            from app.html import text
            def greet(name):
                return text(f"<p>Hello {name}</p>")
            """
        ),
        # A parameter passed as is: where it was built is not knowable here.
        Valid(
            """
            from sqlalchemy import text
            def run(session, sql):
                return session.execute(text(sql))
            """
        ),
        # The name is rebound to a literal before use; the f-string never reaches text().
        Valid(
            """
            from sqlalchemy import text
            def count(session, table):
                sql = f"SELECT count(*) FROM {table}"
                sql = "SELECT count(*) FROM users"
                return session.scalar(text(sql))
            """
        ),
        # A string with the same name in another function does not reach this one.
        Valid(
            """
            from sqlalchemy import text
            def build(name):
                sql = f"SELECT * FROM users WHERE name = '{name}'"
                return sql
            def run(session):
                sql = "SELECT 1"
                return session.execute(text(sql))
            """
        ),
        # Literal[...] parameters and loops over literal tuples are fixed text.
        Valid(
            """
            from typing import Literal
            from sqlalchemy import text
            def stats(session, order: Literal["asc", "desc"]):
                for column in ("views", "likes"):
                    session.execute(text(f"SELECT max({column}) FROM posts ORDER BY 1 {order}"))
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            from sqlalchemy import text
            def find_user(session, name):
                sql = f"SELECT * FROM users WHERE name = '{name}'"
                return session.execute(text(sql)).all()
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string (line 3) from `name` "
                "— bind them as parameters"
            ),
            line=4,
        ),
        Invalid(
            """
            import sqlalchemy as sa
            def delete(conn, table, ids):
                conn.execute(sa.text("DELETE FROM " + table + " WHERE id IN (" + ids + ")"))
            """,
            expected_message=(
                "`text()` receives SQL built by concatenation from `table`, `ids` "
                "— bind them as parameters"
            ),
        ),
        # Doubling single quotes is no escape where backslashes escape too (MySQL).
        Invalid(
            """
            from sqlalchemy import text
            def find_user(session, name):
                escaped = name.replace("'", "''")
                return session.execute(text(f"SELECT * FROM users WHERE name = '{escaped}'"))
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `escaped` "
                "— bind them as parameters"
            ),
        ),
        # Built in several steps, the dangerous part inside a branch.
        Invalid(
            """
            from sqlalchemy import text as sql_text
            def search(session, name=None, city=None):
                query = "SELECT * FROM users WHERE 1=1"
                if name:
                    query += f" AND name = '{name}'"
                if city:
                    query += " AND city = :city"
                return session.execute(sql_text(query), {"city": city})
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string (line 5) from `name` "
                "— bind them as parameters"
            ),
            line=8,
        ),
        Invalid(
            """
            from sqlalchemy.sql.expression import text
            def top(session, column, n):
                return session.execute(text("SELECT %s FROM scores LIMIT %d" % (column, n)))
            """,
            expected_message=(
                "`text()` receives SQL built with `%` formatting from `column`, `n` "
                "— bind them as parameters"
            ),
        ),
        Invalid(
            """
            from sqlalchemy import text
            TEMPLATE = "SELECT * FROM orders WHERE status = '{}'"
            def by_status(session, status):
                return session.execute(text(TEMPLATE.format(status)))
            """,
            expected_message=(
                "`text()` receives SQL built with `.format()` from `status` "
                "— bind them as parameters"
            ),
        ),
        # exec_driver_sql on a connection, through Session.connection() too.
        Invalid(
            """
            def purge(session, tenant):
                session.connection().exec_driver_sql(f"DELETE FROM logs WHERE tenant = '{tenant}'")
            """,
            expected_message=(
                "`exec_driver_sql()` receives SQL built with an f-string from `tenant` "
                "— bind them as parameters"
            ),
        ),
        # Flask-SQLAlchemy's db.text and db.session.
        Invalid(
            """
            from flask import request
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            def search():
                term = request.args["q"]
                sql = f"SELECT * FROM posts WHERE title LIKE '%{term}%'"
                return db.session.execute(db.text(sql))
            """,
            line=7,
        ),
        # SQLModel re-exports text.
        Invalid(
            """
            from sqlmodel import Session, text
            def archive(session: Session, year):
                session.exec(text("UPDATE posts SET archived = true WHERE year = " + str(year)))
            """,
        ),
        # Conditions collected in a list and joined.
        Invalid(
            """
            from sqlalchemy import text
            def filter_users(session, filters):
                clauses = ["deleted_at IS NULL"]
                for key, value in filters.items():
                    clauses.append(f"{key} = '{value}'")
                where = " AND ".join(clauses)
                return session.execute(text(f"SELECT * FROM users WHERE {where}"))
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string (line 5) from `key`, `value` "
                "— bind them as parameters"
            ),
            line=7,
        ),
        # Interpolating a column name from a request: still injectable.
        Invalid(
            """
            from sqlalchemy import text
            async def sorted_items(session, sort: str):
                result = await session.execute(text(f"SELECT * FROM items ORDER BY {sort}"))
                return result.all()
            """,
        ),
        # Imported under another module alias, with a multi-line call.
        Invalid(
            """
            from sqlalchemy import sql
            def rename(conn, old, new):
                conn.execute(
                    sql.text(
                        "ALTER TABLE {} RENAME TO {}".format(old, new)
                    )
                )
            """,
            line=4,
        ),
        # The project re-exports text from its db module.
        Invalid(
            """
            from app.db import text
            def run(session, user_id):
                session.execute(text(f"SELECT * FROM users WHERE id = {user_id}"))
            """,
            files={"app/__init__.py": "", "app/db.py": "from sqlalchemy import text\n"},
        ),
    )

    @cached_property
    def strings(self) -> StringFlow:
        return StringFlow(self.ctx.dataflow)

    def visit_Call(self, node: ast.Call) -> None:
        sink = self._sql_argument(node)
        if sink is None:
            return
        label, argument = sink
        value = self.strings.value(argument)
        if not value.dynamic:
            return
        how, values = self._describe(node, value.interpolations)
        hint = (
            "pass the values as bound parameters: "
            "`text(\"... WHERE name = :name\")` with `{\"name\": name}` or `.bindparams(name=name)`"
            if label == "text()"
            else "pass the values as the parameters argument: "
            "`conn.exec_driver_sql(\"... WHERE id = %s\", (value,))`"
        )
        self.report(
            node,
            sink=label,
            how=how,
            values=values,
            hint=hint + "; map table or column names from input through a dict of allowed names",
        )

    def _sql_argument(self, node: ast.Call) -> tuple[str, ast.expr] | None:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "exec_driver_sql":
            argument = node.args[0] if node.args else None
            keyword = call_keyword(node, "statement")
            chosen = argument or (keyword.value if keyword else None)
            return ("exec_driver_sql()", chosen) if chosen is not None else None
        if self.ctx.names.sqla_name(func) != "text":
            return None
        if node.args:
            return "text()", node.args[0]
        keyword = call_keyword(node, "text")
        return ("text()", keyword.value) if keyword is not None else None

    def _describe(self, sink: ast.Call, found: tuple[Interpolation, ...]) -> tuple[str, str]:
        first = found[0]
        how = first.how
        how = f"with {how}" if how != "concatenation" else "by concatenation"
        line = getattr(first.at, "lineno", sink.lineno)
        if line != sink.lineno:
            how += f" (line {line})"
        names: list[str] = []
        for item in found:
            text = f"`{_short(source_segment(self.ctx, item.value))}`"
            if text not in names:
                names.append(text)
        shown = ", ".join(names[:_MAX_SHOWN])
        if len(names) > _MAX_SHOWN:
            shown += f" and {len(names) - _MAX_SHOWN} more"
        return how, shown
