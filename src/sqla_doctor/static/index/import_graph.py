"""Which project modules import which, from the index's import facts."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqla_doctor.static.index import ProjectIndex


class ImportGraph:
    """Which project modules import which, from the index's import facts."""

    def __init__(self, index: ProjectIndex) -> None:
        self.index = index
        self.edges: dict[str, list[tuple[str, int, bool]]] = {}
        # Modules importing a module of the project's own packages that the index does not
        # have (generated, ignored, left out): what importing them runs is unknown.
        self.blind: set[str] = set()
        # The modules each module's imports name, without the packages importing them
        # runs: `from app.api import routes` names `app.api.routes`, not `app`.
        self.named: dict[str, set[str]] = {}
        self._packages: set[str] | None = None
        for facts in index:
            found: list[tuple[str, int, bool]] = []
            named: set[str] = set()
            for item in facts.orm.imports:
                candidates = [item.module] + [f"{item.module}.{name}" for name in item.names]
                reached: list[str] = []
                for candidate in candidates:
                    reached.extend(self._with_parents(candidate))
                found.extend((module, item.line, item.in_function) for module in reached)
                named |= self._named(item.module, item.names)
                if self._unseen(item.module, reached):
                    self.blind.add(facts.module)
            self.edges[facts.module] = found
            self.named[facts.module] = named

    def _named(self, module: str, names: tuple[str, ...]) -> set[str]:
        canonical = self.index.canonical(module)
        submodules = {
            f"{canonical}.{name}" for name in names if f"{canonical}.{name}" in self.index.files
        }
        if canonical in self.index.files and (not names or len(submodules) < len(names)):
            submodules.add(canonical)
        return submodules

    def _unseen(self, module: str, reached: list[str]) -> bool:
        canonical = self.index.canonical(module)
        top = canonical.partition(".")[0]
        if top == canonical or top not in self.index.files or canonical in reached:
            return False
        if self._packages is None:
            # Every dotted prefix of a module: namespace packages (folders without an
            # `__init__.py`) hold modules without being one.
            self._packages = {
                name.rsplit(".", cut)[0]
                for name in self.index.files
                for cut in range(1, name.count(".") + 1)
            }
        return canonical not in self._packages

    def _with_parents(self, name: str) -> list[str]:
        """A module and the packages whose `__init__` importing it runs."""
        found = []
        parts = self.index.canonical(name).split(".")
        for cut in range(1, len(parts) + 1):
            module = ".".join(parts[:cut])
            if module in self.index.files:
                found.append(module)
        return found

    def before(self, module: str, line: int, whole: bool) -> set[str]:
        """Modules `module` imports before `line` (all of its module-level ones if
        `whole`, as when the call is inside a function)."""
        return {
            target
            for target, at, in_function in self.edges.get(module, ())
            # A module's own package edge (`from .db import x` in `app/__init__.py`) would
            # bring in all of its imports, the ones after `line` too.
            if target != module and (at < line or (whole and not in_function))
        }

    def closure(self, roots: set[str]) -> set[str]:
        seen: set[str] = set()
        stack = list(roots)
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            stack.extend(target for target, _, _ in self.edges.get(current, ()))
        return seen

    def importers(self, module: str) -> set[str]:
        """Modules whose imports name `module` itself (not only a module inside it)."""
        return {source for source, named in self.named.items() if module in named}

    def import_line(self, source: str, module: str) -> int:
        return min(
            (at for target, at, _ in self.edges.get(source, ()) if target == module), default=0
        )
