"""The cache and the worker processes change how fast a check runs, never what it finds."""

from __future__ import annotations

import ast
import os
import shutil
from pathlib import Path

import pytest

import sqla_doctor.static.engine as engine_module
from sqla_doctor.config import Config
from sqla_doctor.findings import Kind
from sqla_doctor.registry import registry
from sqla_doctor.static.engine import Engine, selected_codes

CODES = selected_codes(registry(), Config(), None, None, kinds=(Kind.STATIC, Kind.MIGRATION))
MUTABLE = (
    "import sqlalchemy as sa\n"
    "tags = sa.Column(sa.JSON, default=[])  # noqa: SQD501\n"
    "x = sa.Column(sa.JSON, default={})\n"
)


def _project(root: Path, count: int = 80) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        (root / f"mod{number}.py").write_text(MUTABLE if number % 3 == 0 else f"value = {number}\n")
    (root / "broken.py").write_text("def f(:\n")
    return root


def _run(root: Path, cache: Path | None = None, jobs: int = 1) -> list[tuple[str, int, str]]:
    result = Engine(Config(root=root), CODES, cache_dir=cache, jobs=jobs).check_paths([root])
    assert result.internal_errors == []
    return [(f.location.path, f.location.line, f.code) for f in result.findings]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts the files the engine parses."""
    seen: list[str] = []
    real = ast.parse

    def counting(
        source: str, filename: str = "<unknown>", *args: object, **kwargs: object
    ) -> ast.Module:
        seen.append(filename)
        return real(source, filename, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine_module.ast, "parse", counting)
    return seen


def test_warm_run_parses_nothing_and_finds_the_same(tmp_path: Path, parses: list[str]) -> None:
    root = _project(tmp_path / "p")
    cache = tmp_path / "cache"
    cold = _run(root, cache)
    assert len(parses) == 81
    parses.clear()
    warm = _run(root, cache)
    assert parses == []
    assert warm == cold
    assert ("mod0.py", 3, "SQD501") in warm
    assert ("broken.py", 1, "SQD901") in warm


def test_an_edit_reanalyses_what_it_must(tmp_path: Path, parses: list[str]) -> None:
    root = _project(tmp_path / "p")
    cache = tmp_path / "cache"
    _run(root, cache)
    parses.clear()
    (root / "mod1.py").write_text(
        "import sqlalchemy as sa\nc = sa.Column(sa.JSON, default=set())\n"
    )
    findings = _run(root, cache)
    assert ("mod1.py", 2, "SQD501") in findings
    # The edited file is parsed; a change of facts invalidates other files' findings too.
    assert "mod1.py" in parses
    assert findings == _run(root, None)


def test_suppressions_from_the_cache_are_not_shared_between_runs(tmp_path: Path) -> None:
    """A cached noqa that was used once must not look used (or unused) forever."""
    root = _project(tmp_path / "p", count=3)
    cache = tmp_path / "cache"
    first = _run(root, cache)
    assert _run(root, cache) == first == _run(root, cache)
    assert not [f for f in first if f[2] == "SQD902"]


def test_corrupt_cache_is_a_cold_run(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", count=5)
    cache = tmp_path / "cache"
    expected = _run(root, cache)
    for pickle_file in cache.glob("*.pickle"):
        pickle_file.write_bytes(b"not a pickle")
    assert _run(root, cache) == expected


def test_unwritable_cache_does_not_fail_the_run(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", count=5)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert _run(root, blocker / "cache") == _run(root, None)


def test_worker_processes_find_the_same(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    assert _run(root, None, jobs=2) == _run(root, None, jobs=1)


def test_worker_processes_with_a_warm_cache(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    cache = tmp_path / "cache"
    cold = _run(root, cache, jobs=2)
    assert _run(root, cache, jobs=2) == cold == _run(root, None)
    shutil.rmtree(cache)


def test_a_run_that_learnt_nothing_leaves_the_cache_file_alone(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", count=10)
    cache = tmp_path / "cache"
    first = _run(root, cache)
    (written,) = cache.glob("*.pickle")

    def marked() -> bool:
        """Whether the file still has the old timestamp set below (never rewritten)."""
        return written.stat().st_mtime_ns == 10**9

    os.utime(written, ns=(10**9, 10**9))
    assert _run(root, cache) == first
    assert marked()  # nothing new: not written again
    (root / "mod1.py").write_text("value = 'changed'\n")
    _run(root, cache)
    assert not marked()
    os.utime(written, ns=(10**9, 10**9))
    (root / "mod2.py").unlink()
    _run(root, cache)
    assert not marked()  # a file gone is news too
