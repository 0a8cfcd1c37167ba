"""Which project modules a module imports when it runs, followed transitively.

Importing ``app.models.user`` runs ``app/__init__.py`` and ``app/models/__init__.py`` first;
``from app.models import user`` imports the submodule; ``from .user import *`` imports
``user``. Imports under ``if TYPE_CHECKING:`` never run and are not followed (a linter
moving a model import there is one way env.py loses its models). Imports inside functions
are followed: env.py calls its functions, and following more only makes the check quieter.
A module that imports by name at run time (``importlib.import_module``, ``__import__``,
``pkgutil.walk_packages``) makes the result unknowable, and says so, unless the name is a
literal: ``importlib.import_module("app.models")`` and oslo's
``importutils.try_import("app.models")`` import that module like an import statement.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqla_doctor.static.index.models import DYNAMIC_IMPORT_CALLS, call_tail, is_type_checking
from sqla_doctor.static.index.names import resolve_relative


@dataclass
class ModuleSource:
    """A module's file, parsed once."""

    name: str
    path: Path
    is_package: bool
    tree: ast.Module | None
    source: str = ""


@dataclass
class Reached:
    """The modules reached from a start, and whether dynamic imports make it incomplete."""

    modules: dict[str, tuple[str, ...]] = field(default_factory=dict)  # module → import chain
    # Modules that import dynamically, or import a module of the project's own packages
    # that is not there to read (generated, ignored, left out): what they run is unknown.
    dynamic: list[str] = field(default_factory=list)


# Calls whose first argument, a literal absolute module name, is the module they import.
_LITERAL_IMPORTERS = frozenset({"import_module", "try_import", "__import__"})


def _literal_import(node: ast.AST) -> str | None:
    if not (isinstance(node, ast.Call) and call_tail(node.func) in _LITERAL_IMPORTERS):
        return None
    if not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    name = node.args[0].value
    if isinstance(name, str) and name and not name.startswith("."):
        return name
    return None


def imported_names(
    tree: ast.Module, module: str, is_package: bool
) -> Iterator[tuple[str, tuple[str, ...]]]:
    """(module, names imported from it) for each import that runs; ``*`` for star imports."""
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = resolve_relative(module, is_package, node.level, node.module)
            yield base, tuple(alias.name for alias in node.names)
        elif (literal := _literal_import(node)) is not None:
            yield literal, ()


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def dynamic_import(tree: ast.Module) -> bool:
    return any(
        isinstance(node, ast.Call)
        and call_tail(node.func) in DYNAMIC_IMPORT_CALLS
        and _literal_import(node) is None
        for node in ast.walk(tree)
    )


class ModuleMap:
    """Dotted module names → files, from the project index and from the folders given."""

    def __init__(self, known: dict[str, Path], search: Iterable[Path]) -> None:
        self.known = dict(known)
        self.search = [p for p in dict.fromkeys(search) if p.is_dir()]
        self._parsed: dict[str, ModuleSource | None] = {}

    def locate(self, name: str) -> Path | None:
        path = self.known.get(name)
        if path is not None:
            return path
        parts = name.split(".")
        if not all(part.isidentifier() for part in parts):
            return None
        for base in self.search:
            candidate = base.joinpath(*parts)
            for path in (candidate.with_name(candidate.name + ".py"), candidate / "__init__.py"):
                if path.is_file():
                    self.known[name] = path
                    return path
        return None

    def load(self, name: str) -> ModuleSource | None:
        if name in self._parsed:
            return self._parsed[name]
        path = self.locate(name)
        loaded: ModuleSource | None = None
        if path is not None:
            try:
                source = path.read_text(encoding="utf-8", errors="replace")
                tree: ast.Module | None = ast.parse(source)
            except (OSError, SyntaxError, ValueError, RecursionError):
                tree, source = None, ""
            loaded = ModuleSource(name, path, path.name == "__init__.py", tree, source)
        self._parsed[name] = loaded
        return loaded

    def reach(self, start: str, tree: ast.Module, is_package: bool = False) -> Reached:
        """Every project module importing ``start`` (given as its tree) runs."""
        reached = Reached()
        queue: list[tuple[str, ast.Module, bool, tuple[str, ...]]] = [(start, tree, is_package, ())]
        if dynamic_import(tree):
            reached.dynamic.append(start)
        while queue:
            module, module_tree, package, chain = queue.pop(0)
            for target, names in imported_names(module_tree, module, package):
                for candidate in self._targets(target, names):
                    if candidate in reached.modules or candidate == start:
                        continue
                    loaded = self.load(candidate)
                    if loaded is None:
                        if self._unseen(candidate) and module not in reached.dynamic:
                            reached.dynamic.append(module)
                        continue
                    reached.modules[candidate] = (*chain, module)
                    if loaded.tree is None:
                        continue
                    if dynamic_import(loaded.tree):
                        reached.dynamic.append(candidate)
                    queue.append((candidate, loaded.tree, loaded.is_package, (*chain, module)))
        return reached

    def _unseen(self, name: str) -> bool:
        """Whether ``name``, not found, lies in a package of the project (its top level is
        there) and is no folder either (a namespace package holds modules, not code)."""
        top = name.partition(".")[0]
        if top == name or self.locate(top) is None:
            return False
        prefix = name + "."
        if any(known.startswith(prefix) for known in self.known):
            return False
        return not any(base.joinpath(*name.split(".")).is_dir() for base in self.search)

    def _targets(self, target: str, names: tuple[str, ...]) -> list[str]:
        if not target:
            return []
        parts = target.split(".")
        result = [".".join(parts[: i + 1]) for i in range(len(parts))]
        for name in names:
            if name != "*" and self.locate(f"{target}.{name}") is not None:
                result.append(f"{target}.{name}")
        return result
