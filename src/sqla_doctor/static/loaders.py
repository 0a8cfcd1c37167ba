"""Loader options as data: which relationship paths a statement loads, and how.

``select(User).options(selectinload(User.posts).joinedload(Post.author))`` becomes one
chain of two steps; ``raiseload("*")`` a wildcard step; anything we cannot read (options
held in a variable, ``*opts``) makes the options *opaque*, which rules treat as "covers
everything" so that they stay silent.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from sqla_doctor.static.index.names import NameResolver

# Strategies that load a relationship with the parent statement (no per-row query).
EAGER = frozenset({"selectin", "joined", "subquery", "immediate", "contains_eager"})
# Strategies that make a later access raise or return nothing instead of querying.
NO_QUERY = frozenset({"raise", "raise_on_sql", "noload"})
# Relationship loader option functions (and the Load methods of the same names).
LOADER_FUNCTIONS: dict[str, str] = {
    "selectinload": "selectin",
    "joinedload": "joined",
    "subqueryload": "subquery",
    "immediateload": "immediate",
    "contains_eager": "contains_eager",
    "raiseload": "raise",
    "noload": "noload",
    "lazyload": "lazy",
    "defaultload": "default",
}
# Column options: they never load or block a relationship, so they are ignored.
COLUMN_OPTIONS = frozenset(
    {
        "load_only",
        "defer",
        "undefer",
        "undefer_group",
        "with_expression",
        "selectin_polymorphic",
        "with_loader_criteria",
        "joinedload_all",
        "Load",
    }
)
# `relationship(lazy=...)` values that load with the parent or never query.
MAPPING_EAGER = frozenset({"selectin", "joined", "subquery", "immediate"})
MAPPING_NO_QUERY = frozenset({"raise", "raise_on_sql", "noload", "dynamic", "write_only"})


@dataclass(frozen=True)
class LoadStep:
    """One step of a loader chain: ``selectinload(User.posts)`` → ("selectin", User, "posts")."""

    strategy: str
    model: str | None
    attr: str  # "*" for a wildcard


@dataclass(frozen=True)
class Options:
    """Every loader chain of one statement."""

    chains: tuple[tuple[LoadStep, ...], ...] = ()
    opaque: bool = False

    def extend(self, other: Options) -> Options:
        return Options(self.chains + other.chains, self.opaque or other.opaque)

    def strategy_for(self, path: tuple[tuple[str, str], ...]) -> str | None:
        """The strategy the options give the last step of ``path`` ((model, attr) pairs).

        ``"?"`` when the options are opaque, None when no option names that path.
        """
        if self.opaque:
            return "?"
        found: str | None = None
        depth = len(path) - 1
        for chain in self.chains:
            if len(chain) <= depth:
                continue
            if not all(_matches(chain[i], path[i]) for i in range(depth)):
                continue
            step = chain[depth]
            if step.attr == "*" or _matches(step, path[depth]):
                if step.strategy == "default":
                    continue
                # An option naming the attribute beats a wildcard.
                if step.attr != "*" or found is None:
                    found = step.strategy
        return found

    def joined_steps(self) -> list[tuple[int, tuple[LoadStep, ...]]]:
        """(depth, chain prefix) of every joined-eager step."""
        found = []
        for chain in self.chains:
            for depth, step in enumerate(chain):
                if step.strategy == "joined" and step.attr != "*":
                    found.append((depth, chain[: depth + 1]))
        return found


def _matches(step: LoadStep, element: tuple[str, str]) -> bool:
    # Matched by attribute name only: an aliased entity or a subclass names the same
    # relationship through another class, and a wrong guess here only costs silence.
    return step.attr != "*" and step.attr == element[1]


def parse_options(resolver: NameResolver, args: list[ast.expr]) -> Options:
    """The loader chains of ``.options(*args)``."""
    chains: list[tuple[LoadStep, ...]] = []
    opaque = False
    for arg in args:
        parsed = parse_loader(resolver, arg)
        if parsed is None:
            opaque = True
            continue
        chains.extend(parsed)
    return Options(tuple(chains), opaque)


def parse_loader(resolver: NameResolver, node: ast.expr) -> list[tuple[LoadStep, ...]] | None:
    """The chains one option expression stands for; [] for column-only options; None when
    it cannot be read."""
    if isinstance(node, ast.Starred) or not isinstance(node, ast.Call):
        return None
    func = node.func
    # A method on a loader: `selectinload(A.b).joinedload(B.c)`, `Load(A).selectinload(...)`,
    # `defaultload(A.b).options(selectinload(B.c), ...)`.
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):
        head = parse_loader(resolver, func.value)
        if head is None:
            return None
        prefixes = head or [()]
        if func.attr == "options":
            subs = parse_options(resolver, list(node.args))
            if subs.opaque:
                return None
            return [p + s for p in prefixes for s in subs.chains] or prefixes
        strategy = LOADER_FUNCTIONS.get(func.attr)
        if strategy is None:
            if func.attr in COLUMN_OPTIONS:
                return head
            return None
        steps = _steps(resolver, strategy, node.args)
        if steps is None:
            return None
        return [p + steps for p in prefixes]
    name = resolver.sqla_name(func)
    if name is None:
        return None
    if name == "Load":
        # `Load(User)` starts a chain at an entity; it loads nothing itself.
        return []
    if name in COLUMN_OPTIONS:
        return []
    strategy = LOADER_FUNCTIONS.get(name)
    if strategy is None:
        return None
    steps = _steps(resolver, strategy, node.args)
    if steps is None:
        return None
    return [steps]


def _steps(
    resolver: NameResolver, strategy: str, args: list[ast.expr]
) -> tuple[LoadStep, ...] | None:
    if not args:
        return None
    steps: list[LoadStep] = []
    for position, arg in enumerate(args):
        # `joinedload(A.b, B.c)`: the leading keys are defaultload (SQLAlchemy's
        # _generate_from_keys), the last gets the strategy.
        step_strategy = strategy if position == len(args) - 1 else "default"
        step = _step(resolver, step_strategy, arg)
        if step is None:
            return None
        steps.append(step)
    return tuple(steps)


def _step(resolver: NameResolver, strategy: str, node: ast.expr) -> LoadStep | None:
    # `User.posts.of_type(Admin)` / `User.posts.and_(Post.published)`.
    while (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("of_type", "and_")
    ):
        node = node.func.value
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return LoadStep(strategy, None, node.value)
    if isinstance(node, ast.Attribute):
        owner = resolver.qualify(node.value)
        return LoadStep(strategy, owner, node.attr)
    return None


def mapping_loads_eagerly(lazy: str | None) -> bool:
    return lazy in MAPPING_EAGER


def mapping_never_queries(lazy: str | None) -> bool:
    return lazy in MAPPING_NO_QUERY
