"""SQD606: a foreign key or check constraint added to an existing table and validated at once."""

from __future__ import annotations

import ast
from collections.abc import Iterable

from sqla_doctor.findings import Applicability, Finding, Severity
from sqla_doctor.static.alembic.ops import Operation
from sqla_doctor.static.alembic.project import AlembicAnalysis, MigrationFile
from sqla_doctor.static.alembic.rule import MigrationRule, keyword_fix, line_of
from sqla_doctor.static.rule import Invalid, Valid

_HEAD = """
            import sqlalchemy as sa
            from alembic import op

            revision = "b2"
            down_revision = "a1"
"""
_KINDS = {"foreign_key": "foreign key", "check": "check constraint"}


class ConstraintWithoutNotValid(MigrationRule):
    """
    ## What it does
    Checks for a foreign key or check constraint added to an existing table without
    `NOT VALID`: `op.create_foreign_key(...)` and `op.create_check_constraint(...)` without
    `postgresql_not_valid=True`, a column added with `sa.ForeignKey(...)`, and raw
    `ALTER TABLE ... ADD CONSTRAINT ... FOREIGN KEY/CHECK`. Also checks for a
    `VALIDATE CONSTRAINT` run in the same transaction that added the constraint
    `NOT VALID`, which gains nothing.

    ## Why is this bad?
    Adding the constraint validates every existing row before the statement ends, under a
    lock held until the migration commits: SHARE ROW EXCLUSIVE on *both* tables for a
    foreign key (every INSERT, UPDATE and DELETE on them waits for the whole scan), ACCESS
    EXCLUSIVE on the table for a check constraint (reads wait too). Queued behind that
    lock, so does everything after them. Added `NOT VALID`, the constraint holds for new
    rows at once, and a later `VALIDATE CONSTRAINT` scans the old rows under a SHARE
    UPDATE EXCLUSIVE lock, which lets reads and writes through. The lock that ADD
    CONSTRAINT took is held until its transaction commits, so validating in the same
    migration brings the blocking scan back.

    ## Example
    ```python
    def upgrade():
        op.create_foreign_key(
            "fk_orders_user_id", "orders", "users", ["user_id"], ["id"]
        )
    ```

    Use instead, in two revisions:
    ```python
    # b2_add_fk_orders_user_id.py
    def upgrade():
        op.create_foreign_key(
            "fk_orders_user_id", "orders", "users", ["user_id"], ["id"],
            postgresql_not_valid=True,
        )

    # c3_validate_fk_orders_user_id.py
    def upgrade():
        op.execute("ALTER TABLE orders VALIDATE CONSTRAINT fk_orders_user_id")
    ```
    With `transaction_per_migration=True` in env.py's `context.configure()`, so that one
    `alembic upgrade` running both revisions commits between them.

    ## Fix safety
    Unsafe: the fix only adds `postgresql_not_valid=True`; existing rows stay unchecked
    until a later migration validates the constraint.

    ## References
    - [PostgreSQL: ALTER TABLE ... NOT VALID](https://www.postgresql.org/docs/current/sql-altertable.html#SQL-ALTERTABLE-DESC-ADD-TABLE-CONSTRAINT)
    - [Squawk: constraint-missing-not-valid](https://squawkhq.com/docs/constraint-missing-not-valid)
    - [strong_migrations: Adding a foreign key](https://github.com/ankane/strong_migrations#adding-a-foreign-key)
    """

    code = "SQD606"
    name = "constraint-without-not-valid"
    pitfalls = ("P39",)
    severity = Severity.WARNING
    fix = Applicability.UNSAFE
    message = "{what}"

    VALID = (
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_foreign_key(
                    "fk_orders_user_id", "orders", "users", ["user_id"], ["id"],
                    postgresql_not_valid=True,
                )
                op.create_check_constraint(
                    "ck_orders_total", "orders", "total >= 0", postgresql_not_valid=True
                )
                op.execute(
                    "ALTER TABLE reviews ADD CONSTRAINT ck_rating CHECK (rating > 0) NOT VALID"
                )
            """
        ),
        # One SQL statement adding a column with no default and its key: every row is
        # NULL, so PostgreSQL adds the key valid without scanning the table.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute("ALTER TABLE orders ADD COLUMN shop_id integer REFERENCES shops (id)")
            """
        ),
        # New tables have no rows to validate.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_table(
                    "invoices",
                    sa.Column("id", sa.Integer(), primary_key=True),
                    sa.Column("order_id", sa.Integer()),
                )
                op.create_foreign_key("fk_inv_order", "invoices", "orders", ["order_id"], ["id"])
            """
        ),
        # Validation in a later revision, and in an autocommit block.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.execute("ALTER TABLE orders VALIDATE CONSTRAINT fk_orders_user_id")
                op.create_check_constraint(
                    "ck_users_age", "users", "age > 0", postgresql_not_valid=True
                )
                with op.get_context().autocommit_block():
                    op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_age")
            """
        ),
    )
    INVALID = (
        # A self-referencing key: one table.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.create_foreign_key(None, "runs", "runs", ["parent_id"], ["id"])
            """,
            line=8,
            expected_message=(
                "foreign key is added to runs and checked against every existing row at once, "
                "under a SHARE ROW EXCLUSIVE lock that blocks writes to runs for the whole "
                "scan — add it with `postgresql_not_valid=True`, then VALIDATE CONSTRAINT in a "
                "later revision"
            ),
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.create_foreign_key(
                    "fk_orders_user_id",
                    "orders",
                    "users",
                    ["user_id"],
                    ["id"],
                )
            """,
            line=8,
            expected_message=(
                "foreign key fk_orders_user_id is added to orders and checked against every "
                "existing row at once, under a SHARE ROW EXCLUSIVE lock that blocks writes to "
                "orders and users for the whole scan — add it with `postgresql_not_valid=True`, "
                "then VALIDATE CONSTRAINT in a later revision"
            ),
            expected_fix=_HEAD
            + """
            def upgrade():
                op.create_foreign_key(
                    "fk_orders_user_id",
                    "orders",
                    "users",
                    ["user_id"],
                    ["id"], postgresql_not_valid=True,
                )
            """,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.add_column(
                    "orders", sa.Column("coupon_id", sa.Integer(), sa.ForeignKey("coupons.id"))
                )
                op.execute("ALTER TABLE orders ADD CONSTRAINT ck_total CHECK (total >= 0)")
                op.execute(
                    "ALTER TABLE orders ADD COLUMN shop_id integer DEFAULT 1 REFERENCES shops (id)"
                )
            """,
            count=3,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.create_check_constraint(
                    "ck_users_age", "users", "age > 0", postgresql_not_valid=True
                )
                op.execute("ALTER TABLE users VALIDATE CONSTRAINT ck_users_age")
            """,
            line=11,
            expected_message=(
                "VALIDATE CONSTRAINT ck_users_age runs in the transaction that added it NOT "
                "VALID (line 8): the lock from ADD CONSTRAINT is held through the validation "
                "scan — validate in a later revision (with `transaction_per_migration=True`)"
            ),
        ),
        # Tables the migration loops over: one finding for the call, naming each table.
        Invalid(
            _HEAD
            + """
            def upgrade():
                for table in ("package", "resource"):
                    op.add_column(
                        table, sa.Column("revision_id", sa.Text(), sa.ForeignKey("revision.id"))
                    )
            """,
            line=9,
            expected_message=(
                "column package.revision_id is added with a foreign key, which is validated "
                "at once under a SHARE ROW EXCLUSIVE lock on both tables — add the column "
                "without `ForeignKey`, then `op.create_foreign_key(..., "
                "postgresql_not_valid=True)` and validate it in a later revision (its loop "
                "does the same for 1 more value: resource.revision_id)"
            ),
        ),
    )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        added_not_valid: list[Operation] = []
        for operation in self.operations(migration):
            if operation.kind == "validate_constraint" and not operation.in_autocommit:
                earlier = [
                    op
                    for op in added_not_valid
                    if op.entry == operation.entry
                    and (operation.name is None or op.name is None or op.name == operation.name)
                ]
                if earlier:
                    yield self.at(
                        migration.file,
                        operation.node,
                        what=(
                            f"VALIDATE CONSTRAINT {operation.name or ''} runs in the transaction "
                            f"that added it NOT VALID (line {line_of(earlier[0].node)}): "
                            "the lock from ADD CONSTRAINT is held through the validation scan — "
                            "validate in a later revision (with `transaction_per_migration=True`)"
                        ).replace("CONSTRAINT  runs", "CONSTRAINT runs"),
                    )
                continue
            if migration.is_new_table(operation.table, at=operation) is not False:
                continue
            if operation.kind == "add_constraint" and operation.constraint in _KINDS:
                if operation.not_valid:
                    if not operation.in_autocommit:
                        added_not_valid.append(operation)
                    continue
                yield self._unvalidated(migration, operation)
            elif operation.kind == "add_column" and operation.references:
                if operation.via_sql and not operation.has_server_default:
                    # `ADD COLUMN ... REFERENCES` in one statement, with no default: the
                    # column is NULL in every row and PostgreSQL adds the key valid without
                    # a scan. (`op.add_column` adds the key in a second ALTER, which scans.)
                    continue
                yield self.at(
                    migration.file,
                    operation.node,
                    what=(
                        f"{operation.shown_column} is added with a foreign "
                        "key, which is validated at once under a SHARE ROW EXCLUSIVE lock on "
                        "both tables — add the column without `ForeignKey`, then "
                        "`op.create_foreign_key(..., postgresql_not_valid=True)` and validate it "
                        "in a later revision"
                    ),
                )

    def _unvalidated(self, migration: MigrationFile, operation: Operation) -> Finding:
        kind = _KINDS[operation.constraint or "check"]
        name = f" {operation.name}" if operation.name else ""
        tables = operation.shown_table
        if operation.constraint == "foreign_key" and operation.new_name not in (
            None,
            operation.table,
        ):
            # (a self-referencing key locks its one table)
            tables = f"{operation.shown_table} and {operation.new_name}"
        fix = None
        if isinstance(operation.node, ast.Call) and not operation.via_sql:
            fix = keyword_fix(
                migration.file,
                operation.node,
                "postgresql_not_valid=True",
                "add the constraint NOT VALID (validate it in a later revision)",
            )
        how = "NOT VALID" if operation.via_sql else "with `postgresql_not_valid=True`"
        if operation.constraint == "foreign_key":
            lock = f"a SHARE ROW EXCLUSIVE lock that blocks writes to {tables}"
        else:
            lock = f"an ACCESS EXCLUSIVE lock that blocks reads and writes of {tables}"
        return self.at(
            migration.file,
            operation.node,
            what=(
                f"{kind}{name} is added to {operation.shown_table} and checked against every "
                f"existing row at once, under {lock} for the whole scan — add it {how}, then "
                "VALIDATE CONSTRAINT in a later revision"
            ),
            fix=fix,
        )
