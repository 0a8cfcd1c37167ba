"""The analyzer survives anything: real packages, generated source, and hostile files.

Never a crash (no internal error), never a hang (a per-file time limit reports itself).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import hypothesmith
import pytest
from hypothesis import HealthCheck, given, settings

from sqla_doctor.config import Config
from sqla_doctor.findings import Kind
from sqla_doctor.registry import registry
from sqla_doctor.static.engine import Engine, Result, selected_codes

ALL_CODES = selected_codes(registry(), Config(), None, None, kinds=(Kind.STATIC, Kind.MIGRATION))


def check_tree(root: Path, timeout: float = 60.0) -> Result:
    config = Config(root=root, file_timeout=timeout)
    return Engine(config, ALL_CODES).check_paths([root])


def check_source(tmp_path: Path, source: str | bytes, name: str = "mod.py") -> Result:
    path = tmp_path / name
    if isinstance(source, bytes):
        path.write_bytes(source)
    else:
        path.write_text(source, encoding="utf-8")
    return check_tree(tmp_path)


def _package_dir(name: str) -> Path:
    module = __import__(name)
    return Path(module.__file__).resolve().parent  # type: ignore[arg-type]


@pytest.mark.parametrize("package", ["sqlalchemy", "alembic"])
def test_installed_package_is_analysed_without_internal_errors(package: str) -> None:
    """SQLAlchemy's and Alembic's own sources: every rule runs, none crashes."""
    result = check_tree(_package_dir(package))
    assert result.files > 50
    assert result.internal_errors == []
    assert not [f for f in result.findings if f.code == "SQD903"]


def test_every_installed_python_file(tmp_path: Path) -> None:
    """All of site-packages (the test environment's ~4,700 files, about 40 s): issue 3's
    "no crash and no hang on every .py file installed", checked on every run."""
    for entry in sys.path:
        if entry.endswith("site-packages") and Path(entry).is_dir():
            result = check_tree(Path(entry))
            assert result.internal_errors == []


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
@given(source=hypothesmith.from_grammar())
def test_generated_source_never_crashes(
    tmp_path_factory: pytest.TempPathFactory, source: str
) -> None:
    result = check_source(tmp_path_factory.mktemp("gen"), source)
    assert result.internal_errors == []


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much,
    ],
)
@given(source=hypothesmith.from_node())
def test_generated_valid_programs_never_crash(
    tmp_path_factory: pytest.TempPathFactory, source: str
) -> None:
    result = check_source(tmp_path_factory.mktemp("node"), source)
    assert result.internal_errors == []
    assert not [f for f in result.findings if f.code == "SQD901"]


def _real_sources(limit: int = 25) -> list[bytes]:
    files = sorted(_package_dir("sqlalchemy").rglob("*.py"))
    rng = random.Random(1234)
    return [p.read_bytes() for p in rng.sample(files, limit)]


def _mutations(data: bytes, rng: random.Random) -> list[bytes]:
    cut = rng.randrange(1, max(2, len(data)))
    noisy = bytearray(data)
    for _ in range(20):
        noisy[rng.randrange(len(noisy))] = rng.randrange(256)
    return [
        data[:cut],  # truncated mid-token
        bytes(noisy),  # random bytes
        data[:cut] + b"\x00" + data[cut:],  # a null byte
        data[:cut] + "é".encode("latin-1") + data[cut:],  # mixed encodings
        b"\xef\xbb\xbf" + data,  # a BOM
        b"# -*- coding: klingon -*-\n" + data,  # an unknown codec
        data.replace(b"\n", b"\r\n"),  # Windows line endings
        data.replace(b"    ", b"\t", 5),  # inconsistent tabs
    ]


def test_mutated_real_files_never_crash(tmp_path: Path) -> None:
    rng = random.Random(42)
    for number, data in enumerate(_real_sources()):
        for variant, mutated in enumerate(_mutations(data, rng)):
            (tmp_path / f"m{number}_{variant}.py").write_bytes(mutated)
    result = check_tree(tmp_path)
    assert result.internal_errors == []
    assert result.files == 25 * 8


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("x = " + "(" * 1000 + "1" + ")" * 1000 + "\n", id="1000-deep-parentheses"),
        pytest.param("x = " + "[" * 1000 + "]" * 1000 + "\n", id="1000-deep-lists"),
        pytest.param(
            "".join("    " * i + "if x:\n" for i in range(1000)) + "    " * 1000 + "pass\n",
            id="1000-deep-blocks",
        ),
        pytest.param("x = a" + ".b" * 20000 + "\n", id="20000-attribute-chain"),
        pytest.param("x = 1" + " + 1" * 50000 + "\n", id="50000-term-sum"),
        pytest.param("x = " + "not " * 5000 + "y\n", id="5000-nots"),
        pytest.param(
            "def f():\n"
            + "".join(f"    def g{i}():\n" + "        " * 1 + "pass\n" for i in range(3000)),
            id="wide-function",
        ),
        pytest.param("s = '''" + "x" * 100000 + "\n", id="unterminated-string"),
    ],
)
def test_pathological_shapes_never_crash(tmp_path: Path, source: str) -> None:
    result = check_source(tmp_path, source)
    assert result.internal_errors == []


def test_ten_megabyte_file(tmp_path: Path) -> None:
    """A 10 MB module of SQLAlchemy-looking code is analysed (or timed out), never crashes."""
    block = (
        "from sqlalchemy import text, select\n"
        "def handler_{n}(session, name):\n"
        "    rows = session.execute(text('SELECT 1 WHERE a = :a'), {{'a': name}}).all()\n"
        "    for row in rows:\n"
        "        print(row.id)\n"
    )
    chunks = []
    size = 0
    n = 0
    while size < 10 * 1024 * 1024:
        chunk = block.format(n=n)
        chunks.append(chunk)
        size += len(chunk)
        n += 1
    result = check_source(tmp_path, "".join(chunks))
    assert result.internal_errors == []


def test_time_limit_reports_itself(tmp_path: Path) -> None:
    """A file over the limit becomes an SQD903 finding; the run goes on."""
    source = "".join(f"def f{i}(session):\n    session.execute(x)\n" for i in range(30000))
    (tmp_path / "huge.py").write_text(source)
    (tmp_path / "small.py").write_text(
        "import sqlalchemy as sa\nc = sa.Column(sa.JSON, default=[])\n"
    )
    if not hasattr(os, "fork"):
        pytest.skip("the per-file alarm needs Unix signals")
    result = check_tree(tmp_path, timeout=0.01)
    codes = {(f.location.path, f.code) for f in result.findings}
    assert ("huge.py", "SQD903") in codes
    assert ("small.py", "SQD501") in codes
