"""Small questions about one syntax node: its source text, a call's keywords, a literal's truth."""

from __future__ import annotations

import ast
import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqla_doctor.static.context import FileContext


# Source text --------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _physical_lines(source: str) -> tuple[str, ...]:
    # The line breaks the tokenizer knows; str.splitlines() also breaks on \f and \x1c.
    return tuple(re.split(r"\r\n|\r|\n", source))


def source_segment(ctx: FileContext, node: ast.AST) -> str:
    """``node``'s source text (what ``FileContext.text`` gives, without re-splitting the
    file on every call)."""
    lineno = getattr(node, "lineno", None)
    end_lineno = getattr(node, "end_lineno", None)
    col = getattr(node, "col_offset", None)
    end_col = getattr(node, "end_col_offset", None)
    if lineno is None or end_lineno is None or col is None or end_col is None:
        return ""
    lines = _physical_lines(ctx.source)
    if not 0 < lineno <= end_lineno <= len(lines):
        return ""
    chosen = [line.encode("utf-8") for line in lines[lineno - 1 : end_lineno]]
    if len(chosen) == 1:
        return chosen[0][col:end_col].decode("utf-8", errors="replace")
    chosen[0] = chosen[0][col:]
    chosen[-1] = chosen[-1][:end_col]
    return "\n".join(part.decode("utf-8", errors="replace") for part in chosen)


# Call helpers -------------------------------------------------------------------------
def call_keyword(call: ast.Call, name: str) -> ast.keyword | None:
    """The keyword argument ``name=`` of a call, if given."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword
    return None


def has_star_kwargs(call: ast.Call) -> bool:
    """``f(**options)``: any keyword may hide inside; callers should not conclude absence."""
    return any(keyword.arg is None for keyword in call.keywords)


def is_truthy_literal(node: ast.expr) -> bool:
    """A literal that is true (``True``, ``1``, ``"debug"``)."""
    return isinstance(node, ast.Constant) and node.value is not None and bool(node.value)


def is_false_literal(node: ast.expr) -> bool:
    """A literal that is false (``False``, ``0``, ``None``, ``""``)."""
    return isinstance(node, ast.Constant) and not node.value


def assigned_name(statement: ast.AST | None) -> str | None:
    """The name ``statement`` binds when it is ``name = <value>``, else None."""
    if (
        isinstance(statement, ast.Assign)
        and len(statement.targets) == 1
        and isinstance(statement.targets[0], ast.Name)
    ):
        return statement.targets[0].id
    return None
