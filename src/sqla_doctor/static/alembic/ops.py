"""What a migration does, read from its ``upgrade()``/``downgrade()`` without running it.

Alembic calls (``op.add_column``, ``batch_op.alter_column`` inside ``batch_alter_table``,
``op.execute`` of a string, ``sa.text`` or an ``update()`` construct, ``op.get_bind()``
connections, ORM sessions bound to it) and raw SQL become one list of :class:`Operation`
in execution order, each knowing whether it runs inside ``autocommit_block()`` and whether
it runs on PostgreSQL at all (``if op.get_bind().dialect.name == "sqlite":`` branches,
and what follows ``if ... == "postgresql": ...; return``).
Helpers called from ``upgrade()`` are followed; values bound to names (``table = "users"``,
``SQL = "CREATE INDEX ..."``) are resolved within the function and the module.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sqla_doctor.static.alembic.sql import PLACEHOLDER, SqlAction, classify
from sqla_doctor.static.index.models import literal_str
from sqla_doctor.static.index.names import NameResolver

if TYPE_CHECKING:
    from sqla_doctor.static.index import ProjectIndex

UPGRADE = "upgrade"
DOWNGRADE = "downgrade"

# Kinds that change the schema of a table (a data migration beside them holds their lock).
SCHEMA_KINDS = frozenset(
    {
        "add_column",
        "alter_type",
        "set_not_null",
        "drop_column",
        "rename_column",
        "rename_table",
        "add_constraint",
        "create_index",
        "drop_index",
        "drop_table",
        "ddl_other",
        "validate_constraint",
    }
)


@dataclass(frozen=True)
class Operation:
    """One schema or data change, with the facts the migration rules read."""

    kind: str
    node: ast.AST
    call: str = ""  # how it was written: "op.add_column", "batch_op.alter_column", "SQL"
    phase: str = UPGRADE
    # The module-level function Alembic calls: "upgrade", or "upgrade_core" in a multi-database
    # project, where each runs on its own connection and transaction.
    entry: str = UPGRADE
    in_autocommit: bool = False
    postgresql: bool = True
    table: str | None = None
    # The `schema=` an op.* call names (None: not written, the search path's).
    schema: str | None = None
    # The schema raw SQL's `ALTER TABLE categories.settings` names (kept apart from
    # `schema`, which the other rules match to the models').
    sql_schema: str | None = None
    column: str | None = None
    new_name: str | None = None
    name: str | None = None
    concurrently: bool = False
    unique: bool = False
    not_null: bool = False
    has_server_default: bool = False
    python_default: bool = False
    references: bool = False
    primary_key: bool = False
    constraint: str | None = None
    not_valid: bool = False
    using_index: bool = False
    type_node: ast.expr | None = None
    existing_type_node: ast.expr | None = None
    type_text: str | None = None
    verb: str | None = None
    what: str | None = None
    sql: str | None = None
    condition: str | None = None  # a check constraint's condition, as written
    all_rows: bool = False  # a DELETE without WHERE, or a TRUNCATE: the table is left empty
    # `create_table`: the columns it creates NOT NULL (`nullable=False`, primary keys),
    # and each column's type as written.
    not_null_columns: tuple[str, ...] = ()
    column_types: tuple[tuple[str, ast.expr], ...] = ()
    # `alter_column(..., nullable=True)`: the column may hold NULLs from here on.
    drops_not_null: bool = False
    # `alter_column(..., existing_nullable=False)`: the column is NOT NULL already.
    already_not_null: bool = False
    # An UPDATE or DELETE ... WHERE id = <literal>, or an INSERT of rows the revision
    # writes out (`VALUES (...)`, `op.bulk_insert(t, [{...}])`): no backfill.
    one_row: bool = False
    # One row by a bound key (`WHERE id = %s`) in a statement run with one set of
    # parameters (also one_row); in a loop, one row per run.
    bound_key: bool = False
    # Raw `ALTER COLUMN ... TYPE ... USING`: "" for any expression, the type when it
    # only casts the column.
    using_sql: str | None = None
    # Read once per name of a loop over literal strings (`for table in ("a", "b"):`):
    # the same call gives one such operation per name.
    unrolled: bool = False
    # The table and the index or constraint name an f-string computes, as written
    # (`{table_prefix}oauth_accounts`), for messages: `table` and `name` stay unknown.
    table_written: str | None = None
    name_written: str | None = None

    @property
    def via_sql(self) -> bool:
        return self.call == "SQL" or self.sql is not None

    @property
    def shown_table(self) -> str:
        """The table for a message: its name, the f-string that computes it as written
        (``{table_prefix}users``), or "the table" when the migration computes it otherwise
        (``for table in tables: op.create_index(name, table, ...)``)."""
        return self.table or self.table_written or "the table"

    @property
    def shown_name(self) -> str | None:
        """The index or constraint name for a message, as :attr:`shown_table` shows a table."""
        return self.name or self.name_written

    @property
    def shown_target(self) -> str:
        """``table.column`` for a message, or as much of it as the migration names (``for
        table in TABLES: op.alter_column(table, "standard_attr_id", ...)``: the column)."""
        table = self.table or self.table_written
        if self.column is None:
            return f"a column of {table}" if table else "a column"
        return f"{table}.{self.column}" if table else self.column

    @property
    def shown_column(self) -> str:
        """``column table.name`` for a message, or as much of it as the migration names."""
        return self.shown_target if self.column is None else f"column {self.shown_target}"


@dataclass
class _State:
    phase: str
    in_autocommit: bool = False
    postgresql: bool = True
    # `with op.batch_alter_table(...) as batch_op`: its table, and its f-string as written.
    batch: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    binds: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    contexts: set[str] = field(default_factory=set)
    values: dict[str, ast.expr] = field(default_factory=dict)
    stack: tuple[str, ...] = ()
    unrolled: bool = False

    def child(self, **changes: object) -> _State:
        copy = replace(self)
        copy.batch = dict(self.batch)
        copy.binds = set(self.binds)
        copy.sessions = set(self.sessions)
        copy.contexts = set(self.contexts)
        copy.values = dict(self.values)
        for key, value in changes.items():
            setattr(copy, key, value)
        return copy


def phase_of(function_name: str) -> str | None:
    if function_name == UPGRADE or function_name.startswith("upgrade_"):
        return UPGRADE
    if function_name == DOWNGRADE or function_name.startswith("downgrade_"):
        return DOWNGRADE
    return None


def is_migration_module(tree: ast.Module, resolver: NameResolver) -> bool:
    """A module that imports Alembic's ``op`` and defines ``upgrade()``."""
    has_upgrade = any(
        isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and phase_of(stmt.name)
        for stmt in tree.body
    )
    if not has_upgrade:
        return False
    return any(
        target == "alembic" or target.startswith(("alembic.op", "alembic.context"))
        for target in resolver.names.imports.values()
    )


_TEXT_WRAPPERS = frozenset({"text", "DDL", "literal_column"})
_DML_BUILDERS = {"update": "UPDATE", "insert": "INSERT", "delete": "DELETE"}
_TABLE_FACTORIES = frozenset({"table", "Table"})
# The most names a loop over literal strings is read once per name for.
_UNROLLED_MAX = 64


class Extractor:
    """Reads one migration module into operations."""

    def __init__(
        self, tree: ast.Module, resolver: NameResolver, index: ProjectIndex | None = None
    ) -> None:
        self.tree = tree
        self.resolver = resolver
        # The project's models, for `sa.update(Span)` with Span imported from the app.
        self.index = index
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.module_values: dict[str, ast.expr] = {}
        for stmt in tree.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.functions[stmt.name] = stmt
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
                if isinstance(target, ast.Name):
                    self.module_values[target.id] = stmt.value
            elif (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and stmt.value is not None
            ):
                self.module_values[stmt.target.id] = stmt.value
        # Mapped classes the revision declares: `class TrialValueModel(BaseModel):
        # __tablename__ = "trial_values"`.
        self.model_tables: dict[str, str] = {
            stmt.name: table
            for stmt in tree.body
            if isinstance(stmt, ast.ClassDef) and (table := _tablename(stmt)) is not None
        }
        self.operations: list[Operation] = []
        self._seen: dict[tuple[object, ...], int] = {}

    def run(self) -> list[Operation]:
        for name, function in self.functions.items():
            phase = phase_of(name)
            if phase is not None:
                self._body(function.body, _State(phase=phase, stack=(name,)))
        return self.operations

    # Emitting ----------------------------------------------------------------------
    def _emit(self, operation: Operation) -> None:
        # A helper reached twice (inside and outside autocommit_block) keeps the riskier.
        key = (
            id(operation.node),
            operation.kind,
            operation.phase,
            operation.table,
            operation.column,
            operation.name,
            operation.new_name,
        )
        index = self._seen.get(key)
        if index is not None:
            previous = self.operations[index]
            if previous.in_autocommit and not operation.in_autocommit:
                self.operations[index] = operation
            return
        self._seen[key] = len(self.operations)
        self.operations.append(operation)

    # Statements --------------------------------------------------------------------
    def _body(self, body: list[ast.stmt], state: _State) -> None:
        for stmt in body:
            self._statement(stmt, state)
            if isinstance(stmt, ast.If) and stmt.body and _exits(stmt.body[-1]):
                # `if dialect == "postgresql": ...; return`: what follows runs elsewhere.
                dialect = _dialect_test(stmt.test)
                if dialect is not None:
                    state = state.child(postgresql=state.postgresql and not dialect)

    def _statement(self, stmt: ast.stmt, state: _State) -> None:
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            inner = state.child()
            for item in stmt.items:
                self._with_item(item, inner)
            self._body(stmt.body, inner)
        elif isinstance(stmt, ast.If):
            dialect = _dialect_test(stmt.test)
            if dialect is None:
                self._expression(stmt.test, state)
                self._body(stmt.body, state)
                self._body(stmt.orelse, state)
            else:
                body_pg = dialect
                self._body(stmt.body, state.child(postgresql=state.postgresql and body_pg))
                self._body(stmt.orelse, state.child(postgresql=state.postgresql and not body_pg))
        elif isinstance(stmt, ast.For) and (rows := self._literal_rows(stmt, state)):
            # `for table in ("a", "b"): op.alter_column(table, ...)`: each table's own op.
            # Not a child state: what the body binds is bound after the loop too.
            outer, state.unrolled = state.unrolled, True
            for row in rows:
                state.values.update(row)
                self._body(stmt.body, state)
            state.unrolled = outer
            self._body(stmt.orelse, state)
        elif isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            if not isinstance(stmt, ast.While):
                self._expression(stmt.iter, state)
                for target in ast.walk(stmt.target):
                    if isinstance(target, ast.Name):
                        state.values.pop(target.id, None)
            self._body(stmt.body, state)
            self._body(stmt.orelse, state)
        elif isinstance(stmt, ast.Try) or type(stmt).__name__ == "TryStar":
            self._body(stmt.body, state)  # type: ignore[attr-defined]
            for handler in stmt.handlers:  # type: ignore[attr-defined]
                self._body(handler.body, state)
            self._body(stmt.orelse, state)  # type: ignore[attr-defined]
            self._body(stmt.finalbody, state)  # type: ignore[attr-defined]
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            value = stmt.value
            if value is not None:
                self._expression(value, state)
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if isinstance(target, ast.Name):
                        self._bind(target.id, value, state)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return
        else:
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.expr):
                    self._expression(child, state)

    def _literal_rows(self, loop: ast.For, state: _State) -> list[dict[str, ast.expr]]:
        """What each turn of a loop over literal strings binds: ``for table in ("a",
        "b"):``, ``for table, column in (("a", "x"), ("b", "y")):``, the iterable written
        there or bound to a name, at most _UNROLLED_MAX turns; none for any other loop."""
        iterable: ast.expr | None = loop.iter
        for _ in range(8):
            if not isinstance(iterable, ast.Name):
                break
            iterable = state.values.get(iterable.id, self.module_values.get(iterable.id))
        if not isinstance(iterable, (ast.Tuple, ast.List, ast.Set)):
            return []
        if len(iterable.elts) > _UNROLLED_MAX:
            return []
        target = loop.target
        single = isinstance(target, ast.Name)
        targets = [target] if single else getattr(target, "elts", [])
        names = [name.id for name in targets if isinstance(name, ast.Name)]
        if not names or len(names) != len(targets):
            return []
        rows = []
        for element in iterable.elts:
            values = [element] if single else getattr(element, "elts", [])
            if len(values) != len(names) or any(literal_str(v) is None for v in values):
                return []
            rows.append(dict(zip(names, values, strict=True)))
        return rows

    def _bind(self, name: str, value: ast.expr, state: _State) -> None:
        state.values[name] = value
        state.binds.discard(name)
        state.sessions.discard(name)
        state.contexts.discard(name)
        if self._is_bind(value, state):
            state.binds.add(name)
        elif self._is_context(value):
            state.contexts.add(name)
        elif isinstance(value, ast.Call) and self._is_session(value, state):
            state.sessions.add(name)
            self._emit(self._op("dml", value, "ORM Session", state, verb="ORM"))

    def _with_item(self, item: ast.withitem, state: _State) -> None:
        expr = item.context_expr
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            if expr.func.attr == "autocommit_block":
                state.in_autocommit = True
                return
            qualified = self._qualify(expr.func)
            if qualified == "alembic.op.batch_alter_table":
                given = _arg(expr, 0, "table_name")
                table = self._string(given, state)
                template = self._template(given, state) if table is None else None
                if isinstance(item.optional_vars, ast.Name):
                    state.batch[item.optional_vars.id] = (table, template)
                return
            if (
                isinstance(expr.func.value, ast.Name)
                and expr.func.value.id in state.binds
                and (expr.func.attr in ("begin", "begin_nested"))
            ):
                if isinstance(item.optional_vars, ast.Name):
                    state.binds.add(item.optional_vars.id)
                return
        if isinstance(expr, ast.Call) and self._is_session(expr, state):
            if isinstance(item.optional_vars, ast.Name):
                state.sessions.add(item.optional_vars.id)
            self._emit(self._op("dml", expr, "ORM Session", state, verb="ORM"))
            return
        self._expression(expr, state)

    # Expressions -------------------------------------------------------------------
    def _expression(self, expr: ast.expr, state: _State) -> None:
        for call in _calls_in_order(expr):
            self._call(call, state)

    def _qualify(self, func: ast.expr) -> str | None:
        return self.resolver.qualify(func)

    def _is_bind(self, expr: ast.expr, state: _State) -> bool:
        if isinstance(expr, ast.Name):
            return expr.id in state.binds
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            if expr.func.attr == "get_bind" and self._qualify(expr.func) in (
                "alembic.op.get_bind",
                "alembic.context.get_bind",
            ):
                return True
            if expr.func.attr in ("connect", "begin") and self._is_bind(expr.func.value, state):
                return True
        if isinstance(expr, ast.Attribute) and expr.attr in ("connection", "bind"):
            return self._is_context(expr.value) or self._is_bind(expr.value, state)
        return False

    def _is_context(self, expr: ast.expr) -> bool:
        return (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "get_context"
            and self._qualify(expr.func)
            in ("alembic.op.get_context", "alembic.context.get_context")
        )

    def _is_session(self, call: ast.Call, state: _State) -> bool:
        name = self.resolver.sqla_name(call.func)
        if name not in ("Session", "sessionmaker", "scoped_session"):
            return False
        candidates = [*call.args, *(k.value for k in call.keywords)]
        return any(self._is_bind(arg, state) for arg in candidates)

    def _call(self, call: ast.Call, state: _State) -> None:
        func = call.func
        if isinstance(func, ast.Name) and func.id in self.functions:
            if func.id not in state.stack and phase_of(func.id) is None:
                helper = self.functions[func.id]
                self._body(helper.body, state.child(stack=(*state.stack, func.id), values={}))
            return
        if not isinstance(func, ast.Attribute):
            return
        receiver = func.value
        if isinstance(receiver, ast.Name) and receiver.id in state.batch:
            self._alembic(call, func.attr, state, batch_table=state.batch[receiver.id])
            return
        if func.attr in ("execute", "exec_driver_sql") and (
            self._is_bind(receiver, state)
            or (isinstance(receiver, ast.Name) and receiver.id in state.sessions)
        ):
            self._execute(call, f"{_receiver_text(receiver)}.{func.attr}", state)
            return
        if func.attr == "delete" and not call.args:
            deleted = self._session_delete(receiver, state)
            if deleted is not None:
                table, everything = deleted
                self._emit(
                    self._op(
                        "dml", call, "session.query(...).delete()", state,
                        verb="DELETE", table=table, all_rows=everything,
                    )
                )
                return
        qualified = self._qualify(func)
        if qualified is None:
            return
        if qualified.startswith("alembic.op."):
            self._alembic(call, qualified[len("alembic.op.") :], state, batch_table=None)
        elif qualified == "alembic.context.execute":
            self._execute(call, "context.execute", state)

    def _op(self, kind: str, node: ast.AST, call: str, state: _State, **facts: object) -> Operation:
        return Operation(
            kind,
            node,
            call=call,
            phase=state.phase,
            entry=state.stack[0] if state.stack else state.phase,
            in_autocommit=state.in_autocommit,
            postgresql=state.postgresql,
            unrolled=state.unrolled,
            **facts,  # type: ignore[arg-type]
        )

    def _alembic(
        self,
        call: ast.Call,
        method: str,
        state: _State,
        batch_table: tuple[str | None, str | None] | None,
    ) -> None:
        """An ``op.<method>(...)`` call, or ``batch_op.<method>(...)`` (no table argument)."""
        batch = batch_table is not None
        shift = 0 if batch else 1
        written = f"{'batch_op' if batch else 'op'}.{method}"

        templates: dict[str, str] = {}

        def table_at(position: int, keyword: str = "table_name") -> str | None:
            if batch_table is not None:
                table, template = batch_table
                if template is not None:
                    templates["table_written"] = template
                return table
            return named(position, keyword, "table_written")

        def string(position: int, keyword: str) -> str | None:
            if keyword in ("index_name", "constraint_name"):
                return named(position, keyword, "name_written")
            return self._string(_arg(call, position, keyword), state)

        def named(position: int, keyword: str, shown: str) -> str | None:
            expr = _arg(call, position, keyword)
            value = self._string(expr, state)
            if value is None and (template := self._template(expr, state)) is not None:
                templates[shown] = template
            return value

        def flag(keyword: str) -> bool:
            value = _keyword(call, keyword)
            return isinstance(value, ast.Constant) and value.value is True

        def emit(kind: str, **facts: object) -> None:
            if not batch:
                facts.setdefault("schema", self._string(_keyword(call, "schema"), state))
            facts.update(templates)
            self._emit(self._op(kind, call, written, state, **facts))

        if method == "create_table" and not batch:
            emit(
                "create_table",
                table=string(0, "table_name"),
                not_null_columns=self._not_null_columns(call, state),
                column_types=self._column_types(call, state),
            )
        elif method == "add_column":
            column = _arg(call, shift, "column")
            emit("add_column", table=table_at(0), **self._column_facts(column, state))
        elif method == "create_index":
            emit(
                "create_index",
                name=string(0, "index_name"),
                table=table_at(1),
                concurrently=flag("postgresql_concurrently"),
                unique=flag("unique"),
            )
        elif method == "drop_index":
            emit(
                "drop_index",
                name=string(0, "index_name"),
                table=table_at(1),
                concurrently=flag("postgresql_concurrently"),
            )
        elif method == "create_foreign_key":
            emit(
                "add_constraint",
                constraint="foreign_key",
                name=string(0, "constraint_name"),
                table=table_at(1, "source_table"),
                new_name=string(1 + shift, "referent_table"),
                not_valid=flag("postgresql_not_valid"),
            )
        elif method == "create_check_constraint":
            emit(
                "add_constraint",
                constraint="check",
                name=string(0, "constraint_name"),
                table=table_at(1),
                not_valid=flag("postgresql_not_valid"),
                condition=self._string(
                    _arg(call, 1 + shift, "condition"), state, allow_placeholders=True
                ),
            )
        elif method in ("create_unique_constraint", "create_primary_key"):
            emit(
                "add_constraint",
                constraint="unique" if method == "create_unique_constraint" else "primary_key",
                name=string(0, "constraint_name"),
                table=table_at(1),
            )
        elif method == "create_exclude_constraint":
            emit(
                "add_constraint",
                constraint="exclude",
                name=string(0, "constraint_name"),
                table=table_at(1),
            )
        elif method == "alter_column":
            self._alter_column(
                call,
                table_at(0),
                string(shift, "column_name"),
                state,
                written,
                None if batch else self._string(_keyword(call, "schema"), state),
                templates,
            )
        elif method == "drop_column":
            emit("drop_column", table=table_at(0), column=string(shift, "column_name"))
        elif method == "drop_table" and not batch:
            emit("drop_table", table=string(0, "table_name"))
        elif method == "rename_table" and not batch:
            emit(
                "rename_table",
                table=string(0, "old_table_name"),
                new_name=string(1, "new_table_name"),
            )
        elif method == "drop_constraint":
            emit("ddl_other", table=table_at(1), verb=method)
        elif method.startswith(("create_", "drop_", "alter_")):
            # Comments, sequences, schemas: no lock on a table worth reporting.
            emit("ddl_minor", verb=method)
        elif method == "execute":
            self._execute(call, written, state)
        elif method == "bulk_insert":
            rows = _arg(call, 1, "rows")
            emit(
                "dml",
                verb="INSERT",
                table=self._table_name(_arg(call, 0, "table"), state),
                # Rows written out in the revision: seed data, no backfill.
                one_row=isinstance(rows, (ast.List, ast.Tuple))
                and all(isinstance(row, ast.Dict) for row in rows.elts),
            )

    def _not_null_columns(self, call: ast.Call, state: _State) -> tuple[str, ...]:
        """The columns ``op.create_table(...)`` creates NOT NULL: ``nullable=False``,
        ``primary_key=True``, or named by a ``PrimaryKeyConstraint``."""
        found: list[str] = []
        for arg in call.args[1:]:
            if not isinstance(arg, ast.Call):
                continue
            name = self.resolver.sqla_name(arg.func)
            if name == "Column":
                facts = self._column_facts(arg, state)
                column = facts.get("column")
                if facts.get("not_null") and isinstance(column, str):
                    found.append(column)
            elif name == "PrimaryKeyConstraint":
                for element in arg.args:
                    column = self._string(element, state)
                    if column is not None:
                        found.append(column)
        return tuple(found)

    def _column_types(self, call: ast.Call, state: _State) -> tuple[tuple[str, ast.expr], ...]:
        """Each ``sa.Column(name, type)`` of ``op.create_table(...)`` and its type."""
        found: list[tuple[str, ast.expr]] = []
        for arg in call.args[1:]:
            if isinstance(arg, ast.Call) and self.resolver.sqla_name(arg.func) == "Column":
                facts = self._column_facts(arg, state)
                column, type_node = facts.get("column"), facts.get("type_node")
                if isinstance(column, str) and isinstance(type_node, ast.expr):
                    found.append((column, type_node))
        return tuple(found)

    def _alter_column(
        self,
        call: ast.Call,
        table: str | None,
        column: str | None,
        state: _State,
        written: str,
        schema: str | None,
        templates: dict[str, str],
    ) -> None:
        nullable_node = _keyword(call, "nullable")
        existing = _keyword(call, "existing_nullable")
        facts = {
            "table": table,
            "column": column,
            "schema": schema,
            "drops_not_null": isinstance(nullable_node, ast.Constant)
            and nullable_node.value is True,
            "already_not_null": isinstance(existing, ast.Constant) and existing.value is False,
            **templates,
        }
        type_node = _keyword(call, "type_")
        emitted = False
        if type_node is not None and not _is_none(type_node):
            self._emit(
                self._op(
                    "alter_type",
                    call,
                    written,
                    state,
                    type_node=type_node,
                    existing_type_node=_keyword(call, "existing_type"),
                    **facts,
                )
            )
            emitted = True
        nullable = _keyword(call, "nullable")
        if isinstance(nullable, ast.Constant) and nullable.value is False:
            self._emit(self._op("set_not_null", call, written, state, **facts))
            emitted = True
        new_name = _keyword(call, "new_column_name")
        if new_name is not None and not _is_none(new_name):
            self._emit(
                self._op(
                    "rename_column",
                    call,
                    written,
                    state,
                    new_name=self._string(new_name, state),
                    **facts,
                )
            )
            emitted = True
        if not emitted:
            self._emit(self._op("ddl_other", call, written, state, verb="alter_column", **facts))

    def _column_facts(self, column: ast.expr | None, state: _State) -> dict[str, object]:
        """What ``sa.Column("name", type, ..., nullable=False, server_default=...)`` says."""
        column = self._column_made(column, state)
        if not isinstance(column, ast.Call) or self.resolver.sqla_name(column.func) not in (
            "Column",
        ):
            return {"what": "unknown"}
        name = self._string(column.args[0], state) if column.args else None
        keyword_name = _keyword(column, "name")
        if keyword_name is not None:
            name = self._string(keyword_name, state)
        nullable = _keyword(column, "nullable")
        primary_key = _keyword(column, "primary_key")
        is_pk = isinstance(primary_key, ast.Constant) and primary_key.value is True
        not_null = (isinstance(nullable, ast.Constant) and nullable.value is False) or (
            is_pk and not (isinstance(nullable, ast.Constant) and nullable.value is True)
        )
        server_default = _keyword(column, "server_default")
        generated = any(
            isinstance(arg, ast.Call)
            and self.resolver.sqla_name(arg.func) in ("Computed", "Identity", "Sequence")
            for arg in column.args
        )
        references = any(
            isinstance(arg, ast.Call) and self.resolver.sqla_name(arg.func) == "ForeignKey"
            for arg in column.args
        )
        type_node = column.args[1] if len(column.args) > 1 else _keyword(column, "type_")
        return {
            "column": name,
            "not_null": not_null,
            "primary_key": is_pk,
            "has_server_default": (server_default is not None and not _is_none(server_default))
            or generated,
            "python_default": _keyword(column, "default") is not None,
            "references": references,
            "type_node": type_node,
        }

    def _column_made(self, column: ast.expr | None, state: _State) -> ast.expr | None:
        """The ``sa.Column(...)`` call behind a name bound to it or to a lambda that
        returns it (gnocchi's ``temp_col = lambda: sa.Column(column_name + "_ts", ...)``
        then ``op.add_column(table_name, temp_col())``)."""
        for _ in range(4):
            if isinstance(column, ast.Call) and isinstance(column.func, ast.Name):
                bound = state.values.get(column.func.id)
                if not isinstance(bound, ast.Lambda) or column.args or bound.args.args:
                    return column
                column = bound.body
            elif isinstance(column, ast.Name) and column.id in state.values:
                column = state.values[column.id]
            else:
                return column
        return column

    def _execute(self, call: ast.Call, written: str, state: _State) -> None:
        statement = _arg(call, 0, "sqltext") or _arg(call, 0, "statement")
        if statement is None:
            return
        dml = self._dml_construct(statement, state)
        if dml is not None:
            verb, table = dml
            self._emit(self._op("dml", call, written, state, verb=verb, table=table))
            return
        text = self._sql_text(statement, state)
        if text is None:
            self._emit(self._op("unknown", call, written, state))
            return
        actions = classify(text)
        for action in actions:
            self._emit(self._from_sql(action, call, written, state, text))

    def _from_sql(
        self, action: SqlAction, node: ast.AST, written: str, state: _State, text: str
    ) -> Operation:
        table = action.table if action.table != PLACEHOLDER else None
        kind = action.kind
        if kind == "reindex":
            kind = "no_transaction" if action.concurrently else "ddl_other"
        return self._op(
            kind,
            node,
            written,
            state,
            table=table,
            column=action.column,
            new_name=action.new_name,
            name=action.name,
            concurrently=action.concurrently,
            unique="unique" in action.extra,
            not_null=action.not_null,
            has_server_default=action.has_default,
            references=action.references,
            primary_key=action.primary_key,
            constraint=action.constraint,
            not_valid=action.not_valid,
            using_index=action.using_index,
            type_text=action.type_text,
            using_sql=action.using,
            verb=action.verb,
            what=action.what or ("REINDEX CONCURRENTLY" if action.kind == "reindex" else None),
            sql=text,
            condition=text if action.constraint == "check" else None,
            sql_schema=action.schema,
            all_rows="all_rows" in action.extra,
            one_row="one_row" in action.extra or (
                "bound_key" in action.extra and _one_execution(node)
            ),
            bound_key="bound_key" in action.extra,
        )

    def _session_delete(self, query: ast.expr, state: _State) -> tuple[str | None, bool] | None:
        """``session.query(Model)[.filter(...)]`` before ``.delete()``, with a session bound
        to the migration's connection: (Model's table, whether every row goes)."""
        filtered = False
        node = query
        while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            inner = node.func.value
            if node.func.attr == "query":
                if not (
                    isinstance(inner, ast.Name) and inner.id in state.sessions
                ) or len(node.args) != 1:
                    return None
                entity = node.args[0]
                if isinstance(entity, ast.Name) and entity.id in self.model_tables:
                    return self.model_tables[entity.id], not filtered
                return self._table_name(entity, state), not filtered
            if node.func.attr != "execution_options":
                filtered = True  # filter(), filter_by(), limit() ...: some rows
            node = inner
        return None

    def _dml_construct(self, expr: ast.expr, state: _State) -> tuple[str, str | None] | None:
        """``sa.update(t)``, ``t.update()``, ``sa.insert(t).values(...)`` ... → (verb, table)."""
        node = expr
        while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in _DML_BUILDERS and not node.args:
                return _DML_BUILDERS[node.func.attr], self._table_name(node.func.value, state)
            inner = node.func.value
            if not isinstance(inner, ast.Call):
                break
            node = inner
        if isinstance(node, ast.Call):
            name = self.resolver.sqla_name(node.func)
            if name in _DML_BUILDERS:
                table = self._table_name(node.args[0], state) if node.args else None
                return _DML_BUILDERS[name], table
        return None

    def _table_name(self, expr: ast.expr | None, state: _State, depth: int = 0) -> str | None:
        if expr is None or depth > 8:
            return None
        if isinstance(expr, ast.Name):
            value = state.values.get(expr.id, self.module_values.get(expr.id))
            if value is not None:
                return self._table_name(value, state, depth + 1)
            if expr.id in self.model_tables:
                return self.model_tables[expr.id]
            return self._project_table(expr)
        if isinstance(expr, ast.Call) and self.resolver.sqla_name(expr.func) in _TABLE_FACTORIES:
            return self._string(expr.args[0], state) if expr.args else None
        if isinstance(expr, ast.Attribute):
            if expr.attr == "__table__":
                return self._table_name(expr.value, state, depth + 1)
            return self._project_table(expr)
        return self._string(expr, state) if isinstance(expr, ast.Constant) else None

    def _project_table(self, expr: ast.Name | ast.Attribute) -> str | None:
        """The table of a mapped class or module-level ``Table`` the revision imports from
        the application (``from app.models import Span``)."""
        if self.index is None:
            return None
        qualified = self.resolver.qualify(expr)
        model = self.index.model(qualified)
        if model is not None:
            return model.table
        table = self.index.table_facts(qualified)
        return table.name if table is not None else None

    def _sql_text(self, expr: ast.expr, state: _State) -> str | None:
        if isinstance(expr, ast.Call):
            name = self.resolver.sqla_name(expr.func)
            if name in _TEXT_WRAPPERS and expr.args:
                return self._sql_text(expr.args[0], state)
            if isinstance(expr.func, ast.Attribute) and expr.func.attr in (
                "execution_options",
                "bindparams",
                "columns",
            ):
                return self._sql_text(expr.func.value, state)
        return self._string(expr, state, allow_placeholders=True)

    def _template(self, expr: ast.expr | None, state: _State) -> str | None:
        """An f-string name as the migration writes it, what can be read filled in:
        ``op.f(f"{table_prefix}oauth_accounts")`` gives ``{table_prefix}oauth_accounts``."""
        if (
            isinstance(expr, ast.Call)
            and len(expr.args) == 1
            and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "f"
            and (
                self._qualify(expr.func) == "alembic.op.f"
                or (isinstance(expr.func.value, ast.Name) and expr.func.value.id in state.batch)
            )
        ):
            expr = expr.args[0]
        if isinstance(expr, ast.Name):
            expr = state.values.get(expr.id, self.module_values.get(expr.id))
        if not isinstance(expr, ast.JoinedStr):
            return None
        parts: list[str] = []
        for value in expr.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            elif isinstance(value, ast.FormattedValue):
                known = self._string(value.value, state)
                parts.append(known if known is not None else f"{{{ast.unparse(value.value)}}}")
        return "".join(parts)

    def _string(
        self,
        expr: ast.expr | None,
        state: _State,
        allow_placeholders: bool = False,
        depth: int = 0,
    ) -> str | None:
        """The text of a string expression (constants, names, f-strings, concatenation)."""
        if (
            isinstance(expr, ast.Call)
            and isinstance(expr.func, ast.Attribute)
            and expr.func.attr == "f"
            and isinstance(expr.func.value, ast.Name)
            and expr.func.value.id in state.batch
            and len(expr.args) == 1
        ):
            # `batch_op.f("ix_...")`: BatchOperations inherits op.f(), the name as given.
            expr = expr.args[0]
        value = _string_value(expr, state.values, self.module_values, self.resolver, depth)
        if value is None or (not allow_placeholders and PLACEHOLDER in value):
            return None
        return value


def _string_value(
    expr: ast.expr | None,
    local: dict[str, ast.expr],
    module: dict[str, ast.expr],
    resolver: NameResolver,
    depth: int = 0,
) -> str | None:
    if expr is None or depth > 12:
        return None

    def again(node: ast.expr | None) -> str | None:
        return _string_value(node, local, module, resolver, depth + 1)

    if isinstance(expr, ast.Constant):
        return expr.value if isinstance(expr.value, str) else None
    if isinstance(expr, ast.Name):
        bound = local.get(expr.id, module.get(expr.id))
        return again(bound) if bound is not None else None
    if isinstance(expr, ast.JoinedStr):
        parts = []
        for value in expr.values:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                parts.append(value.value)
            elif isinstance(value, ast.FormattedValue):
                inner = again(value.value)
                parts.append(inner if inner is not None else PLACEHOLDER)
        return "".join(parts)
    if isinstance(expr, ast.BinOp):
        if isinstance(expr.op, ast.Add):
            left, right = again(expr.left), again(expr.right)
            if left is None and right is None:
                return None
            return (left if left is not None else PLACEHOLDER) + (
                right if right is not None else PLACEHOLDER
            )
        if isinstance(expr.op, ast.Mod):
            left = again(expr.left)
            return _strip_formats(left) if left is not None else None
    if isinstance(expr, ast.Call):
        func = expr.func
        if isinstance(func, ast.Attribute):
            if func.attr == "format":
                base = again(func.value)
                return _strip_formats(base) if base is not None else None
            if func.attr in ("strip", "lstrip", "rstrip", "upper", "lower") and not expr.args:
                base = again(func.value)
                return base.strip() if base is not None else None
            if func.attr == "join" and expr.args:
                return None
        qualified = resolver.qualify(func)
        if qualified in ("textwrap.dedent", "inspect.cleandoc") and expr.args:
            return again(expr.args[0])
        if qualified in ("alembic.op.f", "alembic.op.inline_literal") and expr.args:
            return again(expr.args[0])
        if resolver.sqla_name(func) in ("text", "DDL", "quoted_name", "literal_column") and (
            expr.args
        ):
            return again(expr.args[0])
    return None


def _strip_formats(text: str) -> str:
    """``{}``/``{name}``/``%s``/``%(name)s`` placeholders become an unknown name."""
    import re

    text = re.sub(r"\{[^{}]*\}", PLACEHOLDER, text)
    return re.sub(r"%(\([^)]*\))?[sdr]", PLACEHOLDER, text)


def _one_execution(node: ast.AST) -> bool:
    """``conn.execute(sql, (a, b))`` or ``(sql, {"id": a})``: the statement run once, with
    one set of parameters written out (a list of them would be executemany)."""
    if not isinstance(node, ast.Call):
        return False
    parameters = _arg(node, 1, "parameters")
    return isinstance(parameters, (ast.Tuple, ast.Dict))


def _arg(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    for item in call.keywords:
        if item.arg == keyword:
            return item.value
    if position < len(call.args) and not any(
        isinstance(a, ast.Starred) for a in call.args[: position + 1]
    ):
        return call.args[position]
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for item in call.keywords:
        if item.arg == name:
            return item.value
    return None


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _receiver_text(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return f"{_receiver_text(node.func.value)}.{node.func.attr}()"
    if isinstance(node, ast.Attribute):
        return f"{_receiver_text(node.value)}.{node.attr}"
    return "connection"


def _calls_in_order(expr: ast.expr) -> Iterator[ast.Call]:
    """Calls in evaluation order, outermost last for nested ones (args run first)."""
    stack: list[tuple[ast.AST, bool]] = [(expr, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            if isinstance(node, ast.Call):
                yield node
            continue
        if isinstance(node, ast.Lambda):
            continue
        stack.append((node, True))
        children = list(ast.iter_child_nodes(node))
        stack.extend((child, False) for child in reversed(children))


def _dialect_test(test: ast.expr) -> bool | None:
    """For ``if <...>.dialect.name == "postgresql":`` and the like: does the body run on
    PostgreSQL? None when the test is not about the dialect."""
    prefixes = _url_prefixes(test)
    if prefixes is not None:
        return any(prefix.startswith("postgres") for prefix in prefixes)
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        # `if bind and bind.engine.name == "mysql":`: no body on PostgreSQL. A conjunct
        # that allows PostgreSQL says nothing: the else branch runs there when another fails.
        return False if any(_dialect_test(value) is False for value in test.values) else None
    if not isinstance(test, ast.Compare) or len(test.ops) != 1:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            inner = _dialect_test(test.operand)
            return None if inner is None else not inner
        return None
    left, op, right = test.left, test.ops[0], test.comparators[0]
    if not _is_dialect_name(left):
        left, right = right, left
        if not _is_dialect_name(left):
            return None
    names: set[str] = set()
    if isinstance(right, ast.Constant) and isinstance(right.value, str):
        names.add(right.value)
    elif isinstance(right, (ast.Tuple, ast.List, ast.Set)):
        for element in right.elts:
            if isinstance(element, ast.Constant) and isinstance(element.value, str):
                names.add(element.value)
    else:
        return None
    matches = any(name.startswith("postgres") for name in names)
    if isinstance(op, (ast.Eq, ast.In, ast.Is)):
        return matches
    if isinstance(op, (ast.NotEq, ast.NotIn, ast.IsNot)):
        return not matches
    return None


def _tablename(cls: ast.ClassDef) -> str | None:
    for stmt in cls.body:
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id == "__tablename__"
            and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        ):
            return stmt.value.value
    return None


def _url_prefixes(test: ast.expr) -> list[str] | None:
    """``url.startswith("mysql")`` with ``url = str(bind.engine.url)`` (CTFd), or
    ``str(op.get_bind().engine.url).startswith(("mysql", "mariadb"))``: the schemes the
    database URL is tested for; None for any other test."""
    if not (
        isinstance(test, ast.Call)
        and isinstance(test.func, ast.Attribute)
        and test.func.attr == "startswith"
        and len(test.args) == 1
        and not test.keywords
    ):
        return None
    url = test.func.value
    if isinstance(url, ast.Call) and isinstance(url.func, ast.Name) and url.func.id == "str":
        url = url.args[0] if len(url.args) == 1 else url
        named_url = isinstance(url, ast.Attribute) and url.attr == "url"
    else:
        named_url = isinstance(url, ast.Name) and url.id.lower().endswith("url")
    argument = test.args[0]
    elements = argument.elts if isinstance(argument, ast.Tuple) else [argument]
    prefixes = [e.value for e in elements if isinstance(e, ast.Constant)]
    if not named_url or len(prefixes) != len(elements) or not all(
        isinstance(p, str) for p in prefixes
    ):
        return None
    return [str(p) for p in prefixes]


def _exits(stmt: ast.stmt) -> bool:
    return isinstance(stmt, (ast.Return, ast.Raise))


def _is_dialect_name(node: ast.expr) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "name":
        value = node.value
        # `bind.dialect.name`, or `op.get_bind().engine.name` (an Engine's name is its
        # dialect's).
        return (isinstance(value, ast.Attribute) and value.attr in ("dialect", "engine")) or (
            isinstance(value, ast.Name) and value.id == "dialect"
        )
    return isinstance(node, ast.Name) and node.id in ("dialect_name", "dialect")
