"""SQD608: an index built on an existing table without CONCURRENTLY."""

from __future__ import annotations

import ast
from collections.abc import Iterable

from sqla_doctor.findings import Applicability, Finding, Severity
from sqla_doctor.static.alembic.project import AlembicAnalysis, MigrationFile
from sqla_doctor.static.alembic.rule import MigrationRule, autocommit_fix
from sqla_doctor.static.rule import Invalid, Valid

_HEAD = """
            import sqlalchemy as sa
            from alembic import op

            revision = "b2"
            down_revision = "a1"
"""

_ENV_URL = """\
import os

from alembic import context
from sqlalchemy import engine_from_config, pool

config = context.config
DATABASE_URL = {url}


def run_migrations_online():
    ini_config = config.get_section(config.config_ini_section)
    ini_config["sqlalchemy.url"] = DATABASE_URL
    connectable = engine_from_config(ini_config, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
"""


class NonConcurrentIndex(MigrationRule):
    """
    ## What it does
    Checks for an index built on a table that already exists without `CONCURRENTLY`:
    `op.create_index(...)` without `postgresql_concurrently=True` (also in a
    `batch_alter_table`), raw `CREATE INDEX` without `CONCURRENTLY`, and
    `op.create_unique_constraint(...)` / `op.create_primary_key(...)`, which build their
    index the same way. Indexes on a table created by the same migration are not reported,
    nor are revisions that never run on PostgreSQL: a project whose `sqlalchemy.url` names
    another database (or, with no URL, whose requirement files name drivers of other
    databases only: `PyMySQL`, `oslo.db[mysql]`), one whose env.py writes the URL out
    itself (`DATABASE_URL = f"sqlite:///{path}"` handed to the engine or to
    `context.configure(url=...)`), a branch under
    `if dialect.name == "sqlite":` or `if str(bind.engine.url).startswith("mysql"):`,
    and a version folder named for another database
    (`versions/sqlite/` beside `versions/postgresql/`, or `mysql_versions/`).

    ## Why is this bad?
    `CREATE INDEX` holds a SHARE lock on the table until the migration commits: reads go
    on, but every INSERT, UPDATE and DELETE waits for the whole index build, minutes on a
    big table. `CREATE INDEX CONCURRENTLY` takes a SHARE UPDATE EXCLUSIVE lock instead and
    lets writes through while it builds (more slowly, and outside a transaction block).

    ## Example
    ```python
    def upgrade():
        op.create_index("ix_orders_user_id", "orders", ["user_id"])
    ```

    Use instead:
    ```python
    def upgrade():
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True
            )
    ```
    For a unique constraint, build the unique index concurrently, then attach it:
    `op.execute("ALTER TABLE users ADD CONSTRAINT uq_users_email UNIQUE USING INDEX
    uq_users_email")`.

    ## Fix safety
    Unsafe: `autocommit_block()` commits what the migration did before the block, and a
    concurrent build that fails leaves an INVALID index to drop before retrying.

    ## References
    - [PostgreSQL: Building indexes concurrently](https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY)
    - [Squawk: require-concurrent-index-creation](https://squawkhq.com/docs/require-concurrent-index-creation)
    - [strong_migrations: Adding an index non-concurrently](https://github.com/ankane/strong_migrations#adding-an-index-non-concurrently)
    """

    code = "SQD608"
    name = "non-concurrent-index-on-existing-table"
    pitfalls = ("P41",)
    severity = Severity.WARNING
    fix = Applicability.UNSAFE
    message = "{what}"

    VALID = (
        Valid(
            _HEAD
            + """
            def upgrade():
                with op.get_context().autocommit_block():
                    op.create_index(
                        "ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True
                    )
                    op.execute("CREATE INDEX CONCURRENTLY ix_orders_total ON orders (total)")
                    op.execute(
                        "ALTER TABLE users ADD CONSTRAINT uq_email UNIQUE USING INDEX uq_email"
                    )
            """
        ),
        # Names an f-string computes, the index built concurrently.
        Valid(
            _HEAD
            + """
            def upgrade():
                prefix = op.get_context().opts["table_prefix"]
                with op.get_context().autocommit_block():
                    op.create_index(
                        op.f(f"ix_{prefix}users_email"),
                        f"{prefix}users",
                        ["email"],
                        postgresql_concurrently=True,
                    )
            """
        ),
        # Indexes of a table created in the same migration (squawk#349).
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_table(
                    "invoices",
                    sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("order_id", sa.Integer(), nullable=False),
                )
                op.create_index(op.f("ix_invoices_order_id"), "invoices", ["order_id"])
                op.create_unique_constraint("uq_invoices_order_id", "invoices", ["order_id"])
                op.execute("CREATE INDEX ix_invoices_id ON invoices (id)")
            """
        ),
        # Only on SQLite.
        Valid(
            _HEAD
            + """
            def upgrade():
                if op.get_context().dialect.name == "sqlite":
                    op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """
        ),
        # The project is configured for SQLite only.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """,
            path="migrations/versions/b2.py",
            files={
                "alembic.ini": (
                    "[alembic]\nscript_location = migrations\nsqlalchemy.url = sqlite:///app.db\n"
                ),
                "migrations/env.py": "",
            },
        ),
        # No URL, but the project installs a MySQL driver and no PostgreSQL one.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """,
            path="migrations/versions/b2.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = migrations\nsqlalchemy.url =\n",
                "migrations/env.py": "",
                "requirements.txt": "oslo.db[mysql]>=8.4.0\nSQLAlchemy>=1.4\n",
                "test-requirements.txt": "PyMySQL>=0.8.0  # MIT\n",
            },
        ),
        # The same for a revision no config places (neutron's versions/<release>/expand/,
        # which env.py lists at run time).
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_ports_network_id", "ports", ["network_id"])
            """,
            path="neutron/db/migration/versions/zed/expand/b2.py",
            files={"test-requirements.txt": "PyMySQL>=0.8.0\n"},
        ),
        # Revisions kept per database, env.py picking the folder at run time: the SQLite
        # ones never run on PostgreSQL.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """,
            path="migrations/versions/sqlite/b2.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = migrations\n",
                "migrations/env.py": "",
            },
        ),
        # No URL in alembic.ini: env.py sets a SQLite one itself (TrueNAS's config database).
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """,
            path="migrations/versions/b2.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = migrations\n",
                "migrations/env.py": _ENV_URL.format(
                    url='f"sqlite:///{os.environ.get(\'APP_DATABASE\', \'/data/app.db\')}"'
                ),
            },
        ),
        # ... and a folder per database beside env.py (bunkerweb's mysql_versions/).
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """,
            path="alembic/mysql_versions/b2.py",
            files={
                "alembic/alembic.ini": (
                    "[alembic]\nscript_location = .\nversion_locations = versions\n"
                ),
                "alembic/env.py": "",
            },
        ),
    )
    INVALID = (
        # env.py's SQLite URL is only a fallback for the one the environment names.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """,
            path="migrations/versions/b2.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = migrations\n",
                "migrations/env.py": _ENV_URL.format(
                    url='os.environ.get("DATABASE_URL", "sqlite:///app.db")'
                ),
            },
            line=8,
        ),
        # Drivers for both databases: it may run on PostgreSQL.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """,
            path="migrations/versions/b2.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = migrations\nsqlalchemy.url =\n",
                "migrations/env.py": "",
                "test-requirements.txt": "PyMySQL>=0.8.0\npsycopg2-binary>=2.8\n",
            },
            line=8,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.create_index(
                    op.f("ix_orders_user_id"),
                    "orders",
                    ["user_id"],
                    unique=False,
                )
            """,
            line=8,
            expected_message=(
                "CREATE INDEX ix_orders_user_id blocks every write to orders until the index is "
                "built — create it with `postgresql_concurrently=True` inside "
                "`op.get_context().autocommit_block()`"
            ),
            expected_fix=_HEAD
            + """
            def upgrade():
                with op.get_context().autocommit_block():
                    op.create_index(
                        op.f("ix_orders_user_id"),
                        "orders",
                        ["user_id"],
                        unique=False, postgresql_concurrently=True,
                    )
            """,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                with op.batch_alter_table("users", schema=None) as batch_op:
                    batch_op.create_index(batch_op.f("ix_users_email"), ["email"], unique=True)
                op.execute("CREATE INDEX ix_orders_created_at ON orders USING brin (created_at)")
                op.create_unique_constraint("uq_users_name", "users", ["name"])
            """,
            count=3,
            # `batch_op.f()` marks the name final, as `op.f()` does (iib's revisions).
            expected_message=(
                "CREATE UNIQUE INDEX ix_users_email blocks every write to users until the "
                "index is built — create it with `postgresql_concurrently=True` inside "
                "`op.get_context().autocommit_block()`"
            ),
        ),
        # Tables the migration loops over: the message names what it knows.
        Invalid(
            _HEAD
            + """
            def upgrade():
                for name, table, columns in INDEXES:
                    op.create_index(name, table, columns)
            """,
            line=9,
            expected_message=(
                "CREATE INDEX blocks every write to the table until the index is built — "
                "create it with `postgresql_concurrently=True` inside "
                "`op.get_context().autocommit_block()`"
            ),
        ),
        # Names an f-string computes (fief's table prefix), shown as the migration
        # writes them.
        Invalid(
            _HEAD
            + """
            def upgrade():
                prefix = op.get_context().opts["table_prefix"]
                op.create_unique_constraint(
                    op.f(f"{prefix}oauth_accounts_provider_id_key"),
                    f"{prefix}oauth_accounts",
                    ["oauth_provider_id", "account_id"],
                )
                op.create_index(f"ix_{prefix}users_email", f"{prefix}users", ["email"])
            """,
            line=9,
            count=2,
            expected_message=(
                "ADD CONSTRAINT {prefix}oauth_accounts_provider_id_key UNIQUE on "
                "{prefix}oauth_accounts builds its index while blocking writes to the table — "
                "build a unique index CONCURRENTLY in `autocommit_block()`, then ADD "
                "CONSTRAINT ... USING INDEX"
            ),
        ),
        # The same through `batch_alter_table(f"...")`: the index names its table so.
        Invalid(
            _HEAD
            + """
            def upgrade():
                prefix = op.get_context().opts["table_prefix"]
                with op.batch_alter_table(f"{prefix}users") as batch_op:
                    batch_op.create_index(batch_op.f(f"ix_{prefix}users_email"), ["email"])
            """,
            line=10,
            expected_message=(
                "CREATE INDEX ix_{prefix}users_email blocks every write to {prefix}users until "
                "the index is built — create it with `postgresql_concurrently=True` inside "
                "`op.get_context().autocommit_block()`"
            ),
        ),
        # The same layout's PostgreSQL folder.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.create_index("ix_orders_user_id", "orders", ["user_id"])
            """,
            line=8,
            path="migrations/versions/postgresql/b2.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = migrations\n",
                "migrations/env.py": "",
            },
        ),
    )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        for operation in self.operations(migration):
            if migration.is_new_table(operation.table, at=operation) is not False:
                continue
            if operation.kind == "create_index" and not operation.concurrently:
                name = f" {operation.shown_name}" if operation.shown_name else ""
                fix = None
                if isinstance(operation.node, ast.Call) and not operation.via_sql:
                    fix = autocommit_fix(
                        migration.file,
                        operation.node,
                        "build the index concurrently in `autocommit_block()`",
                        keyword="postgresql_concurrently=True",
                    )
                recipe = (
                    "create it with `postgresql_concurrently=True` inside "
                    "`op.get_context().autocommit_block()`"
                    if not operation.via_sql
                    else "use CREATE INDEX CONCURRENTLY inside "
                    "`op.get_context().autocommit_block()`"
                )
                yield self.at(
                    migration.file,
                    operation.node,
                    what=(
                        f"CREATE {'UNIQUE ' if operation.unique else ''}INDEX{name} blocks every "
                        f"write to {operation.shown_table} until the index is built — {recipe}"
                    ),
                    fix=fix,
                )
            elif (
                operation.kind == "add_constraint"
                and operation.constraint in ("unique", "primary_key", "exclude")
                and not operation.using_index
            ):
                kind = {"unique": "UNIQUE", "primary_key": "PRIMARY KEY", "exclude": "EXCLUDE"}[
                    operation.constraint or "unique"
                ]
                name = f" {operation.shown_name}" if operation.shown_name else ""
                yield self.at(
                    migration.file,
                    operation.node,
                    what=(
                        f"ADD CONSTRAINT{name} {kind} on {operation.shown_table} builds its index "
                        "while blocking writes to the table — build a unique index CONCURRENTLY in "
                        "`autocommit_block()`, then ADD CONSTRAINT ... USING INDEX"
                        if operation.constraint != "exclude"
                        else f"ADD CONSTRAINT{name} EXCLUDE on {operation.shown_table} builds its "
                        "index under an ACCESS EXCLUSIVE lock — create it on a new table or in "
                        "a maintenance window"
                    ),
                )
