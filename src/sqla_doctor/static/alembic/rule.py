"""The base of the migration rules, and the fixes they share."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from sqla_doctor.findings import (
    Applicability,
    Edit,
    Finding,
    Fix,
    Kind,
    Location,
    Related,
    Severity,
)
from sqla_doctor.static.alembic.ops import Operation
from sqla_doctor.static.alembic.project import (
    AlembicAnalysis,
    AlembicProject,
    MigrationFile,
    ParsedFile,
    analysis,
)
from sqla_doctor.static.context import ProjectContext
from sqla_doctor.static.rule import ProjectRule


class MigrationRule(ProjectRule):
    """A rule over Alembic projects. Per-migration rules implement ``check_migration``;
    rules over a whole script location implement ``check_alembic_project``."""

    kind = Kind.MIGRATION
    # Per-migration rules about PostgreSQL locking skip projects configured for other
    # databases only, revisions kept in a folder named for another database, and
    # operations guarded by a non-PostgreSQL dialect test.
    postgresql_only = True

    def check_project(self, project: ProjectContext) -> Iterable[Finding]:
        shared = analysis(project)
        for alembic_project in shared.projects:
            yield from self.check_alembic_project(alembic_project, shared)
        for migration in shared.linted():
            if self.postgresql_only and not migration.postgresql_possible:
                continue
            yield from _one_per_call(migration, self.check_migration(migration, shared))

    def check_alembic_project(
        self, project: AlembicProject, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        return ()

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        return ()

    def operations(
        self, migration: MigrationFile, phase: str | None = "upgrade"
    ) -> Iterator[Operation]:
        for operation in migration.operations:
            if phase is not None and operation.phase != phase:
                continue
            if self.postgresql_only and not operation.postgresql:
                continue
            yield operation

    def at(
        self,
        file: ParsedFile,
        node: ast.AST,
        *,
        hint: str | None = None,
        related: Iterable[Related] = (),
        fix: Fix | None = None,
        severity: Severity | None = None,
        **message_args: Any,
    ) -> Finding:
        finding = self.finding(
            file.ctx.location(node), hint=hint, related=related, fix=fix, **message_args
        )
        if severity is not None and severity is not finding.severity:
            finding = replace(finding, severity=severity)
        return finding


def _one_per_call(migration: MigrationFile, findings: Iterable[Finding]) -> Iterator[Finding]:
    """The findings of a call in a loop over literal names (``for table in ("a", "b"):
    op.create_foreign_key(..., table, ...)``) as one: the first, naming the others. The
    call is one line to change, and one fix edits it for every name."""
    loops = migration.unrolled_calls
    if not loops:
        yield from findings
        return
    merged: dict[tuple[Location, str], list[Finding]] = {}
    for finding in findings:
        if finding.location in loops:
            merged.setdefault((finding.location, finding.code), []).append(finding)
        else:
            yield finding
    for first, *others in merged.values():
        if others:
            more = f"{len(others)} more value{'s' if len(others) > 1 else ''}"
            shown = list(dict.fromkeys(filter(None, (_differs(first, o) for o in others))))
            names = ", ".join(shown[:_NAMES_SHOWN]) + (", …" if len(shown) > _NAMES_SHOWN else "")
            first = replace(
                first,
                message=f"{first.message} (its loop does the same for {more}"
                + (f": {names})" if names else ")"),
            )
        yield first


def _differs(first: Finding, other: Finding) -> str:
    """What sets ``other``'s message apart from ``first``'s: the first name the loop gave
    it (``identity``, ``db_dblog.metadata``, an index's name)."""
    words = set(_WORD.findall(first.message))
    tokens: list[str] = _DOTTED.findall(other.message)
    for token in tokens:
        if any(word not in words for word in _WORD.findall(token)):
            return token.strip(".")
    return ""


_NAMES_SHOWN = 6
_WORD = re.compile(r"\w+")
_DOTTED = re.compile(r"[\w.]+")


# Fixes -------------------------------------------------------------------------------
def _statement_of(file: ParsedFile, call: ast.AST) -> ast.stmt | None:
    """The expression statement whose value is ``call`` (``op.create_index(...)`` alone)."""
    for node in ast.walk(file.tree):
        if isinstance(node, ast.Expr) and node.value is call:
            return node
    return None


def _receiver(call: ast.AST) -> str | None:
    if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute):
        value = call.func.value
        if isinstance(value, ast.Name):
            return value.id
    return None


def keyword_insertion(file: ParsedFile, call: ast.Call, text: str) -> Edit | None:
    """An edit adding ``, text`` after the call's last argument."""
    arguments: list[ast.AST] = [*call.args, *call.keywords]
    if not arguments:
        return None
    last = max(
        arguments, key=lambda n: (getattr(n, "end_lineno", 0), getattr(n, "end_col_offset", 0))
    )
    _, _, end_line, end_col = file.ctx.span(last)
    return Edit(end_line, end_col, end_line, end_col, f", {text}")


def autocommit_fix(
    file: ParsedFile, call: ast.Call, description: str, keyword: str | None = None
) -> Fix | None:
    """Wrap the statement in ``with op.get_context().autocommit_block():`` (and add a keyword)."""
    statement = _statement_of(file, call)
    op_name = _receiver(call)
    if statement is None or op_name is None or op_name.endswith("batch_op"):
        return None
    lines = file.source.splitlines(keepends=True)
    start, end = statement.lineno, statement.end_lineno or statement.lineno
    if end > len(lines):
        return None
    line_text = lines[start - 1]
    indent = line_text[: len(line_text) - len(line_text.lstrip())]
    if line_text.strip() == "" or file.ctx.span(statement)[1] != len(indent):
        return None  # something else shares the line (`x = 1; op.execute(...)`)
    body = "".join(lines[start - 1 : end]).rstrip("\r\n")
    if keyword is not None:
        edit = keyword_insertion(file, call, keyword)
        if edit is None:
            return None
        offset = sum(len(line) for line in lines[start - 1 : edit.start_line - 1]) + edit.start_col
        body = body[:offset] + edit.replacement + body[offset:]
    indented = "\n".join(("    " + line) if line.strip() else line for line in body.split("\n"))
    text = f"{indent}with {op_name}.get_context().autocommit_block():\n{indented}"
    end_col = len(lines[end - 1].rstrip("\r\n"))
    return Fix(
        description=description,
        edits=(Edit(start, 0, end, end_col, text),),
        applicability=Applicability.UNSAFE,
    )


def keyword_fix(file: ParsedFile, call: ast.Call, keyword: str, description: str) -> Fix | None:
    edit = keyword_insertion(file, call, keyword)
    if edit is None:
        return None
    return Fix(description=description, edits=(edit,), applicability=Applicability.UNSAFE)


def line_of(node: ast.AST) -> int:
    return getattr(node, "lineno", 1)
