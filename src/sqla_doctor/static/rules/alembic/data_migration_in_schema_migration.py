"""SQD610: a data migration (UPDATE/INSERT/DELETE) in the same transaction as a schema change."""

from __future__ import annotations

import ast
from collections.abc import Iterable

from sqla_doctor.findings import Finding, Related, Severity
from sqla_doctor.static.alembic.ops import SCHEMA_KINDS, Operation
from sqla_doctor.static.alembic.project import AlembicAnalysis, MigrationFile
from sqla_doctor.static.alembic.rule import MigrationRule, line_of
from sqla_doctor.static.rule import Invalid, Valid

_HEAD = """
            import sqlalchemy as sa
            from alembic import op

            revision = "b2"
            down_revision = "a1"
"""
# A column added, then one category row updated by a key bound as `run` executes `sql`.
_BOUND_KEY = (
    _HEAD
    + """
            def upgrade():
                op.add_column("categories", sa.Column("badge_id", sa.Integer(), nullable=True))
                conn = op.get_bind()
                badge_id = conn.execute("SELECT max(id) FROM templates").scalar()
                root_id = 1
                sql = "UPDATE categories SET badge_id = %s WHERE id = %s"
                {run}
"""
)


class DataMigrationInSchemaMigration(MigrationRule):
    """
    ## What it does
    Checks for a migration that changes data (`UPDATE`, `INSERT`, `DELETE` run with
    `op.execute`, `op.get_bind().execute`, `op.bulk_insert`, `sa.update(...)` constructs,
    or an ORM `Session` bound to `op.get_bind()`) and also changes the schema of an
    existing table in the same transaction: any table's before the data change, or the
    same table's after it. Seeding a table created by the same migration, one row changed
    by its key (`WHERE id = 1`, a version row), rows the revision writes out
    (`INSERT ... VALUES` outside a loop, `op.bulk_insert(table, [{...}])`), and data
    changes inside `autocommit_block()` are not reported.

    ## Why is this bad?
    A migration runs in one transaction, and PostgreSQL keeps every lock until commit:
    the ACCESS EXCLUSIVE lock of an `ALTER TABLE` is held while the `UPDATE` rewrites
    every row of a big table, so nothing can read or write the table for the whole
    backfill. The other way round, the rows the `UPDATE` changed stay locked while the
    `ALTER` waits for the table's writers, and a writer waiting for one of those rows
    deadlocks with the migration. A long backfill also makes the deploy time out
    halfway, and retries start over because nothing was committed.

    ## Example
    ```python
    def upgrade():
        op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
        op.execute("UPDATE orders SET currency = 'EUR'")
        op.alter_column("orders", "currency", nullable=False)
    ```

    Use instead, three revisions, run with `transaction_per_migration=True` in env.py
    (or the backfill as a job outside Alembic, in batches):
    ```python
    # b2: schema
    op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))

    # c3: data only, in batches that each commit
    with op.get_context().autocommit_block():
        while op.get_bind().execute(sa.text(
            "UPDATE orders SET currency = 'EUR' WHERE id IN "
            "(SELECT id FROM orders WHERE currency IS NULL LIMIT 10000)"
        )).rowcount:
            pass

    # d4: schema
    op.alter_column("orders", "currency", nullable=False)
    ```

    ## References
    - [strong_migrations: Backfilling data](https://github.com/ankane/strong_migrations#backfilling-data)
    - [PostgreSQL: Explicit locking](https://www.postgresql.org/docs/current/explicit-locking.html)
    """

    code = "SQD610"
    name = "data-migration-in-schema-migration"
    pitfalls = ("P43",)
    severity = Severity.WARNING
    message = (
        "{dml} runs in the same transaction as {schema} (line {line}), {consequence} — move "
        "the data migration to a revision of its own (with `transaction_per_migration=True`) "
        "or a batched job"
    )

    VALID = (
        # Seeding a new lookup table.
        Valid(
            _HEAD
            + """
            def upgrade():
                roles = op.create_table(
                    "roles",
                    sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("name", sa.String(50), nullable=False),
                )
                op.bulk_insert(roles, [{"id": 1, "name": "admin"}, {"id": 2, "name": "member"}])
                op.execute("INSERT INTO roles (id, name) VALUES (3, 'guest')")
            """
        ),
        # A data-only migration.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute("UPDATE orders SET currency = 'EUR' WHERE currency IS NULL")
                orders = sa.table("orders", sa.column("status"))
                op.execute(orders.update().where(orders.c.status == "new").values(status="open"))
            """
        ),
        # The backfill runs in an autocommit block, after the schema change committed.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
                with op.get_context().autocommit_block():
                    op.execute("UPDATE orders SET currency = 'EUR' WHERE currency IS NULL")
            """
        ),
        # Data changed before the schema change of another table: no lock is held
        # through it, and no writer of the altered table waits for its rows.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute("DELETE FROM login_codes WHERE expires_at < now()")
                op.add_column("users", sa.Column("theme", sa.String(20), nullable=True))
            """
        ),
        # One row, by its key: the application's settings row.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.add_column("app_metadata", sa.Column("force_update", sa.Boolean()))
                op.execute("UPDATE app_metadata SET force_update = false WHERE id = 1")
                op.execute("UPDATE app_metadata SET version = '1.6.2' WHERE id = 1")
            """
        ),
        # One row by a bound key, run once with its parameters (indico's default badge:
        # `WHERE id = %s` with `(badge_id, root_id)`), in each driver's spelling.
        Valid(_BOUND_KEY.format(run='conn.execute(sql, (badge_id, root_id))')),
        Valid(
            _BOUND_KEY.replace("%s", "?").format(run="conn.execute(sql, (badge_id, root_id))")
        ),
        Valid(
            _HEAD
            + """
            def upgrade():
                op.add_column("categories", sa.Column("badge_id", sa.Integer(), nullable=True))
                op.get_bind().execute(
                    sa.text("UPDATE categories SET badge_id = :badge WHERE id = :root"),
                    {"badge": 7, "root": 1},
                )
            """
        ),
        # Rows written out in the revision (PowerDNS-Admin's new settings): seed data
        # that takes no time under the ALTER's lock.
        Valid(
            _HEAD
            + """
            def upgrade():
                with op.batch_alter_table("setting") as batch_op:
                    batch_op.alter_column("value", existing_type=sa.String(256), type_=sa.Text())
                setting = sa.sql.table("setting", sa.column("id"), sa.column("name"))
                op.bulk_insert(setting, [{"id": 42, "name": "records_allow_edit"}])
                op.execute("INSERT INTO setting (id, name) VALUES (43, 'otp'), (44, 'sso')")
            """
        ),
        # Queries and settings are not data changes.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute("SET LOCAL lock_timeout = '3s'")
                op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
                count = op.get_bind().execute(sa.text("SELECT count(*) FROM orders")).scalar()
            """
        ),
    )
    INVALID = (
        # The change named is the one on the updated table, not a table dropped before it.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.drop_table("login_codes")
                op.add_column("tokens", sa.Column("scopes", sa.JSON(), nullable=True))
                op.execute("UPDATE tokens SET scopes = '[]'")
            """,
            line=10,
            expected_message=(
                "`UPDATE tokens` runs in the same transaction as `op.add_column` on tokens "
                "(line 9), whose lock on login_codes, tokens is held until the data migration "
                "commits — move the data migration to a revision of its own (with "
                "`transaction_per_migration=True`) or a batched job"
            ),
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
                op.execute("UPDATE orders SET currency = 'EUR'")
                op.alter_column("orders", "currency", nullable=False)
            """,
            line=9,
            expected_message=(
                "`UPDATE orders` runs in the same transaction as `op.add_column` on orders "
                "(line 8), whose lock on orders is held until the data migration commits — "
                "move the data migration to a revision of its own (with "
                "`transaction_per_migration=True`) or a batched job"
            ),
        ),
        # Through the connection, with an update() construct and an ORM session.
        Invalid(
            _HEAD
            + """
            from sqlalchemy.orm import Session

            def upgrade():
                conn = op.get_bind()
                op.drop_column("users", "legacy_tier")
                users = sa.table("users", sa.column("tier"))
                conn.execute(users.update().values(tier="free"))

            def downgrade():
                op.add_column("users", sa.Column("legacy_tier", sa.String(10)))
                session = Session(bind=op.get_bind())
            """,
            line=13,
            count=1,
        ),
        # A table name the migration computes is not named in the message.
        Invalid(
            _HEAD
            + """
            def upgrade():
                prefix = op.get_context().opts["table_prefix"]
                op.add_column(f"{prefix}orders", sa.Column("currency", sa.String(3)))
                op.execute(f"UPDATE {prefix}orders SET currency = 'EUR'")
            """,
            line=10,
            expected_message=(
                "`UPDATE` runs in the same transaction as `op.add_column` (line 9), whose lock "
                "on the altered table is held until the data migration commits — move the data "
                "migration to a revision of its own (with `transaction_per_migration=True`) or "
                "a batched job"
            ),
        ),
        # A bulk UPDATE built on the application's model is named by the model's table.
        Invalid(
            _HEAD
            + """
            from app.models import Span

            def upgrade():
                op.add_column("spans", sa.Column("tokens", sa.Integer(), nullable=True))
                op.execute(sa.update(Span).values(tokens=Span.attributes["tokens"].as_float()))
            """,
            line=11,
            files={
                "app/__init__.py": "",
                "app/models.py": """
                    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

                    class Base(DeclarativeBase):
                        pass

                    class Span(Base):
                        __tablename__ = "spans"
                        id: Mapped[int] = mapped_column(primary_key=True)
                """,
            },
            expected_message=(
                "`UPDATE spans` runs in the same transaction as `op.add_column` on spans "
                "(line 10), whose lock on spans is held until the data migration commits — "
                "move the data migration to a revision of its own (with "
                "`transaction_per_migration=True`) or a batched job"
            ),
        ),
        # Rows a new constraint would reject, deleted before it is added: they stay
        # locked while the ALTER waits for the table's writers.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.execute("DELETE FROM oauth_accounts WHERE user_id IS NULL")
                op.create_unique_constraint("uq_provider", "oauth_accounts", ["provider"])
            """,
            line=8,
            expected_message=(
                "`DELETE oauth_accounts` runs in the same transaction as "
                "`op.create_unique_constraint` on oauth_accounts (line 9), whose lock waits "
                "for every writer of oauth_accounts while the rows the data migration changed "
                "stay locked: a writer waiting for one of them deadlocks with the migration — "
                "move the data migration to a revision of its own (with "
                "`transaction_per_migration=True`) or a batched job"
            ),
        ),
        # The same statement run for a list of parameter sets, or once per row in a loop.
        Invalid(_BOUND_KEY.format(run="conn.execute(sql, [(badge_id, root_id), (2, 3)])")),
        Invalid(
            _BOUND_KEY.format(
                run="for row in conn.execute('SELECT id FROM categories').fetchall():\n"
                + " " * 20
                + "conn.execute(sql, (badge_id, row[0]))"
            )
        ),
        # A condition on another column may match every row.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
                op.execute("UPDATE orders SET currency = 'EUR' WHERE status = 'open'")
            """,
            line=9,
        ),
        # Rows read from the table itself, or computed: as long as the table is big.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("setting", sa.Column("view", sa.String(64), nullable=True))
                op.execute("INSERT INTO setting (name, view) SELECT name, 'basic' FROM setting")
            """,
            line=9,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("setting", sa.Column("view", sa.String(64), nullable=True))
                setting = sa.sql.table("setting", sa.column("name"))
                rows = op.get_bind().execute(sa.text("SELECT name FROM legacy_setting"))
                op.bulk_insert(setting, [{"name": row.name} for row in rows])
            """,
            line=11,
        ),
        # Rows written out, but once per row of a query: as many as the table has.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("slack_channel_config", sa.Column("is_default", sa.Boolean()))
                conn = op.get_bind()
                for bot in conn.execute(sa.text("SELECT id FROM slack_bot")).fetchall():
                    conn.execute(
                        sa.text(
                            "INSERT INTO slack_channel_config (slack_bot_id, is_default) "
                            "VALUES (:bot_id, TRUE)"
                        ),
                        {"bot_id": bot[0]},
                    )
            """,
            line=11,
        ),
        # In a loop, the UPDATE of one table runs after the ALTER of the one before.
        Invalid(
            _HEAD
            + """
            def upgrade():
                for table in ("orders", "invoices"):
                    op.execute(f"UPDATE {table} SET currency = 'EUR'")
                    op.add_column(table, sa.Column("total", sa.Numeric(), nullable=True))
            """,
            line=9,
        ),
    )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        by_entry: dict[str, list[Operation]] = {}
        for operation in self.operations(migration):
            by_entry.setdefault(operation.entry, []).append(operation)
        for operations in by_entry.values():
            finding = self._check_transaction(migration, operations)
            if finding is not None:
                yield finding

    def _check_transaction(
        self, migration: MigrationFile, operations: list[Operation]
    ) -> Finding | None:
        """One entry point's operations run in one transaction."""
        schema = [
            op
            for op in operations
            if op.kind in SCHEMA_KINDS
            and not op.in_autocommit
            and migration.is_new_table(op.table) is not True
            and not (op.kind == "create_index" and op.concurrently)
        ]
        if not schema:
            return None
        position = {id(op): index for index, op in enumerate(operations)}
        loops = _loops(migration.file.tree)
        for index, operation in enumerate(operations):
            if operation.kind != "dml" or operation.in_autocommit:
                continue
            if operation.one_row and not (
                (operation.verb == "INSERT" or operation.bound_key)
                and loops.get(id(operation.node))
            ):
                continue  # one row by its key, or rows written out, is no backfill
            if migration.is_new_table(operation.table) is not False:
                continue
            before = [
                op
                for op in schema
                if position[id(op)] < index
                or loops.get(id(op.node), set()) & loops.get(id(operation.node), set())
            ]
            if before:
                # Name the change the data migration meets: one on its own table, else
                # one that leaves a table behind (a dropped table's lock blocks no
                # lasting query).
                first = next(
                    (op for op in before if operation.table and op.table == operation.table),
                    next(
                        (op for op in before if op.table and op.kind != "drop_table"),
                        next((op for op in before if op.table), before[0]),
                    ),
                )
                locked = sorted({op.table for op in before if op.table}) or ["the altered table"]
                consequence = (
                    f"whose lock on {', '.join(locked)} is held until the data migration commits"
                )
            else:
                # The schema change comes after: its lock is not held through the data
                # change, but it waits for the table's writers while the changed rows stay
                # locked, and a writer waiting for one of them deadlocks with it. Another
                # table's change (a version row bumped) has no such writer.
                later = [op for op in schema if operation.table and op.table == operation.table]
                if not later:
                    continue
                first = later[0]
                consequence = (
                    f"whose lock waits for every writer of {first.table} while the rows the "
                    "data migration changed stay locked: a writer waiting for one of them "
                    "deadlocks with the migration"
                )
            dml = (
                "an ORM session bound to the migration's connection"
                if operation.verb == "ORM"
                else f"`{operation.verb} {operation.table}`"
                if operation.table
                else f"`{operation.verb}`"
            )
            # One finding per transaction: moving the data out fixes every statement.
            return self.at(
                migration.file,
                operation.node,
                dml=dml,
                schema=_describe(first),
                line=line_of(first.node),
                consequence=consequence,
                related=(Related(migration.file.ctx.location(first.node), "the schema change"),),
            )
        return None


def _loops(tree: ast.AST) -> dict[int, set[int]]:
    """The loops around each node of ``tree``, by id."""
    around: dict[int, set[int]] = {}
    for loop in ast.walk(tree):
        if isinstance(loop, (ast.For, ast.AsyncFor, ast.While)):
            for node in ast.walk(loop):
                if node is not loop:
                    around.setdefault(id(node), set()).add(id(loop))
    return around


def _describe(operation: Operation) -> str:
    if operation.via_sql:
        return f"the ALTER on {operation.table}" if operation.table else "the schema change"
    on = f" on {operation.table}" if operation.table else ""
    return f"`{operation.call}`{on}"
