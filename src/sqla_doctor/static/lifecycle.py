"""How a function manages a session it creates: closed where, committed where, escaping.

Built on :mod:`sqla_doctor.static.flow`; shared by the session rules (not closed, yielded
without ``finally``, writes never committed, reuse after a failed flush, I/O while a
connection is held, concurrent use).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from sqla_doctor.static.flow import Binding, FunctionFlow, SessionValue, contains

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
    )


def managed_by_with(flow: FunctionFlow, name: str) -> bool:
    """``with s:``, ``with s.begin():``, ``with closing(s):`` somewhere in the function."""
    for with_node in flow.withs:
        for item in with_node.items:
            expr = item.context_expr
            if isinstance(expr, ast.Name) and expr.id == name:
                return True
            if (
                isinstance(expr, ast.Call)
                and isinstance(expr.func, ast.Attribute)
                and expr.func.attr in ("begin",)
                and isinstance(expr.func.value, ast.Name)
                and expr.func.value.id == name
            ):
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


def escapes(flow: FunctionFlow, name: str, *, yields_count: bool = True) -> bool:
    """Whether the session leaves the function's hands: returned, yielded, stored in an
    attribute or a container, handed to a constructor or a callback registry, or
    referenced as ``s.close`` without calling it (registered for later)."""
    for load in flow.name_loads.get(name, ()):
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


def bound_to_connection(flow: FunctionFlow, made: ast.expr | None) -> bool:
    """Whether a session is made on an existing connection (``Session(bind=conn)``,
    ``Session(op.get_bind())``, ``join_transaction_mode=``): it holds no pool connection
    of its own, so not closing it leaks nothing."""
    if isinstance(made, ast.Await):
        made = made.value
    if not isinstance(made, ast.Call):
        return False
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
