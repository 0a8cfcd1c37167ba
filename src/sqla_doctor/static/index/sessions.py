"""Session factories, engines and the functions that hand out sessions, per file.

``SessionLocal = sessionmaker(engine, expire_on_commit=False)`` and
``engine = create_async_engine("postgresql+asyncpg://...")`` are recorded with their
literal options; a ``get_db()`` generator that yields a session is recorded as a provider
so that ``Depends(get_db)`` in another module is known to be a session.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field

from sqla_doctor.static.index.models import keyword, literal_bool, literal_str
from sqla_doctor.static.index.names import NameResolver

FACTORY_CALLS = frozenset(
    {"sessionmaker", "async_sessionmaker", "scoped_session", "async_scoped_session"}
)
ENGINE_CALLS = frozenset(
    {"create_engine", "create_async_engine", "engine_from_config", "async_engine_from_config"}
)
SESSION_CLASSES = frozenset({"Session", "AsyncSession"})
ASYNC_SESSION_CLASSES = frozenset({"AsyncSession"})


@dataclass
class FactoryFacts:
    """A module-level session factory."""

    qualname: str
    line: int
    kind: str  # sessionmaker / async_sessionmaker / scoped_session / async_scoped_session
    is_async: bool
    scoped: bool
    # Literal keyword options as source text (`expire_on_commit`: "False"), "?" otherwise.
    options: dict[str, str] = field(default_factory=dict)
    bind: str | None = None  # qualified name of the engine, when a name
    expire_on_commit: bool | None = True  # as `expire_on_commit()` decides; None: unknown
    wraps: str | None = None  # `scoped_session(SessionLocal)`: the factory it calls
    # `sessionmaker(class_=ContextSession)`: the project's Session subclass, qualified.
    session_class: str | None = None


@dataclass
class EngineFacts:
    """A module-level engine."""

    qualname: str
    line: int
    col: int
    end_line: int
    end_col: int
    is_async: bool
    url: str | None = None
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CommitFlag:
    """The parameter a provider's only commit depends on: ``def session_scope(commit=False)``
    whose body runs ``if commit: session.commit()`` after its ``yield``."""

    name: str
    position: int | None  # among the positional parameters a caller passes; None: keyword-only
    default: bool | None  # the literal default's truth; None: no default, or not a literal

    def argument(self, call: ast.Call) -> ast.expr | None:
        """The expression ``call`` passes for the flag, if it passes one."""
        for kw in call.keywords:
            if kw.arg == self.name:
                return kw.value
        if self.position is not None and self.position < len(call.args):
            return call.args[self.position]
        return None

    def commits(self, call: ast.Call) -> bool | None:
        """Whether the ``with`` block ``call`` opens commits: the literal it passes, else
        the default; None when that cannot be known (a variable, ``*args``, ``**kwargs``)."""
        given = self.argument(call)
        if given is not None:
            return bool(given.value) if isinstance(given, ast.Constant) else None
        if any(kw.arg is None for kw in call.keywords) or any(
            isinstance(a, ast.Starred) for a in call.args
        ):
            return None
        return self.default


@dataclass
class ProviderFacts:
    """A function that hands out a session: a generator dependency, a context manager, or
    a plain function returning one."""

    qualname: str
    line: int
    is_async: bool | None  # None: whatever the factory makes
    style: str  # "generator" / "contextmanager" / "return"
    source: str | None = None  # the factory or class called, qualified
    managed: bool = False  # closed by `with` or a `finally`
    commits: bool = False  # commits before handing control back (a unit of work)
    commit_flag: CommitFlag | None = None  # when it commits only if a parameter says so


def expire_on_commit(call: ast.Call, default: bool | None = True) -> bool | None:
    """What a ``Session(...)``, ``sessionmaker(...)`` or ``SessionLocal(...)`` call says
    about ``expire_on_commit``: the literal it passes; ``default`` when it passes none
    (SQLAlchemy's ``True``, or what the factory called says); None, unknown, when the
    value is not a literal (``settings.EXPIRE``) or ``**options`` may carry it. The one
    place that decides it: rules that need objects expired act only on True."""
    value = keyword(call, "expire_on_commit")
    if value is not None:
        # Named explicitly, it is the value: `**options` repeating it is a TypeError.
        return literal_bool(value)
    if any(kw.arg is None for kw in call.keywords):
        return None
    return default


def _options(call: ast.Call) -> dict[str, str]:
    options: dict[str, str] = {}
    for kw in call.keywords:
        if kw.arg is None:
            options["**"] = "?"
            continue
        value = kw.value
        if isinstance(value, ast.Constant):
            options[kw.arg] = repr(value.value)
        elif isinstance(value, (ast.Name, ast.Attribute)):
            options[kw.arg] = ast.unparse(value)
        else:
            options[kw.arg] = "?"
    return options


def factory_facts(resolver: NameResolver, qualname: str, call: ast.Call) -> FactoryFacts | None:
    name = resolver.sqla_name(call.func)
    if name not in FACTORY_CALLS:
        return None
    inner = call
    scoped = name in ("scoped_session", "async_scoped_session")
    wraps: str | None = None
    if scoped and call.args and isinstance(call.args[0], ast.Call):
        inner = call.args[0]
    elif scoped:
        factory = call.args[0] if call.args else keyword(call, "session_factory")
        if isinstance(factory, (ast.Name, ast.Attribute)):
            wraps = resolver.qualify(factory)
    inner_name = resolver.sqla_name(inner.func) if inner is not call else name
    class_ = keyword(inner, "class_")
    class_name = resolver.sqla_name(class_) if class_ is not None else None
    is_async = (
        name == "async_scoped_session"
        or inner_name == "async_sessionmaker"
        or class_name in ASYNC_SESSION_CLASSES
    )
    bind_node = keyword(inner, "bind")
    if bind_node is None and inner.args and inner_name in ("sessionmaker", "async_sessionmaker"):
        bind_node = inner.args[0]
    bind = resolver.qualify(bind_node) if isinstance(bind_node, (ast.Name, ast.Attribute)) else None
    return FactoryFacts(
        qualname=qualname,
        line=call.lineno,
        kind=name,
        is_async=is_async,
        scoped=scoped,
        options=_options(inner),
        bind=bind,
        # A registry of a factory made elsewhere: that factory's (the index follows it).
        expire_on_commit=expire_on_commit(inner) if inner is not call or not scoped else None,
        wraps=wraps,
        session_class=resolver.qualify(class_)
        if isinstance(class_, (ast.Name, ast.Attribute))
        else None,
    )


def engine_facts(resolver: NameResolver, qualname: str, call: ast.Call) -> EngineFacts | None:
    name = resolver.sqla_name(call.func)
    if name not in ENGINE_CALLS:
        return None
    url = literal_str(call.args[0]) if call.args else literal_str(keyword(call, "url"))
    return EngineFacts(
        qualname=qualname,
        line=call.lineno,
        col=call.col_offset,
        end_line=call.end_lineno or call.lineno,
        end_col=call.end_col_offset or call.col_offset,
        is_async=name.startswith("async_") or name == "create_async_engine",
        url=url,
        options=_options(call),
    )


def returned_factories(
    resolver: NameResolver, qualname: str, function: ast.FunctionDef | ast.AsyncFunctionDef
) -> tuple[FactoryFacts | None, tuple[FactoryFacts | None, ...]]:
    """The factory a function builds and returns, and the factories in a tuple it returns.

    The first is recorded under ``qualname`` (the module-level name bound to its call:
    ``Session = get_sessionmaker()``): ``return sessionmaker(bind=engine)``, or ``factory =
    async_sessionmaker(engine)`` then ``return factory``. The second holds them by position
    (``return engine, sessionmaker(engine)`` gives ``(None, <sessionmaker>)`` for ``engine,
    SessionLocal = make_db()``), empty unless the tuple holds one. Both need one ``return``
    in the function, and a name it returns assigned once; anything else (several returns,
    a factory chosen among others) is not a fact.
    """
    own = list(_own_nodes(function))
    value = _returned(own)
    if not isinstance(value, ast.Tuple):
        return _built_factory(resolver, qualname, function, own, value), ()
    found = tuple(
        _built_factory(resolver, f"{qualname}.{number}", function, own, element)
        for number, element in enumerate(value.elts)
    )
    return None, found if any(f is not None for f in found) else ()


def _returned(own: list[ast.AST]) -> ast.expr | None:
    """The one ``return``'s value, through a name the function assigns once."""
    returns = [n for n in own if isinstance(n, ast.Return)]
    if len(returns) != 1 or returns[0].value is None:
        return None
    return _assigned_once(own, returns[0].value)


def _assigned_once(own: list[ast.AST], value: ast.expr | None) -> ast.expr | None:
    if not isinstance(value, ast.Name):
        return value
    name = value.id
    assigned = [
        n.value
        for n in own
        if isinstance(n, (ast.Assign, ast.AnnAssign))
        and any(
            isinstance(t, ast.Name) and t.id == name
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
        )
    ]
    return assigned[0] if len(assigned) == 1 else None


def _built_factory(
    resolver: NameResolver,
    qualname: str,
    function: ast.FunctionDef | ast.AsyncFunctionDef,
    own: list[ast.AST],
    value: ast.expr | None,
) -> FactoryFacts | None:
    value = _assigned_once(own, value)
    if not isinstance(value, ast.Call):
        return None
    facts = factory_facts(resolver, qualname, value)
    if facts is not None and facts.bind is not None:
        # A local engine (`engine = create_engine(url)` in the function) is not the
        # module-level name the resolver would read it as.
        head = facts.bind.rpartition(".")[2]
        if head in _local_names(function, own):
            facts.bind = None
    return facts


def _own_nodes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    """The function's nodes, not those of functions, lambdas or classes inside it."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        found.append(node)
        for child in ast.iter_child_nodes(node):
            if not isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
            ):
                stack.append(child)
    return found


def _local_names(
    function: ast.FunctionDef | ast.AsyncFunctionDef, own: list[ast.AST]
) -> set[str]:
    args = function.args
    names = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
    names.update(n.id for n in own if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return names
