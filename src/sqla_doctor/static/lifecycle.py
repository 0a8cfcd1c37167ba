"""How a function manages a session it creates: closed where, committed where, escaping.

Built on :mod:`sqla_doctor.static.flow`; shared by the session rules (not closed, yielded
without ``finally``, writes never committed, reuse after a failed flush, I/O while a
connection is held, concurrent use). Connections a function opens itself
(``with engine.connect() as conn``) and what an executed statement does to the
transaction it runs in (:class:`Statements`) are here too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqla_doctor.static.alembic.sql import classify, tokenize
from sqla_doctor.static.dataflow import BindingKind
from sqla_doctor.static.flow import (
    Binding,
    FunctionFlow,
    SessionValue,
    begins,
    contains,
    handed_over_in_finally,
)
from sqla_doctor.static.index.models import call_tail
from sqla_doctor.static.strings import StringFlow

if TYPE_CHECKING:
    from sqla_doctor.static.context import FileContext
    from sqla_doctor.static.index import ProjectIndex
    from sqla_doctor.static.index.functions import FunctionFacts

CLOSERS = frozenset({"close", "remove", "invalidate"})
WRITES = frozenset(
    {
        "add",
        "add_all",
        "delete",
        "merge",
        "bulk_save_objects",
        "bulk_insert_mappings",
        "bulk_update_mappings",
    }
)
# Methods that use the session's connection (and so begin a transaction).
QUERIES = frozenset(
    {
        "execute",
        "scalars",
        "scalar",
        "get",
        "get_one",
        "query",
        "exec",
        "refresh",
        "stream",
        "stream_scalars",
        "connection",
        "merge",
        "flush",
        "paginate",
    }
)


@dataclass(frozen=True)
class OwnedSession:
    """A session this function creates (or gets) and names."""

    name: str
    binding: Binding
    value: SessionValue
    block: ast.With | ast.AsyncWith | None  # the `with` that binds it, if any


def owned_sessions(flow: FunctionFlow) -> Iterator[OwnedSession]:
    """Names bound here to sessions this function made: ``s = Factory()``,
    ``with Factory() as s``, ``with Factory.begin() as s``."""
    for name, binding, value in flow.sessions():
        if binding.kind == "assign" and value.how == "call":
            yield OwnedSession(name, binding, value, None)
        elif binding.kind == "with":
            node = binding.node
            assert isinstance(node, (ast.With, ast.AsyncWith))
            yield OwnedSession(name, binding, value, node)


def session_names(flow: FunctionFlow) -> dict[str, SessionValue]:
    """Every receiver that holds a session here, however it came: local names,
    parameters, ``self.session``, ``db.session`` — keyed as :func:`receiver_key` does."""
    found: dict[str, SessionValue] = {}
    for name, _, value in flow.sessions():
        found.setdefault(name, value)
    for key, calls in flow.receiver_calls.items():
        if key in found or not calls:
            continue
        func = calls[0].func
        assert isinstance(func, ast.Attribute)
        held = flow.session_of(func.value)
        if held is not None:
            found[key] = held
    return found


def method_calls(flow: FunctionFlow, name: str) -> list[tuple[str, ast.Call]]:
    """``name.method(...)`` calls in source order."""
    found = []
    for call in flow.calls_on(name):
        func = call.func
        assert isinstance(func, ast.Attribute)
        found.append((func.attr, call))
    found.sort(key=lambda item: (item[1].lineno, item[1].col_offset))
    return found


def in_finally(flow: FunctionFlow, node: ast.AST) -> ast.Try | None:
    """The ``try`` whose ``finally`` holds ``node``."""
    for try_node in flow.tries:
        for stmt in getattr(try_node, "finalbody", []):
            if contains(stmt, node):
                return try_node
    return None


def closed_in_finally(flow: FunctionFlow, name: str) -> bool:
    return any(
        method in CLOSERS and in_finally(flow, call) is not None
        for method, call in method_calls(flow, name)
    ) or handed_over_in_finally(flow, name)


def closed_by_helper(index: ProjectIndex, flow: FunctionFlow, name: str) -> bool:
    """``with read_only_transaction(session):`` (or a plain call) of a project function
    that closes that parameter in a ``finally``."""
    for call in flow.calls:
        positions = [
            n for n, arg in enumerate(call.args) if isinstance(arg, ast.Name) and arg.id == name
        ]
        keywords = {
            k.arg for k in call.keywords if isinstance(k.value, ast.Name) and k.value.id == name
        }
        if not positions and not keywords:
            continue
        function = index.function(flow.qualify(call.func))
        if function is None or function.is_method or not function.closes:
            continue
        params = {function.params[n] for n in positions if n < len(function.params)}
        if function.closes & (params | keywords):
            return True
    return False


def managed_by_with(flow: FunctionFlow, name: str, *, begin_counts: bool = True) -> bool:
    """``with s:``, ``with s.begin():``, ``with closing(s):`` somewhere in the function.
    ``begin_counts=False`` for a connection: ``with conn.begin():`` ends its transaction,
    but the connection stays checked out after it."""
    for with_node in flow.withs:
        for item in with_node.items:
            expr = item.context_expr
            if isinstance(expr, ast.Name) and expr.id == name:
                return True
            if begin_counts and begins(expr, name):
                return True
            if (
                isinstance(expr, ast.Call)
                and expr.args
                and isinstance(expr.args[0], ast.Name)
                and expr.args[0].id == name
                and (flow.qualify(expr.func) or "").endswith("closing")
            ):
                return True
    return False


def escapes(
    flow: FunctionFlow, name: str, *, yields_count: bool = True, region: ast.AST | None = None
) -> bool:
    """Whether the session leaves the function's hands: returned, yielded, stored in an
    attribute or a container, handed to a constructor or a callback registry, or
    referenced as ``s.close`` without calling it (registered for later). ``region``
    limits the question to the uses inside it (a ``with`` block that binds the name)."""
    for load in flow.name_loads.get(name, ()):
        if region is not None and not contains(region, load):
            continue
        parent = flow.parent(load)
        if isinstance(parent, ast.Return):
            return True
        if isinstance(parent, (ast.Yield, ast.YieldFrom)) and yields_count:
            return True
        if isinstance(parent, (ast.Tuple, ast.List, ast.Dict, ast.Set, ast.keyword, ast.Starred)):
            return True
        if isinstance(parent, (ast.Assign, ast.AnnAssign)) and parent.value is load:
            return True
        if isinstance(parent, ast.Call) and load in parent.args:
            func = parent.func
            head = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else ""
            )
            if head[:1].isupper() or head in (
                "append",
                "add",
                "register",
                "put",
                "setdefault",
                "enter_context",
                "push",
                "callback",
            ):
                return True
        if isinstance(parent, ast.Attribute) and parent.value is load:
            grand = flow.parent(parent)
            if parent.attr in CLOSERS and not (
                isinstance(grand, ast.Call) and grand.func is parent
            ):
                return True
    return False


def unbound(value: SessionValue, made: ast.expr | None) -> bool:
    """Whether a session is the ``Session``/``AsyncSession`` class called with nothing to
    bind to (``Session()``): it can never check out a connection, so it has none to leak
    and nothing it could commit (code uses one to compute cascades, then expunges)."""
    if isinstance(made, ast.Await):
        made = made.value
    if not isinstance(made, ast.Call) or value.how != "call" or value.source is None:
        return False
    # SQLAlchemy's (or SQLModel's) class itself: a project's `Session = sessionmaker(engine)`
    # (the tutorial's name for a factory) makes bound sessions.
    if value.source.partition(".")[0] not in ("sqlalchemy", "sqlmodel"):
        return False
    if value.source.rpartition(".")[2] not in ("Session", "AsyncSession"):
        return False
    return not made.args and not any(
        kw.arg in ("bind", "binds") or kw.arg is None for kw in made.keywords
    )


def bound_to_connection(flow: FunctionFlow, made: ast.expr | None, depth: int = 0) -> bool:
    """Whether a session is made on an existing connection (``Session(bind=conn)``,
    ``Session(op.get_bind())``, ``join_transaction_mode=``), also by a factory the function
    made so (``factory = sessionmaker(conn)``, then ``factory()``) or by one the call binds
    (``factory = sessionmaker()``, then ``factory(bind=conn)``): it holds no pool
    connection of its own, so not closing it leaks nothing."""
    if isinstance(made, ast.Await):
        made = made.value
    if not isinstance(made, ast.Call):
        return False
    if isinstance(made.func, ast.Name) and depth < 3:
        binding = flow.binding(made.func.id, made)
        if (
            binding is not None
            and binding.kind == "assign"
            and binding.element is None
            and isinstance(binding.value, ast.Call)
            and call_tail(binding.value.func) in ("sessionmaker", "async_sessionmaker")
        ) and bound_to_connection(flow, binding.value, depth + 1):
            return True
    if any(kw.arg == "join_transaction_mode" for kw in made.keywords):
        return True
    bind = next((kw.value for kw in made.keywords if kw.arg == "bind"), None)
    if bind is None and made.args:
        bind = made.args[0]
    return _is_connection(flow, bind, 0)


def _is_connection(flow: FunctionFlow, node: ast.expr | None, depth: int) -> bool:
    if node is None or depth > 3:
        return False
    if isinstance(node, ast.Await):
        return _is_connection(flow, node.value, depth + 1)
    if isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "execution_options":
            return _is_connection(flow, func.value, depth + 1)  # the same connection
        return isinstance(func, ast.Attribute) and func.attr in (
            "connect",
            "begin",
            "get_bind",
            "connection",
        )
    if isinstance(node, ast.Attribute):
        return node.attr in ("bind", "connection", "conn") or "conn" in node.attr.lower()
    if isinstance(node, ast.Name):
        if "conn" in node.id.lower():
            return True
        binding = flow.binding(node.id, node)
        if binding is not None and binding.kind in ("assign", "with") and binding.element is None:
            return _is_connection(flow, binding.value, depth + 1)
    return False


# What an executed statement does --------------------------------------------------------
DML = "dml"
DDL = "ddl"
COMMIT = "commit"
ROLLBACK = "rollback"
BEGIN = "begin"
_DML_BUILDERS = frozenset({"insert", "update", "delete"})
# Schema constructs a connection executes (`conn.execute(CreateTable(t))`).
_DDL_CONSTRUCTS = frozenset(
    {
        "DDL", "CreateTable", "DropTable", "CreateIndex", "DropIndex", "AddConstraint",
        "DropConstraint", "CreateSchema", "DropSchema", "CreateSequence", "DropSequence",
        "SetTableComment", "DropTableComment", "SetColumnComment", "DropColumnComment",
    }
)
# Methods that keep a statement what it is: `insert(t).values(...).returning(t.c.id)`.
_STATEMENT_CHAIN = frozenset(
    {
        "values", "where", "filter", "filter_by", "returning", "execution_options",
        "bindparams", "columns", "ordered_values", "on_conflict_do_nothing",
        "on_conflict_do_update", "on_duplicate_key_update", "from_select", "inline",
        "with_dialect_options", "prefix_with", "suffix_with", "with_hint", "params",
        "return_defaults",
    }
)
# SQL verbs alembic's classifier leaves unknown but that write rows (MySQL, SQLite).
_OTHER_DML_WORDS = ("REPLACE", "UPSERT", "LOAD")
_TRANSACTION_WORDS = {
    "COMMIT": COMMIT, "END": COMMIT, "ROLLBACK": ROLLBACK, "BEGIN": BEGIN, "START": BEGIN
}


class Statements:
    """What a statement handed to ``execute()`` does to the transaction it runs in:
    :data:`DML` (``insert(t)``, ``t.update()``, ``text("DELETE ...")``), :data:`DDL`
    (``text("CREATE TABLE ...")``, ``CreateTable(t)``, ``DDL(...)``), transaction control
    (``text("COMMIT")``), or None for reads and whatever is not knowable here.

    Names are followed through every binding that reaches them (all must agree); SQL text
    through literals, constants and the literal start of f-strings and ``%``/``.format``.
    """

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self._strings: StringFlow | None = None

    @property
    def strings(self) -> StringFlow:
        if self._strings is None:
            self._strings = StringFlow(self.ctx.dataflow)
        return self._strings

    def of(self, expr: ast.expr | None, depth: int = 0) -> str | None:
        """The kind of the statement ``expr`` builds (see the class docstring)."""
        if expr is None or depth > 8:
            return None
        if isinstance(expr, ast.Await):
            return self.of(expr.value, depth + 1)
        if isinstance(expr, ast.Name):
            return self._name(expr, depth)
        if not isinstance(expr, ast.Call):
            return None
        func = expr.func
        if isinstance(func, ast.Attribute):
            if func.attr in _DML_BUILDERS and not expr.args and self._receiver_is_table(func):
                return DML  # `users.insert()`, `User.__table__.delete()`
            if func.attr in _STATEMENT_CHAIN:
                return self.of(func.value, depth + 1)
        name = self.ctx.names.sqla_name(func)
        if name in _DML_BUILDERS:
            return DML
        if name in _DDL_CONSTRUCTS:
            return DDL if name != "DDL" or not expr.args else self.sql(expr.args[0]) or DDL
        if name == "text" and expr.args:
            return self.sql(expr.args[0])
        return None

    def _receiver_is_table(self, func: ast.Attribute) -> bool:
        """``t.insert()`` on a table, not on an ORM ``Query`` or a session (whose
        ``delete()`` takes an object) — anything SQLAlchemy does not name otherwise."""
        receiver = func.value
        if isinstance(receiver, ast.Call):
            return self.ctx.names.sqla_name(receiver.func) in ("table", "Table")
        return isinstance(receiver, (ast.Name, ast.Attribute))

    def _name(self, expr: ast.Name, depth: int) -> str | None:
        kinds = set()
        for binding in self.ctx.dataflow.bindings(expr):
            if binding.kind is not BindingKind.ASSIGN or binding.path or binding.value is None:
                return None
            kinds.add(self.of(binding.value, depth + 1))
        return kinds.pop() if len(kinds) == 1 else None

    def sql(self, expr: ast.expr) -> str | None:
        """The kind of the SQL a string expression holds, from the literal text it starts
        with; None when some value it may take is not known to start with a verb."""
        prefixes = self.strings.prefixes(expr)
        kinds = {_sql_kind(prefix.text) for prefix in prefixes}
        return kinds.pop() if len(kinds) == 1 else None


def _sql_kind(sql: str) -> str | None:
    first = next((token.value for token in tokenize(sql) if token.kind == "word"), None)
    if first is None:
        return None
    if first in _TRANSACTION_WORDS:
        return _TRANSACTION_WORDS[first]
    if first in _OTHER_DML_WORDS:
        return DML
    # A script of several statements: the first that writes decides.
    for action in classify(sql):
        if action.kind == "dml":
            return DML
        if action.kind in ("query", "unknown", "no_transaction", "transaction"):
            continue
        return DDL
    return None


# Connections a function opens ---------------------------------------------------------
@dataclass(frozen=True)
class OwnedConnection:
    """A connection this function checks out from an engine and names:
    ``with engine.connect() as conn``, ``conn = engine.connect()``,
    ``async with engine.connect() as conn``, ``conn = await engine.connect()``."""

    name: str
    binding: Binding
    call: ast.Call  # the `engine.connect()` call
    engine: ast.expr  # what `connect()` is called on
    block: ast.With | ast.AsyncWith | None  # the `with` that binds it, if any
    options: tuple[ast.Call, ...]  # `.execution_options(...)` applied on the way


def owned_connections(flow: FunctionFlow) -> Iterator[OwnedConnection]:
    """Names bound here to connections this function opens with ``connect()``; not
    ``engine.begin()`` (which commits on exit), nor connections it receives."""
    for name, bindings in flow.bindings.items():
        for binding in bindings:
            if binding.kind not in ("with", "assign") or binding.element is not None:
                continue
            checkout = checkout_call(binding.value)
            if checkout is None:
                continue
            value, options = checkout
            block = binding.node if binding.kind == "with" else None
            assert block is None or isinstance(block, (ast.With, ast.AsyncWith))
            assert isinstance(value.func, ast.Attribute)
            yield OwnedConnection(name, binding, value, value.func.value, block, options)


def checkout_call(
    value: ast.expr | None, methods: frozenset[str] = frozenset({"connect"})
) -> tuple[ast.Call, tuple[ast.Call, ...]] | None:
    """The ``x.connect()`` call (no arguments; ``methods`` names others such as
    ``raw_connection``) a bound value takes its connection from, through ``await`` and
    ``.execution_options(...)``, with those option calls."""
    if isinstance(value, ast.Await):
        value = value.value
    options: list[ast.Call] = []
    while (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "execution_options"
    ):
        options.append(value)
        value = value.func.value
    if isinstance(value, ast.Await):
        value = value.value
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr in methods
        and not value.args
        and not value.keywords
    ):
        return value, tuple(options)
    return None


def sets_isolation(call: ast.Call) -> bool:
    """Whether ``execution_options(...)``/``create_engine(...)`` may set an isolation
    level (``isolation_level=``, an ``execution_options=`` dict, ``**options``)."""
    return any(
        kw.arg is None or kw.arg in ("isolation_level", "execution_options")
        for kw in call.keywords
    )


def exit_method(index: ProjectIndex, cls: str, *, is_async: bool) -> FunctionFacts | None:
    """The ``__exit__`` (``__aexit__``) a ``with`` block on an instance of the project
    class ``cls`` runs: its own or a base's."""
    return index.method(cls, "__aexit__" if is_async else "__exit__")


def sessions_ended(exit: FunctionFacts, *ends: str) -> set[str]:
    """The attributes of ``self`` an ``__exit__`` calls one of ``ends`` on
    (``self.session.close()`` for "close()"): the sessions a unit of work holds."""
    return {
        path[0]
        for position, iterated, path in exit.reads
        if position == 0 and not iterated and len(path) == 2 and path[1] in ends
    }
