"""The docs pages are generated from the rules' docstrings and must be current."""

from __future__ import annotations

from pathlib import Path

from sqla_doctor.docgen import pages
from sqla_doctor.registry import registry

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_generated_rule_docs_are_current() -> None:
    """Run `python -m sqla_doctor.docgen` after changing a rule's docstring."""
    stale = [
        relative
        for relative, content in pages().items()
        if not (DOCS / relative).is_file()
        or (DOCS / relative).read_text(encoding="utf-8") != content
    ]
    assert not stale, f"stale docs, run `python -m sqla_doctor.docgen`: {stale}"


def test_no_docs_for_removed_rules() -> None:
    """A page under docs/rules/ belongs to a registered rule."""
    codes = {check.code for check in registry()}
    orphans = [p.name for p in (DOCS / "rules").glob("SQD*.md") if p.stem not in codes]
    assert not orphans


def test_every_check_has_a_summary_and_an_example() -> None:
    """`explain`, SARIF and the rules table all need these sections."""
    for check in registry():
        doc = check.doc()
        assert doc.summary(), check.code
        assert "```" in doc.sections["Example"], check.code
