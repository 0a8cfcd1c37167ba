"""Adopt sqla-doctor on legacy code: record today's findings, report only new ones.

Findings are keyed by code, file and message with line numbers removed, so moving code
around does not resurrect recorded findings; a recorded finding absorbs at most as many
current findings as were recorded.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from sqla_doctor.findings import Finding

BASELINE_VERSION = 1
_LINE_NUMBERS = re.compile(r"(\bline |:)\d+")


class BaselineError(Exception):
    """The baseline file cannot be used."""


def key(finding: Finding) -> str:
    message = _LINE_NUMBERS.sub(r"\1N", finding.message)
    return f"{finding.code}::{finding.location.path}::{message}"


def write_baseline(path: Path, findings: Iterable[Finding]) -> None:
    counts = Counter(key(f) for f in findings)
    document = {
        "version": BASELINE_VERSION,
        "tool": "sqla-doctor",
        "findings": [{"key": k, "count": n} for k, n in sorted(counts.items())],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def read_baseline(path: Path) -> Counter[str]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise BaselineError(f"cannot read baseline {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise BaselineError(f"baseline {path} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("version") != BASELINE_VERSION:
        raise BaselineError(
            f"baseline {path} is not a sqla-doctor baseline (version {BASELINE_VERSION})"
        )
    counts: Counter[str] = Counter()
    for entry in document.get("findings", []):
        if isinstance(entry, dict) and isinstance(entry.get("key"), str):
            counts[entry["key"]] += int(entry.get("count", 1))
    return counts


def filter_new(path: Path, findings: Iterable[Finding]) -> list[Finding]:
    """The findings the baseline does not account for."""
    recorded = read_baseline(path)
    fresh: list[Finding] = []
    for finding in findings:
        k = key(finding)
        if recorded[k] > 0:
            recorded[k] -= 1
        else:
            fresh.append(finding)
    return fresh
