"""``--diff-against REV``: which lines changed since a git revision, to report only those."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from sqla_doctor.findings import Finding

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@", re.MULTILINE)


class DiffError(Exception):
    """git cannot tell what changed; one line for the user."""


def _git(root: Path, *args: str) -> str:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DiffError(f"cannot run git: {error}") from None
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "git failed"
        raise DiffError(reason)
    return proc.stdout


def changed_lines(root: Path, revision: str) -> dict[str, set[int]]:
    """Lines added or changed since ``revision`` (working tree included), per file, with
    paths relative to ``root``. Untracked files count as wholly changed (empty set + flag)."""
    top = Path(_git(root, "rev-parse", "--show-toplevel").strip())
    diff = _git(top, "diff", "--no-color", "--no-ext-diff", "-U0", revision, "--", ".")
    result: dict[str, set[int]] = {}
    current: set[int] | None = None
    for line in diff.splitlines():
        if line.startswith("+++ "):
            name = line[4:].strip()
            if name == "/dev/null":
                current = None
                continue
            relative = _relative(top / name.removeprefix("b/"), root)
            current = result.setdefault(relative, set())
        elif line.startswith("@@") and current is not None:
            match = _HUNK.match(line)
            if match:
                start, count = int(match.group(1)), int(match.group(2) or 1)
                current.update(range(start, start + count))
    untracked = _git(top, "ls-files", "--others", "--exclude-standard")
    for name in untracked.splitlines():
        result[_relative(top / name, root)] = {-1}
    return result


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def only_changed(findings: list[Finding], changed: dict[str, set[int]]) -> list[Finding]:
    kept = []
    for finding in findings:
        lines = changed.get(finding.location.path)
        if lines is None:
            continue
        span = range(
            finding.location.line, (finding.location.end_line or finding.location.line) + 1
        )
        if -1 in lines or any(line in lines for line in span):
            kept.append(finding)
    return kept
