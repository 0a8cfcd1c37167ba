"""What an Alembic ``env.py`` sets up: its ``target_metadata``, and its transactions.

Alembic decides at ``context.configure(connection=...)`` whether the connection is already
in a transaction. If it is (``with engine.begin() as connection:``, or any
``connection.execute(...)`` before ``configure`` without a ``commit()``, SQLAlchemy 2.x
having begun one implicitly), Alembic treats it as an *external* transaction: it opens none
of its own, commits none, and ``autocommit_block()`` fails on its
``assert self._transaction is not None``. A connection or engine configured with
``isolation_level="AUTOCOMMIT"`` runs every statement outside a transaction block.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from sqla_doctor.static.alembic.env_url import env_databases
from sqla_doctor.static.alembic.ops import _string_value
from sqla_doctor.static.index.names import NameResolver

_CONTEXT = "alembic.context"


@dataclass(frozen=True)
class OuterTransaction:
    """Where env.py puts migrations inside a transaction Alembic does not own."""

    node: ast.AST
    how: str  # "begin" (with X.begin()), "execute" (autobegin), "explicit" (X.begin())
    detail: str = ""
    advisory_lock: bool = False
    # env.py commits the connection itself once the migrations ran (``connection.commit()``
    # or ``context.get_bind().commit()`` after ``configure``): nothing is rolled back.
    committed_after: bool = False


@dataclass
class EnvFacts:
    """The facts the migration rules need from one env.py."""

    tree: ast.Module
    target_exprs: list[ast.expr] = field(default_factory=list)
    target_node: ast.AST | None = None
    target_unknown: bool = False
    outer: list[OuterTransaction] = field(default_factory=list)
    xact_locks: list[ast.AST] = field(default_factory=list)
    autocommit: bool = False
    transaction_per_migration: bool = False
    online: bool = False
    # The databases of the URLs env.py sets itself (see env_url); empty when unknown.
    databases: frozenset[str] = frozenset()


def analyse_env(tree: ast.Module, resolver: NameResolver) -> EnvFacts:
    facts = EnvFacts(tree=tree, databases=env_databases(tree, resolver))
    module_values = _module_values(tree)
    functions = {
        stmt.name: stmt
        for stmt in ast.walk(tree)
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    _find_target(facts, tree, module_values, resolver)
    configure_fns = _functions_calling(functions, resolver, ("configure",))
    migrate_fns = _functions_calling(functions, resolver, ("configure", "run_migrations"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            _isolation(node, facts)
            qualified = resolver.qualify(node.func)
            if qualified == f"{_CONTEXT}.configure":
                if any(k.arg == "connection" for k in node.keywords):
                    facts.online = True
                for keyword in node.keywords:
                    if keyword.arg == "transaction_per_migration" and isinstance(
                        keyword.value, ast.Constant
                    ):
                        facts.transaction_per_migration = keyword.value.value is True
            text = _call_sql(node, module_values, resolver)
            if text is not None and "pg_advisory_xact_lock" in text.lower():
                facts.xact_locks.append(node)
        if isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                expr = item.context_expr
                if _is_begin(expr, resolver) and _runs(node.body, resolver, migrate_fns):
                    facts.outer.append(OuterTransaction(expr, "begin", _describe(expr)))
    for body in _bodies(tree):
        _scan_sequence(body, resolver, configure_fns, module_values, facts)
    facts.outer = [
        replace(outer, committed_after=_caller_commits(tree, functions, outer.node, resolver))
        if outer.how == "execute" and not outer.committed_after
        else outer
        for outer in facts.outer
    ]
    with_items = {
        id(item.context_expr)
        for node in ast.walk(tree)
        if isinstance(node, (ast.With, ast.AsyncWith))
        for item in node.items
    }
    for function in functions.values():
        _explicit_begin(function, resolver, with_items, facts)
    return facts


def _explicit_begin(
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    resolver: NameResolver,
    with_items: set[int],
    facts: EnvFacts,
) -> None:
    """``conn.begin()`` (the multidb template's) before ``context.configure`` in one function."""
    configure_lines = [
        node.lineno
        for node in _walk_no_defs(function)
        if isinstance(node, ast.Call) and resolver.qualify(node.func) == f"{_CONTEXT}.configure"
    ]
    if not configure_lines:
        return
    for node in _walk_no_defs(function):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("begin", "begin_twophase")
            and id(node) not in with_items
            and node.lineno < max(configure_lines)
            and not (resolver.qualify(node.func) or "").startswith("alembic.")
        ):
            facts.outer.append(OuterTransaction(node, "explicit", _describe(node)))
            return


def _module_values(tree: ast.Module) -> dict[str, ast.expr]:
    values: dict[str, ast.expr] = {}
    for stmt in _flat(tree.body):
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = stmt.value
        elif (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and (stmt.value is not None)
        ):
            values[stmt.target.id] = stmt.value
    return values


def _flat(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.Try)):
            yield from _flat(stmt.body)
            yield from _flat(stmt.orelse)
            if isinstance(stmt, ast.Try):
                for handler in stmt.handlers:
                    yield from _flat(handler.body)


def _find_target(
    facts: EnvFacts, tree: ast.Module, values: dict[str, ast.expr], resolver: NameResolver
) -> None:
    """``target_metadata = X`` at module level, or ``configure(target_metadata=X)``."""
    expressions: list[tuple[ast.AST, ast.expr]] = []
    for stmt in _flat(tree.body):
        value: ast.expr | None = None
        if (
            isinstance(stmt, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "target_metadata" for t in stmt.targets)
        ) or (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == "target_metadata"
        ):
            value = stmt.value
        if value is not None:
            expressions.append((stmt, value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and resolver.qualify(node.func) == f"{_CONTEXT}.configure":
            for keyword in node.keywords:
                if keyword.arg == "target_metadata" and not (
                    isinstance(keyword.value, ast.Name) and keyword.value.id == "target_metadata"
                ):
                    expressions.append((keyword, keyword.value))
    if not expressions:
        return
    facts.target_node = expressions[-1][0]
    for _, expr in expressions:
        for item in _expand(expr, values):
            if item is None:
                facts.target_unknown = True
            elif not (isinstance(item, ast.Constant) and item.value is None):
                facts.target_exprs.append(item)


def _expand(
    expr: ast.expr, values: dict[str, ast.expr], depth: int = 0
) -> Iterator[ast.expr | None]:
    """Metadata expressions in a list, tuple or dict (multi-database env.py); None if unknown."""
    if depth > 10:
        yield None
        return
    if isinstance(expr, (ast.List, ast.Tuple, ast.Set)):
        for element in expr.elts:
            yield from _expand(element, values, depth + 1)
    elif isinstance(expr, ast.Dict):
        for element in expr.values:
            yield from _expand(element, values, depth + 1)
    elif isinstance(expr, ast.Name) and expr.id in values:
        yield from _expand(values[expr.id], values, depth + 1)
    elif isinstance(expr, (ast.Name, ast.Attribute, ast.Constant)):
        yield expr
    else:
        yield None


def _functions_calling(
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef],
    resolver: NameResolver,
    methods: tuple[str, ...],
) -> set[str]:
    """Local functions that call ``context.<method>`` directly or through each other."""
    direct = {
        name
        for name, function in functions.items()
        if any(
            isinstance(node, ast.Call)
            and resolver.qualify(node.func) in {f"{_CONTEXT}.{m}" for m in methods}
            for node in ast.walk(function)
        )
    }
    changed = True
    while changed:
        changed = False
        for name, function in functions.items():
            if name in direct:
                continue
            if any(isinstance(node, ast.Name) and node.id in direct for node in ast.walk(function)):
                direct.add(name)
                changed = True
    return direct


def _runs(body: list[ast.stmt], resolver: NameResolver, functions: set[str]) -> bool:
    return any(_stmt_runs(stmt, resolver, functions) for stmt in body)


def _stmt_runs(stmt: ast.AST, resolver: NameResolver, functions: set[str]) -> bool:
    """Whether a statement configures/runs migrations (directly or through a local function,
    including ``connection.run_sync(fn)`` and ``asyncio.run(fn())``)."""
    for node in _walk_no_defs(stmt):
        if isinstance(node, ast.Call):
            qualified = resolver.qualify(node.func)
            if qualified in (f"{_CONTEXT}.configure", f"{_CONTEXT}.run_migrations"):
                return True
        if isinstance(node, ast.Name) and node.id in functions:
            return True
    return False


def _walk_no_defs(node: ast.AST) -> Iterator[ast.AST]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        for child in ast.iter_child_nodes(current):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                stack.append(child)


def _is_begin(expr: ast.expr, resolver: NameResolver) -> bool:
    """``engine.begin()`` / ``connection.begin()``, not Alembic's ``begin_transaction()``."""
    if not (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)):
        return False
    if expr.func.attr != "begin":
        return False
    qualified = resolver.qualify(expr.func) or ""
    return not qualified.startswith(("alembic.", "sqlalchemy."))


def _describe(expr: ast.expr) -> str:
    try:
        return ast.unparse(expr)
    except Exception:  # pragma: no cover - unparse of a parsed tree does not fail
        return "begin()"


def _bodies(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                yield body


def _connection_call(stmt: ast.stmt, methods: tuple[str, ...]) -> ast.Call | None:
    for node in _walk_no_defs(stmt):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in methods
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id not in ("context", "op", "session")
        ):
            return node
    return None


def _scan_sequence(
    body: list[ast.stmt],
    resolver: NameResolver,
    configure_fns: set[str],
    values: dict[str, ast.expr],
    facts: EnvFacts,
) -> None:
    """``connection.execute(...)`` (or ``.begin()``) before ``configure`` with no commit."""
    pending: tuple[ast.Call, str] | None = None
    for position, stmt in enumerate(body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue  # defining a function runs none of it
        if _stmt_runs_configure(stmt, resolver, configure_fns):
            if pending is not None:
                call, how = pending
                text = _call_sql(call, values, resolver) or ""
                facts.outer.append(
                    OuterTransaction(
                        call,
                        how,
                        _describe(call),
                        advisory_lock="pg_advisory_lock" in text.lower()
                        or "pg_try_advisory_lock" in text.lower(),
                        committed_after=any(
                            _commits_connection(later, resolver) for later in body[position:]
                        ),
                    )
                )
            pending = None
            continue
        if _connection_call(stmt, ("commit", "rollback")) is not None:
            pending = None
            continue
        if isinstance(stmt, (ast.With, ast.AsyncWith, ast.If, ast.For, ast.While, ast.Try)):
            continue
        execute = _connection_call(stmt, ("execute", "exec_driver_sql"))
        if execute is not None and resolver.qualify(execute.func) is None:
            pending = (execute, "execute")
            continue


def _caller_commits(
    tree: ast.Module,
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef],
    node: ast.AST,
    resolver: NameResolver,
) -> bool:
    """Whether the code that runs the function holding ``node`` commits the connection
    once it returns: ``await connection.run_sync(do_run_migrations)`` then
    ``await connection.commit()``."""
    holders = [f for f in functions.values() if any(n is node for n in ast.walk(f))]
    if not holders:
        return False
    name = min(holders, key=lambda f: len(list(ast.walk(f)))).name
    for body in _bodies(tree):
        for position, stmt in enumerate(body):
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            if any(isinstance(n, ast.Name) and n.id == name for n in _walk_no_defs(stmt)) and any(
                _commits_connection(later, resolver) for later in body[position + 1 :]
            ):
                return True
    return False


def _commits_connection(stmt: ast.stmt, resolver: NameResolver) -> bool:
    """``connection.commit()`` or ``context.get_bind().commit()`` anywhere in ``stmt``."""
    for node in _walk_no_defs(stmt):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "commit"
        ):
            continue
        receiver = node.func.value
        if isinstance(receiver, ast.Name) and receiver.id not in ("context", "op", "session"):
            return True
        if (
            isinstance(receiver, ast.Call)
            and resolver.qualify(receiver.func) == f"{_CONTEXT}.get_bind"
        ):
            return True
    return False


def _stmt_runs_configure(stmt: ast.stmt, resolver: NameResolver, functions: set[str]) -> bool:
    for node in _walk_no_defs(stmt):
        if isinstance(node, ast.Call) and resolver.qualify(node.func) == f"{_CONTEXT}.configure":
            return True
        if isinstance(node, ast.Name) and node.id in functions:
            return True
    return False


def _isolation(call: ast.Call, facts: EnvFacts) -> None:
    for keyword in call.keywords:
        if keyword.arg == "isolation_level" and _is_autocommit(keyword.value):
            facts.autocommit = True
        elif keyword.arg == "execution_options" and isinstance(keyword.value, ast.Dict):
            for key, value in zip(keyword.value.keys, keyword.value.values, strict=False):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "isolation_level"
                    and _is_autocommit(value)
                ):
                    facts.autocommit = True


def _is_autocommit(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and str(node.value).upper() == "AUTOCOMMIT"


def _call_sql(call: ast.Call, values: dict[str, ast.expr], resolver: NameResolver) -> str | None:
    if not call.args:
        return None
    return _string_value(call.args[0], {}, values, resolver)
