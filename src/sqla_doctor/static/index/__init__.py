"""The project index: facts gathered from every file in a first pass, read-only to rules.

Facts are plain picklable dataclasses so that they can be cached per file and built in
worker processes, then merged.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sqla_doctor.static.index.names import ModuleNames, NameResolver


@dataclass
class FileFacts:
    """What one file contributes to the project index."""

    path: str
    module: str
    is_package: bool
    names: ModuleNames

    @classmethod
    def extract(cls, path: str, module: str, is_package: bool, tree: ast.Module) -> FileFacts:
        return cls(
            path=path,
            module=module,
            is_package=is_package,
            names=ModuleNames.collect(tree, module, is_package),
        )


@dataclass
class ProjectIndex:
    """Every module's facts by module name."""

    files: dict[str, FileFacts] = field(default_factory=dict)  # by module name
    modules: dict[str, ModuleNames] = field(default_factory=dict)

    @classmethod
    def build(cls, facts: Iterable[FileFacts]) -> ProjectIndex:
        index = cls()
        for item in facts:
            index.add(item)
        return index

    def add(self, facts: FileFacts) -> None:
        # Two files claiming one module name (scripts in different folders): first wins,
        # which keeps the result independent of worker scheduling.
        if facts.module not in self.files:
            self.files[facts.module] = facts
            self.modules[facts.module] = facts.names

    def __iter__(self) -> Iterator[FileFacts]:
        return iter(self.files.values())

    def resolver(self, facts: FileFacts) -> NameResolver:
        return NameResolver(facts.names, self.modules)
