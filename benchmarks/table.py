"""One table, one run: sqla-doctor's cost beside the floor and beside its peers.

    python benchmarks/table.py            # full run, in a throwaway venv it installs
    python benchmarks/table.py --write    # ... and rewrite the table in benchmarks/README.md
    python benchmarks/table.py --quick    # seconds: tiny corpus and suite, this interpreter

Without ``--here`` (or ``--quick``) the script creates a virtualenv (``--venv``, default
``$TMPDIR/sqla-doctor-bench-venv``), installs this checkout and the peer tools into it
(flake8, flake8-sqlalchemy, pytest-queryguard, nplusone, queryspy; from PyPI), and runs
itself again inside it, so the development venv never gets the peers' pytest plugins.
With ``--here`` it measures with the current interpreter; a peer that is not installed
gets a row that says so.

Every figure is a ratio of two measurements taken in this one run, never an absolute
time: the machines this runs on are shared and noisy, ratios travel better.

- Static: ``sqla-doctor check`` cold (no cache) and warm (cache filled) against the
  ``ast.parse`` floor over the same files, and flake8 with flake8-sqlalchemy (one
  process each) on the corpus ``static_speed.py`` builds.
- Runtime: the workloads of ``runtime_overhead.py`` with each tool watching them
  against bare SQLAlchemy. The peers register class-level listeners or monkeypatches
  that stay for the life of the process, so each measurement is its own process, and
  bare and watched processes alternate; CPU time, median of the rounds.
- pytest: a generated suite (2,000 tests by default) run bare, with ``--sqla-doctor``
  and with each peer plugin on; wall time of the whole ``pytest`` process, median of
  the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
README = HERE / "README.md"
START, END = "<!-- table:start -->", "<!-- table:end -->"

PEERS = ("flake8", "flake8-sqlalchemy", "pytest-queryguard", "nplusone", "queryspy")
RUNTIME_TOOLS = ("bare", "floor", "sqla-doctor", "pytest-queryguard", "queryspy", "nplusone")
# Measured from this checkout, never installed from the registry.
OURS = ("bare", "floor", "sqla-doctor")
# The pytest plugins of every tool, so that each run enables exactly one.
PYTEST_PLUGINS = {
    "sqla-doctor": "sqla_doctor",
    "pytest-queryguard": "queryguard",
    "queryspy": "queryspy",
}
PYTEST_RUNS: dict[str, tuple[str, ...]] = {
    "bare": (),
    "sqla-doctor": ("--sqla-doctor",),
    "pytest-queryguard": (),  # on for every test once installed (queryguard_mode = fail)
    "queryspy": ("--queryspy-strict",),
}


# -- the environment ---------------------------------------------------------------------


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(venv: Path) -> Path:
    """A virtualenv with a copy of this checkout, alembic and the peers; created or updated.

    A copy, not an editable install: the static cache is keyed on the tool's own files, so
    an edit of the checkout during the run would make every warm run a cold one.
    """
    python = _venv_python(venv)
    if not python.exists():
        print(f"table.py: creating a throwaway virtualenv in {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    print(
        f"table.py: installing sqla-doctor (a copy of {REPO}), alembic and the peers "
        f"({', '.join(PEERS)}) into {venv} with pip",
        file=sys.stderr,
    )
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{REPO}[pytest]", "alembic", *PEERS], check=True)
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(REPO)], check=True)
    return python


def installed(distribution: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def version_of(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution) if installed(distribution) else "not installed"


# -- static ------------------------------------------------------------------------------


def _timed_child(code: str, *args: str) -> float:
    """Seconds the child reports for its own work (interpreter start-up left out)."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    lines = proc.stderr.strip().splitlines()
    if not lines:
        raise RuntimeError(f"benchmark child failed ({proc.returncode}): {proc.stdout[-500:]}")
    return float(lines[-1].split()[0])


FLAKE8 = (
    "import sys, time\n"
    "from flake8.main.cli import main\n"
    "t = time.perf_counter()\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(time.perf_counter() - t, file=sys.stderr)\n"
)


def static_rows(lines: int, rounds: int, quick: bool) -> tuple[list[list[str]], str]:
    sys.path.insert(0, str(HERE))
    import static_speed

    with tempfile.TemporaryDirectory(prefix="sqla-doctor-table-") as tmp:
        root = Path(tmp) / "corpus"
        if quick:
            static_speed.generate(root, lines)
            files = sorted(root.rglob("*.py"))
            what = "a generated SQLAlchemy app"
        else:
            files = static_speed.corpus(root, lines)
            what = "SQLAlchemy + Alembic sources + a generated SQLAlchemy app"
        total = sum(p.read_bytes().count(b"\n") for p in files)
        cache = Path(tmp) / "cache"
        samples: dict[str, list[float]] = {"cold": [], "warm": [], "flake8": []}
        for _ in range(rounds):
            base = min(static_speed.floor(files) for _ in range(3))
            cold, _ = static_speed.run(root, "--no-cache")
            static_speed.run(root, "--cache-dir", str(cache))
            warm, _ = static_speed.run(root, "--cache-dir", str(cache))
            shutil.rmtree(cache, ignore_errors=True)
            samples["cold"].append(cold / base)
            samples["warm"].append(warm / base)
            if installed("flake8") and installed("flake8-sqlalchemy"):
                flake8 = _timed_child(
                    FLAKE8, "-j", "1", "--exit-zero", "--output-file", os.devnull, str(root)
                )
                samples["flake8"].append(flake8 / base)
    median = {k: statistics.median(v) if v else None for k, v in samples.items()}
    rows = [
        ["static", "`ast.parse` of every file, one process (the floor)", "1.00×", ""],
        [
            "static",
            "`sqla-doctor check`, cold (no cache), one process",
            f"{median['cold']:.2f}×",
            "every rule, project index, Alembic checks",
        ],
        [
            "static",
            "`sqla-doctor check`, warm (cache filled, nothing changed)",
            f"{median['warm']:.2f}×",
            f"{median['warm'] / median['cold']:.3f}× the cold run",
        ],
    ]
    if median["flake8"] is not None:
        rows.append(
            [
                "static",
                "flake8 + flake8-sqlalchemy, one process (`-j 1`)",
                f"{median['flake8']:.2f}×",
                "with flake8's default plugins (pycodestyle, pyflakes, mccabe); no cache",
            ]
        )
    else:
        rows.append(["static", "flake8 + flake8-sqlalchemy", "—", "not installed"])
    corpus = f"{len(files):,} files, {total:,} lines ({what})"
    return rows, corpus


# -- runtime -----------------------------------------------------------------------------


def _runtime_watcher(tool: str) -> tuple[Callable[[], Any], Callable[[Any], bool]]:
    """How ``tool`` watches one call of a workload, and whether it saw an N+1."""
    if tool == "bare":
        return contextlib.nullcontext, lambda _: False
    if tool == "floor":
        import runtime_overhead

        # For the life of this process, like the peers' listeners.
        runtime_overhead._watch("floor")
        return contextlib.nullcontext, lambda _: False
    if tool == "sqla-doctor":
        import sqla_doctor
        from sqla_doctor.config import RuntimeConfig

        config = RuntimeConfig(mode="collect")
        return (lambda: sqla_doctor.track(config=config)), (
            lambda uow: any(f.code in {"SQD251", "SQD252"} for f in uow.findings)
        )
    if tool == "pytest-queryguard":
        from pytest_queryguard.api import NPlusOneDetected, record_queries

        def queryguard_seen(log: Any) -> bool:
            try:
                log.assert_no_nplusone()
            except NPlusOneDetected:
                return True
            return False

        return record_queries, queryguard_seen
    if tool == "queryspy":
        import queryspy

        return queryspy.record, lambda recorder: bool(recorder.findings())
    if tool == "nplusone":
        import nplusone.ext.sqlalchemy  # noqa: F401 - patches SQLAlchemy's loaders on import
        from nplusone.core.profiler import Profiler

        class Recording(Profiler):  # type: ignore[misc] - nplusone is untyped
            """nplusone raises at the first N+1; record it and let the workload run."""

            def __enter__(self) -> Recording:
                self.seen: list[str] = []
                super().__enter__()
                return self

            def notify(self, message: Any) -> None:
                self.seen.append(message.message)

        return Recording, lambda profiler: bool(profiler.seen)
    raise ValueError(tool)


def runtime_child(tool: str, repeats: dict[str, int] | None) -> dict[str, Any]:
    """In a fresh process: CPU seconds per call of each workload under ``tool``."""
    sys.path.insert(0, str(HERE))
    import runtime_overhead

    try:
        watch, saw_n_plus_one = _runtime_watcher(tool)
    except Exception as error:  # a peer that cannot run on this SQLAlchemy gets a row saying so
        return {"error": f"{type(error).__name__}: {error}"}

    def once(fn: Callable[[], None]) -> Any:
        with watch() as handle:
            fn()
        return handle

    out: dict[str, Any] = {"seconds": {}, "repeats": {}}
    for name, fn in runtime_overhead.WORKLOADS.items():
        for _ in range(3):
            once(fn)
        repeat = (repeats or {}).get(name)
        if repeat is None:  # calibrating: enough calls for ~0.2 s of CPU
            repeat = 1
            while True:
                start = time.process_time()
                for _ in range(repeat):
                    once(fn)
                if time.process_time() - start >= 0.2:
                    break
                repeat *= 2
        start = time.process_time()
        for _ in range(repeat):
            once(fn)
        out["seconds"][name] = (time.process_time() - start) / repeat
        out["repeats"][name] = repeat
    out["detects_lazy_loop"] = bool(saw_n_plus_one(once(runtime_overhead.lazy_loop)))
    return out


def _child_json(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def runtime_rows(rounds: int, quick: bool) -> list[list[str]]:
    sys.path.insert(0, str(HERE))
    import runtime_overhead
    import sqlalchemy

    workloads = list(runtime_overhead.WORKLOADS)
    available = [t for t in RUNTIME_TOOLS if t in OURS or installed(t)]
    if quick:
        repeats = dict.fromkeys(workloads, 1)
    else:
        repeats = _child_json("--runtime-child", "bare")["repeats"]
    ratios: dict[str, dict[str, list[float]]] = {t: {w: [] for w in workloads} for t in available}
    detects: dict[str, bool] = {}
    failed: dict[str, str] = {}
    for round_ in range(rounds):
        # Rotate the order, so that drift favours no tool.
        order = available[round_ % len(available) :] + available[: round_ % len(available)]
        results = {
            tool: _child_json("--runtime-child", tool, "--repeats", json.dumps(repeats))
            for tool in order
            if tool not in failed
        }
        for tool in available:
            if tool in failed or "error" in results[tool]:
                failed.setdefault(tool, results.get(tool, {}).get("error", ""))
                continue
            detects[tool] = results[tool]["detects_lazy_loop"]
            for w in workloads:
                ratios[tool][w].append(results[tool]["seconds"][w] / results["bare"]["seconds"][w])
    rows = []
    for tool in RUNTIME_TOOLS:
        if tool == "bare":
            continue
        label = _runtime_label(tool)
        if tool not in available:
            rows.append(["runtime", label, "—", "not installed"])
            continue
        if tool in failed:
            rows.append(
                [
                    "runtime",
                    label,
                    "—",
                    f"cannot be enabled on SQLAlchemy "
                    f"{sqlalchemy.__version__}: `{failed[tool][:120]}`",
                ]
            )
            continue
        cells = ", ".join(f"{w} {statistics.median(ratios[tool][w]):.2f}×" for w in workloads)
        if tool == "floor":
            note = "SQLAlchemy's event dispatch alone: no detector can cost less"
        else:
            seen = "reports" if detects[tool] else "**does not report**"
            note = f"{seen} the N+1 of `lazy_loop`"
        rows.append(["runtime", label, cells, note])
    return rows


def _runtime_label(tool: str) -> str:
    return {
        "floor": "a no-op listener on each event sqla-doctor listens to (the floor)",
        "sqla-doctor": "`sqla_doctor.track()` (collect mode), every detector",
        "pytest-queryguard": "pytest-queryguard `record_queries()` + `assert_no_nplusone()`",
        "queryspy": "queryspy `record()` + `findings()`",
        "nplusone": "nplusone `Profiler()` (SQLAlchemy extension)",
    }[tool]


# -- pytest ------------------------------------------------------------------------------

SUITE_CONFTEST = """
import pytest
from sqlalchemy import ForeignKey, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import StaticPool


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    posts: Mapped[list["Post"]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")


@pytest.fixture(scope="session")
def engine():
    engine = create_engine("sqlite://", poolclass=StaticPool)
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(User(name=f"user{i}", posts=[Post()]) for i in range(50))
        session.commit()
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    with Session(engine) as session:
        yield session
"""

SUITE_TEST = """
import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from conftest import User


@pytest.mark.parametrize("n", range({count}))
def test_read(session, n):
    user = session.get(User, n % 50 + 1)
    assert user.name == f"user{{n % 50}}"
    rows = session.scalars(select(User).where(User.id <= 3).options(selectinload(User.posts)))
    assert all(len(u.posts) == 1 for u in rows)
"""


def make_suite(root: Path, tests: int) -> None:
    root.mkdir(parents=True)
    (root / "conftest.py").write_text(textwrap.dedent(SUITE_CONFTEST))
    (root / "pytest.ini").write_text("[pytest]\n")
    per_file = 100
    for number, start in enumerate(range(0, tests, per_file)):
        count = min(per_file, tests - start)
        (root / f"test_suite_{number:03}.py").write_text(SUITE_TEST.format(count=count))


def pytest_seconds(root: Path, tool: str) -> float:
    disabled = [f"-p no:{name}" for t, name in PYTEST_PLUGINS.items() if t != tool]
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *" ".join(disabled).split(),
        *PYTEST_RUNS[tool],
    ]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"pytest ({tool}) failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return seconds


def pytest_rows(tests: int, rounds: int) -> list[list[str]]:
    available = [t for t in PYTEST_RUNS if t in ("bare", "sqla-doctor") or installed(t)]
    samples: dict[str, list[float]] = {t: [] for t in available}
    with tempfile.TemporaryDirectory(prefix="sqla-doctor-suite-") as tmp:
        root = Path(tmp) / "suite"
        make_suite(root, tests)
        pytest_seconds(root, "bare")  # warm the file system cache and the bytecode
        for round_ in range(rounds):
            order = available[round_ % len(available) :] + available[: round_ % len(available)]
            times = {tool: pytest_seconds(root, tool) for tool in order}
            for tool in available:
                samples[tool].append(times[tool] / times["bare"])
    labels = {
        "bare": "`pytest` (no SQLAlchemy plugin; the baseline)",
        "sqla-doctor": "`pytest --sqla-doctor`",
        "pytest-queryguard": "`pytest` with pytest-queryguard (on for every test)",
        "queryspy": "`pytest --queryspy-strict`",
    }
    rows = []
    for tool in PYTEST_RUNS:
        if tool not in available:
            rows.append(["pytest", labels[tool], "—", "not installed"])
        else:
            rows.append(
                [
                    "pytest",
                    labels[tool],
                    f"{statistics.median(samples[tool]):.2f}×",
                    f"{tests:,} tests, whole process",
                ]
            )
    return rows


# -- the table ---------------------------------------------------------------------------


def table(options: argparse.Namespace) -> str:
    import sqlalchemy

    started = time.perf_counter()
    static, corpus = static_rows(options.lines, options.rounds, options.quick)
    runtime = runtime_rows(options.rounds * (1 if options.quick else 2), options.quick)
    suite = pytest_rows(options.tests, options.rounds)
    header = ["part", "what runs", "ratio", "notes"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in static + runtime + suite]
    versions = ", ".join(
        f"{name} {version_of(name)}" for name in ("sqla-doctor", "sqlalchemy", "pytest", *PEERS)
    )
    elapsed = time.perf_counter() - started
    lines += [
        "",
        f"Static ratios: time over the `ast.parse` floor, corpus {corpus}. Runtime ratios: "
        "CPU time over bare SQLAlchemy on the same workload (`benchmarks/runtime_overhead.py`"
        "'s workloads, SQLite in memory). pytest ratios: wall time over bare pytest. "
        f"Medians of {options.rounds} round(s){' (quick mode)' if options.quick else ''}; "
        f"Python {sys.version.split()[0]}, SQLAlchemy {sqlalchemy.__version__}, "
        f"{os.cpu_count()} CPU(s); this run took {elapsed:.0f} s.",
        "",
        f"Versions: {versions}.",
    ]
    return "\n".join(lines) + "\n"


def write_readme(text: str) -> None:
    readme = README.read_text(encoding="utf-8")
    head, found, rest = readme.partition(START)
    _, found_end, tail = rest.partition(END)
    if not found or not found_end:
        raise SystemExit(f"{README} has no {START} … {END} section to rewrite")
    README.write_text(f"{head}{START}\n{text}{END}{tail}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny corpus, suite and budgets, this interpreter (for tests)",
    )
    parser.add_argument(
        "--here", action="store_true", help="measure with this interpreter; install nothing"
    )
    parser.add_argument(
        "--venv", type=Path, default=Path(tempfile.gettempdir()) / "sqla-doctor-bench-venv"
    )
    parser.add_argument("--write", action="store_true", help=f"rewrite the table in {README}")
    parser.add_argument(
        "--lines",
        type=int,
        default=None,
        help="lines of generated code (default 100,000; quick 2,000)",
    )
    parser.add_argument(
        "--tests",
        type=int,
        default=None,
        help="tests in the generated suite (default 2,000; quick 50)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="default 3; quick 1")
    parser.add_argument("--runtime-child", metavar="TOOL", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.runtime_child:
        repeats = json.loads(options.repeats) if options.repeats else None
        print(json.dumps(runtime_child(options.runtime_child, repeats)))
        return 0
    if not (options.here or options.quick):
        python = ensure_venv(options.venv)
        args = list(sys.argv[1:] if argv is None else argv)
        return subprocess.run([str(python), __file__, "--here", *args], check=False).returncode
    options.lines = options.lines or (2_000 if options.quick else 100_000)
    options.tests = options.tests or (50 if options.quick else 2_000)
    options.rounds = options.rounds or (1 if options.quick else 3)
    text = table(options)
    sys.stdout.write(text)
    if options.write:
        write_readme(text)
        print(f"table.py: rewrote the table in {README}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
