"""What the first pass keeps for the second: flow scans of kept trees, nothing of broken files."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from sqla_doctor.static.engine import TreeBudget, prepare
from sqla_doctor.static.flow import FlowCache, FunctionFlow, Scan
from sqla_doctor.static.index.names import ModuleNames, NameResolver

SERVICE = textwrap.dedent(
    """
    from sqlalchemy import select
    from app.models import User

    def active_users(session):
        rows = session.scalars(select(User).where(User.active)).all()
        return [row for row in rows if row.name]
    """
)


def _function(tree: ast.Module, name: str) -> ast.FunctionDef:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise AssertionError(name)


def _shape(scan: Scan) -> list[object]:
    return [getattr(scan, field) for field in Scan.__slots__]


def test_a_kept_tree_carries_the_scans_of_its_summarised_functions(tmp_path: Path) -> None:
    path = tmp_path / "service.py"
    path.write_text(SERVICE)
    item = prepare(path, "service.py", budget=TreeBudget())
    assert item.tree is not None
    assert item.scans is not None
    node = _function(item.tree, "active_users")
    assert id(node) in item.scans

    reused = FunctionFlow(
        node, NameResolver(ModuleNames(module="service")), cache=FlowCache(item.scans)
    )
    fresh = FunctionFlow(node, NameResolver(ModuleNames(module="service")))
    # The same objects as the first pass's scan, and equal to a walk made afresh.
    assert reused.calls is item.scans[id(node)].calls
    assert _shape(Scan.of(reused)) == _shape(Scan.of(fresh))
    assert [call.func.attr for call in reused.calls if isinstance(call.func, ast.Attribute)] == [
        "all",
        "scalars",
        "where",
    ]
    assert set(reused.bindings) == {"session", "rows", "row"}


def test_a_tree_past_the_budget_goes_with_its_scans(tmp_path: Path) -> None:
    path = tmp_path / "service.py"
    path.write_text(SERVICE)
    item = prepare(path, "service.py", budget=TreeBudget(max_source_bytes=10))
    assert item.facts is not None
    assert item.tree is None
    assert item.source is None
    assert item.scans is None


def test_an_unparsable_file_keeps_its_suppressions_but_not_its_text(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def broken(:  # noqa: SQD201\n    pass\n")
    item = prepare(path, "broken.py", budget=TreeBudget())
    assert item.error is not None
    assert item.error.code == "SQD901"
    assert item.source is None
    assert item.tree is None
    assert item.suppressions is not None
    assert 1 in item.suppressions.lines
