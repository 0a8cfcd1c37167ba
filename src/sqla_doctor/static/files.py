"""Which files a check reads: explicit paths, minus excluded, git-ignored and virtualenv folders."""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Folders never worth reading (ruff's defaults, plus virtualenvs found by pyvenv.cfg).
SKIPPED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        ".tox",
        ".nox",
        ".venv",
        "venv",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        "__pycache__",
        "node_modules",
        "site-packages",
        "__pypackages__",
        ".eggs",
        "_build",
        "buck-out",
        ".direnv",
        ".pants.d",
        ".sqla-doctor-cache",
    }
)


# What marks a project's top folder when it has no [tool.sqla-doctor] section.
PROJECT_MARKERS = ("pyproject.toml", "setup.cfg", "setup.py", "requirements.txt", "Pipfile", ".git")


def project_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds a project marker."""
    start = start.resolve()
    directory = start if start.is_dir() else start.parent
    for candidate in (directory, *directory.parents):
        if any((candidate / marker).exists() for marker in PROJECT_MARKERS):
            return candidate
    return None


def covers(paths: Iterable[Path], folder: Path) -> bool:
    """Whether one of ``paths`` is ``folder`` or a folder above it."""
    folder = folder.resolve()
    return any(p.resolve() in (folder, *folder.parents) for p in paths)


# Folders that hold a project's tests.
TEST_DIRS = frozenset({"tests", "test", "testing"})


def is_test_path(path: str) -> bool:
    """Whether a file (a display path) is test code: under `tests/`, `test_*.py`,
    `*_test.py`, or `conftest.py`. Its values come from fixtures, not from requests."""
    parts = path.replace("\\", "/").split("/")
    name = parts[-1]
    return (
        name == "conftest.py"
        or (name.startswith("test_") and name.endswith(".py"))
        or name.endswith("_test.py")
        or any(part in TEST_DIRS for part in parts[:-1])
    )


def display_path(path: Path, root: Path) -> str:
    """Paths relative to the root when below it, in POSIX form (stable across OSes)."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        # Outside the root: as given, without the `..` of how an absolute one was reached.
        return Path(os.path.normpath(path)).as_posix() if path.is_absolute() else path.as_posix()


@dataclass(frozen=True)
class _Pattern:
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool


class GitIgnore:
    """The subset of gitignore semantics that real projects use: globs, **, !, /, dir/."""

    def __init__(self, base: Path, lines: Iterable[str]) -> None:
        self.base = base
        self.patterns: list[_Pattern] = []
        for raw in lines:
            line = raw.rstrip("\n").rstrip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            if negated:
                line = line[1:]
            dir_only = line.endswith("/")
            line = line.strip("/") if dir_only else line
            anchored = "/" in line.lstrip("/")[:-1] or line.startswith("/")
            line = line.lstrip("/")
            try:
                regex = _glob_regex(line, anchored)
            except re.error:
                continue  # `[z-a]`: a range git matches nothing with
            self.patterns.append(_Pattern(regex, negated, dir_only))

    @classmethod
    def load(cls, directory: Path) -> GitIgnore | None:
        path = directory / ".gitignore"
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        return cls(directory, text.splitlines())

    def ignores(self, path: Path, is_dir: bool) -> bool | None:
        """True/False if a pattern decides, None if none matches."""
        try:
            relative = path.relative_to(self.base).as_posix()
        except ValueError:
            return None
        verdict: bool | None = None
        for pattern in self.patterns:
            if pattern.dir_only and not is_dir:
                continue
            if pattern.regex.match(relative):
                verdict = not pattern.negated
        return verdict


def _glob_regex(pattern: str, anchored: bool) -> re.Pattern[str]:
    """A gitignore glob as a regular expression; raises re.error for a pattern git would
    never match (a range whose ends are reversed, ``[z-a]``)."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("/**", i) and i + 3 == len(pattern):
            parts.append("/.*")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))  # `\[`, `\#`, `\ `: the character itself
            i += 2
        elif pattern[i] == "[" and (found := _bracket(pattern, i)) is not None:
            regex, i = found
            parts.append(regex)
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    body = "".join(parts)
    prefix = "" if anchored else "(?:.*/)?"
    return re.compile(f"^{prefix}{body}(?:/.*)?$")


def _bracket(pattern: str, start: int) -> tuple[str, int] | None:
    """The bracket expression opening at ``start`` (``[abc]``, ``[!0-9]``, ``[\\]]``) as a
    regular expression's class, and the index after it; None when it never closes."""
    i = start + 1
    negated = i < len(pattern) and pattern[i] in "!^"
    if negated:
        i += 1
    members: list[str] = []
    while i < len(pattern):
        char = pattern[i]
        if char == "]" and members:
            return ("[^" if negated else "[") + "".join(members) + "]", i + 1
        if char == "\\" and i + 1 < len(pattern):
            members.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        members.append(char if char == "-" else re.escape(char))
        i += 1
    return None


def _matches_any(relative: str, name: str, globs: Iterable[str]) -> bool:
    for glob in globs:
        pattern = glob.rstrip("/")
        if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, pattern):
            return True
        if fnmatch.fnmatch(relative, pattern + "/*") or relative.startswith(pattern + "/"):
            return True
    return False


def discover(
    paths: Iterable[Path],
    root: Path,
    exclude: Iterable[str] = (),
    respect_gitignore: bool = True,
    suffixes: tuple[str, ...] = (".py", ".pyi"),
) -> Iterator[Path]:
    """Python files under ``paths``; an explicitly named file is always read."""
    excluded = tuple(exclude)
    root = root.resolve()
    seen: set[Path] = set()
    for given in paths:
        if given.is_file():
            resolved = given.resolve()
            if resolved not in seen:
                seen.add(resolved)
                yield given
            continue
        ignores = _ignores_above(given.resolve(), root) if respect_gitignore else []
        yield from _walk(given, root, excluded, ignores, respect_gitignore, suffixes, seen)


def _ignores_above(directory: Path, root: Path) -> list[GitIgnore]:
    """.gitignore files between the project root and a starting directory."""
    found: list[GitIgnore] = []
    chain = [directory, *directory.parents]
    for candidate in reversed(chain):
        if candidate != directory and root not in (candidate, *candidate.parents):
            continue
        ignore = GitIgnore.load(candidate)
        if ignore is not None and candidate != directory:
            found.append(ignore)
    return found


def _walk(
    top: Path,
    root: Path,
    exclude: tuple[str, ...],
    ignores: list[GitIgnore],
    respect_gitignore: bool,
    suffixes: tuple[str, ...],
    seen: set[Path],
) -> Iterator[Path]:
    stack: list[tuple[Path, list[GitIgnore]]] = [(top, ignores)]
    while stack:
        directory, active = stack.pop()
        if respect_gitignore:
            own = GitIgnore.load(directory)
            if own is not None:
                active = [*active, own]
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        subdirs: list[tuple[Path, list[GitIgnore]]] = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir()
            except OSError:
                continue
            # Only the exclude globs read it: no realpath calls without them.
            relative = display_path(path, root) if exclude else ""
            if is_dir:
                if entry.name in SKIPPED_DIRS or (path / "pyvenv.cfg").exists():
                    continue
                if _is_template_dir(entry.name):
                    continue
                if _matches_any(relative, entry.name, exclude) or _ignored(active, path, True):
                    continue
                subdirs.append((path, active))
            elif entry.name.endswith(suffixes):
                # A symlink to nothing (pagure's `default_hook.py -> /does/not/exist`) is no
                # source to read; an unreadable regular file is still reported.
                if entry.is_symlink() and not path.exists():
                    continue
                if _matches_any(relative, entry.name, exclude) or _ignored(active, path, False):
                    continue
                resolved = path.resolve()
                if resolved not in seen:
                    seen.add(resolved)
                    yield path
        stack.extend(reversed(subdirs))


def _is_template_dir(name: str) -> bool:
    """A project template's folder (cookiecutter's `{{cookiecutter.name}}`, copier's): its
    `.py` files are Jinja templates, not Python, and no import can reach them."""
    return "{{" in name and "}}" in name


def _ignored(ignores: list[GitIgnore], path: Path, is_dir: bool) -> bool:
    verdict = False
    for ignore in ignores:
        decided = ignore.ignores(path, is_dir)
        if decided is not None:
            verdict = decided
    return verdict


def module_for(path: Path) -> tuple[str, bool]:
    """The dotted module name of a file, found by climbing packages' ``__init__.py``."""
    path = path.resolve()
    is_package = path.name == "__init__.py"
    parts = [] if is_package else [path.stem]
    directory = path.parent
    while (directory / "__init__.py").exists():
        parts.append(directory.name)
        if directory.parent == directory:
            break
        directory = directory.parent
    return ".".join(reversed(parts)), is_package
