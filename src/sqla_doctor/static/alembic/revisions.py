"""Alembic revision files read statically, and the revision graph they form.

A revision file declares ``revision``, ``down_revision`` (a string, a tuple for a merge, or
None for a base), ``branch_labels`` and ``depends_on`` as module-level literals, possibly
annotated (``down_revision: Union[str, None] = "abc"``). Heads follow Alembic's own
definition: a revision no other revision names as ``down_revision`` (``depends_on`` does
not count).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

_UNKNOWN = object()
_IDENTITY_LINE = re.compile(r"(revision|down_revision|branch_labels|depends_on)\s*(:[^=]*)?=")


@dataclass(frozen=True)
class Revision:
    """One revision file's identity and its links."""

    path: Path
    display: str
    revision: str
    down_revisions: tuple[str, ...]
    branch_labels: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    # False when down_revision is not a literal we can read: then the file's links are
    # unknown and the graph checks say nothing about it.
    links_known: bool = True
    line: int = 1
    col: int = 1
    down_line: int = 1
    down_col: int = 1
    depends_line: int = 1
    depends_col: int = 1

    @property
    def is_base(self) -> bool:
        return self.links_known and not self.down_revisions


def _literal(node: ast.expr) -> object:
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, str)):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        values = []
        for element in node.elts:
            if not (isinstance(element, ast.Constant) and isinstance(element.value, str)):
                return _UNKNOWN
            values.append(element.value)
        return tuple(values)
    return _UNKNOWN


def _as_tuple(value: object) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple):
        return tuple(str(v) for v in value)
    return None


def _branch_labels(node: ast.expr | None) -> tuple[str, ...]:
    """The labels a ``branch_labels`` value gives; one given by a name
    (``branch_labels = migration.EXPAND_BRANCH``, glance) is known by its expression: its
    value is unknown, but the branch is labelled."""
    if node is None:
        return ()
    known = _as_tuple(_literal(node))
    if known is not None:
        return known
    elements = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
    return tuple(
        element.value
        if isinstance(element, ast.Constant) and isinstance(element.value, str)
        else ast.unparse(element)
        for element in elements
    )


def module_assignments(tree: ast.Module) -> Iterator[tuple[str, ast.expr, ast.stmt]]:
    """(name, value, statement) for every simple module-level assignment, in order."""
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and stmt.value is not None:
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    yield target.id, stmt.value, stmt
        elif (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.value is not None
        ):
            yield stmt.target.id, stmt.value, stmt


def identity_tree(source: str) -> ast.Module | None:
    """For a revision file this Python cannot parse (a Python 2 one with ``print x``): a
    module of its top-level ``revision``/``down_revision``/... assignments alone, at their
    own lines, so the graph still knows the revision Alembic (on its Python) loads."""
    lines = source.splitlines()
    kept = [""] * len(lines)
    for start, line in enumerate(lines):
        if not _IDENTITY_LINE.match(line):
            continue
        for end in range(start, min(start + 20, len(lines))):  # a value over a few lines
            block = lines[start : end + 1]
            try:
                ast.parse("\n".join(block))
            except SyntaxError:
                continue
            kept[start : end + 1] = block
            break
    if not any(kept):
        return None
    try:
        return ast.parse("\n".join(kept))
    except SyntaxError:
        return None


def parse_revision(path: Path, display: str, tree: ast.Module) -> Revision | None:
    """The revision a file declares, or None when it declares none."""
    values: dict[str, tuple[object, ast.stmt]] = {}
    labels_node: ast.expr | None = None
    for name, value, stmt in module_assignments(tree):
        if name in ("revision", "down_revision", "branch_labels", "depends_on"):
            values[name] = (_literal(value), stmt)
        if name == "branch_labels":
            labels_node = value
    if "revision" not in values:
        return None
    revision_value, revision_stmt = values["revision"]
    if not isinstance(revision_value, str) or not revision_value:
        return None
    down_value, down_stmt = values.get("down_revision", (_UNKNOWN, revision_stmt))
    down = _as_tuple(down_value)
    labels = _branch_labels(labels_node)
    depends_value, depends_stmt = values.get("depends_on", (None, revision_stmt))
    depends = _as_tuple(depends_value) or ()
    return Revision(
        path=path,
        display=display,
        revision=revision_value,
        down_revisions=down or (),
        branch_labels=labels,
        depends_on=depends,
        links_known=down is not None,
        line=revision_stmt.lineno,
        col=revision_stmt.col_offset + 1,
        down_line=down_stmt.lineno,
        down_col=down_stmt.col_offset + 1,
        depends_line=depends_stmt.lineno,
        depends_col=depends_stmt.col_offset + 1,
    )


@dataclass
class RevisionGraph:
    """The revisions of one script location, linked by ``down_revision``."""

    revisions: dict[str, Revision] = field(default_factory=dict)
    duplicates: list[tuple[Revision, Revision]] = field(default_factory=list)
    children: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, revisions: Iterable[Revision]) -> RevisionGraph:
        graph = cls()
        for revision in sorted(revisions, key=lambda r: r.display):
            existing = graph.revisions.get(revision.revision)
            if existing is not None:
                graph.duplicates.append((existing, revision))
                continue
            graph.revisions[revision.revision] = revision
        for revision in graph.revisions.values():
            for down in revision.down_revisions:
                graph.children.setdefault(down, set()).add(revision.revision)
        return graph

    def __len__(self) -> int:
        return len(self.revisions)

    @property
    def labels(self) -> dict[str, Revision]:
        return {label: r for r in self.revisions.values() for label in r.branch_labels}

    def heads(self) -> list[Revision]:
        """Revisions nobody names as ``down_revision`` (merges and branches understood)."""
        return [
            r
            for r in self.revisions.values()
            if not self.children.get(r.revision) and r.links_known
        ]

    def missing_down_revisions(self) -> list[tuple[Revision, str]]:
        return [
            (r, down)
            for r in self.revisions.values()
            for down in r.down_revisions
            if down not in self.revisions
        ]

    def missing_dependencies(self) -> list[tuple[Revision, str]]:
        labels = self.labels
        return [
            (r, dep)
            for r in self.revisions.values()
            for dep in r.depends_on
            if dep not in self.revisions and dep not in labels and self.resolve(dep) is None
        ]

    def broken(self) -> set[str]:
        """Revisions whose line reaches a missing ``down_revision`` (their own or an
        ancestor's): Alembic cannot load them, so they are no one's heads."""
        result: set[str] = set()
        for revision, _missing in self.missing_down_revisions():
            result.add(revision.revision)
            result |= self.descendants(revision.revision)
        return result

    def ancestors(self, revision: str) -> set[str]:
        """Every revision below ``revision`` (not itself)."""
        seen: set[str] = set()
        stack = list(self.revisions[revision].down_revisions) if revision in self.revisions else []
        while stack:
            current = stack.pop()
            if current in seen or current not in self.revisions:
                continue
            seen.add(current)
            stack.extend(self.revisions[current].down_revisions)
        return seen

    def descendants(self, revision: str) -> set[str]:
        """Every revision above ``revision`` (not itself)."""
        seen: set[str] = set()
        stack = list(self.children.get(revision, ()))
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            stack.extend(self.children.get(current, ()))
        return seen

    def cycles(self) -> list[Revision]:
        """One revision of each cycle (Alembic refuses a graph with a cycle)."""
        # Kahn's sort from the bases: what it cannot reach lies on a cycle or above one.
        pending = {
            r: sum(1 for d in set(rev.down_revisions) if d in self.revisions)
            for r, rev in self.revisions.items()
        }
        ready = [r for r, count in pending.items() if count == 0]
        while ready:
            current = ready.pop()
            for child in self.children.get(current, ()):
                pending[child] -= 1
                if pending[child] == 0:
                    ready.append(child)
        stuck = sorted(r for r, count in pending.items() if count > 0)
        found: list[Revision] = []
        in_cycle: set[str] = set()
        for revision in stuck:
            if revision in in_cycle:
                continue
            if revision in self.ancestors(revision):
                members = {r for r in self.ancestors(revision) if revision in self.ancestors(r)} | {
                    revision
                }
                in_cycle |= members
                found.append(self.revisions[min(members)])
        return found

    def resolve(self, identifier: str) -> str | None:
        """A revision id from a full id, a unique prefix (as Alembic allows) or a label."""
        if identifier in self.revisions:
            return identifier
        labels = self.labels
        if identifier in labels:
            return labels[identifier].revision
        matches = [r for r in self.revisions if r.startswith(identifier)]
        return matches[0] if len(matches) == 1 and len(identifier) >= 4 else None

    def exclusive_labels(self, head: str, other: str) -> set[str]:
        """Branch labels on ``head``'s line that ``other``'s line does not share."""
        mine = self.ancestors(head) | {head}
        theirs = self.ancestors(other) | {other}
        return {label for r in mine - theirs for label in self.revisions[r].branch_labels}
