"""Suite-wide plugins: pytester for the pytest plugin, and the throwaway PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

pytest_plugins = ["pytester"]
if (Path(__file__).parent / "pgserver.py").exists():
    pytest_plugins.append("pgserver")
