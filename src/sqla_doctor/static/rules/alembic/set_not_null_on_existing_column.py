"""SQD612: SET NOT NULL on a column of an existing table, without a validated check first."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqla_doctor.findings import Finding, Severity
from sqla_doctor.static.alembic.ops import Operation
from sqla_doctor.static.alembic.project import AlembicAnalysis, MigrationFile
from sqla_doctor.static.alembic.rule import MigrationRule
from sqla_doctor.static.rule import Invalid, Valid

_HEAD = """
            import sqlalchemy as sa
            from alembic import op

            revision = "c3"
            down_revision = "b2"
"""
_INI = {
    "alembic.ini": "[alembic]\nscript_location = migrations\n",
    "migrations/env.py": "",
}
_CHECK = """
import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = None


def upgrade():
    op.create_check_constraint(
        "ck_orders_currency_not_null",
        "orders",
        "currency IS NOT NULL",
        postgresql_not_valid=True,
    )
    op.execute("ALTER TABLE orders VALIDATE CONSTRAINT ck_orders_currency_not_null")
"""


_CREATED = """
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None


def upgrade():
    op.create_table(
        "database",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("server", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64)),
        sa.PrimaryKeyConstraint("id", "server"),
    )
    op.create_table("user", sa.Column("email", sa.String(128), primary_key=True))
    op.add_column("user", sa.Column("quota", sa.Integer(), nullable=False, server_default="0"))
"""
_BETWEEN = """
import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = "a1"


def upgrade():
    op.add_column("user", sa.Column("theme", sa.String(16)))
"""
_OTHER_SCHEMA = """
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None


def upgrade():
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_dt", sa.DateTime(), nullable=False),
        schema="users",
    )
"""
# A later revision rebuilds the table: its NOT NULL says nothing of the rows before it.
_REBUILT = """
import sqlalchemy as sa
from alembic import op

revision = "d4"
down_revision = "c3"


def upgrade():
    op.drop_table("orders")
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
    )
"""
_REPLACED = """
import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = "a1"


def upgrade():
    op.add_column("user", sa.Column("new_quota", sa.BigInteger(), nullable=True))
    op.execute("UPDATE user SET new_quota = quota")
    op.drop_column("user", "quota")
    op.alter_column("user", "new_quota", new_column_name="quota")
"""
# Replaces user.quota with a nullable column, after the revision that sets it NOT NULL.
_REPLACED_LATER = _REPLACED.replace(
    'revision = "b2"\ndown_revision = "a1"', 'revision = "d4"\ndown_revision = "c3"'
)
# gnocchi: tables created in a loop over their names, their ids widened in another.
_LOOP_CREATED = """
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None


def upgrade():
    for table in ("ports", "networks"):
        op.create_table(table, sa.Column("id", sa.Integer(), primary_key=True))
    op.create_table("user", sa.Column("quota", sa.Integer(), nullable=False))
"""
_RELAXED = """
import sqlalchemy as sa
from alembic import op

revision = "b2"
down_revision = "a1"


def upgrade():
    op.alter_column("user", "quota", existing_type=sa.Integer(), nullable=True)
"""

# gnocchi: a column created nullable, backfilled and set NOT NULL, widened by a later
# revision that repeats its NOT NULL.
_SET_AFTER_CREATE = """
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None


def upgrade():
    op.create_table(
        "resource_type",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("tablename", sa.String(18)),
    )
    op.execute("UPDATE resource_type SET tablename = name")
    op.alter_column("resource_type", "tablename", existing_type=sa.String(18), nullable=False)
"""
_RELAXED_TABLENAME = _RELAXED.replace(
    '"user", "quota", existing_type=sa.Integer()', '"resource_type", "tablename"'
)
_WIDENED = (
    _HEAD
    + """
            def upgrade():
                op.alter_column(
                    "resource_type", "tablename",
                    type_=sa.String(35), existing_type=sa.String(18), nullable=False,
                )
            """
)


class SetNotNullOnExistingColumn(MigrationRule):
    """
    ## What it does
    Checks for `op.alter_column(..., nullable=False)` (or `batch_op.alter_column`, or raw
    `ALTER COLUMN ... SET NOT NULL`) on a table that already exists, unless another revision
    of the project already added a `CHECK (column IS NOT NULL)` constraint on that table,
    or the column is NOT NULL already: created so by a revision below this one, in the
    same table and schema (`nullable=False`, a primary key) or set so by a later one
    below, and made nullable, dropped or replaced (another column renamed to its name) by
    none after that, or marked
    `existing_nullable=False` (often an `alter_column` that changes the type and repeats
    `nullable=False`), or left NOT NULL by the revision's own `downgrade()` (a rename
    that repeats `nullable=False` both ways).

    ## Why is this bad?
    `SET NOT NULL` takes an ACCESS EXCLUSIVE lock and reads every row to prove there is no
    NULL: no query can read or write the table until the scan is over, and if a NULL is
    left (a row inserted by old code during the deploy) the migration fails at the end of
    it. Since PostgreSQL 12, a validated `CHECK (column IS NOT NULL)` constraint lets
    `SET NOT NULL` skip the scan, and the constraint itself can be validated under a lock
    that lets reads and writes through.

    ## Example
    ```python
    def upgrade():
        op.alter_column("orders", "currency", existing_type=sa.String(3), nullable=False)
    ```

    Use instead, over three revisions (with `transaction_per_migration=True`):
    ```python
    # b2
    op.create_check_constraint(
        "ck_orders_currency_not_null", "orders", "currency IS NOT NULL",
        postgresql_not_valid=True,
    )
    # c3
    op.execute("ALTER TABLE orders VALIDATE CONSTRAINT ck_orders_currency_not_null")
    # d4: PostgreSQL 12+ uses the validated check instead of scanning
    op.alter_column("orders", "currency", existing_type=sa.String(3), nullable=False)
    op.drop_constraint("ck_orders_currency_not_null", "orders", type_="check")
    ```

    ## References
    - [PostgreSQL: ALTER TABLE ... SET NOT NULL](https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-DESC-SET-DROP-NOT-NULL)
    - [strong_migrations: Setting NOT NULL on an existing column](https://github.com/ankane/strong_migrations#setting-not-null-on-an-existing-column)
    - [Squawk: adding-not-nullable-field](https://squawkhq.com/docs/adding-not-nullable-field)
    """

    code = "SQD612"
    name = "set-not-null-on-existing-column"
    pitfalls = ("P38",)
    severity = Severity.WARNING
    message = (
        "SET NOT NULL on {target} reads every row under an ACCESS EXCLUSIVE lock "
        "(reads and writes of {table} wait) and fails if a NULL is left — add "
        "`CHECK ({column} IS NOT NULL) NOT VALID`, validate it in a later revision, then set "
        "NOT NULL"
    )

    VALID = (
        # A rename that repeats NOT NULL both ways: downgrade() says it was NOT NULL before.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("comment_bugs", "karma", nullable=False, new_column_name="feedback")
            def downgrade():
                op.alter_column("comment_bugs", "feedback", nullable=False, new_column_name="karma")
            """
        ),
        # A validated check constraint from an earlier revision: no scan.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("orders", "currency", existing_type=sa.String(3), nullable=False)
                op.drop_constraint("ck_orders_currency_not_null", "orders", type_="check")
            """,
            path="migrations/versions/c3.py",
            files={**_INI, "migrations/versions/b2.py": _CHECK},
        ),
        # A table created by the same migration; DROP NOT NULL.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_table("invoices", sa.Column("id", sa.Integer(), primary_key=True))
                op.add_column("invoices", sa.Column("number", sa.String(20)))
                op.alter_column("invoices", "number", nullable=False)
                op.alter_column("orders", "note", existing_type=sa.Text(), nullable=True)
                op.execute("ALTER TABLE orders ALTER COLUMN status DROP NOT NULL")
            """
        ),
        # Columns NOT NULL already: created so by an earlier revision (a primary key,
        # `nullable=False`), or said so with `existing_nullable=False`. PostgreSQL skips
        # the scan for them.
        Valid(
            _HEAD
            + """
            def upgrade():
                with op.batch_alter_table("database") as batch_op:
                    batch_op.alter_column(
                        "id", existing_type=sa.Integer(), type_=sa.BigInteger(), nullable=False
                    )
                with op.batch_alter_table("user") as batch_op:
                    batch_op.alter_column("email", type_=sa.String(255), nullable=False)
                op.alter_column(
                    "orders", "currency", existing_nullable=False, nullable=False
                )
            """,
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _CREATED,
                "migrations/versions/b2.py": _BETWEEN,
            },
        ),
        # Created NOT NULL below, in a loop over the tables' names; made nullable only by
        # a revision that runs after this one.
        Valid(
            _HEAD
            + """
            def upgrade():
                for table in ("ports", "networks"):
                    op.alter_column(table, "id", type_=sa.BigInteger(), nullable=False)
                op.alter_column("user", "quota", existing_type=sa.Integer(), nullable=False)
            """,
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _LOOP_CREATED,
                "migrations/versions/b2.py": _BETWEEN,
                "migrations/versions/d4.py": _REPLACED_LATER,
            },
        ),
        # Set NOT NULL by a revision below, after the table was created with it nullable.
        Valid(
            _WIDENED,
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _SET_AFTER_CREATE,
                "migrations/versions/b2.py": _BETWEEN,
            },
        ),
    )
    INVALID = (
        # A batch table an f-string names (fief's table prefix), shown as written.
        Invalid(
            _HEAD
            + """
            def upgrade():
                prefix = op.get_context().opts["table_prefix"]
                with op.batch_alter_table(f"{prefix}users") as batch_op:
                    batch_op.alter_column("email", existing_type=sa.String(50), nullable=False)
            """,
            line=10,
            expected_message=(
                "SET NOT NULL on {prefix}users.email reads every row under an ACCESS EXCLUSIVE "
                "lock (reads and writes of {prefix}users wait) and fails if a NULL is left — "
                "add `CHECK (email IS NOT NULL) NOT VALID`, validate it in a later revision, "
                "then set NOT NULL"
            ),
        ),
        # Set NOT NULL below, then made nullable again by a later revision below.
        Invalid(
            _WIDENED,
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _SET_AFTER_CREATE,
                "migrations/versions/b2.py": _RELAXED_TABLENAME,
            },
            line=8,
        ),
        # downgrade() makes the column nullable again: it was before upgrade(); the NOT
        # NULL it keeps is another column's.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("comment_bugs", "karma", nullable=False, new_column_name="feedback")
            def downgrade():
                op.alter_column("comment_bugs", "feedback", nullable=True, new_column_name="karma")
                op.alter_column("comment_bugs", "score", nullable=False)
            """,
            line=8,
        ),
        # Created NOT NULL in another schema's table of that name, or by a revision that
        # is not below this one: this column may hold NULLs.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column("tokens", sa.Column("created_dt", sa.DateTime()), schema="oauth")
                op.execute("UPDATE oauth.tokens SET created_dt = now()")
                op.alter_column("tokens", "created_dt", nullable=False, schema="oauth")
            """,
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _OTHER_SCHEMA,
                "migrations/versions/b2.py": _BETWEEN,
            },
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("orders", "status", existing_type=sa.String(16), nullable=False)
            """,
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _CREATED,
                "migrations/versions/b2.py": _BETWEEN,
                "migrations/versions/d4.py": _REBUILT,
            },
        ),
        # Created NOT NULL, then replaced by a nullable column renamed to its name.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("user", "quota", existing_type=sa.BigInteger(), nullable=False)
            """,
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _CREATED,
                "migrations/versions/b2.py": _REPLACED,
            },
        ),
        # Created NOT NULL, then made nullable by another revision: NULLs may be there.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("user", "quota", existing_type=sa.Integer(), nullable=False)
                op.alter_column("database", "name", existing_type=sa.String(64), nullable=False)
            """,
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _CREATED,
                "migrations/versions/b2.py": _RELAXED,
            },
            count=2,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("orders", "currency", existing_type=sa.String(3), nullable=False)
            """,
            line=8,
            expected_message=(
                "SET NOT NULL on orders.currency reads every row under an ACCESS EXCLUSIVE lock "
                "(reads and writes of orders wait) and fails if a NULL is left — add "
                "`CHECK (currency IS NOT NULL) NOT VALID`, validate it in a later revision, "
                "then set NOT NULL"
            ),
        ),
        # The table comes from a loop over literal names: one finding for the call, naming
        # each table it fires for.
        Invalid(
            _HEAD
            + """
            def upgrade():
                for table in ("ports", "networks"):
                    op.alter_column(table, "standard_attr_id", nullable=False)
            """,
            line=9,
            expected_message=(
                "SET NOT NULL on ports.standard_attr_id reads every row under an ACCESS "
                "EXCLUSIVE lock (reads and writes of ports wait) and fails if a NULL is left — "
                "add `CHECK (standard_attr_id IS NOT NULL) NOT VALID`, validate it in a later "
                "revision, then set NOT NULL (its loop does the same for 1 more value: "
                "networks.standard_attr_id)"
            ),
        ),
        # The check constraint is added in the same transaction: the scan still blocks.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.execute(
                    "ALTER TABLE orders ADD CONSTRAINT ck CHECK (currency IS NOT NULL) NOT VALID"
                )
                op.execute("ALTER TABLE orders VALIDATE CONSTRAINT ck")
                with op.batch_alter_table("orders") as batch_op:
                    batch_op.alter_column("currency", nullable=False)
                op.execute('ALTER TABLE "orders" ALTER COLUMN status SET NOT NULL')
            """,
            count=2,
        ),
    )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        for operation in self.operations(migration):
            if operation.kind != "set_not_null" or operation.column is None:
                continue
            if migration.is_new_table(operation.table, at=operation) is not False:
                continue
            if _checked_elsewhere(migration, operation):
                continue
            if (
                operation.already_not_null
                or _created_not_null(migration, operation)
                or _restored_not_null(migration, operation)
            ):
                continue  # PostgreSQL skips the scan for a column that is NOT NULL already
            yield self.at(
                migration.file,
                operation.node,
                target=operation.shown_target,
                table=operation.shown_table,
                column=operation.column,
            )


def _created_not_null(migration: MigrationFile, operation: Operation) -> bool:
    """The revisions below this one leave the column NOT NULL (same table and schema): the
    last of them to decide created it so (``create_table``, ``add_column``) or set it so
    (an earlier ``SET NOT NULL``, gnocchi's widened ``tablename``), and no revision that
    is not below lets it hold NULLs (makes it nullable, creates it nullable, drops it, or
    renames another column to its name: the old NOT NULL column replaced by a new one)."""
    project = migration.project
    if project is None or migration.revision is None:
        return False
    graph = project.graph
    below = graph.ancestors(migration.revision.revision)
    # Run after this one: nothing they do was there when it ran.
    above = graph.descendants(migration.revision.revision)
    column = operation.column
    decided: list[tuple[int, int, bool]] = []  # (depth, position in the revision, NOT NULL)
    for other in project.files:
        revision = other.revision.revision if other.revision is not None else None
        for position, candidate in enumerate(other.upgrade_operations()):
            if candidate.table != operation.table or candidate.schema != operation.schema:
                continue
            if revision is not None and revision in above:
                continue
            nulls = _lets_nulls_in(candidate, column)
            if revision is None or revision not in below:
                if nulls:
                    return False
                continue
            not_null = (
                (candidate.kind == "create_table" and column in candidate.not_null_columns)
                or (
                    candidate.kind == "add_column"
                    and candidate.column == column
                    and candidate.not_null
                )
                or (
                    candidate.kind == "set_not_null"
                    and candidate.column == column
                    and operation.table is not None
                )
            )
            if nulls or not_null:
                decided.append((len(graph.ancestors(revision)), position, not nulls))
    return bool(decided) and max(decided)[2]


def _restored_not_null(migration: MigrationFile, operation: Operation) -> bool:
    """This revision's ``downgrade()`` leaves the column NOT NULL too: it was so before
    ``upgrade()`` ran (``alter_column(..., nullable=False, new_column_name=...)`` both
    ways, a rename that repeats the column's NOT NULL)."""
    downgrade = [op for op in migration.operations if op.phase == "downgrade"]
    renamed_back = {
        op.node: op.new_name for op in downgrade if op.kind == "rename_column" and op.new_name
    }
    return any(
        candidate.kind == "set_not_null"
        and candidate.table == operation.table
        and candidate.schema == operation.schema
        and renamed_back.get(candidate.node, candidate.column) == operation.column
        for candidate in downgrade
    )


def _lets_nulls_in(candidate: Operation, column: str | None) -> bool:
    """Whether ``candidate`` may leave NULLs in ``column`` of its table."""
    kind = candidate.kind
    if kind == "create_table":
        named = {name for name, _ in candidate.column_types}
        return column in named and column not in candidate.not_null_columns
    if kind == "add_column":
        return candidate.column == column and not candidate.not_null
    if kind == "drop_column":
        return candidate.column == column
    if kind == "rename_column":
        return column in (candidate.column, candidate.new_name)
    return candidate.drops_not_null and candidate.column == column


def _checked_elsewhere(migration: MigrationFile, operation: Operation) -> bool:
    """Another revision adds ``CHECK (column IS NOT NULL)`` on the same table."""
    project = migration.project
    if project is None:
        return False
    pattern = re.compile(
        rf'(?<!\w)"?{re.escape(operation.column or "")}"?\s+IS\s+NOT\s+NULL', re.IGNORECASE
    )
    for other in project.files:
        if other is migration:
            continue
        for candidate in other.upgrade_operations():
            if (
                candidate.kind == "add_constraint"
                and candidate.constraint == "check"
                and candidate.table == operation.table
                and candidate.condition is not None
                and pattern.search(candidate.condition)
            ):
                return True
    return False
