"""The integrations' public names: sorted, importable, and cheap to import."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MODULES = [
    "sqla_doctor.integrations",
    "sqla_doctor.integrations.asgi",
    "sqla_doctor.integrations.wsgi",
    "sqla_doctor.integrations.logging",
    "sqla_doctor.integrations.otel",
    "sqla_doctor.integrations.pytest_plugin",
    "sqla_doctor.integrations.pytest_fixtures",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__all__ == sorted(module.__all__)
    for attribute in module.__all__:
        assert hasattr(module, attribute), attribute


@pytest.mark.parametrize(
    "name",
    [
        "sqla_doctor.integrations",
        "sqla_doctor.integrations.logging",
        "sqla_doctor.integrations.pytest_plugin",
    ],
)
def test_importing_does_not_import_sqlalchemy(name: str) -> None:
    code = f"import sys, {name}; print('sqlalchemy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
