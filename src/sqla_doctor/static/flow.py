"""Intra-procedural facts for rules: sessions, query results, loader options, loops.

One :class:`FunctionFlow` per function (or module body, or lambda), built lazily the first
time a rule asks and kept in the file's :class:`FlowCache`, answers:

- which names are sessions, and how they were made (a factory call, ``with X() as s``,
  ``Session(engine)``, an annotated parameter, ``Depends(get_db)``, ``db.session``,
  ``self.session`` set in ``__init__``);
- which expressions hold ORM objects of which model, loaded by which statement with which
  loader options (``session.scalars(select(User)).all()``, ``session.query(User)``,
  ``User.query``, ``(await s.execute(stmt)).scalars()``, results of a project function);
- where names are bound, read, called on, and which loops iterate what.

Values are approximate by design: a name's value is that of its last binding before the
use. When something is not knowable statically, the answer is None and rules stay silent.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqla_doctor.static.children import KNOWN_REVERSED_FIELDS, reversed_fields_of
from sqla_doctor.static.index.functions import (
    DELEGATED,
    SELF_MODEL,
    FunctionFacts,
    ReturnFacts,
    classmethod_receiver,
    instance_receiver,
    params_of,
)
from sqla_doctor.static.index.models import (
    call_tail,
    keyword,
    literal_str,
    parse_annotation,
)
from sqla_doctor.static.index.names import SQLA_ROOTS, ModuleNames, NameResolver
from sqla_doctor.static.index.sessions import (
    CommitFlag,
    FactoryFacts,
    ProviderFacts,
    expire_on_commit,
)
from sqla_doctor.static.loaders import Options, parse_options

if TYPE_CHECKING:
    from sqla_doctor.static.context import FileContext
    from sqla_doctor.static.index import ProjectIndex

_STATEMENT_CHAIN = frozenset(
    {
        "where",
        "filter",
        "filter_by",
        "order_by",
        "limit",
        "offset",
        "join",
        "outerjoin",
        "join_from",
        "outerjoin_from",
        "distinct",
        "group_by",
        "having",
        "execution_options",
        "with_for_update",
        "select_from",
        "correlate",
        "params",
        "prefix_with",
        "suffix_with",
        "fetch",
        "slice",
        "set_label_style",
        "enable_assertions",
        "populate_existing",
        "autoflush",
        "yield_per",
        "with_hint",
        "reset_joinpoint",
        "values",
        "returning",
        "ordered_values",
        "on_conflict_do_nothing",
        "on_conflict_do_update",
        "on_duplicate_key_update",
        "from_select",
        "from_statement",
        "inline",
        "with_dialect_options",
    }
)
_QUERY_MANY = frozenset({"all"})
_QUERY_ONE = frozenset(
    {"first", "one", "one_or_none", "get", "get_or_404", "first_or_404", "one_or_404", "scalar"}
)
_ITER_BUILTINS = frozenset({"list", "tuple", "sorted", "set", "reversed", "frozenset"})
SESSION_TYPE_NAMES = frozenset(
    {"Session", "AsyncSession", "scoped_session", "async_scoped_session"}
)
FACTORY_TYPE_NAMES = frozenset({"sessionmaker", "async_sessionmaker"})
# External I/O that holds a checked-out connection hostage (P07), by qualified prefix.
_IO_PREFIXES: tuple[tuple[str, str], ...] = (
    ("httpx.", "HTTP request"),
    ("requests.", "HTTP request"),
    ("aiohttp.", "HTTP request"),
    ("urllib.request.urlopen", "HTTP request"),
    ("urllib3.", "HTTP request"),
    ("asyncio.sleep", "sleep"),
    ("time.sleep", "sleep"),
    ("anyio.sleep", "sleep"),
    ("trio.sleep", "sleep"),
    ("smtplib.", "SMTP call"),
    ("aiosmtplib.", "SMTP call"),
    ("boto3.", "AWS call"),
)
_IO_EXCLUDED = frozenset(
    {
        "httpx.Timeout",
        "httpx.Limits",
        "httpx.URL",
        "httpx.Headers",
        "httpx.HTTPError",
        "httpx.HTTPStatusError",
        "httpx.Response",
        "httpx.Request",
        "requests.exceptions",
        "requests.RequestException",
        "requests.HTTPError",
        "requests.Response",
        "aiohttp.ClientTimeout",
        "aiohttp.ClientError",
        "aiohttp.TCPConnector",
        "aiohttp.web",
    }
)
_IO_CLIENT_CLASSES = frozenset(
    {
        "httpx.Client",
        "httpx.AsyncClient",
        "requests.Session",
        "requests.session",
        "aiohttp.ClientSession",
        "urllib3.PoolManager",
        "smtplib.SMTP",
        "smtplib.SMTP_SSL",
        "aiosmtplib.SMTP",
    }
)
_IO_CLIENT_METHODS = frozenset(
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
        "urlopen",
        "sendmail",
        "send_message",
        "ws_connect",
    }
)


@functools.lru_cache(maxsize=1024)
def io_kind(qualified: str) -> str | None:
    """What kind of external I/O a qualified call is (``httpx.get`` → "HTTP request")."""
    if any(qualified == e or qualified.startswith(e + ".") for e in _IO_EXCLUDED):
        return None
    if qualified in _IO_CLIENT_CLASSES:
        return None
    for prefix, kind in _IO_PREFIXES:
        if qualified == prefix.rstrip(".") or qualified.startswith(prefix):
            if prefix.endswith(".") and qualified.rpartition(".")[2][:1].isupper():
                return None  # a class (a client, an exception), not a call that waits
            return kind
    return None


def is_io_client(qualified: str) -> bool:
    """Whether a class makes clients whose methods wait on the network."""
    return qualified in _IO_CLIENT_CLASSES


# Values ------------------------------------------------------------------------------
_V = TypeVar("_V")


def evolve(value: _V, **changes: Any) -> _V:
    """``dataclasses.replace`` for the frozen values below, without re-running
    ``__init__``: they have no ``__post_init__`` or init-only fields, and values are
    rebuilt for nearly every node a rule asks about."""
    copied: _V = object.__new__(type(value))
    copied.__dict__.update(value.__dict__, **changes)
    return copied


@dataclass(frozen=True)
class SessionValue:
    """A session, and how this function got it."""

    is_async: bool | None
    # "with" (a with-item), "call" (a factory call bound to a name), "param", "depends",
    # "flask" (db.session), "attr" (self.session), "scoped" (a scoped_session registry).
    how: str
    node: ast.AST
    source: str | None = None  # qualified factory / class / provider
    scoped: bool = False
    commits: bool = False  # the context commits on exit (`.begin()`, a committing provider)
    managed: bool = False  # the context closes it (`with`, a provider)
    expire_on_commit: bool | None = True
    # With `commits`, a provider that commits only `if commit:` and a call that passes the
    # flag as a variable: its source (`save`); "" when `*args`/`**kwargs` may carry it.
    commits_if: str | None = None


@dataclass(frozen=True)
class FactoryValue:
    """A session factory (``sessionmaker``), called to make sessions."""

    is_async: bool | None
    source: str | None
    scoped: bool = False
    expire_on_commit: bool | None = True


@dataclass(frozen=True)
class StatementValue:
    """A statement under construction: ``select(User).where(...).options(...)``, or a
    legacy ``Query``."""

    model: str
    kind: str  # select / query / update / delete / insert
    node: ast.expr  # the whole expression so far
    root: ast.Call  # the select()/query()/update() call itself
    entity: ast.expr | None
    options: Options = field(default_factory=Options)
    entities: tuple[str | None, ...] = ()
    session: SessionValue | None = None
    receiver: str | None = None  # the session's name (`s`, `self.session`) for a Query
    # What `.join()` brings in: models ("app.models.Plugin") and relationships ("plugin").
    joins: tuple[str, ...] = ()
    # Flask-SQLAlchemy's `Model.query`, taken on trust where no index tells a Flask model
    # (a function's summary): whoever uses the summary checks it.
    model_query: bool = False
    # Columns of the entity a `where()`/`filter()`/`filter_by()` sets equal to one value
    # (`Post.author_id == uid`): every row shares what they point at.
    pinned: frozenset[str] = frozenset()
    # Per entity, the name of a local `aliased()` entity (`top` of `select(top)`).
    aliases: tuple[str | None, ...] = ()
    # `insert(User).returning(User)`: an ORM INSERT/UPDATE/DELETE that returns the objects.
    returning: bool = False


@dataclass(frozen=True)
class ObjectsValue:
    """ORM objects of ``model``: one, or a collection, loaded by a statement."""

    model: str
    many: bool
    # list (materialized) / scalars (a ScalarResult) / result (a Result of rows) /
    # rows (a list of rows) / object / relationship (a loaded-on-access attribute) / page /
    # partitions (`scalars.partitions()`: lists of objects)
    shape: str
    root_model: str
    path: tuple[tuple[str, str], ...]  # relationship steps from the loaded entity
    options: Options
    is_async: bool
    line: int  # where the objects were loaded
    unique: bool = False
    origin_path: str | None = None  # another file, when a helper loaded them
    origin_name: str | None = None  # that helper
    stmt: StatementValue | None = None
    session: SessionValue | None = None
    node: ast.AST | None = None  # the expression that loaded them
    entities: tuple[str | None, ...] = ()
    returns: ReturnFacts | None = None  # when a project function returned them
    receiver: str | None = None  # the loading session's name (`s`, `self.session`)
    via: str | None = None  # the repository whose method returned them (`uow.products`)
    # Columns a helper that returned them compared to what this call passes
    # (`get_comments(workout_id=...)` filtering `Comment.workout_id == workout_id`).
    pinned: frozenset[str] = frozenset()
    # Which entity of ``stmt`` the root objects are (`post, user` of `select(Post, User)`).
    position: int = 0

    @property
    def entity(self) -> ast.expr | None:
        """The root entity as the statement writes it, for an option that names it."""
        stmt = self.stmt
        if stmt is None or self.position == 0:
            return stmt.entity if stmt is not None else None
        args = stmt.root.args
        return args[self.position] if self.position < len(args) else None

    @property
    def alias(self) -> str | None:
        """The local ``aliased()`` entity the root objects were loaded as (`top`)."""
        stmt = self.stmt
        if stmt is None or self.position >= len(stmt.aliases):
            return None
        return stmt.aliases[self.position]


@dataclass(frozen=True)
class InstanceValue:
    """An instance of a project class (a repository, a unit of work)."""

    cls: str
    # The call that made it (`InvoiceRepository(session)`), where the flow saw it.
    made: ast.Call | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ClientValue:
    """An HTTP/SMTP client whose methods wait on the network."""

    kind: str
    source: str


@dataclass(frozen=True)
class RowValue:
    """One Row of a result whose statement selects entities (``for row in
    session.execute(select(User, func.count()))``): ``row.User`` and ``row[0]`` are
    the objects at that position, as unpacking it would give them."""

    rows: ObjectsValue


Value = (
    SessionValue
    | FactoryValue
    | StatementValue
    | ObjectsValue
    | InstanceValue
    | ClientValue
    | RowValue
)


@dataclass(frozen=True)
class Binding:
    """Where a name gets a value in this scope."""

    name: str
    kind: str  # assign / with / for / comp / param / walrus / other
    node: ast.AST  # the binding statement (or the comprehension, or the arg)
    value: ast.expr | None  # the assigned expression, with-item or iterable
    pos: tuple[int, int]  # uses after this position see it
    scope: ast.AST | None = None  # a comprehension: only uses inside it see it
    element: int | None = None  # position in a tuple target
    default: ast.expr | None = None  # a parameter's default


def _made(factory: FactoryFacts | None) -> FactoryValue | None:
    """A factory a project function builds, as this function's value (not the module-level
    name the index records it under)."""
    if factory is None:
        return None
    return FactoryValue(factory.is_async, None, factory.scoped, factory.expire_on_commit)


def _pos(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


def _end(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "end_lineno", 0) or 0, getattr(node, "end_col_offset", 0) or 0)


def contains(outer: ast.AST, inner: ast.AST) -> bool:
    """Whether ``inner`` lies within ``outer``'s source range."""
    return _pos(outer) <= _pos(inner) and _end(inner) <= _end(outer)


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_TRY_STAR: type[ast.AST] | None = getattr(ast, "TryStar", None)
# The node classes FunctionFlow._scan records something for (besides names, attributes
# and constants, handled first).
_SCAN_SPECIAL: frozenset[type[ast.AST] | None] = frozenset(
    {
        ast.Call,
        ast.Assign,
        ast.AnnAssign,
        ast.AugAssign,
        ast.NamedExpr,
        ast.For,
        ast.AsyncFor,
        *_COMPREHENSIONS,
        ast.With,
        ast.AsyncWith,
        ast.Try,
        _TRY_STAR,
        ast.ExceptHandler,
        ast.Return,
        ast.Yield,
        ast.YieldFrom,
        ast.Import,
        ast.ImportFrom,
        *_SCOPES,
        ast.Global,
        ast.Nonlocal,
    }
)
Scope = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.Module
Method = ast.FunctionDef | ast.AsyncFunctionDef
# What the lists of a statement's blocks hold.
_BLOCK_ITEMS = (ast.stmt, ast.ExceptHandler, ast.match_case)


@dataclass(frozen=True, slots=True)
class Scan:
    """What ``FunctionFlow._scan`` collects from a body. It depends on the body alone, so
    the flow the rules build for a function takes the one its index summary made in the
    first pass, when the tree was kept between the passes, instead of walking it again."""

    bindings: dict[str, list[Binding]]
    attr_loads: dict[str, list[ast.Attribute]]
    receiver_calls: dict[str, list[ast.Call]]
    name_loads: dict[str, list[ast.Name]]
    calls: list[ast.Call]
    loops: list[ast.AST]
    withs: list[ast.With | ast.AsyncWith]
    tries: list[ast.Try]
    returns: list[ast.Return]
    yields: list[ast.Yield | ast.YieldFrom]
    parents: dict[ast.AST, ast.AST]

    @classmethod
    def of(cls, flow: FunctionFlow) -> Scan:
        return cls(
            flow.bindings,
            flow.attr_loads,
            flow.receiver_calls,
            flow.name_loads,
            flow.calls,
            flow.loops,
            flow.withs,
            flow.tries,
            flow.returns,
            flow.yields,
            flow.parents,
        )

    def apply(self, flow: FunctionFlow) -> None:
        """Give ``flow`` these findings; nothing changes them after the scan."""
        flow.bindings = self.bindings
        flow.attr_loads = self.attr_loads
        flow.receiver_calls = self.receiver_calls
        flow.name_loads = self.name_loads
        flow.calls = self.calls
        flow.loops = self.loops
        flow.withs = self.withs
        flow.tries = self.tries
        flow.returns = self.returns
        flow.yields = self.yields
        flow.parents = self.parents


class FunctionFlow:
    """Everything rules ask about one function body (see the module docstring)."""

    def __init__(
        self,
        node: Scope,
        resolver: NameResolver,
        index: ProjectIndex | None = None,
        path: str = "",
        class_node: ast.ClassDef | None = None,
        outer: FunctionFlow | None = None,
        cache: FlowCache | None = None,
    ) -> None:
        self.node = node
        self.resolver = resolver
        self.index = index
        self.path = path
        self.class_node = class_node
        self.outer = outer
        self.is_async = isinstance(node, ast.AsyncFunctionDef)
        self.bindings: dict[str, list[Binding]] = {}
        self.attr_loads: dict[str, list[ast.Attribute]] = {}
        self.receiver_calls: dict[str, list[ast.Call]] = {}
        self.name_loads: dict[str, list[ast.Name]] = {}
        self.calls: list[ast.Call] = []
        self.loops: list[ast.AST] = []
        self.withs: list[ast.With | ast.AsyncWith] = []
        self.tries: list[ast.Try] = []
        self.returns: list[ast.Return] = []
        self.yields: list[ast.Yield | ast.YieldFrom] = []
        self.parents: dict[ast.AST, ast.AST] = {}
        self._values: dict[int, Value | None] = {}
        self._busy: set[int] = set()
        self._sessions: list[tuple[str, Binding, SessionValue]] | None = None
        self.cache = cache if cache is not None else FlowCache()
        scan = self.cache.scans.get(id(node))
        if scan is not None:
            scan.apply(self)
        else:
            self._scan()
            if self.cache.record_scans:
                self.cache.scans[id(node)] = Scan.of(self)

    # Scanning ------------------------------------------------------------------------
    def _bind(self, binding: Binding) -> None:
        self.bindings.setdefault(binding.name, []).append(binding)

    def _bind_target(
        self,
        target: ast.expr,
        kind: str,
        node: ast.AST,
        value: ast.expr | None,
        pos: tuple[int, int],
        scope: ast.AST | None = None,
    ) -> None:
        if isinstance(target, ast.Name):
            self._bind(Binding(target.id, kind, node, value, pos, scope))
        elif isinstance(target, (ast.Tuple, ast.List)):
            for position, element in enumerate(target.elts):
                if isinstance(element, ast.Name):
                    self._bind(Binding(element.id, kind, node, value, pos, scope, position))
                elif isinstance(element, ast.Starred) and isinstance(element.value, ast.Name):
                    self._bind(Binding(element.value.id, "other", node, None, pos, scope))

    def _scan(self) -> None:
        node = self.node
        body: list[ast.AST]
        if isinstance(node, ast.Module):
            body = list(node.body)
        elif isinstance(node, ast.Lambda):
            body = [node.body]
            self._params(node.args)
        else:
            body = list(node.body)
            self._params(node.args)
        # A node's parent is linked as it is pushed: the stack holds bare nodes.
        parents = self.parents
        for child in body:
            parents[child] = node
        stack: list[ast.AST] = body[::-1]
        pop, push = stack.pop, stack.append
        constant, ast_node = ast.Constant, ast.AST
        name_node, attribute_node = ast.Name, ast.Attribute
        load, special, known_fields = ast.Load, _SCAN_SPECIAL, KNOWN_REVERSED_FIELDS.get
        name_loads, attr_loads = self.name_loads, self.attr_loads
        while stack:
            current = pop()
            kind = type(current)
            if kind is name_node:
                assert isinstance(current, ast.Name)
                if current.ctx.__class__ is load:
                    name_loads.setdefault(current.id, []).append(current)
                continue
            if kind is attribute_node:
                assert isinstance(current, ast.Attribute)
                value = current.value
                if value.__class__ is name_node:
                    attr_loads.setdefault(value.id, []).append(current)
                # Only the value: the `ctx` child (Load/Store) carries nothing.
                parents[value] = current
                push(value)
                continue
            if kind is constant:
                continue
            # Most nodes (subscripts, operators, keywords, `if`s...) need no look; only
            # these go down the chain below.
            if kind not in special:
                pass
            elif kind is ast.Call:
                assert isinstance(current, ast.Call)
                self.calls.append(current)
                func = current.func
                if isinstance(func, ast.Attribute):
                    key = receiver_key(func.value)
                    if key is not None:
                        self.receiver_calls.setdefault(key, []).append(current)
            elif kind is ast.Assign:
                assert isinstance(current, ast.Assign)
                for target in current.targets:
                    self._bind_target(target, "assign", current, current.value, _end(current))
            elif kind is ast.AnnAssign:
                assert isinstance(current, ast.AnnAssign)
                if current.value is not None:
                    self._bind_target(
                        current.target, "assign", current, current.value, _end(current)
                    )
            elif kind is ast.AugAssign:
                assert isinstance(current, ast.AugAssign)
                self._bind_target(current.target, "other", current, None, _end(current))
            elif kind is ast.NamedExpr:
                assert isinstance(current, ast.NamedExpr)
                self._bind_target(current.target, "assign", current, current.value, _end(current))
            elif kind is ast.For or kind is ast.AsyncFor:
                assert isinstance(current, (ast.For, ast.AsyncFor))
                self.loops.append(current)
                self._bind_target(current.target, "for", current, current.iter, _end(current.iter))
            elif kind in _COMPREHENSIONS:
                self.loops.append(current)
                for generator in current.generators:  # type: ignore[attr-defined]
                    self._bind_target(
                        generator.target,
                        "comp",
                        current,
                        generator.iter,
                        _end(generator.iter),
                        scope=current,
                    )
            elif kind is ast.With or kind is ast.AsyncWith:
                assert isinstance(current, (ast.With, ast.AsyncWith))
                self.withs.append(current)
                for item in current.items:
                    if item.optional_vars is not None:
                        self._bind_target(
                            item.optional_vars,
                            "with",
                            current,
                            item.context_expr,
                            _end(item.context_expr),
                        )
            elif kind is ast.Try or kind is _TRY_STAR:
                self.tries.append(current)  # type: ignore[arg-type]
            elif kind is ast.ExceptHandler:
                assert isinstance(current, ast.ExceptHandler)
                if current.name:
                    self._bind(Binding(current.name, "other", current, None, _pos(current)))
            elif kind is ast.Return:
                self.returns.append(current)  # type: ignore[arg-type]
            elif kind is ast.Yield or kind is ast.YieldFrom:
                self.yields.append(current)  # type: ignore[arg-type]
            elif kind is ast.Import or kind is ast.ImportFrom:
                assert isinstance(current, (ast.Import, ast.ImportFrom))
                for alias in current.names:
                    local = alias.asname or alias.name.split(".")[0]
                    self._bind(Binding(local, "import", current, None, _end(current)))
                continue
            elif kind in _SCOPES:
                assert isinstance(
                    current, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)
                )
                if not isinstance(current, ast.Lambda):
                    self._bind(Binding(current.name, "def", current, None, _pos(current)))
                    for decorator in current.decorator_list:
                        parents[decorator] = current
                        push(decorator)
                else:
                    # A lambda's body reads the enclosing names; scan it, minus its params.
                    parents[current.body] = current
                    push(current.body)
                continue
            elif kind is ast.Global or kind is ast.Nonlocal:
                continue
            # child_nodes() inlined, last first so that the stack pops them in source
            # order; a constant child only needs its parent link, never a push.
            fields = known_fields(kind)
            if fields is None:
                fields = reversed_fields_of(kind)
            for field_name in fields:
                held: Any = getattr(current, field_name, None)
                if held.__class__ is list:
                    for child in reversed(held):
                        if child.__class__ is constant:
                            parents[child] = current
                        elif isinstance(child, ast_node):
                            parents[child] = current
                            push(child)
                elif held.__class__ is constant:
                    parents[held] = current
                elif isinstance(held, ast_node):
                    parents[held] = current
                    push(held)

    def _params(self, args: ast.arguments) -> None:
        positional = [*args.posonlyargs, *args.args]
        # The defaults belong to the last positional parameters.
        first_default = len(positional) - len(args.defaults)
        for position, arg in enumerate(positional):
            default = args.defaults[position - first_default] if position >= first_default else None
            self._bind(Binding(arg.arg, "param", arg, arg.annotation, (0, 0), default=default))
        for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=False):
            self._bind(Binding(arg.arg, "param", arg, arg.annotation, (0, 0), default=kw_default))
        for extra in (args.vararg, args.kwarg):
            if extra is not None:
                self._bind(Binding(extra.arg, "other", extra, None, (0, 0)))

    # Lookups -------------------------------------------------------------------------
    def parent(self, node: ast.AST) -> ast.AST | None:
        return self.parents.get(node)

    def binding(self, name: str, at: ast.AST) -> Binding | None:
        """The binding of ``name`` that a use at ``at`` sees (last one before it)."""
        best: Binding | None = None
        where = _pos(at)
        for binding in self.bindings.get(name, ()):
            if binding.scope is not None:
                # A comprehension's variable is seen anywhere inside it (its element
                # comes first in the source) except in the iterable that binds it.
                if not contains(binding.scope, at) or (
                    binding.value is not None and contains(binding.value, at)
                ):
                    continue
                if best is None or best.scope is None or contains(best.scope, binding.scope):
                    best = binding
                continue
            if best is not None and best.scope is not None:
                continue
            if binding.pos >= where and binding.kind != "param":
                continue
            if best is None or binding.pos >= best.pos:
                best = binding
        return best

    def is_local(self, name: str) -> bool:
        return name in self.bindings

    def awaited(self, node: ast.AST) -> bool:
        return isinstance(self.parent(node), ast.Await)

    def enclosing(self, node: ast.AST, *kinds: type[ast.AST]) -> Iterator[ast.AST]:
        current = self.parent(node)
        while current is not None and current is not self.node:
            if isinstance(current, kinds):
                yield current
            current = self.parent(current)

    def reads_in(self, name: str, region: ast.AST) -> list[ast.Attribute]:
        """``name.attr`` loads inside ``region`` that still see the same binding."""
        found: list[ast.Attribute] = []
        for attribute in self.attr_loads.get(name, ()):
            if isinstance(attribute.ctx, ast.Load) and contains(region, attribute):
                found.append(attribute)
        return found

    def qualify(self, node: ast.expr) -> str | None:
        """A qualified name for a non-local name (locals shadow imports)."""
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and self.is_local(root.id):
            base = self._imported(root.id)
            if base is None:
                return None
            parts: list[str] = []
            while isinstance(node, ast.Attribute):
                parts.append(node.attr)
                node = node.value
            return ".".join([base, *reversed(parts)])
        return self.resolver.qualify(node)

    def _own_class(self, name: str) -> str | None:
        """The class ``cls`` names in a classmethod: the one it is defined on (called
        through a subclass, a subclass of it, with the same relationships)."""
        return self._receiver_class(name, classmethod_receiver)

    def own_method(self, name: str, method: str) -> FunctionFacts | None:
        """``self.all_users()`` in a method: the method of the class it is defined on
        (a subclass could override it; the class we read is the one we judge)."""
        cls = self._receiver_class(name, instance_receiver)
        if cls is None or self.index is None:
            return None
        return self.index.function(f"{cls}.{method}")

    def _receiver_class(
        self,
        name: str,
        receiver: Callable[[ast.FunctionDef | ast.AsyncFunctionDef], str | None],
    ) -> str | None:
        node = self.node
        if self.class_node is None or not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        if receiver(node) != name:
            return None
        if any(binding.kind != "param" for binding in self.bindings.get(name, ())):
            return None
        return self.resolver.qualify(ast.Name(id=self.class_node.name, ctx=ast.Load()))

    def _imported(self, name: str) -> str | None:
        """What a name bound only by one import inside this function names (`from
        sqlalchemy import delete` in the body, to dodge an import cycle), or in a module's
        flow by one ``class`` or ``def`` of the module (a script's code below its models)."""
        bindings = self.bindings.get(name, ())
        if self._defined_once_here(bindings):
            return self.resolver.qualify_name(name)
        if not bindings or any(b.kind != "import" for b in bindings):
            return None
        nodes = {id(b.node): b.node for b in bindings}
        if len(nodes) != 1:
            return None
        node = bindings[0].node
        assert isinstance(node, (ast.Import, ast.ImportFrom))
        own = self.resolver.names
        scratch = ModuleNames(module=own.module, is_package=own.is_package)
        scratch.add_import(node)
        target = scratch.imports.get(name)
        return self.resolver.follow(target) if target is not None else None

    def _defined_once_here(self, bindings: Sequence[Binding]) -> bool:
        """Bound once, by a ``class`` or ``def`` at the top of the module this flow is."""
        return (
            isinstance(self.node, ast.Module)
            and len(bindings) == 1
            and bindings[0].kind == "def"
            and self.parents.get(bindings[0].node) is self.node
        )

    def sqla_name(self, node: ast.expr) -> str | None:
        qualified = self.qualify(node)
        return self.resolver.sqla_tail(qualified) if qualified is not None else None

    # Values --------------------------------------------------------------------------
    def value(self, node: ast.AST | None) -> Value | None:
        """What an expression holds, as far as this function shows."""
        if node is None:
            return None
        key = id(node)
        if key in self._values:
            return self._values[key]
        if key in self._busy:
            return None
        self._busy.add(key)
        try:
            result = self._evaluate(node)
        finally:
            self._busy.discard(key)
        self._values[key] = result
        return result

    def _evaluate(self, node: ast.AST) -> Value | None:
        if isinstance(node, ast.Await):
            inner = self.value(node.value)
            if isinstance(inner, ObjectsValue) and not inner.is_async:
                return evolve(inner, is_async=True)
            return inner
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.Subscript):
            base = self.value(node.value)
            if isinstance(base, RowValue):
                index = node.slice
                if isinstance(index, ast.Constant) and type(index.value) is int:
                    return self._element(base.rows, index.value)
                return None
            if (
                isinstance(base, ObjectsValue)
                and base.many
                and base.shape in ("list", "relationship", "page")
            ):
                if isinstance(node.slice, ast.Slice):
                    return base
                return evolve(base, many=False, shape="object")
            return None
        if isinstance(node, (ast.ListComp, ast.GeneratorExp, ast.SetComp)):
            # `[u for u in users if u.active]` keeps the objects.
            if (
                len(node.generators) == 1
                and isinstance(node.elt, ast.Name)
                and isinstance(node.generators[0].target, ast.Name)
                and node.elt.id == node.generators[0].target.id
            ):
                inner = self.value(node.generators[0].iter)
                if isinstance(inner, ObjectsValue) and inner.many:
                    return evolve(inner, shape="list")
            return None
        if isinstance(node, ast.NamedExpr):
            return self.value(node.value)
        return None

    def _name(self, node: ast.Name) -> Value | None:
        binding = self.binding(node.id, node)
        if binding is None:
            if self.is_local(node.id):
                return None
            if self.outer is not None:
                return self.outer._free(node.id, self.node)
            return self._global(node)
        return self.binding_value(binding)

    def _free(self, name: str, at: ast.AST) -> Value | None:
        binding = self.binding(name, at)
        if binding is None:
            return None
        return self.binding_value(binding)

    def _global(self, node: ast.expr, qualified: str | None = None) -> Value | None:
        if qualified is None:
            qualified = self.resolver.qualify(node)
        if qualified is None or self.index is None:
            return None
        source = self.index.session_source(qualified)
        if source is not None and source.kind == "factory":
            return FactoryValue(
                source.is_async, source.qualname, source.scoped, source.expire_on_commit
            )
        # `service = UserService()` at module level: an object of that project class.
        origin = self.index.origin_of(qualified)
        if origin is not None and origin.startswith("call:"):
            cls = origin[len("call:") :]
            if self.index.class_facts(cls) is not None and self.index.model(cls) is None:
                return InstanceValue(self.index.follow(cls))
        return None

    def binding_value(self, binding: Binding) -> Value | None:
        if binding.kind == "assign":
            value = binding.value
            if binding.element is not None:
                if isinstance(value, (ast.Tuple, ast.List)) and binding.element < len(value.elts):
                    return self.value(value.elts[binding.element])
                if isinstance(value, ast.Call):
                    return self._unpacked_factory(value, binding.element)
                return None
            return self.value(value)
        if binding.kind == "with":
            if binding.element is not None:
                return None
            return self._entered(binding.value)
        if binding.kind in ("for", "comp"):
            paired = self._paired(binding.value)
            if paired is not None:
                # `for i, user in enumerate(users)`, `for user, row in zip(users, rows)`.
                if binding.element is None or binding.element >= len(paired):
                    return None
                source = paired[binding.element]
                return None if source is None else self._element(self.value(source), None)
            iterable = self.value(binding.value)
            return self._element(iterable, binding.element)
        if binding.kind == "param":
            assert isinstance(binding.node, ast.arg)
            return self._param(binding.node, binding.default)
        if binding.kind == "import":
            qualified = self._imported(binding.name)
            return None if qualified is None else self._global(binding.node, qualified)  # type: ignore[arg-type]
        return None

    def _unpacked_factory(self, call: ast.Call, position: int) -> FactoryValue | None:
        """``engine, Session = make_db()``: the factory a project function returns at
        that position of its tuple."""
        qualified = self.qualify(call.func)
        if self.index is None or qualified is None:
            return None
        function = self.index.function(qualified)
        if function is None or position >= len(function.tuple_factories):
            return None
        return _made(function.tuple_factories[position])

    def _paired(self, node: ast.expr | None) -> list[ast.expr | None] | None:
        """What each element of the tuples ``enumerate(rows)`` / ``zip(a, b)`` yield comes
        from (None: a counter), or None when ``node`` is no such call of the builtin."""
        if (
            not isinstance(node, ast.Call)
            or not isinstance(node.func, ast.Name)
            or node.func.id not in ("enumerate", "zip")
            or self.is_local(node.func.id)
            or self.qualify(node.func) is not None
            or not node.args
            or any(isinstance(a, ast.Starred) for a in node.args)
        ):
            return None
        if node.func.id == "enumerate":
            return [None, node.args[0]]
        return list(node.args)

    def iterated(self, node: ast.expr | None) -> ObjectsValue | None:
        """The ORM objects a loop over ``node`` sees (a legacy Query runs when iterated;
        ``enumerate(rows)``, ``zip(rows, ...)``: those of the rows in it)."""
        paired = self._paired(node)
        if paired is not None:
            return next(
                (found for source in paired if (found := self.iterated(source)) is not None),
                None,
            )
        value = self.value(node)
        if isinstance(value, StatementValue) and value.kind == "query":
            value = ObjectsValue(
                model=value.model,
                many=True,
                shape="list",
                root_model=value.model,
                path=(),
                options=value.options,
                is_async=False,
                line=value.root.lineno,
                unique=True,
                stmt=value,
                session=value.session,
                node=node,
                entities=value.entities,
                receiver=value.receiver,
            )
        if isinstance(value, ObjectsValue) and value.many:
            return value
        return None

    def _element(self, iterable: Value | None, position: int | None) -> Value | None:
        if isinstance(iterable, StatementValue) and iterable.kind == "query":
            iterable = ObjectsValue(
                model=iterable.model,
                many=True,
                shape="list",
                root_model=iterable.model,
                path=(),
                options=iterable.options,
                is_async=False,
                line=iterable.root.lineno,
                unique=True,
                stmt=iterable,
                session=iterable.session,
                node=iterable.node,
                entities=iterable.entities,
                receiver=iterable.receiver,
            )
        if not isinstance(iterable, ObjectsValue) or not iterable.many:
            return None
        if iterable.shape == "partitions":
            # `for partition in result.scalars().partitions()`: each a list of the objects.
            return evolve(iterable, shape="list") if position is None else None
        if iterable.shape in ("result", "rows"):
            # `for user, post in session.execute(select(User, Post))`.
            if position is None:
                # `for row in ...`: a Row, read by `row.User` or `row[0]`.
                return RowValue(iterable) if any(iterable.entities) else None
            if position >= len(iterable.entities):
                return None
            model = iterable.entities[position]
            if model is None:
                return None
            return evolve(
                iterable,
                model=model,
                root_model=model,
                many=False,
                shape="object",
                path=(),
                position=position,
            )
        if position is not None:
            return None
        return evolve(iterable, many=False, shape="object")

    def _entered(self, expr: ast.expr | None) -> Value | None:
        """What ``with expr as name`` binds."""
        if expr is None:
            return None
        if isinstance(expr, ast.Call):
            func = expr.func
            # `with SessionLocal.begin() as s`: a session whose block commits.
            if isinstance(func, ast.Attribute) and func.attr == "begin" and not expr.args:
                owner = self.value(func.value)
                if isinstance(owner, FactoryValue):
                    return SessionValue(
                        owner.is_async,
                        "with",
                        expr,
                        owner.source,
                        owner.scoped,
                        commits=True,
                        managed=True,
                        expire_on_commit=owner.expire_on_commit,
                    )
                return None
            if (
                self.sqla_name(func) == "closing"
                or (self.qualify(func) or "") == "contextlib.closing"
            ):
                return self.value(expr.args[0]) if expr.args else None
        made = self.value(expr)
        if isinstance(made, SessionValue):
            commits = made.commits or self._exit_commits(made.source)
            return evolve(made, how="with", managed=True, commits=commits)
        if isinstance(made, ClientValue):
            return made
        if isinstance(made, InstanceValue) and self._enters_self(made.cls):
            # `with UnitOfWork() as uow:` whose `__enter__` returns the unit of work.
            return made
        return None

    def _enters_self(self, cls: str) -> bool:
        if self.index is None:
            return False
        for facts in self.index.lineage(cls):
            if facts.enters_self is not None:
                return facts.enters_self
        return False

    def _exit_commits(self, source: str | None) -> bool:
        """Whether sessions from ``source`` (a factory made with ``class_=``, or the class
        itself) commit when their ``with`` block ends without an exception."""
        if self.index is None or source is None:
            return False
        factory = self.index.factory(source)
        session_class = factory.session_class if factory is not None else source
        if session_class is None:
            return False
        return any(facts.exit_commits for facts in self.index.lineage(session_class))

    def _param(self, arg: ast.arg, default: ast.expr | None) -> Value | None:
        annotation = parse_annotation(arg.annotation) if arg.annotation is not None else None
        dependency = self._depends(default) or self._depends_in(annotation)
        session_type = self._session_annotation(annotation)
        if dependency is not None and self.index is not None:
            source = self.index.session_source(dependency)
            if source is not None:
                return SessionValue(
                    source.is_async if session_type is None else session_type == "AsyncSession",
                    "depends",
                    arg,
                    source.qualname,
                    source.scoped,
                    source.commits,
                    True,
                    source.expire_on_commit,
                )
        if session_type is not None:
            if session_type in FACTORY_TYPE_NAMES:
                return FactoryValue(session_type == "async_sessionmaker", None)
            return SessionValue(
                session_type in ("AsyncSession", "async_scoped_session"),
                "depends" if dependency is not None else "param",
                arg,
                None,
                scoped=session_type.endswith("scoped_session"),
                managed=dependency is not None,
                expire_on_commit=None,
            )
        return self._instance_of(annotation)

    def _instance_of(self, annotation: ast.expr | None) -> InstanceValue | None:
        """An object of the project class an annotation names, also through
        ``Annotated[UserRepository, Depends(...)]`` and a type alias of it."""
        if isinstance(annotation, ast.Subscript) and isinstance(annotation.slice, ast.Tuple):
            head = self.resolver.qualify(annotation.value) or ""
            if head.rpartition(".")[2] == "Annotated":
                annotation = annotation.slice.elts[0]
        if not isinstance(annotation, (ast.Name, ast.Attribute)) or self.index is None:
            return None
        qualified = self.resolver.qualify(annotation)
        if qualified is None:
            return None
        origin = self.index.origin_of(qualified)
        if origin is not None and origin.startswith("annotated:"):
            qualified = origin[len("annotated:") :]
        if self.index.class_facts(qualified) is None:
            return None
        return InstanceValue(self.index.follow(qualified))

    def _depends(self, node: ast.expr | None) -> str | None:
        if not isinstance(node, ast.Call) or not node.args:
            return None
        qualified = self.resolver.qualify(node.func) or ""
        if qualified.rpartition(".")[2] not in ("Depends", "Provide", "Inject"):
            return None
        target = node.args[0]
        if isinstance(target, (ast.Name, ast.Attribute)):
            return self.resolver.qualify(target)
        return None

    def _depends_in(self, annotation: ast.expr | None) -> str | None:
        if isinstance(annotation, ast.Subscript) and isinstance(annotation.slice, ast.Tuple):
            head = self.resolver.qualify(annotation.value) or ""
            if head.rpartition(".")[2] == "Annotated":
                for extra in annotation.slice.elts[1:]:
                    found = self._depends(extra)
                    if found is not None:
                        return found
        return None

    def _session_annotation(self, annotation: ast.expr | None, depth: int = 0) -> str | None:
        """ "Session"/"AsyncSession"/"scoped_session"/"sessionmaker"/... for a parameter
        annotation (``Optional``, ``Annotated`` and type aliases unwrapped)."""
        if annotation is None or depth > 4:
            return None
        annotation = parse_annotation(annotation)
        if isinstance(annotation, ast.Subscript):
            head = self.resolver.qualify(annotation.value) or ""
            tail = head.rpartition(".")[2]
            elements = (
                annotation.slice.elts
                if isinstance(annotation.slice, ast.Tuple)
                else [annotation.slice]
            )
            if tail in ("Annotated", "Optional") and elements:
                return self._session_annotation(elements[0], depth + 1)
            if tail == "Union":
                found = [self._session_annotation(e, depth + 1) for e in elements]
                named = [f for f in found if f]
                return named[0] if len(named) == 1 else None
            if self.resolver.sqla_tail(head) in FACTORY_TYPE_NAMES | {
                "async_scoped_session",
                "scoped_session",
            }:
                return self.resolver.sqla_tail(head)
            return None
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            left = self._session_annotation(annotation.left, depth + 1)
            right = self._session_annotation(annotation.right, depth + 1)
            return left or right
        if isinstance(annotation, (ast.Name, ast.Attribute)):
            qualified = self.resolver.qualify(annotation)
            if qualified is None:
                return None
            name = self.resolver.sqla_tail(qualified)
            if name in SESSION_TYPE_NAMES or name in FACTORY_TYPE_NAMES:
                return name
            origin = self.index.origin_of(qualified) if self.index is not None else None
            if origin is not None and origin.startswith("annotated:"):
                alias_tail = self.resolver.sqla_tail(origin[len("annotated:") :])
                if alias_tail in SESSION_TYPE_NAMES:
                    return alias_tail
        return None

    def _attribute(self, node: ast.Attribute) -> Value | None:
        base = node.value
        # `db.session` of Flask-SQLAlchemy: a scoped session, removed at teardown.
        if node.attr == "session" and isinstance(base, (ast.Name, ast.Attribute)):
            qualified = self.qualify(base)
            if qualified is not None and self.resolver.is_flask_sqlalchemy(qualified):
                return SessionValue(False, "flask", node, qualified, scoped=True, managed=True)
        if isinstance(base, ast.Name) and base.id == "self" and self.class_node is not None:
            return self._self_attribute(node.attr)
        if node.attr == "query":
            model = self._model(base)
            if self.index is None:
                flask = model is not None
            else:
                mapped = self.index.model(model) if model is not None else None
                flask = mapped is not None and (
                    mapped.flavor == "flask" or self.index.has_query_property(mapped)
                )
            if model is not None and flask:
                # Flask-SQLAlchemy's `Model.query`: a legacy Query on `db.session` (or
                # on the scoped session of `Base.query = db_session.query_property()`).
                root = ast.Call(func=node, args=[], keywords=[])
                ast.copy_location(root, node)
                return StatementValue(
                    model, "query", node, root, base, Options(), (model,), model_query=True
                )
        owner = self.value(base)
        if isinstance(owner, RowValue):
            return self._row_entity(owner.rows, node.attr)
        if isinstance(owner, ObjectsValue):
            if owner.shape == "page" and node.attr == "items":
                return evolve(owner, shape="list")
            if not owner.many:
                return self._relationship(owner, node)
        if isinstance(owner, InstanceValue) and self.index is not None:
            return self._held(owner, node.attr)
        if owner is None and isinstance(base, ast.Name) and not self.is_local(base.id):
            # `crud.user` of `from app import crud`: a module-level instance there.
            found = self._global(node)
            if isinstance(found, InstanceValue):
                return found
        return None

    def _row_entity(self, rows: ObjectsValue, attr: str) -> Value | None:
        """``row.User``: a Row names an entity by its class, an ``aliased()`` one by the
        name it was given (``aliased(User, name="author")``: ``row.author``; unnamed, it
        has no key)."""
        stmt = rows.stmt
        aliases = stmt.aliases if stmt is not None else ()
        positions = [
            position
            for position, model in enumerate(rows.entities)
            if model is not None
            and (
                self._alias_key(stmt, position)
                if position < len(aliases) and aliases[position] is not None
                else model.rpartition(".")[2]
            )
            == attr
        ]
        if len(positions) != 1:
            return None
        return self._element(rows, positions[0])

    def _alias_key(self, stmt: StatementValue | None, position: int) -> str | None:
        """The ``name=`` an ``aliased()`` entity of ``stmt`` was given, local or at module
        level: its Row key."""
        args = stmt.root.args if stmt is not None else []
        arg = args[position] if position < len(args) else None
        if isinstance(arg, (ast.Name, ast.Attribute)) and not (
            isinstance(arg, ast.Name) and self.is_local(arg.id)
        ):
            qualified = self.qualify(arg) if self.index is not None else None
            return self.index.alias_key(qualified) if self.index and qualified else None
        if not isinstance(arg, ast.Name):
            return None
        binding = self.binding(arg.id, arg)
        if binding is None or binding.kind != "assign" or not isinstance(binding.value, ast.Call):
            return None
        name = next((k.value for k in binding.value.keywords if k.arg == "name"), None)
        return literal_str(name) if name is not None else None

    def _relationship(self, owner: ObjectsValue, node: ast.Attribute) -> Value | None:
        if self.index is None:
            return None
        rel = self.index.relationship(owner.model, node.attr)
        if rel is None or rel.target is None or rel.collection is None:
            return None
        return evolve(
            owner,
            model=rel.target,
            many=rel.collection,
            shape="relationship" if rel.collection else "object",
            path=(*owner.path, (owner.model, node.attr)),
            node=node,
        )

    def _self_attribute(self, attr: str) -> Value | None:
        assert self.class_node is not None
        values: list[Value | None] = []
        # Only the methods that assign the attribute get a flow, not every method.
        for method, expr in self.cache.self_assigns(self.class_node).get(attr, ()):
            flow = (
                self
                if method is self.node
                else self.cache.flow(method, self.resolver, self.index, self.path, self.class_node)
            )
            values.append(flow.value(expr))
        sessions = [v for v in values if isinstance(v, SessionValue)]
        if sessions and len(sessions) == len(values):
            first = sessions[0]
            return evolve(first, how="attr", managed=False)
        factories = [v for v in values if isinstance(v, FactoryValue)]
        if factories and len(factories) == len(values):
            return factories[0]
        instances = [v for v in values if isinstance(v, InstanceValue)]
        if instances and len(instances) == len(values) and len({v.cls for v in instances}) == 1:
            # `self.repo = repo` from a parameter annotated with a project class.
            return instances[0]
        if not values:
            return self._declared_attribute(attr)
        return None

    def _declared_attribute(self, attr: str) -> Value | None:
        """``repo: UserRepository`` in the class body (set by a framework or a dataclass)."""
        assert self.class_node is not None
        for stmt in self.class_node.body:
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and stmt.target.id == attr
            ):
                instance = self._instance_of(stmt.annotation)
                # A mapped object held on a service is not a repository to call into.
                if instance is not None and self.index is not None:
                    return instance if self.index.model(instance.cls) is None else None
        return None

    def _pinned(self, stmt: StatementValue, call: ast.Call) -> frozenset[str]:
        """The entity's columns a filter sets equal to a single value: ``Post.author_id ==
        uid`` (also inside ``and_()``), ``filter_by(author_id=uid)``."""
        found: set[str] = {k.arg for k in call.keywords if k.arg is not None}
        if isinstance(call.func, ast.Attribute) and call.func.attr == "filter_by":
            return frozenset(found)
        pending = list(call.args)
        while pending:
            clause = pending.pop()
            if isinstance(clause, ast.Call) and call_tail(clause.func) == "and_":
                pending.extend(clause.args)
            else:
                for column, other in _equalities(clause):
                    if self._model(column.value) == stmt.model and not (
                        # `Post.author_id == User.id` joins; `== user.id` is one value.
                        isinstance(other, ast.Attribute)
                        and isinstance(other.value, (ast.Name, ast.Attribute))
                        and self._model(other.value) is not None
                    ):
                        found.add(column.attr)
        return frozenset(found)

    def _model(self, node: ast.expr | None) -> str | None:
        """The qualified model a class expression names (any class without an index)."""
        if not isinstance(node, (ast.Name, ast.Attribute)):
            return None
        if self.index is None and self._instance_attribute(node):
            assert isinstance(node, ast.Attribute)
            return SELF_MODEL + node.attr
        if isinstance(node, ast.Name) and self.is_local(node.id):
            qualified = self._imported(node.id) or self._own_class(node.id)
            if qualified is None:
                return self._aliased(node)
        else:
            qualified = self.resolver.qualify(node)
        if qualified is None or qualified.partition(".")[0] in ("sqlalchemy", "sqlmodel"):
            return None
        if self.index is None:
            return qualified
        model = self.index.model(qualified) or self.index.aliased_model(qualified)
        return model.qualname if model is not None else None

    def _aliased(self, node: ast.Name) -> str | None:
        """The model of ``ua`` bound by ``ua = aliased(User)`` or ``aliased(User, subq)``:
        its rows are Users, but a loader option must name the alias (``selectinload(
        ua.posts)``; ``selectinload(User.posts)`` on a query of the alias raises
        ArgumentError)."""
        binding = self.binding(node.id, node)
        if binding is None or binding.kind != "assign" or binding.element is not None:
            return None
        call = binding.value
        if (
            not isinstance(call, ast.Call)
            or not call.args
            or isinstance(call.args[0], ast.Starred)
            or self.sqla_name(call.func) != "aliased"
        ):
            return None
        return self._model(call.args[0])

    def alias_names(self, args: Sequence[ast.expr]) -> tuple[str | None, ...]:
        """For each entity of ``select(...)``/``query(...)``: the alias as written, when it
        is an ``aliased()`` entity, local or module-level (None otherwise)."""
        return tuple(self._alias_name(arg) for arg in args)

    def _alias_name(self, arg: ast.expr) -> str | None:
        if isinstance(arg, ast.Name) and self.is_local(arg.id):
            if self._imported(arg.id) is None and self._aliased(arg) is not None:
                return arg.id
            return None
        if self.index is None or not isinstance(arg, (ast.Name, ast.Attribute)):
            return None
        qualified = self.qualify(arg)
        if qualified is None or self.index.aliased_model(qualified) is None:
            return None
        return ast.unparse(arg)

    def _instance_attribute(self, node: ast.expr) -> bool:
        """``self.model`` in a method: set per instance or per subclass."""
        return (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and self._receiver_class(node.value.id, instance_receiver) is not None
        )

    def _instance_model(self, instance: InstanceValue) -> str | None:
        """The one model a repository instance is for: a model among the arguments of the
        call that made it (`Repository(session, User)`, `CRUDUser(User)`), else among
        the classes its class and bases hand their bases (`UserRepo(Repository[User])`,
        `model = User`, `super().__init__(session, User)`)."""
        assert self.index is not None
        made = instance.made
        found: set[str] = set()
        if made is not None:
            for arg in (*made.args, *(k.value for k in made.keywords)):
                named = self._model(arg)
                if named is not None:
                    found.add(named)
        if not found:
            for facts in self.index.lineage(instance.cls):
                for name in facts.type_args:
                    model = self.index.model(name)
                    if model is not None:
                        found.add(model.qualname)
        return found.pop() if len(found) == 1 else None

    def _held(self, instance: InstanceValue, attr: str) -> InstanceValue | None:
        """``uow.products``: the project object a unit of work (or a service) holds."""
        assert self.index is not None
        for facts in self.index.lineage(instance.cls):
            held = facts.held.get(attr)
            if held is not None:
                found = self.index.class_facts(held)
                if found is None or self.index.model(held) is not None:
                    return None
                return InstanceValue(self.index.follow(held))
        return None

    def _call(self, node: ast.Call) -> Value | None:
        func = node.func
        if isinstance(func, ast.Attribute):
            found = self._method_call(node, func)
            if found is not None:
                return found
        qualified = self.qualify(func)
        if (
            qualified is None
            and isinstance(func, ast.Name)
            and (func.id in _ITER_BUILTINS or func.id == "filter")
        ):
            # A builtin (the resolver names only imports and module-level definitions).
            qualified = None if self.is_local(func.id) else func.id
        if qualified is None:
            # `SessionLocal()`, `self.factory()`, and `sessionmaker(bind=engine)()` in one go.
            if isinstance(func, (ast.Name, ast.Attribute, ast.Call)):
                callee = self.value(func)
                if isinstance(callee, FactoryValue):
                    return SessionValue(
                        callee.is_async,
                        "call",
                        node,
                        callee.source,
                        callee.scoped,
                        expire_on_commit=expire_on_commit(node, callee.expire_on_commit),
                    )
            return None
        tail = self.resolver.sqla_tail(qualified)
        if tail == "select" and node.args:
            return self._select(node)
        if tail in ("update", "delete", "insert") and node.args:
            model = self._model(node.args[0])
            if model is None:
                return None
            return StatementValue(model, tail, node, node, node.args[0], Options(), (model,))
        if (
            tail in ("sessionmaker", "async_sessionmaker")
            and qualified.partition(".")[0] == "sqlalchemy"
            and all(kw.arg not in (None, "class_") for kw in node.keywords)
        ):
            # A factory made in this function (`Session = sessionmaker(bind=engine)`);
            # module-level ones come from the index. A custom `class_=` may commit on exit.
            return FactoryValue(
                tail == "async_sessionmaker", None, expire_on_commit=expire_on_commit(node)
            )
        if tail in ("Session", "AsyncSession") and qualified.partition(".")[0] in (
            "sqlalchemy",
            "sqlmodel",
        ):
            return SessionValue(
                tail == "AsyncSession",
                "call",
                node,
                qualified,
                expire_on_commit=expire_on_commit(node),
            )
        if (qualified in _ITER_BUILTINS and node.args) or (
            qualified == "filter" and len(node.args) == 2
        ):
            # `filter(pred, rows)` yields some of the rows.
            inner = self.value(node.args[-1] if qualified == "filter" else node.args[0])
            if (
                isinstance(inner, ObjectsValue)
                and inner.many
                and inner.shape in ("list", "scalars", "relationship")
            ):
                return evolve(inner, shape="list")
            return None
        if qualified in _IO_CLIENT_CLASSES:
            return ClientValue(
                "HTTP request" if "smtp" not in qualified.lower() else "SMTP call", qualified
            )
        if self.index is None:
            return None
        source = self.index.session_source(qualified)
        if source is not None:
            if source.kind == "provider" and source.style != "return":
                # A context manager or generator: only `with provider() as s` yields it.
                if source.style == "contextmanager":
                    commits, commits_if = source.commits, None
                    flag = self.index.commit_flag(source.qualname)
                    if commits and flag is not None:
                        # `with scope(commit=...)`: the call decides whether the block commits.
                        verdict = flag.commits(node)
                        given = flag.argument(node)
                        commits = verdict is not False
                        if verdict is None:
                            commits_if = "" if given is None else ast.unparse(given)
                    return SessionValue(
                        source.is_async,
                        "call",
                        node,
                        source.qualname,
                        source.scoped,
                        commits,
                        False,
                        source.expire_on_commit,
                        commits_if,
                    )
                return None
            return SessionValue(
                source.is_async,
                "call",
                node,
                source.qualname,
                source.scoped,
                # `SessionLocal(expire_on_commit=False)` overrides the factory's.
                expire_on_commit=expire_on_commit(node, source.expire_on_commit)
                if source.kind == "factory"
                else source.expire_on_commit,
            )
        function = self.index.function(qualified)
        if function is not None:
            if function.factory is not None:
                # `Session = get_sessionmaker()` in a function (module-level ones come
                # from the index).
                return _made(function.factory)
            return self._returned(node, function)
        if self.index.class_facts(qualified) is not None and self.index.model(qualified) is None:
            return InstanceValue(self.index.follow(qualified), node)
        return None

    def _returned(
        self, node: ast.Call, function: FunctionFacts, instance: InstanceValue | None = None
    ) -> Value | None:
        returns = function.returns
        if returns is None or self.index is None:
            return None
        name: str | None = returns.model
        if returns.model.startswith(SELF_MODEL):
            name = self._instance_model(instance) if instance is not None else None
        model = self.index.model(name)
        if model is None:
            return None
        if returns.query:
            if (
                returns.query == "model"
                and model.flavor != "flask"
                and not self.index.has_query_property(model)
            ):
                return None
            # Run here, like a Query built here: `.options()` added to the call is the fix.
            return StatementValue(
                model.qualname,
                "query",
                node,
                node,
                None,
                returns.options,
                (model.qualname,),
                pinned=_pinned_by_call(node, function, returns.pins),
            )
        is_async = returns.is_async and self.awaited(node)
        return ObjectsValue(
            model=model.qualname,
            many=returns.many,
            shape="rows" if returns.entities else "list" if returns.many else "object",
            entities=returns.entities,
            root_model=model.qualname,
            path=(),
            options=returns.options,
            is_async=is_async,
            line=returns.line,
            unique=True,
            origin_path=self.index.path_of(function.qualname),
            origin_name=function.name,
            node=node,
            returns=returns,
            pinned=_pinned_by_call(node, function, returns.pins),
        )

    def _select(self, node: ast.Call) -> StatementValue | None:
        entities = tuple(self._model(arg) for arg in node.args)
        if not entities or entities[0] is None:
            return None
        return StatementValue(
            entities[0],
            "select",
            node,
            node,
            node.args[0],
            Options(),
            entities,
            aliases=self.alias_names(node.args),
        )

    def _method_call(self, node: ast.Call, func: ast.Attribute) -> Value | None:
        method = func.attr
        receiver = self.value(func.value)
        if isinstance(receiver, StatementValue):
            return self._statement_method(receiver, method, node)
        if isinstance(receiver, ObjectsValue):
            return self._result_method(receiver, method, node)
        if isinstance(receiver, FactoryValue):
            if method == "begin":
                return SessionValue(
                    receiver.is_async,
                    "call",
                    node,
                    receiver.source,
                    receiver.scoped,
                    commits=True,
                    expire_on_commit=receiver.expire_on_commit,
                )
            if not receiver.scoped:
                return None
            # A `scoped_session` registry proxies the session's methods
            # (`db_session.query(User)`, `Session.execute(...)`).
            proxied = SessionValue(
                receiver.is_async,
                "scoped",
                func.value,
                receiver.source,
                scoped=True,
                managed=True,
                expire_on_commit=receiver.expire_on_commit,
            )
            return self._session_method(proxied, method, node)
        if isinstance(receiver, InstanceValue) and self.index is not None:
            function = self.index.method(receiver.cls, method)
            if function is None:
                return None
            found = self._returned(node, function, receiver)
            if isinstance(found, ObjectsValue):
                return evolve(found, via=receiver_key(func.value))
            return found
        if isinstance(receiver, ClientValue):
            return None
        if receiver is None and isinstance(func.value, ast.Name):
            own = self.own_method(func.value.id, method)
            if own is not None:
                return self._returned(node, own)
        session = receiver if isinstance(receiver, SessionValue) else None
        if session is None and receiver is not None:
            return None
        return self._session_method(session, method, node)

    def _session_method(
        self, session: SessionValue | None, method: str, node: ast.Call
    ) -> Value | None:
        func = node.func
        receiver = receiver_key(func.value) if isinstance(func, ast.Attribute) else None
        is_async = bool(session.is_async) if session is not None else False
        is_async = is_async or self.awaited(node)
        if method in (
            "scalars",
            "execute",
            "exec",
            "scalar",
            "stream_scalars",
            "stream",
            "paginate",
        ):
            if not node.args:
                return None
            stmt = self.value(node.args[0])
            if not isinstance(stmt, StatementValue) or (
                stmt.kind != "select" and not stmt.returning
            ):
                return None
            shape = {
                "scalars": "scalars",
                "stream_scalars": "scalars",
                "execute": "result",
                "stream": "result",
                "scalar": "object",
                "paginate": "page",
            }.get(method)
            if method == "exec":
                shape = "scalars" if len(stmt.entities) == 1 else "result"
            assert shape is not None
            model = stmt.entities[0] or stmt.model
            return ObjectsValue(
                model=model,
                many=shape != "object",
                shape=shape,
                root_model=model,
                path=(),
                options=stmt.options,
                is_async=is_async,
                line=stmt.root.lineno,
                stmt=stmt,
                session=session,
                node=node,
                entities=stmt.entities,
                unique=False,
                receiver=receiver,
            )
        if method in ("get", "get_one") and node.args:
            got = self._model(node.args[0])
            if got is None:
                return None
            options_node = keyword(node, "options")
            options = Options()
            if isinstance(options_node, (ast.List, ast.Tuple)):
                options = parse_options(self.resolver, list(options_node.elts))
            elif options_node is not None:
                options = Options(opaque=True)
            return ObjectsValue(
                model=got,
                many=False,
                shape="object",
                root_model=got,
                path=(),
                options=options,
                is_async=is_async,
                line=node.lineno,
                session=session,
                node=node,
                unique=True,
                receiver=receiver,
            )
        if method == "query" and node.args:
            entities = tuple(self._model(arg) for arg in node.args)
            if entities[0] is None:
                return None
            model = entities[0]
            return StatementValue(
                model,
                "query",
                node,
                node,
                node.args[0],
                Options(),
                entities,
                session,
                receiver,
                aliases=self.alias_names(node.args),
            )
        return None

    def _statement_method(self, stmt: StatementValue, method: str, node: ast.Call) -> Value | None:
        if method == "options":
            return evolve(
                stmt,
                node=node,
                options=stmt.options.extend(parse_options(self.resolver, list(node.args))),
            )
        if method in ("join", "outerjoin", "join_from", "outerjoin_from"):
            joined: list[str] = []
            for arg in node.args:
                target = (
                    arg.func.value
                    if isinstance(arg, ast.Call)
                    and isinstance(arg.func, ast.Attribute)
                    and arg.func.attr == "of_type"
                    else arg
                )
                if isinstance(target, ast.Attribute):
                    joined.append(target.attr)
                model = (
                    self._model(target) if isinstance(target, (ast.Name, ast.Attribute)) else None
                )
                if model is not None:
                    joined.append(model)
            return evolve(stmt, node=node, joins=stmt.joins + tuple(joined))
        if method in ("where", "filter", "filter_by"):
            return evolve(stmt, node=node, pinned=stmt.pinned | self._pinned(stmt, node))
        if method == "returning" and stmt.kind in ("insert", "update", "delete"):
            # Only the statement's own entity, returned whole, loads ORM objects.
            whole = len(node.args) == 1 and self._model(node.args[0]) == stmt.model
            return evolve(stmt, node=node, returning=whole)
        if method in _STATEMENT_CHAIN:
            return evolve(stmt, node=node)
        if stmt.kind != "query":
            return None
        # The legacy Query runs itself.
        many = method in _QUERY_MANY
        if not many and method not in _QUERY_ONE:
            return None
        if method == "scalar" and len(stmt.entities) != 1:
            return None
        session = stmt.session
        return ObjectsValue(
            model=stmt.model,
            many=many,
            shape="list" if many else "object",
            root_model=stmt.model,
            path=(),
            options=stmt.options,
            is_async=False,
            line=stmt.root.lineno,
            unique=True,
            stmt=stmt,
            session=session,
            node=node,
            entities=stmt.entities,
            receiver=stmt.receiver,
        )

    def _result_method(self, result: ObjectsValue, method: str, node: ast.Call) -> Value | None:
        if method == "unique":
            return evolve(result, unique=True)
        if result.shape == "result":
            if method == "scalars":
                return evolve(result, shape="scalars")
            if method in ("scalar", "scalar_one", "scalar_one_or_none"):
                return evolve(result, many=False, shape="object")
            if method in ("all", "fetchall"):
                return evolve(result, shape="rows")
            if method in ("tuples", "yield_per", "columns"):
                return result
            return None
        if result.shape == "scalars":
            if method in ("all", "fetchall"):
                return evolve(result, shape="list")
            if method == "partitions":
                return evolve(result, shape="partitions")
            if method in ("first", "one", "one_or_none"):
                return evolve(result, many=False, shape="object")
            if method == "yield_per":
                return result
            return None
        if result.shape == "list" and method == "copy":
            return result
        return None

    # Questions rules ask -------------------------------------------------------------
    def session_of(self, node: ast.expr) -> SessionValue | None:
        found = self.value(node)
        return found if isinstance(found, SessionValue) else None

    def sessions(self) -> list[tuple[str, Binding, SessionValue]]:
        """Local names bound to sessions here: (name, binding, session)."""
        if self._sessions is not None:
            return self._sessions
        found: list[tuple[str, Binding, SessionValue]] = []
        for name, bindings in self.bindings.items():
            for binding in bindings:
                value = self.binding_value(binding)
                if isinstance(value, SessionValue):
                    found.append((name, binding, value))
        self._sessions = found
        return found

    def calls_on(self, key: str) -> list[ast.Call]:
        """Method calls on a receiver name (or ``self.attr``), in source order."""
        return self.receiver_calls.get(key, [])


def loads_through_given_session(returns: ReturnFacts) -> bool:
    """Whether a function's objects come from a session it does not make or close: one
    it is given (a parameter annotated `Session`, or not annotated)."""
    if returns.session_closed or returns.query is not None:
        return False
    factory = returns.factory
    return factory is None or factory.rpartition(".")[2] in SESSION_TYPE_NAMES


def receiver_key(node: ast.expr) -> str | None:
    """``s``, ``self.session``, ``db.session`` as a receiver key (a dotted name of up to
    three parts); None for anything else."""
    if node.__class__ is ast.Name:
        return node.id
    parts: list[str] = []
    while isinstance(node, ast.Attribute) and len(parts) < 3:
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name) or len(parts) > 2:
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


class FlowCache:
    """The flows of one parsed file, by scope node, shared by every rule.

    Kept beside the tree, not on its nodes: a flow points at its nodes, so a flow stored
    on one would make the tree a reference cycle that only the garbage collector frees.
    ``clear()`` once the file is done breaks the cycle between the cache and its flows.
    """

    def __init__(self, scans: dict[int, Scan] | None = None, record_scans: bool = False) -> None:
        # A flow holds its node, so a node's id stays unique while its entry lives.
        self._flows: dict[int, FunctionFlow] = {}
        # worth_analysing() by function node: every session rule asks about every function.
        # The file's tree, alive until clear(), keeps those ids unique.
        self.worth: dict[int, bool] = {}
        # Scans by body node, taken by the next flow built for that node: the first pass
        # records them (record_scans) and hands them to the second with the tree, whose
        # nodes keep the ids unique. Plain data, so no cycle keeps the tree alive.
        self.scans: dict[int, Scan] = scans if scans is not None else {}
        self.record_scans = record_scans
        self._self_assigns: dict[int, dict[str, list[tuple[Method, ast.expr]]]] = {}

    def known(self, node: Scope, index: ProjectIndex | None) -> FunctionFlow | None:
        known = self._flows.get(id(node))
        return known if known is not None and known.index is index else None

    def flow(
        self,
        node: Scope,
        resolver: NameResolver,
        index: ProjectIndex | None,
        path: str,
        class_node: ast.ClassDef | None = None,
        outer: FunctionFlow | None = None,
    ) -> FunctionFlow:
        """The flow of ``node`` for ``index``, built the first time it is asked for."""
        known = self.known(node, index)
        if known is None:
            known = FunctionFlow(node, resolver, index, path, class_node, outer, self)
            self._flows[id(node)] = known
        return known

    def self_assigns(self, class_node: ast.ClassDef) -> dict[str, list[tuple[Method, ast.expr]]]:
        """What the class's methods assign to ``self.<attr>``, by attribute."""
        known = self._self_assigns.get(id(class_node))
        if known is None:
            known = self._self_assigns[id(class_node)] = _self_assigns(class_node)
        return known

    def clear(self) -> None:
        self._flows.clear()
        self.worth.clear()
        self.scans = {}
        self._self_assigns.clear()


def _self_assigns(class_node: ast.ClassDef) -> dict[str, list[tuple[Method, ast.expr]]]:
    """``self.<attr> = value`` (or ``self.<attr>: T = value``) in the class's own methods,
    nested functions and classes left out, each method's in the order of its source.

    Only statements are visited: an assignment is nowhere else.
    """
    found: dict[str, list[tuple[Method, ast.expr]]] = {}
    for method in class_node.body:
        if not isinstance(method, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        stack: list[ast.AST] = list(reversed(method.body))
        while stack:
            stmt = stack.pop()
            kind = type(stmt)
            if kind is ast.Assign or kind is ast.AnnAssign:
                assert isinstance(stmt, (ast.Assign, ast.AnnAssign))
                if stmt.value is None:
                    continue
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                for target in targets:
                    if (
                        isinstance(target, ast.Attribute)
                        and isinstance(target.value, ast.Name)
                        and target.value.id == "self"
                    ):
                        found.setdefault(target.attr, []).append((method, stmt.value))
                continue
            if isinstance(stmt, _SCOPES):
                continue
            # The blocks it holds (bodies, handlers, match cases), last first.
            for field_name in reversed_fields_of(kind):
                held = getattr(stmt, field_name, None)
                if held.__class__ is list and held and isinstance(held[0], _BLOCK_ITEMS):
                    stack.extend(held[::-1])
    return found


def worth_analysing(ctx: FileContext, node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether a function calls anything a session pitfall is made of (from the index's
    summary of it); rules skip the others without building their flow."""
    known = ctx.flows.worth.get(id(node))
    if known is None:
        known = ctx.flows.worth[id(node)] = _worth_analysing(ctx, node)
    return known


def _worth_analysing(ctx: FileContext, node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    parent = ctx.parent(node)
    module = ctx.facts.module
    prefix = f"{module}." if module else ""
    if isinstance(parent, ast.Module):
        return ctx.index.worth_analysing(prefix + node.name)
    if isinstance(parent, ast.ClassDef) and isinstance(ctx.parent(parent), ast.Module):
        return ctx.index.worth_analysing(f"{prefix}{parent.name}.{node.name}")
    return True


# Top-level statements that make a module a script, with code of its own to analyse.
_SCRIPT_STATEMENTS = (ast.With, ast.AsyncWith, ast.For, ast.AsyncFor, ast.While)


def runs_code(module: ast.Module) -> bool:
    """Whether a module's top level does work (with blocks, loops; also inside an ``if
    __name__ == "__main__":`` or a ``try``) that the session rules check as they check a
    function's body. A module of definitions, constants and guarded imports (``if
    TYPE_CHECKING:``, ``try: import ... except ImportError:``) does none."""
    return any(_runs_code(statement) for statement in module.body)


def _runs_code(statement: ast.stmt) -> bool:
    if isinstance(statement, _SCRIPT_STATEMENTS):
        return True
    if isinstance(statement, ast.If):
        return any(_runs_code(s) for s in (*statement.body, *statement.orelse))
    if isinstance(statement, ast.Try):
        handlers = [s for handler in statement.handlers for s in handler.body]
        inner = (*statement.body, *handlers, *statement.orelse, *statement.finalbody)
        return any(_runs_code(s) for s in inner)
    return False


def flow_for(ctx: FileContext, node: ast.AST) -> FunctionFlow:
    """The flow of the scope (function, lambda or module) that holds ``node``."""
    scope = (
        node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module))
        else ctx.enclosing_scope(node)
    )
    return _flow_of_scope(ctx, scope)  # type: ignore[arg-type]


def _flow_of_scope(ctx: FileContext, scope: Scope) -> FunctionFlow:
    cached = ctx.flows.known(scope, ctx.index)
    if cached is not None:
        return cached
    parent = ctx.parent(scope)
    class_node = parent if isinstance(parent, ast.ClassDef) else None
    outer: FunctionFlow | None = None
    if not isinstance(scope, ast.Module) and class_node is None:
        enclosing = ctx.enclosing_scope(scope)
        if enclosing is not scope and not isinstance(enclosing, ast.Module):
            outer = _flow_of_scope(ctx, enclosing)  # type: ignore[arg-type]
    return ctx.flows.flow(scope, ctx.names, ctx.index, ctx.path, class_node, outer)


# Summaries for the index -------------------------------------------------------------
def summarise(
    resolver: NameResolver,
    node: ast.FunctionDef | ast.AsyncFunctionDef,
    facts: FunctionFacts,
    queries: bool,
    hands_out: bool = True,
    flows: FlowCache | None = None,
    class_node: ast.ClassDef | None = None,
) -> tuple[ReturnFacts | None, ProviderFacts | None]:
    """What a function returns (ORM objects) and whether it hands out a session, from its
    own body and, for a method, what its class's methods assign to ``self`` (the index
    resolves the names later)."""
    # Not kept in `flows`: a summary sees no index, and neither do the flows it asks for.
    flow = FunctionFlow(node, resolver, None, "", class_node=class_node, cache=flows)
    provider = _provider(flow, node, facts) if hands_out else None
    if provider is not None and queries:
        # `return Model.query.filter(...)` looks like a session handed out of an unknown
        # call until the flow reads it as a legacy Query, which no session is.
        returns = _returns(flow, node)
        if returns is not None and returns.query is not None:
            return returns, None
        if returns is not None and returns.model.startswith(DELEGATED):
            # `return helper(s)`: a session or objects, as the index will tell.
            return returns, provider
        return None, provider
    returns = _returns(flow, node) if queries else None
    return returns, provider


def _provider(
    flow: FunctionFlow, node: ast.FunctionDef | ast.AsyncFunctionDef, facts: FunctionFacts
) -> ProviderFacts | None:
    decorators = {
        (flow.resolver.qualify(d.func if isinstance(d, ast.Call) else d) or "").rpartition(".")[2]
        for d in node.decorator_list
    }
    handed: list[tuple[ast.expr, str]] = []
    if flow.yields:
        style = (
            "contextmanager"
            if decorators & {"contextmanager", "asynccontextmanager"}
            else "generator"
        )
        handed = [
            (y.value, style)
            for y in flow.yields
            if isinstance(y, ast.Yield) and y.value is not None
        ]
    else:
        handed = [(r.value, "return") for r in flow.returns if r.value is not None]
    for value, style in handed:
        made = _made_by(flow, value)
        if made is None:
            continue
        source, managed, commits, name = made
        flag: CommitFlag | None = None
        if name is not None:
            commit_calls = [
                c
                for c in flow.calls_on(name)
                if isinstance(c.func, ast.Attribute) and c.func.attr == "commit"
            ]
            begun = _begun_around(flow, value, name)
            if not commits and not begun:
                flag = _commit_flag(node, commit_calls)
            commits = commits or bool(commit_calls) or begun
            managed = managed or _closed_in_finally(flow, name)
        if style == "return" and name is not None and managed:
            # A session closed before the function returns it is no provider.
            continue
        is_async: bool | None = None
        if source.rpartition(".")[2] == "AsyncSession":
            is_async = True
        return ProviderFacts(
            facts.qualname, node.lineno, is_async, style, source, managed, commits, flag
        )
    return None


def _commit_flag(
    node: ast.FunctionDef | ast.AsyncFunctionDef, commits: list[ast.Call]
) -> CommitFlag | None:
    """The parameter every one of the provider's ``commit()`` calls waits on (``if
    commit: session.commit()``): a ``with`` block commits only when its call says so."""
    if not commits:
        return None
    flags: set[str] = set()
    for call in commits:
        tests = [
            inner.test.id
            for inner in ast.walk(node)
            if isinstance(inner, ast.If)
            and isinstance(inner.test, ast.Name)
            and any(contains(stmt, call) for stmt in inner.body)
        ]
        if not tests:
            return None
        flags.update(tests)
    if len(flags) != 1:
        return None
    flag = flags.pop()
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    # A method's caller passes no `self`/`cls`.
    bound = 1 if positional and positional[0].arg in ("self", "cls") else 0
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += args.defaults
    for number, param in enumerate(positional):
        if param.arg == flag:
            position = number - bound if number >= bound else None
            return CommitFlag(flag, position, _truth(defaults[number]))
    for param, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if param.arg == flag:
            return CommitFlag(flag, None, _truth(default))
    return None


def _truth(default: ast.expr | None) -> bool | None:
    return bool(default.value) if isinstance(default, ast.Constant) else None


def _begun_around(flow: FunctionFlow, node: ast.AST, name: str) -> bool:
    """``with session.begin(): yield session``: the block commits what the request wrote
    when it ends without an error."""
    return any(
        begins(item.context_expr, name)
        for block in flow.withs
        if contains(block, node)
        for item in block.items
    )


def begins(entered: ast.expr, name: str) -> bool:
    """Whether a ``with`` item is ``name.begin()``: its block commits the transaction of
    the session (or connection) ``name`` when it ends without an error."""
    return (
        isinstance(entered, ast.Call)
        and isinstance(entered.func, ast.Attribute)
        and entered.func.attr == "begin"
        and isinstance(entered.func.value, ast.Name)
        and entered.func.value.id == name
    )


def _made_by(flow: FunctionFlow, value: ast.expr) -> tuple[str, bool, bool, str | None] | None:
    """(callee, managed by a with, commits, local name) for a handed-out session."""
    call: ast.expr | None = value
    name: str | None = None
    managed = False
    if isinstance(value, ast.Name):
        binding = flow.binding(value.id, value)
        if binding is None or binding.kind not in ("assign", "with") or binding.element is not None:
            return None
        name = value.id
        call = binding.value
        managed = binding.kind == "with"
    if isinstance(call, ast.Await):
        call = call.value
    if not isinstance(call, ast.Call):
        return None
    func = call.func
    commits = False
    if isinstance(func, ast.Attribute) and func.attr == "begin" and not call.args:
        func = func.value
        commits = True
    if isinstance(func, ast.Call):
        func = func.func
    source = flow.resolver.qualify(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
    if source is None:
        return None
    return source, managed, commits, name


def _closed_in_finally(flow: FunctionFlow, name: str) -> bool:
    for try_node in flow.tries:
        for stmt in getattr(try_node, "finalbody", []):
            for call in flow.calls_on(name):
                if (
                    contains(stmt, call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr in ("close", "remove")
                ):
                    return True
    return handed_over_in_finally(flow, name)


def handed_over_in_finally(flow: FunctionFlow, name: str) -> bool:
    """Whether a ``finally`` hands the name to a call (``finally: _safe_close(session)``):
    a cleanup helper, which closes it on every path out."""
    finals = [stmt for try_node in flow.tries for stmt in getattr(try_node, "finalbody", [])]
    if not finals:
        return False
    for load in flow.name_loads.get(name, ()):
        parent = flow.parent(load)
        if isinstance(parent, ast.keyword):
            parent = flow.parent(parent)
        if (
            isinstance(parent, ast.Call)
            and load is not parent.func
            and any(contains(stmt, parent) for stmt in finals)
        ):
            return True
    return False


def _returns(
    flow: FunctionFlow, node: ast.FunctionDef | ast.AsyncFunctionDef
) -> ReturnFacts | None:
    found: ReturnFacts | None = None
    # What project functions return, resolved by the index (the one way out only).
    delegations: set[ReturnFacts] = set()
    for ret in flow.returns:
        value = flow.value(ret.value)
        if isinstance(value, StatementValue):
            facts = _returned_query(flow, node, value)
            if facts is None or (found is not None and found != facts):
                return None
            found = facts
            continue
        if value is None and isinstance(ret.value, ast.Call):
            delegated = _delegated(flow, ret.value)
            if delegated is not None:
                callee, key = delegated
                closed, committed, factory, closer = _session_end(
                    flow, key, ret.value, ret, None
                )
                delegations.add(
                    ReturnFacts(
                        model=DELEGATED + callee,
                        many=False,
                        is_async=False,
                        line=ret.lineno,
                        session_closed=closed,
                        committed=committed,
                        factory=factory,
                        closer=closer,
                    )
                )
            continue
        if (
            not isinstance(value, ObjectsValue)
            or value.path
            or value.shape not in ("list", "object", "scalars", "rows")
        ):
            continue
        closed, committed, factory, closer = _session_end(
            flow,
            value.receiver,
            value.node or ret,
            ret,
            value.session.source if value.session is not None else None,
        )
        facts = ReturnFacts(
            model=value.model,
            many=value.many,
            is_async=value.is_async,
            line=value.line,
            options=value.options,
            session_closed=closed,
            committed=committed,
            factory=factory,
            closer=closer,
            pins=_parameter_pins(flow, node, value.model),
            entities=value.entities if value.shape == "rows" else (),
        )
        if found is not None and (
            found.model != facts.model
            or found.many != facts.many
            or found.entities != facts.entities
        ):
            return None
        found = found or facts
    if found is None and len(delegations) == 1:
        return delegations.pop()
    return found


def _session_end(
    flow: FunctionFlow, key: str | None, load: ast.AST, ret: ast.Return, factory: str | None
) -> tuple[bool, bool, str | None, str | None]:
    """Whether the session named ``key`` that loaded the returned objects at ``load`` is
    closed, or committed, by the time ``ret`` returns them, its factory, and the context
    manager whose ``with`` alone was taken to close it (the index asks whether it does)."""
    session_closed = False
    committed = False
    closers: set[str | None] = set()
    if key is not None:
        for with_node in flow.withs:
            for item in with_node.items:
                if (
                    isinstance(item.optional_vars, ast.Name)
                    and item.optional_vars.id == key
                    and _closed_by_with(with_node, load, ret)
                ):
                    session_closed = True
                    made = _made_by(flow, item.optional_vars)
                    factory = factory or (made[0] if made is not None else None)
                    closers.add(made[0] if made is not None else None)
        if _closed_in_finally(flow, key):
            session_closed = True
            closers.add(None)
            made = _made_by(flow, ast.Name(id=key, lineno=ret.lineno, col_offset=ret.col_offset))
            factory = factory or (made[0] if made is not None else None)
        committed = any(
            isinstance(c.func, ast.Attribute)
            and c.func.attr == "commit"
            and _pos(load) < _pos(c) < _pos(ret)
            for c in flow.calls_on(key)
        )
    closer = closers.pop() if len(closers) == 1 else None
    return session_closed, committed, factory, closer


def _delegated(flow: FunctionFlow, call: ast.Call) -> tuple[str, str] | None:
    """``return by_number(s, n)`` / ``return InvoiceRepository(s).by_number(n)``: the
    project function called and the name of the session handed to it, where the
    function's summary cannot know yet what that function returns."""
    func = call.func
    qualified: str | None = None
    handed = list(call.args)
    if isinstance(func, (ast.Name, ast.Attribute)):
        qualified = flow.qualify(func)
    if (
        qualified is None
        and isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Call)
        and isinstance(func.value.func, (ast.Name, ast.Attribute))
    ):
        owner = flow.qualify(func.value.func)
        qualified = f"{owner}.{func.attr}" if owner is not None else None
        handed = [*func.value.args, *handed]
    if qualified is None or qualified.partition(".")[0] in SQLA_ROOTS:
        return None
    # A summary sees no index, so `with SessionLocal() as s` is a session by its `with`.
    bound = {
        item.optional_vars.id
        for with_node in flow.withs
        for item in with_node.items
        if isinstance(item.optional_vars, ast.Name)
    }
    for arg in handed:
        if isinstance(arg, ast.Name) and (
            arg.id in bound or isinstance(flow.value(arg), SessionValue)
        ):
            return qualified, arg.id
    return None


def _closed_by_with(with_node: ast.With | ast.AsyncWith, load: ast.AST, ret: ast.AST) -> bool:
    """Whether the session of ``with ... as session:`` is closed when ``ret`` returns what
    ``load`` loaded: returned from inside the block, or loaded inside it and returned
    after it (``user = session.get(User, 1)`` in the block, ``return user`` below)."""
    if contains(with_node, ret):
        return True
    return contains(with_node, load) and _pos(ret) > _end(with_node)


def _returned_query(
    flow: FunctionFlow, node: ast.FunctionDef | ast.AsyncFunctionDef, value: StatementValue
) -> ReturnFacts | None:
    """A legacy ``Query`` of one model handed back unrun (``return cls.query.filter(...)``):
    the caller iterates it or adds to it, as it would to its own."""
    if value.kind != "query" or value.entities != (value.model,) or value.joins:
        return None
    line = getattr(value.root, "lineno", 0)
    query = "model" if value.model_query else "session"
    pins = _parameter_pins(flow, node, value.model)
    return ReturnFacts(value.model, True, False, line, value.options, query=query, pins=pins)


def _pinned_by_call(
    call: ast.Call, function: FunctionFacts, pins: tuple[tuple[str, str], ...]
) -> frozenset[str]:
    """The columns a call pins by passing a value for the parameter compared to them."""
    pinned: set[str] = set()
    bound = function.is_method and not any(
        d.rpartition(".")[2] == "staticmethod" for d in function.decorators
    )
    for column, param in pins:
        argument: ast.expr | None = next(
            (k.value for k in call.keywords if k.arg == param), None
        )
        position = function.param_position(param)
        if bound and position is not None:
            position -= 1  # `self`/`cls` is not written at the call
        if argument is None and position is not None and 0 <= position < len(call.args):
            argument = call.args[position]
        passed = argument is not None and not isinstance(argument, ast.Starred)
        if passed and not (isinstance(argument, ast.Constant) and argument.value is None):
            pinned.add(column)
    return frozenset(pinned)


def _parameter_pins(
    flow: FunctionFlow, node: ast.FunctionDef | ast.AsyncFunctionDef, model: str
) -> tuple[tuple[str, str], ...]:
    """(column, parameter) for each ``Model.column == parameter`` in the body: filters
    gathered in a list (``filters.append(Artifact.build_id == build_id)``) included."""
    params = set(params_of(node))
    found: set[tuple[str, str]] = set()
    for compare in ast.walk(node):
        for column, other in _equalities(compare):
            if (
                isinstance(other, ast.Name)
                and other.id in params
                and flow._model(column.value) == model
            ):
                found.add((column.attr, other.id))
    return tuple(sorted(found))


def _equalities(node: ast.AST) -> Iterator[tuple[ast.Attribute, ast.expr]]:
    """``(X.column, other)`` for ``X.column == other`` (either way round)."""
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return
    if not isinstance(node.ops[0], ast.Eq):
        return
    for column, other in ((node.left, node.comparators[0]), (node.comparators[0], node.left)):
        if isinstance(column, ast.Attribute) and isinstance(
            column.value, (ast.Name, ast.Attribute)
        ):
            yield column, other


def _binds(node: ast.With | ast.AsyncWith, name: str | None) -> bool:
    return name is not None and any(
        isinstance(item.optional_vars, ast.Name) and item.optional_vars.id == name
        for item in node.items
    )


def literal_text(node: ast.expr | None) -> str | None:
    return literal_str(node)
