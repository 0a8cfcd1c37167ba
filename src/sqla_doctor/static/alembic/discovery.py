"""Find the Alembic projects around the checked paths, as Alembic itself would.

Sources, in order: ``alembic.ini`` and other ``*.ini`` files with a ``script_location``
(every section, for ``alembic -n NAME`` multi-database setups), ``[tool.alembic]`` in
``pyproject.toml`` (Alembic 1.16+), and bare ``env.py`` + ``versions/`` trees (Flask-Migrate
keeps an ini without ``script_location`` inside the script directory). Config files are
read as data: ``configparser`` with Alembic's ``%(here)s`` and interpolation errors
tolerated, ``tomllib`` for TOML. Nothing is imported.
"""

from __future__ import annotations

import configparser
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqla_doctor.static.files import SKIPPED_DIRS, discover

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

_LEGACY_SPLIT = re.compile(r", *|(?: +)")
_SEPARATORS = {"space": " ", "newline": "\n", "os": os.pathsep, ":": ":", ";": ";"}
# A file whose name Alembic would load as a revision (alembic.script.base._only_source_rev_file).
_REVISION_FILE = re.compile(r"^(?!\.#|__init__)(.*\.py)$")
_URL_DIALECT = re.compile(r"^\s*([A-Za-z0-9_]+)(?:\+[A-Za-z0-9_]+)?://")
_URL_DRIVER = re.compile(r"^\s*[A-Za-z0-9_]+\+([A-Za-z0-9_]+)://")


@dataclass
class ScriptLocation:
    """One Alembic script directory: its env.py, its version folders, how it was found."""

    directory: Path
    version_dirs: list[Path]
    configs: list[Path] = field(default_factory=list)
    recursive: bool = False
    urls: list[str] = field(default_factory=list)
    _resolved: tuple[tuple[Path, ...], tuple[Path, ...]] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def env(self) -> Path | None:
        path = self.directory / "env.py"
        return path if path.is_file() else None

    @property
    def dialects(self) -> set[str]:
        """Database dialects named by the configs' ``sqlalchemy.url`` (``postgresql``, ...)."""
        found = set()
        for url in self.urls:
            match = _URL_DIALECT.match(url)
            if match and match.group(1) != "driver":  # the ini template's placeholder
                found.add(_normalise_dialect(match.group(1)))
        return found

    @property
    def drivers(self) -> set[str]:
        """Drivers the configs' ``sqlalchemy.url`` names (``psycopg2`` of
        ``postgresql+psycopg2://``); a bare ``postgresql://`` names none."""
        return {
            match.group(1).lower()
            for match in (_URL_DRIVER.match(url) for url in self.urls)
            if match is not None
        }

    def revision_files(self) -> list[Path]:
        files: list[Path] = []
        seen: set[Path] = set()
        for directory in self.version_dirs:
            if not directory.is_dir():
                continue
            walker = directory.rglob("*.py") if self.recursive else directory.glob("*.py")
            for path in sorted(walker):
                if any(part in SKIPPED_DIRS for part in path.relative_to(directory).parts):
                    continue
                if _REVISION_FILE.match(path.name) and path.is_file():
                    resolved = path.resolve()
                    if resolved not in seen:
                        seen.add(resolved)
                        files.append(path)
        return files

    def contains(self, path: Path) -> bool:
        """Whether ``path`` lies in the script directory or a version folder."""
        resolved = path.resolve()
        return any(resolved == root or root in resolved.parents for root in self._roots())

    def _roots(self) -> tuple[Path, ...]:
        key = (self.directory, *self.version_dirs)
        if self._resolved is None or self._resolved[0] != key:
            roots = tuple(p.resolve() for p in key)
            self._resolved = (key, roots)
        return self._resolved[1]


def url_dialect(url: str) -> str | None:
    """The database a URL names (``postgresql`` for ``postgres://`` too), if it names one."""
    match = _URL_DIALECT.match(url)
    return _normalise_dialect(match.group(1)) if match else None


def _normalise_dialect(name: str) -> str:
    name = name.lower()
    return {"postgres": "postgresql", "pgsql": "postgresql", "mariadb": "mysql"}.get(name, name)


class _AlembicIni(configparser.ConfigParser):
    """Alembic's ConfigParser: ``%(here)s`` is the ini's folder; bad interpolation tolerated."""

    def __init__(self, here: Path) -> None:
        super().__init__(defaults={"here": str(here)}, strict=False, interpolation=None)
        self._here = here

    def value(self, section: str, option: str) -> str | None:
        try:
            raw = self.get(section, option, raw=True, fallback=None)
        except (configparser.Error, ValueError):
            return None
        if raw is None:
            return None
        try:
            interpolated = configparser.BasicInterpolation().before_get(
                self, section, option, raw, dict(self.items(section, raw=True))
            )
            return str(interpolated).strip()
        except (configparser.Error, ValueError, KeyError):
            return raw.replace("%(here)s", str(self._here)).strip()


def read_ini(path: Path) -> list[tuple[str, dict[str, str | None]]]:
    """(section, {option: value}) for each section of an ini that holds ``script_location``."""
    parser = _AlembicIni(path.parent)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        parser.read_string(text, source=str(path))
    except (configparser.Error, OSError, UnicodeError):
        return []
    sections = []
    for section in parser.sections():
        if not parser.has_option(section, "script_location"):
            continue
        options = (
            "script_location",
            "version_locations",
            "path_separator",
            "version_path_separator",
            "recursive_version_locations",
            "sqlalchemy.url",
        )
        sections.append((section, {option: parser.value(section, option) for option in options}))
    return sections


def _split_locations(raw: str, separator: str | None) -> list[str]:
    if separator is None:
        return [part for part in _LEGACY_SPLIT.split(raw.strip()) if part]
    char = _SEPARATORS.get(separator.strip())
    if char is None:
        return [part for part in _LEGACY_SPLIT.split(raw.strip()) if part]
    if char == " ":
        return raw.split()
    return [part.strip() for part in raw.split(char) if part.strip()]


def resolve_location(value: str, base: Path, search: Iterable[Path]) -> Path | None:
    """A ``script_location``: a path (relative to the ini's folder) or ``package:subdir``."""
    value = value.strip()
    if not value:
        return None
    if ":" in value and not re.match(r"^[A-Za-z]:[\\/]", value):
        package, _, resource = value.partition(":")
        if re.fullmatch(r"[A-Za-z_][\w.]*", package):
            relative = Path(*package.split("."), *Path(resource).parts)
            for root in search:
                candidate = root / relative
                if candidate.is_dir():
                    return candidate
            return None
    candidate = Path(value)
    if not candidate.is_absolute():
        candidate = base / candidate
    return candidate


def _location_from_options(
    options: dict[str, Any], config: Path, search: list[Path]
) -> ScriptLocation | None:
    raw_location = options.get("script_location")
    if not isinstance(raw_location, str):
        return None
    directory = resolve_location(raw_location, config.parent, search)
    if directory is None or not directory.is_dir():
        return None
    versions_raw = options.get("version_locations")
    version_dirs: list[Path] = []
    if isinstance(versions_raw, list):
        entries = [str(v) for v in versions_raw]
    elif isinstance(versions_raw, str) and versions_raw.strip():
        separator = options.get("path_separator") or options.get("version_path_separator")
        entries = _split_locations(versions_raw, separator if isinstance(separator, str) else None)
    else:
        entries = []
    for entry in entries:
        resolved = resolve_location(entry, config.parent, search)
        if resolved is not None:
            version_dirs.append(resolved)
    if not version_dirs:
        version_dirs = [directory / "versions"]
    recursive = str(options.get("recursive_version_locations") or "").strip().lower() in (
        "true",
        "1",
        "yes",
        "on",
    )
    url = options.get("sqlalchemy.url")
    return ScriptLocation(
        directory=directory,
        version_dirs=version_dirs,
        configs=[config],
        recursive=recursive,
        urls=[url] if isinstance(url, str) and url else [],
    )


def _from_pyproject(path: Path, search: list[Path]) -> ScriptLocation | None:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return None
    section = data.get("tool", {}).get("alembic")
    if not isinstance(section, dict):
        return None
    options = {
        key.replace("-", "_"): value
        for key, value in section.items()
        if isinstance(value, (str, list, bool))
    }
    if isinstance(options.get("script_location"), str):
        options["script_location"] = str(options["script_location"]).replace(
            "%(here)s", str(path.parent)
        )
    versions = options.get("version_locations")
    if isinstance(versions, list):
        options["version_locations"] = [
            str(v).replace("%(here)s", str(path.parent)) for v in versions
        ]
    if isinstance(options.get("recursive_version_locations"), bool):
        options["recursive_version_locations"] = str(options["recursive_version_locations"])
    return _location_from_options(options, path, search)


def _search_roots(base: Path, root: Path) -> list[Path]:
    """Where ``package:subdir`` locations are looked for (flat and src layouts)."""
    roots = [base, base / "src", root, root / "src"]
    return list(dict.fromkeys(roots))


def _ancestors(path: Path, root: Path) -> Iterator[Path]:
    directory = path if path.is_dir() else path.parent
    root = root.resolve()
    directory = directory.resolve()
    if directory != root and root not in directory.parents:
        yield directory
        return
    while True:
        yield directory
        if directory == root or directory.parent == directory:
            return
        directory = directory.parent


def find_script_locations(
    paths: Iterable[Path],
    root: Path,
    exclude: Iterable[str] = (),
    respect_gitignore: bool = True,
) -> list[ScriptLocation]:
    """Every Alembic script location found in or above the checked paths (or the root)."""
    checked = list(paths) or [root]
    candidates: list[Path] = []
    # Config files inside the checked folders ...
    for found in discover(
        checked,
        root,
        exclude=exclude,
        respect_gitignore=respect_gitignore,
        suffixes=(".ini", "pyproject.toml", "env.py"),
    ):
        if found.suffix == ".ini" or found.name in ("pyproject.toml", "env.py"):
            candidates.append(found)
    # ... and in the folders above them up to the project root (alembic.ini sits beside
    # the package that `sqla-doctor check app/` names).
    for path in checked:
        for directory in _ancestors(path, root):
            for name in ("alembic.ini", "pyproject.toml", "env.py"):
                candidate = directory / name
                if candidate.is_file():
                    candidates.append(candidate)
            for candidate in sorted(directory.glob("*.ini")):
                candidates.append(candidate)

    by_directory: dict[Path, ScriptLocation] = {}

    def add(location: ScriptLocation) -> None:
        key = location.directory.resolve()
        existing = by_directory.get(key)
        if existing is None:
            by_directory[key] = location
            return
        for version_dir in location.version_dirs:
            if version_dir.resolve() not in {d.resolve() for d in existing.version_dirs}:
                existing.version_dirs.append(version_dir)
        existing.configs += [c for c in location.configs if c not in existing.configs]
        existing.urls += [u for u in location.urls if u not in existing.urls]
        existing.recursive = existing.recursive or location.recursive

    seen: set[Path] = set()
    bare_envs: list[Path] = []
    for candidate in candidates:
        resolved = candidate.resolve()
        if resolved in seen:
            continue
        seen.add(resolved)
        search = _search_roots(candidate.parent, root)
        if candidate.name == "env.py":
            bare_envs.append(candidate)
        elif candidate.name == "pyproject.toml":
            location = _from_pyproject(candidate, search)
            if location is not None:
                add(location)
        elif candidate.suffix == ".ini":
            for _section, options in read_ini(candidate):
                location = _location_from_options(options, candidate, search)
                if location is not None:
                    add(location)
    for env in bare_envs:
        directory = env.parent
        if directory.resolve() in by_directory:
            continue
        if (directory / "versions").is_dir() or (directory / "script.py.mako").is_file():
            ini = directory / "alembic.ini"
            add(
                ScriptLocation(
                    directory=directory,
                    version_dirs=[directory / "versions"],
                    configs=[ini] if ini.is_file() else [],
                )
            )
    return sorted(by_directory.values(), key=lambda loc: str(loc.directory))
