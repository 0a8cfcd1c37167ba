"""Whether an expression denotes a SQLAlchemy session, session factory, engine or connection.

:class:`SqlaObjects` decides by constructor, factory product (across modules through the
project index), ``with`` target, annotation (``Annotated[Session, Depends(...)]``
included), FastAPI ``Depends(get_db)``, Flask-SQLAlchemy's ``db.session`` and
``self.session`` attributes assigned in the class, following names through
:class:`~sqla_doctor.static.dataflow.DataFlow`.
"""

from __future__ import annotations

import ast
import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqla_doctor.static.dataflow import (
    MAX_DEPTH,
    Binding,
    BindingKind,
    DataFlow,
    last_name,
    string_annotation,
    walk_scope,
)
from sqla_doctor.static.index.extract import is_constant_name
from sqla_doctor.static.index.functions import classmethod_receiver
from sqla_doctor.static.syntax import call_keyword

if TYPE_CHECKING:
    from sqla_doctor.static.context import FileContext


# SQLAlchemy objects -------------------------------------------------------------------
class ObjectKind(enum.Enum):
    """The SQLAlchemy object an expression denotes."""

    SESSION = "Session"
    ASYNC_SESSION = "AsyncSession"
    SCOPED_SESSION = "scoped_session"
    ASYNC_SCOPED_SESSION = "async_scoped_session"
    SESSION_FACTORY = "sessionmaker"
    ASYNC_SESSION_FACTORY = "async_sessionmaker"
    ENGINE = "Engine"
    ASYNC_ENGINE = "AsyncEngine"
    CONNECTION = "Connection"
    ASYNC_CONNECTION = "AsyncConnection"

    @property
    def is_session(self) -> bool:
        return self in _SESSIONS

    @property
    def is_async(self) -> bool:
        return self in _ASYNC

    @property
    def is_engine(self) -> bool:
        return self in (ObjectKind.ENGINE, ObjectKind.ASYNC_ENGINE)

    @property
    def is_connection(self) -> bool:
        return self in (ObjectKind.CONNECTION, ObjectKind.ASYNC_CONNECTION)


_SESSIONS = frozenset(
    {
        ObjectKind.SESSION, ObjectKind.ASYNC_SESSION, ObjectKind.SCOPED_SESSION,
        ObjectKind.ASYNC_SCOPED_SESSION,
    }
)
_ASYNC = frozenset(
    {
        ObjectKind.ASYNC_SESSION, ObjectKind.ASYNC_SCOPED_SESSION,
        ObjectKind.ASYNC_SESSION_FACTORY, ObjectKind.ASYNC_ENGINE, ObjectKind.ASYNC_CONNECTION,
    }
)
# What calling SQLAlchemy's public names gives.
_CONSTRUCTED = {
    "Session": ObjectKind.SESSION,
    "AsyncSession": ObjectKind.ASYNC_SESSION,
    "sessionmaker": ObjectKind.SESSION_FACTORY,
    "async_sessionmaker": ObjectKind.ASYNC_SESSION_FACTORY,
    "scoped_session": ObjectKind.SCOPED_SESSION,
    "async_scoped_session": ObjectKind.ASYNC_SCOPED_SESSION,
    "create_engine": ObjectKind.ENGINE,
    "engine_from_config": ObjectKind.ENGINE,
    "create_async_engine": ObjectKind.ASYNC_ENGINE,
    "async_engine_from_config": ObjectKind.ASYNC_ENGINE,
    "object_session": ObjectKind.SESSION,
}
# What a SQLAlchemy class named in an annotation is.
_ANNOTATED = {
    "Session": ObjectKind.SESSION,
    "AsyncSession": ObjectKind.ASYNC_SESSION,
    "scoped_session": ObjectKind.SCOPED_SESSION,
    "async_scoped_session": ObjectKind.ASYNC_SCOPED_SESSION,
    "sessionmaker": ObjectKind.SESSION_FACTORY,
    "async_sessionmaker": ObjectKind.ASYNC_SESSION_FACTORY,
    "Engine": ObjectKind.ENGINE,
    "AsyncEngine": ObjectKind.ASYNC_ENGINE,
    "Connection": ObjectKind.CONNECTION,
    "AsyncConnection": ObjectKind.ASYNC_CONNECTION,
}
# Calling a factory (or a scoped_session registry) gives a session.
_PRODUCT = {
    ObjectKind.SESSION_FACTORY: ObjectKind.SESSION,
    ObjectKind.ASYNC_SESSION_FACTORY: ObjectKind.ASYNC_SESSION,
    ObjectKind.SCOPED_SESSION: ObjectKind.SESSION,
    ObjectKind.ASYNC_SCOPED_SESSION: ObjectKind.ASYNC_SESSION,
}
_WRAPPERS = frozenset({"Optional", "Annotated", "Union", "Final", "ClassVar"})
_YIELDING = frozenset(
    {"Generator", "Iterator", "Iterable", "AsyncGenerator", "AsyncIterator", "AsyncIterable"}
)
SQLA_MODULES = ("sqlalchemy", "sqlmodel", "flask_sqlalchemy")


class SqlaObjects:
    """Whether an expression is a SQLAlchemy session, factory, engine or connection.

    Only evidence counts: a constructor or factory call, a ``with`` over one, an
    annotation, a ``Depends()`` on a function of this file that yields one, Flask-
    SQLAlchemy's ``db.session``/``db.engine``, a module-level name assigned from one
    (in any module of the project). Names alone (``session``, ``db``) are never enough
    here; rules that want to use them decide so themselves.
    """

    def __init__(self, ctx: FileContext, flow: DataFlow) -> None:
        self.ctx = ctx
        self.flow = flow
        self.names = ctx.names
        self._cache: dict[int, ObjectKind | None] = {}
        self._active: set[int] = set()
        self._flask: bool | None = None
        self._project_sqla: bool | None = None
        self._class_members: dict[int, dict[str, list[tuple[str, ast.expr]]]] = {}

    def kind_of(self, expr: ast.expr) -> ObjectKind | None:
        cached = self._cache.get(id(expr), _MISSING)
        if cached is not _MISSING:
            return cached  # type: ignore[return-value]
        if id(expr) in self._active or len(self._active) > MAX_DEPTH:
            return None
        self._active.add(id(expr))
        try:
            result = self._kind_of(expr)
        finally:
            self._active.discard(id(expr))
        self._cache[id(expr)] = result
        return result

    def is_session(self, expr: ast.expr) -> bool:
        kind = self.kind_of(expr)
        return kind is not None and kind.is_session

    def _kind_of(self, expr: ast.expr) -> ObjectKind | None:
        if isinstance(expr, ast.Await):
            return self.kind_of(expr.value)
        if isinstance(expr, ast.Call):
            return self._call_kind(expr)
        if isinstance(expr, ast.Name):
            bindings = self.flow.bindings(expr)
            if not bindings:
                return self._qualified_kind(self.names.qualify(expr))
            return _agree(self._binding_kind(b, expr) for b in bindings)
        if isinstance(expr, ast.Attribute):
            return self._attribute_kind(expr)
        if isinstance(expr, ast.NamedExpr):
            return self.kind_of(expr.value)
        return None

    def _call_kind(self, call: ast.Call) -> ObjectKind | None:
        func = call.func
        name = self.names.sqla_name(func)
        if name in _CONSTRUCTED:
            kind = _CONSTRUCTED[name]
            if kind is ObjectKind.SESSION_FACTORY and self._async_class(call):
                return ObjectKind.ASYNC_SESSION_FACTORY
            return kind
        if isinstance(func, ast.Attribute):
            base = self.kind_of(func.value)
            if func.attr == "connect" and base is not None and base.is_engine:
                return ObjectKind.ASYNC_CONNECTION if base.is_async else ObjectKind.CONNECTION
            if func.attr == "connection" and base is not None and base.is_session:
                return ObjectKind.ASYNC_CONNECTION if base.is_async else ObjectKind.CONNECTION
            if func.attr == "get_bind" and self.names.qualify(func) == "alembic.op.get_bind":
                return ObjectKind.CONNECTION
        callee = self.kind_of(func)
        if callee is not None and callee in _PRODUCT:
            return _PRODUCT[callee]
        if isinstance(func, ast.Name):
            function = self.flow.function_named(func)
            if function is not None and function.returns is not None:
                return self.annotation_kind(function.returns)
        return None

    def _async_class(self, call: ast.Call) -> bool:
        keyword = call_keyword(call, "class_")
        if keyword is None:
            return False
        kind = self.annotation_kind(keyword.value)
        return kind is ObjectKind.ASYNC_SESSION

    def _attribute_kind(self, expr: ast.Attribute) -> ObjectKind | None:
        owner = self.names.qualify(expr.value)
        if owner is not None and self.names.is_flask_sqlalchemy(owner):
            if expr.attr == "session":
                return ObjectKind.SCOPED_SESSION
            if expr.attr == "engine":
                return ObjectKind.ENGINE
            return None
        if isinstance(expr.value, ast.Name):
            member = self._member_kind(expr)
            if member is not None:
                return member
        return self._qualified_kind(self.names.qualify(expr))

    def _qualified_kind(self, qualified: str | None, depth: int = 0) -> ObjectKind | None:
        """A module-level name of some module of the project, by what it was assigned."""
        if qualified is None or depth > 8:
            return None
        owner = qualified.rpartition(".")[0]
        if owner and self.names.is_flask_sqlalchemy(owner):
            attr = qualified.rpartition(".")[2]
            return {"session": ObjectKind.SCOPED_SESSION, "engine": ObjectKind.ENGINE}.get(attr)
        origin = self.names.origin_of(qualified)
        if origin is None:
            return None
        kind, _, target = origin.partition(":")
        if kind == "call":
            tail = self.names.sqla_tail(target)
            if tail in _CONSTRUCTED:
                return _CONSTRUCTED[tail]
            product = self._qualified_kind(target, depth + 1)
            return _PRODUCT.get(product) if product is not None else None
        if kind == "name":
            return self._qualified_kind(target, depth + 1)
        if kind == "annotated":
            return _ANNOTATED.get(self.names.sqla_tail(target) or "")
        return None

    def _binding_kind(self, binding: Binding, use: ast.Name) -> ObjectKind | None:
        kind = binding.kind
        if kind in (BindingKind.ASSIGN, BindingKind.ANNOTATION):
            if binding.value is not None and not binding.path:
                found = self.kind_of(binding.value)
                if found is not None:
                    return found
            if binding.annotation is not None:
                return self.annotation_kind(binding.annotation)
            return None
        if kind is BindingKind.WITH and binding.value is not None and not binding.path:
            return self.entered(binding.value)
        if kind is BindingKind.PARAMETER:
            if binding.annotation is not None:
                found = self.annotation_kind(binding.annotation)
                if found is not None:
                    return found
            if binding.default is not None:
                return self._dependency_kind(binding.default)
            return self._run_sync_parameter(binding)
        if kind is BindingKind.IMPORT:
            return self._qualified_kind(self.names.qualify(use))
        return None

    def _run_sync_parameter(self, binding: Binding) -> ObjectKind | None:
        """``await session.run_sync(lambda s: ...)``: ``s`` is the sync Session (or
        Connection) behind the AsyncSession (or AsyncConnection)."""
        arguments = self.ctx.parent(binding.node)
        function = self.ctx.parent(arguments) if arguments is not None else None
        call = self.ctx.parent(function) if function is not None else None
        if not (
            isinstance(function, ast.Lambda)
            and isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "run_sync"
            and call.args
            and call.args[0] is function
        ):
            return None
        params = [*function.args.posonlyargs, *function.args.args]
        if not params or params[0] is not binding.node:
            return None
        owner = self.kind_of(call.func.value)
        if owner is not None and owner.is_session:
            return ObjectKind.SESSION
        if owner is not None and owner.is_connection:
            return ObjectKind.CONNECTION
        return None

    def entered(self, manager: ast.expr) -> ObjectKind | None:
        """What ``with manager as x`` binds ``x`` to."""
        if isinstance(manager, ast.Call) and isinstance(manager.func, ast.Attribute):
            base = self.kind_of(manager.func.value)
            attr = manager.func.attr
            if attr == "begin" and base is not None:
                if base in _PRODUCT:  # sessionmaker.begin(): a session in a transaction
                    return _PRODUCT[base]
                if base.is_engine:
                    return ObjectKind.ASYNC_CONNECTION if base.is_async else ObjectKind.CONNECTION
                return None  # Session.begin() gives a SessionTransaction
        if isinstance(manager, ast.Call) and isinstance(manager.func, ast.Name):
            function = self.flow.function_named(manager.func)
            if function is not None:
                return self._function_product(function)
        kind = self.kind_of(manager)
        if kind is not None and (kind.is_session or kind.is_connection):
            return kind
        return None

    def _dependency_kind(self, default: ast.expr) -> ObjectKind | None:
        """``Depends(get_db)`` (FastAPI) on a function of this file that yields a session."""
        if not (isinstance(default, ast.Call) and default.args):
            return None
        head = default.func
        head_name = last_name(head)
        if head_name not in ("Depends", "Provide", "Security"):
            return None
        target = default.args[0]
        if isinstance(target, ast.Name):
            function = self.flow.function_named(target)
            if function is not None:
                return self._function_product(function)
        return None

    def _function_product(
        self, function: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> ObjectKind | None:
        """What a dependency/context-manager function gives: by annotation, else by body."""
        if function.returns is not None:
            kind = self.annotation_kind(function.returns)
            if kind is not None:
                return kind
        kinds: list[ObjectKind | None] = []
        for node in walk_scope(function):
            if isinstance(node, (ast.Yield, ast.Return)) and node.value is not None:
                kinds.append(self.kind_of(node.value))
        return _agree(kinds)

    def annotation_kind(self, annotation: ast.expr, depth: int = 0) -> ObjectKind | None:
        """``Session``, ``Optional[AsyncSession]``, ``Annotated[Session, Depends()]``,
        ``"Session"``, ``Session | None``, ``Iterator[Session]``, an alias of one."""
        if depth > 6:
            return None
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            parsed = string_annotation(annotation.value)
            return self.annotation_kind(parsed, depth + 1) if parsed is not None else None
        if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
            # `Engine | Connection` may be either: known members must agree.
            return _agree(self.annotation_kind(m, depth + 1) for m in _union_members(annotation))
        if isinstance(annotation, ast.Subscript):
            head = annotation.value
            head_name = last_name(head)
            items = (
                list(annotation.slice.elts)
                if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
            )
            if head_name in ("Union", "Optional"):
                return _agree(self.annotation_kind(item, depth + 1) for item in items)
            if head_name in _WRAPPERS or head_name in _YIELDING:
                return self.annotation_kind(items[0], depth + 1)
            return None
        if not isinstance(annotation, (ast.Name, ast.Attribute)):
            return None
        tail = self.names.sqla_name(annotation)
        if tail in _ANNOTATED:
            return _ANNOTATED[tail]
        if isinstance(annotation, ast.Name):
            # `SessionDep = Annotated[Session, Depends(get_db)]` in this file.
            for binding in self.flow.bindings(annotation):
                if binding.kind is BindingKind.ASSIGN and binding.value is not None:
                    kind = self.annotation_kind(binding.value, depth + 1)
                    if kind is not None:
                        return kind
        qualified = self.names.qualify(annotation)
        if qualified is not None:
            origin = self.names.origin_of(qualified)
            if origin is not None and origin.startswith("annotated:"):
                return _ANNOTATED.get(self.names.sqla_tail(origin[10:]) or "")
        return None

    def _members(self, owner: ast.ClassDef) -> dict[str, list[tuple[str, ast.expr]]]:
        """What a class says about its attributes, walked once: ``("annotation", T)`` for
        ``session: Session`` and ``self.session: Session = ...``, ``("value", v)`` for
        ``self.session = v`` in any method, ``("returns", T)`` for a property's return."""
        cached = self._class_members.get(id(owner))
        if cached is not None:
            return cached
        members: dict[str, list[tuple[str, ast.expr]]] = {}
        for stmt in owner.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                members.setdefault(stmt.target.id, []).append(("annotation", stmt.annotation))
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if stmt.returns is not None:
                    members.setdefault(stmt.name, []).append(("returns", stmt.returns))
                self._collect_assigned(stmt, members)
        self._class_members[id(owner)] = members
        return members

    @staticmethod
    def _collect_assigned(
        method: ast.FunctionDef | ast.AsyncFunctionDef,
        members: dict[str, list[tuple[str, ast.expr]]],
    ) -> None:
        params = [*method.args.posonlyargs, *method.args.args]
        if not params:
            return
        me = params[0].arg
        for node in walk_scope(method):
            targets: list[ast.expr] = []
            value: ast.expr | None = None
            annotation: ast.expr | None = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign):
                targets, value, annotation = [node.target], node.value, node.annotation
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == me
                ):
                    found = members.setdefault(target.attr, [])
                    if annotation is not None:
                        found.append(("annotation", annotation))
                    elif value is not None:
                        found.append(("value", value))

    def _member_kind(self, expr: ast.Attribute) -> ObjectKind | None:
        """``self.session`` where the class annotates or assigns that attribute."""
        assert isinstance(expr.value, ast.Name)
        method = None
        for ancestor in self.ctx.ancestors(expr):
            if isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef)):
                method = ancestor
                break
        if method is None:
            return None
        params = [*method.args.posonlyargs, *method.args.args]
        if not params or params[0].arg != expr.value.id:
            return None
        owner = self.ctx.parent(method)
        if not isinstance(owner, ast.ClassDef):
            return None
        kinds = [
            self.kind_of(node) if how == "value" else self.annotation_kind(node)
            for how, node in self._members(owner).get(expr.attr, ())
        ]
        return _agree(kinds)

    def foreign(self, expr: ast.expr) -> bool:
        """Whether ``expr`` is known to come from a library other than SQLAlchemy's
        (``requests.Session()``, a parameter annotated ``aiohttp.ClientSession``)."""
        if not isinstance(expr, ast.Name):
            return False
        for binding in self.flow.bindings(expr):
            source: ast.expr | None = None
            made = binding.kind in (BindingKind.ASSIGN, BindingKind.WITH)
            if made and isinstance(binding.value, ast.Call):
                source = binding.value.func
            elif binding.kind is not BindingKind.IMPORT:
                source = binding.annotation
            elif binding.kind is BindingKind.IMPORT:
                source = expr
            if source is None:
                continue
            named = isinstance(source, (ast.Name, ast.Attribute))
            qualified = self.names.qualify(source) if named else None
            if qualified is None:
                continue
            root = qualified.partition(".")[0]
            if root in SQLA_MODULES or root in self.ctx.index.modules or qualified.startswith(
                tuple(f"{m}." for m in self.ctx.index.modules)
            ):
                continue
            if root in ("typing", "typing_extensions", "builtins"):
                continue
            return True
        return False


    # Weaker evidence, for rules that choose to use it ----------------------------------
    def imports_sqlalchemy(self) -> bool:
        """Whether this file imports SQLAlchemy, SQLModel or Flask-SQLAlchemy."""
        return any(
            value.partition(".")[0] in SQLA_MODULES for value in self.names.names.imports.values()
        )

    def project_imports_sqlalchemy(self) -> bool:
        """Whether any module of the project imports SQLAlchemy, SQLModel or Flask-SQLAlchemy."""
        if self._project_sqla is None:
            self._project_sqla = any(
                value.partition(".")[0] in SQLA_MODULES
                for module in self.ctx.index.modules.values()
                for value in module.imports.values()
            )
        return self._project_sqla

    def named_like_session(self, expr: ast.expr) -> bool:
        """``session``, ``db``, ``db_session``, ``self.session``, ``self._db``: what a session
        is conventionally called. Weak alone: corroborate (``imports_sqlalchemy()``, the
        call's shape) and check ``foreign()`` first."""
        name = last_name(expr).lstrip("_").lower()
        return name in _SESSION_NAMES or name.endswith("_session")

    def session_annotation_name(self, expr: ast.expr) -> bool:
        """A parameter annotated with a project type whose name says session (``SessionDep``,
        ``DbSession``): an alias this file cannot see into."""
        if not isinstance(expr, ast.Name):
            return False
        for binding in self.flow.bindings(expr):
            annotation = binding.annotation
            named = isinstance(annotation, (ast.Name, ast.Attribute))
            if binding.kind is BindingKind.PARAMETER and annotation is not None and named:
                qualified = self.names.qualify(annotation) or ""
                if "Session" in last_name(annotation) and self._in_project(qualified):
                    return True
        return False

    def _in_project(self, qualified: str) -> bool:
        module = qualified.rpartition(".")[0]
        return module in self.ctx.index.modules

    def project_uses_flask_sqlalchemy(self) -> bool:
        if self._flask is None:
            self._flask = any(
                value.startswith("flask_sqlalchemy")
                for module in self.ctx.index.modules.values()
                for value in module.imports.values()
            )
        return self._flask

    def flask_model(self, expr: ast.expr, depth: int = 0) -> bool:
        """Whether ``expr`` is a Flask-SQLAlchemy model class (so ``expr.query`` is a Query).

        A class of this file deriving from ``db.Model`` (directly or through classes of this
        file), or a class imported from the project when the project uses Flask-SQLAlchemy.
        """
        if depth > 6:
            return False
        if isinstance(expr, ast.Name):
            bindings = self.flow.bindings(expr)
            classes = [b.node for b in bindings if isinstance(b.node, ast.ClassDef)]
            if classes:
                return any(self._flask_class(c, depth) for c in classes)
            owner = self._classmethod_owner(expr)
            if owner is not None:
                return self._flask_class(owner, depth)
            if any(b.kind is not BindingKind.IMPORT for b in bindings) or not bindings:
                return False
        elif not isinstance(expr, ast.Attribute):
            return False
        qualified = self.names.qualify(expr)
        if qualified is None or not expr_is_class_like(expr):
            return False
        return self._in_project(qualified) and self.project_uses_flask_sqlalchemy()

    def _classmethod_owner(self, name: ast.Name) -> ast.ClassDef | None:
        """The class whose classmethod ``name`` is the first parameter of (``cls``)."""
        function = self.ctx.enclosing_scope(name)
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return None
        owner = self.ctx.parent(function)
        if not isinstance(owner, ast.ClassDef) or classmethod_receiver(function) != name.id:
            return None
        # Rebound in the body, it may name anything.
        if any(b.kind is not BindingKind.PARAMETER for b in self.flow.bindings(name)):
            return None
        return owner

    def _flask_class(self, node: ast.ClassDef, depth: int) -> bool:
        for base in node.bases:
            named = isinstance(base, (ast.Name, ast.Attribute))
            qualified = self.names.qualify(base) if named else None
            if qualified is not None:
                owner, _, attr = qualified.rpartition(".")
                if attr == "Model" and owner and self.names.is_flask_sqlalchemy(owner):
                    return True
            if self.flask_model(base, depth + 1):
                return True
        return False


def expr_is_class_like(expr: ast.expr) -> bool:
    """``User``, ``models.User``: a CapWords name, as classes are spelled."""
    name = last_name(expr)
    return bool(name) and name[0].isupper() and not is_constant_name(name)


_SESSION_NAMES = frozenset({"db", "sess", "session", "dbsession", "db_session", "dbsess"})
_MISSING = object()


def _union_members(annotation: ast.BinOp) -> list[ast.expr]:
    """``A | B | C`` as ``[A, B, C]``."""
    members: list[ast.expr] = []
    for side in (annotation.left, annotation.right):
        if isinstance(side, ast.BinOp) and isinstance(side.op, ast.BitOr):
            members.extend(_union_members(side))
        else:
            members.append(side)
    return members


def _agree(kinds: Iterable[ObjectKind | None]) -> ObjectKind | None:
    """The kind the known candidates agree on (sessions of any flavour agree as sessions)."""
    known = [k for k in kinds if k is not None]
    if not known:
        return None
    first = known[0]
    if all(k is first for k in known):
        return first
    if all(k.is_session for k in known):
        return first
    return None
