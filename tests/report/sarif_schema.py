"""Locate the official SARIF 2.1.0 JSON schema (shipped in Microsoft's jest-sarif npm package).

No network is assumed beyond the package registries: the schema is unpacked from the npm
tarball into a cache folder once. Under CI its absence is a failure, elsewhere a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

PACKAGE = "@microsoft/jest-sarif@1.0.0-beta.0"
MEMBER = "package/lib/schemas/sarif-2.1.0-rtm.5.json"
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "sarif-2.1.0-rtm.5.json"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"SARIF schema unavailable in CI: {reason}")
    pytest.skip(f"SARIF schema unavailable: {reason}")


def sarif_schema() -> dict[str, Any]:
    override = os.environ.get("SQLA_DOCTOR_SARIF_SCHEMA")
    path = Path(override) if override else CACHE
    if not path.is_file():
        npm = shutil.which("npm")
        if npm is None:
            _unavailable("npm is not installed")
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [npm, "pack", PACKAGE, "--silent"],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
                timeout=300,
            )
            tarballs = list(Path(tmp).glob("*.tgz"))
            if proc.returncode != 0 or not tarballs:
                _unavailable(f"npm pack failed: {proc.stderr.strip()[:200]}")
            with tarfile.open(tarballs[0]) as archive:
                handle = archive.extractfile(MEMBER)
                assert handle is not None
                data = handle.read()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return result
