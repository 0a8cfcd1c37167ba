"""``[tool.sqla-doctor]`` in pyproject.toml → one frozen Config.

Only data is read: nothing in a config file can make sqla-doctor import or run code.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SECTION = "sqla-doctor"


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class RuntimeConfig:
    """Thresholds and allowlists of the runtime doctor (``[tool.sqla-doctor.runtime]``)."""

    mode: str = "warn"
    n_plus_one_threshold: int = 2
    repeated_statement_threshold: int = 5
    attribute_reload_threshold: int = 5
    held_connection_seconds: float = 1.0
    idle_transaction_seconds: float = 5.0
    pool_saturation_ratio: float = 0.8
    over_fetch_min_columns: int = 10
    over_fetch_max_used_ratio: float = 0.3
    joined_eager_min_rows: int = 50
    joined_eager_min_factor: float = 3.0
    allow: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    show_parameters: bool = False
    max_findings: int = 1000
    explain_seq_scans: bool = False
    seq_scan_min_rows: int = 1000
    # Observe which attributes of loaded objects are read (SQD257, SQD258). Unset (None),
    # the entry point decides: on under `sqla-doctor run`, off for install() and track().
    track_reads: bool | None = None


@dataclass(frozen=True)
class Config:
    """Settings for one run. ``root`` is where relative paths and globs are anchored."""

    root: Path = field(default_factory=Path.cwd)
    source: Path | None = None
    select: tuple[str, ...] = ("ALL",)
    ignore: tuple[str, ...] = ()
    extend_select: tuple[str, ...] = ()
    per_file_ignores: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    extend_exclude: tuple[str, ...] = ()
    respect_gitignore: bool = True
    # Seconds one file's analysis may take before it is stopped and reported (0: no limit).
    file_timeout: float = 20.0
    # `check --since REVISION`: migration checks only look at revisions newer than this.
    migrations_since: str | None = None
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


_TOP_KEYS = {
    "select": "select",
    "ignore": "ignore",
    "extend-select": "extend_select",
    "per-file-ignores": "per_file_ignores",
    "exclude": "exclude",
    "extend-exclude": "extend_exclude",
    "respect-gitignore": "respect_gitignore",
    "file-timeout": "file_timeout",
    "runtime": "runtime",
}


def find_pyproject(start: Path) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` that has our section."""
    start = start.resolve()
    directory = start if start.is_dir() else start.parent
    for candidate in (directory, *directory.parents):
        path = candidate / "pyproject.toml"
        if path.is_file():
            try:
                data = _read_toml(path)
            except ConfigError:
                # A broken pyproject is only our business if it is the one with our section;
                # a broken one without it is reported when it is chosen explicitly.
                return path
            if SECTION in data.get("tool", {}):
                return path
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data: dict[str, Any] = tomllib.load(handle)
            return data
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


def load(path: Path | None = None, start: Path | None = None) -> Config:
    """Load the config from ``path``, or find it from ``start`` (default: the cwd)."""
    if path is None:
        start = (start or Path.cwd()).resolve()
        path = find_pyproject(start)
        if path is None:
            return Config(root=start if start.is_dir() else start.parent)
    data = _read_toml(path)
    section = data.get("tool", {}).get(SECTION, {})
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: [tool.{SECTION}] must be a table")
    return from_mapping(section, root=path.parent.resolve(), source=path)


def from_mapping(section: Mapping[str, Any], root: Path, source: Path | None = None) -> Config:
    where = f"{source}: [tool.{SECTION}]" if source else f"[tool.{SECTION}]"
    values: dict[str, Any] = {}
    for key, value in section.items():
        attr = _TOP_KEYS.get(key)
        if attr is None:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(_TOP_KEYS)})")
        if attr == "respect_gitignore":
            values[attr] = _bool(value, f"{where}.{key}")
        elif attr == "file_timeout":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{where}.{key} must be a non-negative number of seconds")
            values[attr] = float(value)
        elif attr == "per_file_ignores":
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{key} must be a table of glob = [codes]")
            values[attr] = {
                str(glob): _strings(codes, f"{where}.{key}.{glob}") for glob, codes in value.items()
            }
        elif attr == "runtime":
            values[attr] = _runtime(value, f"{where}.runtime")
        else:
            values[attr] = _strings(value, f"{where}.{key}")
    return Config(root=root, source=source, **values)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ConfigError(f"{where} must be a string or a list of strings, not {value!r}")


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    return value


_FIELD_TYPES = {f.name: str(f.type) for f in fields(RuntimeConfig)}


def _runtime(value: Any, where: str) -> RuntimeConfig:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    defaults = RuntimeConfig()
    changes: dict[str, Any] = {}
    for key, raw in value.items():
        attr = key.replace("-", "_")
        if not hasattr(defaults, attr):
            raise ConfigError(f"{where}: unknown key {key!r}")
        current = getattr(defaults, attr)
        if isinstance(current, bool) or _FIELD_TYPES[attr] == "bool | None":
            changes[attr] = _bool(raw, f"{where}.{key}")
        elif isinstance(current, tuple):
            changes[attr] = _strings(raw, f"{where}.{key}")
        elif isinstance(current, (int, float)) and not isinstance(raw, bool):
            if not isinstance(raw, (int, float)) or raw < 0:
                raise ConfigError(f"{where}.{key} must be a non-negative number, not {raw!r}")
            changes[attr] = type(current)(raw)
        elif isinstance(current, str) and isinstance(raw, str):
            changes[attr] = raw
        else:
            raise ConfigError(f"{where}.{key} has the wrong type: {raw!r}")
    mode = changes.get("mode", defaults.mode)
    if mode not in {"warn", "log", "raise", "collect"}:
        raise ConfigError(f"{where}.mode must be one of warn, log, raise, collect, not {mode!r}")
    return replace(defaults, **changes)
