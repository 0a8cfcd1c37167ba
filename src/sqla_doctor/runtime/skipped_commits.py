"""Whether a write was made in a ``try`` body whose later ``commit()`` an error skipped.

``with Session() as session: try: session.add(user); check(user); session.commit()
except Invalid: return error_page`` ends its session without a commit when check()
raises: the handler caught the error, so nothing is unwinding when the block closes the
session, yet dropping the write is what the error path is for, as for a `with` block
left by a raise. The source tells it apart from a commit the program forgot: the write's
line is in the body of a ``try`` that has ``except`` clauses, and a statement of that
body after it is a ``commit()``. Entering the body and not reaching that statement takes
a jump out of it: an error the handler caught (an uncaught one is unwinding at the
close), or a ``return`` on the way.
"""

from __future__ import annotations

import ast
import linecache
from collections.abc import Iterator
from typing import cast

from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.generator_dependency import parse_safely

_MAX_FILES_CACHED = 64


# One statement of a try body: its first and last lines, and whether it commits.
_Span = tuple[int, int, bool]
# File -> (its source, the bodies of its try statements that have handlers): parsed
# once, and only when a finding is due.
_bodies: dict[str, tuple[str, tuple[tuple[_Span, ...], ...]]] = {}


def commit_skipped(site: CallSite) -> bool:
    """Whether the statement at ``site`` is in a ``try`` body with handlers that commits
    after it (the ``commit()`` is a statement of that body itself, not of a branch)."""
    for body in _try_bodies(site.filename):
        for index, (start, end, _) in enumerate(body):
            if start <= site.lineno <= end:
                if any(commits for _, _, commits in body[index + 1 :]):
                    return True
                break
    return False


def _try_bodies(filename: str) -> tuple[tuple[_Span, ...], ...]:
    source = "".join(linecache.getlines(filename))
    cached = _bodies.get(filename)
    if cached is not None and cached[0] == source:
        return cached[1]
    tree = parse_safely(source, "exec") if source else None
    if tree is None:
        return ()
    bodies = tuple(
        tuple((s.lineno, s.end_lineno or s.lineno, _is_commit(s)) for s in body)
        for body in _handled_bodies(tree)
    )
    if len(_bodies) >= _MAX_FILES_CACHED:
        _bodies.clear()
    _bodies[filename] = (source, bodies)
    return bodies


def _handled_bodies(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) or type(node).__name__ == "TryStar":
            statement = cast(ast.Try, node)  # TryStar (3.11+) has the same fields
            if statement.handlers:
                yield statement.body


def _is_commit(statement: ast.stmt) -> bool:
    """``session.commit()``, ``await session.commit()``, ``uow.commit()``."""
    if not isinstance(statement, ast.Expr):
        return False
    call = statement.value.value if isinstance(statement.value, ast.Await) else statement.value
    return (
        isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and call.func.attr == "commit"
    )
