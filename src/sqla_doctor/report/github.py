"""GitHub Actions workflow commands: one ``::error``/``::warning``/``::notice`` per finding."""

from __future__ import annotations

from collections.abc import Sequence

from sqla_doctor.findings import Finding, Severity
from sqla_doctor.report import ReportContext

_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _property(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def render(findings: Sequence[Finding], context: ReportContext) -> str:
    lines = []
    for finding in findings:
        loc = finding.location
        props = [f"file={_property(loc.path)}", f"line={loc.line}", f"col={loc.col}"]
        if loc.end_line is not None:
            props.append(f"endLine={loc.end_line}")
        if loc.end_col is not None and loc.end_line == loc.line:
            props.append(f"endColumn={loc.end_col}")
        props.append(f"title={_property(f'{finding.code} {finding.name}')}")
        message = finding.message + (f"\nFix: {finding.fix_hint}" if finding.fix_hint else "")
        lines.append(f"::{_LEVEL[finding.severity]} {','.join(props)}::{_data(message)}")
    return "\n".join(lines) + ("\n" if lines else "")
