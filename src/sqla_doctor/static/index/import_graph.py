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
        for facts in index:
            found: list[tuple[str, int, bool]] = []
            for item in facts.orm.imports:
                candidates = [item.module] + [f"{item.module}.{name}" for name in item.names]
                for candidate in candidates:
                    for module in self._with_parents(candidate):
                        found.append((module, item.line, item.in_function))
            self.edges[facts.module] = found

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
            if at < line or (whole and not in_function)
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
        return {
            source
            for source, targets in self.edges.items()
            if any(t == module for t, _, _ in targets)
        }

    def import_line(self, source: str, module: str) -> int:
        return min(
            (at for target, at, _ in self.edges.get(source, ()) if target == module), default=0
        )
