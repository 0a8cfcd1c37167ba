"""SQD607: a column type change that rewrites (or scans) an existing table under lock."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from sqla_doctor.findings import Finding, Severity
from sqla_doctor.static.alembic.ops import Operation
from sqla_doctor.static.alembic.project import AlembicAnalysis, MigrationFile
from sqla_doctor.static.alembic.rule import MigrationRule
from sqla_doctor.static.alembic.types import ColumnType, change_cost, from_python, from_sql
from sqla_doctor.static.dataflow import contains_node
from sqla_doctor.static.rule import Invalid, Valid

_HEAD = """
            import sqlalchemy as sa
            from alembic import op

            revision = "b2"
            down_revision = "a1"
"""

_INI = {
    "alembic.ini": "[alembic]\nscript_location = migrations\n",
    "migrations/env.py": "",
}
_CREATED = """
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None


def upgrade():
    op.create_table(
        "user",
        sa.Column("email", sa.String(length=255), primary_key=True),
        sa.Column("password", sa.String(length=128), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=False),
    )
"""

# Manila's initial revision: its tables built as `Table` objects, then created.
_TABLES = """
from alembic import op
from sqlalchemy import Column, MetaData, String, Table

revision = "a1"
down_revision = None


def upgrade():
    meta = MetaData()
    shares = Table(
        "shares", meta,
        Column("id", String(length=36), primary_key=True),
        Column("volume_type_id", String(length={length})),
    )
    shares.create(op.get_bind())
"""
# A column renamed with its type restated, as MySQL's CHANGE COLUMN needs.
_RENAMED = (
    _HEAD
    + """
            def upgrade():
                op.alter_column(
                    "shares", "volume_type_id", new_column_name="share_type_id",
                    type_=sa.String(length=36),
                )
"""
)


# The project's TypeDecorators (flaskbb's UTCDateTime), which migrations name.
_DECORATORS = {
    "app/__init__.py": "",
    "app/types.py": """
        import sqlalchemy as sa
        from sqlalchemy import types

        class UTCDateTime(types.TypeDecorator):
            impl = types.DateTime
            cache_ok = True

        class Slug(sa.types.TypeDecorator):
            impl = sa.String(255)

        class Flexible(sa.types.TypeDecorator):
            impl = sa.String(255)

            def load_dialect_impl(self, dialect):
                return dialect.type_descriptor(sa.Text())
        """,
}


_ENUM_CLASS = {
    "app/__init__.py": "",
    "app/constants.py": """
        from enum import Enum

        class DocumentSource(str, Enum):
            SLACK = "slack"
            GOOGLE_CLOUD_STORAGE = "google_cloud_storage"

            def describe(self) -> str:
                return self.value.title()
    """,
}


class ColumnTypeChange(MigrationRule):
    """
    ## What it does
    Checks for a column type change on an existing table that PostgreSQL cannot make in
    the catalogue alone: `op.alter_column(..., type_=...)` (or `batch_op.alter_column`, or
    raw `ALTER COLUMN ... TYPE`), such as `Integer` → `BigInteger`, `String` → `Integer`,
    `DateTime` → `DateTime(timezone=True)`, or a shorter `String`. Changes PostgreSQL makes
    without touching the rows are not reported: a longer `String(n)`, `String` → `Text`,
    a wider `Numeric` with the same scale, `REAL` → `Float(precision=3)` (PostgreSQL's
    `float(p)` is `real` up to 24 bits, else `double precision`), a non-native `Enum`
    (a VARCHAR as long as its longest value or member name) to a `String` at least as
    long. The old type is read
    from `existing_type=`, which autogenerate writes, or from the type the revision's
    `downgrade()` changes the column back to, or else from the types the revisions below
    it give the column of that table and schema in `create_table`, `add_column`,
    `alter_column` and `Table(...)` objects they build, when every one of them is cheap
    to change from. A `postgresql_using=`
    (or raw SQL's `USING`) that only casts the column to the new kind of type
    (`"value::text"`, `CAST(value AS text)`) keeps such a change cheap; any other
    expression rewrites. `DateTime` ↔ `DateTime(timezone=True)`
    rewrites unless the migration's session runs in UTC, where PostgreSQL 12+ changes the
    catalogue only: the message says so and gives the `SET LOCAL TimeZone = 'UTC'` fix.
    A `TypeDecorator` counts as the type it stores: the project class's `impl`
    (`impl = sa.DateTime` given the decorator's own arguments, so
    `UTCDateTime(timezone=True)` is a `timestamptz`; not read when its `__init__` or
    `load_dialect_impl()` decides), and sqlalchemy-utils' `ChoiceType` as
    `Unicode(255)` unless given another `impl`.

    ## Why is this bad?
    `ALTER COLUMN ... TYPE` takes an ACCESS EXCLUSIVE lock, then rewrites every row and
    rebuilds every index of the table (or, to shorten a `varchar`, reads every row) before
    it commits. Nothing can read or write the table meanwhile: minutes of downtime on a
    big table, and a queue of blocked requests behind it even while it waits for the lock.

    ## Example
    ```python
    def upgrade():
        op.alter_column(
            "orders", "id", existing_type=sa.Integer(), type_=sa.BigInteger()
        )
    ```

    Use instead, expand and contract over several releases:
    ```python
    # 1. add the new column (nullable, no rewrite)
    op.add_column("orders", sa.Column("id_big", sa.BigInteger(), nullable=True))
    # 2. write both columns (a trigger or the app), backfill in batches outside
    #    the migration's transaction
    # 3. switch the app to the new column, then swap names and drop the old one
    ```
    For text, widen instead: `String(50)` → `String(255)` or `Text` changes only the
    catalogue.
    For an enum cast to another enum type (a new `sa.Enum`, or the
    rename-create-cast-drop revision that adds a value, in raw SQL or through a temporary
    type `sa.Enum(..., name=...).create()` makes), the message says
    `ALTER TYPE ... ADD VALUE`: when the new type only adds values, that changes the
    catalogue only, and PostgreSQL 12+ runs it inside the migration's transaction.

    ## References
    - [PostgreSQL: ALTER TABLE ... SET DATA TYPE](https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-NOTES)
    - [Squawk: changing-column-type](https://squawkhq.com/docs/changing-column-type)
    - [strong_migrations: Changing the type of a column](https://github.com/ankane/strong_migrations#changing-the-type-of-a-column)
    """

    code = "SQD607"
    name = "column-type-change"
    pitfalls = ("P40",)
    severity = Severity.WARNING
    message = (
        "changing {target} {change} {cost} under an ACCESS EXCLUSIVE lock: every read "
        "and write of {table} waits until it finishes — {remedy}"
    )

    VALID = (
        Valid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("users", "name", existing_type=sa.String(50), type_=sa.String(255))
                op.alter_column("users", "bio", existing_type=sa.VARCHAR(500), type_=sa.Text())
                op.alter_column(
                    "orders", "total", existing_type=sa.Numeric(10, 2), type_=sa.Numeric(12, 2)
                )
                op.alter_column("orders", "note", type_=sa.Text())
                op.execute("ALTER TABLE orders ALTER COLUMN comment TYPE text")
            """
        ),
        # A revision autogenerated against MySQL: its text types are text on PostgreSQL.
        Valid(
            _HEAD
            + """
            from sqlalchemy.dialects import mysql

            def upgrade():
                with op.batch_alter_table("incident") as batch_op:
                    batch_op.alter_column(
                        "fingerprint", existing_type=mysql.TINYTEXT(), type_=sa.TEXT()
                    )
            """
        ),
        # Float(precision=3) is PostgreSQL's float(3), which is real; Float() and
        # DOUBLE_PRECISION are both double precision (faraday's vulnerability.risk).
        Valid(
            _HEAD
            + """
            from sqlalchemy.dialects import postgresql

            def upgrade():
                op.alter_column(
                    "vulnerability", "risk", existing_type=sa.REAL(),
                    type_=sa.Float(precision=3, asdecimal=1),
                )
                op.alter_column(
                    "rates", "value", existing_type=sa.Float(), type_=postgresql.DOUBLE_PRECISION()
                )
                op.execute("ALTER TABLE scores ALTER COLUMN value TYPE float(24)")

            def downgrade():
                op.execute("ALTER TABLE scores ALTER COLUMN value TYPE float4")
            """
        ),
        # A non-native Enum is a VARCHAR as long as its longest value, or member name of
        # the project's enum class (onyx): a String at least that long widens it.
        Valid(
            _HEAD
            + """
            from app.constants import DocumentSource

            def upgrade():
                op.alter_column(
                    "connector", "source",
                    existing_type=sa.Enum(DocumentSource, native_enum=False),
                    type_=sa.String(length=50),
                )
                op.alter_column(
                    "persona", "recency_bias",
                    existing_type=sa.Enum("auto", "favor_recent", native_enum=False),
                    type_=sa.String(),
                )
            """,
            files=_ENUM_CLASS,
        ),
        # The same enum type, before and after: its value was added by ALTER TYPE.
        Valid(
            _HEAD
            + """
            from sqlalchemy.dialects import postgresql

            def upgrade():
                old = postgresql.ENUM("ui", "manual", name="methods_enum", create_type=False)
                new = postgresql.ENUM("ui", "manual", "wizard", name="methods_enum")
                op.execute("ALTER TYPE methods_enum ADD VALUE IF NOT EXISTS 'wizard'")
                op.alter_column("plugins", "method", existing_type=old, type_=new)
            """
        ),
        # PostgreSQL returns early; the rebuild below it runs on the other databases.
        Valid(
            _HEAD
            + """
            def upgrade():
                if op.get_bind().engine.name == "postgresql":
                    op.execute("ALTER TYPE status ADD VALUE 'archived'")
                    return
                old = sa.Enum("open", "closed", name="status")
                new = sa.Enum("open", "closed", "archived", name="status")
                with op.batch_alter_table("orders") as batch_op:
                    batch_op.alter_column("status", type_=new, existing_type=old)
            """
        ),
        # A table created in the same migration is empty.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_table("invoices", sa.Column("id", sa.Integer(), primary_key=True))
                op.alter_column("invoices", "id", existing_type=sa.Integer(), type_=sa.BigInteger())
            """
        ),
        # Without `existing_type=`, the type downgrade() changes the column back to is
        # the one it had: varchar(32) to varchar(64) widens in the catalogue.
        Valid(
            _HEAD
            + """
            from sqlalchemy import Unicode

            def upgrade():
                op.alter_column("updates", "alias", type_=Unicode(64))
            def downgrade():
                op.alter_column("updates", "alias", type_=Unicode(32))
            """
        ),
        # Raw SQL whose USING only casts the column to the new type, a widening that
        # downgrade() undoes: PostgreSQL changes the catalogue only.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute(
                    "ALTER TABLE forms ALTER COLUMN price SET DATA TYPE numeric(11,2) "
                    "USING price::numeric(11,2);"
                    "ALTER TABLE fees ALTER COLUMN amount TYPE numeric(11,2) "
                    "USING CAST(amount AS numeric(11,2))"
                )
            def downgrade():
                op.execute(
                    "ALTER TABLE forms ALTER COLUMN price SET DATA TYPE numeric(8,2) "
                    "USING price::numeric(8,2);"
                    "ALTER TABLE fees ALTER COLUMN amount TYPE numeric(8,2)"
                )
            """
        ),
        # downgrade() reverses a widening: the old type is known to fit.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("users", "name", existing_type=sa.String(50), type_=sa.String(100))

            def downgrade():
                op.alter_column("users", "name", existing_type=sa.String(100), type_=sa.String(50))
            """
        ),
        # No `existing_type=`: the type another revision gave the column is read instead
        # (the same length, a longer one). A USING that only casts the column to the new
        # kind of type leaves a catalogue-only change as it is.
        Valid(
            _HEAD
            + """
            def upgrade():
                with op.batch_alter_table("user") as batch_op:
                    batch_op.alter_column("email", type_=sa.String(length=255), nullable=False)
                    batch_op.alter_column("password", type_=sa.String(length=256))
                op.alter_column(
                    "user", "password", existing_type=sa.String(length=256), type_=sa.Text(),
                    postgresql_using="password::text",
                )
            """,
            path="migrations/versions/b2.py",
            files={**_INI, "migrations/versions/a1.py": _CREATED},
        ),
        # The type the revision below gives the column in a `Table(...)`: the same.
        Valid(
            _RENAMED,
            path="migrations/versions/b2.py",
            files={**_INI, "migrations/versions/a1.py": _TABLES.format(length=36)},
        ),
        # Raw SQL that widens what the revision below created: the catalogue only.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute("ALTER TABLE user ALTER COLUMN password TYPE varchar(1024)")
            """,
            path="migrations/versions/b2.py",
            files={**_INI, "migrations/versions/a1.py": _CREATED},
        ),
        # Only on MySQL, told by the URL's scheme (CTFd's millisecond precision revision).
        Valid(
            """
            from alembic import op
            from sqlalchemy.dialects import mysql
            def upgrade():
                bind = op.get_bind()
                url = str(bind.engine.url)
                if url.startswith("mysql"):
                    op.alter_column("users", "created", type_=mysql.DATETIME(fsp=6))
                if not str(op.get_bind().engine.url).startswith(("postgres", "postgresql")):
                    op.alter_column("teams", "created", type_=mysql.DATETIME(fsp=6))
            """
        ),
        # Only on MySQL, behind another condition too (gnocchi's timestamp revision).
        Valid(
            _HEAD
            + """
            def upgrade():
                bind = op.get_bind()
                if bind and bind.engine.name == "mysql":
                    op.alter_column("resource", "started_at", type_=sa.DateTime())
            """
        ),
        # A helper's parameter: the revision does not say here which type it is.
        Valid(
            _HEAD
            + """
            def alter_column(table, column, type_):
                op.alter_column(table, column, type_=type_)
            def upgrade():
                alter_column("object", "blob_name", type_=sa.String(collation="C"))
            """
        ),
        # TypeDecorators stored as a longer varchar: sqlalchemy-utils' ChoiceType
        # (Unicode(255), zou's role column) and the project's `impl = sa.String(255)`.
        Valid(
            _HEAD
            + """
            import sqlalchemy_utils
            import app.types

            def upgrade():
                op.alter_column(
                    "person", "role", existing_type=sa.VARCHAR(length=30),
                    type_=sqlalchemy_utils.types.choice.ChoiceType(ROLE_TYPES),
                )
                op.alter_column(
                    "post", "slug", existing_type=sa.String(100), type_=app.types.Slug()
                )
            """,
            path="migrations/versions/b2.py",
            files=_DECORATORS,
        ),
        # Cast twice in a row, each step only widening: from VARCHAR(20) to unbounded.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("pairs", "status", existing_type=sa.String(16), type_=sa.String(20))
                op.execute("ALTER TABLE pairs ALTER COLUMN status TYPE varchar")
            """
        ),
    )
    INVALID = (
        # A TypeDecorator over DateTime, given timezone=True: timestamp to timestamptz
        # (flaskbb's UTCDateTime); one whose load_dialect_impl() decides is not read.
        Invalid(
            _HEAD
            + """
            import app.types

            def upgrade():
                op.alter_column(
                    "users", "lastseen", existing_type=sa.DateTime(),
                    type_=app.types.UTCDateTime(timezone=True),
                )
                op.alter_column(
                    "post", "slug", existing_type=sa.String(100), type_=app.types.Flexible()
                )
            """,
            path="migrations/versions/b2.py",
            files=_DECORATORS,
            count=2,
            expected_message=(
                "changing users.lastseen from sa.DateTime() to "
                "app.types.UTCDateTime(timezone=True) rewrites the table and its indexes "
                "under an ACCESS EXCLUSIVE lock: every read and write of users waits until it "
                "finishes — unless the session's TimeZone is UTC, where PostgreSQL 12+ changes "
                "the catalogue only: run `op.execute(\"SET LOCAL TimeZone = 'UTC'\")` before "
                "it, or add a new column, backfill it, and switch over"
            ),
        ),
        # The same rename, the `Table(...)` below it giving a longer type: a scan.
        Invalid(
            _RENAMED,
            path="migrations/versions/b2.py",
            files={**_INI, "migrations/versions/a1.py": _TABLES.format(length=64)},
            line=8,
        ),
        # The same widening with a USING that computes: every row is rewritten.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.execute(
                    "ALTER TABLE forms ALTER COLUMN price SET DATA TYPE numeric(11,2) "
                    "USING price::numeric(11,2) * 100"
                )
            def downgrade():
                op.execute("ALTER TABLE forms ALTER COLUMN price SET DATA TYPE numeric(8,2)")
            """,
            line=8,
        ),
        # downgrade() gives the old type back: Integer, which BigInteger rewrites.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("orders", "id", type_=sa.BigInteger())
            def downgrade():
                op.alter_column("orders", "id", type_=sa.Integer())
            """,
            line=8,
            expected_message=(
                "changing orders.id from sa.Integer() to sa.BigInteger() rewrites the table and "
                "its indexes under an ACCESS EXCLUSIVE lock: every read and write of orders "
                "waits until it finishes — add a new column, backfill it, and switch over instead"
            ),
        ),
        # The table comes from a loop over literal names: one finding for the call.
        Invalid(
            _HEAD
            + """
            def upgrade():
                for table in ("orders", "invoices"):
                    op.alter_column(table, "id", type_=sa.BigInteger())
            def downgrade():
                for table in ("orders", "invoices"):
                    op.alter_column(table, "id", type_=sa.Integer())
            """,
            line=9,
            expected_message=(
                "changing orders.id from sa.Integer() to sa.BigInteger() rewrites the table "
                "and its indexes under an ACCESS EXCLUSIVE lock: every read and write of orders "
                "waits until it finishes — add a new column, backfill it, and switch over "
                "instead (its loop does the same for 1 more value: invoices.id)"
            ),
        ),
        # Table and column both from a loop over literal pairs (aiida's TEXT to JSONB
        # revision).
        Invalid(
            _HEAD
            + """
            from sqlalchemy.dialects import postgresql
            FIELDS = (("db_dbnode", "attributes"), ("db_dblog", "metadata"))
            def upgrade():
                for table_name, column in FIELDS:
                    op.alter_column(
                        table_name, column, existing_type=sa.TEXT, type_=postgresql.JSONB,
                        postgresql_using=f"{column}::jsonb",
                    )
            """,
            line=11,
            expected_message=(
                "changing db_dbnode.attributes from sa.TEXT to postgresql.JSONB rewrites the "
                "table and its indexes under an ACCESS EXCLUSIVE lock: every read and write of "
                "db_dbnode waits until it finishes — add a new column, backfill it, and switch "
                "over instead (its loop does the same for 1 more value: db_dblog.metadata)"
            ),
        ),
        # The URL tested for PostgreSQL, or a test about something else than the URL.
        Invalid(
            """
            from alembic import op
            import sqlalchemy as sa
            def upgrade():
                url = str(op.get_bind().engine.url)
                if url.startswith("postgresql"):
                    op.alter_column("users", "id", existing_type=sa.Integer, type_=sa.BigInteger)
                name = op.get_context().opts.get("tag", "")
                if name.startswith("mysql"):
                    op.alter_column("teams", "id", existing_type=sa.Integer, type_=sa.BigInteger)
            """,
            count=2,
        ),
        # A condition that lets PostgreSQL in; its else branch runs there too.
        Invalid(
            _HEAD
            + """
            def upgrade():
                bind = op.get_bind()
                if bind and bind.engine.name != "mysql":
                    op.alter_column("resource", "started_at", type_=sa.DateTime())
                if bind and bind.engine.name == "postgresql":
                    pass
                else:
                    op.alter_column("resource", "ended_at", type_=sa.DateTime())
            """,
            count=2,
        ),
        # A type imported and named bare is known.
        Invalid(
            _HEAD
            + """
            from sqlalchemy.dialects.postgresql import JSONB
            def upgrade():
                op.alter_column("static_config", "cfg", type_=JSONB)
            """,
            line=9,
        ),
        # Raw SQL that shortens it, or makes an `Integer` a `BIGINT`.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.execute("ALTER TABLE user ALTER COLUMN password TYPE varchar(64)")
                op.execute("ALTER TABLE user ALTER COLUMN quota TYPE bigint")
            """,
            path="migrations/versions/b2.py",
            files={**_INI, "migrations/versions/a1.py": _CREATED},
            count=2,
        ),
        # Another schema's `user` table is not this one: its type says nothing here.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("user", "email", type_=sa.String(length=255), schema="auth")
            """,
            path="migrations/versions/b2.py",
            files={**_INI, "migrations/versions/a1.py": _CREATED},
        ),
        # The other revision made it an `Integer`; a USING that computes a new value.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("user", "quota", type_=sa.BigInteger())
                op.alter_column(
                    "user", "password", existing_type=sa.String(length=128), type_=sa.Text(),
                    postgresql_using="lower(password)::text",
                )
            """,
            path="migrations/versions/b2.py",
            files={**_INI, "migrations/versions/a1.py": _CREATED},
            count=2,
        ),
        # A new enum type: every row is cast to it.
        Invalid(
            _HEAD
            + """
            from sqlalchemy.dialects import postgresql

            def upgrade():
                old = postgresql.ENUM("ui", "manual", name="methods_enum")
                new = postgresql.ENUM("ui", "manual", "wizard", name="methods_enum_v2")
                op.alter_column("plugins", "method", existing_type=old, type_=new)
            """,
            line=12,
            expected_message=(
                "changing plugins.method from postgresql.ENUM('ui', 'manual', "
                "name='methods_enum') to postgresql.ENUM('ui', 'manual', 'wizard', "
                "name='methods_enum_v2') rewrites the table and its indexes under an ACCESS "
                "EXCLUSIVE lock: every read and write of plugins waits until it finishes — if "
                "the new type only adds values, add them to the old one instead (`ALTER TYPE "
                "methods_enum ADD VALUE '...'` changes the catalogue only, and PostgreSQL 12+ "
                "runs it in a transaction); else add a new column, backfill it, and switch over"
            ),
        ),
        # An enum's values extended by renaming it and casting to a new one (fides); a
        # varchar cast to that enum has no old type to extend.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.execute("alter type connectiontype rename to connectiontype_old")
                op.execute("create type connectiontype as enum('postgres', 'mariadb')")
                op.execute(
                    "alter table connectionconfig alter column connection_type type "
                    "connectiontype using connection_type::text::connectiontype"
                )
                op.execute("drop type connectiontype_old")
                op.alter_column(
                    "secrets", "kind", existing_type=sa.String(20),
                    type_=sa.Enum("a", "b", name="connectiontype"),
                )

            def downgrade():
                op.execute("alter type connectiontype rename to connectiontype_old")
                op.execute("create type connectiontype as enum('postgres')")
                op.execute(
                    "alter table connectionconfig alter column connection_type type "
                    "connectiontype using connection_type::text::connectiontype"
                )
            """,
            count=2,
            expected_message=(
                "changing connectionconfig.connection_type from connectiontype to "
                "connectiontype rewrites the table and its indexes under an ACCESS EXCLUSIVE "
                "lock: every read and write of connectionconfig waits until it finishes — if "
                "the new type only adds values, add them to the old one instead (`ALTER TYPE "
                "connectiontype ADD VALUE '...'` changes the catalogue only, and PostgreSQL "
                "12+ runs it in a transaction); else add a new column, backfill it, and switch "
                "over"
            ),
        ),
        # real to double precision: Float() without a precision, or one above 24 bits.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("vulnerability", "risk", existing_type=sa.REAL(), type_=sa.Float())
                op.alter_column(
                    "vulnerability", "score", existing_type=sa.Float(precision=3),
                    type_=sa.Float(precision=53),
                )
            """,
            count=2,
            expected_message=(
                "changing vulnerability.risk from sa.REAL() to sa.Float() rewrites the table "
                "and its indexes under an ACCESS EXCLUSIVE lock: every read and write of "
                "vulnerability waits until it finishes — add a new column, backfill it, and "
                "switch over instead"
            ),
        ),
        # An enum's values extended through a temporary enum type that sa.Enum creates
        # (faraday): each cast rewrites, and the type to add the value to is the one
        # the column had before the first cast.
        Invalid(
            _HEAD
            + """
            ROLES = ["admin", "pentester", "client"]

            def upgrade():
                old_type = sa.Enum(*ROLES, name="user_roles")
                new_type = sa.Enum(*sorted(ROLES + ["asset_owner"]), name="user_roles")
                tmp_type = sa.Enum(*sorted(ROLES + ["asset_owner"]), name="_user_roles")
                tmp_type.create(op.get_bind(), checkfirst=False)
                op.execute(
                    "ALTER TABLE faraday_user ALTER COLUMN role TYPE _user_roles"
                    " USING role::text::_user_roles"
                )
                old_type.drop(op.get_bind(), checkfirst=False)
                new_type.create(op.get_bind(), checkfirst=False)
                op.execute(
                    "ALTER TABLE faraday_user ALTER COLUMN role TYPE user_roles"
                    " USING role::text::user_roles"
                )
                tmp_type.drop(op.get_bind(), checkfirst=False)

            def downgrade():
                op.execute(
                    "ALTER TABLE faraday_user ALTER COLUMN role TYPE user_roles"
                    " USING role::text::user_roles"
                )
            """,
            count=2,
            expected_message=(
                "changing faraday_user.role from _user_roles to user_roles rewrites the "
                "table and its indexes under an ACCESS EXCLUSIVE lock: every read and write "
                "of faraday_user waits until it finishes — if the new type only adds values, "
                "add them to the old one instead (`ALTER TYPE user_roles ADD VALUE '...'` "
                "changes the catalogue only, and PostgreSQL 12+ runs it in a transaction); "
                "else add a new column, backfill it, and switch over"
            ),
        ),
        # A varchar cast to an enum type sa.Enum creates: no old enum to extend.
        Invalid(
            _HEAD
            + """
            def upgrade():
                sa.Enum("a", "b", name="kinds").create(op.get_bind())
                op.execute("ALTER TABLE secrets ALTER COLUMN kind TYPE kinds USING kind::kinds")

            def downgrade():
                op.execute("ALTER TABLE secrets ALTER COLUMN kind TYPE varchar(20)")
            """,
            expected_message=(
                "changing secrets.kind from VARCHAR(20) to kinds rewrites the table and its "
                "indexes under an ACCESS EXCLUSIVE lock: every read and write of secrets "
                "waits until it finishes — add a new column, backfill it, and switch over "
                "instead"
            ),
        ),
        # Shorter than the enum's longest member name, or a varchar cut down to the
        # longest value: every row is read.
        Invalid(
            _HEAD
            + """
            from app.constants import DocumentSource

            def upgrade():
                op.alter_column(
                    "connector", "source",
                    existing_type=sa.Enum(DocumentSource, native_enum=False),
                    type_=sa.String(length=10),
                )
                op.alter_column(
                    "cc_pair", "status", existing_type=sa.String(20),
                    type_=sa.Enum("ACTIVE", "INITIAL_INDEXING", native_enum=False),
                )
            """,
            files=_ENUM_CLASS,
            count=2,
            expected_message=(
                "changing connector.source from sa.Enum(DocumentSource, native_enum=False) "
                "to sa.String(length=10) reads every row to check the new length under an "
                "ACCESS EXCLUSIVE lock: every read and write of connector waits until it "
                "finishes — add a new column, backfill it, and switch over instead"
            ),
        ),
        # Cast twice in a row (onyx's d961aca62eb3: to text, then to VARCHAR(20)): the
        # second starts from the first's type, a length check, not a rewrite.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("pairs", "status", existing_type=sa.String(16), type_=sa.Text())
                op.execute("ALTER TABLE pairs ALTER COLUMN status TYPE VARCHAR(20)")
            """,
            expected_message=(
                "changing pairs.status from sa.Text() to VARCHAR(20) reads every row to check "
                "the new length under an ACCESS EXCLUSIVE lock: every read and write of pairs "
                "waits until it finishes — add a new column, backfill it, and switch over "
                "instead"
            ),
        ),
        # Two casts of a column that are no enum swap: branches for two databases, and
        # raw SQL on tables of two schemas; each is judged from its own old type.
        Invalid(
            _HEAD
            + """
            from sqlalchemy import Float as FLOAT

            def upgrade():
                if use_alter():
                    op.alter_column("recipes", "rating", existing_type=sa.INTEGER(), type_=FLOAT)
                else:
                    with op.batch_alter_table("recipes") as batch_op:
                        batch_op.alter_column("rating", existing_type=sa.INTEGER(), type_=FLOAT)
                op.execute("ALTER TABLE categories.settings ALTER COLUMN value TYPE jsonb")
                op.execute("ALTER TABLE events.settings ALTER COLUMN value TYPE jsonb")
            """,
            count=4,
        ),
        # The early return is for SQLite: PostgreSQL goes on to the change.
        Invalid(
            _HEAD
            + """
            def upgrade():
                if op.get_bind().dialect.name == "sqlite":
                    return
                op.alter_column("orders", "id", existing_type=sa.Integer(), type_=sa.BigInteger())
            """,
            line=10,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column(
                    "orders", "id", existing_type=sa.Integer(), type_=sa.BigInteger()
                )
            """,
            line=8,
            expected_message=(
                "changing orders.id from sa.Integer() to sa.BigInteger() rewrites the table and "
                "its indexes under an ACCESS EXCLUSIVE lock: every read and write of orders "
                "waits until it finishes — add a new column, backfill it, and switch over instead"
            ),
        ),
        # timestamp to timestamptz: no rewrite on PostgreSQL 12+ in a UTC session.
        Invalid(
            _HEAD
            + """
            from sqlalchemy.dialects import postgresql

            def upgrade():
                op.alter_column(
                    "users",
                    "updated_at",
                    existing_type=postgresql.TIMESTAMP(),
                    type_=postgresql.TIMESTAMP(timezone=True),
                )
            """,
            expected_message=(
                "changing users.updated_at from postgresql.TIMESTAMP() to "
                "postgresql.TIMESTAMP(timezone=True) rewrites the table and its indexes under "
                "an ACCESS EXCLUSIVE lock: every read and write of users waits until it "
                "finishes — unless the session's TimeZone is UTC, where PostgreSQL 12+ changes "
                "the catalogue only: run `op.execute(\"SET LOCAL TimeZone = 'UTC'\")` before "
                "it, or add a new column, backfill it, and switch over"
            ),
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                with op.batch_alter_table("users") as batch_op:
                    batch_op.alter_column("name", existing_type=sa.String(255), type_=sa.String(50))
                op.alter_column(
                    "events", "at", existing_type=sa.DateTime(), type_=sa.DateTime(timezone=True)
                )
                op.execute("ALTER TABLE orders ALTER COLUMN status TYPE int USING status::int")
            """,
            count=3,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column(
                    "orders",
                    "status",
                    type_=sa.Enum("new", "paid", name="order_status"),
                    postgresql_using="status::order_status",
                )
            """,
            line=8,
        ),
    )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        resolver = migration.file.ctx.names
        # The type each column was last changed to in this upgrade(), and the one it
        # had before the first change: a rename-create-cast-drop revision casts to a
        # temporary enum, then to the new one.
        changed: dict[_Column, tuple[ColumnType, ColumnType | None, ast.AST]] = {}
        for operation in self.operations(migration):
            if operation.kind != "alter_type":
                continue
            if migration.is_new_table(operation.table, at=operation) is not False:
                continue
            if operation.via_sql:
                new = from_sql(operation.type_text or "")
                old = None
                cast = from_sql(operation.using_sql) if operation.using_sql else None
                using = operation.using_sql is not None and not (
                    new is not None and cast is not None and cast.family == new.family
                )
            else:
                new_node = _assigned(migration, operation.type_node)
                if isinstance(new_node, ast.Name) and resolver.qualify(new_node) is None:
                    continue  # a helper's parameter (`type_=type_`): which type is not said
                index = migration.file.ctx.index
                new = from_python(new_node, resolver, index)
                old = from_python(
                    _assigned(migration, operation.existing_type_node), resolver, index
                )
                using_node = (
                    next(
                        (k.value for k in operation.node.keywords if k.arg == "postgresql_using"),
                        None,
                    )
                    if isinstance(operation.node, ast.Call)
                    else None
                )
                using = using_node is not None and not (
                    new is not None and _plain_cast(using_node, operation.column, new)
                )
            if new is None:
                continue
            key = (operation.schema or operation.sql_schema, operation.table, operation.column)
            earlier = changed.get(key)
            # An earlier cast of the column in this upgrade() is where this one starts,
            # unless the two are branches (`if postgresql: ... else:`) of which one runs.
            if earlier is not None and not _alternatives(migration, earlier[2], operation.node):
                old, original = earlier[0], earlier[1]
            else:
                if old is None:
                    old = _restored_type(migration, operation)
                original = old
            changed[key] = (new, original, operation.node)
            if old is None and not using:
                below = _types_elsewhere(migration, operation)
                if below and all(change_cost(t, new) is None for t in below):
                    continue  # every type another revision gives the column: no rewrite
            cost = "rewrite" if using else change_cost(old, new)
            if cost is None:
                continue
            change = f"from {old.text} to {new.text}" if old is not None else f"to {new.text}"
            enum = _enum_swap(migration, original, new)
            if cost == "rewrite unless UTC":
                remedy = (
                    "unless the session's TimeZone is UTC, where PostgreSQL 12+ changes the "
                    "catalogue only: run `op.execute(\"SET LOCAL TimeZone = 'UTC'\")` before "
                    "it, or add a new column, backfill it, and switch over"
                )
            elif enum is not None:
                remedy = (
                    f"if the new type only adds values, add them to the old one instead "
                    f"(`ALTER TYPE {enum} ADD VALUE '...'` changes the catalogue only, and "
                    "PostgreSQL 12+ runs it in a transaction); else add a new column, "
                    "backfill it, and switch over"
                )
            else:
                remedy = "add a new column, backfill it, and switch over instead"
            yield self.at(
                migration.file,
                operation.node,
                target=operation.shown_target,
                table=operation.shown_table,
                change=change,
                cost=_COSTS[cost],
                remedy=remedy,
            )


_Column = tuple[str | None, str | None, str | None]  # schema, table, column


def _alternatives(migration: MigrationFile, first: ast.AST, second: ast.AST) -> bool:
    """Whether ``first`` and ``second`` lie in different branches of one ``if``."""
    for node in ast.walk(migration.file.tree):
        if not isinstance(node, ast.If):
            continue
        sides = [
            (
                any(contains_node(s, op) for s in node.body),
                any(contains_node(s, op) for s in node.orelse),
            )
            for op in (first, second)
        ]
        if (sides[0][0] and sides[1][1]) or (sides[0][1] and sides[1][0]):
            return True
    return False

_COSTS = {
    "rewrite": "rewrites the table and its indexes",
    "scan": "reads every row to check the new length",
    "rewrite unless UTC": "rewrites the table and its indexes",
}
_CAST = re.compile(
    r'^\s*(?:"?(?P<a>\w+)"?\s*::\s*(?P<t1>[\w ()]+?)'
    r'|CAST\s*\(\s*"?(?P<b>\w+)"?\s+AS\s+(?P<t2>[\w ()]+?)\s*\))\s*$',
    re.IGNORECASE,
)


_CREATE_ENUM = re.compile(r"\bCREATE\s+TYPE\s+(?:\w+\.)?\"?(\w+)\"?\s+AS\s+ENUM\b", re.IGNORECASE)


def _enum_swap(
    migration: MigrationFile, old: ColumnType | None, new: ColumnType
) -> str | None:
    """The enum type to add values to, when an enum column is cast to another enum type
    (``sa.Enum``, ``postgresql.ENUM``, or a type the revision's SQL creates ``AS ENUM``,
    as in rename-create-cast-drop revisions); None otherwise."""
    if old is None:
        return None
    before, after = _enum_name(migration, old), _enum_name(migration, new)
    if before is None or after is None:
        return None
    return before if before != "..." else after


def _enum_name(migration: MigrationFile, column: ColumnType) -> str | None:
    """The name of the enum type ``column`` is ("..." for an ``sa.Enum`` without one),
    or None when it is no enum: an enum type of SQLAlchemy's, or a name the revision
    creates (``CREATE TYPE x AS ENUM`` in its SQL, ``sa.Enum(..., name="x")``)."""
    if column.family == "enum":
        return column.name or "..."
    created = {
        match.lower()
        for node in ast.walk(migration.file.tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for match in _CREATE_ENUM.findall(node.value)
    } | _enum_names(migration)
    name = column.text.strip('"').lower()
    return name if name in created else None


def _enum_names(migration: MigrationFile) -> set[str]:
    """The names the revision gives ``sa.Enum(..., name="user_roles")`` or
    ``postgresql.ENUM`` types (created with ``.create(op.get_bind())`` and cast to in
    raw SQL)."""
    resolver = migration.file.ctx.names
    names: set[str] = set()
    for node in ast.walk(migration.file.tree):
        if not isinstance(node, ast.Call):
            continue
        qualified = resolver.qualify(node.func) or ""
        if qualified.partition(".")[0] != "sqlalchemy" or qualified.rpartition(".")[2] not in (
            "Enum",
            "ENUM",
        ):
            continue
        name = next((k.value for k in node.keywords if k.arg == "name"), None)
        if isinstance(name, ast.Constant) and isinstance(name.value, str):
            names.add(name.value.lower())
    return names


def _plain_cast(node: ast.expr, column: str | None, new: ColumnType) -> bool:
    """``postgresql_using="value::text"``: the column itself cast to the new type's kind,
    which PostgreSQL applies without a rewrite when the change needs none."""
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    match = _CAST.match(node.value)
    if match is None or (match.group("a") or match.group("b")) != column:
        return False
    target = from_sql(match.group("t1") or match.group("t2") or "")
    return target is not None and target.family == new.family


def _restored_type(migration: MigrationFile, operation: Operation) -> ColumnType | None:
    """The type this revision's ``downgrade()`` changes the column back to: the one it
    had before ``upgrade()`` ran (``type_=Unicode(32)`` undoing ``type_=Unicode(64)``);
    None unless exactly one such change is there and can be read."""
    restored = [
        candidate
        for candidate in migration.operations
        if candidate.phase == "downgrade"
        and candidate.kind == "alter_type"
        and candidate.table == operation.table
        and candidate.schema == operation.schema
        and candidate.column == operation.column
    ]
    if len(restored) != 1 or operation.column is None:
        return None
    (candidate,) = restored
    if candidate.via_sql:
        return from_sql(candidate.type_text or "")
    ctx = migration.file.ctx
    return from_python(_assigned(migration, candidate.type_node), ctx.names, ctx.index)


def _types_elsewhere(migration: MigrationFile, operation: Operation) -> list[ColumnType]:
    """The types the revisions below this one give the column of that table and schema
    (``create_table``, ``add_column``, ``alter_column(type_=...)``); [] when one of them
    cannot be read."""
    project = migration.project
    if project is None or operation.column is None or migration.revision is None:
        return []
    below = project.graph.ancestors(migration.revision.revision)
    found: list[ColumnType] = []
    for other in project.files:
        if other.revision is None or other.revision.revision not in below:
            continue
        resolver = other.file.ctx.names
        for candidate in other.upgrade_operations():
            if candidate.table != operation.table or candidate.schema != operation.schema:
                continue
            nodes: list[ast.expr | None] = []
            if candidate.kind == "create_table":
                nodes = [t for c, t in candidate.column_types if c == operation.column]
            elif candidate.kind in ("add_column", "alter_type") and (
                candidate.column == operation.column
            ):
                nodes = [candidate.type_node]
            for node in nodes:
                parsed = (
                    from_sql(candidate.type_text or "")
                    if candidate.via_sql
                    else from_python(_assigned(other, node), resolver, other.file.ctx.index)
                )
                if parsed is None:
                    return []
                found.append(parsed)
        for node in _table_column_types(other, operation):
            parsed = from_python(node, resolver, other.file.ctx.index)
            if parsed is None:
                return []
            found.append(parsed)
    return found


def _table_column_types(migration: MigrationFile, operation: Operation) -> list[ast.expr]:
    """The types a revision's ``Table("shares", meta, Column("volume_type_id",
    String(36)), ...)`` gives the column: an initial revision that builds its tables as
    ``Table`` objects and creates them (``table.create(conn)``), as OpenStack's do."""
    resolver = migration.file.ctx.names
    found: list[ast.expr] = []
    for node in ast.walk(migration.file.tree):
        if not (isinstance(node, ast.Call) and len(node.args) >= 2):
            continue
        qualified = resolver.qualify(node.func) or ""
        if not qualified.startswith("sqlalchemy.") or qualified.rpartition(".")[2] != "Table":
            continue
        name = node.args[0]
        if not (isinstance(name, ast.Constant) and name.value == operation.table):
            continue
        schema = next((k.value for k in node.keywords if k.arg == "schema"), None)
        written = schema.value if isinstance(schema, ast.Constant) else None
        if (schema is not None and written is None) or written != operation.schema:
            continue
        for column in node.args[2:]:
            if (
                isinstance(column, ast.Call)
                and (resolver.qualify(column.func) or "").rpartition(".")[2] == "Column"
                and len(column.args) >= 2
                and isinstance(column.args[0], ast.Constant)
                and column.args[0].value == operation.column
            ):
                found.append(column.args[1])
    return found


def _assigned(migration: MigrationFile, node: ast.expr | None) -> ast.expr | None:
    """A type named by a variable (``new_type = sa.Enum(...)``): the one value the
    revision assigns to that name, else the name itself."""
    if not isinstance(node, ast.Name):
        return node
    values = [
        stmt.value
        for stmt in ast.walk(migration.file.tree)
        if isinstance(stmt, ast.Assign)
        and len(stmt.targets) == 1
        and isinstance(stmt.targets[0], ast.Name)
        and stmt.targets[0].id == node.id
    ]
    return values[0] if len(values) == 1 else node
