"""``ast.iter_child_nodes`` without its per-node generator, for the analyzer's hot walks.

Every node of every file is visited several times (facts, parent links, flows); the
standard generator and its ``iter_fields`` cost more than the walks' own work. Fields
that never hold anything a rule reads (an expression's ``ctx``, an operator) are skipped,
and so are those that never hold a node at all (a ``Name``'s ``id``, a ``Constant``'s
``value``), which leaves the commonest nodes with no field to look at.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Final

_SKIPPED: Final = frozenset({"ctx", "op"})
# Fields the ASDL grammar types as identifier, string, int or constant, in every node type.
_PRIMITIVE: Final = frozenset(
    {
        "id",
        "attr",
        "arg",
        "asname",
        "module",
        "level",
        "kind",
        "conversion",
        "is_async",
        "rest",
        "kwd_attrs",
        "tag",
        "type_comment",
    }
)
# Field names that are primitive only in some node types (``TypeAlias.name`` is a node,
# ``Import.names`` holds nodes, most ``value`` fields are nodes).
_PRIMITIVE_IN: Final = {
    "name": frozenset(
        {
            "FunctionDef",
            "AsyncFunctionDef",
            "ClassDef",
            "ExceptHandler",
            "alias",
            "MatchStar",
            "MatchAs",
            "TypeVar",
            "ParamSpec",
            "TypeVarTuple",
        }
    ),
    "names": frozenset({"Global", "Nonlocal"}),
    "value": frozenset({"Constant", "MatchSingleton"}),
    "lineno": frozenset({"TypeIgnore"}),
}
_fields: dict[type[ast.AST], tuple[str, ...]] = {}


def fields_of(kind: type[ast.AST]) -> tuple[str, ...]:
    """The fields of a node type that may hold child nodes, in source order."""
    fields = _fields.get(kind)
    if fields is None:
        fields = _fields[kind] = tuple(
            name
            for name in kind._fields
            if name not in _SKIPPED
            and name not in _PRIMITIVE
            and kind.__name__ not in _PRIMITIVE_IN.get(name, ())
        )
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


_reversed: dict[type[ast.AST], tuple[str, ...]] = {}
# For hot walks that look the answer up inline and call reversed_fields_of() on a miss.
KNOWN_REVERSED_FIELDS: Mapping[type[ast.AST], tuple[str, ...]] = _reversed


def reversed_fields_of(kind: type[ast.AST]) -> tuple[str, ...]:
    """``fields_of(kind)`` last first, for walks that push children on a stack."""
    fields = _reversed.get(kind)
    if fields is None:
        fields = _reversed[kind] = tuple(reversed(fields_of(kind)))
    return fields
