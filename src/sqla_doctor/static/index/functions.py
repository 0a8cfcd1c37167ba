"""What a function does with its parameters and what it returns, for callers elsewhere.

A caller that passes query results to ``render(users)`` needs to know that ``render``
reads ``user.posts`` on every element; a caller of ``list_users(session)`` needs to know
that it returns ``User`` objects loaded without loader options. These summaries are
gathered during the index's single walk (reads) and by the flow analysis of the few
functions that return query results (returns, session providers).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from sqla_doctor.static.index.models import call_tail
from sqla_doctor.static.index.names import NameResolver
from sqla_doctor.static.index.sessions import FactoryFacts, ProviderFacts
from sqla_doctor.static.loaders import Options

# (parameter position, whether elements of the parameter were iterated, attribute path).
# A path element ending in "()" is a method call: ("posts", "to_dict()").
Read = tuple[int, bool, tuple[str, ...]]
MAX_PATH = 4
# The model of a generic repository's method (`select(self.model)`), named in its summary
# as this prefix and the attribute; a caller resolves it from the instance it calls.
SELF_MODEL = "<self>."
# The model of what a function returns straight from another project function (`return
# by_number(s, n)` in a `with` block): this prefix and that function, which the index
# resolves once every summary is known.
DELEGATED = "<returned-by>."


@dataclass(frozen=True)
class ReturnFacts:
    """ORM objects a function returns: which model, how many, loaded how."""

    model: str
    many: bool
    is_async: bool
    line: int
    options: Options = field(default_factory=Options)
    session_closed: bool = False  # the loading session is closed when the function returns
    committed: bool = False  # committed after loading (expire_on_commit expires them)
    factory: str | None = None  # the factory that made that session
    # The project context manager whose `with ... as session:` block was taken to close
    # that session (`sa_session_transaction`); the index clears session_closed when that
    # context manager keeps the session open.
    closer: str | None = None
    # A legacy Query not run yet, which the caller runs (and may add to): "session" for
    # `session.query(Model)`, "model" for Flask-SQLAlchemy's `Model.query`; None: objects.
    query: str | None = None
    # (column, parameter): the function compares the model's column to that parameter
    # (`Artifact.build_id == build_id`), so a caller passing it pins the column.
    pins: tuple[tuple[str, str], ...] = ()
    # Rows, not objects (`session.execute(select(User, func.count())).all()`): the model
    # of each entity of a row, by position (None for a column); () for objects.
    entities: tuple[str | None, ...] = ()


@dataclass
class FunctionFacts:
    """One top-level function or method of a top-level class."""

    qualname: str
    name: str
    line: int
    is_async: bool
    params: tuple[str, ...]
    is_method: bool = False
    decorators: tuple[str, ...] = ()
    reads: frozenset[Read] = frozenset()
    returns: ReturnFacts | None = None
    provider: ProviderFacts | None = None
    # The session factory it builds and returns (`def get_sessionmaker(): return
    # sessionmaker(...)`), for the module-level names bound to its call.
    factory: FactoryFacts | None = None
    # The factories in the tuple it returns, by position (`return engine,
    # sessionmaker(engine)` for `engine, SessionLocal = make_db()`); empty: none.
    tuple_factories: tuple[FactoryFacts | None, ...] = ()
    io_call: str | None = None  # first external I/O it makes itself (qualified)
    quotes: bool = False  # returns its argument quoted as an SQL identifier (quotes_identifier)
    commits: bool = False  # calls `.commit()` or `.rollback()` on something itself
    # Names it calls (`get_user`, `scalars`, `SessionLocal`): rules skip functions that
    # call nothing a database pitfall is made of.
    calls: frozenset[str] = frozenset()
    # (path, flag): a read of the first parameter made only under `if flag:`, where
    # `flag` is another parameter: a call that passes it a falsy literal
    # (`include_members=False`), or leaves off one whose default is falsy
    # (`is_admin=False`, see falsy_defaults), never makes the read.
    optional_reads: frozenset[tuple[tuple[str, ...], str]] = frozenset()
    falsy_defaults: frozenset[str] = frozenset()
    # Method-call paths (`("equipment_type", "serialize()")`) whose calls pass no argument.
    bare_calls: frozenset[tuple[str, ...]] = frozenset()
    # Parameters it closes in a `finally` (`finally: session.close()`): a session handed to
    # it is closed whatever the body raises.
    closes: frozenset[str] = frozenset()
    # A @contextmanager that never ends the session it yields: where that session comes
    # from, "call:<callee>" or "name:<module-level name>" (see kept_yield_sources).
    yields_from: tuple[str, ...] = ()

    def element_reads(self, position: int) -> set[tuple[str, ...]]:
        """Attribute paths read on each element of the argument at ``position``."""
        return {path for pos, iterated, path in self.reads if pos == position and iterated}

    def direct_reads(self, position: int) -> set[tuple[str, ...]]:
        """Attribute paths read on the argument at ``position`` itself."""
        return {path for pos, iterated, path in self.reads if pos == position and not iterated}

    def param_position(self, name: str) -> int | None:
        try:
            return self.params.index(name)
        except ValueError:
            return None


class FunctionBuilder:
    """Collects a function's parameter reads while the index walks its body."""

    __slots__ = (
        "bare",
        "called",
        "clients",
        "facts",
        "flags",
        "node",
        "owner",
        "read_nodes",
        "reads",
        "tracked",
        "with_names",
    )

    def __init__(
        self,
        facts: FunctionFacts,
        node: ast.FunctionDef | ast.AsyncFunctionDef,
        owner: ast.ClassDef | None = None,
    ) -> None:
        self.facts = facts
        self.node = node
        # The class of a method: its other methods say what `self.session` is.
        self.owner = owner
        self.tracked: dict[str, tuple[int, bool, tuple[str, ...]]] = {
            name: (position, False, ()) for position, name in enumerate(facts.params)
        }
        self.reads: set[Read] = set()
        # "query": calls a query-ish method; "return": returns a value; "yield": a generator.
        self.flags: set[str] = set()
        # Local names bound to HTTP/SMTP clients (`async with httpx.AsyncClient() as c`).
        self.clients: dict[str, str] = {}
        self.called: set[str] = set()
        # Where each read of the first parameter is made, and the bare method calls.
        self.read_nodes: dict[tuple[str, ...], list[ast.AST]] = {}
        self.bare: set[tuple[str, ...]] = set()
        # Names bound by `with ... as name` (a session a helper may be handed).
        self.with_names: set[str] = set()

    def _root(self, node: ast.expr) -> tuple[int, bool, tuple[str, ...]] | None:
        attrs: list[str] = []
        while isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        root = self.tracked.get(node.id)
        if root is None:
            return None
        position, iterated, path = root
        full = path + tuple(reversed(attrs))
        if len(full) > MAX_PATH:
            return None
        return position, iterated, full

    def loop(self, target: ast.expr, iterable: ast.expr) -> None:
        if not isinstance(target, ast.Name):
            return
        root = self._root(iterable)
        if root is None:
            self.tracked.pop(target.id, None)
            return
        position, iterated, path = root
        self.tracked[target.id] = (position, True if not path else iterated, path)

    def attribute(self, node: ast.Attribute) -> None:
        root = self._root(node)
        if root is not None and root[2]:
            self.reads.add(root)
            if root[0] == 0 and not root[1]:
                self.read_nodes.setdefault(root[2], []).append(node)

    def method_call(self, func: ast.Attribute, call: ast.Call | None = None) -> None:
        root = self._root(func)
        if root is not None and root[2]:
            position, iterated, path = root
            read = (*path[:-1], path[-1] + "()")
            self.reads.add((position, iterated, read))
            if position == 0 and not iterated:
                self.read_nodes.setdefault(read, []).append(func)
                if call is not None and not call.args and not call.keywords:
                    self.bare.add(read)

    def finish(self) -> FunctionFacts:
        # `self` reads of a method are what its class's serializers walk; keep them.
        self.facts.reads = frozenset(self.reads)
        self.facts.calls = frozenset(self.called)
        self.facts.bare_calls = frozenset(self.bare)
        self.facts.falsy_defaults = frozenset(_falsy_defaults(self.node))
        self.facts.optional_reads = self._optional_reads()
        self.facts.closes = _closed_in_finally(self.node, self.facts.params)
        return self.facts

    def _optional_reads(self) -> frozenset[tuple[tuple[str, ...], str]]:
        """Reads of the first parameter made only inside ``if flag:`` bodies, ``flag``
        another parameter."""
        flags = set(self.facts.params[1:])
        if not flags or not self.read_nodes:
            return frozenset()
        guarded: dict[int, str] = {}
        for inner in ast.walk(self.node):
            if not isinstance(inner, ast.If):
                continue
            tests = (
                inner.test.values
                if (isinstance(inner.test, ast.BoolOp) and isinstance(inner.test.op, ast.And))
                else [inner.test]
            )
            flag = next((t.id for t in tests if isinstance(t, ast.Name) and t.id in flags), None)
            if flag is None:
                continue
            for stmt in inner.body:
                for node in ast.walk(stmt):
                    guarded.setdefault(id(node), flag)
        found: set[tuple[tuple[str, ...], str]] = set()
        for path, nodes in self.read_nodes.items():
            names = {guarded.get(id(n)) for n in nodes}
            if len(names) == 1 and (flag := names.pop()) is not None:
                found.add((path, flag))
        return frozenset(found)


# Session (and registry) methods that close a session or detach its objects.
_DETACHING = frozenset(
    {
        "close",
        "aclose",
        "remove",
        "close_all",
        "close_all_sessions",
        "expunge",
        "expunge_all",
        "reset",
        "invalidate",
    }
)


def kept_yield_sources(
    resolver: NameResolver, node: ast.FunctionDef | ast.AsyncFunctionDef
) -> tuple[str, ...]:
    """Where the session a context manager yields comes from, when nothing in it ends
    that session: ``session = singleton_session or Session()`` then ``yield session``
    gives ("name:app.db.singleton_session", "call:app.db.Session"). Empty when it may
    close it: a ``with`` around the yield, a ``finally`` that calls anything, a call of
    ``close()``/``remove()``/``expunge_all()``... anywhere, or a nested function."""
    yielded: list[ast.Yield] = []
    assigned: dict[str, list[ast.expr]] = {}
    arguments = node.args
    params = {
        a.arg
        for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]
        + [a for a in (arguments.vararg, arguments.kwarg) if a is not None]
    }
    for inner in ast.walk(node):
        if inner is not node and isinstance(
            inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
        ):
            return ()
        if isinstance(inner, (ast.With, ast.AsyncWith)) and any(
            isinstance(y, ast.Yield) for y in ast.walk(inner)
        ):
            return ()
        if isinstance(inner, ast.Try) and any(
            isinstance(c, ast.Call) for stmt in inner.finalbody for c in ast.walk(stmt)
        ):
            return ()
        if isinstance(inner, ast.Call) and call_tail(inner.func) in _DETACHING:
            return ()
        if isinstance(inner, ast.YieldFrom):
            return ()
        if isinstance(inner, ast.Yield):
            yielded.append(inner)
        elif isinstance(inner, ast.Assign) and len(inner.targets) == 1:
            target = inner.targets[0]
            if isinstance(target, ast.Name):
                assigned.setdefault(target.id, []).append(inner.value)
    if len(yielded) != 1 or yielded[0].value is None:
        return ()
    value: ast.expr = yielded[0].value
    if isinstance(value, ast.Name) and value.id in assigned:
        values = assigned[value.id]
        if len(values) != 1:
            return ()
        value = values[0]
    if isinstance(value, ast.Await):
        value = value.value
    operands = (
        value.values if isinstance(value, ast.BoolOp) and isinstance(value.op, ast.Or) else [value]
    )
    sources: list[str] = []
    for operand in operands:
        called = isinstance(operand, ast.Call)
        target = operand.func if isinstance(operand, ast.Call) else operand
        if not isinstance(target, (ast.Name, ast.Attribute)):
            return ()
        if isinstance(target, ast.Name) and (target.id in assigned or target.id in params):
            return ()  # a local, not the module-level name
        qualified = resolver.qualify(target)
        if qualified is None:
            return ()
        sources.append(("call:" if called else "name:") + qualified)
    return tuple(sources)


def _closed_in_finally(
    node: ast.FunctionDef | ast.AsyncFunctionDef, params: tuple[str, ...]
) -> frozenset[str]:
    """The parameters whose ``close()`` a ``finally`` block of the function calls."""
    closed: set[str] = set()
    for inner in ast.walk(node):
        if not isinstance(inner, ast.Try) or not inner.finalbody:
            continue
        for stmt in inner.finalbody:
            for call in ast.walk(stmt):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "close"
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id in params
                ):
                    closed.add(call.func.value.id)
    return frozenset(closed)


def _falsy_defaults(node: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """Parameters whose default is a falsy literal (``False``, ``None``, ``0``, ``""``)."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    with_defaults = positional[len(positional) - len(args.defaults) :]
    pairs = list(zip(with_defaults, args.defaults, strict=True))
    pairs += [
        (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is not None
    ]
    return {
        arg.arg for arg, default in pairs if isinstance(default, ast.Constant) and not default.value
    }


# Quote characters of SQL identifiers ("name", [name], `name`). Doubling one inside the
# identifier is the SQL escape, so `"[" + name.replace("]", "]]") + "]"` is quoted.
# Not the single quote: MySQL's backslash escapes undo `.replace("'", "''")`.
_IDENTIFIER_QUOTES = frozenset({'"', "]", "`"})


def escapes_identifier_quotes(call: ast.Call) -> bool:
    """``x.replace('"', '""')``: an identifier escaped for quoting, whatever ``x`` is."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr != "replace" or len(call.args) != 2:
        return False
    old, new = call.args
    return (
        isinstance(old, ast.Constant)
        and old.value in _IDENTIFIER_QUOTES
        and isinstance(new, ast.Constant)
        and new.value == old.value * 2
    )


def quotes_identifier(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A helper whose every ``return`` builds its text from literals and identifiers
    escaped for quoting (``'"' + s.replace('"', '""') + '"'``), directly or through local
    names assigned so, maybe in branches of an ``if`` (backticks for MySQL, double quotes
    otherwise): SQL-safe whatever it is given."""
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    assigned: dict[str, list[ast.expr]] = {}
    returns: list[ast.expr] = []
    if not _gather_returns(body, assigned, returns) or not returns:
        return False
    escaped: list[bool] = []
    return all(_quoted_text(value, assigned, escaped, 0) for value in returns) and any(escaped)


# Module-level, not nested: a recursive closure is a reference cycle, and these hold nodes
# of the tree that reference counting must be able to free.
def _gather_returns(
    statements: list[ast.stmt], assigned: dict[str, list[ast.expr]], returns: list[ast.expr]
) -> bool:
    """Collect the returned values and the local names' assigned values; False for any
    statement but a return, a plain assignment or an `if`."""
    for statement in statements:
        if isinstance(statement, ast.Return) and statement.value is not None:
            returns.append(statement.value)
        elif (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            assigned.setdefault(statement.targets[0].id, []).append(statement.value)
        elif isinstance(statement, ast.If):
            if not (
                _gather_returns(statement.body, assigned, returns)
                and _gather_returns(statement.orelse, assigned, returns)
            ):
                return False
        else:
            return False
    return True


def _quoted_text(
    expr: ast.expr, assigned: dict[str, list[ast.expr]], escaped: list[bool], depth: int
) -> bool:
    """Text made of literals and escaped identifiers; ``escaped`` records an escape."""
    if isinstance(expr, ast.Constant):
        return isinstance(expr.value, str)
    if isinstance(expr, ast.Name):
        values = assigned.get(expr.id)
        return (
            depth < 4
            and bool(values)
            and all(_quoted_text(v, assigned, escaped, depth + 1) for v in values or ())
        )
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _quoted_text(expr.left, assigned, escaped, depth) and _quoted_text(
            expr.right, assigned, escaped, depth
        )
    if isinstance(expr, ast.JoinedStr):
        return all(
            _quoted_text(
                part.value if isinstance(part, ast.FormattedValue) else part,
                assigned,
                escaped,
                depth,
            )
            for part in expr.values
        )
    if isinstance(expr, ast.Call) and escapes_identifier_quotes(expr):
        escaped.append(True)
        return True
    if (
        isinstance(expr, ast.Call)
        and isinstance(expr.func, ast.Attribute)
        and expr.func.attr == "replace"
        and all(isinstance(a, ast.Constant) for a in expr.args)
    ):
        return _quoted_text(expr.func.value, assigned, escaped, depth)  # more replacing
    return False


def _decorated(node: ast.FunctionDef | ast.AsyncFunctionDef, *names: str) -> bool:
    """Whether one of ``names`` decorates ``node`` (``classmethod``, ``builtins.classmethod``)."""
    return any(call_tail(d) in names for d in node.decorator_list)


def classmethod_receiver(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name a ``@classmethod`` gives its class (``cls``); None for other functions."""
    if not _decorated(node, "classmethod"):
        return None
    params = [*node.args.posonlyargs, *node.args.args]
    return params[0].arg if params else None


def instance_receiver(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name a plain method gives its instance (``self``); None for static and class
    methods."""
    if _decorated(node, "classmethod", "staticmethod"):
        return None
    params = [*node.args.posonlyargs, *node.args.args]
    return params[0].arg if params else None


def params_of(node: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    args = node.args
    return tuple(a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs))
