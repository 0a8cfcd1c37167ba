"""Realistic multi-file projects: every `# expect: SQDxxx` line fires, nothing else does,
and each project's fixed twin is silent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sqla_doctor.config import Config
from sqla_doctor.static.engine import Engine

FIXTURES = Path(__file__).parent / "fixtures" / "issue3"
PROJECTS = ("fastapi_async", "flask_app", "sqlmodel_app", "sync_service")
# The rules of issue 3: whole-project analysis of SQLAlchemy code.
CODES = {
    "SQD102",
    "SQD103",
    "SQD104",
    "SQD105",
    "SQD106",
    "SQD107",
    "SQD108",
    "SQD201",
    "SQD202",
    "SQD203",
    "SQD204",
    "SQD304",
    "SQD305",
    "SQD306",
    "SQD404",
    "SQD502",
    "SQD503",
    "SQD504",
}
EXPECT = re.compile(r"#\s*expect:\s*([A-Z0-9, ]+)")


def _expected(root: Path) -> set[tuple[str, int, str]]:
    found: set[tuple[str, int, str]] = set()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            match = EXPECT.search(line)
            if match:
                for code in match.group(1).replace(" ", "").split(","):
                    if code:
                        found.add((relative, number, code))
    return found


def _found(root: Path) -> set[tuple[str, int, str]]:
    engine = Engine(Config(root=root), selected=set(CODES))
    result = engine.check_paths([root])
    assert not result.internal_errors, result.internal_errors
    return {(f.location.path, f.location.line, f.code) for f in result.findings if f.code in CODES}


@pytest.mark.parametrize("project", PROJECTS)
def test_issue3_project_fires_exactly_on_marked_lines(project: str) -> None:
    """Each marked line fires with its code, and no other line does."""
    root = FIXTURES / project
    expected = _expected(root)
    assert expected, f"{project} has no `# expect:` markers"
    found = _found(root)
    assert found == expected, (
        f"missing: {sorted(expected - found)}\nunexpected: {sorted(found - expected)}"
    )


@pytest.mark.parametrize("project", PROJECTS)
def test_issue3_fixed_twin_is_silent(project: str) -> None:
    """The same project with every pitfall fixed produces no finding."""
    root = FIXTURES / f"{project}_fixed"
    assert not _expected(root), f"{project}_fixed must not carry `# expect:` markers"
    assert _found(root) == set()
