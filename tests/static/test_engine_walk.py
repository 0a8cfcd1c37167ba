"""The engine's walk: children found as ``ast`` finds them, crashed rules silenced, trees
left to reference counting."""

from __future__ import annotations

import ast
import gc
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from sqla_doctor.config import Config
from sqla_doctor.registry import Registry
from sqla_doctor.static.children import child_nodes
from sqla_doctor.static.engine import Engine
from sqla_doctor.static.rule import Rule, calls_to

_SKIPPED = frozenset({"ctx", "op"})

SYNTAX_TOUR = '''
import os.path as p, sys
from . import x as y
global g
async def f[T](a: int = 1, *b, c: "str" = None, **d) -> None:  # type: ignore
    nonlocal n
    async with a as (b, *c):
        async for i in b:
            print(f"{i!r:>{w}}", (j := i), *b, **d)
    try:
        pass
    except* ValueError as e:
        raise
    match a:
        case {"k": 1, **rest}:
            pass
        case Point(x=0, y=[1, *others]) | None | 1 as z:
            pass
    type Alias = list[T]
    return [k async for k in a if await k], {k: v for k, v in d}, lambda q=1: q
'''


def _expected_children(node: ast.AST) -> list[ast.AST]:
    return [
        child
        for name, value in ast.iter_fields(node)
        if name not in _SKIPPED
        for child in (value if isinstance(value, list) else [value])
        if isinstance(child, ast.AST)
    ]


def _trees() -> Iterator[ast.AST]:
    try:
        yield ast.parse(SYNTAX_TOUR, type_comments=True)
    except SyntaxError:  # `type` statements and generic functions: Python 3.12+
        tour = SYNTAX_TOUR.replace("    type Alias = list[T]\n", "").replace("[T]", "")
        yield ast.parse(tour, type_comments=True)
    import sqlalchemy.orm

    package = Path(sqlalchemy.orm.__file__).resolve().parent
    for path in sorted(package.glob("*.py")):
        yield ast.parse(path.read_bytes())


def test_child_nodes_are_the_children_ast_finds_less_ctx_and_op() -> None:
    """Fields skipped because they never hold a node really never do."""
    for tree in _trees():
        for node in ast.walk(tree):
            assert child_nodes(node) == _expected_children(node), ast.dump(node)[:200]


class _Breaks(Rule):
    """
    ## What it does
    Crashes on the second call it visits, for these tests.

    ## Why is this bad?
    It is not; it is a test probe.

    ## Example
    ```python
    x = 1
    ```
    """

    code = "SQD996"
    name = "breaks-on-second-call"
    pitfalls = ("P28",)
    message = "{what}"
    calls: ClassVar[list[int]] = []

    def visit_Call(self, node: ast.Call) -> None:
        _Breaks.calls.append(node.lineno)
        if len(_Breaks.calls) == 2:
            raise ValueError("boom")
        self.report(node, what="seen")

    def visit_Return(self, node: ast.Return) -> None:
        _Breaks.calls.append(-node.lineno)


class _Counts(Rule):
    """
    ## What it does
    Reports every call, for these tests.

    ## Why is this bad?
    It is not; it is a test probe.

    ## Example
    ```python
    x = 1
    ```
    """

    code = "SQD997"
    name = "reports-every-call"
    pitfalls = ("P28",)
    message = "{what}"

    def visit_Call(self, node: ast.Call) -> None:
        self.report(node, what="call")


def _check(tmp_path: Path, source: str) -> tuple[list[str], list[str]]:
    (tmp_path / "mod.py").write_text(textwrap.dedent(source), encoding="utf-8")
    checks = Registry([_Breaks, _Counts])
    engine = Engine(Config(root=tmp_path), {"SQD996", "SQD997"}, checks=checks)
    result = engine.check_paths([tmp_path])
    found = [f"{f.code}:{f.location.line}" for f in result.findings]
    return found, result.internal_errors


def test_a_crashed_rule_is_silenced_for_the_file_and_the_others_go_on(tmp_path: Path) -> None:
    _Breaks.calls.clear()
    found, errors = _check(
        tmp_path,
        """
        def f():
            a()
            b()
            c()
            return d()
        """,
    )
    # The crash on b() (line 4) stops every handler of that rule, visit_Return included.
    assert _Breaks.calls == [3, 4]
    assert errors == ["SQD996 crashed on mod.py:4: ValueError: boom"]
    assert found == ["SQD996:3", "SQD997:3", "SQD997:4", "SQD997:5", "SQD997:6"]


class _Engines(Rule):
    """
    ## What it does
    Visits only `create_engine()` calls and crashes on the second, for these tests.

    ## Why is this bad?
    It is not; it is a test probe.

    ## Example
    ```python
    x = 1
    ```
    """

    code = "SQD994"
    name = "visits-engine-calls"
    pitfalls = ("P28",)
    message = "{what}"
    calls: ClassVar[list[int]] = []

    @calls_to(named=("create_engine",))
    def visit_Call(self, node: ast.Call) -> None:
        _Engines.calls.append(node.lineno)
        if len(_Engines.calls) == 2:
            raise ValueError("boom")


def test_a_call_visitor_marked_with_its_callees_sees_only_those_calls(tmp_path: Path) -> None:
    _Engines.calls.clear()
    (tmp_path / "mod.py").write_text(
        textwrap.dedent(
            """
            from sqlalchemy import create_engine as make
            import sqlalchemy as sa
            make("sqlite://")
            print(make)
            sa.create_engine("sqlite://")
            sa.create_engine("sqlite://")
            sa.engine.create_mock_engine("sqlite://", None)
            """
        ),
        encoding="utf-8",
    )
    checks = Registry([_Engines, _Counts])
    engine = Engine(Config(root=tmp_path), {"SQD994", "SQD997"}, checks=checks)
    result = engine.check_paths([tmp_path])
    # The alias counts; the crash on line 6 silences the rule for the rest of the file,
    # the unmarked rule still sees every call.
    assert _Engines.calls == [4, 6]
    assert result.internal_errors == ["SQD994 crashed on mod.py:6: ValueError: boom"]
    assert [f"{f.code}:{f.location.line}" for f in result.findings] == [
        "SQD997:4", "SQD997:5", "SQD997:6", "SQD997:7", "SQD997:8"
    ]


class _Alls(Rule):
    """
    ## What it does
    Visits only calls of something named `all`, for these tests.

    ## Why is this bad?
    It is not; it is a test probe.

    ## Example
    ```python
    x = 1
    ```
    """

    code = "SQD993"
    name = "visits-all-calls"
    pitfalls = ("P28",)
    message = "{what}"

    @calls_to(ending=("all",))
    def visit_Call(self, node: ast.Call) -> None:
        self.report(node, what="all")


def test_a_call_visitor_marked_with_callee_tails_sees_calls_ending_so(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(
        "q.all()\nq.first()\nall(x)\nq.all\nf()()\n", encoding="utf-8"
    )
    engine = Engine(Config(root=tmp_path), {"SQD993"}, checks=Registry([_Alls]))
    result = engine.check_paths([tmp_path])
    assert [f"{f.code}:{f.location.line}" for f in result.findings] == ["SQD993:1", "SQD993:3"]


class _Flows(Rule):
    """
    ## What it does
    Builds the flow and the data flow of every function, for these tests.

    ## Why is this bad?
    It is not; it is a test probe.

    ## Example
    ```python
    x = 1
    ```
    """

    code = "SQD995"
    name = "builds-flows"
    pitfalls = ("P28",)
    message = "unused"

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        from sqla_doctor.static.flow import flow_for

        flow_for(self.ctx, node).sessions()
        for name in ast.walk(node):
            if isinstance(name, ast.Name):
                self.ctx.dataflow.bindings(name)


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.usefixtures("collector_off")
def test_checked_trees_are_freed_without_the_cycle_collector(tmp_path: Path) -> None:
    """Flows and data flows live beside the tree, not on it: nothing cyclic keeps a tree."""
    source = """
        from sqlalchemy.orm import Session

        class Repo:
            def __init__(self, session: Session) -> None:
                self.session = session

            def names(self):
                rows = self.session.scalars(select(User)).all()
                return [row.name for row in rows]

        def helper(session: Session):
            stmt = select(User)
            return session.scalars(stmt).all()
        """
    (tmp_path / "mod.py").write_text(textwrap.dedent(source), encoding="utf-8")
    engine = Engine(Config(root=tmp_path), {"SQD995"}, checks=Registry([_Flows]))
    result = engine.check_paths([tmp_path])
    assert result.internal_errors == []
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        leaked = [o for o in gc.garbage if isinstance(o, ast.AST)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert leaked == []
