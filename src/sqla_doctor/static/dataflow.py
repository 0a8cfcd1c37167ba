"""Intra-file data flow: which bindings of a name may reach a given use.

:class:`DataFlow` answers from one parsed file without running it: ``sql = f"..."`` two
lines up, a ``for`` target, a parameter, an import. Flow-sensitive inside the function (or
module body) that owns the name, so ``sql = "SELECT 1"`` on one line and ``sql = f"...
{x}"`` on the next are told apart; names from enclosing scopes are answered with every
binding there, because a closure or a function body runs later.

Everything is computed on demand and cached per node; rules share the file's one
:class:`DataFlow` (``ctx.dataflow``) and build their views on it: what a string is built
from (:mod:`sqla_doctor.static.strings`), what SQLAlchemy object an expression is
(:mod:`sqla_doctor.static.objects`).
"""

from __future__ import annotations

import ast
import enum
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqla_doctor.static.children import child_nodes
from sqla_doctor.static.index.models import call_tail

if TYPE_CHECKING:
    from sqla_doctor.static.context import FileContext


_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_NESTED_OR_STATEMENT = (*NESTED_SCOPES, ast.stmt)
MAX_DEPTH = 24  # how deep the views built on a DataFlow follow names before giving up
_MAX_LOOP_PASSES = 8


# Bindings -----------------------------------------------------------------------------
class BindingKind(enum.Enum):
    """How a binding gives a name its value."""

    ASSIGN = "assign"  # x = v, x: T = v, (x := v), a, b = v1, v2
    AUG_ASSIGN = "aug_assign"  # x += v: the previous value combined with v
    ANNOTATION = "annotation"  # x: T with no value (binds nothing at run time; types only)
    PARAMETER = "parameter"  # a function or lambda parameter
    LOOP = "loop"  # for x in v / [... for x in v]: one element of v
    WITH = "with"  # with v as x: what v.__enter__() returns
    IMPORT = "import"
    DEFINITION = "definition"  # def x / class x
    OTHER = "other"  # except ... as x, match captures, unpacking we cannot follow


@dataclass(frozen=True, eq=False)
class Binding:
    """One place that binds a name. Compared by identity: each is one place in the tree.

    ``value`` is the expression whose value (or, for LOOP, one element of which; for WITH,
    the context manager of which) the name receives. ``path`` locates the name inside an
    unpacking target: ``(1,)`` for ``b`` in ``for a, b in pairs``.
    """

    name: str
    kind: BindingKind
    node: ast.AST
    value: ast.expr | None = None
    path: tuple[int, ...] = ()
    annotation: ast.expr | None = None
    op: ast.operator | None = None
    target: ast.expr | None = None
    default: ast.expr | None = None

    @property
    def line(self) -> int:
        where = self.node if hasattr(self.node, "lineno") else self.target
        return int(getattr(where, "lineno", 0))


def _target_bindings(
    target: ast.expr,
    kind: BindingKind,
    node: ast.AST,
    value: ast.expr | None,
    path: tuple[int, ...] = (),
) -> Iterator[Binding]:
    """Bindings made by assigning ``value`` to ``target`` (names only; attributes bind none)."""
    if isinstance(target, ast.Name):
        yield Binding(target.id, kind, node, value=value, path=path, target=target)
    elif isinstance(target, (ast.Tuple, ast.List)):
        literal = (
            value
            if kind is BindingKind.ASSIGN
            and not path
            and isinstance(value, (ast.Tuple, ast.List))
            and len(value.elts) == len(target.elts)
            and not any(isinstance(e, ast.Starred) for e in (*value.elts, *target.elts))
            else None
        )
        for index, element in enumerate(target.elts):
            if literal is not None:
                # `a, b = "x", y`: each name gets its own element directly.
                yield from _target_bindings(element, kind, node, literal.elts[index])
            elif isinstance(element, ast.Starred):
                yield from _target_bindings(element.value, BindingKind.OTHER, node, None)
            else:
                yield from _target_bindings(element, kind, node, value, (*path, index))
    elif isinstance(target, ast.Starred):
        yield from _target_bindings(target.value, BindingKind.OTHER, node, None)


def _walrus_bindings(node: ast.AST) -> Iterator[Binding]:
    """``(x := v)`` anywhere in an expression, comprehensions included (PEP 572), lambdas not."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, ast.NamedExpr) and isinstance(current.target, ast.Name):
            yield Binding(
                current.target.id, BindingKind.ASSIGN, current, value=current.value,
                target=current.target,
            )
        for child in child_nodes(current):
            if not isinstance(child, _NESTED_OR_STATEMENT):
                stack.append(child)


def _header_expressions(stmt: ast.stmt) -> list[ast.AST]:
    """The expressions a statement evaluates itself (not those of the blocks it holds)."""
    if isinstance(stmt, (ast.If, ast.While)):
        return [stmt.test]
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return [stmt.iter]
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return [item.context_expr for item in stmt.items]
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        args = stmt.args
        defaults = [*args.defaults, *(d for d in args.kw_defaults if d is not None)]
        return [*stmt.decorator_list, *defaults]
    if isinstance(stmt, ast.ClassDef):
        return [*stmt.decorator_list, *stmt.bases, *(k.value for k in stmt.keywords)]
    if isinstance(stmt, ast.Try) or _is_try_star(stmt):
        return []
    if _is_match(stmt):
        return [stmt.subject]  # type: ignore[attr-defined]
    return [stmt]


def _is_try_star(stmt: ast.AST) -> bool:
    return type(stmt).__name__ == "TryStar"


def _is_match(stmt: ast.AST) -> bool:
    return type(stmt).__name__ == "Match"


def _simple_bindings(stmt: ast.stmt, walruses: bool = True) -> list[Binding]:
    """Bindings a non-compound statement makes, in order (walrus first: it runs first).
    ``walruses=False`` skips looking for them (the file has none)."""
    found = list(_walrus_bindings(stmt)) if walruses else []
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            found.extend(_target_bindings(target, BindingKind.ASSIGN, stmt, stmt.value))
    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        kind = BindingKind.ASSIGN if stmt.value is not None else BindingKind.ANNOTATION
        found.append(
            Binding(
                stmt.target.id, kind, stmt, value=stmt.value, annotation=stmt.annotation,
                target=stmt.target,
            )
        )
    elif isinstance(stmt, ast.AugAssign) and isinstance(stmt.target, ast.Name):
        found.append(
            Binding(
                stmt.target.id, BindingKind.AUG_ASSIGN, stmt, value=stmt.value, op=stmt.op,
                target=stmt.target,
            )
        )
    elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
        for alias in stmt.names:
            if alias.name == "*":
                continue
            local = alias.asname or alias.name.split(".")[0]
            found.append(Binding(local, BindingKind.IMPORT, stmt))
    return found


def _parameters(function: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[Binding]:
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults.extend(args.defaults)
    found = [
        Binding(a.arg, BindingKind.PARAMETER, a, annotation=a.annotation, default=d)
        for a, d in zip(positional, defaults, strict=True)
    ]
    found.extend(
        Binding(a.arg, BindingKind.PARAMETER, a, annotation=a.annotation, default=d)
        for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
    )
    for extra in (args.vararg, args.kwarg):
        if extra is not None:
            found.append(Binding(extra.arg, BindingKind.OTHER, extra, annotation=extra.annotation))
    return found


def _statement_blocks(stmt: ast.stmt) -> list[list[ast.stmt]]:
    blocks: list[list[ast.stmt]] = []
    for name in ("body", "orelse", "finalbody"):
        block = getattr(stmt, name, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            blocks.append(block)
    for handler in getattr(stmt, "handlers", ()) or ():
        blocks.append(handler.body)
    for case in getattr(stmt, "cases", ()) or ():
        blocks.append(case.body)
    return blocks


def _compound_bindings(stmt: ast.stmt) -> list[Binding]:
    """Bindings a compound statement makes in its header (targets, `as` names, def names)."""
    found: list[Binding] = []
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        found.extend(_target_bindings(stmt.target, BindingKind.LOOP, stmt, stmt.iter))
    elif isinstance(stmt, (ast.With, ast.AsyncWith)):
        for item in stmt.items:
            if item.optional_vars is not None:
                found.extend(
                    _target_bindings(item.optional_vars, BindingKind.WITH, stmt, item.context_expr)
                )
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        found.append(Binding(stmt.name, BindingKind.DEFINITION, stmt))
    elif isinstance(stmt, ast.Try) or _is_try_star(stmt):
        for handler in stmt.handlers:  # type: ignore[attr-defined]
            if handler.name:
                found.append(Binding(handler.name, BindingKind.OTHER, handler))
    elif _is_match(stmt):
        for case in stmt.cases:  # type: ignore[attr-defined]
            for sub in ast.walk(case.pattern):
                name = getattr(sub, "name", None) or getattr(sub, "rest", None)
                if isinstance(name, str):
                    found.append(Binding(name, BindingKind.OTHER, sub))
    return found


def _is_compound(stmt: ast.stmt) -> bool:
    return isinstance(
        stmt, (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try)
    ) or _is_try_star(stmt) or _is_match(stmt)


def _declared(body: Sequence[ast.stmt], kind: type[ast.Global] | type[ast.Nonlocal]) -> set[str]:
    names: set[str] = set()
    stack = list(body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, kind):
            names.update(stmt.names)
        elif not isinstance(stmt, NESTED_SCOPES):
            for block in _statement_blocks(stmt):
                stack.extend(block)
    return names


@dataclass
class _Scope:
    node: ast.AST
    bindings: dict[str, list[Binding]]
    global_names: set[str]
    nonlocal_names: set[str]


class _Reach:
    """Reaching definitions of one name at one use, by walking the owning scope's body once.

    Loops are walked to a fixpoint; ``try`` handlers start from every state the body may
    have been in; ``return``/``raise``/``break``/``continue`` end their path.
    """

    def __init__(self, flow: DataFlow, name: str, on_path: set[int]) -> None:
        self.flow = flow
        self.name = name
        self.on_path = on_path
        self.found: set[Binding] = set()
        self.loops: list[tuple[list[frozenset[Binding]], list[frozenset[Binding]]]] = []

    def apply(self, state: frozenset[Binding], bindings: Iterable[Binding]) -> frozenset[Binding]:
        for binding in bindings:
            if binding.name != self.name:
                continue
            if binding.kind is BindingKind.ANNOTATION:
                state = state | {binding}
            else:
                state = frozenset({binding})
        return state

    def block(
        self, stmts: Sequence[ast.stmt], state: frozenset[Binding] | None
    ) -> frozenset[Binding] | None:
        for stmt in stmts:
            if state is None:
                return None
            state = self.statement(stmt, state)
        return state

    def statement(self, stmt: ast.stmt, state: frozenset[Binding]) -> frozenset[Binding] | None:
        on_path = id(stmt) in self.on_path
        if not _is_compound(stmt) and not isinstance(stmt, NESTED_SCOPES):
            if on_path:
                self.found |= state
            if isinstance(stmt, (ast.Return, ast.Raise)):
                return None
            if isinstance(stmt, (ast.Break, ast.Continue)):
                if self.loops:
                    self.loops[-1][0 if isinstance(stmt, ast.Break) else 1].append(state)
                return None
            if isinstance(stmt, ast.Delete):
                targets = [t for t in stmt.targets if isinstance(t, ast.Name)]
                if any(t.id == self.name for t in targets):
                    return frozenset()
            return self.apply(state, self.flow.simple_bindings(stmt))
        if isinstance(stmt, NESTED_SCOPES):
            # Walked only when the use is in a decorator, default, annotation or base (a
            # use inside the body belongs to that scope), or is the class statement itself.
            if on_path:
                self.found |= state
            return self.apply(state, self.flow.compound_bindings(stmt))
        headers = _header_expressions(stmt)
        if on_path and any(id(h) in self.on_path for h in headers):
            self.found |= state
        state = self.apply(state, self.flow.header_walruses(stmt))
        if isinstance(stmt, ast.If):
            return _union(self.block(stmt.body, state), self.block(stmt.orelse, state))
        if isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            return self.loop(stmt, state)
        if isinstance(stmt, (ast.With, ast.AsyncWith)):
            return self.block(stmt.body, self.apply(state, self.flow.compound_bindings(stmt)))
        if isinstance(stmt, ast.Try) or _is_try_star(stmt):
            return self.try_(stmt, state)
        if _is_match(stmt):
            outs: list[frozenset[Binding] | None] = [state]
            for case in stmt.cases:  # type: ignore[attr-defined]
                captured = [
                    b for b in self.flow.compound_bindings(stmt)
                    if any(b.node is sub for sub in ast.walk(case.pattern))
                ]
                case_state = self.apply(state, captured)
                if case.guard is not None and id(case.guard) in self.on_path:
                    self.found |= case_state
                outs.append(self.block(case.body, case_state))
            return _union(*outs)
        return state

    def loop(
        self, stmt: ast.For | ast.AsyncFor | ast.While, state: frozenset[Binding]
    ) -> frozenset[Binding] | None:
        targets = self.flow.compound_bindings(stmt) if not isinstance(stmt, ast.While) else []
        head = state
        breaks: list[frozenset[Binding]] = []
        for _ in range(_MAX_LOOP_PASSES):
            if isinstance(stmt, ast.While) and id(stmt.test) in self.on_path:
                self.found |= head
            self.loops.append(([], []))
            out = self.block(stmt.body, self.apply(head, targets))
            breaks, continues = self.loops.pop()
            new_head = _union(head, out, *continues) or head
            if new_head == head:
                break
            head = new_head
        endless = isinstance(stmt, ast.While) and _is_true(stmt.test)
        after = None if endless else self.block(stmt.orelse, head)
        return _union(after, *breaks)

    def try_(self, stmt: ast.stmt, state: frozenset[Binding]) -> frozenset[Binding] | None:
        body: list[ast.stmt] = stmt.body  # type: ignore[attr-defined]
        body_out = self.block(body, state)
        anywhere = frozenset(b for b in self.flow.block_bindings(body) if b.name == self.name)
        entry = state | anywhere | (body_out or frozenset())
        outs: list[frozenset[Binding] | None] = []
        caught = self.flow.compound_bindings(stmt)
        for handler in stmt.handlers:  # type: ignore[attr-defined]
            named = [b for b in caught if b.node is handler]
            outs.append(self.block(handler.body, self.apply(entry, named)))
        orelse: list[ast.stmt] = stmt.orelse  # type: ignore[attr-defined]
        outs.append(self.block(orelse, body_out) if body_out is not None else None)
        merged = _union(*outs)
        finalbody: list[ast.stmt] = stmt.finalbody  # type: ignore[attr-defined]
        if not finalbody:
            return merged
        return self.block(finalbody, _union(merged, entry) or entry)


def _union(*states: frozenset[Binding] | None) -> frozenset[Binding] | None:
    result: frozenset[Binding] | None = None
    for state in states:
        if state is not None:
            result = state if result is None else result | state
    return result


def _is_true(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and bool(node.value) is True


def string_annotation(text: str) -> ast.expr | None:
    """The expression a string annotation (``"State | None"``) spells, if it parses."""
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError:
        return None


def node_position(node: ast.AST) -> tuple[int, int]:
    """(line, column) where ``node`` starts, for ordering nodes in source order."""
    return int(getattr(node, "lineno", 0)), int(getattr(node, "col_offset", 0))


class DataFlow:
    """Which bindings of a name may reach a use, in one file (parents must be linked)."""

    def __init__(self, ctx: FileContext) -> None:
        self.ctx = ctx
        self._scopes: dict[int, _Scope] = {}
        self._cache: dict[int, tuple[Binding, ...]] = {}
        # Bindings are made once per statement: the reaching walk compares them by
        # identity, and its loop fixpoint only converges if they stay the same objects.
        self._simple: dict[int, list[Binding]] = {}
        self._compound: dict[int, list[Binding]] = {}
        self._header_walruses: dict[int, list[Binding]] = {}
        self._blocks: dict[int, list[Binding]] = {}
        # `(x := v)`, `global x` and `nonlocal x` are spelt with their tokens: a file
        # without them has none, and looking for them walks every statement or expression.
        self._walruses = ":=" in ctx.source
        self._globals = "global" in ctx.source
        self._nonlocals = "nonlocal" in ctx.source

    # Bindings per statement --------------------------------------------------------
    def simple_bindings(self, stmt: ast.stmt) -> list[Binding]:
        found = self._simple.get(id(stmt))
        if found is None:
            found = self._simple[id(stmt)] = _simple_bindings(stmt, self._walruses)
        return found

    def compound_bindings(self, stmt: ast.stmt) -> list[Binding]:
        found = self._compound.get(id(stmt))
        if found is None:
            found = self._compound[id(stmt)] = [
                *self.header_walruses(stmt), *_compound_bindings(stmt)
            ]
        return found

    def header_walruses(self, stmt: ast.stmt) -> list[Binding]:
        if not self._walruses:
            return []
        found = self._header_walruses.get(id(stmt))
        if found is None:
            found = self._header_walruses[id(stmt)] = [
                b for h in _header_expressions(stmt) if h is not stmt for b in _walrus_bindings(h)
            ]
        return found

    def block_bindings(self, body: Sequence[ast.stmt]) -> list[Binding]:
        """Every binding in ``body`` and the blocks it holds, nested scopes excluded."""
        key = id(body)
        found = self._blocks.get(key)
        if found is not None:
            return found
        found = []
        stack = list(reversed(body))
        while stack:
            stmt = stack.pop()
            if isinstance(stmt, NESTED_SCOPES) or _is_compound(stmt):
                found.extend(self.compound_bindings(stmt))
                if isinstance(stmt, NESTED_SCOPES):
                    continue
                for block in reversed(_statement_blocks(stmt)):
                    stack.extend(reversed(block))
            else:
                found.extend(self.simple_bindings(stmt))
        self._blocks[key] = found
        return found

    # Scopes ------------------------------------------------------------------------
    def scope_of(self, node: ast.AST) -> ast.AST:
        """The function, lambda, class or module whose namespace ``node`` is evaluated in."""
        child = node
        for ancestor in self.ctx.ancestors(node):
            if isinstance(ancestor, _SCOPES):
                if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    # Decorators, defaults, bases and annotations run in the enclosing scope.
                    inside = [*ancestor.body]
                    if not any(child is stmt for stmt in inside):
                        child = ancestor
                        continue
                if isinstance(ancestor, ast.Lambda) and child is not ancestor.body:
                    child = ancestor
                    continue
                return ancestor
            child = ancestor
        return self.ctx.tree

    def _scope(self, node: ast.AST) -> _Scope:
        cached = self._scopes.get(id(node))
        if cached is not None:
            return cached
        bindings: dict[str, list[Binding]] = {}
        body: list[ast.stmt] = []
        if isinstance(node, _FUNCTIONS):
            for parameter in _parameters(node):
                bindings.setdefault(parameter.name, []).append(parameter)
            if isinstance(node, ast.Lambda):
                for walrus in _walrus_bindings(node.body) if self._walruses else ():
                    bindings.setdefault(walrus.name, []).append(walrus)
            else:
                body = node.body
        elif isinstance(node, (ast.Module, ast.ClassDef)):
            body = node.body
        for binding in self.block_bindings(body):
            bindings.setdefault(binding.name, []).append(binding)
        scope = _Scope(
            node,
            bindings,
            _declared(body, ast.Global) if self._globals else set(),
            _declared(body, ast.Nonlocal) if self._nonlocals else set(),
        )
        self._scopes[id(node)] = scope
        return scope

    def scope_bindings(self, scope: ast.AST, name: str) -> tuple[Binding, ...]:
        """Every binding of ``name`` in ``scope`` (flow-insensitive, nested scopes excluded)."""
        return tuple(self._scope(scope).bindings.get(name, ()))

    # Reaching bindings -------------------------------------------------------------
    def bindings(self, name: ast.Name) -> tuple[Binding, ...]:
        """The bindings of ``name`` that may reach it; () when it is bound nowhere in the file.

        In its own scope, only the bindings that reach this point along some path; from an
        enclosing function or the module, all of that scope's bindings.
        """
        cached = self._cache.get(id(name))
        if cached is None:
            cached = self._compute(name)
            self._cache[id(name)] = cached
        return cached

    def bindings_before(self, binding: Binding) -> tuple[Binding, ...]:
        """For ``x += v`` (or ``x = x + v``): the bindings of ``x`` reaching that statement."""
        target = binding.target
        if isinstance(target, ast.Name):
            return self.bindings(target)
        return ()

    def _compute(self, name: ast.Name) -> tuple[Binding, ...]:
        comprehension = self._comprehension_bindings(name)
        if comprehension:
            return comprehension
        use: ast.AST = name
        scope = self.scope_of(name)
        flow_sensitive = True
        while True:
            info = self._scope(scope)
            if name.id in info.global_names:
                module = self.scope_bindings(self.ctx.tree, name.id)
                if flow_sensitive and name.id in info.bindings:
                    # `global x; x = ...; use(x)`: this function's own assignments first.
                    return self._reaching(scope, name.id, use, frozenset(module))
                return module
            if name.id in info.bindings and name.id not in info.nonlocal_names:
                if flow_sensitive:
                    return self._reaching(scope, name.id, use)
                return tuple(info.bindings[name.id])
            if isinstance(scope, ast.Module):
                return ()
            outer = self.scope_of(scope)
            if isinstance(scope, ast.ClassDef):
                # A class body sees the enclosing scope as it is where the class is defined.
                use = scope
            else:
                # A function body runs later: every binding of the enclosing scope counts,
                # and methods do not see their class's attributes.
                flow_sensitive = False
                while isinstance(outer, ast.ClassDef):
                    outer = self.scope_of(outer)
            scope = outer

    def _reaching(
        self, scope: ast.AST, name: str, use: ast.AST, start: frozenset[Binding] | None = None
    ) -> tuple[Binding, ...]:
        info = self._scope(scope)
        if isinstance(scope, ast.Lambda):
            return tuple(info.bindings.get(name, ()))
        on_path = {id(use)}
        on_path.update(id(a) for a in self.ctx.ancestors(use))
        walker = _Reach(self, name, on_path)
        if start is None:
            start = frozenset(
                b for b in info.bindings.get(name, ()) if b.kind is BindingKind.PARAMETER
            )
        body: list[ast.stmt] = getattr(scope, "body", [])
        walker.block(body, start)
        return tuple(sorted(walker.found, key=lambda b: node_position(b.node)))

    def _comprehension_bindings(self, name: ast.Name) -> tuple[Binding, ...]:
        for ancestor in self.ctx.ancestors(name):
            if isinstance(ancestor, _SCOPES):
                return ()
            if not isinstance(ancestor, _COMPREHENSIONS):
                continue
            generators = ancestor.generators
            # Targets bind for what follows them; the first iterable runs outside.
            limit = len(generators)
            for index, generator in enumerate(generators):
                if contains_node(generator.iter, name):
                    limit = index
                    break
                if contains_node(generator, name):
                    limit = index + 1
                    break
            found = [
                b
                for generator in generators[:limit]
                for b in self._generator_bindings(generator)
                if b.name == name.id
            ]
            if found:
                return (found[-1],)
        return ()

    def _generator_bindings(self, generator: ast.comprehension) -> list[Binding]:
        found = self._compound.get(id(generator))
        if found is None:
            found = self._compound[id(generator)] = list(
                _target_bindings(generator.target, BindingKind.LOOP, generator, generator.iter)
            )
        return found

    # Mutations ---------------------------------------------------------------------
    def method_calls(self, name: ast.Name, methods: Iterable[str]) -> list[ast.Call]:
        """Calls ``name.<method>(...)`` in the scope owning ``name``, placed before it.

        For containers filled step by step: ``parts.append(f"... {x}")``.
        """
        wanted = set(methods)
        return [
            node
            for node in self._before_in_scope(name)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in wanted
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == name.id
        ]

    def item_stores(self, name: ast.Name) -> list[ast.Subscript]:
        """Targets ``name[key] = ...`` (or ``+=``) in the scope owning ``name``, placed
        before it: a container filled item by item."""
        return [
            node
            for node in self._before_in_scope(name)
            if isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id == name.id
        ]

    def _before_in_scope(self, name: ast.Name) -> Iterator[ast.AST]:
        """The nodes of the scope owning ``name`` (nested scopes left out) before it."""
        limit = node_position(name)
        body: list[ast.stmt] = getattr(self.scope_of(name), "body", [])
        if not isinstance(body, list):
            return
        for stmt in body:
            for node in walk_scope(stmt):
                if node_position(node) < limit:
                    yield node

    def function_named(self, name: ast.Name) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
        """The ``def`` a name refers to, when that is the only thing it is bound to here."""
        bindings = self.bindings(name)
        if len(bindings) == 1:
            node = bindings[0].node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                return node
        return None


def walk_scope(node: ast.AST) -> Iterator[ast.AST]:
    """``ast.walk`` that does not enter nested functions, lambdas or classes."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        for child in child_nodes(current):
            if not isinstance(child, NESTED_SCOPES):
                stack.append(child)


def last_name(expr: ast.expr) -> str:
    """``Depends`` for both ``Depends`` and ``fastapi.Depends``; "" for anything else."""
    return call_tail(expr) or ""


def contains_node(tree: ast.AST, node: ast.AST) -> bool:
    """Whether ``node`` is ``tree`` or lies inside it."""
    return any(sub is node for sub in ast.walk(tree))
