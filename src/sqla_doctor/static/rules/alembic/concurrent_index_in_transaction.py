"""SQD601: CREATE/DROP INDEX CONCURRENTLY (or VACUUM ...) inside the migration's transaction."""

from __future__ import annotations

import ast
from collections.abc import Iterable

from sqla_doctor.findings import Applicability, Finding, Severity
from sqla_doctor.static.alembic.ops import Operation
from sqla_doctor.static.alembic.project import AlembicAnalysis, MigrationFile
from sqla_doctor.static.alembic.rule import MigrationRule, autocommit_fix
from sqla_doctor.static.rule import Invalid, Valid

_ENV = """
from alembic import context
from sqlalchemy import engine_from_config, pool

target_metadata = None

def run_migrations_online():
    section = config.get_section(config.config_ini_section)
    connectable = engine_from_config(section, poolclass=pool.NullPool)
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

run_migrations_online()
"""


# hypothesis/h's recipe: end Alembic's transaction by hand, then build the index.
_AFTER_COMMIT = """
from alembic import op

revision = "b2"
down_revision = "a1"

def upgrade():
    # Creating a concurrent index does not work inside a transaction
    op.execute("COMMIT")
    op.create_index(
        "ix_group_name", "group", ["name"], postgresql_concurrently=True
    )
"""


class ConcurrentIndexInTransaction(MigrationRule):
    """
    ## What it does
    Checks for PostgreSQL statements that cannot run inside a transaction block, run by a
    migration outside `op.get_context().autocommit_block()`: `op.create_index(...,
    postgresql_concurrently=True)`, `op.drop_index(..., postgresql_concurrently=True)`, and
    raw `CREATE INDEX CONCURRENTLY`, `DROP INDEX CONCURRENTLY`, `REINDEX ... CONCURRENTLY`,
    `DETACH PARTITION ... CONCURRENTLY`, `VACUUM`, `CREATE DATABASE` given to `op.execute`
    (as a string, `sa.text(...)`, or through `op.get_bind()`).

    ## Why is this bad?
    Alembic runs every migration inside a transaction on PostgreSQL. The statement fails
    with `ActiveSqlTransaction: CREATE INDEX CONCURRENTLY cannot run inside a transaction
    block`, usually only when the deploy reaches production (SQLite and offline `--sql`
    runs do not complain). `autocommit_block()` commits the migration's work so far,
    switches the connection to AUTOCOMMIT for the block, and resumes the transaction after
    it.

    Executing `COMMIT` first (`op.execute("COMMIT")`, the older recipe) works by a
    driver's accident: psycopg2 and asyncpg (through SQLAlchemy's adapter) then run the
    next statements outside any transaction, but psycopg 3 and pg8000 begin a new one, where
    the statement fails. A concurrent statement after a `COMMIT` of the same function is
    reported only when the project runs on psycopg 3 or pg8000 alone: its Alembic config's
    `sqlalchemy.url` names the driver (`postgresql+psycopg://`), or else its requirement
    files name it and neither psycopg2 nor asyncpg.

    An env.py that configures the connection with `isolation_level="AUTOCOMMIT"` runs every
    statement outside a transaction; migrations of such a project are not reported.

    ## Example
    ```python
    def upgrade():
        op.create_index(
            "ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True
        )
    ```

    Use instead:
    ```python
    def upgrade():
        with op.get_context().autocommit_block():
            op.create_index(
                "ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True
            )
    ```
    Put the concurrent operation in a revision of its own (a failed concurrent build
    leaves an `INVALID` index behind: drop it and run again), and see SQD611 for env.py
    setups in which `autocommit_block()` cannot work.

    ## Fix safety
    Unsafe: `autocommit_block()` commits everything the migration did before the block,
    so a failure after it leaves the migration half applied.

    ## References
    - [Alembic: `MigrationContext.autocommit_block`](https://alembic.sqlalchemy.org/en/latest/api/runtime.html#alembic.runtime.migration.MigrationContext.autocommit_block)
    - [PostgreSQL: Building indexes concurrently](https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY)
    - [Squawk: ban-concurrent-index-creation-in-transaction](https://squawkhq.com/docs/ban-concurrent-index-creation-in-transaction)
    """

    code = "SQD601"
    name = "concurrent-index-in-transaction"
    pitfalls = ("P12",)
    severity = Severity.ERROR
    fix = Applicability.UNSAFE
    message = (
        "`{what}` runs inside {transaction}, which PostgreSQL refuses"
        " — wrap it in `op.get_context().autocommit_block()`"
    )

    VALID = (
        Valid(
            """
            from alembic import op

            revision = "b2"
            down_revision = "a1"

            def upgrade():
                with op.get_context().autocommit_block():
                    op.create_index(
                        "ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True
                    )
                    op.execute("DROP INDEX CONCURRENTLY IF EXISTS ix_orders_old")

            def downgrade():
                with op.get_context().autocommit_block():
                    op.drop_index(
                        "ix_orders_user_id", table_name="orders", postgresql_concurrently=True
                    )
            """
        ),
        # A helper called from inside the block runs inside it.
        Valid(
            """
            import sqlalchemy as sa
            from alembic import op

            revision = "b2"
            down_revision = "a1"

            def _build():
                op.execute(sa.text("CREATE INDEX CONCURRENTLY ix_orders_total ON orders (total)"))

            def upgrade():
                ctx = op.get_context()
                with ctx.autocommit_block():
                    _build()
            """
        ),
        # CONCURRENTLY only in a string that is not SQL run by the migration.
        Valid(
            """
            from alembic import op

            revision = "b2"
            down_revision = "a1"
            NOTE = "we will CREATE INDEX CONCURRENTLY later"

            def upgrade():
                op.add_column("orders", sa.Column("note", sa.Text(), nullable=True, comment=NOTE))
            """
        ),
        # The env.py runs migrations on an AUTOCOMMIT connection.
        Valid(
            """
            from alembic import op

            revision = "b2"
            down_revision = "a1"

            def upgrade():
                op.create_index(
                    "ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True
                )
            """,
            path="migrations/versions/b2_index.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = %(here)s/migrations\n",
                "migrations/env.py": _ENV.replace(
                    "poolclass=pool.NullPool)",
                    'poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")',
                ),
            },
        ),
        # A `COMMIT` first, on psycopg2: the index is built outside any transaction.
        Valid(_AFTER_COMMIT, files={"requirements.txt": "alembic\npsycopg2==2.9.10\n"}),
        # Not a migration: no Alembic op.
        Valid(
            """
            def upgrade(conn):
                conn.execute("CREATE INDEX CONCURRENTLY ix ON t (x)")
            """
        ),
        # Only run on SQLite.
        Valid(
            """
            from alembic import op

            revision = "b2"
            down_revision = "a1"

            def upgrade():
                if op.get_bind().dialect.name == "sqlite":
                    op.execute("VACUUM")
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            from alembic import op

            revision = "b2"
            down_revision = "a1"

            def upgrade():
                op.create_index(
                    "ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True
                )
            """,
            expected_message=(
                "`CREATE INDEX CONCURRENTLY ix_orders_user_id ON orders` runs inside the "
                "migration's transaction, which PostgreSQL refuses — wrap it in "
                "`op.get_context().autocommit_block()`"
            ),
            line=7,
            expected_fix="""
            from alembic import op

            revision = "b2"
            down_revision = "a1"

            def upgrade():
                with op.get_context().autocommit_block():
                    op.create_index(
                        "ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True
                    )
            """,
        ),
        Invalid(
            """
            import sqlalchemy as sa
            from alembic import op

            revision = "b2"
            down_revision = "a1"

            def upgrade():
                op.execute(
                    sa.text(
                        '''
                        CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS uq_users_email
                        ON users (lower(email))
                        '''
                    )
                )
            """,
            expected_message=(
                "`CREATE UNIQUE INDEX CONCURRENTLY uq_users_email ON users` runs inside the "
                "migration's transaction, which PostgreSQL refuses — wrap it in "
                "`op.get_context().autocommit_block()`"
            ),
            line=8,
        ),
        # Through the connection, in downgrade(), and VACUUM: three findings.
        Invalid(
            """
            from alembic import op

            revision = "b2"
            down_revision = "a1"
            DROP = "DROP INDEX CONCURRENTLY ix_orders_user_id"

            def upgrade():
                conn = op.get_bind()
                conn.exec_driver_sql("VACUUM ANALYZE orders")

            def downgrade():
                op.execute(DROP)
                op.drop_index("ix_orders_total", "orders", postgresql_concurrently=True)
            """,
            count=3,
            line=9,
        ),
        # The same `COMMIT` on psycopg 3, which begins a new transaction for the index.
        Invalid(
            _AFTER_COMMIT,
            files={"requirements.txt": "alembic\npsycopg[binary]==3.2.9\n"},
            expected_message=(
                "`CREATE INDEX CONCURRENTLY ix_group_name ON group` runs inside the "
                "transaction psycopg 3 begins again after the `COMMIT` at line 8, which "
                "PostgreSQL refuses — wrap it in `op.get_context().autocommit_block()`"
            ),
            line=9,
        ),
        # A migration found through alembic.ini; the env.py is the standard one.
        Invalid(
            """
            from alembic import op

            revision = "b2"
            down_revision = "a1"

            def upgrade():
                op.execute("REINDEX INDEX CONCURRENTLY ix_orders_user_id")
            """,
            path="db/migrations/versions/b2_reindex.py",
            files={
                "alembic.ini": "[alembic]\nscript_location = %(here)s/db/migrations\n",
                "db/migrations/env.py": _ENV,
            },
            line=7,
        ),
    )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        project = migration.project
        if project is not None and project.autocommit:
            return
        operations = list(self.operations(migration, phase=None))
        for position, operation in enumerate(operations):
            if operation.in_autocommit:
                continue
            concurrent_index = operation.kind in ("create_index", "drop_index") and (
                operation.concurrently
            )
            if not concurrent_index and operation.kind != "no_transaction":
                continue
            transaction = "the migration's transaction"
            commit = _committed_before(operations[:position], operation)
            if commit is not None:
                reopening = _reopening_driver(shared.drivers(migration))
                if reopening is None:
                    continue  # psycopg2 or asyncpg, or a driver not named: no new transaction
                transaction = (
                    f"the transaction {reopening} begins again after the `COMMIT` at line "
                    f"{commit.node.lineno}"  # type: ignore[attr-defined]
                )
            node = operation.node
            fix = None
            if isinstance(node, ast.Call):
                fix = autocommit_fix(
                    migration.file, node, "run it in `op.get_context().autocommit_block()`"
                )
            what = _what(operation)
            yield self.at(
                migration.file,
                node,
                what=what,
                transaction=transaction,
                fix=fix,
                hint=(
                    "wrap it in `with op.get_context().autocommit_block():` (in a revision of "
                    "its own: the block commits the migration's earlier work)"
                ),
            )


# Drivers that begin a transaction again for the statement after a raw `COMMIT` (they ask
# the server whether one is open); psycopg2 and SQLAlchemy's asyncpg adapter keep their
# own flag, still set, so the next statements run outside any transaction.
_REOPENING = {"psycopg": "psycopg 3", "pg8000": "pg8000"}
_NOT_REOPENING = frozenset({"psycopg2", "psycopg2cffi", "asyncpg"})


def _committed_before(earlier: list[Operation], operation: Operation) -> Operation | None:
    """The `COMMIT` (or `END`, `ROLLBACK`) the same function ran before ``operation``
    with no `BEGIN` after it."""
    for candidate in reversed(earlier):
        if candidate.phase != operation.phase or candidate.entry != operation.entry:
            continue
        if candidate.kind != "transaction":
            continue
        if candidate.verb in ("COMMIT", "END", "ROLLBACK"):
            return candidate
        return None  # BEGIN, START TRANSACTION: a transaction is open again
    return None


def _reopening_driver(drivers: frozenset[str]) -> str | None:
    """The driver (as a message names it) that opens a new transaction after a raw
    `COMMIT`, when the project runs on such drivers only."""
    if drivers & _NOT_REOPENING:
        return None
    return next((_REOPENING[d] for d in sorted(drivers) if d in _REOPENING), None)


def _what(operation: Operation) -> str:
    if operation.kind == "create_index":
        unique = "UNIQUE " if operation.unique else ""
        name = f" {operation.name}" if operation.name else ""
        table = f" ON {operation.table}" if operation.table else ""
        return f"CREATE {unique}INDEX CONCURRENTLY{name}{table}"
    if operation.kind == "drop_index":
        return f"DROP INDEX CONCURRENTLY{f' {operation.name}' if operation.name else ''}"
    return operation.what or "statement"
