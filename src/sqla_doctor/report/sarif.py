"""SARIF 2.1.0 for GitHub code scanning; rule metadata comes from each rule's docstring."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from sqla_doctor.findings import Finding, Location, Severity
from sqla_doctor.registry import DOCS_BASE_URL, Check, find_check
from sqla_doctor.report import ReportContext

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
# GitHub sorts alerts by this (0.0 to 10.0); our severities map onto its bands.
_SECURITY_SEVERITY = {Severity.ERROR: "7.0", Severity.WARNING: "4.0", Severity.INFO: "1.0"}


def _region(location: Location) -> dict[str, int]:
    region = {"startLine": location.line, "startColumn": location.col}
    if location.end_line is not None:
        region["endLine"] = location.end_line
    if location.end_col is not None:
        region["endColumn"] = location.end_col
    return region


def _artifact(path: str) -> dict[str, Any]:
    """A path below the root is relative to %SRCROOT%; one outside it is a file URI."""
    if PurePosixPath(path).is_absolute():
        return {"uri": PurePosixPath(path).as_uri()}
    return {"uri": quote(path), "uriBaseId": "%SRCROOT%"}


def _physical(location: Location) -> dict[str, Any]:
    return {
        "physicalLocation": {
            "artifactLocation": _artifact(location.path),
            "region": _region(location),
        }
    }


def _rule_descriptor(check: type[Check]) -> dict[str, Any]:
    doc = check.doc()
    page = doc.markdown(check)
    return {
        "id": check.code,
        "name": check.name,
        "shortDescription": {"text": doc.summary() or check.name},
        "fullDescription": {"text": doc.sections.get("What it does", check.name)},
        "help": {"text": doc.sections.get("Why is this bad?", ""), "markdown": page},
        "helpUri": f"{DOCS_BASE_URL}/{check.code}.md",
        "defaultConfiguration": {"level": _LEVEL[check.severity]},
        "properties": {
            "tags": ["sqlalchemy", check.kind.value, *check.pitfalls],
            "precision": "high",
            **({"security-severity": "8.0"} if "P28" in check.pitfalls else {}),
        },
    }


def _adhoc_descriptor(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.code,
        "name": finding.name,
        "shortDescription": {"text": finding.name},
        "defaultConfiguration": {"level": _LEVEL[finding.severity]},
    }


def _result(finding: Finding, rule_index: int) -> dict[str, Any]:
    message = finding.message + (f" Fix: {finding.fix_hint}" if finding.fix_hint else "")
    result: dict[str, Any] = {
        "ruleId": finding.code,
        "ruleIndex": rule_index,
        "level": _LEVEL[finding.severity],
        "message": {"text": message},
        "locations": [_physical(finding.location)],
        "partialFingerprints": {
            "sqlaDoctor/v1": hashlib.sha256(finding.fingerprint().encode()).hexdigest()[:32]
        },
        "properties": {"security-severity": _SECURITY_SEVERITY[finding.severity]},
    }
    if finding.related:
        result["relatedLocations"] = [
            {"id": i, **_physical(r.location), "message": {"text": r.message}}
            for i, r in enumerate(finding.related)
        ]
    if finding.fix is not None:
        result["fixes"] = [
            {
                "description": {"text": finding.fix.description},
                "artifactChanges": [
                    {
                        "artifactLocation": _artifact(finding.location.path),
                        "replacements": [
                            {
                                "deletedRegion": {
                                    "startLine": e.start_line,
                                    "startColumn": e.start_col + 1,
                                    "endLine": e.end_line,
                                    "endColumn": e.end_col + 1,
                                },
                                "insertedContent": {"text": e.replacement},
                            }
                            for e in finding.fix.edits
                        ],
                    }
                ],
            }
        ]
    return result


def document(findings: Sequence[Finding], context: ReportContext) -> dict[str, Any]:
    descriptors: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for finding in findings:
        if finding.code in index:
            continue
        check = find_check(finding.code)
        index[finding.code] = len(descriptors)
        descriptors.append(_rule_descriptor(check) if check else _adhoc_descriptor(finding))
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "sqla-doctor",
                "version": context.tool_version,
                "semanticVersion": context.tool_version,
                "informationUri": "https://github.com/sqla-doctor/sqla-doctor",
                "rules": descriptors,
            }
        },
        "columnKind": "unicodeCodePoints",
        "results": [_result(f, index[f.code]) for f in findings],
    }
    if context.root:
        run["originalUriBaseIds"] = {"%SRCROOT%": {"uri": _directory_uri(context.root)}}
    # A run with errors (a missing path, an unreadable config) did not check everything.
    run["invocations"] = [{"executionSuccessful": context.errors == 0}]
    return {"$schema": SCHEMA, "version": "2.1.0", "runs": [run]}


def _directory_uri(root: str) -> str:
    from pathlib import Path

    uri = Path(root).resolve().as_uri()
    return uri if uri.endswith("/") else uri + "/"


def render(findings: Sequence[Finding], context: ReportContext) -> str:
    return json.dumps(document(findings, context), indent=2) + "\n"
