"""Edits that add a loader option to a statement, and the import it needs."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Edit
from sqla_doctor.static.context import FileContext
from sqla_doctor.static.flow import StatementValue
from sqla_doctor.static.loaders import parse_loader


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


def imports_edit(
    ctx: FileContext, module: str, names: list[str]
) -> tuple[dict[str, str], Edit | None] | None:
    """(local name of each of ``names``, one edit importing those not imported yet);
    None if one of them is taken by something else."""
    local: dict[str, str] = {}
    missing: list[str] = []
    for name in dict.fromkeys(names):
        imported = import_edit(ctx, module, name)
        if imported is None:
            return None
        local[name] = imported[0]
        if imported[1] is not None:
            missing.append(name)
    if not missing:
        return local, None
    first = import_edit(ctx, module, missing[0])
    edit = first[1] if first is not None else None
    if edit is None:
        return None
    # Either `, name` appended to an existing `from module import ...`, or a new line.
    text = (
        ", " + ", ".join(missing)
        if edit.replacement.startswith(", ")
        else f"from {module} import {', '.join(missing)}\n"
    )
    return local, Edit(edit.start_line, edit.start_col, edit.end_line, edit.end_col, text)


def options_edits(
    ctx: FileContext,
    stmt: StatementValue,
    chains: list[list[tuple[str, str]]],
    existing: list[tuple[str, ...]] | None = None,
) -> tuple[tuple[Edit, ...], str, bool] | None:
    """Edits adding one loader option per chain to ``stmt`` (with the imports), and the
    options' text (``selectinload(User.posts), selectinload(User.tags)``). A chain is its
    steps as (loader, attribute): ``[("joinedload", "User.posts"), ("selectinload",
    "Post.comments")]``. ``existing[i]`` names the attributes of chain ``i``'s first steps
    when an option of the statement already loads them (``("posts",)``): that option,
    when written in the statement, is continued in place (``joinedload(User.posts)`` →
    ``joinedload(User.posts).selectinload(Post.comments)``) rather than repeated. The
    third element says whether one was. None when a loader's name is taken in this file."""
    loaders = [loader for chain in chains for loader, _ in chain]
    imported = imports_edit(ctx, "sqlalchemy.orm", loaders)
    if imported is None:
        return None
    local, edit = imported

    def text(steps: list[tuple[str, str]]) -> str:
        return ".".join(f"{local[loader]}({attribute})" for loader, attribute in steps)

    edits: list[Edit] = []
    added: list[str] = []
    continued: set[int] = set()
    for number, chain in enumerate(chains):
        prefix = existing[number] if existing is not None else ()
        written = _written_option(ctx, stmt, prefix) if 0 < len(prefix) < len(chain) else None
        if written is not None and id(written) not in continued:
            continued.add(id(written))
            _, _, end_line, end_col = ctx.span(written)
            rest = text(chain[len(prefix) :])
            edits.append(Edit(end_line, end_col, end_line, end_col, f".{rest}"))
        else:
            added.append(text(chain))
    if added:
        statement_edit = add_option_edit(ctx, stmt, ", ".join(added))
        if statement_edit is None:
            return None
        edits.append(statement_edit)
    if edit is not None:
        edits.append(edit)
    return tuple(edits), ", ".join(text(chain) for chain in chains), bool(continued)


def _written_option(
    ctx: FileContext, stmt: StatementValue, attrs: tuple[str, ...]
) -> ast.expr | None:
    """The option in the statement's own ``.options(...)`` whose one chain is exactly
    ``attrs`` (``joinedload(User.posts)`` for ``("posts",)``), if written there."""
    node: ast.expr = stmt.node
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr == "options":
            for arg in node.args:
                chains = parse_loader(ctx.names, arg)
                if (
                    chains is not None
                    and len(chains) == 1
                    and tuple(step.attr for step in chains[0]) == attrs
                ):
                    return arg
        node = node.func.value
    return None


def loader_edits(
    ctx: FileContext, stmt: StatementValue, loader: str, attribute: str
) -> tuple[tuple[Edit, ...], str] | None:
    """Edits adding ``loader(attribute)`` to ``stmt`` (with the import), and the option
    text; None when the statement is not in this file's tree or the name is taken."""
    edits = options_edits(ctx, stmt, [[(loader, attribute)]])
    return edits[:2] if edits is not None else None


def model_name_here(ctx: FileContext, qualname: str) -> str | None:
    """The name this file knows a model class by (imported, or defined here), for an
    option that names it (``selectinload(Post.comments)``)."""
    for local, target in ctx.facts.names.imports.items():
        if ctx.index.follow(target) == qualname:
            return local
    module = ctx.facts.module
    name = qualname.rpartition(".")[2]
    if qualname == f"{module}.{name}" and name in ctx.facts.names.defined:
        return name
    return None
