"""Every output format, from one set of findings (static and runtime, with fixes and related)."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from sqla_doctor.findings import (
    Applicability,
    Edit,
    Finding,
    Fix,
    Kind,
    Location,
    Related,
    Severity,
)
from sqla_doctor.report import FORMATS, ReportContext, render
from sqla_doctor.static.files import display_path

from .sarif_schema import sarif_schema

FINDINGS = [
    Finding(
        code="SQD501",
        name="mutable-column-default",
        message="mutable `default=[]` is shared by every row of this column",
        location=Location("app/models.py", 12, 40, 12, 50),
        severity=Severity.ERROR,
        pitfalls=("P11",),
        fix_hint="use `default=lambda: []`",
        fix=Fix(
            "wrap the default in a lambda",
            (Edit(12, 47, 12, 49, "lambda: []"),),
            Applicability.SAFE,
        ),
    ),
    Finding(
        code="SQD901",
        name="unparsable-file",
        message='cannot parse file: invalid syntax, with a 100% <odd> "message",\nover two lines',
        location=Location("app/broken.py", 3, 1),
        severity=Severity.ERROR,
    ),
    Finding(
        code="SQD902",
        name="unused-noqa",
        message="unused `noqa` for SQD501",
        location=Location("app/views.py", 7, 20),
        severity=Severity.INFO,
        kind=Kind.STATIC,
        related=(Related(Location("app/views.py", 3, 1), "the query that loaded the parents"),),
    ),
]
CONTEXT = ReportContext(files=3, tool_version="0.1.0", root="/project")


def test_text_lists_each_finding_and_a_summary() -> None:
    text = render("text", FINDINGS, CONTEXT)
    assert "app/models.py:12:40: SQD501 [*] mutable `default=[]`" in text
    assert "  --> app/views.py:3:1: the query that loaded the parents" in text
    assert text.rstrip().splitlines()[-1].startswith("Found 3 findings in 3 files. 1 fixable")


def test_the_summary_tells_files_with_findings_from_files_checked() -> None:
    """"in 3 files" read both ways when 3 of 12 checked files had them."""
    text = render("text", FINDINGS, replace(CONTEXT, files=12))
    assert text.rstrip().splitlines()[-1].startswith("Found 3 findings in 3 files (12 checked).")


def test_json_is_valid_against_the_published_schema() -> None:
    schema = json.loads(
        resources.files("sqla_doctor.report").joinpath("findings.schema.json").read_text()
    )
    document = json.loads(render("json", FINDINGS, CONTEXT))
    jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    assert document["summary"]["by_code"] == {"SQD501": 1, "SQD901": 1, "SQD902": 1}
    assert document["findings"][1]["fix"]["edits"][0] == {
        "start": {"line": 12, "col": 48},
        "end": {"line": 12, "col": 50},
        "replacement": "lambda: []",
    }


def test_sarif_is_valid_sarif_2_1_0() -> None:
    document = json.loads(render("sarif", FINDINGS, CONTEXT))
    jsonschema.validate(document, sarif_schema(), cls=jsonschema.Draft4Validator)
    run = document["runs"][0]
    rules = {rule["id"]: rule for rule in run["tool"]["driver"]["rules"]}
    assert rules["SQD501"]["fullDescription"]["text"].startswith("Checks for a list")
    assert rules["SQD501"]["helpUri"].endswith("/docs/rules/SQD501.md")
    assert run["results"][1]["fixes"][0]["artifactChanges"][0]["replacements"][0][
        "insertedContent"
    ] == {"text": "lambda: []"}
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == "file:///project/"
    assert all(r["ruleIndex"] == list(rules).index(r["ruleId"]) for r in run["results"])


def test_sarif_locations_below_and_outside_the_root() -> None:
    # A runtime finding in a script run from outside the project (`run -- python ../x.py`).
    outside = Finding(
        code="SQD251",
        name="n-plus-one-lazy-load",
        message="User.posts lazy-loaded 4×",
        location=Location("/elsewhere/my scripts/job.py", 7, 1),
        severity=Severity.WARNING,
        kind=Kind.RUNTIME,
    )
    document = json.loads(render("sarif", [FINDINGS[1], outside], CONTEXT))
    jsonschema.validate(document, sarif_schema(), cls=jsonschema.Draft4Validator)
    artifacts = {
        result["ruleId"]: result["locations"][0]["physicalLocation"]["artifactLocation"]
        for result in document["runs"][0]["results"]
    }
    assert artifacts["SQD901"] == {"uri": "app/broken.py", "uriBaseId": "%SRCROOT%"}
    assert artifacts["SQD251"] == {"uri": "file:///elsewhere/my%20scripts/job.py"}


def test_paths_outside_the_root_are_shown_whole_and_normalised(tmp_path: Path) -> None:
    root = tmp_path / "project"
    script = tmp_path / "job.py"
    root.mkdir()
    script.write_text("")
    assert display_path(root / ".." / "job.py", root) == script.as_posix()
    assert display_path(root / "app.py", root) == "app.py"


def test_sarif_of_no_findings_is_valid() -> None:
    jsonschema.validate(
        json.loads(render("sarif", [], CONTEXT)), sarif_schema(), cls=jsonschema.Draft4Validator
    )


def test_github_annotations_escape_data_and_properties() -> None:
    lines = render("github", FINDINGS, CONTEXT).splitlines()  # sorted by path
    assert lines[1] == (
        "::error file=app/models.py,line=12,col=40,endLine=12,endColumn=50,"
        "title=SQD501 mutable-column-default::mutable `default=[]` is shared by every row of this "
        "column%0AFix: use `default=lambda: []`"
    )
    assert "100%25 <odd>" in lines[0]
    assert "%0Aover two lines" in lines[0]
    assert lines[2].startswith("::notice file=app/views.py,line=7,col=20,")


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "html"])
def test_every_format_renders_no_findings(fmt: str) -> None:
    assert isinstance(render(fmt, [], CONTEXT), str)


def test_check_sarif_output_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers import run_cli, write_tree

    write_tree(
        tmp_path, {"app.py": "import sqlalchemy as sa\nx = sa.Column(sa.JSON, default=[])\n"}
    )
    out = tmp_path / "report.sarif"
    result = run_cli(capsys, "check", "--format", "sarif", "-o", str(out), str(tmp_path))
    assert result.code == 1
    document = json.loads(out.read_text())
    jsonschema.validate(document, sarif_schema(), cls=jsonschema.Draft4Validator)
    assert (
        document["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"][
            "uri"
        ]
        == "app.py"
    )
