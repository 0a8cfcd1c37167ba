"""Config files and suppression comments are data: nothing in them can make the tool run code.

Each value below is Python that would leave a marker file if anything evaluated, executed
or shelled it out. The real CLI runs in a subprocess from inside the project. A broken or
wrong config is one ``sqla-doctor: error:`` line on stderr, exit code 2, and the run goes
on with the defaults (docs/configuration.md); a suppression comment is matched as text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .test_parameters_never_leak import sqla_doctor_cli

MODEL = "import sqlalchemy as sa\n\ncolumn = sa.Column(sa.JSON, default=[])\n"


def marker_code(marker: Path) -> str:
    """Python that creates ``marker`` if anything evaluates or executes it."""
    return f"__import__('pathlib').Path({str(marker)!r}).touch()"


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sqla_doctor_cli(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def hostile_configs(marker: Path) -> dict[str, tuple[str, str]]:
    """name -> (the [tool.sqla-doctor] body, what the one error line must say)."""
    code = marker_code(marker)
    shell = f"$(touch {marker}); `touch {marker}`"
    return {
        "select-python": (f"select = [{code!r}]", "unknown rule selector"),
        "ignore-shell": (f"ignore = [{shell!r}]", "unknown rule selector"),
        "timeout-python": (f"file-timeout = {code!r}", "file-timeout must be a non-negative"),
        "exclude-wrong-type": ("exclude = 5", "exclude must be a string or a list"),
        "unknown-key": (f"{code.replace(chr(39), '')[:20]!r} = 1", "unknown key"),
        "runtime-mode-python": (f"runtime = {{ mode = {code!r} }}", "mode must be one of"),
        "runtime-threshold-python": (
            f"runtime = {{ n-plus-one-threshold = {code!r} }}",
            "must be a non-negative number",
        ),
        "broken-toml": (f"select = [{code}", "invalid TOML"),
    }


CASES = list(hostile_configs(Path("m")))


@pytest.mark.parametrize("command", ["check", "fix"])
@pytest.mark.parametrize("case", CASES)
def test_a_hostile_config_is_one_error_line_and_runs_nothing(
    tmp_path: Path, case: str, command: str
) -> None:
    marker = tmp_path / "PWNED"
    body, expected = hostile_configs(marker)[case]
    (tmp_path / "pyproject.toml").write_text(f"[tool.sqla-doctor]\n{body}\n", encoding="utf-8")
    (tmp_path / "models.py").write_text(MODEL, encoding="utf-8")
    args = (command, "--no-cache") if command == "check" else (command, "--no-cache", "--diff")

    proc = run_cli(tmp_path, *args)

    assert not marker.exists()
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = proc.stderr.splitlines()
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("sqla-doctor: error: ")
    assert expected in errors[0]
    assert "Traceback" not in proc.stderr
    # The run went on with the defaults: the model's mutable default is still found.
    assert "SQD501" in proc.stdout or "default=lambda: []" in proc.stdout


def test_a_glob_made_of_code_is_only_a_glob(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    (tmp_path / "pyproject.toml").write_text(
        "[tool.sqla-doctor]\n"
        f"per-file-ignores = {{ {marker_code(marker)!r} = ['SQD501'] }}\n"
        f"extend-exclude = [{marker_code(marker)!r}]\n",
        encoding="utf-8",
    )
    (tmp_path / "models.py").write_text(MODEL, encoding="utf-8")
    proc = run_cli(tmp_path, "check", "--no-cache")
    assert not marker.exists()
    assert (proc.returncode, proc.stderr) == (1, "")
    assert "models.py:3:" in proc.stdout
    assert "SQD501" in proc.stdout


def test_code_in_noqa_comments_is_text(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    code = marker_code(marker)
    (tmp_path / "line.py").write_text(
        f"import sqlalchemy as sa\n\ncolumn = sa.Column(sa.JSON, default=[])  # noqa: {code}\n",
        encoding="utf-8",
    )
    (tmp_path / "eval_me.py").write_text(
        f"# sqla-doctor: noqa: SQD501, {code}\n"
        "import sqlalchemy as sa\n\n"
        "column = sa.Column(sa.JSON, default=[])  # noqa: SQD501; exec('import os')\n",
        encoding="utf-8",
    )
    proc = run_cli(tmp_path, "check", "--no-cache", "--format", "json")
    assert not marker.exists()
    assert (proc.returncode, proc.stderr) == (1, "")
    found = {(f["location"]["path"], f["code"]) for f in json.loads(proc.stdout)["findings"]}
    # `noqa: __import__` names no rule: the finding stays. The file-wide directive names
    # SQD501 as well, which it suppresses, so the line's own noqa is unused (SQD902).
    assert found == {("line.py", "SQD501"), ("eval_me.py", "SQD902")}

    proc = run_cli(tmp_path, "fix", "--no-cache")
    assert not marker.exists()
    assert (proc.returncode, proc.stderr) == (1, "")  # the SQD902 remains
    assert "default=lambda: []" in (tmp_path / "line.py").read_text()
    assert (tmp_path / "eval_me.py").read_text().endswith("exec('import os')\n")


def test_a_hostile_runtime_config_under_run_falls_back_to_the_defaults(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    (tmp_path / "pyproject.toml").write_text(
        f"[tool.sqla-doctor.runtime]\nmode = {marker_code(marker)!r}\n", encoding="utf-8"
    )
    (tmp_path / "program.py").write_text(
        "from sqlalchemy import create_engine, text\n\n"
        "engine = create_engine('sqlite://')\n"
        "with engine.connect() as connection:\n"
        "    for _ in range(6):\n"
        "        connection.execute(text('SELECT 1')).all()\n",
        encoding="utf-8",
    )
    proc = run_cli(tmp_path, "run", "--", sys.executable, "program.py")
    assert not marker.exists()
    assert proc.returncode == 0, proc.stderr
    assert "SQD252" in proc.stderr, "the report: standard output is the program's"
    assert "mode must be one of" in proc.stderr
    assert "Traceback" not in proc.stderr
