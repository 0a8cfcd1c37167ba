"""A realistic project: every line marked `# expect: CODE` is reported, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from sqla_doctor.config import Config
from sqla_doctor.static.engine import Engine

FIXTURE = Path(__file__).parent / "fixtures" / "issue2_app"
CODES = frozenset({"SQD101", "SQD301", "SQD302", "SQD303", "SQD401", "SQD402", "SQD403"})
MARKER = re.compile(r"#\s*expect:\s*(SQD\d{3}(?:\s*,\s*SQD\d{3})*)\s*$")


def expected_markers(root: Path) -> set[tuple[str, int, str]]:
    found: set[tuple[str, int, str]] = set()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            match = MARKER.search(line)
            if match:
                for code in match.group(1).split(","):
                    found.add((relative, number, code.strip()))
    return found


def test_issue2_fixture_reports_exactly_the_marked_lines() -> None:
    expected = expected_markers(FIXTURE)
    assert {code for _, _, code in expected} == CODES, "every rule has a marked line"

    result = Engine(Config(root=FIXTURE), selected=set(CODES)).check_paths([FIXTURE])

    assert not result.internal_errors
    reported = {(f.location.path, f.location.line, f.code) for f in result.findings}
    missing = sorted(expected - reported)
    unexpected = sorted(reported - expected)
    assert not missing, f"marked lines not reported: {missing}"
    assert not unexpected, "unmarked lines reported:\n" + "\n".join(
        f"{f.location}: {f.code} {f.message}"
        for f in result.findings
        if (f.location.path, f.location.line, f.code) in set(unexpected)
    )


def test_issue2_fixture_fixes_apply_cleanly() -> None:
    """Every fix offered on the fixture leaves a file that still parses."""
    import ast

    from sqla_doctor.static.fixes import apply_fixes

    result = Engine(Config(root=FIXTURE), selected=set(CODES)).check_paths([FIXTURE])
    by_path: dict[str, list] = {}
    for finding in result.findings:
        if finding.fix is not None:
            by_path.setdefault(finding.location.path, []).append(finding.fix)
    assert by_path, "the fixture has fixable findings"
    for path, fixes in by_path.items():
        source = (FIXTURE / path).read_text(encoding="utf-8")
        fixed, applied = apply_fixes(source, fixes)
        assert applied == len(fixes), path
        ast.parse(fixed, filename=path)
