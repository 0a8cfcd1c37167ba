"""SQD609: a migration drops or renames a table or column that the models still map."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable

from sqla_doctor.findings import Finding, Location, Related, Severity
from sqla_doctor.static.alembic.ops import Operation
from sqla_doctor.static.alembic.project import (
    AlembicAnalysis,
    MappedTable,
    MigrationFile,
    mapped_table,
)
from sqla_doctor.static.alembic.rule import MigrationRule
from sqla_doctor.static.rule import Invalid, Valid

_MODELS = """
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str] = mapped_column("name", String(100))


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    note: Mapped[str | None]
"""
_HEAD = """
            import sqlalchemy as sa
            from alembic import op

            revision = "b2"
            down_revision = "a1"
"""
_FILES = {"app/__init__.py": "", "app/models.py": _MODELS}
_COLUMN_MODELS = """
import sqlalchemy as sa
from sqlalchemy.orm import declarative_base

Base = declarative_base()


class User(Base):
    __tablename__ = "users"

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(100))
"""

# A module of both spellings: a legacy model with sa.Column, then a typed one.
_MIXED_MODELS = """
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Legacy(Base):
    __tablename__ = "legacy"

    id = sa.Column(sa.Integer, primary_key=True)
    code = sa.Column(sa.String(20))


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
"""
# The typed model, then a Table written with sa.Column.
_TABLE_AFTER_MODELS = (
    _MIXED_MODELS.split("class Legacy")[0]
    + """class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)


tags = sa.Table("tags", Base.metadata, sa.Column("id", sa.Integer), sa.Column("label", sa.Text))
"""
)
# A revision renaming `table`.`column` to new_name.
_RENAME = (
    _HEAD
    + """
            def upgrade():
                op.alter_column("{table}", "{column}", new_column_name="new_name")
            """
)


class DropOrRenameMappedObject(MigrationRule):
    """
    ## What it does
    Checks for a migration that drops or renames a table or column that the project's
    models still map: `op.drop_table`, `op.drop_column`, `op.rename_table`,
    `op.alter_column(..., new_column_name=...)` (and their `batch_op` and raw SQL forms),
    read against the mapped classes and `Table` objects of the metadata env.py targets.
    A name that a later revision creates again (`create_table`, `add_column`, a rename to
    it, or SQL of its upgrade that adds it) is what the models map now, and its old drop
    or rename is not reported; nor is a table another is renamed to in the same
    migration (a rebuilt table swapped in), nor a table of another schema than the one
    the model's `__table_args__` names.

    ## Why is this bad?
    The ORM names every mapped column in its SELECTs and INSERTs. Once the migration has
    run, every query of the model fails with `UndefinedColumn` / `UndefinedTable` until
    new code is deployed — and in a rolling deploy the old code keeps running next to the
    new schema for minutes. A rename breaks the old code even when the models already use
    the new name. Dropping is safe only after a release in which no code maps the object
    (expand and contract).

    ## Example
    ```python
    # models.py still has: note: Mapped[str | None]
    def upgrade():
        op.drop_column("orders", "note")
    ```

    Use instead:
    ```python
    # Release 1: remove Order.note from the model (or mark it
    #            `deferred(..., raiseload=True)` and stop using it), deploy.
    # Release 2: the migration.
    def upgrade():
        op.drop_column("orders", "note")
    ```
    For a rename: add the new column, write both, backfill, move reads to the new one,
    then drop the old one in a later release; or map the old column name under the new
    attribute name (`mapped_column("old_name")`) and keep the database as it is.

    ## References
    - [strong_migrations: Removing a column](https://github.com/ankane/strong_migrations#removing-a-column)
    - [django-migration-linter: backward-incompatible migrations](https://github.com/3YOURMIND/django-migration-linter/blob/main/docs/incompatibilities.md)
    """

    code = "SQD609"
    name = "drop-or-rename-of-mapped-object"
    pitfalls = ("P42",)
    severity = Severity.ERROR
    message = "{what}"
    postgresql_only = False

    VALID = (
        # The column is no longer mapped: the contract step.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.drop_column("orders", "legacy_code")
                op.drop_table("old_sessions")

            def downgrade():
                op.drop_column("orders", "note")
            """,
            path="migrations/versions/b2.py",
            files=_FILES,
        ),
        # The migration creates what it drops (a temporary table).
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_table("orders", sa.Column("id", sa.Integer(), primary_key=True))
                op.drop_table("orders")
            """,
            path="migrations/versions/b2.py",
            files=_FILES,
        ),
        # A column swapped in under the old name, made by a lambda, per table and column
        # of a loop (gnocchi's DECIMAL to timestamp revision).
        Valid(
            _HEAD
            + """
            def upgrade():
                for table_name, column_name in (("users", "name"), ("orders", "note")):
                    temp_col = lambda: sa.Column(column_name + "_ts", sa.DateTime())
                    op.add_column(table_name, temp_col())
                    op.drop_column(table_name, column_name)
                    op.alter_column(
                        table_name, column_name + "_ts", new_column_name=column_name
                    )
            """,
            path="migrations/versions/b2.py",
            files=_FILES,
        ),
        # A rebuilt table swapped in under the old name.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.create_table("orders_tmp", sa.Column("id", sa.Integer(), primary_key=True))
                op.execute("INSERT INTO orders_tmp (id) SELECT id FROM orders")
                op.drop_table("orders")
                op.rename_table("orders_tmp", "orders")
            """,
            path="migrations/versions/b2.py",
            files=_FILES,
        ),
        # Old history: a later revision creates the table (and the column) again, and the
        # models map those, not what this revision dropped or renamed (pypi/warehouse).
        Valid(
            _HEAD
            + """
            def upgrade():
                op.drop_table("orders")
                op.alter_column("users", "name", new_column_name="legacy_name")
            """,
            path="migrations/versions/b2.py",
            files={
                **_FILES,
                "alembic.ini": "[alembic]\nscript_location = %(here)s/migrations\n",
                "migrations/versions/c3.py": (
                    "import sqlalchemy as sa\n"
                    "from alembic import op\n"
                    'revision = "c3"\n'
                    'down_revision = "b2"\n'
                    "def upgrade():\n"
                    '    op.create_table("orders", sa.Column("id", sa.Integer()))\n'
                    '    op.add_column("users", sa.Column("name", sa.String(100)))\n'
                ),
            },
        ),
        # Old history: a later revision adds the column back with SQL of its own, built
        # from constants (Skyvern-AI/skyvern).
        Valid(
            _HEAD
            + """
            def upgrade():
                op.drop_column("users", "name")
            """,
            path="migrations/versions/b2.py",
            files={
                **_FILES,
                "alembic.ini": "[alembic]\nscript_location = %(here)s/migrations\n",
                "migrations/versions/c3.py": (
                    "from alembic import op\n"
                    'revision = "c3"\n'
                    'down_revision = "b2"\n'
                    '_TABLES = ("users",)\n'
                    '_COLUMN = "name"\n'
                    "def upgrade():\n"
                    "    for table in _TABLES:\n"
                    "        op.execute(f'ALTER TABLE \"{table}\" ADD COLUMN {_COLUMN} TEXT')\n"
                    "def downgrade():\n"
                    "    op.drop_column('users', 'name')\n"
                ),
            },
        ),
        # Another schema's table of the same name: the model maps app.audit_log.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.drop_table("audit_log", schema="archive")
                op.drop_column("audit_log", "note", schema="archive")
            """,
            path="migrations/versions/b2.py",
            files={
                **_FILES,
                "app/audit.py": (
                    "from sqlalchemy.orm import Mapped, mapped_column\n"
                    "from app.models import Base\n"
                    "class AuditLog(Base):\n"
                    '    __tablename__ = "audit_log"\n'
                    '    __table_args__ = ({"schema": "app"},)\n'
                    "    id: Mapped[int] = mapped_column(primary_key=True)\n"
                    "    note: Mapped[str]\n"
                ),
            },
        ),
        # No models in the checked project: nothing to compare with.
        Valid(
            _HEAD
            + """
            def upgrade():
                op.drop_column("orders", "note")
            """
        ),
    )
    INVALID = (
        # Two schemas each have a `revisions`: `schema=` says which one is renamed, and its
        # model maps the new name (the other schema's still maps the old one).
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("revisions", "submitter_id", new_column_name="user_id",
                                schema="editing")
            """,
            path="migrations/versions/b2.py",
            expected_message=(
                "renames revisions.submitter_id to user_id: the models map the new name, but "
                "the code still running during the deploy selects revisions.submitter_id and "
                "fails — add the new column and copy, or map the old name "
                '(`mapped_column("submitter_id")`) instead'
            ),
            files={
                **_FILES,
                "app/revisions.py": (
                    "from sqlalchemy.orm import Mapped, mapped_column\n"
                    "from app.models import Base\n"
                    "class EditingRevision(Base):\n"
                    '    __tablename__ = "revisions"\n'
                    '    __table_args__ = {"schema": "editing"}\n'
                    "    id: Mapped[int] = mapped_column(primary_key=True)\n"
                    "    user_id: Mapped[int]\n"
                    "class PaperRevision(Base):\n"
                    '    __tablename__ = "revisions"\n'
                    '    __table_args__ = {"schema": "papers"}\n'
                    "    id: Mapped[int] = mapped_column(primary_key=True)\n"
                    "    submitter_id: Mapped[int]\n"
                ),
            },
        ),
        # The same schema as the model's `__table_args__`.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.drop_table("audit_log", schema="app")
            """,
            path="migrations/versions/b2.py",
            files={
                **_FILES,
                "app/audit.py": (
                    "from sqlalchemy.orm import Mapped, mapped_column\n"
                    "from app.models import Base\n"
                    "class AuditLog(Base):\n"
                    '    __tablename__ = "audit_log"\n'
                    '    __table_args__ = {"schema": "app"}\n'
                    "    id: Mapped[int] = mapped_column(primary_key=True)\n"
                ),
            },
            count=1,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.drop_column("orders", "note")
            """,
            path="migrations/versions/b2.py",
            files=_FILES,
            line=8,
            expected_message=(
                "drops column orders.note, which Order (app/models.py:17) still maps: once this "
                "runs, every query of Order fails with UndefinedColumn until the new code is "
                "deployed — remove it from the model in one release, drop it in a later one"
            ),
        ),
        # A later revision's SQL adds another column; only its downgrade adds this one.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.drop_column("orders", "note")
            """,
            path="migrations/versions/b2.py",
            files={
                **_FILES,
                "alembic.ini": "[alembic]\nscript_location = %(here)s/migrations\n",
                "migrations/versions/c3.py": (
                    "from alembic import op\n"
                    'revision = "c3"\n'
                    'down_revision = "b2"\n'
                    "def upgrade():\n"
                    "    op.execute('ALTER TABLE orders ADD COLUMN notes TEXT')\n"
                    "def downgrade():\n"
                    "    op.execute('ALTER TABLE orders ADD COLUMN note TEXT')\n"
                ),
            },
            line=8,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("users", "name", new_column_name="display_name")
                op.execute("ALTER TABLE orders RENAME TO purchases")
                with op.batch_alter_table("users") as batch_op:
                    batch_op.drop_column("email")
            """,
            path="migrations/versions/b2.py",
            files=_FILES,
            count=3,
        ),
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("users", "fullname", new_column_name="name")
            """,
            path="migrations/versions/b2.py",
            files=_FILES,
            expected_message=(
                "renames users.fullname to name: the models map the new name, but the code "
                "still running during the deploy selects users.fullname and fails — add the "
                'new column and copy, or map the old name (`mapped_column("fullname")`) instead'
            ),
        ),
        # Models written with `sa.Column` (Octavia's): the advice is written so too.
        Invalid(
            _HEAD
            + """
            def upgrade():
                op.alter_column("users", "name", new_column_name="display_name")
            """,
            path="migrations/versions/b2.py",
            files={"app/__init__.py": "", "app/models.py": _COLUMN_MODELS},
            expected_message=(
                "renames users.name to display_name, but User (app/models.py:7) still maps "
                "name: every query of User fails with UndefinedColumn once this runs — map "
                "the new name, or keep the column and map it under a new attribute "
                '(`sa.Column("name", ...)`)'
            ),
        ),
        # A module of both spellings: the advice follows the class (or Table) the rename
        # is about.
        Invalid(
            _RENAME.format(table="users", column="name"),
            path="migrations/versions/b2.py",
            files={"app/__init__.py": "", "app/models.py": _MIXED_MODELS},
            expected_message=(
                "renames users.name to new_name, but User (app/models.py:16) still maps "
                "name: every query of User fails with UndefinedColumn once this runs — map "
                "the new name, or keep the column and map it under a new attribute "
                '(`mapped_column("name")`)'
            ),
        ),
        Invalid(
            _RENAME.format(table="legacy", column="code"),
            path="migrations/versions/b2.py",
            files={"app/__init__.py": "", "app/models.py": _MIXED_MODELS},
            expected_message=(
                "renames legacy.code to new_name, but Legacy (app/models.py:9) still maps "
                "code: every query of Legacy fails with UndefinedColumn once this runs — map "
                "the new name, or keep the column and map it under a new attribute "
                '(`sa.Column("code", ...)`)'
            ),
        ),
        Invalid(
            _RENAME.format(table="tags", column="label"),
            path="migrations/versions/b2.py",
            files={"app/__init__.py": "", "app/models.py": _TABLE_AFTER_MODELS},
            expected_message=(
                "renames tags.label to new_name, but Table('tags') (app/models.py:15) still "
                "maps label: every query of Table('tags') fails with UndefinedColumn once this "
                "runs — map the new name, or keep the column and map it under a new attribute "
                '(`sa.Column("label", ...)`)'
            ),
        ),
    )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        operations = [
            op
            for op in self.operations(migration)
            if op.kind in ("drop_table", "drop_column", "rename_column", "rename_table")
        ]
        if not operations:
            return
        schema = shared.mapped_schema(migration.project)
        if not schema:
            return
        # Columns this migration adds, or renames another column to: a drop or rename of
        # the same name is a swap (add new_id, drop id, rename new_id to id), not a loss.
        added = {
            (op.table, op.column)
            for op in self.operations(migration)
            if op.kind == "add_column" and op.column
        }
        recreated = added | {
            (op.table, op.new_name)
            for op in self.operations(migration)
            if op.kind == "rename_column" and op.new_name
        }
        # Tables another is renamed to: dropping or renaming away that name first is a
        # swap (build orders_new, drop orders, rename orders_new to orders).
        replaced = {
            op.new_name
            for op in self.operations(migration)
            if op.kind == "rename_table" and op.new_name
        }
        for operation in operations:
            if operation.kind in ("drop_table", "rename_table") and operation.table in replaced:
                continue
            if operation.kind in ("drop_column", "rename_column") and (
                (operation.table, operation.column) in recreated
            ):
                continue
            if operation.kind == "rename_column" and (operation.table, operation.column) in added:
                continue
            table = operation.table
            if table is None or migration.is_new_table(table) is not False:
                continue
            mapped = mapped_table(schema, table, operation.schema)
            if _other_schema(operation, mapped) or _other_schema(
                operation, mapped_table(schema, operation.new_name, operation.schema)
            ):
                # Another schema's table of the same name (users.affiliations is not the
                # indico.affiliations the model maps).
                continue
            if (
                mapped is not None
                and (operation.kind != "rename_column" or operation.column in mapped.columns)
                and (operation.kind != "drop_column" or operation.column in mapped.columns)
                and _recreated_later(migration, table, operation.column)
            ):
                # A later revision creates the name again: the model maps that new
                # table or column, not the one this old revision dropped or renamed.
                continue
            if operation.kind == "drop_table" and mapped is not None:
                yield self._report(
                    migration,
                    operation.node,
                    mapped,
                    f"drops table {table}, which {_owner(mapped)} still maps: once this runs, "
                    f"every query of {mapped.owner_name} fails with UndefinedTable until the new "
                    "code is deployed — remove the model in one release, drop the table in a "
                    "later one",
                )
            elif (
                operation.kind == "drop_column"
                and mapped is not None
                and (operation.column in mapped.columns)
            ):
                yield self._report(
                    migration,
                    operation.node,
                    mapped,
                    f"drops column {table}.{operation.column}, which {_owner(mapped)} still "
                    f"maps: once this runs, every query of {mapped.owner_name} fails with "
                    "UndefinedColumn until the new code is deployed — remove it from the model "
                    "in one release, drop it in a later one",
                )
            elif operation.kind == "rename_column" and mapped is not None:
                old, new = operation.column, operation.new_name
                if old in mapped.columns:
                    yield self._report(
                        migration,
                        operation.node,
                        mapped,
                        f"renames {table}.{old} to {new}, but {_owner(mapped)} still maps "
                        f"{old}: every query of {mapped.owner_name} fails with UndefinedColumn "
                        "once this runs — map the new name, or keep the column and map it "
                        f"under a new attribute (`{_mapping_of(mapped, old)}`)",
                    )
                elif new in mapped.columns:
                    yield self._report(
                        migration,
                        operation.node,
                        mapped,
                        f"renames {table}.{old} to {new}: the models map the new name, but the "
                        f"code still running during the deploy selects {table}.{old} and fails "
                        "— add the new column and copy, or map the old name "
                        f"(`{_mapping_of(mapped, old)}`) instead",
                        severity=Severity.WARNING,
                    )
            elif operation.kind == "rename_table":
                new_name = operation.new_name
                if mapped is not None:
                    yield self._report(
                        migration,
                        operation.node,
                        mapped,
                        f"renames table {table} to {new_name}, but {_owner(mapped)} still maps "
                        f"{table}: every query of {mapped.owner_name} fails with UndefinedTable "
                        "once this runs — keep the table name (`__tablename__`) or move the data "
                        "over several releases",
                    )
                elif (
                    target := mapped_table(schema, new_name, operation.schema)
                ) is not None:
                    yield self._report(
                        migration,
                        operation.node,
                        target,
                        f"renames table {table} to {new_name}: the models map the new name, but "
                        f"the code still running during the deploy queries {table} and fails — "
                        "rename over several releases (a view named after the old table bridges "
                        "the gap)",
                        severity=Severity.WARNING,
                    )

    def _report(
        self,
        migration: MigrationFile,
        node: ast.AST,
        mapped: MappedTable,
        what: str,
        severity: Severity | None = None,
    ) -> Finding:
        return self.at(
            migration.file,
            node,
            what=what,
            severity=severity,
            related=(Related(Location(mapped.path, mapped.line), f"mapped by {mapped.owner}"),),
        )


def _other_schema(operation: Operation, mapped: MappedTable | None) -> bool:
    return (
        mapped is not None
        and operation.schema is not None
        and mapped.schema is not None
        and operation.schema != mapped.schema
    )


def _recreated_later(migration: MigrationFile, table: str, column: str | None) -> bool:
    """Whether a revision above this one creates ``table`` (or ``table.column``) again."""
    project, revision = migration.project, migration.revision
    if project is None or revision is None:
        return False
    later = project.graph.descendants(revision.revision)
    if not later:
        return False
    for other in project.files:
        if other.revision is None or other.revision.revision not in later:
            continue
        for op in other.upgrade_operations():
            if op.kind == "create_table" and op.table == table:
                return True
            if op.kind == "rename_table" and op.new_name == table:
                return True
            if column is not None and op.table == table:
                if op.kind == "add_column" and op.column == column:
                    return True
                if op.kind == "rename_column" and op.new_name == column:
                    return True
        if _sql_recreates(other, table, column):
            return True
    return False


_CREATES = re.compile(r"\b(?:ADD\s+COLUMN|CREATE\s+TABLE)\b", re.IGNORECASE)


def _sql_recreates(migration: MigrationFile, table: str, column: str | None) -> bool:
    """Whether the revision's upgrade may create ``table`` (``table.column``) again in SQL
    of its own — ``ALTER TABLE ... ADD COLUMN`` or ``CREATE TABLE`` text that names it, or
    names it through constants (``f'ALTER TABLE "{table}" ADD COLUMN {_COLUMN} JSON'`` in
    a loop over ``_TABLES``). Text from ``downgrade()`` does not count."""
    strings: list[str] = []
    pending: list[ast.AST] = list(migration.file.tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "downgrade":
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
        pending.extend(ast.iter_child_nodes(node))
    if not any(_CREATES.search(text) for text in strings):
        return False
    names = [table] if column is None else [table, column]
    return all(
        any(re.search(rf"(?<![\w$]){re.escape(name)}(?![\w$])", text) for text in strings)
        for name in names
    )


def _mapping_of(mapped: MappedTable, column: str | None) -> str:
    """An attribute mapping the column ``column``, written as the models' module writes
    its columns: ``mapped_column("name")``, or ``sa.Column("name", ...)``, which needs
    its type."""
    call = mapped.column_call or "mapped_column"
    if call.rpartition(".")[2] == "mapped_column":
        return f'{call}("{column}")'
    return f'{call}("{column}", ...)'


def _owner(mapped: MappedTable) -> str:
    return f"{mapped.owner_name} ({mapped.path}:{mapped.line})"
