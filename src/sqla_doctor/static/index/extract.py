"""The index's first pass over one file: a single walk that feeds every kind of fact.

Imports, classes, functions' parameter reads, event listeners, engines, factories,
``create_all`` calls and index DDL are all collected in one traversal of the tree;
class bodies and the few functions that return query results are then read again,
which is cheap because they are small.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sqla_doctor.static.children import reversed_fields_of
from sqla_doctor.static.index.functions import (
    FunctionBuilder,
    FunctionFacts,
    kept_yield_sources,
    params_of,
    quotes_identifier,
)
from sqla_doctor.static.index.models import (
    DYNAMIC_IMPORT_CALLS,
    ClassFacts,
    ColumnFacts,
    ImperativeFacts,
    IndexFacts,
    ListenerFacts,
    TableFacts,
    annotated_column,
    class_facts,
    deleted_models,
    dotted,
    imperative_facts,
    index_facts,
    keyword,
    late_relationships,
    listener_facts,
    literal_str,
    sql_casts,
    table_facts,
    watched_attributes,
)
from sqla_doctor.static.index.names import DeferringResolver, ModuleNames, NameResolver
from sqla_doctor.static.index.sessions import (
    ENGINE_CALLS,
    FACTORY_CALLS,
    EngineFacts,
    FactoryFacts,
    engine_facts,
    factory_facts,
    returned_factories,
)

if TYPE_CHECKING:
    from sqla_doctor.static.flow import FlowCache, Scan

# Method names that make a function worth a flow analysis of what it returns or yields.
QUERY_METHODS = frozenset(
    {
        "scalars",
        "execute",
        "scalar",
        "get",
        "get_one",
        "query",
        "exec",
        "all",
        "first",
        "one",
        "one_or_none",
        "scalar_one",
        "scalar_one_or_none",
        "paginate",
        "stream_scalars",
    }
)
# Calls whose tail name is worth a second look after the walk.
_INTERESTING = frozenset(
    {
        "listen",
        "listens_for",
        "map_imperatively",
        "create_all",
        "create_index",
        "FastAPI",
        "Starlette",
        "Flask",
        "Quart",
        "Litestar",
        "Sanic",
        "Application",
        "on_event",
        "add_event_handler",
        "register",
        "teardown_appcontext",
        "run_sync",
        "include_router",
        "APIRouter",
        "Blueprint",
        *DYNAMIC_IMPORT_CALLS,
    }
)
IO_MODULES = frozenset(
    {
        "httpx",
        "requests",
        "aiohttp",
        "urllib",
        "urllib3",
        "asyncio",
        "time",
        "anyio",
        "trio",
        "smtplib",
        "aiosmtplib",
        "boto3",
        "grpc",
        "socket",
        "http",
    }
)
APP_CLASSES: dict[str, str] = {
    "fastapi.FastAPI": "asgi",
    "fastapi.applications.FastAPI": "asgi",
    "starlette.applications.Starlette": "asgi",
    "litestar.Litestar": "asgi",
    "litestar.app.Litestar": "asgi",
    "quart.Quart": "asgi",
    "sanic.Sanic": "asgi",
    "aiohttp.web.Application": "asgi",
    "flask.Flask": "wsgi",
}
_CONTEXT_MANAGERS = frozenset({"contextmanager", "asynccontextmanager"})
_APP_ROUTERS = frozenset({"fastapi.FastAPI", "fastapi.applications.FastAPI"})
# The functions a FastAPI `dependencies=[...]` names (qualified), or None: not all known.
Dependencies = tuple[str, ...] | None
_ROUTER_CLASSES = _APP_ROUTERS | {"fastapi.APIRouter", "fastapi.routing.APIRouter"}
_DDL_INDEX = re.compile(
    r"CREATE\s+(UNIQUE\s+)?INDEX\s+(?:CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    r"(?:[\w\".]+\s+)?ON\s+(?:ONLY\s+)?([\w\".]+)\s*(?:USING\s+\w+\s*)?\((.*)\)",
    re.IGNORECASE | re.DOTALL,
)
_DDL_FUNCTION = re.compile(r"(\w+)\s*\(\s*\"?(\w+)\"?\s*\)")


def _is_literal(node: ast.expr) -> bool:
    """A literal, or a choice between literals (``"IMMEDIATE" if lock else "DEFERRED"``)."""
    if isinstance(node, ast.IfExp):
        return _is_literal(node.body) and _is_literal(node.orelse)
    return isinstance(node, ast.Constant)


@dataclass(frozen=True)
class ImportFacts:
    """``from module import names`` (or ``import module``) at a line."""

    module: str
    names: tuple[str, ...]
    line: int
    in_function: bool
    # The local name each import binds (`import a.b as c`: "c"; one per name of a
    # `from` import), for a module-level import; "" where it is not followed.
    locals: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreateAllFacts:
    """``Base.metadata.create_all(engine)``, ``db.create_all()``, ``run_sync(...create_all)``."""

    receiver: str  # qualified: "app.db.Base.metadata", "app.ext.db"
    line: int
    col: int
    function: str | None  # enclosing top-level function or method
    end_line: int = 0
    end_col: int = 0


@dataclass
class FileExtract:
    """Everything the walk found in one file (the models/sessions part of FileFacts)."""

    classes: list[ClassFacts] = field(default_factory=list)
    listeners: list[ListenerFacts] = field(default_factory=list)
    imperative: list[ImperativeFacts] = field(default_factory=list)
    tables: list[TableFacts] = field(default_factory=list)
    indexes: list[IndexFacts] = field(default_factory=list)
    factories: list[FactoryFacts] = field(default_factory=list)
    engines: list[EngineFacts] = field(default_factory=list)
    functions: dict[str, FunctionFacts] = field(default_factory=dict)
    imports: list[ImportFacts] = field(default_factory=list)
    create_all: list[CreateAllFacts] = field(default_factory=list)
    disposed: set[str] = field(default_factory=set)
    apps: list[tuple[str, int]] = field(default_factory=list)  # (kind, line)
    shutdown_hooks: int = 0
    dynamic_imports: bool = False
    # What the file reads through a name a module-level import binds (`dashboard.build`
    # through `import app.dashboard as dashboard`), by that name; a name also used
    # otherwise (passed on, `getattr(dashboard, ...)`) is left out: any attribute.
    module_uses: dict[str, tuple[str, ...]] = field(default_factory=dict)
    session_listeners: set[str] = field(default_factory=set)  # identifiers on Session
    # The text mentions SQLite's `journal_mode` (a `PRAGMA journal_mode=WAL` somewhere).
    journal_mode: bool = False
    # `MODE.set(value)` on a module-level name (a ContextVar): whether every value this
    # file sets is a literal, by the name's qualified spelling.
    literal_sets: dict[str, bool] = field(default_factory=dict)
    # The calls of each function imported by name (`from app.models import helper`), by
    # its qualified name, each as the kinds of its arguments (see call_shape); None when
    # the file uses the name otherwise too (passes it on, decorates with it).
    import_calls: dict[str, tuple[CallShape, ...] | None] = field(default_factory=dict)
    # FastAPI routers whose routes get dependencies beyond their own decorator's: made
    # with `dependencies=` (`router = APIRouter(dependencies=[...])`) or included with
    # them (`app.include_router(router, dependencies=[...])`): (router, what they name).
    router_dependencies: list[tuple[str, Dependencies]] = field(default_factory=list)
    # `parent.include_router(child)` without dependencies of its own: (parent, child).
    router_includes: list[tuple[str, str]] = field(default_factory=list)
    # Dependencies every route may get: an app's (`FastAPI(dependencies=[...])`), or a
    # router's included where the router cannot be named.
    app_dependencies: list[Dependencies] = field(default_factory=list)
    # `intpk = Annotated[int, mapped_column(primary_key=True)]`, by qualified name.
    column_aliases: dict[str, ColumnFacts] = field(default_factory=dict)
    # `parent = aliased(Node)` at module level: the class each name aliases, qualified.
    entity_aliases: dict[str, str] = field(default_factory=dict)
    # `author = aliased(User, name="author")` at module level: the name= of each alias
    # (a Row's key for it), by the alias's qualified name.
    alias_keys: dict[str, str] = field(default_factory=dict)
    # `Base.query = db_session.query_property()`: the classes (qualified) whose
    # subclasses get a legacy `Model.query` on that scoped session.
    query_properties: set[str] = field(default_factory=set)


# In FileExtract.module_uses: the file reads every public name of the module, by
# reflection (`getattr(models, name)` over `dir(models)`'s names not starting with "_").
PUBLIC_NAMES = "+public"

_MODULE, _CLASS, _FUNCTION = 0, 1, 2


@dataclass(frozen=True)
class _Ctx:
    kind: int
    builder: FunctionBuilder | None = None
    class_name: str | None = None
    function: str | None = None  # qualname of the enclosing top-level function/method
    class_node: ast.ClassDef | None = None  # for methods: what `self.x` may be


_MODULE_CTX = _Ctx(_MODULE)


def extract(
    tree: ast.Module, module: str, is_package: bool, scans: dict[int, Scan] | None = None
) -> tuple[ModuleNames, FileExtract]:
    """The file's names and facts; ``scans``, if given, receives the flow scans of the
    functions summarised here, for the rules' pass over the same tree."""
    names = ModuleNames(module=module, is_package=is_package)
    names.collect_definitions(tree)
    # One resolver for the walk: with no project to follow it keeps nothing between
    # questions, and it reads the imports as the walk records them.
    walk_names = NameResolver(names)
    out = FileExtract()
    class_nodes: list[ast.ClassDef] = []
    builders: list[FunctionBuilder] = []
    builders_by_qualname: dict[str, FunctionBuilder] = {}
    calls: list[tuple[ast.Call, _Ctx]] = []
    listener_decorators: list[tuple[ast.Call, ast.FunctionDef | ast.AsyncFunctionDef]] = []
    strings: list[ast.Constant] = []
    prefix = f"{module}." if module else ""

    stack: list[tuple[ast.AST, _Ctx]] = [(child, _MODULE_CTX) for child in reversed(tree.body)]
    imports = names.imports
    followed = _import_locals(tree)
    read_through: dict[str, set[str]] = {local: set() for local in followed}
    used_otherwise: set[str] = set()
    # The module names of `getattr(models, name)` in a loop over `dir(models)`'s public
    # names (see _public_reflection), by id: what they reach is PUBLIC_NAMES.
    reflective: set[int] = set()
    # The engines each function makes in a local name, by the function's id.
    local_engines: dict[int, frozenset[str]] = {}
    # Every load of an imported name, and its calls: a name whose loads are all calls
    # is never handed on.
    name_loads: Counter[str] = Counter()
    name_calls: dict[str, list[CallShape]] = {}
    push, name_node, ast_node = stack.append, ast.Name, ast.AST
    while stack:
        node, ctx = stack.pop()
        kind = type(node)
        # The commonest nodes first: a third of them are names.
        if kind is ast.Name:
            if node.id in followed and id(node) not in reflective:  # type: ignore[attr-defined]
                used_otherwise.add(node.id)  # type: ignore[attr-defined]
                name_loads[node.id] += 1  # type: ignore[attr-defined]
            continue
        if kind is ast.Constant:
            value = node.value  # type: ignore[attr-defined]
            if type(value) is str and ("INDEX" in value or "index" in value):
                strings.append(node)  # type: ignore[arg-type]
            continue
        builder = ctx.builder
        if kind is ast.Call:
            assert isinstance(node, ast.Call)
            func = node.func
            tail = (
                func.attr
                if isinstance(func, ast.Attribute)
                else func.id
                if isinstance(func, ast.Name)
                else None
            )
            if type(func) is ast.Name and func.id in followed:
                engines: frozenset[str] = frozenset()
                if builder is not None and any(
                    isinstance(a, ast.Name) for a in (*node.args, *(k.value for k in node.keywords))
                ):
                    known = local_engines.get(id(builder.node))
                    if known is None:
                        known = _local_engines(builder.node, walk_names)
                        local_engines[id(builder.node)] = known
                    engines = known
                name_calls.setdefault(func.id, []).append(call_shape(node, walk_names, engines))
            if builder is not None and tail is not None:
                builder.called.add(tail)
                if type(func) is ast.Name:
                    # `OrmSession(engine)` where `from sqlalchemy.orm import Session as
                    # OrmSession`: remember the imported name too.
                    origin = imports.get(tail)
                    if origin is not None:
                        builder.called.add(origin.rpartition(".")[2])
                if tail in QUERY_METHODS or (
                    isinstance(func, ast.Attribute)
                    and isinstance(func.value, ast.Attribute)
                    and func.value.attr == "query"
                ):
                    # `Model.query.filter(...)`: Flask-SQLAlchemy's Query, maybe returned unrun.
                    builder.flags.add("query")
                elif tail in ("commit", "rollback"):
                    builder.facts.commits = True
                if isinstance(func, ast.Attribute):
                    builder.method_call(func, node)
                if builder.facts.io_call is None:
                    root = func
                    while isinstance(root, ast.Attribute):
                        root = root.value
                    if isinstance(root, ast.Name):
                        client = builder.clients.get(root.id)
                        origin = imports.get(root.id)
                        if (
                            client is not None
                            and isinstance(func, ast.Attribute)
                            and func.attr in _CLIENT_METHODS
                        ):
                            builder.facts.io_call = f"{client}.{func.attr}"
                        elif origin is not None and origin.split(".")[0] in IO_MODULES:
                            qualified = walk_names.qualify(func)
                            if qualified is not None and _is_io(qualified):
                                builder.facts.io_call = qualified
            elif tail in ("commit", "rollback") and ctx.function is not None:
                # In a function nested in a top-level one (a decorator's wrapper, a
                # callback): the index records top-level functions, so the commit is the
                # enclosing function's.
                outer = builders_by_qualname.get(ctx.function)
                if outer is not None:
                    outer.facts.commits = True
            if tail in _INTERESTING:
                calls.append((node, ctx))
            elif tail == "set" and len(node.args) == 1 and not node.keywords:
                owner = func.value if isinstance(func, ast.Attribute) else None
                if isinstance(owner, (ast.Name, ast.Attribute)):
                    var = walk_names.qualify(owner)
                    if var is not None:
                        literal = _is_literal(node.args[0])
                        out.literal_sets[var] = out.literal_sets.get(var, True) and literal
        elif kind is ast.Attribute:
            assert isinstance(node, ast.Attribute)
            if builder is not None and isinstance(node.ctx, ast.Load):
                builder.attribute(node)
                if node.attr in ("session", "query"):
                    builder.called.add(node.attr)
                    if node.attr == "query":
                        # Flask-SQLAlchemy's `Model.query`, perhaps handed back unrun.
                        builder.flags.add("query")
            if node.attr == "dispose":
                receiver = walk_names.qualify(node.value)
                if receiver is None:
                    text = dotted(node.value)
                    receiver = f"?{text}" if text else "?"
                out.disposed.add(receiver)
            # Only the value: the `ctx` child (Load/Store) carries nothing.
            value = node.value
            if isinstance(value, ast.Name) and value.id in followed:
                if node.attr.startswith("__"):
                    used_otherwise.add(value.id)
                read_through[value.id].add(node.attr)
                continue
            stack.append((value, ctx))
            continue
        elif kind is ast.Import or kind is ast.ImportFrom:
            assert isinstance(node, (ast.Import, ast.ImportFrom))
            names.add_import(node)
            in_function = ctx.kind == _FUNCTION
            top = ctx.kind == _MODULE and node in tree.body
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = _bound(alias, module_import=True) if top else ""
                    out.imports.append(
                        ImportFacts(alias.name, (), node.lineno, in_function, (local,))
                    )
            else:
                from sqla_doctor.static.index.names import resolve_relative

                source = resolve_relative(module, is_package, node.level, node.module)
                out.imports.append(
                    ImportFacts(
                        source,
                        tuple(a.name for a in node.names),
                        node.lineno,
                        in_function,
                        tuple(_bound(a, module_import=False) if top else "" for a in node.names),
                    )
                )
            continue
        elif kind is ast.FunctionDef or kind is ast.AsyncFunctionDef:
            assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            new_builder: FunctionBuilder | None = None
            qualname: str | None = None
            if ctx.kind == _MODULE:
                qualname = node.name
            elif ctx.kind == _CLASS:
                qualname = f"{ctx.class_name}.{node.name}"
            if qualname is not None:
                facts = FunctionFacts(
                    qualname=prefix + qualname,
                    name=node.name,
                    line=node.lineno,
                    is_async=kind is ast.AsyncFunctionDef,
                    params=params_of(node),
                    is_method=ctx.kind == _CLASS,
                    quotes=quotes_identifier(node),
                )
                new_builder = FunctionBuilder(facts, node, ctx.class_node)
                builders.append(new_builder)
                builders_by_qualname[facts.qualname] = new_builder
                _annotated_clients(walk_names, new_builder, node.args)
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call):
                    d_func = decorator.func
                    d_tail = (
                        d_func.attr
                        if isinstance(d_func, ast.Attribute)
                        else d_func.id
                        if isinstance(d_func, ast.Name)
                        else None
                    )
                    if d_tail == "listens_for":
                        listener_decorators.append((decorator, node))
                        _note_uses(decorator, followed, read_through, used_otherwise)
                        continue
                    if (
                        d_tail == "on_event"
                        and decorator.args
                        and literal_str(decorator.args[0]) == "shutdown"
                    ):
                        out.shutdown_hooks += 1
                stack.append((decorator, ctx))
            if followed:
                # The walk skips annotations; `Depends(deps.get_db)` in one names a function.
                arguments = node.args
                for arg in (
                    *arguments.posonlyargs,
                    *arguments.args,
                    *arguments.kwonlyargs,
                    *((arguments.vararg,) if arguments.vararg else ()),
                    *((arguments.kwarg,) if arguments.kwarg else ()),
                ):
                    if arg.annotation is not None:
                        _note_uses(arg.annotation, followed, read_through, used_otherwise)
                if node.returns is not None:
                    _note_uses(node.returns, followed, read_through, used_otherwise)
            inner = _Ctx(
                _FUNCTION,
                new_builder,
                None,
                (prefix + qualname) if qualname is not None else ctx.function,
            )
            for default in (
                *node.args.defaults,
                *(d for d in node.args.kw_defaults if d is not None),
            ):
                stack.append((default, ctx))
            for stmt in reversed(node.body):
                stack.append((stmt, inner))
            continue
        elif kind is ast.ClassDef:
            assert isinstance(node, ast.ClassDef)
            if ctx.kind == _MODULE:
                class_nodes.append(node)
                inner = _Ctx(_CLASS, None, node.name, None, node)
            else:
                inner = _Ctx(_FUNCTION, None, None, ctx.function)
            for part in (*node.decorator_list, *node.bases, *(k.value for k in node.keywords)):
                stack.append((part, ctx))
            for stmt in reversed(node.body):
                stack.append((stmt, inner))
            continue
        elif (kind is ast.With or kind is ast.AsyncWith) and builder is not None:
            for item in node.items:  # type: ignore[attr-defined]
                if isinstance(item.optional_vars, ast.Name):
                    builder.with_names.add(item.optional_vars.id)
                    _client(walk_names, builder, item.optional_vars.id, item.context_expr)
        elif kind is ast.Assign and builder is not None:
            targets = node.targets  # type: ignore[attr-defined]
            if len(targets) == 1 and isinstance(targets[0], ast.Name):
                _client(walk_names, builder, targets[0].id, node.value)  # type: ignore[attr-defined]
        elif kind is ast.For or kind is ast.AsyncFor:
            assert isinstance(node, (ast.For, ast.AsyncFor))
            if builder is not None:
                builder.loop(node.target, node.iter)
            if followed:
                public = _public_reflection(node, followed)
                if public is not None:
                    read_through[public[0]].add(PUBLIC_NAMES)
                    reflective.update(id(n) for n in public[1])
        elif kind in _COMPREHENSIONS:
            if builder is not None:
                for generator in node.generators:  # type: ignore[attr-defined]
                    builder.loop(generator.target, generator.iter)
        elif kind is ast.Return:
            value = node.value  # type: ignore[attr-defined]
            if builder is not None and value is not None:
                builder.flags.add("return")
                if _hands_with_name(builder, value):
                    # `return by_number(s, n)` in `with Session() as s:`: what the
                    # helper returns, from a session about to close.
                    builder.flags.add("query")
                # `return SessionLocal()` in a small function: maybe a session provider.
                if isinstance(value, (ast.Call, ast.Name)) and len(builder.node.body) <= 4:
                    builder.flags.add("hands-out")
        elif kind is ast.Yield or kind is ast.YieldFrom:
            if builder is not None:
                builder.flags.add("yield")
                if isinstance(node.value, (ast.Call, ast.Name)):  # type: ignore[attr-defined]
                    builder.flags.add("hands-out")
        elif kind in _ELEMENTS:
            for child in reversed(node.elts):  # type: ignore[attr-defined]
                stack.append((child, ctx))
            continue
        elif kind is ast.Subscript:
            stack.append((node.slice, ctx))  # type: ignore[attr-defined]
            stack.append((node.value, ctx))  # type: ignore[attr-defined]
            continue
        elif kind is ast.Starred:
            stack.append((node.value, ctx))  # type: ignore[attr-defined]
            continue
        # child_nodes() inlined, last first; names carry nothing here, so they are
        # never pushed (a third of all nodes).
        for field_name in reversed_fields_of(kind):
            held: Any = getattr(node, field_name, None)
            if held.__class__ is list:
                for child in reversed(held):
                    if child.__class__ is not name_node:
                        if isinstance(child, ast_node):
                            push((child, ctx))
                    elif child.id in followed and id(child) not in reflective:
                        used_otherwise.add(child.id)
                        name_loads[child.id] += 1
            elif held.__class__ is not name_node:
                if isinstance(held, ast_node):
                    push((held, ctx))
            elif held.id in followed and id(held) not in reflective:
                used_otherwise.add(held.id)
                name_loads[held.id] += 1

    for local, shapes in name_calls.items():
        origin = imports.get(local)
        if origin is not None:
            counted = name_loads[local] == len(shapes)
            out.import_calls[origin] = tuple(shapes) if counted else None
    out.module_uses = {
        local: tuple(sorted(attributes))
        for local, attributes in read_through.items()
        if local not in used_otherwise
    }
    # Again, now that every import is known: `db = SQLAlchemy()` records its origin.
    names.collect_definitions(tree)
    resolver = DeferringResolver(names)
    table_names: dict[str, str] = {}
    _module_statements(resolver, prefix, tree.body, out, table_names)
    for class_node in class_nodes:
        out.classes.append(class_facts(resolver, module, class_node))
    late_relationships(resolver, tree.body, out.classes)
    for call, function in listener_decorators:
        listener = listener_facts(resolver, call, function.name)
        if listener is not None:
            listener.watches = watched_attributes(function)
            listener.deletes = deleted_models(resolver, function)
            _add_listener(out, listener)
    for call, ctx in calls:
        _interesting_call(resolver, call, ctx, out, table_names)
    for constant in strings:
        _ddl_index(constant, out)
    _finish_functions(resolver, builders, out, scans)
    return names, out


def _add_factory(out: FileExtract, factory: FactoryFacts) -> None:
    """``Session = scoped_session(Session)`` rebinds the factory's name to a registry of
    it (in one branch of an ``if`` too): from there on ``Session()`` is the thread's
    session, kept by the registry, so the name is that registry, with the options of the
    factory it wraps."""
    if factory.scoped and factory.wraps == factory.qualname:
        for position, earlier in enumerate(out.factories):
            if earlier.qualname == factory.qualname and not earlier.scoped:
                out.factories[position] = replace(earlier, kind=factory.kind, scoped=True)
                return
    out.factories.append(factory)


def _finish_functions(
    resolver: NameResolver,
    builders: list[FunctionBuilder],
    out: FileExtract,
    scans: dict[int, Scan] | None,
) -> None:
    from sqla_doctor.static.flow import FlowCache

    # The summaries of one file share flows (a method reads `self.session` set in another).
    flows = FlowCache(record_scans=scans is not None)
    for builder in builders:
        facts = builder.finish()
        facts.decorators = tuple(
            resolver.qualify(d.func if isinstance(d, ast.Call) else d) or "?"
            for d in builder.node.decorator_list
        )
        # Only the few functions that may return query results or hand out a session
        # get a flow analysis; the rest cost nothing more than the walk.
        queries = "query" in builder.flags and "return" in builder.flags
        if queries or "hands-out" in builder.flags:
            _summarise_function(resolver, builder, queries, "hands-out" in builder.flags, flows)
        if not facts.is_method and not FACTORY_CALLS.isdisjoint(facts.calls):
            facts.factory, facts.tuple_factories = returned_factories(
                resolver, facts.qualname, builder.node
            )
        if "yield" in builder.flags and any(
            d.rpartition(".")[2] in _CONTEXT_MANAGERS for d in facts.decorators
        ):
            facts.yields_from = kept_yield_sources(resolver, builder.node)
        out.functions[facts.qualname] = facts
    if scans is not None:
        scans.update(flows.scans)
    flows.clear()  # breaks the cycles between the cache and its flows


_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_ELEMENTS = (ast.Tuple, ast.List, ast.Set)


# A call's arguments, as call_shape() spells them.
CallShape = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]


_UPPER = re.compile(r"^_*[A-Z][A-Z0-9_]*$")


def is_constant_name(name: str) -> bool:
    """``MAX_ROWS``, ``_TABLE``: a name spelled as a module's constant."""
    return len(name.strip("_")) > 1 and bool(_UPPER.match(name))


def call_shape(
    call: ast.Call, names: NameResolver | None = None, engines: frozenset[str] = frozenset()
) -> CallShape:
    """What each argument of ``call`` is: "text" (a literal), "text=" and the qualified
    name of an UPPER_CASE name (a module's constant, ``text=app.db.ENGINE``), "texts" (a
    tuple, list or set of literals), "*" (unpacked: anything), ``ENGINE_MADE`` (a
    ``create_engine()`` call, or a local name in ``engines``, which the calling function
    binds only to one), "=" and the qualified name a module-level name or attribute names
    (``=app.db.engine``), or "" (anything else); positional ones, then (keyword, kind)
    pairs (``**kwargs`` under the keyword "*")."""
    return (
        tuple(_argument_kind(arg, names, engines) for arg in call.args),
        tuple((k.arg or "*", _argument_kind(k.value, names, engines)) for k in call.keywords),
    )


def shape_name(kind: str) -> str | None:
    """The qualified name a call_shape() kind names (``=app.db.engine``,
    ``text=app.db.ENGINE``), or None."""
    if kind.startswith("="):
        return kind[1:]
    if kind.startswith("text="):
        return kind[5:]
    return None


# call_shape()'s kind for an engine made in the call (`export(create_engine(url))`).
ENGINE_MADE = "=create_engine()"


def _argument_kind(
    node: ast.expr, names: NameResolver | None = None, engines: frozenset[str] = frozenset()
) -> str:
    if isinstance(node, ast.Starred):
        return "*"
    if isinstance(node, ast.Name) and node.id in engines:
        return ENGINE_MADE
    if isinstance(node, ast.Name) and is_constant_name(node.id):
        # `SEQUENCE_NAME`: a module's constant, as StringFlow trusts one in its own module;
        # `ENGINE`, an engine the index may know by its name.
        qualified = names.qualify(node) if names is not None else None
        return "text" if qualified is None else f"text={qualified}"
    if isinstance(node, ast.Constant):
        return "text"
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and all(
        isinstance(e, ast.Constant) for e in node.elts
    ):
        return "texts"
    if names is not None:
        if isinstance(node, ast.Call) and names.sqla_name(node.func) in (
            "create_engine",
            "create_async_engine",
        ):
            return ENGINE_MADE
        if isinstance(node, (ast.Name, ast.Attribute)):
            qualified = names.qualify(node)
            return "" if qualified is None else f"={qualified}"
    return ""


def _local_engines(function: ast.AST, resolver: NameResolver) -> frozenset[str]:
    """The local names ``function`` binds only to a ``create_engine()`` /
    ``create_async_engine()`` call (``engine = create_engine(url)``), not a parameter."""
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return frozenset()
    made: Counter[str] = Counter()
    stores: Counter[str] = Counter()
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            stores[node.id] += 1
        elif (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Call)
            and resolver.sqla_name(node.value.func) in ("create_engine", "create_async_engine")
        ):
            made[node.targets[0].id] += 1
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            stores.update(dict.fromkeys(node.names, 2))
    params = {a.arg for a in ast.walk(function.args) if isinstance(a, ast.arg)}
    return frozenset(n for n, count in made.items() if stores[n] == count and n not in params)


def _import_locals(tree: ast.Module) -> set[str]:
    """The names the module-level imports bind, whose uses the walk follows."""
    found: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                local = _bound(alias, module_import=isinstance(stmt, ast.Import))
                if local:
                    found.add(local)
    return found


def _public_reflection(
    loop: ast.For | ast.AsyncFor, followed: set[str]
) -> tuple[str, list[ast.Name]] | None:
    """For ``for name in dir(models): if name[0] == "_": continue ... getattr(models,
    name)``, which reads only the module's public names: the module's local name and
    the uses of it the loop makes (``dir(models)``, each ``getattr(models, name)``)."""
    iterable, target = loop.iter, loop.target
    if not (
        isinstance(iterable, ast.Call)
        and isinstance(iterable.func, ast.Name)
        and iterable.func.id == "dir"
        and len(iterable.args) == 1
        and not iterable.keywords
        and isinstance(iterable.args[0], ast.Name)
        and iterable.args[0].id in followed
        and isinstance(target, ast.Name)
        and loop.body
        and _skips_private(loop.body[0], target.id)
    ):
        return None
    module = iterable.args[0].id
    uses = [iterable.args[0]]
    for stmt in loop.body:
        for sub in ast.walk(stmt):
            if isinstance(sub, ast.Name) and sub.id == target.id and isinstance(sub.ctx, ast.Store):
                return None  # the name rebound: no longer only a public one
            if (
                isinstance(sub, ast.Call)
                and isinstance(sub.func, ast.Name)
                and sub.func.id == "getattr"
                and len(sub.args) in (2, 3)
                and isinstance(sub.args[0], ast.Name)
                and sub.args[0].id == module
                and isinstance(sub.args[1], ast.Name)
                and sub.args[1].id == target.id
            ):
                uses.append(sub.args[0])
    return module, uses


def _skips_private(stmt: ast.stmt, name: str) -> bool:
    """``if name[0] == "_": continue`` or ``if name.startswith("_"): continue``."""
    if not (
        isinstance(stmt, ast.If)
        and not stmt.orelse
        and len(stmt.body) == 1
        and isinstance(stmt.body[0], ast.Continue)
    ):
        return False
    test = stmt.test
    if isinstance(test, ast.Call):
        return (
            isinstance(test.func, ast.Attribute)
            and test.func.attr == "startswith"
            and isinstance(test.func.value, ast.Name)
            and test.func.value.id == name
            and len(test.args) == 1
            and not test.keywords
            and isinstance(test.args[0], ast.Constant)
            and test.args[0].value == "_"
        )
    return (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and isinstance(test.left, ast.Subscript)
        and isinstance(test.left.value, ast.Name)
        and test.left.value.id == name
        and isinstance(test.left.slice, ast.Constant)
        and test.left.slice.value == 0
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "_"
    )


def _note_uses(
    expr: ast.expr, followed: set[str], read_through: dict[str, set[str]], otherwise: set[str]
) -> None:
    """Record the uses of imported names in ``expr``, which the walk does not enter."""
    through: set[int] = set()
    for sub in ast.walk(expr):
        if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name):
            if sub.value.id in followed:
                through.add(id(sub.value))
                read_through[sub.value.id].add(sub.attr)
                if sub.attr.startswith("__"):
                    otherwise.add(sub.value.id)
        elif isinstance(sub, ast.Name) and sub.id in followed and id(sub) not in through:
            otherwise.add(sub.id)


def _bound(alias: ast.alias, *, module_import: bool) -> str:
    """The name an import binds to what it names; "" for `import a.b` (which binds `a`,
    read as `a.b.x`) and `from m import *`."""
    if alias.asname:
        return alias.asname
    if alias.name == "*" or (module_import and "." in alias.name):
        return ""
    return alias.name


_CLIENT_METHODS = frozenset(
    {
        "get",
        "post",
        "put",
        "patch",
        "delete",
        "head",
        "options",
        "request",
        "send",
        "stream",
        "sendmail",
        "send_message",
        "ws_connect",
        "urlopen",
    }
)


def _client(resolver: NameResolver, builder: FunctionBuilder, name: str, value: ast.expr) -> None:
    """Remember `name` as an HTTP/SMTP client when bound to `httpx.AsyncClient()` & co."""
    if not isinstance(value, ast.Call):
        return
    root = value.func
    while isinstance(root, ast.Attribute):
        root = root.value
    if not isinstance(root, ast.Name):
        return
    origin = resolver.names.imports.get(root.id)
    if origin is None or origin.split(".")[0] not in IO_MODULES:
        return
    from sqla_doctor.static.flow import is_io_client

    qualified = resolver.qualify(value.func)
    if qualified is not None and is_io_client(qualified):
        builder.clients[name] = qualified


def _annotated_clients(
    resolver: NameResolver, builder: FunctionBuilder, args: ast.arguments
) -> None:
    """Remember parameters annotated as HTTP/SMTP clients (`http: httpx.AsyncClient`,
    `session: aiohttp.ClientSession`): a helper handed the caller's client waits on it."""
    from sqla_doctor.static.flow import is_io_client

    for arg in (*args.posonlyargs, *args.args, *args.kwonlyargs):
        annotation = arg.annotation
        if not isinstance(annotation, (ast.Name, ast.Attribute)):
            continue
        qualified = resolver.qualify(annotation)
        if qualified is not None and is_io_client(qualified):
            builder.clients[arg.arg] = qualified


def _is_io(qualified: str) -> bool:
    from sqla_doctor.static.flow import io_kind

    return io_kind(qualified) is not None


def _add_listener(out: FileExtract, listener: ListenerFacts) -> None:
    if listener.target == "session":
        out.session_listeners.add(listener.identifier)
    out.listeners.append(listener)


def _query_property(resolver: NameResolver, stmt: ast.stmt, out: FileExtract) -> None:
    """``Base.query = db_session.query_property()``."""
    if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
        return
    target, value = stmt.targets[0], stmt.value
    if (
        isinstance(target, ast.Attribute)
        and target.attr == "query"
        and isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "query_property"
    ):
        owner = resolver.qualify(target.value)
        if owner is not None:
            out.query_properties.add(owner)


def _module_statements(
    resolver: NameResolver,
    prefix: str,
    body: list[ast.stmt],
    out: FileExtract,
    table_names: dict[str, str],
) -> None:
    for stmt in body:
        _query_property(resolver, stmt, out)
        if isinstance(stmt, (ast.If, ast.Try)):
            _module_statements(resolver, prefix, stmt.body, out, table_names)
            _module_statements(resolver, prefix, stmt.orelse, out, table_names)
            if isinstance(stmt, ast.Try):
                for handler in stmt.handlers:
                    _module_statements(resolver, prefix, handler.body, out, table_names)
            continue
        value: ast.expr | None = None
        target: str | None = None
        if (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            value, target = stmt.value, stmt.targets[0].id
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            value, target = stmt.value, stmt.target.id
        elif isinstance(stmt, ast.Expr):
            value = stmt.value
        elif isinstance(stmt, getattr(ast, "TypeAlias", ())):  # `type intpk = ...`, 3.12+
            value, target = stmt.value, stmt.name.id  # type: ignore[attr-defined]
        if target is not None and isinstance(value, ast.Subscript):
            column = annotated_column(resolver, value)
            if column is not None:
                out.column_aliases[prefix + target] = column
            continue
        if not isinstance(value, ast.Call):
            continue
        if (
            target is not None
            and resolver.qualify(value.func) in _ROUTER_CLASSES
            and declares_dependencies(value)
        ):
            out.router_dependencies.append((prefix + target, dependency_targets(resolver, value)))
        name = resolver.sqla_name(value.func)
        if name is None:
            continue
        if target is not None and name in ENGINE_CALLS:
            engine = engine_facts(resolver, prefix + target, value)
            if engine is not None:
                out.engines.append(engine)
        elif target is not None and name in FACTORY_CALLS:
            factory = factory_facts(resolver, prefix + target, value)
            if factory is not None:
                _add_factory(out, factory)
        elif target is not None and name == "aliased" and value.args:
            aliased = value.args[0]
            entity = isinstance(aliased, (ast.Name, ast.Attribute))
            qualified = resolver.qualify(aliased) if entity else None
            if qualified is not None:
                out.entity_aliases[prefix + target] = qualified
                key = next((k.value for k in value.keywords if k.arg == "name"), None)
                if isinstance(key, ast.Constant) and isinstance(key.value, str):
                    out.alias_keys[prefix + target] = key.value
        elif target is not None and name == "Table":
            table = table_facts(resolver, prefix + target, value)
            if table is not None:
                out.tables.append(table)
                table_names[target] = table.name
        elif name == "Index":
            index = index_facts(resolver, value)
            if index.owner is not None or index.functions:
                out.indexes.append(index)


def _interesting_call(
    resolver: NameResolver,
    call: ast.Call,
    ctx: _Ctx,
    out: FileExtract,
    table_names: dict[str, str],
) -> None:
    func = call.func
    tail = (
        func.attr
        if isinstance(func, ast.Attribute)
        else func.id
        if isinstance(func, ast.Name)
        else ""
    )
    if tail in ("listen", "listens_for") and resolver.sqla_name(func) == tail:
        listener = listener_facts(resolver, call, None)
        if listener is not None:
            _add_listener(out, listener)
    elif tail == "map_imperatively":
        imperative = imperative_facts(resolver, call, table_names)
        if imperative is not None:
            out.imperative.append(imperative)
    elif tail == "create_all" and isinstance(func, ast.Attribute):
        receiver = resolver.qualify(func.value)
        if receiver is not None:
            out.create_all.append(
                CreateAllFacts(
                    receiver,
                    call.lineno,
                    call.col_offset,
                    ctx.function,
                    call.end_lineno or call.lineno,
                    call.end_col_offset or 0,
                )
            )
    elif tail == "run_sync" and call.args:
        arg = call.args[0]
        if isinstance(arg, ast.Attribute) and arg.attr == "create_all":
            receiver = resolver.qualify(arg.value)
            if receiver is not None:
                out.create_all.append(
                    CreateAllFacts(
                        receiver,
                        call.lineno,
                        call.col_offset,
                        ctx.function,
                        call.end_lineno or call.lineno,
                        call.end_col_offset or 0,
                    )
                )
    elif tail == "create_index":
        _migration_index(resolver, call, out)
    elif tail in DYNAMIC_IMPORT_CALLS:
        out.dynamic_imports = True
    elif tail in ("on_event", "add_event_handler"):
        if call.args and literal_str(call.args[0]) == "shutdown":
            out.shutdown_hooks += 1
    elif tail in ("register", "teardown_appcontext"):
        if (resolver.qualify(func) or "") == "atexit.register":
            out.shutdown_hooks += 1
    elif tail == "include_router" and isinstance(func, ast.Attribute):
        _include_router(resolver, call, out)
    else:
        qualified = resolver.qualify(func) or ""
        if qualified in _APP_ROUTERS and declares_dependencies(call):
            out.app_dependencies.append(dependency_targets(resolver, call))
        app_kind = APP_CLASSES.get(qualified)
        if app_kind is not None:
            out.apps.append((app_kind, call.lineno))
            if any(kw.arg in ("lifespan", "on_shutdown") for kw in call.keywords):
                out.shutdown_hooks += 1


def declares_dependencies(call: ast.Call) -> bool:
    """``dependencies=[...]`` among the call's keywords, or ``**options`` that may hold it."""
    return any(kw.arg in ("dependencies", None) for kw in call.keywords)


def dependency_targets(resolver: NameResolver, call: ast.Call) -> Dependencies:
    """The functions a FastAPI call's ``dependencies=[Depends(f), Security(g)]`` names, by
    qualified name; None when one cannot be named (``**options``, a list built elsewhere,
    ``Depends(RoleChecker("admin"))``), since it may do anything."""
    named: list[str] = []
    for kw in call.keywords:
        if kw.arg is None:
            return None
        if kw.arg != "dependencies":
            continue
        if not isinstance(kw.value, (ast.List, ast.Tuple)):
            return None
        for element in kw.value.elts:
            if not isinstance(element, ast.Call):
                return None
            kind = (resolver.qualify(element.func) or "").rpartition(".")[2]
            target = element.args[0] if element.args else keyword(element, "dependency")
            qualified = resolver.qualify(target) if target is not None else None
            if kind not in ("Depends", "Security") or qualified is None:
                return None
            named.append(qualified)
    return tuple(named)


def _include_router(resolver: NameResolver, call: ast.Call, out: FileExtract) -> None:
    """``parent.include_router(child, dependencies=[...])``: the child's routes get the
    dependencies, and those of the parent (FastAPI copies them onto each route)."""
    assert isinstance(call.func, ast.Attribute)
    child_node = call.args[0] if call.args else keyword(call, "router")
    child = resolver.qualify(child_node) if child_node is not None else None
    if declares_dependencies(call):
        targets = dependency_targets(resolver, call)
        if child is None:
            out.app_dependencies.append(targets)
        else:
            out.router_dependencies.append((child, targets))
    parent = resolver.qualify(call.func.value)
    if parent is not None and child is not None:
        out.router_includes.append((parent, child))


def _migration_index(resolver: NameResolver, call: ast.Call, out: FileExtract) -> None:
    """``op.create_index("ix", "users", [sa.text("lower(email)")])``."""
    args = list(call.args)
    table = literal_str(args[1]) if len(args) > 1 else literal_str(keyword(call, "table_name"))
    columns = args[2] if len(args) > 2 else keyword(call, "columns")
    if table is None or not isinstance(columns, (ast.List, ast.Tuple)):
        return
    synthetic = ast.Call(
        func=ast.Name(id="Index", ctx=ast.Load()), args=[*columns.elts], keywords=[]
    )
    ast.copy_location(synthetic, call)
    index = index_facts(resolver, synthetic)
    index.line = call.lineno
    index.table = table.split(".")[-1]
    out.indexes.append(index)


def _ddl_index(constant: ast.Constant, out: FileExtract) -> None:
    match = _DDL_INDEX.search(str(constant.value))
    if match is None:
        return
    table = match.group(2).replace('"', "").split(".")[-1]
    body = match.group(3)
    functions = tuple(
        [(f.lower(), c) for f, c in _DDL_FUNCTION.findall(body) if f.lower() != "cast"]
        + sql_casts(body)
    )
    if functions:
        out.indexes.append(IndexFacts(line=constant.lineno, functions=functions, table=table))


def _hands_with_name(builder: FunctionBuilder, value: ast.expr) -> bool:
    """``helper(s, ...)`` or ``Repository(s).method(...)`` of a name a `with` bound."""
    if not isinstance(value, ast.Call) or not builder.with_names:
        return False
    args = list(value.args)
    if isinstance(value.func, ast.Attribute) and isinstance(value.func.value, ast.Call):
        args.extend(value.func.value.args)
    return any(isinstance(arg, ast.Name) and arg.id in builder.with_names for arg in args)


def _summarise_function(
    resolver: NameResolver,
    builder: FunctionBuilder,
    queries: bool,
    hands_out: bool,
    flows: FlowCache,
) -> None:
    from sqla_doctor.static.flow import summarise

    facts = builder.facts
    facts.returns, facts.provider = summarise(
        resolver, builder.node, facts, queries, hands_out, flows, builder.owner
    )
