"""Where a marked line is, and what a unit of work found (as in tests/runtime)."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path

from sqla_doctor.findings import Finding

ROOT = Path(__file__).resolve().parents[2]


def line_of(marker: str) -> int:
    """The line of the calling test file that carries ``# line:<marker>``."""
    source_file = inspect.stack()[1].filename
    tag = f"# line:{marker}"
    for number, text in enumerate(Path(source_file).read_text().splitlines(), start=1):
        if text.rstrip().endswith(tag):
            return number
    raise AssertionError(f"no line ends with {tag!r} in {source_file}")


def here(source_file: str) -> str:
    return Path(source_file).resolve().relative_to(ROOT).as_posix()


def of_code(findings: Iterable[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def one(findings: Iterable[Finding], code: str) -> Finding:
    findings = list(findings)
    matching = of_code(findings, code)
    found = [f"{f.location} {f.code} {f.message}" for f in findings]
    assert len(matching) == 1, f"expected one {code}, got {found}"
    return matching[0]
