"""SQD301: SQL text built by formatting or concatenating values (SQL injection)."""

from __future__ import annotations

import ast
import re
from functools import cached_property

from sqla_doctor.findings import Severity
from sqla_doctor.static.dataflow import BindingKind
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to
from sqla_doctor.static.rules.engine._sqlite import sqlite_engine
from sqla_doctor.static.strings import Interpolation, StringFlow, in_sql_string, template_slots
from sqla_doctor.static.syntax import assigned_name, call_keyword, source_segment

_MAX_SHOWN = 3
# A helper building a counting subquery from table names, called in its module.
_COUNT_HELPER = """
from sqlalchemy import func, select, table, text

def _count_property(parent, children, deferred=True):
    condition = f"{children}.{parent}_id = {parent}.id"
    return select(func.count()).select_from(table(children)).where(text(condition))

host_services = _count_property("host", "service")
"""
# A counting subquery built by a function defined in the method that uses it.
_LOCAL_HELPER = """
from sqlalchemy import func, select, table, text

class Command:
    @classmethod
    def with_severity_counts(cls, query, name):
        def _sev_expr(severity):
            condition = text(f"vulnerability.severity = '{{severity}}'")
            return select(func.count()).select_from(table("vulnerability")).where(condition)
        return query.options(_sev_expr("high"), _sev_expr({second})){tail}
"""
# A helper joining a condition per item of a dict, called with `filters`.
_JOINED_HELPER = """
from sqlalchemy import text

def _count_joined(conn, join_filters):
    conditions = ["vulnerability.id = command_object.object_id"]
    for attr, value in join_filters.items():
        conditions.append(f"vulnerability.{{attr}} = {{value}}")
    return conn.execute(text(" and ".join(conditions)))

def web_counts(conn, kind):
    return _count_joined(conn, {filters})
"""
# A helper returning a condition on a JSON column that names its bind parameters.
_JSON_FILTER = """
from sqlalchemy import text

def json_condition(table, field, op, counter):
    return f"({{table}}.{{field}} ->> :key_{{counter}}) {{op}} :value_{{counter}}"

def json_filter(conn, field, op, key, value):
    params = {{"key_1": key, "value_1": value}}
    query = json_condition("vulnerability", field, op, 1)
    return conn.execute(text(f"{{query}}"){bound})
"""
# A helper with no call in the module.
_UNCALLED_HELPER = """
from sqlalchemy import func, select, text

def {name}(severity):
    condition = text(f"vulnerability.severity = '{{severity}}'")
    return select(func.count()).select_from(text("vulnerability")).where(condition)
{tail}"""
# A module that reads every name of app.models whose test `skip` does not pass.
_PUBLIC_WALK = """from sqlalchemy.orm import class_mapper
from app import models
def mappers():
    found = []
    for attr in dir(models):
        if {skip}:
            continue
        try:
            found.append(class_mapper(getattr(models, attr)))
        except Exception:
            pass
    return found
"""
# Methods that run a statement with parameters given beside it.
_EXECUTING = frozenset({"execute", "exec", "scalar", "scalars", "stream", "stream_scalars"})


_NAMES_REMEDY = "table and column names cannot be bound parameters: choose them from a fixed set"
_MIXED_REMEDY = (
    "bind the values as parameters, and choose the table and column names from a fixed set"
)
_DDL_REMEDY = "a DDL statement takes no bound parameters: choose them from a fixed set"
_DDL_NUMBER_REMEDY = (
    "a DDL statement takes no bound parameters: convert the number with `int()` where it "
    "is interpolated"
)
# Where DDL wants a number: a sequence's options (`ALTER SEQUENCE s RESTART WITH {n}`),
# MySQL's `AUTO_INCREMENT = {n}`.
_NUMBER_WANTED = re.compile(
    r"\b(?:(?:RESTART|START)(?:\s+WITH)?|INCREMENT(?:\s+BY)?|MINVALUE|MAXVALUE|CACHE|"
    r"AUTO_INCREMENT\s*=?)\s*$",
    re.IGNORECASE,
)
_SET_REMEDY = (
    "a SET statement takes no bound parameters: pass the value to `set_config()`, which does"
)
# Statements that define the schema: no database binds a parameter in them.
_DDL = re.compile(r"\s*(?:CREATE|ALTER|DROP|TRUNCATE|COMMENT\s+ON|GRANT|REVOKE)\b", re.IGNORECASE)
# PostgreSQL's settings (`SET ROLE x`, `SET search_path TO x`, an extension's or the
# application's own `SET LOCAL app.tenant = '...'`), no more a place for a parameter than
# DDL is; `set_config(name, value, is_local)` sets the same with the value bound.
_SET = re.compile(
    r"\s*SET\s+(?:(?P<scope>SESSION|LOCAL)\s+)?(?P<name>ROLE|search_path|TIME\s+ZONE|"
    r"statement_timeout|lock_timeout|idle_in_transaction_session_timeout|work_mem|"
    r"application_name|[a-z_]\w*\.[a-z_]\w*)\b",
    re.I,
)
# `SET LOCAL {option}`: the setting's name comes with the value.
_SET_ANY = re.compile(r"\s*SET\s+(?:(?P<scope>SESSION|LOCAL)\s+)?$", re.I)
# The setting's name where `SET` spells it otherwise.
_SETTING_NAMES = {"role": "role", "time zone": "TimeZone"}
_BIND_HINT = (
    "pass the values as bound parameters: "
    '`text("... WHERE name = :name")` with `{"name": name}` or `.bindparams(name=name)`'
)
_DRIVER_BIND_HINT = (
    "pass the values as the parameters argument: "
    '`conn.exec_driver_sql("... WHERE id = %s", (value,))`'
)


def _short(text: str, limit: int = 30) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_VALIDATED = """
import sqlalchemy as sa
from sqlalchemy.sql import quoted_name
ALLOWED_TABLES = frozenset({{"task_dependency", "digest_condition"}})

def _validate_identifier(identifier, allowed, kind):
    if identifier not in allowed:
        {check}
    return identifier

def migrate_conditions(db, table_name):
    _validate_identifier(table_name, ALLOWED_TABLES, "table name")
    safe_table = quoted_name(table_name, quote=True)
    db.execute(sa.text(f"SELECT id FROM {{safe_table}} WHERE parent_id IS NULL"))
    db.execute(sa.text(f"DELETE FROM {{table_name}} WHERE parent_id IS NULL"))
"""
_SEQUENCE_HELPER = """
from sqlalchemy import Column, Integer, text
def sequence_id_column(sequence_name):
    return Column("id", Integer(), server_default=text(f"nextval('{sequence_name}')"))
"""


def _sequence_files(package_init: str, argument: str) -> dict[str, str]:
    return {
        "app/__init__.py": "",
        "app/models/__init__.py": package_init,
        "app/migration.py": (
            "from app.models.db import sequence_id_column\n"
            "SEQUENCE_NAME = 'usersetting_seq'\n"
            "def upgrade(op, sequence_name):\n"
            f"    op.create_table('usersetting', sequence_id_column({argument}))\n"
        ),
        "app/ext.py": (
            "from flask_migrate import Migrate\n"
            "from app.models import db\n"
            "migrate = Migrate(None, db)\n"
        ),
    }


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
    f-strings without placeholders, UPPER_CASE constants, members of the project's
    enums (`Status.archived.value`, a parameter annotated with the enum, `self.value` in
    the enum's own methods), class attributes read in a method (`cls.threshold`,
    `self.page_size`) that the class or a base declares with a literal and nothing in the
    module assigns again (a `ClassVar`, or a plain class; not a dataclass or pydantic
    field, whose value comes from the caller), numbers (`int(x)`, `len(x)`,
    `max(0, int(x))`, `{n:d}`, `"%d" % n`, `range()` indexes), lookups in a literal
    dict and conditional literals (`"ASC" if desc else "DESC"`), loops over literal
    tables (also one chosen by a condition: `for old, new in UNDO if undo else
    STEPS`) and the fields of their literal rows (`role["name"]` for `role in ROLES`),
    also through an inner loop (`for table, columns in TEXT_COLUMNS.items()`, then
    `for column, nullable in columns`),
    the keys of a dict the function fills
    with literal keys (`row = {}`, `row["id"] = ...`, then `", ".join(row.keys())`),
    also of the first of a list of such dicts (`rows.append(row)`, then `rows[0].keys()`),
    and generated bind-parameter lists
    (`", ".join(f":id{i}" for i in range(len(ids)))`), and identifiers quoted with their
    quote character doubled inside (`'"' + name.replace('"', '""') + '"'`, MSSQL's
    `"[" + name.replace("]", "]]") + "]"`, backticks; also by a project helper in any
    module whose one `return` quotes its argument so) or by SQLAlchemy (`column(name)`,
    which renders quoted when it needs to be; not `table(name)`), new UUIDs
    (`uuid4().hex`, `str(uuid4())`), names stripped of all but letters, digits and
    underscores (`re.sub(r"[^a-zA-Z0-9_]", "", name)`), and SQL that SQLAlchemy compiled
    (`str(stmt.compile(...))`, `.string` of it or of a helper named `compile_query()`),
    whose values its compiler escapes, and a `ZoneInfo`'s `key` (a zone of the tz
    database: `ZoneInfo()` raises for any other name). On a connection of an SQLite
    engine the function or module creates (`with engine.begin() as conn:`), a value
    spliced inside a single-quoted string with its quotes doubled (`"ATTACH '{}' AS
    b".format(path.replace("'", "''"))`) stays silent too: SQLite reads no backslash
    escape, so it cannot close the string; MySQL's `\\'` can, so on any other engine it
    is reported.

    Two more kinds of text stay silent. Bind-parameter names: a value spliced in right
    after a `:` (`f":{name}"`) names a parameter, and is accepted when that `text()` has
    its values bound (`.bindparams(...)`, or executed with a parameters argument).
    Names the schema declares: `.name`, `.key`, `.fullname`, `.schema` of a table,
    column or mapper (`Model.__table__`, `table.c[key]`, `inspect(Model).columns`, a loop
    over `mapper.columns`, a parameter annotated `Column`/`Table`, or one named `column`,
    `table`, `mapper` with no other annotation), `__tablename__`, and the keys of those
    collections (`table.c.keys()`): the code chose those names, not a request. Names
    read back from the database catalogue by an Inspector (`inspect(engine)`, a name
    bound to it, a parameter annotated `Inspector` or named `inspector`): the names
    `get_table_names()` and its kin return, and the `"name"`, `"column_names"`,
    `"referred_table"`… of what `get_indexes()`, `get_columns()`, `get_foreign_keys()`
    return, or of the `column_info` a `column_reflect` listener `(inspector, table,
    column_info)` is given, and `inspector.default_schema_name`; the database already
    holds those identifiers.

    Test code (`tests/`, `test_*.py`, `*_test.py`, `conftest.py`) is not checked: its
    values come from fixtures and literals, not from anyone's input.

    ## Why is this bad?
    Whatever the interpolated value contains becomes SQL: a name like `x' OR '1'='1` reads
    every row, and `'; DROP TABLE users; --` does worse. Bound parameters are sent apart
    from the statement, so the database never parses them as SQL; they also let the
    database cache the statement's plan.

    A bound parameter stands for a value, never for a name: where every spliced value
    sits where SQL wants a table or column name (after `FROM`, `JOIN`, `INTO`, `UPDATE`,
    `SELECT`, `ORDER BY`…, in quotes or not, or beside a qualifier's dot), whether an
    f-string, `+`, `%` or `.format()` puts it there, the message says so and the fix is
    to choose the name from a fixed set. So it does for any value of a statement that
    starts `CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `COMMENT ON`, `GRANT` or `REVOKE`:
    DDL takes no bound parameters at all (`CREATE DATABASE x ENCODING '{encoding}'`),
    and where it wants a number (`ALTER SEQUENCE s RESTART WITH {n}`, `INCREMENT BY`,
    MySQL's `AUTO_INCREMENT =`) the fix is `int()` where the value is interpolated;
    nor do PostgreSQL's `SET ROLE`, `SET search_path`, `SET TIME ZONE`, `SET
    statement_timeout` and the like, `SET LOCAL app.tenant = '...'` (a dotted name:
    an extension's or the application's own setting) or `SET LOCAL {option}` (name and
    value interpolated together), whose fix is `set_config()`, which takes the name and
    the value as bound parameters.

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
    A value checked against an allowlist of fixed strings in the same function is
    trusted only where the check is plainly on the way: inside `if x in ALLOWED:` (or an
    `and` of such a test), or after `if x not in ALLOWED:` whose body assigns `x` again
    or leaves (`raise`, `return`, `continue`), also when that check sits in each branch
    of an earlier `if`/`else` (`if x == "state": ... else: if x not in COLUMNS: x = "id"`).
    So is a call, earlier in the block, of a helper of the module that starts with
    `if identifier not in allowed: raise ...` and is handed the value and a fixed set
    (`_validate_identifier(table, ALLOWED_TABLES)`). Any other check in a helper, or one
    whose failure only logs, is not seen: map the input through a literal dict instead
    (`column = SORTABLE[sort]`), or suppress the line. `quoted_name(x)` is `x` as is
    (it asks the compiler to quote, which an f-string does not).
    Parameters annotated `int` are reported too (annotations are not checks); convert with
    `int(...)` where the value is interpolated, or bind it.

    The result of a helper defined in the same module (a plain function, undecorated)
    is followed up to three calls deep: it is fixed text when every value it returns
    is, counting the arguments this call passes for its parameters
    (`column_or(cols, "fee", "0.0")` returning `name` or `default`). Otherwise only the
    current function is followed: SQL built by a helper in another module and returned
    is not seen, and a parameter passed to `text()` as is stays silent.

    A parameter is trusted when every call of its function passes fixed text for it
    (positional, keyword, or a literal default; from another module, a literal or an
    UPPER_CASE name) and those calls are all its callers
    can be: a plain function of the module, undecorated, not in `__all__`, whose name
    the module uses only to call it (never passed on as a callback, e.g. to a
    scheduler or `Depends`) and no other module imports (tests aside: a test calling
    a helper is no caller a request reaches), or that the other modules importing it
    only call, passing literals for that parameter; a function without a leading
    underscore must moreover be in a module other modules import (one that nothing
    imports may be what outside callers use), or in an Alembic revision (which Alembic
    loads by its path, calling only `upgrade()` and `downgrade()`). Callers are
    followed three functions up. Methods, and functions other modules import and
    call with other values or hand on, are still reported for any parameter
    interpolated; so is a value read from the database
    (`conn.execute(...).scalar()`) passed as an argument. A module's `ContextVar` is
    trusted when its default and every `.set()` the project makes on it (by its name
    or a module attribute) store a literal; one handed around under another name and
    set there is missed. UPPER_CASE names are
    trusted as constants, and so are the names of schema objects: a `Table` built from
    a request's value would be missed.

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
    message = "`{sink}` receives SQL built {how} from {values} — {remedy}"

    VALID = (
        # A method of the class that joins the caller's fixed filters (Tracim's content API).
        Valid(
            """
            import typing
            from sqlalchemy import text

            class ContentApi:
                def _filters(
                    self, filters: typing.List[str], prefix: str = "where ", separator=" and "
                ):
                    if not filters:
                        return ""
                    return prefix + separator.join(filters)

                def read_status(self, workspace, show_deleted):
                    begin = []
                    if workspace:
                        begin.append("cr.workspace_id = :workspace_id")
                        pass
                    if not show_deleted:
                        begin.append("not cr.is_deleted")
                    sql = "select * from content_revisions cr {where}".format(
                        where=self._filters(begin)
                    )
                    return self.session.execute(text(sql), {"workspace_id": workspace})
            """
        ),
        # `%d` / `%.2f` format numbers only (a string raises TypeError); `%%` is a literal.
        Valid(
            """
            from sqlalchemy import text

            def purge(session, days, limit, ratio):
                session.execute(text("DELETE FROM audit WHERE at < now() - '%d day'" % days))
                session.execute(text("SELECT * FROM audit LIMIT %d OFFSET %d" % (limit, days)))
                session.execute(text("SELECT 100%% * hits FROM t WHERE r > %(r).2f" % {"r": ratio}))
            """
        ),
        # `%` given a name bound to a literal that nothing fills (Kinto's storage, which
        # formats every query with its `safe_holders`, here empty): no value is spliced in.
        Valid(
            """
            import sqlalchemy as sa

            def create(client, object_id, data):
                query = "INSERT INTO objects (id, data) VALUES (:object_id, (:data)::JSONB)"
                safe_holders = {}
                order = ("id",)
                with client.connect() as conn:
                    conn.execute(sa.text(query % safe_holders), {"object_id": object_id})
                    conn.execute(sa.text("SELECT * FROM objects ORDER BY %s" % order))
            """
        ),
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
        # The same quoting in a helper of another module.
        Valid(
            """
            from sqlalchemy import text
            from app.sql import identifier

            def drop(conn, table):
                conn.execute(text(f"DROP TABLE {identifier(table)}"))
            """,
            path="app/jobs.py",
            files={
                "app/__init__.py": "",
                "app/sql.py": """
                def identifier(s: str) -> str:
                    \"\"\"Return s as a quoted identifier.\"\"\"
                    return '"' + s.replace('"', '""').replace("\\0", "") + '"'
                """,
            },
        ),
        # A helper quoting for each database its own way, through a local name.
        Valid(
            """
            from sqlalchemy import text
            from app.sql import quote_identifier

            def add_column(conn, db_type, schema, table):
                quoted = f"{quote_identifier(db_type, schema)}.{quote_identifier(db_type, table)}"
                conn.execute(text(f"ALTER TABLE {quoted} ADD COLUMN created_at BIGINT"))
            """,
            path="app/jobs.py",
            files={
                "app/__init__.py": "",
                "app/sql.py": """
                def quote_identifier(db_type: str, identifier: str) -> str:
                    if db_type == "mysql":
                        escaped = identifier.replace("`", "``")
                        return f"`{escaped}`"
                    else:
                        escaped = identifier.replace('"', '""')
                        return f'"{escaped}"'
                """,
            },
        ),
        # A helper of an Alembic revision, called with literals only: Alembic loads the
        # file by its path and calls upgrade() and downgrade(), nothing else.
        Valid(
            """
            from alembic import op
            from sqlalchemy import text

            revision = "c301c59688d2"
            down_revision = "434c29e40511"

            def upgrade():
                update_key_type_rsa(1024)
                update_key_type_rsa(2048)

            def update_key_type_rsa(bits):
                op.execute(text(f"UPDATE certificates SET key_type='RSA{bits}' WHERE bits={bits}"))
            """,
            path="migrations/versions/c301c59688d2_.py",
        ),
        # Input let through only as one of a fixed set of strings: clamped to a default,
        # rejected, or used inside the membership test (also one branch of an if/else).
        Valid(
            """
            from flask import abort, request
            from sqlalchemy import text
            from app.models import User

            def list_users(session):
                sort = request.args.get("sort", "id")
                order = request.args.get("order", "").lower()
                if sort == "state":
                    state = request.args.get("state")
                else:
                    if sort not in User.__table__.columns.keys():
                        sort = "id"
                if not order in ["asc", "desc"]:
                    order = "asc"
                if sort != "state":
                    return session.execute(text(f"SELECT * FROM users ORDER BY {sort} {order}"))

            def list_books(session, sort, direction):
                if direction not in ("ASC", "DESC"):
                    abort(400)
                    return None
                if direction and sort in ["title", "author_sort"]:
                    sql = "SELECT * FROM books ORDER BY " + sort + " " + direction
                    return session.execute(text(sql))
            """,
            path="app/views.py",
            files={
                "app/__init__.py": "",
                "app/models.py": """
                from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
                class Base(DeclarativeBase):
                    pass
                class User(Base):
                    __tablename__ = "users"
                    id: Mapped[int] = mapped_column(primary_key=True)
                    name: Mapped[str]
                """,
            },
        ),
        # A fresh UUID is hex digits (and dashes): a throwaway table's name.
        Valid(
            """
            import uuid
            from uuid import uuid4
            from sqlalchemy import text

            def probe(conn):
                name = uuid4().hex
                conn.execute(text(f"CREATE TABLE IF NOT EXISTS test_{name} (id INT)"))
                conn.execute(text(f"DROP TABLE IF EXISTS test_{name}"))
                conn.execute(text(f"SELECT '{uuid.uuid4()}'"))
            """
        ),
        # Every character but letters, digits and underscores removed: no quote is left.
        Valid(
            """
            import re
            from sqlalchemy import text

            def purge(session, table_name):
                name = re.sub(r"[^a-zA-Z0-9_]", "", table_name)
                session.execute(text(f"DELETE FROM {name}"))
                session.execute(text("DELETE FROM " + re.sub(r"[^\\w]+", "_", table_name)))
            """
        ),
        # `column(name)` renders as a quoted identifier.
        Valid(
            """
            import sqlalchemy as sa
            def drop_indexes(conn, names):
                for name in names:
                    conn.execute(sa.text("DROP INDEX {0} CASCADE".format(sa.column(name))))
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
        # Fields of the rows of a literal table, and the literal lists they hold.
        Valid(
            """
            import sqlalchemy as sa

            ROLES = [
                {"name": "Owner", "permissions": ["*"]},
                {"name": "Viewer", "permissions": ["documents:read", "chats:read"]},
            ]

            def seed(connection):
                for role in ROLES:
                    perms = "ARRAY[" + ",".join(f"'{p}'" for p in role["permissions"]) + "]"
                    connection.execute(
                        sa.text(f"INSERT INTO roles VALUES ('{role['name']}', {perms})")
                    )
                    for perm in ROLES[0]["permissions"]:
                        connection.execute(sa.text(f"INSERT INTO grants (p) VALUES ('{perm}')"))
            """
        ),
        # A `column_reflect` listener: the column's name and the default schema come from
        # the database catalogue (GeoAlchemy2's reflection of spatial columns).
        Valid(
            """
            from sqlalchemy import text

            def reflect_geometry_column(inspector, table, column_info):
                column_name = column_info.get("name")
                schema = table.schema or inspector.default_schema_name
                query = f"SELECT DATA_TYPE FROM COLUMNS WHERE COLUMN_NAME = '{column_name}'"
                query += f" AND TABLE_SCHEMA = '{schema}'"
                query += " AND a.attname = '{col}'".format(col=column_info["name"])
                return inspector.bind.execute(text(query)).all()
            """
        ),
        # A ZoneInfo's key is a zone of the tz database (Polar's `SET LOCAL TIME ZONE`).
        Valid(
            """
            from zoneinfo import ZoneInfo
            from sqlalchemy import text

            async def quantities(session, timezone: ZoneInfo, name: str):
                await session.execute(text(f"SET LOCAL TIME ZONE '{timezone.key}'"))
                zone = ZoneInfo(name)
                await session.execute(text(f"SET LOCAL TIME ZONE '{zone.key}'"))
            """
        ),
        # SQL SQLAlchemy compiled, values rendered and escaped by it (aiida's EXPLAIN).
        Valid(
            """
            from sqlalchemy import select, text
            from app.utils import compile_query

            def explain(session, query, users):
                compiled = compile_query(query, literal_binds=True)
                rows = session.execute(text(f"EXPLAIN ANALYZE {compiled.string}")).fetchall()
                stmt = select(users).where(users.c.name == "x")
                literal = stmt.compile(compile_kwargs={"literal_binds": True})
                session.execute(text("EXPLAIN " + str(literal)))
                return rows
            """
        ),
        # Rows of a literal table reached through an outer loop (ironic's utf8mb4 revision).
        Valid(
            """
            import sqlalchemy as sa
            from alembic import op

            TEXT_COLUMNS = {
                "allocations": [("last_error", True), ("traits", True)],
                "chassis": [("extra", True)],
            }

            def upgrade():
                for table, columns in TEXT_COLUMNS.items():
                    modifications = []
                    for column, nullable in columns:
                        null_str = "NULL" if nullable else "NOT NULL"
                        modifications.append(f"MODIFY COLUMN {column} TEXT {null_str}")
                    for column in [name for name, _ in columns]:
                        modifications.append(f"ALTER COLUMN {column} DROP DEFAULT")
                    op.execute(sa.text(f"ALTER TABLE {table} " + ", ".join(modifications)))
            """
        ),
        # The larger or smaller of numbers is a number (a helper of the module returns it).
        Valid(
            """
            import time
            from sqlalchemy import text

            def remaining_ms(deadline: float) -> int:
                return max(0, int((deadline - time.monotonic()) * 1000))

            async def run(session, deadline, limit):
                timeout = remaining_ms(deadline)
                await session.execute(text(f"SET LOCAL statement_timeout = '{timeout}'"))
                await session.execute(text(f"SELECT 1 LIMIT {min(int(limit), 100)}"))
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
        # A loop over one literal table or another, chosen by a flag, through a helper.
        Valid(
            """
            from sqlalchemy import text
            STEPS = [("draft", "open", None), ("open", "done", "closed_at IS NOT NULL")]
            UNDO = [("done", "open", "closed_at IS NULL")]
            def _where(condition):
                where = "state = :old"
                if condition:
                    where += f" AND {condition}"
                return where
            def migrate(session, undo):
                steps = UNDO if undo else STEPS
                for old, new, condition in steps:
                    session.execute(
                        text(f"UPDATE items SET state = :new WHERE {_where(condition)}"),
                        {"old": old, "new": new},
                    )
            """
        ),
        # Column names from the keys of a dict this function fills with literal keys (from
        # a literal dict, or one key at a time), the values bound.
        Valid(
            """
            from sqlalchemy import text
            DEFAULTS = {"theme": "light", "page_size": 20}
            def copy_settings(session, old_row, new_id):
                if old_row:
                    settings: dict = {}
                    for i, (key, default) in enumerate(DEFAULTS.items()):
                        settings[key] = old_row[i] if old_row[i] is not None else default
                else:
                    settings = DEFAULTS
                settings["id"] = new_id
                columns = ", ".join(settings.keys())
                marks = ", ".join(f":{key}" for key in settings.keys())
                sql = f"INSERT INTO settings ({columns}) VALUES ({marks})"
                session.execute(text(sql), settings)
            """
        ),
        # Column names from the first of the rows this function built as dict literals.
        Valid(
            """
            from sqlalchemy import text
            def copy_rows(bind, records, v2):
                rows = []
                for record in records:
                    row = {"id": record["id"], "email": record.get("email")}
                    if v2:
                        row["served"] = record["served"]
                    rows.append(row)
                if rows:
                    columns = ", ".join(rows[0].keys())
                    marks = ", ".join(f":{key}" for key in rows[0].keys())
                    insert = f"INSERT INTO notices ({columns}) VALUES ({marks})"
                    for row in rows:
                        bind.execute(text(insert), row)
            """
        ),
        # Bind-parameter names built from column keys, the values bound beside them.
        Valid(
            """
            from sqlalchemy import bindparam, text
            def values_clause(table, rows, column_keys):
                binds, fragments = [], []
                for idx, row in enumerate(rows):
                    placeholders = []
                    for col_key in column_keys:
                        name = f"row{idx}_{col_key}"
                        binds.append(bindparam(name, value=row[col_key]))
                        placeholders.append(f":{name}")
                    fragments.append(f"({', '.join(placeholders)})")
                return text(f"(VALUES {', '.join(fragments)}) AS src").bindparams(*binds)
            def update(session, model_id, values):
                sets = ", ".join(f"{c.name} = :{c.key}" for c in Item.__table__.columns)
                stmt = text(f"UPDATE items SET {sets} WHERE id = :" + str(model_id))
                session.execute(stmt, values)
            """
        ),
        # Identifiers the schema declares: table, column and mapper names and keys.
        Valid(
            """
            from typing import Any
            from sqlalchemy import Column, Table, inspect, text
            def stats(conn, table: Table, Model, col: "Column[Any]"):
                for column in table.columns:
                    conn.execute(text(f"SELECT count({column.name}) FROM {table.fullname}"))
                for key in inspect(Model).columns.keys():
                    conn.execute(text(f"SELECT max({key}) FROM {Model.__tablename__}"))
                mapper = inspect(Model)
                for key, prop in mapper.columns.items():
                    conn.execute(text(f"SELECT {key}, {prop.key} FROM {mapper.local_table.name}"))
                names = ", ".join(c.name for c in Model.__table__.c)
                conn.execute(text(f"SELECT {names} FROM {Model.__table__.name}"))
                conn.execute(text(f"SELECT {table.c['id'].name} FROM {table.name}"))
                conn.execute(text(f"SELECT {col.name} FROM {col.table.name}"))
            class JSONB:
                def _set_table(self, column: Any, table: Any):
                    return text(f"{column.name} IS JSON")
                def trigger(self):
                    sql = "DROP TRIGGER {} ON {}"
                    return text(sql.format(self.tsvector_column.name, self.table.name))
            """
        ),
        # A helper of the module that returns one of its arguments or a literal, called
        # with fixed text: its result is fixed text too.
        Valid(
            """
            from sqlalchemy import text
            def column_or(columns, name, default):
                if name not in columns:
                    return default
                return name
            def copy_trades(conn, columns):
                fee = column_or(columns, "fee", "0.0")
                side = column_or(columns, "side", column_or(columns, "direction", "'buy'"))
                conn.execute(text(f"INSERT INTO trades SELECT id, {fee}, {side} FROM old"))
            """
        ),
        # Parameters of module helpers that every call passes fixed text (a literal, a
        # constant, a default, what the caller got from another such helper), in a module
        # whose other importers never reach them.
        Valid(
            """
            from sqlalchemy import text
            BACKUP = "trades_bak"
            def rename_table(conn, old, new):
                conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
            def _drop(conn, table="orders_bak"):
                conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
            def migrate(conn):
                rename_table(conn, "trades", BACKUP)
                rename_table(conn, old="orders", new="orders_bak")
                _drop(conn)
            """,
            path="app/migrations.py",
            files={
                "app/__init__.py": "",
                "app/models.py": "from app.migrations import migrate\n",
            },
        ),
        # A private helper other modules import too, every call there passing literals
        # (faraday's `_make_generic_count_property('host', 'service')`).
        Valid(
            _COUNT_HELPER,
            path="app/models.py",
            files={
                "app/__init__.py": "",
                "app/api.py": (
                    "from app.models import _count_property\n"
                    "def workspace_counts():\n"
                    "    return _count_property('workspace', 'credential', deferred=False)\n"
                ),
            },
        ),
        # A helper of `app/models/db.py` that a revision calls with its UPPER_CASE constant;
        # `from app.models import db` elsewhere is the `db` object the package's
        # `__init__` binds, not this module, so passing it on reaches no helper here
        # (privacyidea's sequence helpers).
        Valid(
            _SEQUENCE_HELPER,
            path="app/models/db.py",
            files=_sequence_files("from .db import db\n", "SEQUENCE_NAME"),
        ),
        # Checked by a helper that raises unless the name is in the fixed set it is given,
        # then wrapped in quoted_name() (fides' JSONB migration).
        Valid(_VALIDATED.format(check="raise ValueError(identifier)")),
        # Modules that import this one whole and read only other names through it.
        Valid(
            """
            from sqlalchemy import text
            def _select_from_view(session, view):
                return session.execute(text("SELECT * FROM %s" % view))
            def users_week(session):
                return _select_from_view(session, "dashboard_week_users")
            """,
            path="app/dashboard/data.py",
            files={
                "app/__init__.py": "",
                "app/dashboard/__init__.py": "",
                "app/views.py": (
                    "import app.dashboard.data as dashboard\n"
                    "def admin(session):\n"
                    "    return dashboard.users_week(session)\n"
                ),
                "app/jobs.py": (
                    "from app.dashboard import data\n"
                    "def refresh(session):\n"
                    "    data.users_week(session)\n"
                ),
            },
        ),
        # A function defined in a method, called there with literals only (faraday's
        # `Command.with_severity_counts`).
        Valid(_LOCAL_HELPER.format(second='"low"', tail="")),
        # A helper's dict of conditions, each caller passing a literal dict (faraday's
        # `_make_created_objects_sum_joined`).
        Valid(_JOINED_HELPER.format(filters="{'type': \"'vulnerability_web'\"}")),
        # A private helper nothing calls: no value reaches its parameter (faraday's
        # `_make_vuln_generic_count_by_severity`).
        Valid(_UNCALLED_HELPER.format(name="_count_by_severity", tail="")),
        # A module walked by reflection over its public names only (faraday's schema
        # diagram: `getattr(models, attr)` for each name of `dir(models)` not starting
        # with "_"): its private helpers stay the module's own.
        Valid(
            _COUNT_HELPER,
            path="app/models.py",
            files={
                "app/__init__.py": "",
                "app/diagram.py": _PUBLIC_WALK.format(skip='attr[0] == "_"'),
            },
        ),
        # A helper that a test imports besides its callers in the module; the test's own
        # SQL built from fixtures.
        Valid(
            """
            from sqlalchemy import text
            def backup_sequence(conn, table):
                conn.execute(text(f"ALTER SEQUENCE {table}_id_seq RENAME TO {table}_id_seq_bak"))
            def migrate(conn):
                backup_sequence(conn, "orders")
            """,
            path="app/migrations.py",
            files={
                "app/__init__.py": "",
                "app/models.py": "from app.migrations import migrate\n",
                "tests/test_migrations.py": (
                    "from sqlalchemy import text\n"
                    "from app.migrations import backup_sequence\n"
                    "def test_backup(conn, fee):\n"
                    "    backup_sequence(conn, 'trades')\n"
                    "    conn.execute(text(f'INSERT INTO trades (fee) VALUES ({fee.value})'))\n"
                ),
            },
        ),
        # A ContextVar whose default and every `.set()` in the project are literals.
        Valid(
            """
            from contextvars import ContextVar
            BEGIN_MODE: ContextVar[str | None] = ContextVar("begin_mode", default=None)
            def begin(conn):
                mode = BEGIN_MODE.get()
                if mode is not None:
                    conn.exec_driver_sql(f"BEGIN {mode}")
            def write_transaction(locking):
                return BEGIN_MODE.set("IMMEDIATE" if locking else "DEFERRED")
            """,
            path="app/db.py",
            files={
                "app/__init__.py": "",
                "app/migrate.py": "from app.db import BEGIN_MODE\nBEGIN_MODE.set('EXCLUSIVE')\n",
            },
        ),
        # Names read back from the database catalogue by an Inspector.
        Valid(
            """
            from sqlalchemy import inspect, text
            def drop_backup_indexes(engine, backup):
                inspector = inspect(engine)
                with engine.begin() as conn:
                    for index in inspector.get_indexes(backup):
                        conn.execute(text(f"DROP INDEX {index['name']}"))
                    for name in inspector.get_table_names():
                        conn.execute(text(f"ANALYZE {name}"))
                    pk = inspector.get_pk_constraint("trades")
                    conn.execute(text(f"SELECT {', '.join(pk['constrained_columns'])} FROM t"))
            """
        ),
        # Members of a project enum (lowercase too, imported or not): declared in the
        # class body, so their text is fixed by the code.
        Valid(
            """
            from sqlalchemy import text
            from app.states import State, Kind
            def purge(session):
                session.execute(text(f"DELETE FROM items WHERE state = '{State.archived.value}'"))
                session.execute(text(f"DELETE FROM items WHERE state = '{State.draft}'"))
                session.execute(text("DELETE FROM items WHERE kind = '%s'" % Kind.user.name))
            """,
            path="app/jobs.py",
            files={
                "app/__init__.py": "",
                "app/states.py": """
                    import enum
                    class State(str, enum.Enum):
                        draft = "draft"
                        archived = "archived"
                    class Base(enum.Enum):
                        pass
                    class Kind(Base):
                        user = "user"
                """,
            },
        ),
        # A member of a project enum held by a parameter annotated with the enum, or by
        # `self` in the enum's own methods.
        Valid(
            """
            from enum import StrEnum
            from sqlalchemy import text
            from app.states import State
            class Period(StrEnum):
                day = "day"
                week = "week"
                def as_interval(self):
                    return text(f"'1 {self.value}'::interval")
            def tagged(session, *, state: State, before: "State | None" = None):
                session.execute(text(f"SELECT id FROM items WHERE tags @> '[\\"{state}\\"]'"))
                if before is not None:
                    session.execute(text(f"SELECT id FROM items WHERE state = '{before.value}'"))
            """,
            path="app/jobs.py",
            files={
                "app/__init__.py": "",
                "app/states.py": """
                    import enum
                    class State(str, enum.Enum):
                        draft = "draft"
                        archived = "archived"
                """,
            },
        ),
        # Class attributes the class (or a base in another module) fixes to a literal.
        Valid(
            """
            from typing import ClassVar
            from sqlalchemy import text
            from app.base import Searchable
            class RecipeSearch(Searchable):
                _order: ClassVar[str] = "name"
                @classmethod
                def search(cls, session):
                    session.execute(text(f"SET pg_trgm.similarity_threshold = {cls._threshold}"))
                    return session.execute(text(f"SELECT * FROM recipes ORDER BY {cls._order}"))
            """,
            path="app/recipes.py",
            files={
                "app/__init__.py": "",
                "app/base.py": """
                    from typing import ClassVar
                    from pydantic import BaseModel
                    class Searchable(BaseModel):
                        _threshold: ClassVar[float] = 0.5
                """,
            },
        ),
        # A path escaped for a single-quoted string (its quotes doubled) on a connection
        # of an SQLite engine, which reads no backslash escape (calibre-web's ATTACH).
        Valid(
            """
            from sqlalchemy import create_engine, text

            def attach(dbpath):
                engine = create_engine("sqlite://")
                with engine.begin() as conn:
                    conn.execute(text("attach database '{}' as calibre;".format(
                        dbpath.replace("'", "''"))))
                    conn.exec_driver_sql("attach database '{0}' as b".format(
                        dbpath.replace("'", "''")))
                return engine
            """,
        ),
    )
    INVALID = (
        # The same helper when a bad name only logs; quoted_name() of the raw input.
        Invalid(_VALIDATED.format(check="log.warning(identifier)"), count=2),
        Invalid(
            """
            import sqlalchemy as sa
            from sqlalchemy.sql import quoted_name
            def rows(db, table_name):
                return db.execute(sa.text(f"SELECT id FROM {quoted_name(table_name, True)}"))
            """,
        ),
        # The same helper, the package binding the submodule itself: the module passed
        # on may be used any way. And a caller passing a name that is no constant.
        Invalid(
            _SEQUENCE_HELPER,
            path="app/models/db.py",
            files=_sequence_files("from . import db\n", "SEQUENCE_NAME"),
            line=3,
        ),
        Invalid(
            _SEQUENCE_HELPER,
            path="app/models/db.py",
            files=_sequence_files("from .db import db\n", "sequence_name"),
            line=3,
        ),
        # ... but one of the filters holds a value from the caller.
        Invalid(
            """
            import typing
            from sqlalchemy import text

            class ContentApi:
                def _filters(
                    self, filters: typing.List[str], prefix: str = "where ", separator=" and "
                ):
                    if not filters:
                        return ""
                    return prefix + separator.join(filters)

                def read_status(self, workspace, show_deleted):
                    begin = []
                    if workspace:
                        begin.append("cr.workspace_id = :workspace_id")
                        begin.append(f"cr.label = '{workspace.label}'")
                    if not show_deleted:
                        begin.append("not cr.is_deleted")
                    sql = "select * from content_revisions cr {where}".format(
                        where=self._filters(begin)
                    )
                    return self.session.execute(text(sql), {"workspace_id": workspace})
            """,
            line=22,
        ),
        # A row of the table holds a parameter; a table filled later is not literal.
        Invalid(
            """
            import sqlalchemy as sa

            ROLES = [{"name": "Owner"}]

            def seed(connection, extra_name):
                rows = [{"name": "Owner"}, {"name": extra_name}]
                for row in rows:
                    connection.execute(sa.text(f"INSERT INTO roles VALUES ('{row['name']}')"))
                ROLES.append({"name": extra_name})
                for role in ROLES:
                    connection.execute(sa.text(f"INSERT INTO roles VALUES ('{role['name']}')"))
            """,
            count=2,
        ),
        # `column_info` of a function that is no `column_reflect` listener's shape.
        Invalid(
            """
            from sqlalchemy import text

            def describe(conn, column_info):
                sql = f"SELECT * FROM docs WHERE column = '{column_info['name']}'"
                return conn.execute(text(sql)).all()

            def listen(inspector, column_info, table):
                sql = f"SELECT * FROM docs WHERE column = '{column_info['name']}'"
                return inspector.bind.execute(text(sql)).all()
            """,
            count=2,
        ),
        # `.key` of something else than a ZoneInfo.
        Invalid(
            """
            from sqlalchemy import text

            def lookup(conn, setting, timezone: str):
                conn.execute(text(f"SELECT * FROM settings WHERE key = '{setting.key}'"))
                conn.execute(text(f"SET TIME ZONE '{timezone}'"))
            """,
            count=2,
        ),
        # `.string` of what no compiler made: a regular expression's match is its input.
        Invalid(
            """
            import re
            from sqlalchemy import text

            def find(conn, query):
                match = re.match(r"name:(.*)", query)
                pattern = re.compile(query)
                conn.execute(text(f"SELECT * FROM users WHERE note = '{match.string}'"))
                conn.execute(text(f"SELECT * FROM users WHERE note ~ '{pattern.pattern}'"))
                conn.execute(text("SELECT * FROM t WHERE x = '" + str(re.compile(query)) + "'"))
            """,
            count=3,
        ),
        # SQLite's pragma functions take a table's name, which no bound parameter can be
        # (TrueNAS's revisions read `PRAGMA TABLE_INFO("{table_name}")`); the value of
        # a WHERE clause in the same function still gets the bind advice.
        Invalid(
            """
            from sqlalchemy import text

            def columns(conn, table_name, schema):
                info = conn.exec_driver_sql(f'PRAGMA TABLE_INFO("{table_name}")').all()
                keys = conn.execute(text(f"pragma {schema}.foreign_key_list( {table_name} )"))
                return info, keys.all()

            def named(conn, table_name, name):
                return conn.execute(text(f"SELECT * FROM t WHERE name = '{name}'")).all()
            """,
            count=3,
            expected_message=(
                "`exec_driver_sql()` receives SQL built with an f-string from `table_name` — "
                "table and column names cannot be bound parameters: choose them from a fixed set"
            ),
        ),
        # DDL binds nothing, whatever the value's place (sqlalchemy-utils' create_database).
        Invalid(
            """
            import sqlalchemy as sa

            def create_database(conn, database, encoding="utf8"):
                quoted = conn.dialect.identifier_preparer.quote(database)
                text = "CREATE DATABASE {} ENCODING '{}'".format(quoted, encoding)
                conn.execute(sa.text(text))
            """,
            expected_message=(
                "`text()` receives SQL built with `.format()` (line 5) from `encoding` — a DDL "
                "statement takes no bound parameters: choose them from a fixed set"
            ),
        ),
        Invalid(
            """
            import sqlalchemy as sa

            def create_index(conn, using):
                ddl = ["CREATE SPATIAL INDEX idx ON t (geom)"]
                ddl.append(f"USING {using}")
                conn.execute(sa.text(" ".join(ddl)))
                conn.execute(sa.text("create index ix on t (x) " + using))
            """,
            count=2,
            expected_message=(
                "`text()` receives SQL built with an f-string (line 5) from `using` — a DDL "
                "statement takes no bound parameters: choose them from a fixed set"
            ),
        ),
        # A session setting binds nothing either (Open Data Cube's `set role {user}`).
        Invalid(
            """
            from sqlalchemy import text

            def become(conn, quoted_user, path):
                conn.execute(text("set role {}".format(quoted_user)))
                conn.execute(text(f"SET LOCAL search_path TO {path}, public"))
            """,
            count=2,
            expected_message=(
                "`text()` receives SQL built with `.format()` from `quoted_user` — a SET "
                "statement takes no bound parameters: pass the value to `set_config()`, "
                "which does"
            ),
        ),
        # Row-level security's tenant, set per transaction from the request.
        Invalid(
            """
            from sqlalchemy import text

            def scope_to_tenant(session, request):
                tenant = request.headers["X-Tenant"]
                session.execute(text(f"SET LOCAL app.current_tenant = '{tenant}'"))
            """,
            line=5,
            expected_message=(
                "`text()` receives SQL built with an f-string from `tenant` — a SET "
                "statement takes no bound parameters: pass the value to `set_config()`, "
                "which does"
            ),
        ),
        # Not DDL: a query whose value could be bound, also one naming CREATE later.
        Invalid(
            """
            import sqlalchemy as sa

            def exists(conn, database):
                sql = "SELECT 1 FROM pg_database WHERE datname='%s'" % database
                conn.execute(sa.text(sql))
                conn.execute(sa.text(f"SELECT 'CREATE TABLE' || '{database}'"))
                conn.execute(sa.text(f"UPDATE settings SET role = '{database}'"))
            """,
            count=3,
            expected_message=(
                "`text()` receives SQL built with an f-string from `database` — bind them as "
                "parameters"
            ),
        ),
        # A value inside a quoted string, though a dot follows it as one follows a schema
        # (hypothesis/lms's public-id prefix): a value, which a parameter can carry.
        Invalid(
            """
            import sqlalchemy as sa

            def prefix_public_ids(conn, region):
                conn.execute(
                    sa.text(f"UPDATE organization SET public_id = '{region}.lms.org.' || public_id")
                )
                conn.execute(sa.text("UPDATE course SET public_id = '%s.c.' || public_id" % region))
            """,
            count=2,
            expected_message=(
                "`text()` receives SQL built with an f-string from `region` — bind them as "
                "parameters"
            ),
        ),
        # The outer table is filled at run time, or a row holds a parameter.
        Invalid(
            """
            import sqlalchemy as sa

            TEXT_COLUMNS = {"chassis": [("extra", True)]}
            RENAMES = {"nodes": [("old", "new")]}

            def convert(conn, extra_table, extra_column):
                TEXT_COLUMNS[extra_table] = [(extra_column, True)]
                for table, columns in TEXT_COLUMNS.items():
                    for column, nullable in columns:
                        conn.execute(sa.text(f"ALTER TABLE t MODIFY COLUMN {column} TEXT"))
                renames = {"ports": [(extra_column, "address")]}
                for table, pairs in renames.items():
                    for old, new in pairs:
                        conn.execute(sa.text(f"ALTER TABLE t RENAME COLUMN {old} TO {new}"))
            """,
            count=2,
        ),
        # The larger of a number and a request's text is that text.
        Invalid(
            """
            from sqlalchemy import text

            def run(session, name):
                session.execute(text(f"SELECT * FROM users WHERE name = '{max(name, 'a')}'"))
            """,
            line=4,
        ),
        # A dataclass field's class-level value is only a default: callers pass their own.
        # A class attribute a method assigns is no constant either.
        Invalid(
            """
            from dataclasses import dataclass
            from sqlalchemy import text
            @dataclass
            class Report:
                table: str = "orders"
                def rows(self, session):
                    return session.execute(text(f"SELECT * FROM {self.table}"))
            class Export:
                table = "orders"
                def rows(self, session, name):
                    self.table = name
                    return session.execute(text(f"SELECT * FROM {self.table}"))
            """,
            count=2,
        ),
        # An enum-annotated parameter given another value in the function; a parameter
        # annotated `str`.
        Invalid(
            """
            from sqlalchemy import text
            from app.states import State
            def tagged(session, state: State, form, label: str):
                if form:
                    state = form["state"]
                session.execute(text(f"SELECT id FROM items WHERE state = '{state.value}'"))
                session.execute(text(f"SELECT id FROM items WHERE label = '{label}'"))
            """,
            count=2,
            path="app/jobs.py",
            files={
                "app/__init__.py": "",
                "app/states.py": "import enum\nclass State(enum.Enum):\n    draft = 'draft'\n",
            },
        ),
        # A helper of another module that wraps its argument in quotes without doubling
        # the ones inside: `x" OR "1"="1` breaks out.
        Invalid(
            """
            from sqlalchemy import text
            from app.sql import identifier

            def drop(conn, table):
                conn.execute(text(f"DROP TABLE {identifier(table)}"))
            """,
            path="app/jobs.py",
            files={
                "app/__init__.py": "",
                "app/sql.py": "def identifier(s):\n    return '\"' + s + '\"'\n",
            },
        ),
        # The same spelling on a class that is no enum: its attribute may be set from input.
        Invalid(
            """
            from sqlalchemy import text
            class Filters:
                state = "draft"
            def purge(session, request):
                Filters.state = request.args["state"]
                session.execute(text(f"DELETE FROM items WHERE state = '{Filters.state}'"))
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `Filters.state` "
                "— bind them as parameters"
            ),
        ),
        # The helper returns what it was given, and one call gives it a request's value;
        # another helper returns something that is none of its arguments.
        Invalid(
            """
            from sqlalchemy import text
            def column_or(columns, name, default):
                return name if name in columns else default
            def label_of(row):
                return row.label
            def copy_trades(conn, columns, request, row):
                fee = column_or(columns, "fee", request.args["fee"])
                conn.execute(text(f"INSERT INTO trades SELECT id, {fee} FROM old"))
                conn.execute(text(f"SELECT {label_of(row)} FROM trades"))
            """,
            count=2,
        ),
        # One of the tables the loop may go over comes from a request.
        Invalid(
            """
            from sqlalchemy import text
            STEPS = [("draft", None)]
            def migrate(session, form):
                steps = STEPS if form.get("default") else form["steps"]
                for old, condition in steps:
                    session.execute(text(f"UPDATE items SET state = 'x' WHERE {condition}"))
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `condition` "
                "— bind them as parameters"
            ),
        ),
        # A key from a request stored in a dict, or an item of a list replaced by one:
        # iterating them yields it.
        Invalid(
            """
            from sqlalchemy import text
            def insert(session, form):
                row = {"name": form["name"]}
                row[form["column"]] = form["value"]
                session.execute(text(f"INSERT INTO t ({', '.join(row.keys())}) VALUES (1)"))
                session.execute(text(f"INSERT INTO t ({', '.join(row)}) VALUES (1)"))
                columns = ["id", "name"]
                columns[1] = form["column"]
                session.execute(text(f"SELECT {', '.join(columns)} FROM t"))
            """,
            count=3,
        ),
        # A table name after VACUUM's options is a name too (buildbot's cleanup).
        Invalid(
            """
            from sqlalchemy import text
            def compact(conn, table):
                conn.execute(text(f"VACUUM FULL {table}"))
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `table` — table and column "
                "names cannot be bound parameters: choose them from a fixed set"
            ),
        ),
        # The first of a list of rows, one of them a request's own dict (its keys too).
        Invalid(
            """
            from sqlalchemy import text
            def insert_rows(session, form):
                rows = [{"name": "default"}]
                rows.append(form)
                columns = ", ".join(rows[0].keys())
                session.execute(text(f"INSERT INTO t ({columns}) VALUES (1)"))
            """,
        ),
        # The helper's other module passes a request's value.
        Invalid(
            _COUNT_HELPER,
            path="app/models.py",
            files={
                "app/__init__.py": "",
                "app/api.py": (
                    "from flask import request\n"
                    "from app.models import _count_property\n"
                    "def counts():\n"
                    "    return _count_property('workspace', request.args['table'])\n"
                ),
            },
            line=5,
            expected_message=(
                "`text()` receives SQL built with an f-string (line 4) from `children` — "
                "bind them as parameters"
            ),
        ),
        # One call of the helper passes a request's value for `new`.
        Invalid(
            """
            from sqlalchemy import text
            def rename_table(conn, old, new):
                conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
            def migrate(conn):
                rename_table(conn, "trades", "trades_bak")
            def rename_from_form(conn, request):
                rename_table(conn, "orders", request.form["name"])
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `new` — table and column "
                "names cannot be bound parameters: choose them from a fixed set"
            ),
            path="app/migrations.py",
            files={"app/__init__.py": "", "app/main.py": "from app.migrations import migrate\n"},
        ),
        # Callers this module cannot see: a route handler, a callback handed to a
        # scheduler, a function another module imports, a module nothing imports.
        Invalid(
            """
            from flask import Flask
            from sqlalchemy import text
            app = Flask(__name__)
            @app.get("/count/<table>")
            def count(conn, table):
                return conn.scalar(text(f"SELECT count(*) FROM {table}"))
            def _purge(conn, table):
                conn.execute(text(f"DELETE FROM {table}"))
            def export(conn, table):
                return conn.execute(text(f"SELECT * FROM {table}"))
            def nightly(conn, scheduler):
                count(conn, "users")
                _purge(conn, "logs")
                scheduler.add_job(_purge, args=(conn, "audit"))
                export(conn, "users")
            """,
            count=3,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/cli.py": "from app.jobs import export\n"},
        ),
        Invalid(
            """
            from sqlalchemy import text
            def export(conn, table):
                return conn.execute(text(f"SELECT * FROM {table}"))
            def main(conn):
                export(conn, "users")
            """,
        ),
        # A module imported whole that reaches the helper: by its name, by `getattr()`,
        # or passed on.
        Invalid(
            """
            from sqlalchemy import text
            def _select_from_view(session, view):
                return session.execute(text("SELECT * FROM %s" % view))
            def users_week(session):
                return _select_from_view(session, "dashboard_week_users")
            """,
            path="app/dashboard/data.py",
            files={
                "app/__init__.py": "",
                "app/dashboard/__init__.py": "",
                "app/views.py": (
                    "import app.dashboard.data as dashboard\n"
                    "def admin(session, name):\n"
                    "    return dashboard._select_from_view(session, name)\n"
                ),
            },
        ),
        Invalid(
            """
            from sqlalchemy import text
            def _select_from_view(session, view):
                return session.execute(text("SELECT * FROM %s" % view))
            def users_week(session):
                return _select_from_view(session, "dashboard_week_users")
            """,
            path="app/dashboard/data.py",
            files={
                "app/__init__.py": "",
                "app/dashboard/__init__.py": "",
                "app/views.py": (
                    "from app.dashboard import data\n"
                    "def admin(session, name):\n"
                    "    return getattr(data, '_select_from_' + name)(session, name)\n"
                ),
            },
        ),
        # The same local helper given the method's parameter, or handed on.
        Invalid(_LOCAL_HELPER.format(second="name", tail=""), line=7),
        Invalid(_LOCAL_HELPER.format(second='"low"', tail=", _sev_expr"), line=7),
        # A helper splicing a column and an operator around the bind parameters it names,
        # the statement bound by its caller (faraday's get_json_query()): only the
        # structure is left to choose.
        Invalid(
            _JSON_FILTER.format(bound=".bindparams(**params)"),
            expected_message=(
                "`text()` receives SQL built with an f-string from `query` — its values are "
                "bound already; the names and operators `json_condition()` splices in cannot "
                "be: choose them from a fixed set"
            ),
        ),
        # The same statement run without its parameters bound.
        Invalid(
            _JSON_FILTER.format(bound=""),
            expected_message=(
                "`text()` receives SQL built with an f-string from `query` — bind them as "
                "parameters"
            ),
        ),
        # The same dict given a value, or a key, from the caller's parameter.
        Invalid(_JOINED_HELPER.format(filters="{'type': kind}"), line=7),
        Invalid(_JOINED_HELPER.format(filters="{kind: 'true'}"), line=7),
        # The same helper public, or looked up by name in the module's globals().
        Invalid(_UNCALLED_HELPER.format(name="count_by_severity", tail="")),
        Invalid(
            _UNCALLED_HELPER.format(
                name="_count_by_severity",
                tail="def count(kind):\n    return globals()['_count_by_' + kind](kind)\n",
            )
        ),
        # The same walk reaches a public helper, and without the `continue` any name.
        Invalid(
            _COUNT_HELPER.replace("_count_property", "count_property"),
            path="app/models.py",
            files={
                "app/__init__.py": "",
                "app/diagram.py": _PUBLIC_WALK.format(skip='attr.startswith("_")'),
            },
        ),
        Invalid(
            _COUNT_HELPER,
            path="app/models.py",
            files={"app/__init__.py": "", "app/diagram.py": _PUBLIC_WALK.format(skip="not attr")},
        ),
        # Checks that do not hold the value to the allowlist: a failure that only logs,
        # a value taken again after the check, an `or` that lets anything through.
        Invalid(
            """
            import logging
            from flask import request
            from sqlalchemy import text

            def list_books(session, force):
                order = request.args["order"]
                if order not in ("asc", "desc"):
                    logging.warning("odd order %s", order)
                session.execute(text("SELECT * FROM books ORDER BY title " + order))
                sort = request.args["sort"]
                if sort not in ("title", "author"):
                    sort = "title"
                sort = request.args.get("sort2", sort)
                session.execute(text("SELECT * FROM books ORDER BY " + sort))
                if order in ("asc", "desc") or force:
                    session.execute(text("SELECT * FROM books ORDER BY id " + order))
            """,
            count=3,
        ),
        # One `.set()` of the ContextVar, in another module, stores a request's value.
        Invalid(
            """
            from contextvars import ContextVar
            from sqlalchemy import text
            current_schema: ContextVar[str] = ContextVar("current_schema", default="public")
            def tenant_rows(conn):
                return conn.execute(text(f"SELECT * FROM {current_schema.get()}.rows"))
            """,
            path="app/db.py",
            files={
                "app/__init__.py": "",
                "app/web.py": (
                    "from app import db\n"
                    "def middleware(request):\n"
                    "    db.current_schema.set(request.headers['X-Tenant'])\n"
                ),
            },
        ),
        # Records shaped like reflection's, but from a request or from something that is
        # no Inspector.
        Invalid(
            """
            from sqlalchemy import text
            def drop_indexes(conn, payload, search_client):
                for index in payload["indexes"]:
                    conn.execute(text(f"DROP INDEX {index['name']}"))
                for index in search_client.get_indexes():
                    conn.execute(text(f"DROP INDEX {index['name']}"))
            """,
            count=2,
        ),
        # A bind marker names a parameter, but the column name before it is a parameter's
        # value, not the schema's: a name, which no bound parameter can be (aim's setter).
        Invalid(
            """
            from sqlalchemy import text
            def set_field(session, field, value):
                stmt = text(f"UPDATE users SET {field} = :{field}").bindparams(**{field: value})
                return session.execute(stmt)
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `field` — table and column "
                "names cannot be bound parameters: choose them from a fixed set"
            ),
        ),
        # A bind marker whose value is never bound: the name is spliced in as SQL.
        Invalid(
            """
            from sqlalchemy import text
            def lookup(session, key):
                return session.execute(text(f"SELECT * FROM settings WHERE name = :{key}"))
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `key` — bind them as parameters"
            ),
        ),
        # `.name` of user data (a request model), not of a schema object.
        Invalid(
            """
            from sqlalchemy import text
            from app.schemas import ColumnSpec, UserIn
            def add_column(conn, column: ColumnSpec, user: UserIn, form):
                conn.execute(text(f"ALTER TABLE t ADD COLUMN {column.name} TEXT"))
                conn.execute(text(f"SELECT * FROM users WHERE name = '{user.name}'"))
                conn.execute(text(f"SELECT * FROM {form.table.name}"))
            """,
            count=3,
        ),
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
        # Names where SQL wants them, a schema-qualified table by concatenation: no bound
        # parameter can stand there, so the advice is an allowlist.
        Invalid(
            """
            from sqlalchemy import text
            def dump(session, schema, table, sort):
                sql = "SELECT * FROM " + schema + "." + table
                return session.execute(text(f"{sql} ORDER BY {sort}")).all()
            """,
            expected_message=(
                "`text()` receives SQL built by concatenation (line 3) from `schema`, `table`, "
                "`sort` — table and column names cannot be bound parameters: choose them from a "
                "fixed set"
            ),
        ),
        # A name and a value: the value is to be bound, the name chosen.
        Invalid(
            """
            from sqlalchemy import text
            def count(session, table, owner):
                return session.scalar(text(f"SELECT count(*) FROM {table} WHERE owner = '{owner}'"))
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `table`, `owner` "
                "— bind the values as parameters, and choose the table and column names "
                "from a fixed set"
            ),
        ),
        Invalid(
            """
            import sqlalchemy as sa
            def delete(conn, table, ids):
                conn.execute(sa.text("DELETE FROM " + table + " WHERE id IN (" + ids + ")"))
            """,
            expected_message=(
                "`text()` receives SQL built by concatenation from `table`, `ids` "
                "— bind the values as parameters, and choose the table and column names "
                "from a fixed set"
            ),
        ),
        # `.hex` of something that is not a new UUID.
        Invalid(
            """
            from sqlalchemy import text

            def probe(conn, token):
                conn.execute(text(f"DROP TABLE IF EXISTS test_{token.hex}"))
            """,
            expected_message=(
                "`text()` receives SQL built with an f-string from `token.hex` — a DDL "
                "statement takes no bound parameters: choose them from a fixed set"
            ),
        ),
        # What these patterns keep includes a space, a dot or a quote.
        Invalid(
            """
            import re
            from sqlalchemy import text

            def purge(session, table_name):
                session.execute(text(f"DELETE FROM {re.sub(r'[^a-z_ ]', '', table_name)}"))
                session.execute(text(f"DELETE FROM {re.sub(r'[^a-z.]', '', table_name)}"))
                session.execute(text(f"DELETE FROM {re.sub(r'[^a-z]', '; ', table_name)}"))
                session.execute(text(f"DELETE FROM {re.sub(r'[a-z]', '', table_name)}"))
            """,
            count=4,
        ),
        # `table(name)` renders its name as is, and so does a literal column.
        Invalid(
            """
            import sqlalchemy as sa
            def drop(conn, name):
                conn.execute(sa.text("DROP TABLE {0}".format(sa.table(name))))
                conn.execute(sa.text(f"DROP INDEX {sa.column(name, is_literal=True)}"))
            """,
            count=2,
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
                # `%d` formats `n` as a number: only `column` can carry SQL, as a name.
                "`text()` receives SQL built with `%` formatting from `column` — table and "
                "column names cannot be bound parameters: choose them from a fixed set"
            ),
        ),
        # The same `safe_holders` filled from a parameter after it was bound.
        Invalid(
            """
            import sqlalchemy as sa

            def listing(client, sort):
                query = "SELECT * FROM objects ORDER BY %(sorting)s"
                safe_holders = {}
                safe_holders["sorting"] = sort
                with client.connect() as conn:
                    return conn.execute(sa.text(query % safe_holders)).all()
            """,
            line=8,
        ),
        Invalid(
            """
            from sqlalchemy import text
            def refresh(session, view):
                session.execute(text("REFRESH MATERIALIZED VIEW CONCURRENTLY %s" % view))
            """,
            expected_message=(
                "`text()` receives SQL built with `%` formatting from `view` — table and "
                "column names cannot be bound parameters: choose them from a fixed set"
            ),
        ),
        # A quoted name from `.format()`: no bound parameter can stand for it either.
        Invalid(
            """
            from sqlalchemy import text
            def leaderboard(session, info):
                view = "users_rank_%s" % info
                sql = 'SELECT * FROM "{}" WHERE rank <= :top'.format(view)
                return session.execute(text(sql), {"top": 10})
            """,
            expected_message=(
                "`text()` receives SQL built with `%` formatting (line 3) from `info` — table and "
                "column names cannot be bound parameters: choose them from a fixed set"
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
        # A sequence restarted at a number read elsewhere (freqtrade's migrations): the
        # fix is int(), as a bound parameter is no more allowed than in other DDL; the
        # twin, `{int(order_id)}`, stays silent.
        Invalid(
            """
            from sqlalchemy import text

            def set_sequence_ids(engine, order_id, trade_id):
                with engine.begin() as conn:
                    conn.execute(text(f"ALTER SEQUENCE orders_id_seq RESTART WITH {order_id}"))
                    conn.execute(text(f"ALTER SEQUENCE trades_id_seq RESTART {int(trade_id)}"))
            """,
            line=5,
            expected_message=(
                "`text()` receives SQL built with an f-string from `order_id` — a DDL statement "
                "takes no bound parameters: convert the number with `int()` where it is "
                "interpolated"
            ),
        ),
        # Quotes doubled, but on an engine that may be MySQL's, whose backslash escapes
        # let `\\'` close the string.
        Invalid(
            """
            from sqlalchemy import create_engine, text

            def attach(url, dbpath):
                engine = create_engine(url)
                with engine.begin() as conn:
                    conn.execute(text("ATTACH '{}' AS c".format(dbpath.replace("'", "''"))))
            """,
            line=6,
            expected_message=(
                '`text()` receives SQL built with `.format()` from `dbpath.replace("\'", "\'\'")` '
                "— bind them as parameters"
            ),
        ),
        # On SQLite, a value spliced outside the quotes is not escaped by doubling them.
        Invalid(
            """
            from sqlalchemy import create_engine, text

            def attach(dbpath):
                engine = create_engine("sqlite://")
                with engine.begin() as conn:
                    conn.execute(text("ATTACH {} AS c".format(dbpath.replace("'", "''"))))
            """,
            line=6,
            expected_message=(
                '`text()` receives SQL built with `.format()` from `dbpath.replace("\'", "\'\'")` '
                "— bind them as parameters"
            ),
        ),
    )

    @cached_property
    def strings(self) -> StringFlow:
        return StringFlow(self.ctx.dataflow)

    @calls_to(named=("text",), ending=("exec_driver_sql",))
    def visit_Call(self, node: ast.Call) -> None:
        if self.ctx.in_tests:
            # Values in tests come from fixtures and literals: nothing reaches them from
            # outside, and a test's SQL is not run on anyone's input.
            return
        sink = self._sql_argument(node)
        if sink is None:
            return
        label, argument = sink
        value = self.strings.value(argument)
        if not value.dynamic:
            return
        found = value.interpolations
        if label == "text()" and any(i.placeholder for i in found) and self._bound(node):
            # `f":{name}"` names a bind parameter whose value is bound: that is the fix.
            found = tuple(i for i in found if not i.placeholder)
            if not found:
                return
        escaped = self._sqlite_literals(node, argument)
        found = tuple(i for i in found if id(i.value) not in escaped)
        if not found:
            return
        how, values = self._describe(node, found)
        names = "map table or column names from input through a dict of allowed names"
        leading = self.strings.leading_text(argument)
        numbers = {
            id(value) for value, before in template_slots(argument) if _NUMBER_WANTED.search(before)
        }
        helpers = self._binding_helpers(node, found)
        if helpers is not None:
            # The values are bound: what is left to choose is the statement's structure.
            remedy = (
                f"its values are bound already; the names and operators {helpers} splices "
                "in cannot be: choose them from a fixed set"
            )
            hint = f"{names} (`column = SORTABLE[sort]`), and operators from a dict too"
        elif all(item.identifier for item in found):
            # A bound parameter stands for a value, never for a name: that advice would fail.
            remedy = _NAMES_REMEDY
            hint = f"{names} (`column = SORTABLE[sort]`), or build it with `table()`/`column()`"
        elif leading is not None and (setting := _SET.match(leading)) is not None:
            remedy = _SET_REMEDY
            spelled = " ".join(setting.group("name").split())
            name = _SETTING_NAMES.get(spelled.lower(), spelled)
            local = "true" if (setting.group("scope") or "").upper() == "LOCAL" else "false"
            hint = (
                f"`text(\"SELECT set_config('{name}', :value, {local})\")` with "
                f'`{{"value": ...}}` sets `{name}` with the value bound ({local}: '
                f"{'for this transaction only' if local == 'true' else 'for the session'})"
            )
        elif leading is not None and (setting := _SET_ANY.match(leading)) is not None:
            remedy = _SET_REMEDY
            local = "true" if (setting.group("scope") or "").upper() == "LOCAL" else "false"
            hint = (
                f'`text("SELECT set_config(:name, :value, {local})")` with '
                f'`{{"name": ..., "value": ...}}` binds both, the name checked against '
                "the settings allowed"
            )
        elif (
            leading is not None
            and _DDL.match(leading)
            and all(id(item.value) in numbers for item in found)
        ):
            remedy = _DDL_NUMBER_REMEDY
            shown = source_segment(self.ctx, found[0].value)
            hint = f"`{{int({shown})}}` lets only a number into the statement"
        elif leading is not None and _DDL.match(leading):
            remedy = _DDL_REMEDY
            hint = (
                "check each value against the ones allowed (`if encoding not in ENCODINGS: "
                "raise ValueError(encoding)`), or quote a name with "
                "`conn.dialect.identifier_preparer.quote(name)`"
            )
        else:
            # Names and values side by side: each needs its own fix.
            mixed = any(item.identifier for item in found)
            remedy = _MIXED_REMEDY if mixed else "bind them as parameters"
            hint = f"{_BIND_HINT if label == 'text()' else _DRIVER_BIND_HINT}; {names}"
        self.report(node, sink=label, how=how, values=values, remedy=remedy, hint=hint)

    def _sqlite_literals(self, sink: ast.Call, argument: ast.expr) -> set[int]:
        """The ``id()`` of the values ``argument`` splices inside a single-quoted string,
        escaped by doubling their quotes (``'{}'.format(path.replace("'", "''"))``), when
        ``sink`` runs on a connection of a local SQLite engine (``with engine.begin() as
        conn: conn.execute(text(...))``): SQLite reads no backslash escape, so such a
        value cannot close the string. MySQL's backslash escapes can (``\\'``): elsewhere
        the value is reported."""
        escaped = {
            id(value)
            for value, before in template_slots(argument)
            if in_sql_string(before) and _doubles_quotes(value)
        }
        if not escaped or not self._on_sqlite(sink):
            return set()
        return escaped

    def _on_sqlite(self, sink: ast.Call) -> bool:
        """``conn.execute(sink)`` or ``sink``, ``conn.exec_driver_sql(...)``, where every
        binding of ``conn`` is ``with engine.begin()/connect() as conn`` of an engine the
        function or module binds to an SQLite ``create_engine()``."""
        run = sink
        if not (isinstance(sink.func, ast.Attribute) and sink.func.attr == "exec_driver_sql"):
            parent = self.ctx.parent(sink)
            if not (
                isinstance(parent, ast.Call)
                and isinstance(parent.func, ast.Attribute)
                and parent.func.attr in _EXECUTING
                and parent.args
                and parent.args[0] is sink
            ):
                return False
            run = parent
        assert isinstance(run.func, ast.Attribute)
        receiver = run.func.value
        if not isinstance(receiver, ast.Name):
            return False
        flow = self.ctx.dataflow
        connections = flow.bindings(receiver)
        if not connections:
            return False
        for binding in connections:
            opened = binding.value
            if not (
                binding.kind is BindingKind.WITH
                and isinstance(opened, ast.Call)
                and isinstance(opened.func, ast.Attribute)
                and opened.func.attr in ("begin", "connect")
                and isinstance(opened.func.value, ast.Name)
            ):
                return False
            engines = flow.bindings(opened.func.value)
            if not engines or not all(
                b.kind is BindingKind.ASSIGN
                and isinstance(b.value, ast.Call)
                and self.ctx.names.sqla_name(b.value.func) == "create_engine"
                and sqlite_engine(b.value, self.strings)
                for b in engines
            ):
                return False
        return True

    def _binding_helpers(self, node: ast.Call, found: tuple[Interpolation, ...]) -> str | None:
        """The helpers (`` `get_json_query()` ``) whose results make up all of what the
        bound statement ``node`` splices in, each returning SQL that names its bind
        parameters (see StringFlow.binding_helper); None otherwise."""
        if not found or not self._bound(node):
            return None
        helpers: list[str] = []
        for item in found:
            function = self.strings.binding_helper(item.value)
            if function is None:
                return None
            shown = f"`{function.name}()`"
            if shown not in helpers:
                helpers.append(shown)
        return ", ".join(helpers)

    def _bound(self, text_call: ast.Call) -> bool:
        """Whether the parameters of this ``text()`` are bound: ``.bindparams(...)`` on it,
        or the statement executed with a parameters argument, directly or through the
        name it is assigned to."""
        if self._binds(text_call):
            return True
        target = assigned_name(self.ctx.parent(text_call))
        if target is None:
            return False
        scope = self.ctx.enclosing_scope(text_call)
        return any(
            isinstance(use, ast.Name)
            and use.id == target
            and isinstance(use.ctx, ast.Load)
            and self._binds(use)
            for use in ast.walk(scope)
        )

    def _binds(self, statement: ast.expr) -> bool:
        parent = self.ctx.parent(statement)
        if isinstance(parent, ast.Attribute) and parent.attr == "bindparams":
            call = self.ctx.parent(parent)
            return isinstance(call, ast.Call) and call.func is parent
        if (
            isinstance(parent, ast.Call)
            and isinstance(parent.func, ast.Attribute)
            and parent.func.attr in _EXECUTING
            and parent.args
            and parent.args[0] is statement
        ):
            return len(parent.args) > 1 or any(
                k.arg in ("params", "parameters") for k in parent.keywords
            )
        return False

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


def _doubles_quotes(value: ast.expr) -> bool:
    """``x.replace("'", "''")``: text escaped for a single-quoted SQL string."""
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "replace"
        and len(value.args) == 2
        and not value.keywords
        and all(isinstance(a, ast.Constant) for a in value.args)
        and [a.value for a in value.args] == ["'", "''"]  # type: ignore[attr-defined]
    )
