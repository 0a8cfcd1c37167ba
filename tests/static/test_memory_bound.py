"""The analyzer's memory stays bounded however many hostile files it is given.

The corpus is real SQLAlchemy modules mutated the ways ``test_no_crash`` mutates them
(truncated, random bytes, a null byte, mixed and unknown encodings, a BOM, CRLF, tabs);
the big corpus is the small one and three times as much again. Each is checked in a
fresh process with ``tracemalloc`` on, which reports the peak of Python's allocations
during ``Engine.check_paths``: exact, not the allocator's or the OS's noise.

What may grow with the file count is the project index (each file's names, models and
functions) and the findings; what must not is the parsed trees, which the engine keeps
only up to a budget of source bytes and re-parses past it. The check: the peak grows by
less than ``MAX_BYTES_PER_SOURCE_BYTE`` per extra byte of source. Holding every tree
costs about 13 (measured); the index alone about 6 (measured: it was 4 before it
recorded each file's functions, import uses and Annotated column aliases), so the bound
sits between. The CI variant lowers the budget so that a few hundred small files exceed
it; the long one (``--run-slow``) keeps the engine's own budget and uses full-size
files. Both corpora must exceed the budget: a small one under it would count the budget
filling up as growth.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from test_no_crash import _mutations, _package_dir  # tests/static/ is on sys.path

MAX_BYTES_PER_SOURCE_BYTE = 8.0

CHILD = """
import json, sys, tracemalloc
from pathlib import Path

import sqla_doctor.static.engine as engine
from sqla_doctor.config import Config
from sqla_doctor.findings import Kind
from sqla_doctor.registry import registry

root, budget = Path(sys.argv[1]), int(sys.argv[2])
if budget:
    engine.TreeBudget.__init__.__defaults__ = (budget,)
codes = engine.selected_codes(registry(), Config(), None, None, (Kind.STATIC, Kind.MIGRATION))
checker = engine.Engine(Config(root=root), codes)
tracemalloc.start()
result = checker.check_paths([root])
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"peak": peak, "files": result.files, "errors": result.internal_errors}))
"""


def make_corpus(root: Path, count: int, max_size: int | None) -> int:
    """``count`` hostile files (the same first files for any count); their total size."""
    sources = sorted(_package_dir("sqlalchemy").rglob("*.py"))
    if max_size is not None:
        sources = [p for p in sources if p.stat().st_size <= max_size]
    rng = random.Random(20240808)
    root.mkdir()
    written = total = 0
    while written < count:
        for mutated in _mutations(rng.choice(sources).read_bytes(), rng):
            if written == count:
                break
            (root / f"hostile_{written:05}.py").write_bytes(mutated)
            written += 1
            total += len(mutated)
    return total


def peak_of(root: Path, budget: int) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(budget)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"] == []
    assert report["files"] == len(list(root.iterdir()))
    peak: int = report["peak"]
    return peak


def assert_flat(tmp_path: Path, small: int, big: int, max_size: int | None, budget: int) -> None:
    small_bytes = make_corpus(tmp_path / "small", small, max_size)
    big_bytes = make_corpus(tmp_path / "big", big, max_size)
    small_peak = peak_of(tmp_path / "small", budget)
    big_peak = peak_of(tmp_path / "big", budget)
    per_byte = (big_peak - small_peak) / (big_bytes - small_bytes)
    assert per_byte < MAX_BYTES_PER_SOURCE_BYTE, (
        f"{small} files ({small_bytes:,} B): peak {small_peak:,} B; "
        f"{big} files ({big_bytes:,} B): peak {big_peak:,} B; "
        f"{per_byte:.1f} B of peak per extra source byte"
    )


def test_memory_of_hostile_files_stays_within_the_tree_budget(tmp_path: Path) -> None:
    assert_flat(tmp_path, small=100, big=400, max_size=8_000, budget=64 * 1024)


@pytest.mark.slow
def test_memory_of_many_full_size_hostile_files(tmp_path: Path) -> None:
    # Both corpora hold more parseable source than the engine's budget (a third of the
    # hostile files parse; 800 files are just past 8 MB of it), so the trees kept are the
    # same on both sides and only what really grows with the file count is measured.
    assert_flat(tmp_path, small=1000, big=2000, max_size=None, budget=0)
