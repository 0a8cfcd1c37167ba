"""SQD605: a NOT NULL column without a server default added to an existing table."""

from __future__ import annotations

from collections.abc import Iterable

from sqla_doctor.findings import Finding, Severity
from sqla_doctor.static.alembic.project import AlembicAnalysis, MigrationFile
from sqla_doctor.static.alembic.rule import MigrationRule
from sqla_doctor.static.rule import Invalid, Valid

_HEAD = """
            import sqlalchemy as sa
            from alembic import op

            revision = "b2"
            down_revision = "a1"
"""


class NotNullColumnWithoutDefault(MigrationRule):
    """
    ## What it does
    Checks for a migration that adds a `NOT NULL` column with no server-side default to a
    table that already exists: `op.add_column("t", sa.Column("c", ..., nullable=False))`
    (or `batch_op.add_column`, or raw `ALTER TABLE t ADD COLUMN c ... NOT NULL`). A table
    created in the same migration is exempt, and so are primary-key columns and
    revisions for MySQL or MariaDB (the configured URL, a version folder named for them,
    or, with no URL, a project whose requirement files name MySQL drivers only), which
    fill the column with its type's implicit default.

    ## Why is this bad?
    The `ALTER TABLE` has to fill the new column for every existing row, and without a
    server default it fills it with NULL, which the constraint forbids:
    `NotNullViolation: column "c" of relation "t" contains null values`. It passes on the
    empty development and CI databases and fails on the first database with rows, usually
    production. `default=` does not help: it is applied by SQLAlchemy on INSERT, not by the
    database when the column is added.

    ## Example
    ```python
    def upgrade():
        op.add_column(
            "orders", sa.Column("currency", sa.String(3), nullable=False)
        )
    ```

    Use instead, when a constant fits every existing row (PostgreSQL 11+ stores it in the
    catalogue without rewriting the table):
    ```python
    def upgrade():
        op.add_column(
            "orders",
            sa.Column("currency", sa.String(3), nullable=False, server_default="EUR"),
        )
    ```
    Otherwise in three revisions: add the column nullable; backfill it in batches (a data
    migration of its own, or a job); then `op.alter_column("orders", "currency",
    nullable=False)` — on a big table, first add `CHECK (currency IS NOT NULL) NOT VALID`
    and validate it, so that `SET NOT NULL` does not scan the table under an ACCESS
    EXCLUSIVE lock (SQD612).

    ## References
    - [PostgreSQL: ALTER TABLE ... ADD COLUMN](https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-NOTES)
    - [strong_migrations: Setting NOT NULL on an existing column](https://github.com/ankane/strong_migrations#setting-not-null-on-an-existing-column)
    - [Squawk: adding-required-field](https://squawkhq.com/docs/adding-required-field)
    """

    code = "SQD605"
    name = "not-null-column-without-default"
    pitfalls = ("P38",)
    severity = Severity.ERROR
    message = (
        "{call} adds NOT NULL {column} without a server default: the ALTER "
        "fails on a table with rows{python_default} — give it a `server_default`, or add it "
        "nullable, backfill, then set NOT NULL"
    )
    postgresql_only = False

    VALID = (
        # No URL, but the project installs a MySQL driver and no PostgreSQL one.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.add_column("amphora_health", sa.Column("busy", sa.Boolean(), nullable=False))
            """,
            path="migrations/versions/b2.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = migrations\nsqlalchemy.url =\n",
                "migrations/env.py": "",
                "requirements.txt": "oslo.db[mysql]>=8.4.0\n",
            },
        ),
        Valid(
            _HEAD
            + """
            def upgrade():
                op.add_column(
                    "orders",
                    sa.Column("currency", sa.String(3), nullable=False, server_default="EUR"),
                )
                op.add_column("orders", sa.Column("note", sa.Text()))
                op.add_column(
                    "orders",
                    sa.Column("paid", sa.Boolean(), nullable=False, server_default=sa.false()),
                )
                op.add_column(
                    "orders",
                    sa.Column("total", sa.Numeric(), sa.Computed("price * qty"), nullable=False),
                )
            """
        ),
        # The table is created by the same migration: it has no rows.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_table("invoices", sa.Column("id", sa.Integer(), primary_key=True))
                op.add_column("invoices", sa.Column("number", sa.String(20), nullable=False))
                with op.batch_alter_table("invoices") as batch_op:
                    batch_op.add_column(sa.Column("year", sa.Integer(), nullable=False))
            """
        ),
        # Dropping NOT NULL, and NOT NULL inside a CHECK, are not this.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute("ALTER TABLE orders ALTER COLUMN note DROP NOT NULL")
                op.execute(
                    "ALTER TABLE orders ADD COLUMN shipped_at timestamptz"
                    " CHECK (shipped_at IS NOT NULL OR status <> 'shipped')"
                )
                op.execute("ALTER TABLE orders ADD COLUMN region text NOT NULL DEFAULT 'eu'")
            """
        ),
        # The table is emptied first, in the same transaction.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute("DELETE FROM agent_api_keys")
                op.add_column("agent_api_keys", sa.Column("api_key", sa.String(), nullable=False))
            """
        ),
        # Emptied through an ORM session on the migration's connection (optuna's v2.4.0.a).
        Valid(
            _HEAD
            + """
            from sqlalchemy import orm
            from sqlalchemy.orm import declarative_base
            BaseModel = declarative_base()
            class TrialValueModel(BaseModel):
                __tablename__ = "trial_values"
                trial_value_id = sa.Column(sa.Integer, primary_key=True)
            def upgrade():
                session = orm.Session(bind=op.get_bind())
                session.query(TrialValueModel).delete()
                session.commit()
                with op.batch_alter_table("trial_values") as batch_op:
                    batch_op.add_column(sa.Column("objective", sa.Integer(), nullable=False))
            """
        ),
        # A revision kept for MySQL or MariaDB (env.py picks the folder at run time):
        # MySQL fills the new column with its type's implicit default.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.add_column("orders", sa.Column("position", sa.Integer(), nullable=False))
            """,
            path="alembic/mariadb_versions/b2.py",
            files={
                "alembic/alembic.ini": (
                    "[alembic]\nscript_location = .\nversion_locations = versions\n"
                ),
                "alembic/env.py": "",
            },
        ),
        # In downgrade(), re-adding a dropped column is the reverse of upgrade's drop.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.drop_column("orders", "legacy_code")

            def downgrade():
                op.add_column("orders", sa.Column("legacy_code", sa.String(10), nullable=False))
            """
        ),
    )
    INVALID = (
        # Drivers for both databases: it may run on PostgreSQL.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("amphora_health", sa.Column("busy", sa.Boolean(), nullable=False))
            """,
            path="migrations/versions/b2.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = migrations\nsqlalchemy.url =\n",
                "migrations/env.py": "",
                "requirements.txt": "oslo.db[mysql]>=8.4.0\nsqlalchemy[asyncpg]>=2.0\n",
            },
            line=8,
        ),
        # The table comes from a loop over names the revision does not spell out: named
        # as the migration names it, never `None`.
        Invalid(
            _HEAD
            + """
            def upgrade():
                for table in op.get_bind().execute(sa.text("SELECT name FROM shards")).scalars():
                    op.add_column(table, sa.Column("position", sa.Integer(), nullable=False))
            """,
            line=9,
            expected_message=(
                "`op.add_column(...)` adds NOT NULL column position without a server default: "
                "the ALTER fails on a table with rows — give it a `server_default`, or add it "
                "nullable, backfill, then set NOT NULL"
            ),
        ),
        # A loop over literal names: one finding for the call, naming each table.
        Invalid(
            _HEAD
            + """
            def upgrade():
                for table in ("ports", "networks"):
                    op.add_column(table, sa.Column("position", sa.Integer(), nullable=False))
            """,
            line=9,
            expected_message=(
                "`op.add_column(...)` adds NOT NULL column ports.position without a server "
                "default: the ALTER fails on a table with rows — give it a `server_default`, or "
                "add it nullable, backfill, then set NOT NULL (its loop does the same "
                "for 1 more value: networks.position)"
            ),
        ),
        # SQLite refuses the ALTER on a table with rows, as PostgreSQL does.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("orders", sa.Column("position", sa.Integer(), nullable=False))
            """,
            path="alembic/sqlite_versions/b2.py",
            files={
                "alembic/alembic.ini": (
                    "[alembic]\nscript_location = .\nversion_locations = versions\n"
                ),
                "alembic/env.py": "",
            },
            line=8,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("orders", sa.Column("currency", sa.String(3), nullable=False))
            """,
            line=8,
            expected_message=(
                '`op.add_column("orders", ...)` adds NOT NULL column orders.currency without a '
                "server default: the ALTER fails on a table with rows — give it a "
                "`server_default`, or add it nullable, backfill, then set NOT NULL"
            ),
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                with op.batch_alter_table("users") as batch_op:
                    batch_op.add_column(
                        sa.Column("tier", sa.String(10), nullable=False, default="free")
                    )
            """,
            line=9,
            expected_message=(
                "`batch_op.add_column(...)` adds NOT NULL column users.tier without a server "
                "default: the ALTER fails on a table with rows (`default=` is applied by "
                "SQLAlchemy on INSERT, not by ALTER TABLE) — give it a `server_default`, or "
                "add it nullable, backfill, then set NOT NULL"
            ),
        ),
        # Some rows deleted through the session, or another table emptied.
        Invalid(
            _HEAD
            + """
            from sqlalchemy import orm
            from sqlalchemy.orm import declarative_base
            BaseModel = declarative_base()
            class TrialValueModel(BaseModel):
                __tablename__ = "trial_values"
                trial_value_id = sa.Column(sa.Integer, primary_key=True)
            def upgrade():
                session = orm.Session(bind=op.get_bind())
                session.query(TrialValueModel).filter(TrialValueModel.trial_value_id > 3).delete()
                op.add_column("trial_values", sa.Column("objective", sa.Integer(), nullable=False))
                session.query(TrialValueModel).delete()
                op.add_column("trials", sa.Column("number", sa.Integer(), nullable=False))
            """,
            count=2,
        ),
        # Deleting some rows does not empty the table.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.execute("DELETE FROM orders WHERE status = 'test'")
                op.add_column("orders", sa.Column("currency", sa.String(3), nullable=False))
            """,
            line=9,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.execute('ALTER TABLE "orders" ADD COLUMN currency char(3) NOT NULL')
            """,
            line=8,
        ),
    )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        if migration.folder_dialect in ("mysql", "mariadb") or migration.databases == {"mysql"}:
            return  # MySQL fills the column with the type's implicit default
        for operation in self.operations(migration):
            if operation.kind != "add_column" or not operation.not_null:
                continue
            if operation.has_server_default or operation.primary_key or operation.column is None:
                continue
            if migration.is_new_table(operation.table, at=operation) is not False:
                continue
            if operation.via_sql:
                call = "`ALTER TABLE ... ADD COLUMN`"
            elif operation.call.startswith("batch_op"):
                call = "`batch_op.add_column(...)`"
            elif operation.table is None or operation.unrolled:
                call = f"`{operation.call}(...)`"
            else:
                call = f'`{operation.call}("{operation.table}", ...)`'
            yield self.at(
                migration.file,
                operation.node,
                call=call,
                column=operation.shown_column,
                python_default=(
                    " (`default=` is applied by SQLAlchemy on INSERT, not by ALTER TABLE)"
                    if operation.python_default
                    else ""
                ),
                hint=(
                    f'sa.Column("{operation.column}", ..., nullable=False, server_default=...) '
                    "if one value fits every existing row"
                ),
            )
