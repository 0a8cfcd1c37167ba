"""What a rule may read: the file's source and tree, parents, names, and the project index."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqla_doctor.findings import Location
from sqla_doctor.static.dataflow import DataFlow
from sqla_doctor.static.files import is_test_path
from sqla_doctor.static.flow import FlowCache, Scan
from sqla_doctor.static.index import FileFacts, ProjectIndex
from sqla_doctor.static.index.names import NameResolver

if TYPE_CHECKING:
    from sqla_doctor.config import Config

_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")


class FileContext:
    """One parsed file, as rules see it."""

    def __init__(
        self,
        path: str,
        source: str,
        tree: ast.Module,
        facts: FileFacts,
        index: ProjectIndex,
        scans: dict[int, Scan] | None = None,
    ) -> None:
        self.path = path
        self.source = source
        self.tree = tree
        self.facts = facts
        self.index = index
        self.names: NameResolver = index.resolver(facts)
        self._lines: list[str] | None = None
        # Parent links live here, not on the nodes: an attribute pointing back up would
        # make every tree a reference cycle that only the garbage collector can free.
        # Keyed by the node itself (nodes hash by identity): an id() key is a new int per
        # node, allocated on every link and every lookup.
        self.parents: dict[ast.AST, ast.AST] = {}
        self.flows = FlowCache(scans)

    @cached_property
    def in_tests(self) -> bool:
        """Whether this file is test code (see :func:`is_test_path`)."""
        return is_test_path(self.path)

    @cached_property
    def dataflow(self) -> DataFlow:
        """Reaching bindings in this file, computed once for every rule that asks."""
        return DataFlow(self)

    def close(self) -> None:
        """Drop what points back at this file (flows, data flow): without those cycles,
        reference counting frees the tree as soon as the caller lets go of it."""
        self.flows.clear()
        self.__dict__.pop("dataflow", None)
        self.__dict__.pop("_segment_lines", None)

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = self.source.splitlines()
        return self._lines

    # Positions -----------------------------------------------------------------------
    def _char_col(self, line: int, byte_col: int) -> int:
        """ast columns count UTF-8 bytes; findings and edits count characters."""
        if not 0 < line <= len(self.lines):
            return byte_col
        text = self.lines[line - 1]
        if text.isascii():
            return byte_col
        return len(text.encode("utf-8")[:byte_col].decode("utf-8", errors="replace"))

    def span(self, node: ast.AST) -> tuple[int, int, int, int]:
        """(start line, start col, end line, end col); lines 1-based, columns 0-based chars."""
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        end_line = getattr(node, "end_lineno", None) or line
        end_col = getattr(node, "end_col_offset", None)
        start = self._char_col(line, col)
        end = self._char_col(end_line, end_col) if end_col is not None else start
        return line, start, end_line, end

    def location(self, node: ast.AST) -> Location:
        line, col, end_line, end_col = self.span(node)
        return Location(self.path, line, col + 1, end_line, end_col + 1)

    def text(self, node: ast.AST) -> str:
        """``ast.get_source_segment(source, node)``, read from lines split once: the
        standard function splits the whole file on every call, which took a 10,000-line
        test module (ironic's) past the time limit."""
        end_line = getattr(node, "end_lineno", None)
        end_col = getattr(node, "end_col_offset", None)
        if end_line is None or end_col is None:
            return ""
        lines = self._segment_lines
        first, last = getattr(node, "lineno", 1) - 1, end_line - 1
        start = getattr(node, "col_offset", 0)
        if not 0 <= first <= last < len(lines):
            return ""
        if first == last:
            return lines[first].encode()[start:end_col].decode()
        return "".join(
            [
                lines[first].encode()[start:].decode(),
                *lines[first + 1 : last],
                lines[last].encode()[:end_col].decode(),
            ]
        )

    @cached_property
    def _segment_lines(self) -> list[str]:
        """The source's lines with their endings, split where the parser counts lines
        (\\n, \\r\\n, \\r, not a form feed as str.splitlines() does)."""
        return _LINE.findall(self.source)

    # Tree navigation -----------------------------------------------------------------
    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(node)

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        current = self.parent(node)
        while current is not None:
            yield current
            current = self.parent(current)

    def enclosing_scope(self, node: ast.AST) -> ast.AST:
        """The function (or lambda) whose body holds ``node``, else the module."""
        for ancestor in self.ancestors(node):
            if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return ancestor
        return self.tree

    def enclosing_statement(self, node: ast.AST) -> ast.stmt | None:
        current: ast.AST | None = node
        while current is not None and not isinstance(current, ast.stmt):
            current = self.parent(current)
        return current

    def in_async_function(self, node: ast.AST) -> bool:
        return isinstance(self.enclosing_scope(node), ast.AsyncFunctionDef)


@dataclass
class ProjectContext:
    """The whole project, for project rules: every file's facts and how to read a file."""

    root: Path
    index: ProjectIndex
    config: Config
    paths: list[Path] = field(default_factory=list)
    # What rules compute once for the whole project (the Alembic analysis), kept with it
    # so that it goes when the project goes.
    shared: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    # `fix --diff`: the text earlier passes would have written, by resolved path.
    unsaved: Mapping[Path, bytes] = field(default_factory=dict, repr=False, compare=False)

    def read_text(self, path: Path) -> str:
        """A file's text as this run sees it: unsaved fixes first, else the disk's."""
        pending = self.unsaved.get(path.resolve()) if self.unsaved else None
        if pending is not None:
            return pending.decode("utf-8-sig")
        return path.read_text(encoding="utf-8-sig")

    def display(self, path: Path) -> str:
        from sqla_doctor.static.files import display_path

        return display_path(path, self.root)
