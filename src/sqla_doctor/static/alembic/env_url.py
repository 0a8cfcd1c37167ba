"""The database an Alembic ``env.py`` connects to when it sets the URL itself.

TrueNAS's env.py ignores ``sqlalchemy.url`` in alembic.ini and writes
``DATABASE_URL = f"sqlite:///{path}"`` into the engine's config and
``context.configure(url=...)``: its revisions never run on PostgreSQL. Only URLs env.py
spells out count; one read from the environment, a function or a fallback
(``os.environ.get("DATABASE_URL", "sqlite:///dev.db")``) makes the database unknown.
"""

from __future__ import annotations

import ast
from collections import defaultdict

from sqla_doctor.static.alembic.discovery import url_dialect
from sqla_doctor.static.index.names import NameResolver

_URL_KEY = "sqlalchemy.url"
_ENGINE_MAKERS = frozenset(
    {
        "sqlalchemy.create_engine",
        "sqlalchemy.engine_from_config",
        "sqlalchemy.ext.asyncio.create_async_engine",
        "sqlalchemy.ext.asyncio.async_engine_from_config",
    }
)

_URL_FIRST = frozenset({"sqlalchemy.create_engine", "sqlalchemy.ext.asyncio.create_async_engine"})


def env_databases(tree: ast.Module, resolver: NameResolver) -> frozenset[str]:
    """The dialects of the URLs env.py hands Alembic or an engine, when every such URL is
    spelled out in env.py; empty when there is none or one is not known."""
    assigned: dict[str, list[ast.expr]] = defaultdict(list)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned[target.id].append(node.value)
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.value is not None
        ):
            assigned[node.target.id].append(node.value)
    heads: list[str] = []
    for value in _url_sinks(tree, resolver):
        found = _heads(value, assigned, 0)
        if found is None:
            return frozenset()
        heads.extend(found)
    dialects = {url_dialect(head) for head in heads}
    if None in dialects:
        return frozenset()
    return frozenset(d for d in dialects if d is not None)


def _url_sinks(tree: ast.Module, resolver: NameResolver) -> list[ast.expr]:
    """The expressions env.py uses as the database URL."""
    sinks: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            qualified = resolver.qualify(node.func)
            method = node.func.attr if isinstance(node.func, ast.Attribute) else None
            if qualified == "alembic.context.configure" or qualified in _ENGINE_MAKERS:
                sinks.extend(k.value for k in node.keywords if k.arg == "url")
                if qualified in _URL_FIRST:
                    sinks.extend(node.args[:1])
            elif method in ("set_main_option", "set_section_option"):
                # set_main_option(key, value) / set_section_option(section, key, value)
                args = node.args[1:] if method == "set_section_option" else node.args
                if len(args) == 2 and _is_url_key(args[0]):
                    sinks.append(args[1])
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Subscript) and _is_url_key(target.slice):
                    sinks.append(node.value)
    return sinks


def _is_url_key(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value == _URL_KEY


def _heads(
    expr: ast.expr, assigned: dict[str, list[ast.expr]], depth: int
) -> list[str] | None:
    """The literal starts of the URLs ``expr`` may be; [] for alembic.ini's own URL (read
    from the config, so already counted); None when not known."""
    if depth > 8:
        return None
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [expr.value]
    if isinstance(expr, ast.JoinedStr):
        first = expr.values[0] if expr.values else None
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return [first.value]
        return None
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _heads(expr.left, assigned, depth + 1)
    if isinstance(expr, ast.Name):
        values = assigned.get(expr.id)
        if not values:
            return None
        heads: list[str] = []
        for value in values:
            found = _heads(value, assigned, depth + 1)
            if found is None:
                return None
            heads.extend(found)
        return heads
    if (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr in ("get_main_option", "get_section_option")
        and any(_is_url_key(arg) for arg in expr.args)
    ):
        return []
    return None
