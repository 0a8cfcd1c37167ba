"""``ast.iter_child_nodes`` without its per-node generator, for the analyzer's hot walks.

Every node of every file is visited several times (facts, parent links, flows); the
standard generator and its ``iter_fields`` cost more than the walks' own work. Fields
that never hold anything a rule reads (an expression's ``ctx``, an operator) are skipped.
"""

from __future__ import annotations

import ast
from typing import Final

_SKIPPED: Final = frozenset({"ctx", "op"})
_fields: dict[type[ast.AST], tuple[str, ...]] = {}


def fields_of(kind: type[ast.AST]) -> tuple[str, ...]:
    """The fields of a node type that may hold child nodes, in source order."""
    fields = _fields.get(kind)
    if fields is None:
        fields = _fields[kind] = tuple(name for name in kind._fields if name not in _SKIPPED)
    return fields


def child_nodes(node: ast.AST) -> list[ast.AST]:
    """The direct children of ``node`` in source order (as ``ast.iter_child_nodes``)."""
    found: list[ast.AST] = []
    for name in fields_of(type(node)):
        value = getattr(node, name, None)
        if value.__class__ is list:
            for item in value:
                if isinstance(item, ast.AST):
                    found.append(item)
        elif isinstance(value, ast.AST):
            found.append(value)
    return found
