"""Which SQLAlchemy a project declares it runs on, read from its requirement files.

A project pinned below 2.0 (``sqlalchemy==1.4.54``, ``sqlalchemy<2``, Poetry's ``^1.4``)
is not 2.x code: the rules about moving to 2.0 (the legacy ``Query`` API, removed 1.x
APIs) describe its future, not its bugs, and stay off unless asked for by name.

The project's top is read first, with the files its requirement files include
(``-r base.txt``, ``-c constraints.txt``); only when nothing there gives a version of
SQLAlchemy are the requirement files of its folders read (an application kept in
``app/requirements/*.txt``, a monorepo's ``backend/requirements.txt``). What is
installed outranks what is allowed: a lock file's pin (pip-compile's ``.txt`` beside its
``.in``, ``poetry.lock``, ``uv.lock``) and a package that holds SQLAlchemy below 2.0
(``sqlmodel==0.0.8``) pin the project even where a range allows 2.x, and a requirement
of 2.0 or later anywhere keeps the rules on.

The same files say which databases the project installs drivers for (``PyMySQL``,
``psycopg2-binary``): a project with MySQL's only runs no revision on PostgreSQL.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

# Where projects declare their dependencies, at the project's top.
_FILES = ("pyproject.toml", "setup.cfg", "setup.py", "Pipfile")
# What a lock file installed: `name = "sqlalchemy"` then `version = "1.4.52"`.
_LOCK_FILES = ("poetry.lock", "uv.lock", "pdm.lock")
# `dev-requirements.txt`, `extras-requirements.txt`: an extra's or a tool's list is as
# much the project's word on which SQLAlchemy it runs on.
_REQUIREMENT_GLOBS = (
    "requirements*.txt",
    "requirements*.in",
    "*[-_]requirements*.txt",
    "*[-_]requirements*.in",
    "requirements/*.txt",
    "requirements/*.in",
)
# Packages whose older releases hold SQLAlchemy below 2.0, with the first release that
# does not. Flask-SQLAlchemy 2.x imports names SQLAlchemy 2.0 removed (3.0.2: "Update
# compatibility with SQLAlchemy 2"); SQLModel required SQLAlchemy <=1.4.41 until 0.0.12
# ("Upgrade SQLAlchemy to 2.0").
_HOLD_BELOW_2 = {"flask-sqlalchemy": (3, 0, 0), "sqlmodel": (0, 0, 12)}
_SQLALCHEMY_2 = (2, 0, 0)
# Database drivers by the database they speak to, and words in a package's extras that
# pull one in (`oslo.db[mysql]`, `sqlalchemy[postgresql_psycopg2binary]`).
_DRIVER_DATABASE = {
    **dict.fromkeys(
        ("pymysql", "mysqlclient", "mysql-connector-python", "aiomysql", "asyncmy"), "mysql"
    ),
    **dict.fromkeys(
        ("psycopg2", "psycopg2-binary", "psycopg", "psycopg-binary", "asyncpg", "pg8000"),
        "postgresql",
    ),
}
_DRIVER = re.compile(
    r"(?:^|[\s\"'\[,])("
    + "|".join(re.escape(name) for name in sorted(_DRIVER_DATABASE, key=len, reverse=True))
    + r")(?![\w.-])",
    re.IGNORECASE,
)
_EXTRAS = re.compile(r"[\w.-]\[([\w.,\s-]+)\]")
# The module a driver's package installs, where the two names differ.
_DRIVER_MODULE = {"psycopg2-binary": "psycopg2", "psycopg-binary": "psycopg"}
# Drivers an extra names (`sqlalchemy[postgresql_psycopg2binary]`, `[asyncpg]`), longest
# first: `psycopg2binary` holds `psycopg`.
_EXTRA_DRIVERS = ("psycopg2", "psycopg", "asyncpg", "pg8000", "pymysql", "aiomysql", "asyncmy")
_EXTRA_DATABASE = (
    ("mysql", "mysql"),
    ("mariadb", "mysql"),
    ("postgres", "postgresql"),
    ("psycopg", "postgresql"),
    ("asyncpg", "postgresql"),
    ("pg8000", "postgresql"),
)
# `sqlalchemy==1.4.54`, `"SQLAlchemy[asyncio]<2",`, `sqlalchemy = "^1.4"` (Poetry, Pipfile),
# `sqlalchemy = {version = "~1.3"}`, `Flask-SQLAlchemy==2.5.1`: never `sqlalchemy-utils`.
_REQUIREMENT = re.compile(
    r"""(?ix)(?:^|[\s"'\[,])(?P<name>flask[-_.]sqlalchemy|sqlmodel|sqlalchemy)(?![\w.-])
    \s*(?:\[[^\]]*\])?\s*
    (?:
        (?P<spec>(?:===|==|~=|!=|<=|>=|<|>)\s*[^"',;#\s]+
            (?:\s*,\s*(?:===|==|~=|!=|<=|>=|<|>)\s*[^"',;#\s]+)*)
      | =\s*(?:\{[^}]*?version\s*=\s*)?["'](?P<poetry>[^"']+)["']
    )"""
)
_LOCKED = re.compile(
    r"""(?im)^name\s*=\s*"(?P<name>flask[-_.]sqlalchemy|sqlmodel|sqlalchemy)"\s*\n
    \s*version\s*=\s*"(?P<version>[^"]+)\"""",
    re.VERBOSE,
)
# `-r base.txt`, `--requirement=base.txt`, `-c constraints.txt`.
_INCLUDE = re.compile(
    r"^\s*(?P<option>-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+|(?=[^\s-]))(?P<path>\S+)"
)
_CLAUSE = re.compile(r"(===|==|~=|<=|>=|!=|<|>|\^|~)?\s*([0-9][0-9.*]*)")
# How many `-r` steps are followed, how deep below the top requirement files are looked
# for, and how many folders at most: enough for `app/requirements/python3/*.txt`.
_MAX_INCLUDE_DEPTH = 3
_MAX_FOLDER_DEPTH = 3
_MAX_FOLDERS = 2000
# Folders whose requirement files are not the project's: tools' environments and caches,
# a demo's or the docs' own environment.
_SKIPPED_FOLDERS = frozenset(
    {"node_modules", "site-packages", "__pycache__", "venv", "env", "docs", "examples"}
)


class _Says(Enum):
    """What one requirement says about SQLAlchemy 2.0."""

    REQUIRES_2 = "requires"  # `sqlalchemy>=2.0.30`: the project is on 2.x
    HOLDS_BELOW_2 = "holds"  # installed below 2.0: a lock's pin, `sqlmodel==0.0.8`
    ALLOWS_2 = "allows"  # `sqlalchemy>=1.4`
    BELOW_2 = "below"  # `sqlalchemy<2`


@dataclass(frozen=True)
class DeclaredPin:
    """A requirement that keeps the project below SQLAlchemy 2.0, and where it is."""

    path: str
    line: int
    requirement: str


@dataclass(frozen=True)
class _Requirement:
    pin: DeclaredPin
    says: _Says
    of_sqlalchemy: bool


def pinned_below_2(root: Path) -> DeclaredPin | None:
    """The requirement that rules SQLAlchemy 2 out, if the project's requirements name
    SQLAlchemy (or a package that holds it below 2.0) and none of them requires 2.x."""
    found = list(_requirements(root, _top_files(root)))
    if not found:
        found = list(_requirements(root, _folder_files(root)))
    says = {requirement.says for requirement in found}
    if _Says.REQUIRES_2 in says:
        return None
    if _Says.HOLDS_BELOW_2 not in says and (_Says.ALLOWS_2 in says or _Says.BELOW_2 not in says):
        return None
    ruling_out = [r for r in found if r.says in (_Says.HOLDS_BELOW_2, _Says.BELOW_2)]
    # Named for SQLAlchemy's own pin where there is one, not the package holding it.
    own = [r for r in ruling_out if r.of_sqlalchemy]
    return (own or [r for r in ruling_out if r.says is _Says.HOLDS_BELOW_2])[0].pin


def _top_files(root: Path) -> list[Path]:
    paths = [root / name for name in (*_FILES, *_LOCK_FILES) if (root / name).is_file()]
    for pattern in _REQUIREMENT_GLOBS:
        paths.extend(sorted(p for p in root.glob(pattern) if p.is_file()))
    return paths


def _folder_files(root: Path) -> list[Path]:
    """The declaration files of the folders below the top, the shallowest first."""
    paths: list[Path] = []
    for folder in _folders_below(root):
        paths.extend(_top_files(folder))
    return paths


def _folders_below(root: Path) -> Iterator[Path]:
    queue: deque[tuple[Path, int]] = deque([(root, 0)])
    seen = 0
    while queue and seen < _MAX_FOLDERS:
        folder, depth = queue.popleft()
        if depth:
            yield folder
        seen += 1
        if depth == _MAX_FOLDER_DEPTH:
            continue
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
        except OSError:
            continue
        queue.extend((child, depth + 1) for child in children if not _skipped(child))


def _skipped(folder: Path) -> bool:
    return (
        folder.name.startswith(".")
        or folder.name in _SKIPPED_FOLDERS
        or (folder / "pyvenv.cfg").exists()
    )


@dataclass(frozen=True)
class _File:
    """One requirement file read: where it is, its text, and whether what it pins is
    what gets installed (a lock file, or one included with `-c`: a constraint is what
    pip installs within, as binding as a lock)."""

    path: Path
    relative: str
    text: str
    binding: bool


def _files(root: Path, paths: list[Path]) -> Iterator[_File]:
    """``paths`` and the files they include (``-r``, ``-c``), each read once, never
    outside the project."""
    top = root.resolve()
    # Each file with how many includes led to it, and whether one was `-c`.
    queue: deque[tuple[Path, int, bool]] = deque((path, 0, False) for path in paths)
    read: set[Path] = set()
    while queue:
        path, depth, constraint = queue.popleft()
        resolved = path.resolve()
        if resolved in read or not resolved.is_relative_to(top):
            continue
        read.add(resolved)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        binding = constraint or path.name in _LOCK_FILES or _is_lock(path, text)
        yield _File(path, resolved.relative_to(top).as_posix(), text, binding)
        if depth == _MAX_INCLUDE_DEPTH or path.name in _LOCK_FILES:
            continue
        for line in _lines(text):
            include = _INCLUDE.match(line)
            if include is not None:
                constrains = include.group("option") in ("-c", "--constraint")
                queue.append((path.parent / include.group("path"), depth + 1, constrains))


def _lines(text: str) -> Iterator[str]:
    """The lines of a requirement file that are not comments."""
    return (line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _requirements(root: Path, paths: list[Path]) -> Iterator[_Requirement]:
    """Every requirement on SQLAlchemy that ``paths`` and the files they include make."""
    for file in _files(root, paths):
        if file.path.name in _LOCK_FILES:
            yield from _locked(file.relative, file.text)
            continue
        for number, line in enumerate(file.text.splitlines(), start=1):
            if line.lstrip().startswith("#"):
                continue
            for match in _REQUIREMENT.finditer(line):
                says = _what_it_says(match, binding=file.binding)
                if says is not None:
                    text_of = match.group(0).strip(" \"',[")
                    pin = DeclaredPin(file.relative, number, text_of)
                    of_sqlalchemy = _floor(match.group("name")) == _SQLALCHEMY_2
                    yield _Requirement(pin, says, of_sqlalchemy)


def declared_databases(root: Path) -> frozenset[str]:
    """The databases (``mysql``, ``postgresql``) whose drivers the project's requirement
    files name (``PyMySQL``, ``psycopg2-binary``, an extra such as ``oslo.db[mysql]`` or
    ``sqlalchemy[asyncpg]``), read where :func:`pinned_below_2` reads."""
    found = _databases(root, _top_files(root))
    return found or _databases(root, _folder_files(root))


def declared_drivers(root: Path) -> frozenset[str]:
    """The database drivers the project's requirement files name (``psycopg2`` also for
    ``psycopg2-binary``, ``psycopg`` for ``psycopg[binary]``, and those an extra pulls
    in: ``sqlalchemy[postgresql_psycopg2binary]``), read where :func:`declared_databases`
    reads."""
    found = _drivers(root, _top_files(root))
    return found or _drivers(root, _folder_files(root))


def _drivers(root: Path, paths: list[Path]) -> frozenset[str]:
    found: set[str] = set()
    for code in _code_lines(root, paths):
        found.update(_module(m.group(1)) for m in _DRIVER.finditer(code))
        for extras in _EXTRAS.finditer(code):
            for extra in extras.group(1).lower().split(","):
                module = next((d for d in _EXTRA_DRIVERS if d in extra), None)
                if module is not None:
                    found.add(module)
    return frozenset(found)


def _module(package: str) -> str:
    name = package.lower()
    return _DRIVER_MODULE.get(name, name)


def _code_lines(root: Path, paths: list[Path]) -> Iterator[str]:
    """Each requirement line of ``paths`` and what they include, less its comment."""
    for file in _files(root, paths):
        for line in _lines(file.text):
            yield line.split(" #", 1)[0]


def _databases(root: Path, paths: list[Path]) -> frozenset[str]:
    found: set[str] = set()
    for code in _code_lines(root, paths):
        found.update(_DRIVER_DATABASE[m.group(1).lower()] for m in _DRIVER.finditer(code))
        for extras in _EXTRAS.finditer(code):
            found.update(
                database
                for extra in extras.group(1).split(",")
                for word, database in _EXTRA_DATABASE
                if word in extra.lower()
            )
    return frozenset(found)


def _is_lock(path: Path, text: str) -> bool:
    """A pip-compile (or `uv pip compile`) output: what is installed, not what is allowed."""
    return path.suffix == ".txt" and (
        path.with_suffix(".in").is_file() or "pip compile" in text or "pip-compile" in text
    )


def _locked(relative: str, text: str) -> Iterator[_Requirement]:
    for match in _LOCKED.finditer(text):
        version = _version(match.group("version"))
        floor = _floor(match.group("name"))
        if version is not None and _padded(version) < floor:
            number = text.count("\n", 0, match.start()) + 1
            requirement = f"{match.group('name')}=={match.group('version')}"
            pin = DeclaredPin(relative, number, requirement)
            yield _Requirement(pin, _Says.HOLDS_BELOW_2, floor == _SQLALCHEMY_2)


def _floor(name: str) -> tuple[int, ...]:
    return _HOLD_BELOW_2.get(re.sub(r"[-_.]+", "-", name.lower()), _SQLALCHEMY_2)


def _what_it_says(match: re.Match[str], *, binding: bool) -> _Says | None:
    poetry = match.group("poetry") is not None
    spec = match.group("spec") or match.group("poetry") or ""
    clauses = _clauses(spec, poetry=poetry)
    if clauses is None:
        return None
    floor = _floor(match.group("name"))
    if floor != _SQLALCHEMY_2:
        return None if _admits(clauses, floor) else _Says.HOLDS_BELOW_2
    if _requires(clauses, floor):
        return _Says.REQUIRES_2
    if _admits(clauses, floor):
        return _Says.ALLOWS_2
    return _Says.HOLDS_BELOW_2 if binding else _Says.BELOW_2


def _clauses(spec: str, *, poetry: bool) -> list[tuple[str, tuple[int, ...]]] | None:
    """``>=1.3,<2`` as its operators and versions; None when one cannot be read."""
    clauses = []
    for clause in (c.strip() for c in spec.split(",")):
        match = _CLAUSE.fullmatch(clause) if clause else None
        version = _version(match.group(2)) if match else None
        if match is None or version is None:
            return None
        operator = match.group(1) or ("==" if poetry else "")
        if not operator:
            return None
        clauses.append((operator, version))
    return clauses


def _version(text: str) -> tuple[int, ...] | None:
    """``1.4.54`` as (1, 4, 54), ``1.4.*`` as (1, 4); None for what is not a version."""
    parts = text.strip().split(".")
    if not parts[0].isdigit():
        return None
    return tuple(_leading_number(part) for part in parts if part != "*")


def _leading_number(part: str) -> int:
    """``0rc1`` as 0: a pre-release sorts with its release here."""
    digits = part[: len(part) - len(part.lstrip("0123456789"))]
    return int(digits or 0)


def _padded(version: tuple[int, ...]) -> tuple[int, ...]:
    return (*version, 0, 0, 0)[: max(3, len(version))]


def _admits(clauses: list[tuple[str, tuple[int, ...]]], floor: tuple[int, ...]) -> bool:
    """Whether every clause admits a version at ``floor`` or later."""
    return all(_admits_one(operator, version, floor) for operator, version in clauses)


def _admits_one(operator: str, version: tuple[int, ...], floor: tuple[int, ...]) -> bool:
    if operator in ("==", "===", "<="):
        return _padded(version) >= floor
    if operator == "<":
        return _padded(version) > floor
    if operator in ("~=", "^", "~"):
        return _padded(_ceiling(operator, version)) > floor
    return True  # >=, >, !=: no upper bound


def _ceiling(operator: str, version: tuple[int, ...]) -> tuple[int, ...]:
    """The first version ``~=1.4`` (2.0), ``~=1.4.0`` (1.5), Poetry's ``^0.0.8`` (0.0.9)
    or ``~1.3`` (1.4) rules out."""
    if operator == "^":
        index = next((i for i, part in enumerate(version) if part), len(version) - 1)
    elif operator == "~":
        index = min(1, len(version) - 1)
    else:
        index = max(0, len(version) - 2)
    return (*version[:index], version[index] + 1)


def _requires(clauses: list[tuple[str, tuple[int, ...]]], floor: tuple[int, ...]) -> bool:
    """Whether some clause admits nothing below ``floor`` (``>=2.0``, ``==2.0.30``)."""
    return any(
        operator in ("==", "===", ">=", ">", "~=", "^", "~") and _padded(version) >= floor
        for operator, version in clauses
    )
