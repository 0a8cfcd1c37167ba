"""The project index: facts gathered from every file in a first pass, read-only to rules.

Facts are plain picklable dataclasses so that they can be cached per file and built in
worker processes, then merged. :class:`ProjectIndex` resolves them across modules: which
classes are mapped (``DeclarativeBase``, ``declarative_base()``, ``registry.mapped``,
Flask-SQLAlchemy's ``db.Model``, SQLModel's ``table=True``, imperative mappings), their
columns and relationships with targets and directions, listeners and validators, session
factories, engines and session-providing functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sqla_doctor.static.files import is_test_path
from sqla_doctor.static.index.extract import (
    PUBLIC_NAMES,
    CallShape,
    CreateAllFacts,
    Dependencies,
    FileExtract,
    ImportFacts,
    extract,
)
from sqla_doctor.static.index.functions import (
    DELEGATED,
    SELF_MODEL,
    FunctionFacts,
    ReturnFacts,
)
from sqla_doctor.static.index.import_graph import ImportGraph
from sqla_doctor.static.index.models import (
    ClassFacts,
    ColumnFacts,
    FieldFacts,
    ForeignKeyRef,
    ImperativeFacts,
    IndexFacts,
    ListenerFacts,
    RelationshipFacts,
    TableFacts,
    class_rule_table,
    table_name_for,
)
from sqla_doctor.static.index.names import SQLA_ROOTS, ModuleNames, NameResolver
from sqla_doctor.static.index.sessions import (
    SESSION_CLASSES,
    CommitFlag,
    EngineFacts,
    FactoryFacts,
    ProviderFacts,
)

if TYPE_CHECKING:
    from sqla_doctor.static.context import FileContext
    from sqla_doctor.static.flow import Scan

__all__ = [
    "ClassFacts",
    "ColumnFacts",
    "CreateAllFacts",
    "EngineFacts",
    "FactoryFacts",
    "FileFacts",
    "FunctionFacts",
    "ImportFacts",
    "IndexFacts",
    "ListenerFacts",
    "Model",
    "ProjectIndex",
    "ProviderFacts",
    "Relationship",
    "RelationshipFacts",
    "ReturnFacts",
    "SessionSource",
]

_DECLARATIVE_ROOTS = frozenset({"DeclarativeBase", "DeclarativeBaseNoMeta"})
_DECLARATIVE_FACTORIES = frozenset({"declarative_base", "generate_base"})
_NEUTRAL_SQLA = frozenset({"MappedAsDataclass", "AsyncAttrs", "Generic", "TypeDecorator"})
_NEUTRAL = frozenset(
    {
        "object",
        "builtins.object",
        "typing.Generic",
        "abc.ABC",
        "typing.Protocol",
        "enum.Enum",
        "dataclasses.dataclass",
    }
)
# Flask's per-request hooks (an app's and a blueprint's), run after every view.
_FLASK_HOOKS = frozenset(
    {
        "after_request",
        "after_app_request",
        "teardown_request",
        "teardown_app_request",
        "teardown_appcontext",
    }
)
_SQLMODEL_ROOTS = frozenset({"sqlmodel.SQLModel", "sqlmodel.main.SQLModel"})
_SCHEMA_MODULES = ("marshmallow.", "marshmallow_sqlalchemy.", "flask_marshmallow.")
# Methods and functions of sessions, results, statements and task groups.
_DATABASE_CALLS = frozenset(
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
        "stream",
        "add",
        "add_all",
        "delete",
        "merge",
        "commit",
        "flush",
        "rollback",
        "close",
        "begin",
        "begin_nested",
        "refresh",
        "expire",
        "expunge",
        "gather",
        "create_task",
        "start_soon",
        "run_sync",
        # Core writes on a connection (SQD104's "commit as you go").
        "exec_driver_sql",
        "create_all",
        "drop_all",
        "bulk_save_objects",
        "bulk_insert_mappings",
        "bulk_update_mappings",
        "Session",
        "AsyncSession",
        "sessionmaker",
        "async_sessionmaker",
        "session",
        "unique",
        "select",
        "update",
        "insert",
        "model_validate",
        "from_orm",
    }
)
_MUTATING_EVENTS = {
    "update": frozenset({"before_update", "after_update"}),
    "delete": frozenset({"before_delete", "after_delete"}),
    "insert": frozenset({"before_insert", "after_insert"}),
}
# (role, root, flavor, complete) of a class; see ProjectIndex._kind.
_Kind = tuple[str, "str | None", "str | None", bool]


@dataclass
class FileFacts:
    """What one file contributes to the project index."""

    path: str
    module: str
    is_package: bool
    names: ModuleNames
    orm: FileExtract = field(default_factory=FileExtract)

    @classmethod
    def extract(
        cls,
        path: str,
        module: str,
        is_package: bool,
        tree: ast.Module,
        scans: dict[int, Scan] | None = None,
    ) -> FileFacts:
        names, orm = extract(tree, module, is_package, scans)
        return cls(path=path, module=module, is_package=is_package, names=names, orm=orm)


@dataclass(frozen=True)
class Relationship:
    """A relationship as the ORM sees it on a mapped class, target resolved."""

    owner: str  # the model it is read on
    attr: str
    target: str | None  # qualified model, None when it cannot be resolved
    collection: bool | None
    direction: str | None  # one-to-many / many-to-one / many-to-many / one-to-one
    lazy: str | None  # "select" by default; None when not a literal
    path: str  # file that declares it
    line: int
    declared_on: str  # class that declares it (a mixin, a parent, or the owner)
    facts: RelationshipFacts | None = None  # None for one made by another's `backref`
    backref_of: tuple[str, str] | None = None

    @property
    def name(self) -> str:
        return f"{self.owner.rpartition('.')[2]}.{self.attr}"

    @property
    def is_lazy_select(self) -> bool:
        """Loaded by a SELECT on first access (the default ``lazy="select"``)."""
        return self.lazy in ("select", "lazy")


@dataclass
class Model:
    """A mapped class with everything it inherits from mixins and mapped parents."""

    qualname: str
    facts: ClassFacts
    path: str
    root: str  # the declarative base / registry / Flask `db` / "sqlmodel" it belongs to
    flavor: str  # declarative / flask / sqlmodel / registry / imperative
    lineage: tuple[str, ...]  # project classes in MRO order, the model first
    complete: bool  # every base is known, so a missing attribute is really missing
    table: str | None
    parent: str | None  # nearest mapped ancestor (inheritance)
    columns: dict[str, ColumnFacts] = field(default_factory=dict)
    relationship_facts: dict[str, tuple[RelationshipFacts, str, str]] = field(default_factory=dict)
    validators: dict[str, str] = field(default_factory=dict)
    members: set[str] = field(default_factory=set)
    indexes: list[IndexFacts] = field(default_factory=list)
    fk_constraints: list[tuple[tuple[str, ...], ForeignKeyRef]] = field(default_factory=list)
    # The `Table` an imperative mapping maps, when it is a module-level one.
    mapped_table: TableFacts | None = None

    @property
    def name(self) -> str:
        return self.facts.name

    def primary_keys(self) -> list[ColumnFacts]:
        columns = dict(self.columns)
        if self.mapped_table is not None:
            # Mapped imperatively: the `Table`'s columns, under their own names.
            for name, column in self.mapped_table.columns.items():
                columns.setdefault(name, column)
        return [c for c in columns.values() if c.primary_key]


@dataclass(frozen=True)
class SessionSource:
    """What calling a name gives: a factory's session, a provider's, a Session class's."""

    kind: str  # "factory" / "class" / "provider"
    is_async: bool | None
    qualname: str
    scoped: bool = False
    expire_on_commit: bool | None = None  # None: unknown (see sessions.expire_on_commit)
    commits: bool = False
    managed: bool = False
    style: str | None = None


def _lazy(rel: RelationshipFacts) -> str | None:
    """The loader strategy a relationship was declared with; None when unknown (a
    non-literal, or `**kwargs` that might carry one)."""
    if rel.lazy == "?" or (rel.lazy is None and rel.incomplete):
        return None
    return "select" if rel.lazy is None else rel.lazy


def _rebinds(package: ModuleNames, name: str) -> bool:
    """Whether a package's ``__init__`` binds ``name`` to something other than its
    submodule of that name (``from .db import db``, ``db = SQLAlchemy()``)."""
    submodule = f"{package.module}.{name}"
    imported = package.imports.get(name)
    if imported is not None:
        return imported != submodule
    return name in package.defined


def _resolver_for(modules: dict[str, ModuleNames]) -> NameResolver:
    return NameResolver(ModuleNames(module=""), modules)


class ProjectIndex:
    """Every module's facts by module name, and the resolved views rules read."""

    def __init__(self) -> None:
        self.files: dict[str, FileFacts] = {}  # by module name
        self.modules: dict[str, ModuleNames] = {}
        # The project's requirements hold SQLAlchemy below 2.0 (see ``declared_version``):
        # set by the engine, which knows the project's root.
        self.sqlalchemy_below_2 = False
        self._aliases: dict[str, str] = {}
        self._resolver: NameResolver = _resolver_for(self.modules)
        self._classes: dict[str, tuple[ClassFacts, FileFacts]] | None = None
        self._kinds: dict[str, _Kind] = {}
        self._models: dict[str, Model | None] = {}
        self._all_models: list[Model] | None = None
        self._relationships: dict[tuple[str, str], Relationship | None] = {}
        self._backrefs: dict[str, dict[str, Relationship]] | None = None
        self._subclasses: dict[str, list[str]] | None = None
        self._by_name: dict[tuple[str, str], list[str]] | None = None
        self._functions: dict[str, FunctionFacts] | None = None
        self._factories: dict[str, FactoryFacts] | None = None
        self._engines: dict[str, tuple[EngineFacts, FileFacts]] | None = None
        self._listeners: list[tuple[ListenerFacts, FileFacts]] | None = None
        self._imperatives: dict[str, tuple[ImperativeFacts, FileFacts]] | None = None
        self._followed: dict[str, str] = {}
        self._sources: dict[str, SessionSource | None] = {}
        self._interesting: frozenset[str] | None = None
        self._readers: frozenset[str] | None = None
        self._imported: dict[str, set[str]] | None = None
        self._imported_outside_tests: dict[str, set[str]] | None = None
        self._literal_sets: dict[str, bool] | None = None
        self._import_graph: ImportGraph | None = None
        self._app_reach: dict[str, set[str]] | None = None
        self._committing_routers: frozenset[str] | None = None
        self._app_commits = False
        self._committing_names: frozenset[str] | None = None
        self._flask_hooks_commit: bool | None = None
        self._column_aliases: dict[str, ColumnFacts] | None = None
        self._entity_aliases: dict[str, str] | None = None
        self._query_properties: frozenset[str] | None = None
        self._outside_calls: dict[str, list[CallShape] | None] = {}

    @classmethod
    def build(cls, facts: Iterable[FileFacts]) -> ProjectIndex:
        index = cls()
        for item in facts:
            index.add(item)
        index._add_path_aliases()
        index.warm()
        return index

    def warm(self) -> None:
        """Resolve the project-wide views now, once, rather than inside the first file's
        rules (where a per-file time limit would charge them to that file)."""
        self.models()
        self._backref_table()
        self.interesting_calls()
        self.element_readers()

    def add(self, facts: FileFacts) -> None:
        # Two files claiming one module name (scripts in different folders): first wins,
        # which keeps the result independent of worker scheduling.
        if facts.module not in self.files:
            self.files[facts.module] = facts
            self.modules[facts.module] = facts.names
        self._reset()

    def _reset(self) -> None:
        self._resolver = _resolver_for(self.modules)
        self._classes = None
        self._kinds = {}
        self._models = {}
        self._all_models = None
        self._relationships = {}
        self._backrefs = None
        self._subclasses = None
        self._by_name = None
        self._functions = None
        self._factories = None
        self._engines = None
        self._listeners = None
        self._imperatives = None
        self._followed = {}
        self._sources = {}
        self._interesting = None
        self._readers = None
        self._imported = None
        self._imported_outside_tests = None
        self._literal_sets = None
        self._import_graph = None
        self._app_reach = None
        self._committing_routers = None
        self._committing_names = None
        self._flask_hooks_commit = None
        self._column_aliases = None
        self._entity_aliases = None
        self._query_properties = None
        self._outside_calls = {}

    def import_graph(self) -> ImportGraph:
        """Which project modules import which."""
        if self._import_graph is None:
            self._import_graph = ImportGraph(self)
        return self._import_graph

    def apps_serving(self, module: str) -> frozenset[str]:
        """The kinds of web application ("asgi", "wsgi") that ``module`` is part of: it
        makes the app, or the app's modules import it. A script beside the app is not."""
        if self._app_reach is None:
            roots: dict[str, set[str]] = {}
            for facts in self.files.values():
                for kind, _ in facts.orm.apps:
                    roots.setdefault(kind, set()).add(facts.module)
            graph = self.import_graph()
            self._app_reach = {kind: graph.closure(found) for kind, found in roots.items()}
        return frozenset(kind for kind, reach in self._app_reach.items() if module in reach)

    def _add_path_aliases(self) -> None:
        """Modules also answer to the dotted form of their path (``app/models.py`` →
        ``app.models``) when no ``__init__.py`` made that their name: namespace packages
        and projects checked from their root import them that way."""
        for module, facts in list(self.files.items()):
            parts = facts.path.replace("\\", "/").split("/")
            if not parts or not parts[-1].endswith((".py", ".pyi")):
                continue
            parts[-1] = parts[-1].rsplit(".", 1)[0]
            if parts[-1] == "__init__":
                parts.pop()
            candidates = [".".join(parts)]
            if parts and parts[0] == "src":
                candidates.append(".".join(parts[1:]))
            for alias in candidates:
                if alias and alias != module and alias not in self.modules:
                    self.modules[alias] = facts.names
                    self._aliases[alias] = module
        self._reset()

    def __iter__(self) -> Iterator[FileFacts]:
        return iter(self.files.values())

    def resolver(self, facts: FileFacts) -> NameResolver:
        return NameResolver(facts.names, self.modules)

    # Names ---------------------------------------------------------------------------
    def canonical(self, qualified: str) -> str:
        """A qualified name with any path alias of its module replaced by the module."""
        if not self._aliases:
            return qualified
        parts = qualified.split(".")
        for cut in range(len(parts), 0, -1):
            module = self._aliases.get(".".join(parts[:cut]))
            if module is not None:
                return ".".join([module, *parts[cut:]]) if module else ".".join(parts[cut:])
        return qualified

    def follow(self, qualified: str) -> str:
        """Follow re-exports and aliases to where a name is defined, canonically."""
        found = self._followed.get(qualified)
        if found is None:
            found = self.canonical(self._resolver.follow(self.canonical(qualified)))
            self._followed[qualified] = found
        return found

    def origin_of(self, qualified: str) -> str | None:
        """What a module-level name was assigned from (``call:sqlalchemy.create_engine``)."""
        return self._resolver.origin_of(self.follow(qualified))

    def module_of(self, qualified: str) -> str | None:
        """The project module that defines a qualified name (a method's included)."""
        parts = self.follow(qualified).split(".")
        for cut in range(len(parts) - 1, 0, -1):
            module = ".".join(parts[:cut])
            if module in self.files:
                return module
        return None

    def path_of(self, qualified: str) -> str | None:
        """The file that defines a qualified name."""
        module = self.module_of(qualified)
        return self.files[module].path if module is not None else None

    # Classes and models --------------------------------------------------------------
    def _class_table(self) -> dict[str, tuple[ClassFacts, FileFacts]]:
        if self._classes is None:
            self._classes = {}
            for facts in self.files.values():
                for cls in facts.orm.classes:
                    self._classes.setdefault(cls.qualname, (cls, facts))
        return self._classes

    def class_facts(self, qualified: str) -> ClassFacts | None:
        entry = self._class_table().get(self.follow(qualified))
        return entry[0] if entry is not None else None

    def file_of_class(self, qualified: str) -> FileFacts | None:
        """The module that defines the class."""
        entry = self._class_table().get(self.follow(qualified))
        return entry[1] if entry is not None else None

    def _kind(self, qualname: str, depth: int = 0) -> _Kind:
        """(role, root, flavor, complete): role is "root", "mapped", "abstract",
        "plain" (a mixin or any other class) or "unknown"."""
        cached = self._kinds.get(qualname)
        if cached is not None:
            return cached
        unknown: _Kind = ("unknown", None, None, False)
        if depth > 30:
            return unknown
        self._kinds[qualname] = unknown  # a cycle in the bases ends here
        entry = self._class_table().get(qualname)
        if entry is None:
            return unknown
        cls, _ = entry
        root: str | None = None
        flavor: str | None = None
        is_root = False
        complete = True
        for base in cls.bases:
            if base == "?":
                complete = False
                continue
            target = self.follow(base)
            if target in self._class_table():
                _, base_root, base_flavor, base_complete = self._kind(target, depth + 1)
                complete = complete and base_complete
                if base_root is not None and root is None:
                    root, flavor = base_root, base_flavor
                continue
            tail = target.rpartition(".")[2]
            head = target.partition(".")[0]
            if head == "sqlalchemy" and tail in _DECLARATIVE_ROOTS:
                is_root, root, flavor = True, qualname, "declarative"
            elif target in _SQLMODEL_ROOTS:
                root, flavor = "sqlmodel", "sqlmodel"
            elif tail == "Model" and self._resolver.is_flask_sqlalchemy(target.rpartition(".")[0]):
                root, flavor = target.rpartition(".")[0], "flask"
            elif self._declarative_factory(target):
                root, flavor = target, "declarative"
            elif (
                (head in ("sqlalchemy", "sqlmodel") and tail in _NEUTRAL_SQLA)
                or target in _NEUTRAL
                or head in ("typing", "abc", "pydantic", "enum")
            ):
                continue
            else:
                complete = False
        for decorator in cls.decorators:
            if decorator == "?":
                continue
            owner, _, method = self.follow(decorator).rpartition(".")
            if method in ("mapped", "mapped_as_dataclass") and self._is_registry(owner):
                root, flavor = owner, "registry"
        if cls.metaclass and cls.metaclass.rpartition(".")[2] == "DeclarativeMeta":
            is_root, root, flavor = True, qualname, "declarative"
        result: _Kind
        if is_root:
            result = ("root", root, flavor, complete)
        elif root is None:
            result = ("plain", None, None, complete)
        elif cls.abstract or (flavor == "sqlmodel" and not cls.table_kw):
            result = ("abstract", root, flavor, complete)
        else:
            result = ("mapped", root, flavor, complete)
        self._kinds[qualname] = result
        return result

    def _declarative_factory(self, qualified: str) -> bool:
        origin = self.origin_of(qualified)
        if origin is None or not origin.startswith("call:"):
            return False
        return origin.rpartition(".")[2] in _DECLARATIVE_FACTORIES

    def _is_registry(self, qualified: str) -> bool:
        origin = self.origin_of(qualified)
        return origin is not None and origin.startswith("call:") and origin.endswith(".registry")

    def _imperative(self) -> dict[str, tuple[ImperativeFacts, FileFacts]]:
        if self._imperatives is None:
            self._imperatives = {}
            for facts in self.files.values():
                for item in facts.orm.imperative:
                    self._imperatives.setdefault(self.follow(item.cls), (item, facts))
        return self._imperatives

    def is_mapped_class(self, qualified: str) -> bool:
        return self.model(qualified) is not None

    def model(self, qualified: str | None) -> Model | None:
        """The mapped class a qualified name refers to (re-exports followed)."""
        if not qualified:
            return None
        name = self.follow(qualified)
        if name in self._models:
            return self._models[name]
        self._models[name] = None  # recursion guard (single-table parents)
        found = self._build_model(name)
        self._models[name] = found
        return found

    def model_for_expr(self, ctx: FileContext, expr: ast.expr) -> Model | None:
        """The mapped class an expression in ``ctx``'s file names (``User``, ``m.User``)."""
        if not isinstance(expr, (ast.Name, ast.Attribute)):
            return None
        return self.model(ctx.names.qualify(expr))

    def models(self) -> list[Model]:
        """Every mapped class of the project."""
        if self._all_models is None:
            names = [*self._class_table(), *self._imperative()]
            seen: set[str] = set()
            self._all_models = []
            for name in names:
                item = self.model(name)
                if item is not None and item.qualname not in seen:
                    seen.add(item.qualname)
                    self._all_models.append(item)
        return self._all_models

    def mro(self, qualname: str) -> list[str]:
        """Project classes in (approximately) method resolution order, the class first."""
        order: list[str] = []
        queue = [self.follow(qualname)]
        table = self._class_table()
        while queue and len(order) < 64:
            current = queue.pop(0)
            if current in order or current not in table:
                continue
            order.append(current)
            cls, _ = table[current]
            queue.extend(self.follow(b) for b in cls.bases if b != "?")
        return order

    def _build_model(self, name: str) -> Model | None:
        table = self._class_table()
        entry = table.get(name)
        imperative = self._imperative().get(name)
        if entry is None:
            return None
        role, root, flavor, complete = self._kind(name)
        if role != "mapped" and imperative is None:
            return None
        cls, facts = entry
        mro = self.mro(name)
        if root is None and imperative is not None and imperative[0].registry is not None:
            # Classes mapped by one registry find each other by name (`relationship("B")`).
            root = self.follow(imperative[0].registry)
            owner, _, attr = root.rpartition(".")
            if attr == "registry" and (
                self._declarative_factory(owner) or self._kind(owner)[0] == "root"
            ):
                # `Base.registry.map_imperatively(...)`: the declarative base's registry.
                root = self.follow(owner)
        model = Model(
            qualname=name,
            facts=cls,
            path=facts.path,
            root=root or name,
            flavor=flavor or "imperative",
            lineage=tuple(mro),
            complete=complete,
            table=None,
            parent=next((a for a in mro[1:] if self._kind(a)[0] == "mapped"), None),
        )
        for ancestor in reversed(mro):
            a_cls, a_file = table[ancestor]
            for attr, column in a_cls.columns.items():
                if self._confirmed(column.via):
                    model.columns[attr] = self._with_alias(column)
                else:
                    # `Column = partial(db.Column, ...)` read as `db.Column`, unconfirmed:
                    # whatever it makes, this model's columns are not all known.
                    model.complete = False
            for attr, rel in a_cls.relationships.items():
                if self._confirmed(rel.via):
                    model.relationship_facts[attr] = (rel, a_file.path, ancestor)
                else:
                    model.complete = False
            model.validators.update(a_cls.validators)
            model.members.update(
                a_cls.columns,
                a_cls.relationships,
                a_cls.other_attrs,
                a_cls.methods,
                a_cls.properties,
            )
            if not a_cls.table_args_dynamic:
                model.indexes.extend(a_cls.indexes)
            model.fk_constraints.extend(a_cls.fk_constraints)
            if a_cls.declared_attr_members or not a_cls.table_columns_known:
                model.complete = False
        if imperative is not None:
            item, i_file = imperative
            model.flavor = "imperative"
            model.mapped_table = self.table_facts(item.table_ref)
            model.table = item.table or (
                model.mapped_table.name if model.mapped_table is not None else None
            )
            for attr, rel in item.relationships.items():
                model.relationship_facts[attr] = (rel, i_file.path, name)
                model.members.add(attr)
            model.complete = False
        else:
            model.table = self._table_of(name, mro, model)
        return model

    def has_query_property(self, model: Model) -> bool:
        """Whether ``Model.query`` is a legacy Query from a scoped session's
        ``query_property()`` set on the model or one of its bases (``Base.query = ...``)."""
        if self._query_properties is None:
            self._query_properties = frozenset(
                self.follow(q) for facts in self for q in facts.orm.query_properties
            )
        owners = self._query_properties
        return bool(owners) and (model.root in owners or not owners.isdisjoint(model.lineage))

    def aliased_model(self, qualified: str) -> Model | None:
        """The model a module-level ``parent = aliased(Node)`` aliases."""
        if self._entity_aliases is None:
            self._entity_aliases = {
                name: target for facts in self for name, target in facts.orm.entity_aliases.items()
            }
        target = self._entity_aliases.get(self.follow(qualified))
        return self.model(target) if target is not None else None

    def alias_key(self, qualified: str) -> str | None:
        """The literal ``name=`` of a module-level ``aliased(..., name="author")``."""
        followed = self.follow(qualified)
        return next(
            (facts.orm.alias_keys[followed] for facts in self if followed in facts.orm.alias_keys),
            None,
        )

    def _with_alias(self, column: ColumnFacts) -> ColumnFacts:
        """``column`` with what its ``Mapped[alias]``'s ``mapped_column()`` adds, as
        SQLAlchemy merges an ``Annotated`` alias's column into the attribute's."""
        if column.type_alias is None:
            return column
        if self._column_aliases is None:
            self._column_aliases = {
                name: alias for facts in self for name, alias in facts.orm.column_aliases.items()
            }
        alias = self._column_aliases.get(self.follow(column.type_alias))
        if alias is None:
            return column
        return replace(
            column,
            primary_key=column.primary_key or alias.primary_key,
            index=column.index or alias.index,
            unique=column.unique or alias.unique,
            foreign_keys=column.foreign_keys or alias.foreign_keys,
            python_default=column.python_default or alias.python_default,
            server_default=column.server_default or alias.server_default,
        )

    def _confirmed(self, via: str | None) -> bool:
        """A name read before the module defining it was known: `db` of `db.Model`, or
        what `db.Column` (or a `Column` imported from the project) was called through. Is
        it Flask-SQLAlchemy's (or SQLAlchemy's own, re-exported)?"""
        if via is None:
            return True
        target = self.follow(via)
        if self._resolver.is_flask_sqlalchemy(target):
            return True
        owner = target.rpartition(".")[0]
        if not owner:
            return False
        return owner.partition(".")[0] in SQLA_ROOTS or (
            self._resolver.is_flask_sqlalchemy(self.follow(owner))
        )

    def _table_of(self, name: str, mro: list[str], model: Model) -> str | None:
        table = self._class_table()
        cls = table[name][0]
        if cls.tablename:
            return cls.tablename
        if cls.tablename_from_class is not None:
            return class_rule_table(cls.tablename_from_class, cls.name)
        if cls.tablename_dynamic:
            return None
        # Single-table inheritance: no table of its own, the parent's is used.
        own_pk = any(self._with_alias(c).primary_key for c in cls.columns.values())
        if model.parent is not None and not own_pk:
            parent_model = self.model(model.parent)
            return parent_model.table if parent_model is not None else None
        for ancestor in mro[1:]:
            a_cls = table[ancestor][0]
            if a_cls.tablename_from_class is not None:
                return class_rule_table(a_cls.tablename_from_class, cls.name)
            if a_cls.tablename_dynamic:
                return None
            if a_cls.tablename and self._kind(ancestor)[0] != "mapped":
                return a_cls.tablename
        return table_name_for(model.flavor, cls.name)

    # Relationships -------------------------------------------------------------------
    def relationship(self, model: str | Model | None, attr: str) -> Relationship | None:
        """The relationship ``attr`` of a model (own, inherited, or made by a backref)."""
        owner = model if isinstance(model, Model) else self.model(model)
        if owner is None:
            return None
        key = (owner.qualname, attr)
        if key in self._relationships:
            return self._relationships[key]
        self._relationships[key] = None
        found: Relationship | None = None
        entry = owner.relationship_facts.get(attr)
        if entry is not None:
            rel, path, declared_on = entry
            found = self._resolve_relationship(owner, rel, path, declared_on)
        else:
            for ancestor in owner.lineage:
                found = self._backref_table().get(ancestor, {}).get(attr)
                if found is not None:
                    break
        self._relationships[key] = found
        return found

    def subclass_relationship(self, model: str, attr: str) -> Relationship | None:
        """``attr`` read on a ``model`` object when ``model`` has no such relationship but
        one of its mapped subclasses does (``shape.marks`` of a Circle in a loop over
        ``select(Shape)``): that subclass's; None when none or several (unrelated) do."""
        if self._subclasses is None:
            self._subclasses = {}
            for item in self.models():
                seen = {item.qualname}
                ancestor = self.model(item.parent) if item.parent else None
                while ancestor is not None and ancestor.qualname not in seen:
                    seen.add(ancestor.qualname)
                    self._subclasses.setdefault(ancestor.qualname, []).append(item.qualname)
                    ancestor = self.model(ancestor.parent) if ancestor.parent else None
        owners = [
            sub
            for sub in self._subclasses.get(self.follow(model), ())
            if self.relationship(sub, attr) is not None
        ]
        # A sub-subclass inherits its parent's: the topmost owner is the one read.
        top = [sub for sub in owners if (found := self.model(sub)) and found.parent not in owners]
        return self.relationship(top[0], attr) if len(top) == 1 else None

    def relationships(self, model: Model) -> list[Relationship]:
        """Every relationship readable on a model, backrefs included."""
        found: list[Relationship] = []
        for attr in model.relationship_facts:
            rel = self.relationship(model, attr)
            if rel is not None:
                found.append(rel)
        for ancestor in model.lineage:
            for rel in self._backref_table().get(ancestor, {}).values():
                if rel.attr not in model.relationship_facts:
                    found.append(rel)
        return found

    def resolve_target(self, owner: Model, target: str | None, is_string: bool) -> Model | None:
        """The model a relationship target names, in the owner's registry."""
        if not target:
            return None
        if not is_string:
            return self.model(target)
        if "." in target:
            direct = self.model(target)
            if direct is not None:
                return direct
        candidates = self._names_in_registry().get((owner.root, target.rpartition(".")[2]), [])
        if "." in target:
            suffix = "." + target
            candidates = [c for c in candidates if c.endswith(suffix)] or candidates
        if len(candidates) == 1:
            return self.model(candidates[0])
        return None

    def _names_in_registry(self) -> dict[tuple[str, str], list[str]]:
        if self._by_name is None:
            self._by_name = {}
            for model in self.models():
                self._by_name.setdefault((model.root, model.name), []).append(model.qualname)
        return self._by_name

    def _resolve_relationship(
        self, owner: Model, rel: RelationshipFacts, path: str, declared_on: str
    ) -> Relationship:
        target = self.resolve_target(owner, rel.target, rel.target_is_string)
        collection = rel.collection
        direction: str | None = None
        # To its own table: the class that declares it, or another class of a
        # single-table hierarchy. (Declared on a joined-inheritance base and read on a
        # subclass, it joins two tables: not self-referential.)
        declaring = self.model(declared_on) if declared_on != owner.qualname else owner
        base = declaring if declaring is not None else owner
        self_referential = target is not None and (
            base.qualname == target.qualname
            or (
                bool(base.table)
                and base.table == target.table
                and (target.qualname in base.lineage or base.qualname in target.lineage)
            )
        )
        if rel.secondary is not None:
            direction = "many-to-many"
            collection = True if collection is None else collection
        elif self_referential and (rel.remote_side or not rel.primaryjoin):
            # SQLAlchemy's rule for an adjacency list: many-to-one with `remote_side=`,
            # else one-to-many, whichever column `foreign_keys=` names.
            if rel.remote_side:
                direction = "many-to-one" if collection is not True else None
                collection = False if collection is None else collection
            else:
                direction = "one-to-many" if collection is not False else "one-to-one"
                collection = True if collection is None else collection
        elif target is not None and not self_referential and (
            named := self._foreign_keys_named(rel, owner, target)
        ):
            # `foreign_keys=[cls.owner_id]` / `foreign(Note.owner_id)`: the foreign key
            # columns are the parent's (many-to-one) or the target's (one-to-many), as
            # SQLAlchemy decides it when the two classes differ.
            if named == "local":
                direction = "many-to-one"
                collection = False if collection is None else collection
            else:
                direction = "one-to-many" if collection is not False else "one-to-one"
                collection = True if collection is None else collection
        elif target is not None and not self_referential:
            # With `foreign_keys=`/`primaryjoin=` the keys still tell the direction when
            # they point one way only. A side found without keys must have had all of its
            # keys read (a reflected table's are not in the source).
            local = self.foreign_keys_to(owner, target)
            remote = self.foreign_keys_to(target, owner)
            if local and not remote and self._keys_readable(target):
                direction = "many-to-one"
                collection = False if collection is None else collection
            elif remote and not local and self._keys_readable(owner):
                direction = "one-to-many" if collection is not False else "one-to-one"
                collection = True if collection is None else collection
        elif target is not None and not rel.explicit_join:
            direction = "one-to-many" if collection is not False else None
        if direction is None and collection is True:
            direction = "one-to-many"
        return Relationship(
            owner=owner.qualname,
            attr=rel.attr,
            target=target.qualname if target is not None else None,
            collection=collection,
            direction=direction,
            lazy=_lazy(rel),
            path=path,
            line=rel.line,
            declared_on=declared_on,
            facts=rel,
        )

    def _backref_table(self) -> dict[str, dict[str, Relationship]]:
        if self._backrefs is None:
            self._backrefs = {}
            for model in self.models():
                for attr, (rel, path, declared_on) in model.relationship_facts.items():
                    if not rel.backref:
                        continue
                    # A subclass inherits its parent's relationship; the backref it makes
                    # points at the parent (that declared it), not at each subclass.
                    if declared_on != model.qualname and self._kind(declared_on)[0] == "mapped":
                        continue
                    forward = self.relationship(model, attr)
                    if forward is None or forward.target is None:
                        continue
                    collection: bool | None
                    if rel.backref_collection is not None:
                        collection = rel.backref_collection
                    elif forward.direction in ("many-to-many", "many-to-one"):
                        collection = True
                    elif forward.collection is True or forward.direction == "one-to-one":
                        collection = False
                    else:
                        collection = None
                    direction = {
                        "many-to-many": "many-to-many",
                        "many-to-one": "one-to-many",
                        "one-to-many": "many-to-one",
                        # The other side of a one-to-one holds the key: a scalar reference.
                        "one-to-one": "many-to-one",
                    }.get(forward.direction or "")
                    lazy = rel.backref_lazy
                    self._backrefs.setdefault(forward.target, {})[rel.backref] = Relationship(
                        owner=forward.target,
                        attr=rel.backref,
                        target=model.qualname,
                        collection=collection,
                        direction=direction,
                        lazy="select" if lazy is None else (None if lazy == "?" else lazy),
                        path=path,
                        line=rel.line,
                        declared_on=model.qualname,
                        facts=None,
                        backref_of=(model.qualname, attr),
                    )
        return self._backrefs

    def database_cascades(self, model: Model, target: Model) -> bool:
        """Whether every foreign key from ``model`` to ``target`` has an ``ondelete=``
        action, so that deleting ``target`` rows needs no ORM cascade."""
        refs = [
            ref
            for column in model.columns.values()
            for ref in column.foreign_keys
            if self._fk_points_at(ref, target)
        ] + [ref for _, ref in model.fk_constraints if self._fk_points_at(ref, target)]
        return bool(refs) and all(ref.ondelete for ref in refs)

    @staticmethod
    def _foreign_key_sources(
        model: Model,
    ) -> tuple[list[ColumnFacts], list[tuple[tuple[str, ...], ForeignKeyRef]]]:
        """``model``'s columns and its foreign key constraints, with those of the ``Table``
        an imperative mapping maps."""
        constraints = list(model.fk_constraints)
        columns = list(model.columns.values())
        if model.mapped_table is not None:
            columns.extend(model.mapped_table.columns.values())
            constraints.extend(model.mapped_table.fk_constraints)
        return columns, constraints

    def foreign_keys_to(self, model: Model, target: Model) -> list[ColumnFacts]:
        """Columns of ``model`` (inherited ones included, and those of the ``Table`` an
        imperative mapping maps) with a foreign key to ``target``."""
        found: list[ColumnFacts] = []
        columns, constraints = self._foreign_key_sources(model)
        for column in columns:
            if any(self._fk_points_at(ref, target) for ref in column.foreign_keys):
                found.append(column)
        for names, ref in constraints:
            if self._fk_points_at(ref, target):
                found.extend(ColumnFacts(attr=c, name=c, line=0) for c in names)
        return found

    def foreign_key_paths(self, model: Model, target: Model) -> set[tuple[str, ...]]:
        """The ways ``model``'s foreign keys can join it to ``target``, one per foreign key
        constraint: a column's own ``ForeignKey``, or every column of a composite
        ``ForeignKeyConstraint`` together (SQLAlchemy joins on all of them at once)."""
        paths: set[tuple[str, ...]] = set()
        columns, constraints = self._foreign_key_sources(model)
        for column in columns:
            if any(self._fk_points_at(ref, target) for ref in column.foreign_keys):
                paths.add((column.attr,))
        for names, ref in constraints:
            if names and self._fk_points_at(ref, target):
                paths.add(names)
        return paths

    @staticmethod
    def _keys_readable(model: Model) -> bool:
        """Whether a model's foreign keys can all be read: an imperative mapping's are
        those of its ``Table``, when that is a module-level one read whole."""
        if model.flavor != "imperative":
            return True
        return model.mapped_table is not None and model.mapped_table.complete

    def _foreign_keys_named(self, rel: RelationshipFacts, owner: Model, target: Model) -> str:
        """"local" when ``foreign_keys=`` (or ``foreign()``) names only the owner's
        columns, "remote" when only the target's; "" otherwise."""
        owners = rel.foreign_key_owners
        if not owners:
            return ""
        sides = {self._side(name, owner, target) for name in owners}
        return sides.pop() if len(sides) == 1 and "" not in sides else ""

    def _side(self, name: str, owner: Model, target: Model) -> str:
        if name == "":
            return "local"
        sides = {
            side
            for model, side in ((owner, "local"), (target, "remote"))
            for ancestor in model.lineage
            if name == ancestor or name == ancestor.rpartition(".")[2]
        }
        # A class of both lineages (a joined-inheritance parent of the other): its
        # column alone does not tell the side.
        return sides.pop() if len(sides) == 1 else ""

    def tables_of(self, model: Model) -> set[str]:
        """The tables a model's rows live in: its own and its mapped parents' (joined
        inheritance joins them)."""
        tables = {model.table} if model.table else set()
        for ancestor in model.lineage[1:]:
            parent = self.model(ancestor) if self._kind(ancestor)[0] == "mapped" else None
            if parent is not None and parent.table:
                tables.add(parent.table)
        return tables

    def _fk_points_at(self, ref: ForeignKeyRef, target: Model) -> bool:
        tables = self.tables_of(target)
        if ref.model is not None:
            referenced = self.model(ref.model)
            if referenced is not None:
                return referenced.qualname in target.lineage or bool(
                    self.tables_of(referenced) & tables
                )
            # `ForeignKey(users.c.id)` on a Table variable.
            table = self._table_name(ref.model)
            return table is not None and table in tables
        return ref.table is not None and ref.table in tables

    def foreign_keys_known(self, model: Model) -> bool:
        """Whether every column (and so every foreign key) of a model is known."""
        if not model.complete:
            return False
        for ancestor in model.lineage:
            cls = self.class_facts(ancestor)
            if cls is None or cls.table_args_dynamic or cls.declared_attr_members:
                return False
        return True

    def _table_name(self, qualified: str) -> str | None:
        table = self.table_facts(qualified)
        return table.name if table is not None else None

    def table_facts(self, qualified: str | None) -> TableFacts | None:
        """A module-level ``Table(...)`` by its variable's qualified name."""
        if not qualified:
            return None
        name = self.follow(qualified)
        module = self.files.get(name.rpartition(".")[0])
        if module is None:
            return None
        for table in module.orm.tables:
            if table.qualname == name:
                return table
        return None

    def model_by_table(self, table: str) -> Model | None:
        found = [m for m in self.models() if m.table == table and m.parent is None]
        return found[0] if len(found) == 1 else None

    # Listeners, validators, indexes --------------------------------------------------
    def _listener_list(self) -> list[tuple[ListenerFacts, FileFacts]]:
        if self._listeners is None:
            self._listeners = [
                (listener, facts)
                for facts in self.files.values()
                for listener in facts.orm.listeners
            ]
        return self._listeners

    def listeners_for(
        self, model: Model, identifiers: Iterable[str] | None = None
    ) -> list[tuple[ListenerFacts, str]]:
        """ORM event listeners that fire for ``model`` (its own, propagated from a base
        or mixin, or registered on every mapper), with the file that registers them."""
        wanted = set(identifiers) if identifiers is not None else None
        found: list[tuple[ListenerFacts, str]] = []
        for listener, facts in self._listener_list():
            if wanted is not None and listener.identifier not in wanted:
                continue
            if listener.target == "session":
                continue
            if listener.target == "mapper":
                found.append((listener, facts.path))
                continue
            target = self.follow(listener.target)
            if (
                target == model.qualname
                or (listener.propagate and target in model.lineage)
                or (model.root == target and listener.propagate)
            ):
                found.append((listener, facts.path))
        return found

    def mutation_listeners(self, model: Model, operation: str) -> list[tuple[ListenerFacts, str]]:
        """Mapper listeners a bulk ``update``/``delete``/``insert`` would skip."""
        return self.listeners_for(model, _MUTATING_EVENTS.get(operation, ()))

    def session_listeners(self) -> set[str]:
        """Event identifiers listened for on Session (``do_orm_execute``, …)."""
        found: set[str] = set()
        for facts in self.files.values():
            found |= facts.orm.session_listeners
        return found

    def indexes_for(self, model: Model) -> list[IndexFacts]:
        """Indexes on the model's table: ``__table_args__``, module-level ``Index(...)``,
        Alembic ``op.create_index`` and raw ``CREATE INDEX`` statements."""
        found = list(model.indexes)
        for facts in self.files.values():
            for index in facts.orm.indexes:
                if index.owner is not None:
                    owner = self.model(index.owner)
                    if owner is not None and owner.qualname == model.qualname:
                        found.append(index)
                    elif owner is None and model.table:
                        table = self.table_facts(index.owner)
                        if table is not None and table.name == model.table:
                            found.append(index)
                elif index.table is not None and model.table and index.table == model.table:
                    found.append(index)
        return found

    @staticmethod
    def column(model: Model, attr: str) -> ColumnFacts | None:
        """The column mapped as ``attr``: declared on the class, or, for a class mapped
        imperatively without renaming it, the ``Table``'s column of that name."""
        column = model.columns.get(attr)
        if column is None and model.mapped_table is not None:
            column = model.mapped_table.columns.get(attr)
        return column

    def is_indexed(self, model: Model, attr: str) -> bool:
        """Whether a plain index leads with the column (``index=True``, ``unique=True``,
        primary key, ``Index(...)``, ``UniqueConstraint``)."""
        column = self.column(model, attr)
        if column is None:
            return False
        if column.index or column.unique or column.primary_key:
            return True
        names = {attr, column.name}
        return any(bool(i.columns) and i.columns[0] in names for i in self.indexes_for(model))

    def has_functional_index(self, model: Model, function: str, attr: str) -> bool | None:
        """Whether an index on ``function(column)`` exists; None when it cannot be known."""
        column = self.column(model, attr)
        names = {attr} | ({column.name} if column is not None else set())
        for index in self.indexes_for(model):
            if any(f == function.lower() and c in names for f, c in index.functions):
                return True
        for ancestor in model.lineage:
            cls = self.class_facts(ancestor)
            if cls is not None and cls.table_args_dynamic:
                return None
        return False

    # Functions, sessions and engines -------------------------------------------------
    def _function_table(self) -> dict[str, FunctionFacts]:
        if self._functions is None:
            self._functions = {}
            for facts in self.files.values():
                for qualname, function in facts.orm.functions.items():
                    self._functions.setdefault(qualname, function)
            for qualname, function in self._functions.items():
                returns = function.returns
                if (
                    returns is not None
                    and returns.session_closed
                    and returns.closer
                    and self._keeps_open(returns.closer)
                ):
                    self._functions[qualname] = replace(
                        function, returns=replace(returns, session_closed=False)
                    )
            for qualname, function in self._functions.items():
                if function.returns is not None and function.returns.model.startswith(
                    DELEGATED
                ):
                    self._functions[qualname] = replace(
                        function, returns=self._delegated_returns(function.returns, 0)
                    )
        return self._functions

    def keeps_session_open(self, qualified: str | None) -> bool:
        """Whether ``with qualified() as session:`` leaves its session open when the block
        ends (see ``_keeps_open``)."""
        if not qualified:
            return False
        self._function_table()
        return self._keeps_open(qualified)

    def _keeps_open(self, closer: str) -> bool:
        """Whether ``with closer() as session:`` leaves the session open: a project
        context manager that never ends what it yields, a session a scoped_session's
        registry or a module-level name keeps (packit-service's
        ``session = singleton_session or Session()`` then ``yield session``)."""
        assert self._functions is not None
        function = self._functions.get(self.follow(closer))
        if function is None or not function.yields_from:
            return False
        for source in function.yields_from:
            kind, _, name = source.partition(":")
            if kind == "call":
                factory = self.factory(name)
                if factory is None or not factory.scoped:
                    return False
                continue
            origin = self.origin_of(name)
            if origin is None or not origin.startswith("call:"):
                return False
            made = self.session_source(origin[5:])
            if made is None or made.kind == "provider":
                return False
        return True

    def _delegated_returns(self, returns: ReturnFacts, depth: int) -> ReturnFacts | None:
        """What a function returning another project function's objects returns: that
        function's objects, the session closed or committed as the caller's is. A Query
        not run yet, or a model its instance decides, is not followed."""
        assert self._functions is not None
        callee = self._functions.get(self.follow(returns.model[len(DELEGATED) :]))
        found = callee.returns if callee is not None else None
        if found is not None and found.model.startswith(DELEGATED) and depth < 4:
            found = self._delegated_returns(found, depth + 1)
        if (
            found is None
            or found.query is not None
            or found.model.startswith((DELEGATED, SELF_MODEL))
        ):
            return None
        return replace(
            found,
            line=returns.line,
            session_closed=found.session_closed or returns.session_closed,
            committed=found.committed or returns.committed,
            factory=found.factory or returns.factory,
            pins=(),
        )

    def function(self, qualified: str | None) -> FunctionFacts | None:
        """A top-level function or a method (``app.repo.UserRepo.list``) of the project."""
        if not qualified:
            return None
        return self._function_table().get(self.follow(qualified))

    def commit_flag(self, provider: str | None) -> CommitFlag | None:
        """The parameter a session provider's commit waits on (``if commit:
        session.commit()``), which each ``with provider(...)`` call decides."""
        function = self.function(provider)
        return function.provider.commit_flag if function and function.provider else None

    def lineage(self, cls: str) -> Iterator[ClassFacts]:
        """The facts of the project class ``cls`` and of its project bases, in (about)
        method resolution order."""
        table = self._class_table()
        for owner in self.mro(cls):
            yield table[owner][0]

    def method(self, cls: str, name: str) -> FunctionFacts | None:
        """The method ``name`` an instance of the project class ``cls`` calls: its own or
        the nearest base's."""
        for owner in self.mro(cls):
            function = self.function(f"{owner}.{name}")
            if function is not None:
                return function
        return None

    def _factory_table(self) -> dict[str, FactoryFacts]:
        if self._factories is None:
            self._factories = {}
            for facts in self.files.values():
                for factory in facts.orm.factories:
                    self._factories.setdefault(factory.qualname, factory)
            self._factories.update(self._returned_factories(self._factories))
        return self._factories

    def _returned_factories(self, known: dict[str, FactoryFacts]) -> dict[str, FactoryFacts]:
        """Module-level names bound to the call of a project function that builds and
        returns a factory (an app factory's ``SessionLocal = get_sessionmaker()``), or a
        tuple holding one (``engine, SessionLocal = make_db()``)."""
        functions = self._function_table()
        if not any(f.factory is not None or f.tuple_factories for f in functions.values()):
            return {}
        found: dict[str, FactoryFacts] = {}
        for facts in self.files.values():
            for name, origin in facts.names.assigned.items():
                made: FactoryFacts | None = None
                if origin.startswith("call:"):
                    builder = functions.get(self.follow(origin[5:]))
                    made = builder.factory if builder is not None else None
                elif origin.startswith("item:"):
                    # `engine, SessionLocal = make_db()`: the factory at that position.
                    _, number, called = origin.split(":", 2)
                    builder = functions.get(self.follow(called))
                    made = (
                        builder.tuple_factories[int(number)]
                        if builder is not None and int(number) < len(builder.tuple_factories)
                        else None
                    )
                qualname = f"{facts.module}.{name}" if facts.module else name
                if made is not None and qualname not in known:
                    found[qualname] = replace(made, qualname=qualname)
        return found

    def factory(self, qualified: str | None) -> FactoryFacts | None:
        """A module-level ``sessionmaker``/``async_sessionmaker``/``scoped_session``."""
        if not qualified:
            return None
        return self._factory_table().get(self.follow(qualified))

    def engines(self) -> list[tuple[EngineFacts, FileFacts]]:
        """Every module-level engine, with its file."""
        if self._engines is None:
            self._engines = {}
            for facts in self.files.values():
                for engine in facts.orm.engines:
                    self._engines.setdefault(engine.qualname, (engine, facts))
        return list(self._engines.values())

    def engine(self, qualified: str | None) -> EngineFacts | None:
        if not qualified:
            return None
        self.engines()
        assert self._engines is not None
        entry = self._engines.get(self.follow(qualified))
        return entry[0] if entry is not None else None

    def session_source(self, qualified: str | None, depth: int = 0) -> SessionSource | None:
        """What calling ``qualified`` hands out, if a session: a factory's, ``Session``'s,
        ``AsyncSession``'s, or a project function's that returns or yields one."""
        if not qualified or depth > 4:
            return None
        if qualified in self._sources:
            return self._sources[qualified]
        found = self._session_source(qualified, depth)
        self._sources[qualified] = found
        return found

    def _session_source(self, qualified: str, depth: int) -> SessionSource | None:
        name = self.follow(qualified)
        head, _, tail = name.rpartition(".")
        if head.partition(".")[0] in ("sqlalchemy", "sqlmodel") and tail in SESSION_CLASSES:
            return SessionSource("class", tail == "AsyncSession", name)
        factory = self.factory(name)
        if factory is not None:
            expire = factory.expire_on_commit
            if factory.wraps is not None:
                wrapped = self.session_source(factory.wraps, depth + 1)
                expire = wrapped.expire_on_commit if wrapped is not None else None
            return SessionSource(
                "factory",
                factory.is_async,
                name,
                scoped=factory.scoped,
                expire_on_commit=expire,
            )
        function = self.function(name)
        if function is not None and function.provider is not None:
            provider = function.provider
            inner = self.session_source(provider.source, depth + 1)
            if inner is None:
                return None
            return SessionSource(
                "provider",
                inner.is_async if provider.is_async is None else provider.is_async,
                name,
                scoped=inner.scoped,
                expire_on_commit=inner.expire_on_commit,
                commits=provider.commits,
                managed=provider.managed,
                style=provider.style,
            )
        return None

    def imported_names(self, module: str, *, by_tests: bool = True) -> frozenset[str]:
        """The names other modules of the project import from ``module``, and those they
        read through the module itself (``import app.db as db`` then ``db.get_user()``);
        ``"*"`` when one uses the module otherwise (passes it on, ``getattr(db, name)``,
        imports it inside a function or a block) or imports all of it (``from app.db
        import *``), which reaches any of its names. Without
        ``by_tests``, what test modules import is left out: a test calling a function
        is no caller the application's input reaches."""
        if by_tests:
            if self._imported is None:
                self._imported = self._import_table(tests=True)
            table = self._imported
        else:
            if self._imported_outside_tests is None:
                self._imported_outside_tests = self._import_table(tests=False)
            table = self._imported_outside_tests
        return frozenset(table.get(self._aliases.get(module, module), ()))

    def outside_calls(self, qualified: str) -> list[CallShape] | None:
        """The calls other modules (tests aside) make of the module-level function
        ``qualified``, each as its arguments' kinds; None when one of them may use it
        otherwise: hands it on, or reads it through the module (``models.helper``)."""
        if qualified not in self._outside_calls:
            self._outside_calls[qualified] = self._calls_from_outside(qualified)
        return self._outside_calls[qualified]

    def _calls_from_outside(self, qualified: str) -> list[CallShape] | None:
        module, _, name = qualified.rpartition(".")
        module = self._aliases.get(module, module)
        found: list[CallShape] = []
        for facts in self.files.values():
            if facts.module == module or is_test_path(facts.path):
                continue
            for item in facts.orm.imports:
                source = self._aliases.get(item.module, item.module)
                if source == module and (name in item.names or "*" in item.names):
                    shapes = facts.orm.import_calls.get(qualified)
                    if shapes is None or item.in_function:
                        return None
                    found.extend(shapes)
                elif self._reaches(facts, item, module, name):
                    return None
        return found

    def _reaches(self, facts: FileFacts, item: ImportFacts, module: str, name: str) -> bool:
        """Whether the file may read ``module.name`` through a module the import binds
        (``import app.models as models``, ``from app import models``)."""
        source = self._aliases.get(item.module, item.module)
        targets = [source] if not item.names else [f"{source}.{n}" for n in item.names]
        package = self.modules.get(source)
        for position, target in enumerate(targets):
            if self._aliases.get(target, target) != module:
                continue
            if item.names and package is not None and _rebinds(package, item.names[position]):
                # `from app.models import db` where app/models/__init__.py does `from .db
                # import db`: the name the package binds (the SQLAlchemy object), not the
                # submodule of that name.
                continue
            local = item.locals[position] if position < len(item.locals) else ""
            reached = facts.orm.module_uses.get(local, ("*",)) if local else ("*",)
            if name in reached or "*" in reached:
                return True
            if PUBLIC_NAMES in reached and not name.startswith("_"):
                return True
        return False

    def _import_table(self, *, tests: bool) -> dict[str, set[str]]:
        table: dict[str, set[str]] = {}
        for facts in self.files.values():
            if not tests and is_test_path(facts.path):
                continue
            uses = facts.orm.module_uses
            for item in facts.orm.imports:
                source = self._aliases.get(item.module, item.module)
                if source == facts.module:
                    continue
                # What the file reads through the name the import binds: a module's
                # attributes (`import app.data as data`, `from app import data`).
                bound = [uses.get(local, ("*",)) if local else ("*",) for local in item.locals]
                if not item.names:
                    reached = bound[0] if bound else ("*",)
                    table.setdefault(source, set()).update(self._names_of(source, reached))
                package = self.modules.get(source)
                for position, name in enumerate(item.names):
                    table.setdefault(source, set()).add(name)
                    if name != "*" and not (package is not None and _rebinds(package, name)):
                        inner = self._aliases.get(f"{source}.{name}", f"{source}.{name}")
                        reached = bound[position] if position < len(bound) else ("*",)
                        table.setdefault(inner, set()).update(self._names_of(inner, reached))
        return table

    def _names_of(self, module: str, reached: Iterable[str]) -> set[str]:
        """``reached`` with PUBLIC_NAMES spelled out as the module's public names."""
        names = set(reached)
        if PUBLIC_NAMES in names:
            names.discard(PUBLIC_NAMES)
            bound = self.modules.get(module)
            if bound is None:
                names.add("*")
            else:
                every = (*bound.imports, *bound.assigned, *bound.defined)
                names.update(n for n in every if not n.startswith("_"))
        return names

    def sets_only_literals(self, qualified: str) -> bool:
        """Whether every ``name.set(value)`` in the project (a ContextVar's) sets a literal;
        true when nothing sets it."""
        if self._literal_sets is None:
            table: dict[str, bool] = {}
            for facts in self.files.values():
                for name, literal in facts.orm.literal_sets.items():
                    key = self.follow(name)
                    table[key] = table.get(key, True) and literal
            self._literal_sets = table
        return self._literal_sets.get(self.follow(qualified), True)

    def router_may_commit(self, qualified: str) -> bool:
        """Whether the routes of the FastAPI router or app ``qualified`` may get a
        dependency beyond their decorator's that commits: the router was made with it, or
        included (directly or through routers) with it somewhere in the project, or an app
        of the project declares it (for every route it serves)."""
        if self._committing_routers is None:
            found: set[str] = set()
            children: dict[str, set[str]] = {}
            app = False
            for facts in self.files.values():
                app = app or any(map(self.dependencies_may_commit, facts.orm.app_dependencies))
                found.update(
                    self.follow(router)
                    for router, targets in facts.orm.router_dependencies
                    if self.dependencies_may_commit(targets)
                )
                for parent, child in facts.orm.router_includes:
                    children.setdefault(self.follow(parent), set()).add(self.follow(child))
            # What a router with dependencies includes gets them too.
            pending = list(found)
            while pending:
                for child in children.get(pending.pop(), ()):
                    if child not in found:
                        found.add(child)
                        pending.append(child)
            self._committing_routers = frozenset(found)
            self._app_commits = app
        return self._app_commits or self.follow(qualified) in self._committing_routers

    def dependencies_may_commit(self, targets: Dependencies) -> bool:
        """Whether one of a ``dependencies=[...]`` list may commit the request's session:
        a project function that commits or rolls back, itself or in a function of its module
        it calls, or anything the index cannot read (a library's dependency, a class)."""
        if targets is None:
            return True
        for qualified in targets:
            function = self.function(qualified)
            if function is None or function.commits:
                return True
            module = self.module_of(function.qualname)
            if module is not None and any(
                callee is not None and callee.commits
                for callee in (self.function(f"{module}.{name}") for name in function.calls)
            ):
                return True
        return False

    def committing_names(self) -> frozenset[str]:
        """Names of the project's functions and methods that may commit: those that commit
        or roll back themselves, and those calling a function of such a name. By name, not
        by target, so a call that may reach a committing function is always among them."""
        if self._committing_names is None:
            functions = list(self._function_table().values())
            names = {f.name for f in functions if f.commits}
            grown = True
            while grown:
                grown = False
                for function in functions:
                    if function.name not in names and not function.calls.isdisjoint(names):
                        names.add(function.name)
                        grown = True
            self._committing_names = frozenset(names)
        return self._committing_names

    def flask_hooks_commit(self) -> bool:
        """Whether a Flask ``after_request``/``teardown_request``/``teardown_appcontext``
        function of the project may commit: the request's writes are committed for it."""
        if self._flask_hooks_commit is None:
            committing = self.committing_names()
            self._flask_hooks_commit = any(
                decorator.rpartition(".")[2] in _FLASK_HOOKS
                and (function.commits or not function.calls.isdisjoint(committing))
                for function in self._function_table().values()
                for decorator in function.decorators
            )
        return self._flask_hooks_commit

    def interesting_calls(self) -> frozenset[str]:
        """Call names that make a function worth a flow analysis: database methods, and
        the project's factories, session providers and functions returning ORM objects."""
        if self._interesting is None:
            names = set(_DATABASE_CALLS)
            names.update(f.qualname.rpartition(".")[2] for f in self._factory_table().values())
            for function in self._function_table().values():
                if function.returns or function.provider or function.io_call:
                    names.add(function.name)
            self._interesting = frozenset(names)
        return self._interesting

    def element_readers(self) -> frozenset[str]:
        """Names of project functions that read attributes of their arguments' elements,
        plus Pydantic's validators: what a call must be to walk query rows."""
        if self._readers is None:
            names = {f.name for f in self._function_table().values() if any(r[1] for r in f.reads)}
            names.update(("model_validate", "from_orm", "validate", "parse_obj"))
            self._readers = frozenset(names)
        return self._readers

    def worth_analysing(self, qualname: str) -> bool:
        """Whether a function (module-qualified) calls anything a session pitfall is made
        of; unknown functions (nested ones) are always worth it."""
        function = self._function_table().get(qualname)
        if function is None:
            return True
        return not function.calls.isdisjoint(self.interesting_calls())

    def is_disposed(self, engine: str) -> bool | None:
        """Whether any file calls ``dispose()`` on the engine; None if the receiver of
        some ``dispose`` cannot be named (it might be that engine)."""
        target = self.follow(engine)
        unknown = False
        for facts in self.files.values():
            for receiver in facts.orm.disposed:
                if receiver.startswith("?"):
                    unknown = True
                elif self.follow(receiver) == target:
                    return True
        return None if unknown else False

    # Serializers ---------------------------------------------------------------------
    def fields_of(self, qualname: str) -> dict[str, FieldFacts]:
        """Annotated fields of a (Pydantic/SQLModel) class and its project bases."""
        found: dict[str, FieldFacts] = {}
        for ancestor in reversed(self.mro(qualname)):
            cls = self.class_facts(ancestor)
            if cls is not None:
                found.update(cls.fields)
        return found

    def is_schema(self, qualname: str) -> bool:
        """Whether a class is a marshmallow schema (marshmallow-sqlalchemy's and
        Flask-Marshmallow's ``ma.Schema``/``ma.SQLAlchemyAutoSchema`` included)."""
        for ancestor in self.mro(qualname):
            cls = self.class_facts(ancestor)
            if cls is None:
                continue
            for base in cls.bases:
                followed = self.follow(base)
                if followed.startswith(_SCHEMA_MODULES):
                    return True
                owner = followed.rpartition(".")[0]
                origin = self.origin_of(owner) if owner else None
                if origin is not None and origin.startswith("call:flask_marshmallow"):
                    return True
        return False

    def schema_model(self, qualname: str) -> tuple[str | None, bool]:
        """The model a marshmallow-sqlalchemy schema serializes (its ``Meta.model``) and
        whether all its relationships are fields (``include_relationships``)."""
        for ancestor in self.mro(qualname):
            cls = self.class_facts(ancestor)
            if cls is not None and cls.schema_model is not None:
                return self.follow(cls.schema_model), cls.include_relationships
        return None, False

    def reads_from_attributes(self, qualname: str) -> bool:
        """Whether a Pydantic model reads attributes off objects (``from_attributes``,
        ``orm_mode``, or a SQLModel model, which sets it)."""
        for ancestor in self.mro(qualname):
            cls = self.class_facts(ancestor)
            if cls is None:
                continue
            if cls.from_attributes is not None:
                return cls.from_attributes
            if any(self.follow(b) in _SQLMODEL_ROOTS for b in cls.bases if b != "?"):
                return True
        return False
