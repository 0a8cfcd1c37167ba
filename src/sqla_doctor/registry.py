"""Every static rule, migration check and runtime detector, found automatically, by code.

A check is a class with metadata (``code``, ``name``, ``pitfalls``, ``severity``, ``fix``)
and a docstring in ruff's sections. The docstring is the single source of ``explain``,
``docs/rules/*.md`` and the SARIF rule descriptions.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import textwrap
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from typing import ClassVar

from sqla_doctor.findings import Applicability, Kind, Severity

CODE_PATTERN = re.compile(r"^SQD[1-9]\d\d$")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
PITFALL_PATTERN = re.compile(r"^P\d\d$")

REQUIRED_SECTIONS = ("What it does", "Why is this bad?", "Example")
KNOWN_SECTIONS = (
    "What it does",
    "Why is this bad?",
    "Known problems",
    "Example",
    "Options",
    "Fix safety",
    "References",
)
DOCS_BASE_URL = "https://github.com/sqla-doctor/sqla-doctor/blob/main/docs/rules"

# Packages whose modules hold one check each; importing them registers the checks.
CHECK_PACKAGES = (
    "sqla_doctor.static.rules",
    "sqla_doctor.runtime.detectors",
)


class RegistryError(Exception):
    """A check's metadata or documentation is malformed (a bug in sqla-doctor)."""


class Check:
    """Metadata every rule and detector carries. Subclasses set the class attributes."""

    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    pitfalls: ClassVar[tuple[str, ...]] = ()
    severity: ClassVar[Severity] = Severity.WARNING
    fix: ClassVar[Applicability] = Applicability.NONE
    kind: ClassVar[Kind] = Kind.STATIC
    # Short form of the problem, with ``{placeholders}`` filled in by ``report()``.
    message: ClassVar[str] = ""

    @classmethod
    def doc(cls) -> RuleDoc:
        return RuleDoc.parse(cls)


@dataclass(frozen=True)
class RuleDoc:
    """A check's documentation, split into its sections."""

    title: str
    sections: dict[str, str]

    @classmethod
    def parse(cls, check: type[Check]) -> RuleDoc:
        raw = inspect.getdoc(check) or ""
        sections: dict[str, str] = {}
        current: str | None = None
        lines: list[str] = []
        for line in raw.splitlines():
            heading = re.match(r"^##\s+(.+?)\s*$", line)
            if heading:
                if current is not None:
                    sections[current] = "\n".join(lines).strip()
                current, lines = heading.group(1), []
            elif current is not None:
                lines.append(line)
        if current is not None:
            sections[current] = "\n".join(lines).strip()
        return cls(title=f"{check.code} {check.name}", sections=sections)

    def summary(self) -> str:
        """The first sentence of "What it does", for listings and SARIF shortDescription."""
        text = " ".join(self.sections.get("What it does", "").split())
        match = re.match(r"(.+?\.)(\s|$)", text)
        return match.group(1) if match else text

    def markdown(self, check: type[Check]) -> str:
        """The rule's page, as `explain` prints it and docs/rules/CODE.md stores it."""
        header = [
            f"# {check.code}: {check.name}",
            "",
            f"- **Kind**: {check.kind.value}",
            f"- **Pitfalls**: {', '.join(check.pitfalls) or '—'}",
            f"- **Severity**: {check.severity.value}",
            f"- **Fix**: {check.fix.value}",
            "",
        ]
        body: list[str] = []
        for section in KNOWN_SECTIONS:
            if section in self.sections:
                body += [f"## {section}", "", self.sections[section], ""]
        return "\n".join(header + body).rstrip() + "\n"


def validate(check: type[Check]) -> None:
    """Raise RegistryError when a check's metadata or docs break the house rules."""
    where = f"{check.__module__}.{check.__qualname__}"
    if not CODE_PATTERN.match(check.code):
        raise RegistryError(f"{where}: code {check.code!r} is not SQD + 3 digits")
    if not NAME_PATTERN.match(check.name):
        raise RegistryError(f"{where}: name {check.name!r} is not kebab-case")
    # Only the SQD9xx meta checks (unparsable file, unused noqa) belong to no pitfall.
    if not check.pitfalls and not check.code.startswith("SQD9"):
        raise RegistryError(f"{where}: names no pitfall")
    if not all(PITFALL_PATTERN.match(p) for p in check.pitfalls):
        raise RegistryError(f"{where}: pitfalls {check.pitfalls!r} must be P01-style ids")
    if not check.message:
        raise RegistryError(f"{where}: has no message")
    doc = check.doc()
    missing = [s for s in REQUIRED_SECTIONS if not doc.sections.get(s)]
    if check.fix is not Applicability.NONE and not doc.sections.get("Fix safety"):
        missing.append("Fix safety")
    if missing:
        raise RegistryError(f"{where}: docstring lacks section(s) {', '.join(missing)}")
    unknown = set(doc.sections) - set(KNOWN_SECTIONS)
    if unknown:
        raise RegistryError(f"{where}: unknown docstring section(s) {sorted(unknown)}")


def _iter_modules(package_name: str) -> Iterator[str]:
    package = importlib.import_module(package_name)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
        yield info.name


def _concrete_checks(module_names: Iterable[str]) -> Iterator[type[Check]]:
    for module_name in module_names:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, Check)
                and value.__module__ == module.__name__
                and value.code
            ):
                yield value


class Registry:
    """All checks by code, validated: codes and names are unique, docs complete."""

    def __init__(self, checks: Iterable[type[Check]]) -> None:
        self._by_code: dict[str, type[Check]] = {}
        self._by_name: dict[str, type[Check]] = {}
        for check in checks:
            validate(check)
            for key, table in ((check.code, self._by_code), (check.name, self._by_name)):
                if key in table and table[key] is not check:
                    other = table[key]
                    raise RegistryError(
                        f"{key} is used by both {other.__module__} and {check.__module__}"
                    )
                table[key] = check

    def __iter__(self) -> Iterator[type[Check]]:
        return iter(sorted(self._by_code.values(), key=lambda c: c.code))

    def __len__(self) -> int:
        return len(self._by_code)

    def get(self, code_or_name: str) -> type[Check] | None:
        key = code_or_name.strip()
        return self._by_code.get(key.upper()) or self._by_name.get(key.lower())

    def of_kind(self, *kinds: Kind) -> list[type[Check]]:
        return [c for c in self if c.kind in kinds]

    def expand(self, selectors: Iterable[str]) -> set[str]:
        """Codes matched by selectors: a code, a prefix (``SQD2``), a name, or ``ALL``."""
        codes: set[str] = set()
        for raw in selectors:
            selector = raw.strip()
            if not selector:
                continue
            if selector.upper() == "ALL":
                codes.update(self._by_code)
                continue
            check = self.get(selector)
            if check is not None:
                codes.add(check.code)
                continue
            prefix = selector.upper()
            matched = {code for code in self._by_code if code.startswith(prefix)}
            if not matched or not prefix.startswith("SQD"):
                raise KeyError(selector)
            codes.update(matched)
        return codes


@cache
def registry(packages: tuple[str, ...] = CHECK_PACKAGES) -> Registry:
    """The registry of every check shipped with sqla-doctor (imported once per selection)."""
    names = [name for package in packages for name in _iter_modules(package)]
    return Registry(_concrete_checks(names))


def static_registry() -> Registry:
    """Only the static rules and migration checks: `check` need not import the runtime."""
    return registry(("sqla_doctor.static.rules",))


def find_check(code: str) -> type[Check] | None:
    """A check by code or name, importing the runtime detectors only when needed."""
    return static_registry().get(code) or registry().get(code)


def dedent_source(source: str) -> str:
    """Normalise an example snippet written inside a class body."""
    return textwrap.dedent(source).strip("\n") + "\n"
