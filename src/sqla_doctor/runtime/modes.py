"""How a runtime finding reaches the user: a warning, a log record, an exception, or nothing.

``warn`` uses ``warnings.warn_explicit`` with the user's file and line, so the warning
points at the line to change and ``-W error::sqla_doctor.NPlusOneWarning`` or pytest's
``filterwarnings`` apply to it (django-zeal's choice). ``log`` writes one structured record
to the ``sqla_doctor`` logger. ``raise`` raises a ``PitfallError`` at the end of the unit of
work, or at once for the few findings whose value is wrong right now. ``collect`` only
keeps the findings, for ``track()`` results and ``sqla-doctor run``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

from sqla_doctor.findings import Finding, Severity

MODES = ("warn", "log", "raise", "collect")

logger = logging.getLogger("sqla_doctor")

_LEVELS = {
    Severity.INFO: logging.INFO,
    Severity.WARNING: logging.WARNING,
    Severity.ERROR: logging.ERROR,
}


class SqlaDoctorWarning(UserWarning):
    """Base of the warnings the runtime doctor emits in ``warn`` mode."""

    finding: Finding | None = None


class SessionWarning(SqlaDoctorWarning):
    """A session, connection or transaction pitfall (codes SQD1xx)."""


class LoadingWarning(SqlaDoctorWarning):
    """A loading pitfall (codes SQD2xx)."""


class NPlusOneWarning(LoadingWarning):
    """One query per row: lazy loads, reloads or statements repeated in a loop (P01)."""


class QueryWarning(SqlaDoctorWarning):
    """A query or flush pitfall (codes SQD3xx)."""


class EngineWarning(SqlaDoctorWarning):
    """An engine or pool pitfall (codes SQD4xx)."""


class MappingWarning(SqlaDoctorWarning):
    """A mapping pitfall (codes SQD5xx)."""


_BY_BLOCK: dict[str, type[SqlaDoctorWarning]] = {
    "1": SessionWarning,
    "2": LoadingWarning,
    "3": QueryWarning,
    "4": EngineWarning,
    "5": MappingWarning,
}


class SqlaDoctorError(Exception):
    """Base of the exceptions sqla-doctor raises on purpose."""


class PitfallError(SqlaDoctorError):
    """Raised in ``raise`` mode: the findings of a unit of work, worst first."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = tuple(findings)
        super().__init__(describe(self.findings))


def warning_category(finding: Finding) -> type[SqlaDoctorWarning]:
    if "P01" in finding.pitfalls:
        return NPlusOneWarning
    return _BY_BLOCK.get(finding.code[3:4], SqlaDoctorWarning)


def line(finding: Finding) -> str:
    return f"{finding.location.path}:{finding.location.line}: {finding.code} {finding.message}"


def describe(findings: Iterable[Finding]) -> str:
    items = list(findings)
    if len(items) == 1:
        return line(items[0])
    head = f"{len(items)} SQLAlchemy pitfalls detected:"
    return "\n".join([head, *(f"  {line(f)}" for f in items)])


def warn(finding: Finding, filename: str | None, module: str | None) -> None:
    category = warning_category(finding)
    message = category(f"{finding.code} {finding.message}")
    message.finding = finding
    warnings.warn_explicit(
        message,
        category,
        filename or finding.location.path,
        finding.location.line,
        # The user's module name, so that ``-W ...:module`` filters and pytest's
        # filterwarnings match on the code that triggered the finding.
        module=module,
        registry=None,
    )


def log(finding: Finding) -> None:
    record: dict[str, Any] = {
        "code": finding.code,
        "name": finding.name,
        "message": finding.message,
        "severity": finding.severity.value,
        "path": finding.location.path,
        "line": finding.location.line,
        "fix": finding.fix_hint,
        "related": [
            {"path": r.location.path, "line": r.location.line, "message": r.message}
            for r in finding.related
        ],
        "details": dict(finding.details),
    }
    logger.log(
        _LEVELS.get(finding.severity, logging.WARNING),
        "%s",
        line(finding),
        extra={"sqla_doctor": record},
    )
