"""A versioned JSON document; its schema is ``findings.schema.json`` beside this module.

Version 1. Additive changes (new keys) keep the version; removing or changing a key bumps it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqla_doctor.findings import Finding, Fix, Location
from sqla_doctor.report import ReportContext

SCHEMA_VERSION = 1


def location_dict(location: Location) -> dict[str, Any]:
    return {
        "path": location.path,
        "line": location.line,
        "col": location.col,
        "end_line": location.end_line,
        "end_col": location.end_col,
    }


def fix_dict(fix: Fix) -> dict[str, Any]:
    return {
        "description": fix.description,
        "applicability": fix.applicability.value,
        "edits": [
            {
                "start": {"line": e.start_line, "col": e.start_col + 1},
                "end": {"line": e.end_line, "col": e.end_col + 1},
                "replacement": e.replacement,
            }
            for e in fix.edits
        ],
    }


def finding_dict(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code,
        "name": finding.name,
        "pitfalls": list(finding.pitfalls),
        "kind": finding.kind.value,
        "severity": finding.severity.value,
        "message": finding.message,
        "location": location_dict(finding.location),
        "related": [
            {"location": location_dict(r.location), "message": r.message} for r in finding.related
        ],
        "fix_hint": finding.fix_hint,
        "fix": fix_dict(finding.fix) if finding.fix is not None else None,
        "details": dict(finding.details),
        "fingerprint": finding.fingerprint(),
    }


def document(findings: Sequence[Finding], context: ReportContext) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "sqla-doctor", "version": context.tool_version},
        "command": context.command,
        "summary": {
            "findings": len(findings),
            "files": context.files,
            "by_code": dict(sorted(Counter(f.code for f in findings).items())),
            "by_severity": dict(sorted(Counter(f.severity.value for f in findings).items())),
            **({"queries": context.query_count} if context.query_count is not None else {}),
        },
        "findings": [finding_dict(f) for f in findings],
    }


def render(findings: Sequence[Finding], context: ReportContext) -> str:
    return json.dumps(document(findings, context), indent=2, default=str) + "\n"
