"""The one vocabulary shared by the static analyzer, the runtime doctor and every reporter."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Severity(str, enum.Enum):
    """How bad a finding is; ordered so that ``max()`` and comparisons work."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


class Applicability(str, enum.Enum):
    """Whether a rule's fix may be applied without a human reading it."""

    NONE = "none"
    SAFE = "safe"
    UNSAFE = "unsafe"


class Kind(str, enum.Enum):
    """Where a finding comes from."""

    STATIC = "static"
    RUNTIME = "runtime"
    MIGRATION = "migration"


@dataclass(frozen=True, order=True)
class Location:
    """A place in a file: 1-based line, 1-based column (in characters)."""

    path: str
    line: int = 1
    col: int = 1
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Related:
    """Another place that explains a finding (the query that loaded the parents, ...)."""

    location: Location
    message: str


@dataclass(frozen=True)
class Edit:
    """Replace the text between two positions (1-based line, 0-based character column)."""

    start_line: int
    start_col: int
    end_line: int
    end_col: int
    replacement: str


@dataclass(frozen=True)
class Fix:
    """A change that resolves a finding."""

    description: str
    edits: tuple[Edit, ...]
    applicability: Applicability = Applicability.SAFE


@dataclass(frozen=True)
class Finding:
    """One problem found by a static rule, a runtime detector or a migration check."""

    code: str
    name: str
    message: str
    location: Location
    severity: Severity = Severity.WARNING
    pitfalls: tuple[str, ...] = ()
    kind: Kind = Kind.STATIC
    fix_hint: str | None = None
    related: tuple[Related, ...] = ()
    fix: Fix | None = None
    # Runtime details (query counts, SQL shapes, call stacks); never bound parameter values
    # unless the user opted in.
    details: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.location.path, self.location.line, self.location.col, self.code)

    @property
    def occurrence_key(self) -> tuple[str, str, int, Any, Any]:
        """What repeats of one runtime finding share: counted together in a report.

        A detector that reports two kinds of finding under one code, subject and line
        (a pool that filled, then a checkout that timed out) tells them apart with the
        ``event`` detail.
        """
        details = self.details
        return (
            self.code,
            self.location.path,
            self.location.line,
            details.get("subject"),
            details.get("event"),
        )

    def fingerprint(self) -> str:
        """A key that survives unrelated edits: no line numbers (for baselines)."""
        return f"{self.code}::{self.location.path}::{self.message}"
