"""Realistic Alembic projects: every line marked `# expect: CODE` is reported, nothing else.

- ``sync_shop``: the ``alembic init`` sync env.py, models split over packages re-exported
  from ``__init__`` files (one never imported), every locking operation next to its recipe;
- ``async_service``: the async template with ``[tool.alembic]`` in pyproject.toml, SQLModel
  models, and an env.py that runs migrations in ``engine.begin()``;
- ``multi_db``: the ``multidb`` template, two metadata objects, ``upgrade_<name>()``;
- ``two_heads``, ``broken_chain``: revision graphs that stop Alembic;
- ``clean``: a Flask-Migrate project whose migrations follow every recipe: no finding.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from sqla_doctor.config import Config
from sqla_doctor.findings import Finding, Kind
from sqla_doctor.registry import registry
from sqla_doctor.static.engine import Engine
from sqla_doctor.static.fixes import apply_fixes

FIXTURES = Path(__file__).parent / "fixtures"
PROJECTS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())
MARKER = re.compile(r"#\s*expect:\s*(SQD\d{3}(?:\s*,\s*SQD\d{3})*)\s*$")
CODES = {c.code for c in registry() if c.kind is Kind.MIGRATION}


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


def check(root: Path, **config: object) -> list[Finding]:
    result = Engine(Config(root=root, **config), CODES).check_paths([root])  # type: ignore[arg-type]
    assert not result.internal_errors, result.internal_errors
    return result.findings


@pytest.mark.parametrize("name", PROJECTS)
def test_fixture_reports_exactly_the_marked_lines(name: str) -> None:
    root = FIXTURES / name
    expected = expected_markers(root)
    findings = check(root)
    reported = {(f.location.path, f.location.line, f.code) for f in findings}
    missing = sorted(expected - reported)
    unexpected = [
        f"{f.location}: {f.code} {f.message}"
        for f in findings
        if (f.location.path, f.location.line, f.code) not in expected
    ]
    assert not missing, f"missing: {missing}"
    assert not unexpected, f"unexpected: {unexpected}"


def test_the_fixtures_cover_every_migration_check() -> None:
    marked = {code for name in PROJECTS for _, _, code in expected_markers(FIXTURES / name)}
    assert marked == CODES


def test_clean_fixture_has_no_marker_and_no_finding() -> None:
    assert not expected_markers(FIXTURES / "clean")
    assert check(FIXTURES / "clean") == []


def test_fixes_offered_on_the_fixtures_leave_valid_python() -> None:
    for name in PROJECTS:
        root = FIXTURES / name
        by_path: dict[str, list[Finding]] = {}
        for finding in check(root):
            if finding.fix is not None:
                by_path.setdefault(finding.location.path, []).append(finding)
        for path, findings in by_path.items():
            source = (root / path).read_text(encoding="utf-8")
            fixed, applied = apply_fixes(source, [f.fix for f in findings if f.fix is not None])
            assert applied == len(findings), path
            ast.parse(fixed, filename=path)


def test_since_lints_only_the_revisions_after_it() -> None:
    root = FIXTURES / "sync_shop"
    everything = {(f.location.path, f.code) for f in check(root)}
    after = {(f.location.path, f.code) for f in check(root, migrations_since="0006f")}
    assert {path for path, _ in after if "/versions/" in path} == {
        "migrations/versions/0007g_drop_legacy.py",
        "migrations/versions/0008h_book_slug.py",
        "migrations/versions/0009i_title_search.py",
        "migrations/versions/0010j_slug_required.py",
    }
    # env.py and the revision graph are checked whatever --since says.
    assert ("migrations/env.py", "SQD602") in after
    assert after < everything
