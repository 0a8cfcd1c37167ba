"""Suite-wide plugins: pytester for the pytest plugin, and the throwaway PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
if (Path(__file__).parent / "pgserver.py").exists():
    pytest_plugins.append("pgserver")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run the long variants")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="long variant: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
