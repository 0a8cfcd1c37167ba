"""Run a rule on its own examples (public, so that users can test rules of their own)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqla_doctor.config import Config
from sqla_doctor.findings import Finding
from sqla_doctor.registry import Check, dedent_source
from sqla_doctor.static.engine import Engine
from sqla_doctor.static.fixes import apply_fixes
from sqla_doctor.static.rule import Invalid, ProjectRule, Rule, Valid


@dataclass(frozen=True)
class ExampleRun:
    findings: list[Finding]
    source: str
    fixed: str


def run_example(check: type[Check], case: Valid | Invalid, unsafe: bool = True) -> ExampleRun:
    """Write the example (and its sibling files) to a temporary project and check it."""
    with tempfile.TemporaryDirectory(prefix="sqla-doctor-example-") as tmp:
        root = Path(tmp)
        files = {case.path: case.code, **case.files}
        for relative, text in files.items():
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(dedent_source(text), encoding="utf-8")
        config = Config(root=root)
        engine = Engine(config, selected={check.code})
        result = engine.check_paths([root])
        if result.internal_errors:
            raise AssertionError("; ".join(result.internal_errors))
        source = dedent_source(case.code)
        mine = [f for f in result.findings if f.location.path == case.path]
        fixes = [
            f.fix
            for f in mine
            if f.fix is not None and (unsafe or f.fix.applicability.value == "safe")
        ]
        fixed, _ = apply_fixes(source, fixes)
        return ExampleRun(findings=result.findings, source=source, fixed=fixed)


def example_cases(check: type[Check]) -> Iterator[tuple[str, Valid | Invalid]]:
    """(test id, case) pairs: ``SQD301-VALID-0``, ``SQD301-INVALID-2`` …"""
    if not issubclass(check, (Rule, ProjectRule)):
        return
    for number, valid in enumerate(check.VALID):
        yield f"{check.code}-VALID-{number}", valid
    for number, invalid in enumerate(check.INVALID):
        yield f"{check.code}-INVALID-{number}", invalid


def assert_example(check: type[Check], case: Valid | Invalid) -> None:
    """The rule is silent on a Valid case; on an Invalid one it fires as described."""
    run = run_example(check, case)
    own = [f for f in run.findings if f.code == check.code]
    if isinstance(case, Valid):
        assert not own, f"{check.code} fired on a VALID example:\n" + "\n".join(
            f"  {f.location}: {f.message}" for f in own
        )
        return
    assert own, f"{check.code} did not fire on an INVALID example:\n{run.source}"
    if case.count is not None:
        assert len(own) == case.count, f"expected {case.count} findings, got {len(own)}: {own}"
    first = min(own, key=lambda f: f.sort_key)
    if case.line is not None:
        assert first.location.line == case.line, f"expected line {case.line}, got {first.location}"
    if case.expected_message is not None:
        messages = [f.message for f in own]
        assert case.expected_message in messages, (
            f"expected {case.expected_message!r} in {messages}"
        )
    if case.expected_fix is not None:
        assert run.fixed == dedent_source(case.expected_fix), (
            f"fix differs:\n--- got\n{run.fixed}\n--- expected\n{dedent_source(case.expected_fix)}"
        )
