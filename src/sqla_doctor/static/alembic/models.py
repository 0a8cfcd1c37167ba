"""A small, self-contained model detector: which modules map classes, on which metadata,
to which tables and columns. Read with ``ast``; nothing is imported.

Declarative bases: subclasses of ``DeclarativeBase``/``DeclarativeBaseNoMeta``, results of
``declarative_base()`` and ``registry().generate_base()``, Flask-SQLAlchemy's ``db.Model``,
SQLModel (``table=True`` classes only) and ``@registry.mapped`` classes. A mapped class
derives from one of them through any chain of project classes and aliases, is not
``__abstract__``, and has a table: ``__tablename__``, ``__table__``, SQLModel's or
Flask-SQLAlchemy's generated name, or its parent's (single-table inheritance).
``Table("name", metadata, Column(...))`` objects count too.

Each base and ``MetaData`` is identified by a *metadata key* so that ``Base.metadata``,
``metadata`` passed to ``declarative_base(metadata=...)`` and ``registry(metadata=...)``
resolve to the same thing.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqla_doctor.static.index.models import is_type_checking
from sqla_doctor.static.index.names import NameResolver

_ROOT_BASES = frozenset({"DeclarativeBase", "DeclarativeBaseNoMeta"})
_FLASK_SQLALCHEMY = frozenset(
    {"flask_sqlalchemy.SQLAlchemy", "flask_sqlalchemy.extension.SQLAlchemy"}
)
_BASE_FACTORIES = frozenset({"declarative_base", "generate_base"})
_COLUMN_CALLS = frozenset({"Column", "mapped_column"})
_WRAPPERS = frozenset({"deferred", "column_property", "query_expression"})
_NOT_COLUMNS = frozenset(
    {
        "relationship",
        "Relationship",
        "synonym",
        "association_proxy",
        "composite",
        "backref",
        "dynamic_loader",
        "hybrid_property",
        "declared_attr",
    }
)
# Cheap pre-filter: a module that mentions none of these maps nothing.
MODEL_HINT = re.compile(
    r"__tablename__|__table__|table\s*=\s*True|DeclarativeBase|declarative_base|generate_base"
    r"|\.Model\b|\bTable\(|registry|\bModel\b|SQLAlchemy\(|MetaData\("
)


@dataclass
class ClassFacts:
    module: str
    name: str
    path: str
    line: int
    bases: list[str]  # qualified (None-resolving bases are dropped)
    unresolved_bases: int = 0
    table_true: bool = False
    tablename: str | None = None
    schema: str | None = None  # `__table_args__`'s "schema", when written in the class
    has_table_attr: bool = False
    table_from_attr: str | None = None
    abstract: bool = False
    columns: dict[str, str] = field(default_factory=dict)  # attribute → column name
    metadata_attr: str | None = None  # `metadata = X` in the class body (qualified X)
    mapped_by: str | None = None  # `@reg.mapped` → qualified reg
    column_call: str | None = None  # how its body writes a column (ModuleModels.column_call)

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}" if self.module else self.name


@dataclass
class TableFacts:
    module: str
    path: str
    line: int
    name: str
    metadata: str | None  # metadata key
    columns: set[str] = field(default_factory=set)
    column_call: str | None = None  # its module's spelling (ModuleModels.column_call)


@dataclass
class MappedClass:
    qualname: str
    module: str
    path: str
    line: int
    metadata: str | None
    table: str | None
    columns: set[str]
    schema: str | None = None
    column_call: str | None = None  # its module's spelling (ModuleModels.column_call)


@dataclass
class ModuleModels:
    """What one module contributes: classes, tables, and name → call origins."""

    module: str
    path: str
    classes: list[ClassFacts] = field(default_factory=list)
    # (line, table name, qualified metadata expression, column names, how its columns
    # are written)
    tables: list[tuple[int, str | None, str | None, set[str], str | None]] = field(
        default_factory=list
    )
    # module-level name → (kind, argument) for bases, registries, metadata objects
    factories: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    # How the module writes a column (`sa.Column`, `db.Column`, `mapped_column`), for
    # advice in its own style.
    column_call: str | None = None


def camel_to_snake(name: str) -> str:
    """Flask-SQLAlchemy 3's generated ``__tablename__``."""
    name = re.sub(r"((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))", r"_\1", name)
    return name.lower().lstrip("_")


def _const_str(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def scan_module(module: str, path: str, tree: ast.Module, resolver: NameResolver) -> ModuleModels:
    """Collect classes, tables and base/metadata factories defined at a module's top level."""
    result = ModuleModels(module=module, path=path)
    prefix = f"{module}." if module else ""
    for stmt in _top_level(tree.body):
        if isinstance(stmt, ast.ClassDef):
            result.classes.append(_class_facts(stmt, module, path, resolver))
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            value = stmt.value
            if isinstance(value, ast.Call):
                factory = _factory(value, resolver)
                if factory is not None:
                    for name in names:
                        result.factories[prefix + name] = factory
                table = _table_call(value, resolver)
                if table is not None:
                    table_name, metadata, columns = table
                    qualified = resolver.qualify(metadata) if metadata is not None else None
                    spelled = _column_call(value, resolver)
                    result.tables.append((stmt.lineno, table_name, qualified, columns, spelled))
        elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            table = _table_call(stmt.value, resolver)
            if table is not None:
                table_name, metadata, columns = table
                qualified = resolver.qualify(metadata) if metadata is not None else None
                spelled = _column_call(stmt.value, resolver)
                result.tables.append((stmt.lineno, table_name, qualified, columns, spelled))
    result.column_call = _column_call(tree, resolver)
    return result


def _column_call(node: ast.AST, resolver: NameResolver) -> str | None:
    """The first Column/mapped_column callee in ``node``, as written (``sa.Column``)."""
    return next(
        (
            ast.unparse(sub.func)
            for sub in ast.walk(node)
            if isinstance(sub, ast.Call) and resolver.sqla_name(sub.func) in _COLUMN_CALLS
        ),
        None,
    )


def _top_level(body: list[ast.stmt]) -> Iterable[ast.stmt]:
    for stmt in body:
        if isinstance(stmt, ast.If):
            if is_type_checking(stmt.test):
                yield from _top_level(stmt.orelse)
                continue
            yield from _top_level(stmt.body)
            yield from _top_level(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            yield from _top_level(stmt.body)
            for handler in stmt.handlers:
                yield from _top_level(handler.body)
            yield from _top_level(stmt.orelse)
        else:
            yield stmt


def _factory(call: ast.Call, resolver: NameResolver) -> tuple[str, str | None] | None:
    """``declarative_base(metadata=m)`` → ("base", "m"); ``MetaData()`` → ("metadata", None);
    ``registry(metadata=m)`` → ("registry", "m"); ``reg.generate_base()`` → ("base-of", reg);
    ``SQLAlchemy()`` → ("flask", None)."""
    name = resolver.sqla_name(call.func)
    qualified = resolver.qualify(call.func) or ""

    def metadata_argument() -> str | None:
        value = _keyword(call, "metadata")
        return resolver.qualify(value) if value is not None else None

    if name == "declarative_base":
        return ("base", metadata_argument())
    if name == "MetaData":
        return ("metadata", None)
    if name == "registry":
        return ("registry", metadata_argument())
    if name == "generate_base" and isinstance(call.func, ast.Attribute):
        return ("base-of", resolver.qualify(call.func.value))
    if qualified in _FLASK_SQLALCHEMY:
        return ("flask", None)
    if qualified and "." in qualified:
        # `db = RedashSQLAlchemy(...)`: an instance of a project class, maybe a subclass.
        return ("call", qualified)
    return None


def _table_call(
    call: ast.Call, resolver: NameResolver
) -> tuple[str | None, ast.expr | None, set[str]] | None:
    """``Table("name", metadata, Column("a"), ...)`` → (name, metadata expr, columns)."""
    if resolver.sqla_name(call.func) != "Table" or len(call.args) < 2:
        return None
    name = _const_str(call.args[0])
    columns = set()
    for arg in call.args[2:]:
        if isinstance(arg, ast.Call) and resolver.sqla_name(arg.func) == "Column" and arg.args:
            column = _const_str(arg.args[0])
            if column:
                columns.add(column)
    return name, call.args[1], columns


def _class_facts(node: ast.ClassDef, module: str, path: str, resolver: NameResolver) -> ClassFacts:
    bases = []
    unresolved = 0
    for base in node.bases:
        qualified = resolver.qualify(base)
        if qualified is None:
            unresolved += 1
        else:
            bases.append(qualified)
    facts = ClassFacts(
        module=module,
        name=node.name,
        path=path,
        line=node.lineno,
        bases=bases,
        unresolved_bases=unresolved,
        column_call=_column_call(node, resolver),
    )
    for keyword in node.keywords:
        if keyword.arg == "table" and isinstance(keyword.value, ast.Constant):
            facts.table_true = keyword.value.value is True
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr in (
            "mapped",
            "mapped_as_dataclass",
            "as_declarative_base",
        ):
            facts.mapped_by = resolver.qualify(target.value)
        elif isinstance(target, (ast.Name, ast.Attribute)) and resolver.sqla_name(target) == (
            "as_declarative"
        ):
            facts.mapped_by = "as_declarative"
    # SQLModel fields: every annotated attribute of a SQLModel class (table or base).
    sqlmodel = facts.table_true or any(b.split(".")[0] == "sqlmodel" for b in bases)
    for stmt in node.body:
        _class_statement(stmt, facts, resolver, sqlmodel)
    return facts


def _class_statement(
    stmt: ast.stmt, facts: ClassFacts, resolver: NameResolver, sqlmodel: bool
) -> None:
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            if isinstance(target, ast.Name):
                _attribute(target.id, None, stmt.value, facts, resolver, sqlmodel)
    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        _attribute(stmt.target.id, stmt.annotation, stmt.value, facts, resolver, sqlmodel)


def _attribute(
    name: str,
    annotation: ast.expr | None,
    value: ast.expr | None,
    facts: ClassFacts,
    resolver: NameResolver,
    sqlmodel: bool,
) -> None:
    if name == "__tablename__":
        facts.tablename = _const_str(value)
        return
    if name == "__table_args__":
        options = value
        if isinstance(value, (ast.Tuple, ast.List)) and value.elts:
            options = value.elts[-1]  # (Index(...), {"schema": "x"})
        if isinstance(options, ast.Dict):
            for key, item in zip(options.keys, options.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "schema":
                    facts.schema = _const_str(item)
        return
    if name == "__abstract__":
        facts.abstract = isinstance(value, ast.Constant) and value.value is True
        return
    if name == "__table__":
        facts.has_table_attr = True
        if isinstance(value, ast.Call):
            table = _table_call(value, resolver)
            if table is not None:
                facts.table_from_attr = table[0]
                for column in table[2]:
                    facts.columns[column] = column
        return
    if name == "metadata" and value is not None:
        facts.metadata_attr = resolver.qualify(value) or (
            "metadata-call" if isinstance(value, ast.Call) else None
        )
        return
    if name.startswith("__"):
        return
    column_name = _column_name(name, annotation, value, resolver, sqlmodel)
    if column_name is not None:
        facts.columns[name] = column_name


def _column_name(
    attribute: str,
    annotation: ast.expr | None,
    value: ast.expr | None,
    resolver: NameResolver,
    sqlmodel: bool,
) -> str | None:
    call = value if isinstance(value, ast.Call) else None
    if call is not None:
        called = resolver.sqla_name(call.func) or (
            call.func.id if isinstance(call.func, ast.Name) else None
        )
        if called in _WRAPPERS and call.args and isinstance(call.args[0], ast.Call):
            call = call.args[0]
            called = resolver.sqla_name(call.func)
        if called in _COLUMN_CALLS:
            explicit = _const_str(call.args[0]) if call.args else None
            return explicit or _const_str(_keyword(call, "name")) or attribute
        if called in _NOT_COLUMNS:
            return None
        if sqlmodel and annotation is not None:
            sa_column = _keyword(call, "sa_column") if called == "Field" else None
            if isinstance(sa_column, ast.Call) and sa_column.args:
                return _const_str(sa_column.args[0]) or attribute
            return attribute
        return None
    if annotation is None:
        return None
    text = ast.unparse(annotation)
    if "ClassVar" in text:
        return None
    if text.startswith(("Mapped[", "orm.Mapped[", "sa.orm.Mapped[")):
        inner = text[text.index("[") + 1 : -1].strip().strip("'\"")
        # `Mapped[list["Book"]]` without relationship() would not map; not a column.
        if inner.startswith(("list[", "List[", "set[", "Set[", "WriteOnlyMapped")):
            return None
        return attribute
    if sqlmodel:
        return attribute
    return None


class ModelIndex:
    """Mapped classes and tables of a set of modules, resolved across them."""

    def __init__(self, modules: Iterable[ModuleModels]) -> None:
        self.modules = {m.module: m for m in modules}
        self.classes: dict[str, ClassFacts] = {}
        self.factories: dict[str, tuple[str, str | None]] = {}
        for module in self.modules.values():
            for cls in module.classes:
                self.classes.setdefault(cls.qualname, cls)
            self.factories.update(module.factories)
        self._keys: dict[str, str | None] = {}

    # Metadata keys ------------------------------------------------------------------
    def metadata_key(self, qualified: str | None, depth: int = 0) -> str | None:
        """The identity of the MetaData behind a base, registry, db, or MetaData name."""
        if qualified is None or depth > 20:
            return None
        if qualified in self._keys:
            return self._keys[qualified]
        self._keys[qualified] = None  # cycle guard
        key = self._metadata_key(qualified, depth)
        self._keys[qualified] = key
        return key

    def _metadata_key(self, qualified: str, depth: int) -> str | None:
        # `metadata = MetaData()` is itself named "metadata": known names first.
        if qualified.endswith(".metadata") and qualified not in self.factories:
            return self.metadata_key(qualified[: -len(".metadata")], depth + 1)
        if qualified.split(".")[0] == "sqlmodel" and qualified.endswith("SQLModel"):
            return "sqlmodel"
        if qualified.endswith(".Model") and self._is_flask(qualified[: -len(".Model")]):
            return f"flask:{qualified[: -len('.Model')]}"
        factory = self.factories.get(qualified)
        if factory is not None:
            kind, argument = factory
            if kind == "metadata":
                return f"metadata:{qualified}"
            if kind in ("base", "registry"):
                if argument is not None:
                    return self.metadata_key(argument, depth + 1) or f"metadata:{argument}"
                return f"{kind}:{qualified}"
            if kind == "base-of":
                return self.metadata_key(argument, depth + 1)
            if kind == "flask" or self._is_flask(qualified):
                return f"flask:{qualified}"
        cls = self.classes.get(qualified)
        if cls is not None:
            if cls.metadata_attr is not None:
                if cls.metadata_attr == "metadata-call":
                    return f"base:{qualified}"
                return self.metadata_key(cls.metadata_attr, depth + 1) or (
                    f"metadata:{cls.metadata_attr}"
                )
            if cls.mapped_by is not None and cls.mapped_by != "as_declarative":
                return self.metadata_key(cls.mapped_by, depth + 1)
            if cls.mapped_by == "as_declarative" or any(
                b.rpartition(".")[2] in _ROOT_BASES and b.split(".")[0] == "sqlalchemy"
                for b in cls.bases
            ):
                return f"base:{qualified}"
            for base in cls.bases:
                key = self.metadata_key(base, depth + 1)
                if key is not None:
                    return key
        return None

    def _is_flask(self, instance: str) -> bool:
        """``db``: a Flask-SQLAlchemy extension, or an instance of a project subclass of it."""
        kind, argument = self.factories.get(instance, ("", None))
        if kind == "flask":
            return True
        if kind != "call" or argument is None:
            return False
        seen: set[str] = set()
        stack = [argument]
        while stack:
            name = stack.pop()
            if name in _FLASK_SQLALCHEMY:
                return True
            cls = self.classes.get(name)
            if cls is not None and name not in seen:
                seen.add(name)
                stack.extend(cls.bases)
        return False

    # Mapped classes -----------------------------------------------------------------
    def mapped_classes(self, extra_bases: Iterable[str] = ()) -> list[MappedClass]:
        """Every mapped class with its metadata key, table and columns.

        ``extra_bases`` are names used as ``X.metadata`` by env.py that are declarative
        even when their definition lies outside the scanned modules.
        """
        extra = {b: f"base:{b}" for b in extra_bases}
        result = []
        for cls in self.classes.values():
            key = self._class_key(cls, extra)
            if key is None or cls.abstract or self._is_root_base(cls):
                continue
            table = self._table_of(cls, extra)
            if table is None and not cls.columns:
                continue
            result.append(
                MappedClass(
                    qualname=cls.qualname,
                    module=cls.module,
                    path=cls.path,
                    line=cls.line,
                    metadata=key,
                    table=table,
                    columns=set(self._columns(cls)),
                    schema=self._schema_of(cls),
                    # A class that declares no column of its own (a subclass, columns
                    # from mixins): its module's spelling.
                    column_call=cls.column_call or self.modules[cls.module].column_call,
                )
            )
        return result

    def _class_key(self, cls: ClassFacts, extra: dict[str, str]) -> str | None:
        for base in cls.bases:
            if base in extra:
                return extra[base]
        if cls.mapped_by is not None and cls.mapped_by != "as_declarative":
            return self.metadata_key(cls.mapped_by)
        for base in cls.bases:
            key = self.metadata_key(base)
            if key is not None:
                if key == "sqlmodel" and not cls.table_true:
                    return None
                return key
            parent = self.classes.get(base)
            if parent is not None:
                key = self._class_key(parent, extra)
                if key is not None:
                    return key
        return None

    def _is_root_base(self, cls: ClassFacts) -> bool:
        """``class Base(DeclarativeBase)``: a base, not a mapped class."""
        return any(
            b.rpartition(".")[2] in _ROOT_BASES and b.split(".")[0] == "sqlalchemy"
            for b in cls.bases
        )

    def _table_of(self, cls: ClassFacts, extra: dict[str, str]) -> str | None:
        if self._is_root_base(cls):
            return None
        if cls.tablename is not None:
            return cls.tablename
        if cls.table_from_attr is not None:
            return cls.table_from_attr
        if cls.has_table_attr:
            return None
        key = self._class_key(cls, extra)
        if key == "sqlmodel" and cls.table_true:
            return cls.name.lower()
        # Single-table inheritance: a mapped parent's table.
        for base in cls.bases:
            parent = self.classes.get(base)
            if parent is not None and self._class_key(parent, extra) is not None:
                table = self._table_of(parent, extra)
                if table is not None:
                    return table
        if key is not None and key.startswith("flask:"):
            return camel_to_snake(cls.name)
        return None

    def _schema_of(self, cls: ClassFacts, depth: int = 0) -> str | None:
        """The schema of the class's table: its own, or (single-table inheritance) its
        mapped parent's."""
        if cls.tablename is not None or cls.has_table_attr or depth > 20:
            return cls.schema
        for base in cls.bases:
            parent = self.classes.get(base)
            if parent is not None:
                return self._schema_of(parent, depth + 1)
        return cls.schema

    def _columns(self, cls: ClassFacts, depth: int = 0) -> Iterable[str]:
        yield from cls.columns.values()
        if depth > 20:
            return
        for base in cls.bases:
            parent = self.classes.get(base)
            if parent is not None:
                yield from self._columns(parent, depth + 1)

    def tables(self) -> list[TableFacts]:
        found = []
        for module in self.modules.values():
            for line, name, metadata, columns, spelled in module.tables:
                if name is not None:
                    key = self.metadata_key(metadata)
                    found.append(
                        TableFacts(
                            module.module, module.path, line, name, key, columns,
                            spelled or module.column_call,
                        )
                    )
        return found
