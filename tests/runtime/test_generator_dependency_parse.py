"""SQD151 reads generator sources with ``ast``; a parse must never break the program's."""

from __future__ import annotations

import ast
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from sqla_doctor.runtime import generator_dependency


@pytest.fixture
def collections_watched() -> Iterator[None]:
    generator_dependency.watch_collections()
    threshold = gc.get_threshold()
    gc.set_threshold(50)  # collections during the parse below, every time
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def test_a_parse_from_a_finalizer_leaves_the_programs_parse_alone(
    collections_watched: None,
) -> None:
    # A leak reported from a finalizer the garbage collector runs while the program parses
    # (pytest rewriting a test module): on CPython 3.11 a nested parse made the program's
    # fail with "SystemError: AST constructor recursion depth mismatch".
    nested: list[object] = []

    class Garbage:
        def __init__(self) -> None:
            self.cycle = self

        def __del__(self) -> None:
            nested.append(generator_dependency.parse_safely("x = 1\n" * 50, "exec"))

    source = Path(ast.__file__).read_text(encoding="utf-8")
    for _ in range(5):
        for _ in range(50):
            Garbage()
        assert isinstance(ast.parse(source), ast.Module)
    assert nested, "the finalizers ran"
    assert set(nested) == {None}, "no parse inside a collection"


def test_outside_a_collection_sources_are_parsed(collections_watched: None) -> None:
    assert isinstance(generator_dependency.parse_safely("yield_ = 1", "exec"), ast.Module)
    assert generator_dependency.parse_safely("def (", "exec") is None
