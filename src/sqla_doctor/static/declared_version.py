"""Which SQLAlchemy a project declares it runs on, read from its requirement files.

A project pinned below 2.0 (``sqlalchemy==1.4.54``, ``sqlalchemy<2``, Poetry's ``^1.4``)
is not 2.x code: the rules about moving to 2.0 (the legacy ``Query`` API, removed 1.x
APIs) describe its future, not its bugs, and stay off unless asked for by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Where projects declare their dependencies, at the project's top.
_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "Pipfile")
# `dev-requirements.txt`, `extras-requirements.txt`: an extra's or a tool's list is as
# much the project's word on which SQLAlchemy it runs on.
_REQUIREMENT_GLOBS = (
    "requirements*.txt",
    "requirements*.in",
    "*[-_]requirements*.txt",
    "*[-_]requirements*.in",
    "requirements/*.txt",
)
# `sqlalchemy==1.4.54`, `"SQLAlchemy[asyncio]<2",`, `sqlalchemy = "^1.4"` (Poetry, Pipfile),
# `sqlalchemy = {version = "~1.3"}`: never `flask-sqlalchemy` or `sqlalchemy-utils`.
_REQUIREMENT = re.compile(
    r"""(?ix)(?:^|[\s"'\[,])sqlalchemy(?![\w.-])\s*(?:\[[^\]]*\])?\s*
    (?:
        (?P<spec>(?:===|==|~=|!=|<=|>=|<|>)\s*[^"',;#\s]+
            (?:\s*,\s*(?:===|==|~=|!=|<=|>=|<|>)\s*[^"',;#\s]+)*)
      | =\s*(?:\{[^}]*?version\s*=\s*)?["'](?P<poetry>[^"']+)["']
    )"""
)
_CLAUSE = re.compile(r"(===|==|~=|<=|>=|!=|<|>|\^|~)?\s*([0-9][0-9.*]*)")


@dataclass(frozen=True)
class DeclaredPin:
    """A requirement that keeps the project below SQLAlchemy 2.0, and where it is."""

    path: str
    line: int
    requirement: str


def pinned_below_2(root: Path) -> DeclaredPin | None:
    """The first requirement at the project's top that rules SQLAlchemy 2 out, if any
    requirement names SQLAlchemy and none of them allows 2.x."""
    found: DeclaredPin | None = None
    for path in _candidates(root):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            for match in _REQUIREMENT.finditer(line):
                spec = match.group("spec") or match.group("poetry") or ""
                verdict = _allows_2(spec, poetry=match.group("poetry") is not None)
                if verdict:
                    return None
                if verdict is False and found is None:
                    relative = path.relative_to(root).as_posix()
                    found = DeclaredPin(relative, number, match.group(0).strip(" \"',["))
    return found


def _candidates(root: Path) -> list[Path]:
    paths = [root / name for name in _FILES if (root / name).is_file()]
    for pattern in _REQUIREMENT_GLOBS:
        paths.extend(sorted(p for p in root.glob(pattern) if p.is_file()))
    return paths


def _allows_2(spec: str, *, poetry: bool) -> bool | None:
    """Whether a version specifier admits 2.0 or later; None when it cannot be read."""
    clauses = [c.strip() for c in spec.split(",") if c.strip()]
    if not clauses:
        return None
    for clause in clauses:
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            return None
        operator, version = match.group(1) or ("==" if poetry else ""), match.group(2)
        major = _major(version)
        if major is None:
            return None
        if operator in ("==", "===", "~=", "^", "~") and major < 2:
            return False
        if operator == "<" and _below_or_at_2(version):
            return False
        if operator == "<=" and major < 2:
            return False
        if operator == "" and not poetry:
            return None
    return True


def _major(version: str) -> int | None:
    head = version.split(".")[0]
    return int(head) if head.isdigit() else None


def _below_or_at_2(version: str) -> bool:
    """``<2``, ``<2.0``, ``<1.5``: nothing from 2.0 on; ``<2.1`` admits 2.0."""
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")]
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts[:3]) <= (2, 0, 0)
