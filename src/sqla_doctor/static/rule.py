"""The base of every static rule: metadata, examples that run as tests, ``report()``.

A rule defines ``visit_<NodeType>`` / ``leave_<NodeType>`` methods named after stdlib
``ast`` classes; the engine walks each file once and calls every enabled rule. Rules read
project-wide facts from ``self.ctx.index`` and never walk the whole module themselves.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from sqla_doctor.findings import Applicability, Edit, Finding, Fix, Kind, Location, Related
from sqla_doctor.registry import Check
from sqla_doctor.static.index.models import call_tail

if TYPE_CHECKING:
    from sqla_doctor.static.context import FileContext, ProjectContext


@dataclass(frozen=True)
class Valid:
    """Code the rule must stay silent on. ``path`` lets a case pose as another file."""

    code: str
    path: str = "example.py"
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid:
    """Code the rule must fire on, with the expected message and fix when given.

    ``line`` is the 1-based line of the (first) finding in ``code`` once dedented.
    ``files`` adds other modules of the same project (path → source), for rules that
    resolve names across modules.
    """

    code: str
    expected_message: str | None = None
    expected_fix: str | None = None
    line: int | None = None
    count: int | None = None
    path: str = "example.py"
    files: dict[str, str] = field(default_factory=dict)


_R = TypeVar("_R", bound="Rule")
CallVisitor = Callable[[_R, ast.Call], None]


def calls_to(
    *, named: Iterable[str] = (), ending: Iterable[str] = ()
) -> Callable[[CallVisitor[_R]], CallVisitor[_R]]:
    """For ``visit_Call``: look only at calls whose callee is one of the SQLAlchemy names
    ``named`` (``ctx.names.sqla_name(node.func)``, aliases and re-exports followed) or
    ends, as written, with one of ``ending`` (:func:`call_tail`, aliases not followed).

    The method runs only for those calls; the engine knows it from the marks and does not
    even call the method for the others (every file has far more calls than any rule
    looks at).
    """
    names, tails = frozenset(named), frozenset(ending)

    def decorate(method: CallVisitor[_R]) -> CallVisitor[_R]:
        @functools.wraps(method)
        def visit_call(self: _R, node: ast.Call) -> None:
            if call_tail(node.func) in tails or self.ctx.names.sqla_name(node.func) in names:
                method(self, node)

        visit_call.call_marks = (names, tails)  # type: ignore[attr-defined]
        return visit_call

    return decorate


class Rule(Check):
    """A static rule, run once per file."""

    kind = Kind.STATIC
    VALID: ClassVar[Sequence[Valid]] = ()
    INVALID: ClassVar[Sequence[Invalid]] = ()
    # About the move to SQLAlchemy 2.0: off for a project pinned below 2.0 unless it is
    # selected by code or name (see ``declared_version``).
    requires_sqlalchemy_2: ClassVar[bool] = False

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self.findings: list[Finding] = []

    def report(
        self,
        node: ast.AST,
        *,
        fix: Fix | None = None,
        hint: str | None = None,
        related: Iterable[Related] = (),
        **message_args: Any,
    ) -> None:
        """Record a finding at ``node``, with the message formatted from ``message_args``."""
        self.findings.append(
            Finding(
                code=self.code,
                name=self.name,
                message=self.message.format(**message_args),
                location=self.ctx.location(node),
                severity=self.severity,
                pitfalls=self.pitfalls,
                kind=self.kind,
                fix_hint=hint,
                related=tuple(related),
                fix=fix,
            )
        )

    def replace(self, node: ast.AST, text: str, description: str) -> Fix:
        """A fix replacing ``node``'s source with ``text``, with this rule's applicability."""
        start_line, start_col, end_line, end_col = self.ctx.span(node)
        applicability = self.fix if self.fix is not Applicability.NONE else Applicability.SAFE
        return Fix(
            description=description,
            edits=(Edit(start_line, start_col, end_line, end_col, text),),
            applicability=applicability,
        )


class ProjectRule(Check):
    """A rule that needs the whole project at once (imports reached, migration graphs)."""

    kind = Kind.STATIC
    VALID: ClassVar[Sequence[Valid]] = ()
    INVALID: ClassVar[Sequence[Invalid]] = ()

    def check_project(self, project: ProjectContext) -> Iterable[Finding]:
        raise NotImplementedError

    def finding(
        self,
        location: Location,
        *,
        hint: str | None = None,
        related: Iterable[Related] = (),
        fix: Fix | None = None,
        **message_args: Any,
    ) -> Finding:
        return Finding(
            code=self.code,
            name=self.name,
            message=self.message.format(**message_args),
            location=location,
            severity=self.severity,
            pitfalls=self.pitfalls,
            kind=self.kind,
            fix_hint=hint,
            related=tuple(related),
            fix=fix,
        )
