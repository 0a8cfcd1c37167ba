"""Edits that add a loader option to a statement, and the import it needs."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Edit
from sqla_doctor.static.context import FileContext
from sqla_doctor.static.flow import StatementValue


def local_name_for(ctx: FileContext, module: str, name: str) -> str | None:
    """The name this file already binds to ``module.name`` (``selectinload`` or an alias)."""
    for local, target in ctx.facts.names.imports.items():
        if target == f"{module}.{name}":
            return local
    return None


def import_edit(ctx: FileContext, module: str, name: str) -> tuple[str, Edit | None] | None:
    """(local name, edit adding ``from module import name``); None if the name is taken."""
    existing = local_name_for(ctx, module, name)
    if existing is not None:
        return existing, None
    if name in ctx.facts.names.imports or name in ctx.facts.names.defined:
        return None
    body = ctx.tree.body
    last_import: ast.stmt | None = None
    for stmt in body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == module and stmt.level == 0:
            if any(alias.name == "*" for alias in stmt.names):
                continue
            last = stmt.names[-1]
            _line, _col, end_line, end_col = ctx.span(last)
            return name, Edit(end_line, end_col, end_line, end_col, f", {name}")
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            last_import = stmt
        elif (
            isinstance(stmt, ast.Expr)
            and isinstance(stmt.value, ast.Constant)
            and last_import is None
        ):
            continue
        else:
            break
    text = f"from {module} import {name}\n"
    if last_import is not None:
        end_line = last_import.end_lineno or last_import.lineno
        return name, Edit(end_line + 1, 0, end_line + 1, 0, text)
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        end_line = first.end_lineno or first.lineno
        return name, Edit(end_line + 1, 0, end_line + 1, 0, text)
    return name, Edit(1, 0, 1, 0, text)


def add_option_edit(ctx: FileContext, stmt: StatementValue, option: str) -> Edit | None:
    """Append ``option`` to the statement's outermost ``.options(...)``, or add one."""
    node = stmt.node
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "options"
        and node.args
        and not node.keywords
    ):
        last = node.args[-1]
        _, _, end_line, end_col = ctx.span(last)
        return Edit(end_line, end_col, end_line, end_col, f", {option}")
    _, _, end_line, end_col = ctx.span(node)
    return Edit(end_line, end_col, end_line, end_col, f".options({option})")


def loader_edits(
    ctx: FileContext, stmt: StatementValue, loader: str, attribute: str
) -> tuple[tuple[Edit, ...], str] | None:
    """Edits adding ``loader(attribute)`` to ``stmt`` (with the import), and the option
    text; None when the statement is not in this file's tree or the name is taken."""
    imported = import_edit(ctx, "sqlalchemy.orm", loader)
    if imported is None:
        return None
    local, edit = imported
    option = f"{local}({attribute})"
    statement_edit = add_option_edit(ctx, stmt, option)
    if statement_edit is None:
        return None
    edits = (statement_edit,) if edit is None else (statement_edit, edit)
    return edits, option
