"""Resolve names to qualified names through imports and aliases, without importing anything.

``import sqlalchemy as sa`` makes ``sa.text`` resolve to ``sqlalchemy.text``;
``from sqlalchemy import text as sql_text`` makes ``sql_text`` resolve to the same, while a
``text`` defined locally or imported from an HTML helper resolves elsewhere. Names bound
in other modules of the project resolve through the project index (re-exports included).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field

# Libraries whose public names are SQLAlchemy's own (re-exports or proxies).
SQLA_ROOTS = ("sqlalchemy", "sqlmodel")
# `db = SQLAlchemy()` exposes sqlalchemy and sqlalchemy.orm names as attributes; we record
# such an instance with this marker so that `db.Column` resolves to `sqlalchemy.Column`.
FLASK_SQLALCHEMY_INSTANCE = "sqlalchemy"
FLASK_SQLALCHEMY_CLASSES = ("flask_sqlalchemy.SQLAlchemy", "flask_sqlalchemy.extension.SQLAlchemy")


def module_name_for(path_parts: tuple[str, ...]) -> str:
    """``("app", "models", "__init__.py")`` → ``app.models``."""
    parts = list(path_parts)
    if parts and parts[-1].endswith(".py"):
        parts[-1] = parts[-1][:-3]
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module a ``from .x import y`` in ``module`` refers to."""
    if level == 0:
        return target or ""
    base = module.split(".") if module else []
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)] if level - 1 <= len(base) else []
    if target:
        base.append(target)
    return ".".join(base)


@dataclass
class ModuleNames:
    """The names a module binds by import, and the top-level names it defines."""

    module: str
    is_package: bool = False
    imports: dict[str, str] = field(default_factory=dict)
    # Names bound at module level to something the resolver can name (a call's target,
    # another name): ``engine = create_engine(...)`` → ``engine: call:sqlalchemy.create_engine``;
    # unpacked from a call's result: ``engine, Session = make()`` → ``Session: item:1:app.make``.
    assigned: dict[str, str] = field(default_factory=dict)
    defined: set[str] = field(default_factory=set)
    # The qualified bases of its top-level classes: `class AppDB(SQLAlchemy)` is one too.
    bases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def collect(cls, tree: ast.Module, module: str, is_package: bool) -> ModuleNames:
        names = cls(module=module, is_package=is_package)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names.add_import(node)
        names.collect_definitions(tree)
        return names

    def add_import(self, node: ast.Import | ast.ImportFrom) -> None:
        """Record the names an import binds (the project index feeds these from its walk)."""
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.imports[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    self.imports.setdefault(top, top)
            return
        source = resolve_relative(self.module, self.is_package, node.level, node.module)
        for alias in node.names:
            if alias.name == "*":
                continue
            local = alias.asname or alias.name
            self.imports[local] = f"{source}.{alias.name}" if source else alias.name

    def collect_definitions(self, tree: ast.Module) -> None:
        for stmt in tree.body:
            self._collect_definition(stmt)

    def _collect_definition(self, stmt: ast.stmt) -> None:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.defined.add(stmt.name)
            if isinstance(stmt, ast.ClassDef) and stmt.bases:
                resolver = NameResolver(self)
                qualified = (resolver.qualify(b) for b in stmt.bases)
                self.bases[stmt.name] = tuple(q for q in qualified if q is not None)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    self.defined.add(target.id)
                    if stmt.value is not None:
                        origin = self._origin(stmt.value)
                        if origin:
                            self.assigned[target.id] = origin
                elif isinstance(target, ast.Tuple) and stmt.value is not None:
                    self._collect_unpacked(target, stmt.value)
        elif isinstance(stmt, (ast.If, ast.Try)):
            # Conditional imports and `try: ... except ImportError:` definitions.
            for child in ast.iter_child_nodes(stmt):
                if isinstance(child, ast.stmt):
                    self._collect_definition(child)
                elif isinstance(child, ast.ExceptHandler):
                    for inner in child.body:
                        self._collect_definition(inner)

    def _collect_unpacked(self, target: ast.Tuple, value: ast.expr) -> None:
        """``engine, SessionLocal = make_db()``: each name is defined here, and one
        unpacked from a call is remembered by its position (``item:1:app.db.make_db``)."""
        call = None
        if isinstance(value, ast.Call) and not any(
            isinstance(e, ast.Starred) for e in target.elts
        ):
            call = NameResolver(self).qualify(value.func)
        for number, element in enumerate(target.elts):
            if isinstance(element, ast.Name):
                self.defined.add(element.id)
                if call:
                    self.assigned[element.id] = f"item:{number}:{call}"

    def _origin(self, value: ast.expr) -> str | None:
        resolver = NameResolver(self)
        if isinstance(value, ast.Call):
            target = resolver.qualify(value.func)
            if target == "functools.partial" and value.args:
                # `Column = partial(db.Column, nullable=False)` makes what `db.Column` makes.
                value = value.args[0]
            else:
                return f"call:{target}" if target else None
        if isinstance(value, ast.Subscript):
            # `SessionDep = Annotated[AsyncSession, Depends(get_session)]`: a type alias
            # that FastAPI parameters use; remember what it annotates.
            head = resolver.qualify(value.value)
            if head is not None and head.rpartition(".")[2] == "Annotated":
                inner = value.slice.elts[0] if isinstance(value.slice, ast.Tuple) else value.slice
                target = resolver.qualify(inner)
                return f"annotated:{target}" if target else None
            return None
        target = resolver.qualify(value)
        return f"name:{target}" if target else None


class NameResolver:
    """Qualified names for expressions of one module, with the project's help if given."""

    def __init__(
        self,
        names: ModuleNames,
        project: Mapping[str, ModuleNames] | None = None,
    ) -> None:
        self.names = names
        self.project = project or {}
        self._cache: dict[str, str | None] = {}
        # Every rule asks about every call's callee: answer each node once. The node is
        # kept with its answer so that a recycled id() can't be mistaken for it.
        self._sqla_names: dict[int, tuple[ast.expr, str | None]] = {}

    def qualify(self, node: ast.expr) -> str | None:
        """``sa.orm.relationship`` → ``sqlalchemy.orm.relationship``; unknown → None."""
        if node.__class__ is ast.Name:
            # The commonest question, answered without building a dotted name.
            return self.qualify_name(node.id)
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        base = self.qualify_name(node.id)
        if base is None:
            return None
        return ".".join([base, *reversed(parts)])

    def qualify_name(self, name: str) -> str | None:
        """What a name of this module's namespace (imported or defined) names."""
        imported = self.names.imports.get(name)
        if imported is not None:
            return self.follow(imported)
        if name in self.names.defined:
            return self.follow(f"{self.names.module}.{name}" if self.names.module else name)
        return None

    def follow(self, qualified: str, depth: int = 0) -> str:
        """Follow re-exports and aliases through the project's modules to the origin."""
        if depth > 16 or not self.project:
            return qualified
        cached = self._cache.get(qualified)
        if cached is not None:
            return cached
        result = qualified
        module, _, attr = qualified.rpartition(".")
        owner = self.project.get(module)
        if owner is not None and attr:
            imported = owner.imports.get(attr)
            if imported is not None and imported != qualified:
                result = self.follow(imported, depth + 1)
            else:
                origin = owner.assigned.get(attr)
                if origin is not None and origin.startswith("name:"):
                    result = self.follow(origin[5:], depth + 1)
        else:
            # `pkg.module.attr.more` where `pkg.module` is in the project: resolve the head.
            head, _, tail = module.rpartition(".")
            if head and head in self.project and tail:
                followed = self.follow(f"{head}.{tail}", depth + 1)
                if followed != f"{head}.{tail}":
                    result = f"{followed}.{attr}"
        self._cache[qualified] = result
        return result

    def origin_of(self, qualified: str) -> str | None:
        """What a module-level name was assigned from: ``call:sqlalchemy.create_engine``."""
        module, _, attr = qualified.rpartition(".")
        owner = self.project.get(module)
        if owner is None and module == self.names.module:
            owner = self.names
        return owner.assigned.get(attr) if owner is not None else None

    def sqla_name(self, node: ast.expr) -> str | None:
        """The SQLAlchemy public name an expression refers to, if it is SQLAlchemy's.

        ``sa.text``, ``sql_text`` (imported ``as``), ``sqlmodel.text`` and Flask-SQLAlchemy's
        ``db.text`` all give ``"text"``; an HTML helper's ``text`` gives None.
        """
        known = self._sqla_names.get(id(node))
        if known is not None and known[0] is node:
            return known[1]
        qualified = self.qualify(node)
        name = None if qualified is None else self.sqla_tail(qualified)
        self._sqla_names[id(node)] = (node, name)
        return name

    def sqla_tail(self, qualified: str) -> str | None:
        root, _, rest = qualified.partition(".")
        if root in SQLA_ROOTS and rest:
            return rest.rpartition(".")[2]
        # `db.Column` where `db = SQLAlchemy()`.
        owner, _, attr = qualified.rpartition(".")
        if owner and self.is_flask_sqlalchemy(owner):
            return attr
        return None

    def is_flask_sqlalchemy(self, qualified: str) -> bool:
        """Whether a module-level name is a Flask-SQLAlchemy ``SQLAlchemy()`` (or an
        instance of the project's subclass of it)."""
        origin = self.origin_of(qualified)
        return origin is not None and origin.startswith("call:") and self._flask_class(origin[5:])

    def _flask_class(self, qualified: str, depth: int = 0) -> bool:
        if qualified in FLASK_SQLALCHEMY_CLASSES:
            return True
        module, _, name = qualified.rpartition(".")
        owner = self.project.get(module)
        if owner is None and module == self.names.module:
            owner = self.names
        if owner is None or depth > 5:
            return False
        return any(self._flask_class(base, depth + 1) for base in owner.bases.get(name, ()))


class DeferringResolver(NameResolver):
    """A resolver for the index's per-file pass, which cannot see other modules.

    ``db.Column`` where ``db = SQLAlchemy()`` lives in another module cannot be checked
    yet: the name is accepted and remembered in ``deferred`` (``app.ext.db.Column``, or
    ``app.ext.db`` for ``db.Model``), so that the project index confirms (or drops) the
    fact once every module is known.
    """

    def __init__(self, names: ModuleNames) -> None:
        super().__init__(names)
        self.deferred: str | None = None

    def _elsewhere(self, owner: str) -> bool:
        module = owner.rpartition(".")[0]
        return (
            bool(module)
            and module != self.names.module
            and owner.partition(".")[0] not in SQLA_ROOTS
        )

    def sqla_tail(self, qualified: str) -> str | None:
        before = self.deferred
        tail = super().sqla_tail(qualified)
        if tail is not None:
            if self.deferred is not before:
                # `db.Column` whose `db` was deferred: the whole name, to follow later.
                self.deferred = qualified
            return tail
        owner, _, attr = qualified.rpartition(".")
        # `db.Column` with `db` from another module, or a `Column` imported from one
        # (`Column = partial(db.Column, ...)` there): the project index follows it.
        if owner and (self._elsewhere(owner) or self._elsewhere(qualified)):
            self.deferred = qualified
            return attr
        return None

    def is_flask_sqlalchemy(self, qualified: str) -> bool:
        if super().is_flask_sqlalchemy(qualified):
            return True
        if self._elsewhere(qualified):
            self.deferred = qualified
            return True
        return False


def is_sqla_call(resolver: NameResolver, node: ast.AST, *names: str) -> bool:
    """Whether ``node`` is a call of one of SQLAlchemy's ``names`` (through any alias)."""
    return isinstance(node, ast.Call) and resolver.sqla_name(node.func) in names
