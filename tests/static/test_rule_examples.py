"""Every static rule's VALID and INVALID examples run as tests (ids like SQD501-INVALID-0)."""

from __future__ import annotations

import pytest

from sqla_doctor.registry import registry
from sqla_doctor.static.rule import Invalid, Valid
from sqla_doctor.static.testing import assert_example, example_cases

CASES = [(check, case_id, case) for check in registry() for case_id, case in example_cases(check)]


@pytest.mark.parametrize(("check", "case_id", "case"), CASES, ids=[c[1] for c in CASES])
def test_rule_example(check: type, case_id: str, case: Valid | Invalid) -> None:
    """A rule stays silent on its VALID examples and fires (with its fix) on INVALID ones."""
    assert_example(check, case)


def test_every_static_rule_has_both_kinds_of_example() -> None:
    """A rule without near misses cannot prove its precision, nor one without hits its recall."""
    for check in registry():
        if not hasattr(check, "VALID") or check.code.startswith("SQD9"):
            continue
        assert check.VALID, f"{check.code} has no VALID example"
        assert check.INVALID, f"{check.code} has no INVALID example"


def test_fixable_rules_prove_their_fix() -> None:
    """A rule that offers a fix has an INVALID example with the expected result (Fixit)."""
    for check in registry():
        if check.fix.value != "none" and hasattr(check, "INVALID"):
            assert any(case.expected_fix for case in check.INVALID), check.code
