"""Which relationships a piece of code navigates on ORM objects, and which of those load.

Shared by the loading rules (N+1 in a loop, lazy loads in async code, detached access):
given a name that holds ORM objects (a loop variable over query results, an object from
``session.get``), find every relationship read on it — directly (``user.posts``), through
attribute chains (``post.author.profile``), through methods and properties of the model
(``user.to_dict()``), through a project function it is passed to (``render(user)``), and
through Pydantic models that read attributes (``UserOut.model_validate(user)``, FastAPI's
``response_model``) — and decide whether each is loaded by the statement or the mapping.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass

from sqla_doctor.static.flow import (
    Binding,
    FunctionFlow,
    InstanceValue,
    ObjectsValue,
    contains,
    evolve,
)
from sqla_doctor.static.index import FunctionFacts, ProjectIndex, Relationship
from sqla_doctor.static.index.models import keyword, target_of_type
from sqla_doctor.static.index.names import NameResolver
from sqla_doctor.static.loaders import EAGER, MAPPING_EAGER, MAPPING_NO_QUERY, NO_QUERY, Options

MAX_DEPTH = 4
_VALIDATORS = frozenset({"model_validate", "from_orm", "validate", "parse_obj"})
# marshmallow's Schema methods that read the object's attributes.
SCHEMA_DUMPERS = frozenset({"dump", "dumps"})
# Functions that read every field of a dataclass (a MappedAsDataclass model's
# relationships are fields).
_DATACLASS_WALKERS = frozenset({"dataclasses.asdict", "dataclasses.astuple"})
_ROUTE_METHODS = frozenset(
    {"get", "post", "put", "patch", "delete", "api_route", "route", "head", "options"}
)


def route_decorators(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Call]:
    """The ``@app.get(...)``/``@router.post(...)`` decorators that make a web route of it."""
    return [
        decorator
        for decorator in function.decorator_list
        if isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr in _ROUTE_METHODS
    ]


_PYTEST_FIXTURES = frozenset({"pytest.fixture", "pytest.yield_fixture", "pytest_asyncio.fixture"})


def is_pytest_fixture(
    names: NameResolver, function: ast.FunctionDef | ast.AsyncFunctionDef
) -> bool:
    """``@pytest.fixture`` (bare or called, also pytest-asyncio's): pytest runs the code
    after its ``yield`` when the test is done, whether the test failed or not."""
    return any(
        names.qualify(d.func if isinstance(d, ast.Call) else d) in _PYTEST_FIXTURES
        for d in function.decorator_list
    )


@dataclass(frozen=True)
class LazyAccess:
    """A relationship read that the statement's options and the mapping leave unloaded."""

    rel: Relationship
    node: ast.AST  # where to report
    objects: ObjectsValue  # the objects it is read on (origin, options, path)
    path: tuple[tuple[str, str], ...]  # from the loaded entity to this relationship
    via: str | None = None  # "`render()` (app/views.py:3)" when read by a helper
    per_row: bool = True  # once per row of a collection (an N+1)
    # The base class the rows were queried as, when ``rel`` is one of its subclasses'.
    base: str | None = None


def back_to_parent(
    index: ProjectIndex, access: LazyAccess, path: tuple[tuple[str, str], ...]
) -> bool:
    """Whether ``access``, on objects reached by the relationship ``path``, reads back the
    one object that collection hangs from (``for alert in query.alerts: alert.query``):
    a many-to-one the identity map answers without SQL (and without IO in async code);
    whatever is read through it is loaded once, not per row."""
    depth = len(path)
    if not depth or len(access.path) <= depth or access.path[:depth] != path:
        return False
    down = index.relationship(*path[-1])
    up = index.relationship(*access.path[depth])
    if down is None or up is None or up.collection or up.target != down.owner:
        return False
    if up.backref_of == (down.owner, down.attr) or down.backref_of == (up.owner, up.attr):
        return True
    down_pair = down.facts.back_populates if down.facts is not None else None
    up_pair = up.facts.back_populates if up.facts is not None else None
    return down_pair == up.attr or up_pair == down.attr


def shared_by_every_row(index: ProjectIndex, access: LazyAccess, rows: ObjectsValue) -> bool:
    """Whether ``access`` reads a many-to-one whose foreign key the query pinned to one
    value (``where(Post.author_id == uid)``, then ``post.author``): every row points at
    the same object, loaded once and then found in the identity map."""
    pinned = rows.stmt.pinned if rows.stmt is not None else rows.pinned
    if not pinned or rows.path or not access.path:
        return False
    rel = index.relationship(*access.path[0])
    if rel is None or rel.collection is not False or rel.target is None:
        return False
    owner, target = index.model(rel.owner), index.model(rel.target)
    if owner is None or target is None:
        return False
    paths = index.foreign_key_paths(owner, target)
    return len(paths) == 1 and set(next(iter(paths))) <= pinned


# The loader function that spells a strategy an option already gives a step.
_LOADER_OF = {
    "selectin": "selectinload",
    "joined": "joinedload",
    "subquery": "subqueryload",
    "immediate": "immediateload",
    "contains_eager": "contains_eager",
    "lazy": "lazyload",
}


def option_steps(
    index: ProjectIndex, path: tuple[tuple[str, str], ...], options: Options | None = None
) -> list[tuple[str, str, str]]:
    """(loader, model, attribute) for each step of the chain that eager-loads ``path``'s
    last relationship. The steps before it keep what already loads them: the statement's
    own option (``joinedload(User.posts)`` continues as ``joinedload(User.posts)
    .selectinload(Post.comments)``, never a second, conflicting ``selectinload(User.posts)``),
    or the mapping's eager ``lazy=`` (``defaultload(User.posts)`` leaves it in charge)."""
    steps: list[tuple[str, str, str]] = []
    for depth, (model, attr) in enumerate(path):
        rel = index.relationship(model, attr)
        loader = "selectinload" if rel is None or rel.collection else "joinedload"
        if depth < len(path) - 1:
            strategy = options.strategy_for(path[: depth + 1]) if options is not None else None
            if strategy in _LOADER_OF:
                loader = _LOADER_OF[strategy]
            elif strategy is None and rel is not None and rel.lazy in MAPPING_EAGER:
                loader = "defaultload"
        steps.append((loader, model, attr))
    return steps


def option_text(
    index: ProjectIndex,
    path: tuple[tuple[str, str], ...],
    options: Options | None = None,
    alias: str | None = None,
) -> str:
    """The loader chain that eager-loads ``path``: ``selectinload(User.posts)``,
    ``selectinload(User.posts).joinedload(Post.author)`` (see :func:`option_steps`).
    Its first step names ``alias``, the ``aliased()`` entity the rows were loaded as,
    when given: ``selectinload(top.posts)``."""
    return ".".join(
        f"{loader}({alias if depth == 0 and alias else model.rpartition('.')[2]}.{attr})"
        for depth, (loader, model, attr) in enumerate(option_steps(index, path, options))
    )


def access_option(index: ProjectIndex, access: LazyAccess) -> str:
    """The loader chain that eager-loads what ``access`` reads, its first step on the
    entity the rows were loaded as (an ``aliased()`` one by its name)."""
    return option_text(index, access.path, access.objects.options, access.objects.alias)


def closed_before(flow: FunctionFlow, objects: ObjectsValue, node: ast.AST) -> bool:
    """Whether the session that loaded ``objects`` is closed before ``node`` runs: they
    were returned by a function that closes its session, or loaded inside a ``with``
    block (or before a ``close()``) that ends before ``node``. A lazy load there raises
    DetachedInstanceError rather than querying (SQD204's finding, not an N+1)."""
    returns = objects.returns
    if returns is not None:
        return returns.session_closed
    key, load = objects.receiver, objects.node
    if key is None or objects.session is None or load is None:
        return False
    at = (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))
    for with_node in flow.withs:
        if not contains(with_node, load):
            continue
        for item in with_node.items:
            if isinstance(item.optional_vars, ast.Name) and item.optional_vars.id == key:
                if left_open(flow, item):
                    return False
                return (with_node.end_lineno or 0, with_node.end_col_offset or 0) <= at
    for call in flow.calls_on(key):
        func = call.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "close"
            and (load.lineno, load.col_offset) < (call.lineno, call.col_offset)  # type: ignore[attr-defined]
            and (call.end_lineno or 0, call.end_col_offset or 0) <= at
        ):
            return True
    return False


def row_entity_reads(
    flow: FunctionFlow, binding: Binding, region: ast.AST
) -> Iterator[tuple[ast.expr, ast.Attribute, ObjectsValue]]:
    """``for row in rows:`` then ``row.User.posts`` / ``row[0].posts`` inside ``region``:
    each Row entity read (``row.User``), the attribute read on it, and its objects."""
    for load in flow.name_loads.get(binding.name, ()):
        if not contains(region, load) or flow.binding(binding.name, load) is not binding:
            continue
        entity = flow.parent(load)
        if not isinstance(entity, (ast.Attribute, ast.Subscript)):
            continue
        attribute = flow.parent(entity)
        if not isinstance(attribute, ast.Attribute) or attribute.value is not entity:
            continue
        objects = flow.value(entity)
        if isinstance(objects, ObjectsValue) and not objects.many:
            yield entity, attribute, objects


def left_open(flow: FunctionFlow, item: ast.withitem) -> bool:
    """Whether the ``with`` item is a project context manager that leaves the session it
    yields open as the block ends (one a scoped_session's registry keeps)."""
    entered = item.context_expr
    if flow.index is None or not isinstance(entered, ast.Call):
        return False
    func = entered.func
    if not isinstance(func, (ast.Name, ast.Attribute)):
        return False
    return flow.index.keeps_session_open(flow.qualify(func))


def loaded_by(
    rel: Relationship, objects: ObjectsValue, path: tuple[tuple[str, str], ...], *, strict: bool
) -> bool | None:
    """True if the relationship is loaded with its parent or never queries on access,
    False if reading it emits a lazy SELECT, None if that cannot be known. ``strict``
    when any lazy load fails (async code, a detached object)."""
    strategy = objects.options.strategy_for(path)
    if strategy == "?":
        return None
    if strategy is not None:
        if strategy in EAGER or strategy in NO_QUERY:
            return True
        if strategy == "lazy":
            # An explicit lazyload(): a deliberate choice in sync code, a MissingGreenlet
            # in async code.
            return not strict
        return None
    if rel.lazy is None:
        return None
    if rel.lazy in MAPPING_EAGER or rel.lazy in MAPPING_NO_QUERY:
        return True
    if rel.lazy in ("select", "lazy", "True"):
        return False
    return None


def _joined(objects: ObjectsValue, rel: Relationship) -> bool:
    stmt = objects.stmt
    if stmt is None or rel.collection or objects.path:
        return False
    return rel.attr in stmt.joins or (rel.target is not None and rel.target in stmt.joins)


class Navigator:
    """Finds relationship reads on names of one function.

    ``strict``: every lazy load is a failure (async code, detached objects), not only a
    load repeated per row; an explicit ``lazyload()`` does not excuse it either.
    """

    def __init__(
        self, flow: FunctionFlow, index: ProjectIndex, *, strict: bool, subclasses: bool = False
    ) -> None:
        self.flow = flow
        self.index = index
        self.strict = strict
        # Read a relationship only a mapped subclass has (`shape.marks`, a Circle's) on
        # the rows of a base-class query as that subclass's.
        self.subclasses = subclasses

    # Entry points --------------------------------------------------------------------
    def on_binding(
        self, binding: Binding, objects: ObjectsValue, region: ast.AST, *, per_row: bool
    ) -> Iterator[LazyAccess]:
        """Reads of ``binding.name`` inside ``region`` that see ``binding``."""
        flow = self.flow
        name = binding.name
        many = objects.many
        element = evolve(objects, many=False, shape="object") if many else objects
        if not many:
            for attribute in flow.reads_in(name, region):
                if flow.binding(name, attribute) is not binding:
                    continue
                yield from self._chain(attribute, objects, per_row)
        for load in flow.name_loads.get(name, ()):
            if not contains(region, load) or flow.binding(name, load) is not binding:
                continue
            parent = flow.parent(load)
            if isinstance(parent, ast.Call) and load in parent.args:
                yield from self.via_call(
                    parent, parent.args.index(load), element, per_row=per_row or many, elements=many
                )
            elif isinstance(parent, ast.keyword) and not many:
                call = flow.parent(parent)
                if isinstance(call, ast.Call) and parent.arg is not None:
                    yield from self._via_keyword(call, parent.arg, objects, per_row)

    def on_attribute(
        self, attribute: ast.Attribute, objects: ObjectsValue, *, per_row: bool
    ) -> Iterator[LazyAccess]:
        """Reads of ``attribute`` (``get_user(1).posts``) and what follows it, on the
        ``objects`` its value evaluates to."""
        yield from self._chain(attribute, objects, per_row)

    def via_call(
        self,
        call: ast.Call,
        position: int,
        objects: ObjectsValue,
        *,
        per_row: bool,
        elements: bool = False,
    ) -> Iterator[LazyAccess]:
        """Reads a project function or a Pydantic model makes on the argument at
        ``position`` (on its elements when ``elements``)."""
        function = self.callee(call)
        if function is not None:
            reads = (
                function.element_reads(position)
                if elements
                else function.direct_reads(position)
                if position != 0
                else _unflagged(function, call, function.direct_reads(0))
            )
            via = f"`{function.name}()` ({self._where(function)})"
            for path in sorted(reads):
                yield from self.path(objects, path, call, via=via, per_row=per_row)
            return
        if position != 0:
            return
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in SCHEMA_DUMPERS:
            schema = self._schema_of(func.value)
            if schema is not None:
                name = schema.rpartition(".")[2]
                for path in sorted(self.schema_paths(schema)):
                    yield from self.path(
                        objects, path, call, via=f"`{name}().{func.attr}()`", per_row=per_row
                    )
            return
        if elements:
            return
        if self.flow.qualify(func) in _DATACLASS_WALKERS:
            # A MappedAsDataclass model: asdict() reads every field, relationships too.
            model = self.index.model(objects.model)
            if model is not None:
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                via = f"`{name}()`"
                for rel in self.index.relationships(model):
                    yield from self.path(objects, (rel.attr,), call, via=via, per_row=per_row)
            return
        if isinstance(func, ast.Attribute) and func.attr in _VALIDATORS:
            cls = self.flow.qualify(func.value)
            if (
                cls is not None
                and self.index.class_facts(cls) is not None
                and self.index.reads_from_attributes(cls)
            ):
                via = (
                    f"`{func.value.id if isinstance(func.value, ast.Name) else cls}.{func.attr}()`"
                )
                for path in sorted(self.serializer_paths(cls)):
                    yield from self.path(objects, path, call, via=via, per_row=per_row)

    def _via_keyword(
        self, call: ast.Call, arg: str, objects: ObjectsValue, per_row: bool
    ) -> Iterator[LazyAccess]:
        function = self.callee(call)
        if function is None:
            return
        position = function.param_position(arg)
        if position is None:
            return
        reads = function.direct_reads(position)
        if position == 0:
            reads = _unflagged(function, call, reads)
        via = f"`{function.name}()` ({self._where(function)})"
        for path in sorted(reads):
            yield from self.path(objects, path, call, via=via, per_row=per_row)

    def response_model(self, ret: ast.Return, objects: ObjectsValue) -> Iterator[LazyAccess]:
        """Reads FastAPI makes serializing a route's return value into its response model."""
        function = self.flow.node
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return
        routes = route_decorators(function)
        if not routes:
            return
        model_expr: ast.expr | None = None
        for decorator in routes:
            model_expr = keyword(decorator, "response_model") or model_expr
        if model_expr is None:
            model_expr = function.returns
        if model_expr is None:
            return
        target, many = target_of_type(model_expr)
        if not isinstance(target, (ast.Name, ast.Attribute)) or bool(many) != objects.many:
            return
        cls = self.flow.qualify(target)
        if (
            cls is None
            or self.index.class_facts(cls) is None
            or not self.index.reads_from_attributes(cls)
        ):
            return
        element = evolve(objects, many=False, shape="object") if objects.many else objects
        name = target.id if isinstance(target, ast.Name) else cls.rpartition(".")[2]
        for path in sorted(self.serializer_paths(cls)):
            yield from self.path(
                element, path, ret, via=f"`response_model={name}`", per_row=objects.many
            )

    # Paths ---------------------------------------------------------------------------
    def _chain(
        self, attribute: ast.Attribute, objects: ObjectsValue, per_row: bool
    ) -> Iterator[LazyAccess]:
        """``obj.a.b.c`` read on ``objects``, and ``obj.method()`` calls."""
        attrs = [attribute.attr]
        node: ast.AST = attribute
        parent = self.flow.parent(attribute)
        while isinstance(parent, ast.Attribute) and parent.value is node and len(attrs) < MAX_DEPTH:
            attrs.append(parent.attr)
            node = parent
            parent = self.flow.parent(parent)
        call = parent if isinstance(parent, ast.Call) and parent.func is node else None
        if call is not None:
            attrs[-1] += "()"
        yield from self.path(
            objects,
            tuple(attrs),
            attribute,
            via=None,
            per_row=per_row,
            report_at_step=True,
            call=call,
        )

    def path(
        self,
        objects: ObjectsValue,
        attrs: tuple[str, ...],
        node: ast.AST,
        *,
        via: str | None,
        per_row: bool,
        report_at_step: bool = False,
        depth: int = 0,
        call: ast.Call | None = None,
        bare: bool = False,
    ) -> Iterator[LazyAccess]:
        """Walk ``attrs`` from ``objects``: report every lazy relationship on the way.
        ``call`` is the call of a method ``attrs`` ends with, or ``bare`` says that call
        passes no argument (a summary's), so reads behind a flag it leaves off are skipped."""
        if depth > MAX_DEPTH:
            return
        current = objects
        at: ast.AST = node
        for attr in attrs:
            if attr.endswith("()") or attr in self._properties(current.model):
                method = attr[:-2] if attr.endswith("()") else attr
                function = self._method(current.model, method)
                if function is None:
                    return
                inner_via = (
                    via
                    or f"`{current.model.rpartition('.')[2]}.{method}()` ({self._where(function)})"
                )
                last = attr == attrs[-1] and attr.endswith("()")
                optional = dict(function.optional_reads)
                for path in sorted(function.direct_reads(0)):
                    flag = optional.get(path)
                    if flag is not None and last and not _passes(function, call, bare, flag):
                        continue  # read only when a flag this call leaves at False is set
                    yield from self.path(
                        current,
                        path,
                        at,
                        via=inner_via,
                        per_row=per_row,
                        depth=depth + 1,
                        bare=path in function.bare_calls,
                    )
                return
            rel = self.index.relationship(current.model, attr)
            base: str | None = None
            if rel is None and self.subclasses and not current.path:
                rel = self.index.subclass_relationship(current.model, attr)
                if rel is not None:
                    base = current.model
                    current = evolve(current, model=rel.owner)
            if rel is None or rel.target is None or rel.collection is None:
                return
            step = (*current.path, (current.model, attr))
            loaded = loaded_by(rel, current, step, strict=self.strict)
            if loaded is None:
                return
            if not loaded and not self.strict and _joined(current, rel):
                # A many-to-one to the entity the query joins (and filters on): the rows
                # usually share a few targets, which the identity map serves after the
                # first load; no reliable N+1 (contains_eager() would still save one).
                loaded = True
            if not loaded and (per_row or self.strict):
                yield LazyAccess(rel, at, current, step, via, per_row, base)
            current = evolve(
                current,
                model=rel.target,
                many=False,
                shape="object",
                path=step,
            )
            if rel.collection:
                # What follows is read once per element of the collection.
                per_row = True
            if report_at_step and isinstance(at, ast.Attribute):
                parent = self.flow.parent(at)
                if isinstance(parent, ast.Attribute):
                    at = parent

    def _properties(self, model: str) -> set[str]:
        found = self.index.model(model)
        if found is None:
            return set()
        props: set[str] = set()
        for ancestor in found.lineage:
            cls = self.index.class_facts(ancestor)
            if cls is not None:
                props |= cls.properties
        return props

    def _method(self, model: str, method: str) -> FunctionFacts | None:
        found = self.index.model(model)
        if found is None:
            return None
        for ancestor in found.lineage:
            function = self.index.function(f"{ancestor}.{method}")
            if function is not None:
                return function
        return None

    def callee(self, call: ast.Call) -> FunctionFacts | None:
        """The project function or method ``call`` calls (``self.repo.list()`` through
        the instance the flow knows ``self.repo`` to be), or None."""
        func = call.func
        flow = self.flow
        if isinstance(func, ast.Attribute):
            owner = func.value
            if isinstance(owner, ast.Name) and owner.id == "self" and flow.class_node is not None:
                module = self._module()
                if module is not None:
                    return self.index.function(f"{module}.{flow.class_node.name}.{func.attr}")
                return None
            receiver = flow.value(owner)
            if isinstance(receiver, InstanceValue):
                return self.index.function(f"{receiver.cls}.{func.attr}")
        qualified = flow.qualify(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
        if qualified is None:
            return None
        return self.index.function(qualified)

    def _module(self) -> str | None:
        for facts in self.index:
            if facts.path == self.flow.path:
                return facts.module
        return None

    def _where(self, function: FunctionFacts) -> str:
        return f"{self.index.path_of(function.qualname) or '?'}:{function.line}"

    def _schema_of(self, receiver: ast.expr) -> str | None:
        """The marshmallow schema class of ``receiver`` in ``receiver.dump(...)``: made
        there (``UserSchema(many=True)``), by a local assignment, or at module level."""
        made: str | None = None
        if isinstance(receiver, ast.Call):
            made = self.flow.qualify(receiver.func)
        elif isinstance(receiver, ast.Name) and self.flow.is_local(receiver.id):
            binding = self.flow.binding(receiver.id, receiver)
            if binding is not None and isinstance(binding.value, ast.Call):
                made = self.flow.qualify(binding.value.func)
        elif isinstance(receiver, (ast.Name, ast.Attribute)):
            qualified = self.flow.qualify(receiver)
            origin = self.index.origin_of(qualified) if qualified is not None else None
            if origin is not None and origin.startswith("call:"):
                made = origin[5:]
        if made is None:
            return None
        made = self.index.follow(made)
        if self.index.class_facts(made) is None or not self.index.is_schema(made):
            return None
        return made

    def schema_paths(self, cls: str) -> set[tuple[str, ...]]:
        """Attribute paths a marshmallow schema reads off an object: its fields, nested
        schemas' fields, and with ``include_relationships`` every relationship."""
        found = self.serializer_paths(cls)
        model, relationships = self.index.schema_model(cls)
        if relationships and model is not None:
            owner = self.index.model(model)
            if owner is not None:
                found.update((rel.attr,) for rel in self.index.relationships(owner))
        return found

    def serializer_paths(self, cls: str, depth: int = 0) -> set[tuple[str, ...]]:
        """Attribute paths a Pydantic model reads off an object (nested models included)."""
        if depth > 2:
            return set()
        found: set[tuple[str, ...]] = set()
        for name, field_facts in self.index.fields_of(cls).items():
            found.add((name,))
            if field_facts.target is None:
                continue
            nested = field_facts.target
            if field_facts.target_is_string:
                owner_module = self.index.follow(cls).rpartition(".")[0]
                nested = f"{owner_module}.{nested}"
            if self.index.class_facts(nested) is not None and self.index.model(nested) is None:
                for path in self.serializer_paths(nested, depth + 1):
                    found.add((name, *path))
        return found


def _passes(function: FunctionFacts, call: ast.Call | None, bare: bool, flag: str) -> bool:
    """Whether the call of ``function`` may set ``flag`` to a true value (unknown: it
    may): not when it passes a falsy literal for it, nor when it leaves off a flag whose
    default is falsy (``bare`` says a call that is not seen passes no argument)."""
    leaves_false = flag in function.falsy_defaults
    if call is None:
        return not (bare and leaves_false)
    for item in call.keywords:
        if item.arg is None:
            return True
        if item.arg == flag:
            return not _falsy_literal(item.value)
    if any(isinstance(a, ast.Starred) for a in call.args):
        return True
    position = function.param_position(flag)
    if position is None:
        return True
    # A method's instance is its first parameter; the call's arguments fill the rest.
    index = position - 1 if function.is_method else position
    if index < len(call.args):
        return not _falsy_literal(call.args[index])
    return not leaves_false


def _falsy_literal(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and not node.value


def _unflagged(
    function: FunctionFacts, call: ast.Call, reads: set[tuple[str, ...]]
) -> set[tuple[str, ...]]:
    """The reads of a plain function's first parameter that ``call`` makes: not those
    made only under ``if flag:`` for a flag the call leaves false."""
    if function.is_method:
        return reads
    optional = dict(function.optional_reads)
    return {
        path
        for path in reads
        if (flag := optional.get(path)) is None or _passes(function, call, False, flag)
    }
