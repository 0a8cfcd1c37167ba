"""The HTML report: self-contained, escaped, and filterable in a real browser."""

from __future__ import annotations

import re
from pathlib import Path

from sqla_doctor.findings import Finding, Kind, Location, Related, Severity
from sqla_doctor.report import ReportContext, render

from .browser import chromium

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'


def _findings(root: Path) -> list[Finding]:
    (root / "app").mkdir()
    (root / "app" / "views.py").write_text(
        "def view(session):\n"
        f"    # {XSS}\n"
        "    rows = session.execute(text(f'SELECT * FROM t WHERE a = {a}'))\n"
        "    return rows\n"
    )
    return [
        Finding(
            code="SQD501",
            name="mutable-column-default",
            message=f"mutable default {XSS}",
            location=Location("app/views.py", 3, 5, 3, 20),
            severity=Severity.ERROR,
            pitfalls=("P11",),
            fix_hint=f"use a lambda {XSS}",
        ),
        Finding(
            code="SQD902",
            name="unused-noqa",
            message="unused noqa",
            location=Location("app/views.py", 1, 1),
            severity=Severity.INFO,
        ),
        Finding(
            code="SQD902",
            name="unused-noqa",
            message="unused noqa again",
            location=Location("app/other.py", 9, 1),
            severity=Severity.INFO,
            kind=Kind.RUNTIME,
            related=(Related(Location("app/views.py", 2, 1), f"loaded here {XSS}"),),
        ),
    ]


def _context(root: Path) -> ReportContext:
    return ReportContext(
        files=2,
        tool_version="0.1.0",
        root=str(root),
        command="run",
        query_count=2,
        queries=(
            {
                "sql": f"SELECT * FROM users WHERE name = '{XSS}'",
                "count": 50,
                "duration_ms": 12.5,
                "callsite": "app/views.py:3",
            },
        ),
    )


def test_page_is_self_contained_and_escaped(tmp_path: Path) -> None:
    page = render("html", _findings(tmp_path), _context(tmp_path))
    assert XSS not in page
    assert "&lt;img src=x onerror=&quot;window.__xss=1&quot;&gt;" in page
    # No network assets (links to the rule docs are fine: nothing loads them).
    assert not re.search(r"""src=["']?(https?:)?//""", page)
    assert "<link" not in page
    assert "url(" not in page
    assert "@import" not in page
    assert "rows = session.execute" in page  # the code excerpt
    assert "SELECT * FROM users WHERE name" in page  # the statements table


def test_filters_work_in_a_real_browser(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page = tmp_path / "report.html"
    page.write_text(render("html", _findings(tmp_path), _context(tmp_path)), encoding="utf-8")
    with chromium() as browser:
        browser.get(page.as_uri())
        browser.save_screenshot(str(tmp_path / "report.png"))
        assert browser.execute_script("return window.__xss === undefined")
        shown = browser.find_element(By.ID, "shown")
        assert shown.text == "3"
        Select(browser.find_element(By.ID, "filter-severity")).select_by_value("info")
        assert shown.text == "2"
        visible = [
            e for e in browser.find_elements(By.CSS_SELECTOR, ".finding") if e.is_displayed()
        ]
        assert {e.get_attribute("data-code") for e in visible} == {"SQD902"}
        Select(browser.find_element(By.ID, "filter-rule")).select_by_value("SQD501")
        assert shown.text == "0"
        assert not [
            s for s in browser.find_elements(By.CSS_SELECTOR, "section.rule") if s.is_displayed()
        ]
        Select(browser.find_element(By.ID, "filter-severity")).select_by_value("")
        assert shown.text == "1"
        headings = [
            h.text for h in browser.find_elements(By.CSS_SELECTOR, "h3.file") if h.is_displayed()
        ]
        assert headings == ["app/views.py"]
        assert browser.execute_script("return window.__xss === undefined")
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_demo_writes_a_report_with_runtime_statements_and_timings(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from sqla_doctor.demo import main as demo

    page = tmp_path / "demo.html"
    assert demo("html", page) == 0
    with chromium() as browser:
        browser.get(page.as_uri())
        rows = browser.find_elements(By.CSS_SELECTOR, "table.queries tbody tr")
        assert rows, "the runtime statements table is missing"
        cells = [row.find_elements(By.TAG_NAME, "td") for row in rows]
        assert any("FROM books" in c[0].text for c in cells)
        assert all(re.fullmatch(r"\d+", c[1].text) for c in cells)
        assert all(re.fullmatch(r"\d+\.\d\d ms", c[2].text) for c in cells)
        codes = {
            e.get_attribute("data-code")
            for e in browser.find_elements(By.CSS_SELECTOR, "section.rule")
        }
        assert {"SQD251", "SQD351"} <= codes  # runtime findings next to the static ones
        assert "SQD501" in codes
