"""Each integration's docs page has an example that runs, and prints what the page shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integrations"
PAGES = ("pytest", "asgi", "wsgi", "logging", "otel", "html")


def example(page: str) -> tuple[str, str, list[str]]:
    """The page's first Python block, the file it is saved as, and the output it shows."""
    text = (DOCS / f"{page}.md").read_text(encoding="utf-8")
    source = re.search(r"```python\n(.*?)```", text, re.S)
    name = re.search(r"Save as `([\w.]+)`", text)
    assert source is not None, f"{page}.md has no Python example"
    assert name is not None, f"{page}.md does not say where to save its example"
    shown = re.search(r"(?:It prints|the watched tests found)[^\n]*\n\n```\n(.*?)```", text, re.S)
    lines = shown.group(1).splitlines() if shown else []
    return source.group(1), name.group(1), lines


def test_every_integration_has_a_page() -> None:
    assert sorted(p.stem for p in DOCS.glob("*.md")) == sorted(PAGES)


@pytest.mark.parametrize("page", ["asgi", "wsgi", "logging", "otel"])
def test_the_example_runs_and_prints_what_the_page_shows(page: str, tmp_path: Path) -> None:
    pytest.importorskip(
        {"asgi": "fastapi", "wsgi": "flask", "otel": "opentelemetry.sdk"}.get(page, "sqlalchemy")
    )
    source, name, shown = example(page)
    (tmp_path / name).write_text(source, encoding="utf-8")

    result = subprocess.run(
        [sys.executable, name], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    output = (result.stdout + result.stderr).splitlines()
    for line in shown:
        assert line in output, f"{page}.md shows {line!r}; the example printed {output}"
    if page == "otel":
        assert '"name": "sqla_doctor.finding",' in result.stdout
        assert '"name": "sqla_doctor.pool.saturation",' in result.stdout


def test_the_pytest_example_fails_as_the_page_shows(pytester: pytest.Pytester) -> None:
    source, name, shown = example("pytest")
    pytester.makepyfile(**{Path(name).stem: source})
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")

    result = pytester.runpytest_subprocess("--sqla-doctor", "-v")

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([re.sub(r"([\[\]?*])", r"[\1]", line) for line in shown])


def test_the_html_pages_commands_write_a_self_contained_page(tmp_path: Path) -> None:
    text = (DOCS / "html.md").read_text(encoding="utf-8")
    assert "sqla-doctor demo --format html -o demo.html" in text
    result = subprocess.run(
        [sys.executable, "-m", "sqla_doctor", "demo", "--format", "html", "-o", "demo.html"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "demo.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<table class="queries">' in page
    assert "SQD251" in page
