"""``path:line:col: CODE [*] message``, the fix, related places, and a summary line."""

from __future__ import annotations

from collections.abc import Sequence

from sqla_doctor.findings import Applicability, Finding
from sqla_doctor.report import ReportContext


def render(findings: Sequence[Finding], context: ReportContext) -> str:
    lines: list[str] = []
    for finding in findings:
        fixable = finding.fix is not None and finding.fix.applicability is not Applicability.NONE
        marker = " [*]" if fixable else ""
        lines.append(f"{finding.location}: {finding.code}{marker} {finding.message}")
        for related in finding.related:
            lines.append(f"  --> {related.location}: {related.message}")
        if finding.fix_hint:
            lines.append(f"  = fix: {finding.fix_hint}")
    lines.append(summary(findings, context))
    return "\n".join(lines) + "\n"


def _files(count: int) -> str:
    return f"{count} file{'s' if count != 1 else ''}"


def summary(findings: Sequence[Finding], context: ReportContext) -> str:
    where = f" in {_files(context.files)}" if context.files else ""
    if not findings:
        if context.errors:
            errors = f"{context.errors} error{'s' if context.errors != 1 else ''}"
            return f"No findings{where}, but {errors} reported: not everything was checked."
        return f"All clean: no findings{where}."
    safe = sum(
        1 for f in findings if f.fix is not None and f.fix.applicability is Applicability.SAFE
    )
    unsafe = sum(
        1 for f in findings if f.fix is not None and f.fix.applicability is Applicability.UNSAFE
    )
    count = len(findings)
    if context.files:
        # Where the findings are, and how much was read: "in 3 files" read as both.
        with_findings = len({f.location.path for f in findings})
        where = f" in {_files(with_findings)}"
        if with_findings != context.files:
            where += f" ({context.files} checked)"
    text = f"Found {count} finding{'s' if count != 1 else ''}{where}."
    if safe:
        text += f" {safe} fixable with `sqla-doctor fix`."
    if unsafe:
        text += f" {unsafe} more with `sqla-doctor fix --unsafe-fixes`."
    codes = sorted({f.code for f in findings})
    text += f" Run `sqla-doctor explain {codes[0]}` to learn about a rule."
    return text
