"""benchmarks/table.py produces its one table, every row, in quick mode."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

ROWS = (
    ("static", "`ast.parse` of every file"),
    ("static", "`sqla-doctor check`, cold"),
    ("static", "`sqla-doctor check`, warm"),
    ("static", "flake8 + flake8-sqlalchemy"),
    ("runtime", "a no-op listener on each event"),
    ("runtime", "`sqla_doctor.track()`"),
    ("runtime", "pytest-queryguard"),
    ("runtime", "queryspy"),
    ("runtime", "nplusone"),
    ("pytest", "`pytest` (no SQLAlchemy plugin"),
    ("pytest", "`pytest --sqla-doctor`"),
    ("pytest", "`pytest` with pytest-queryguard"),
    ("pytest", "`pytest --queryspy-strict`"),
)


def test_quick_table_has_every_row() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "table.py"), "--quick", "--tests", "20"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "| part | what runs | ratio | notes |"
    rows = [line for line in lines[2:] if line.startswith("| ")]
    assert len(rows) == len(ROWS)
    for row, (part, what) in zip(rows, ROWS, strict=True):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[0] == part
        assert cells[1].startswith(what), (cells[1], what)
        # A ratio, or a dash with the reason (a peer not installed here).
        assert cells[2].endswith("×") or (cells[2] == "—" and cells[3]), row
    # sqla-doctor's own rows are always measured, and it reports the N+1 it is shown.
    assert "reports the N+1 of `lazy_loop`" in rows[5]
    assert "Medians of 1 round(s) (quick mode)" in proc.stdout


def test_write_replaces_only_the_table_section(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import table
    finally:
        sys.path.remove(str(BENCHMARKS))
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{table.START}\nold\n{table.END}\noutro\n", encoding="utf-8")
    original = table.README
    table.README = readme
    try:
        table.write_readme("| new |\n")
    finally:
        table.README = original
    assert readme.read_text(encoding="utf-8") == (
        f"intro\n{table.START}\n| new |\n{table.END}\noutro\n"
    )


def test_instruction_count_children_run_every_side() -> None:
    """What callgrind measures in runtime_instructions.py runs (valgrind itself is slow)."""
    script = str(BENCHMARKS / "runtime_instructions.py")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import runtime_instructions
    finally:
        sys.path.remove(str(BENCHMARKS))
    for side in runtime_instructions.SIDES:
        proc = subprocess.run(
            [sys.executable, script, "--child", "lazy_loop", side, "1"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
