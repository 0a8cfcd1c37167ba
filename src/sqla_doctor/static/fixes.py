"""Apply a set of fixes to a source text: non-overlapping edits, applied back to front."""

from __future__ import annotations

from collections.abc import Iterable

from sqla_doctor.findings import Applicability, Edit, Fix


def _offsets(source: str) -> list[int]:
    starts = [0]
    for index, char in enumerate(source):
        if char == "\n":
            starts.append(index + 1)
    return starts


def _absolute(starts: list[int], line: int, col: int) -> int:
    line = min(max(line, 1), len(starts))
    return starts[line - 1] + col


def applicable(fix: Fix | None, unsafe: bool) -> bool:
    if fix is None:
        return False
    if fix.applicability is Applicability.SAFE:
        return True
    return unsafe and fix.applicability is Applicability.UNSAFE


def apply_fixes(source: str, fixes: Iterable[Fix]) -> tuple[str, int]:
    """The fixed source and how many fixes were applied; a fix that overlaps an earlier
    one is skipped whole (the next run picks it up)."""
    starts = _offsets(source)
    chosen: list[tuple[int, int, Edit]] = []
    taken: list[tuple[int, int]] = []
    applied = 0
    for fix in fixes:
        spans = [
            (
                _absolute(starts, e.start_line, e.start_col),
                _absolute(starts, e.end_line, e.end_col),
                e,
            )
            for e in fix.edits
        ]
        if any(a < end and start < b for a, b, _ in spans for start, end in taken):
            continue
        if any(a == b == start == end for a, b, _ in spans for start, end in taken):
            continue
        taken.extend((a, b) for a, b, _ in spans)
        chosen.extend(spans)
        applied += 1
    for start, end, edit in sorted(chosen, key=lambda item: (item[0], item[1]), reverse=True):
        source = source[:start] + edit.replacement + source[end:]
    return source, applied
