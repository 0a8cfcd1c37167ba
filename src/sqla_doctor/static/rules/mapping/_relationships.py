"""Shared by the relationship mapping rules: the model a class statement maps, and the
``relationship()`` call each declared relationship comes from."""

from __future__ import annotations

import ast
from collections.abc import Iterator

from sqla_doctor.static.context import FileContext
from sqla_doctor.static.index import Model, RelationshipFacts


def declared_relationships(
    ctx: FileContext, node: ast.ClassDef
) -> Iterator[tuple[Model, RelationshipFacts, ast.Call]]:
    """(model, facts, call) for every relationship a module-level mapped class declares."""
    if not isinstance(ctx.parent(node), ast.Module):
        return
    module = ctx.facts.module
    model = ctx.index.model(f"{module}.{node.name}" if module else node.name)
    if model is None:
        return
    calls: dict[tuple[int, int], ast.Call] = {}
    for stmt in node.body:
        value = getattr(stmt, "value", None)
        if isinstance(value, ast.Call):
            calls[(value.lineno, value.col_offset)] = value
            # SQLModel: `Relationship(sa_relationship=relationship(...))`.
            for kw in value.keywords:
                if isinstance(kw.value, ast.Call):
                    calls[(kw.value.lineno, kw.value.col_offset)] = kw.value
    for rel in model.facts.relationships.values():
        call = calls.get((rel.line, rel.col))
        if call is not None:
            yield model, rel, call
