"""The HTML report of real runs shows hostile source and SQL as text in a real browser.

Both reports come from the real CLI in a subprocess: ``sqla-doctor check`` on a file whose
flagged line carries script payloads (the code excerpt), and ``sqla-doctor run`` on a
program whose statements carry them in a quoted identifier (the statements table, which
no redaction touches) and in the source lines its findings point at. Chromium loads each
page; no payload may run, and each must be readable as the text it is.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from report.browser import chromium  # tests/report/browser.py (tests/ is on sys.path)

from .test_parameters_never_leak import sqla_doctor_cli

# Each sets its own flag, so a failure says which one ran.
PAYLOADS = (
    '<img src=x onerror="window.__xss_img=1">',
    "<script>window.__xss_script=1</script>",
    "</pre><svg onload=window.__xss_svg=1>",
    '"><iframe srcdoc="<script>parent.__xss_frame=1</script>">',
)
FLAGS = ("__xss_img", "__xss_script", "__xss_svg", "__xss_frame")

MODELS = f"""\
import sqlalchemy as sa

metadata = sa.MetaData()
table = sa.Table(
    "t",
    metadata,
    sa.Column("tags", sa.JSON, default=[]),  # {PAYLOADS[0]} {PAYLOADS[1]}
)  # {PAYLOADS[2]} {PAYLOADS[3]}
"""

PROGRAM = f"""\
from sqlalchemy import create_engine, text

engine = create_engine("sqlite://")
with engine.connect() as connection:
    for _ in range(6):
        connection.execute(text('SELECT 1 AS "{PAYLOADS[1]}"')).all()  # {PAYLOADS[0]}
        # {PAYLOADS[2]} {PAYLOADS[3]}
"""


def cli(cwd: Path, *args: str, ok: tuple[int, ...] = (0, 1)) -> None:
    proc = subprocess.run(
        [*sqla_doctor_cli(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert proc.returncode in ok, proc.stderr


def test_hostile_source_and_sql_are_shown_as_text_in_a_real_browser(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    (tmp_path / "models.py").write_text(MODELS, encoding="utf-8")
    (tmp_path / "program.py").write_text(PROGRAM, encoding="utf-8")
    cli(tmp_path, "check", "--no-cache", "--format", "html", "-o", "check.html", "models.py")
    cli(
        tmp_path,
        "run",
        "--format",
        "html",
        "-o",
        "run.html",
        "--",
        sys.executable,
        "program.py",
        ok=(0,),
    )
    pages = {name: tmp_path / f"{name}.html" for name in ("check", "run")}
    for page in pages.values():
        source = page.read_text(encoding="utf-8")
        for payload in PAYLOADS:
            assert payload not in source  # escaped before the browser ever sees it

    with chromium() as browser:
        for name, page in pages.items():
            browser.get(page.as_uri())
            ran = browser.execute_script(
                "return arguments[0].filter(function (f) { return window[f] !== undefined; })",
                list(FLAGS),
            )
            assert ran == [], f"{name}: payload ran"
            assert browser.find_elements(By.CSS_SELECTOR, "main img, main svg, main iframe") == []
            text = browser.find_element(By.TAG_NAME, "body").text
            shown = {
                "check": PAYLOADS,  # all four in the excerpt around the flagged line
                "run": PAYLOADS,  # the SQL in the statements table, the comments in excerpts
            }[name]
            for payload in shown:
                assert payload in text, f"{name}: {payload!r} not shown as text"
            assert "SQD501" in text if name == "check" else "SQD252" in text
