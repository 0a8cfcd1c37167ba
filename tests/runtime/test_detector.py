"""What detectors share for their messages."""

from __future__ import annotations

import pytest

from sqla_doctor.runtime.detector import a_or_an


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("Employee", "an Employee"),
        ("Order", "an Order"),
        ("Item", "an Item"),
        ("account", "an account"),
        ("oracle", "an oracle"),
        ("User", "a User"),
        ("Unit", "a Unit"),
        ("Usage", "a Usage"),
        ("Update", "an Update"),
        ("Upload", "an Upload"),
        ("Product", "a Product"),
        ("sqlite", "a sqlite"),
        ("", "a "),
    ],
)
def test_a_or_an_goes_by_the_first_letters(word: str, expected: str) -> None:
    assert a_or_an(word) == expected
