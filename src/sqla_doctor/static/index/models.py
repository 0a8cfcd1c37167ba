"""Mapped classes as one file declares them: columns, relationships, indexes, validators.

Extraction reads class bodies only (they are small); everything that depends on other
modules (which base is declarative, what a string target names, which table a foreign key
points at) is left as qualified names and strings, and resolved by the project index.
Every fact is a plain picklable dataclass.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqla_doctor.static.index.names import SQLA_ROOTS, DeferringResolver, NameResolver

# `Mapped[...]` and its variants; the write-only and dynamic ones fix the loader.
_MAPPED_WRAPPERS = {"Mapped": None, "WriteOnlyMapped": "write_only", "DynamicMapped": "dynamic"}
_COLLECTION_TYPES = frozenset(
    {
        "list",
        "List",
        "set",
        "Set",
        "frozenset",
        "FrozenSet",
        "Sequence",
        "MutableSequence",
        "Collection",
        "AbstractSet",
        "MutableSet",
        "Iterable",
        "tuple",
        "Tuple",
    }
)
_KEYED_COLLECTIONS = frozenset({"dict", "Dict", "Mapping", "MutableMapping"})
_OPTIONAL_TYPES = frozenset({"Optional"})
_COLUMN_CALLS = frozenset({"mapped_column", "Column"})
_RELATIONSHIP_CALLS = frozenset({"relationship", "relation", "dynamic_loader"})
_OTHER_MAPPED_CALLS = frozenset(
    {"column_property", "synonym", "composite", "deferred", "query_expression", "association_proxy"}
)
# `lazy=` literals other than strings, as relationship() reads them.
_LAZY_LITERALS: dict[object, str] = {True: "select", False: "joined", None: "noload"}
_TEXT_FUNCTION = re.compile(r"^\s*(\w+)\s*\(\s*\"?(\w+)\"?\s*(?:\)|,)")
# A cast in an index's SQL: `CAST(created_at AS DATE)`, `(created_at::date)`.
_SQL_CAST = re.compile(
    r"\bCAST\s*\(\s*\"?(\w+)\"?\s+AS\b|\(\s*\"?(\w+)\"?\s*::", re.IGNORECASE
)


def sql_casts(sql: str) -> list[tuple[str, str]]:
    """("cast", column) for each cast of a column in an index's SQL."""
    return [("cast", a or b) for a, b in _SQL_CAST.findall(sql)]


@dataclass(frozen=True)
class ForeignKeyRef:
    """Where a foreign key points: ``"users.id"`` or ``User.id`` (resolved later)."""

    table: str | None = None
    column: str | None = None
    model: str | None = None
    attr: str | None = None
    ondelete: str | None = None  # the database's own ON DELETE action

    @classmethod
    def from_string(cls, spec: str, ondelete: str | None = None) -> ForeignKeyRef:
        parts = spec.split(".")
        if len(parts) >= 2:
            return cls(table=parts[-2], column=parts[-1], ondelete=ondelete)
        return cls(table=spec or None, ondelete=ondelete)


@dataclass
class ColumnFacts:
    """A mapped column: ``mapped_column()``, ``Column()``, a bare ``Mapped[int]`` or a
    SQLModel field."""

    attr: str
    name: str
    line: int
    primary_key: bool = False
    index: bool = False
    unique: bool = False
    foreign_keys: tuple[ForeignKeyRef, ...] = ()
    python_default: bool = False
    server_default: bool = False
    via: str | None = None  # `db` of `db.Column`, to be confirmed as Flask-SQLAlchemy's
    # `id: Mapped[intpk]`: the type alias (qualified) whose `Annotated[...,
    # mapped_column(...)]` SQLAlchemy merges into this column.
    type_alias: str | None = None


@dataclass
class RelationshipFacts:
    """A ``relationship()`` (or SQLModel ``Relationship()``) as written."""

    attr: str
    line: int
    col: int = 0
    end_line: int = 0
    end_col: int = 0
    # Qualified name when written as a class (``Order``, ``lambda: Order``), else the
    # string as written (``"Order"``, ``"app.models.Order"``).
    target: str | None = None
    target_is_string: bool = False
    # True: a collection, False: a scalar, None: to be inferred from the foreign keys.
    collection: bool | None = None
    lazy: str | None = None  # None: the default ("select"); "?": not a literal
    secondary: str | None = None  # "" when given but not a plain name or string
    back_populates: str | None = None
    backref: str | None = None
    backref_lazy: str | None = None
    backref_collection: bool | None = None
    explicit_join: bool = False  # primaryjoin / foreign_keys / remote_side given
    # `remote_side=` given, or `primaryjoin=`: a self-referential one decides its
    # direction by them (without either it is one-to-many).
    remote_side: bool = False
    primaryjoin: bool = False
    # The classes whose columns `foreign_keys=` (or `foreign()` in `primaryjoin=`) names,
    # as written: "" for the class itself (`cls.owner_id` in a `declared_attr`, a bare
    # column name in the class body), "User" for `User.id`, "?" when not readable; None
    # when neither is given.
    foreign_key_owners: tuple[str, ...] | None = None
    viewonly: bool = False
    cascade: str | None = None
    passive_deletes: bool = False
    incomplete: bool = False  # **kwargs or a non-literal we could not read
    via: str | None = None  # `db` of `db.relationship`, to be confirmed


@dataclass
class IndexFacts:
    """An index: plain columns and functional parts such as ``lower(email)``."""

    line: int
    name: str | None = None
    columns: tuple[str, ...] = ()
    functions: tuple[tuple[str, str], ...] = ()  # (function, column) lowercased function
    unique: bool = False
    # Model (or `Table` variable) of a module-level ``Index("ix", func.lower(User.email))``.
    owner: str | None = None
    table: str | None = None  # table for migrations' ``op.create_index`` and raw DDL


@dataclass
class FieldFacts:
    """A class-level annotated field (for Pydantic/SQLModel serializers)."""

    name: str
    target: str | None = None  # the class a nested field refers to, if any
    target_is_string: bool = False


@dataclass
class ClassFacts:
    """One top-level class, mapped or not (bases decide, in the project index)."""

    name: str
    qualname: str
    line: int
    col: int = 0
    bases: tuple[str, ...] = ()  # qualified; "?" for what cannot be named
    # Classes it hands its bases (`Repository[User]`, `model = User`, `super().__init__(
    # session, User)`), qualified: a generic repository's model is among them.
    type_args: tuple[str, ...] = ()
    # What its instances hold: `self.products = SqlAlchemyRepository(self.session)` in a
    # method, or `products: AbstractRepository` in the body (attribute → class, qualified).
    held: dict[str, str] = field(default_factory=dict)
    # Its `__enter__` (`__aenter__`) returns the instance (`return self`, or a base's
    # `return super().__enter__()`); None where it defines none.
    enters_self: bool | None = None
    decorators: tuple[str, ...] = ()
    table_kw: bool = False  # SQLModel's `table=True`
    metaclass: str | None = None
    tablename: str | None = None
    tablename_dynamic: bool = False
    # A `@declared_attr` `__tablename__` made from the class name: "name" for
    # `cls.__name__`, "lower" for `cls.__name__.lower()`; the class using it is named.
    tablename_from_class: str | None = None
    abstract: bool = False
    has_table: bool = False
    table_columns_known: bool = True
    columns: dict[str, ColumnFacts] = field(default_factory=dict)
    relationships: dict[str, RelationshipFacts] = field(default_factory=dict)
    other_attrs: set[str] = field(default_factory=set)
    # Class attributes: whether the body fixes each one to a literal (see class_literals).
    literals: dict[str, bool] = field(default_factory=dict)
    indexes: list[IndexFacts] = field(default_factory=list)
    table_args_dynamic: bool = False
    fk_constraints: list[tuple[tuple[str, ...], ForeignKeyRef]] = field(default_factory=list)
    validators: dict[str, str] = field(default_factory=dict)  # attribute → method
    properties: set[str] = field(default_factory=set)
    methods: set[str] = field(default_factory=set)
    fields: dict[str, FieldFacts] = field(default_factory=dict)
    from_attributes: bool | None = None
    declared_attr_members: bool = False
    # A marshmallow schema's `class Meta:` (marshmallow-sqlalchemy): the model it
    # serializes, and whether every relationship of it is a field.
    schema_model: str | None = None
    include_relationships: bool = False
    # A TypeDecorator's `impl = sa.DateTime` (or `= String(36)`), as written: the
    # column type it stands for in the database.
    impl: str | None = None
    # Flask-SQLAlchemy's `query_class = ...` may define its own `get()` (a different
    # signature, a filter added): then `Model.query.get()` is the project's method.
    query_class_get: bool = False
    # `__exit__` commits (`self.commit()`): a Session subclass whose `with` block commits.
    exit_commits: bool = False


@dataclass
class ListenerFacts:
    """``event.listen(target, "identifier", fn)`` or ``@event.listens_for(...)``."""

    target: str  # qualified class, "mapper" for every mapper, "session" for sessions
    identifier: str
    line: int
    attr: str | None = None  # for attribute events (`User.email`, "set")
    propagate: bool = False
    function: str | None = None  # the handler's name when known
    # The attributes whose change the handler acts on, when its body does nothing
    # otherwise (`if inspect(target).attrs.email.history.has_changes(): ...`); () for any.
    watches: tuple[str, ...] = ()
    # The models whose rows the handler bulk-deletes, when that is all it does (in its
    # body, or a function it defines there, e.g. one registered for `after_flush`).
    deletes: tuple[str, ...] = ()


@dataclass
class ImperativeFacts:
    """``registry.map_imperatively(User, user_table, properties={...})`` (best effort)."""

    cls: str
    line: int
    table: str | None = None
    table_ref: str | None = None  # the `Table` variable, qualified (another module's too)
    registry: str | None = None  # the `registry` it is mapped by, qualified
    relationships: dict[str, RelationshipFacts] = field(default_factory=dict)


@dataclass
class TableFacts:
    """A module-level ``Table("name", metadata, Column(...), ...)``."""

    qualname: str
    name: str
    line: int
    columns: dict[str, ColumnFacts] = field(default_factory=dict)
    fk_constraints: list[tuple[tuple[str, ...], ForeignKeyRef]] = field(default_factory=list)
    # Every column and foreign key was read (no `*columns`, no reflection, no helper
    # making columns, no foreign key to a computed target).
    complete: bool = True


# Helpers -----------------------------------------------------------------------------
def literal_str(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def literal_bool(node: ast.AST | None) -> bool | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return node.value
    return None


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def has_star_kwargs(call: ast.Call) -> bool:
    return any(kw.arg is None for kw in call.keywords) or any(
        isinstance(a, ast.Starred) for a in call.args
    )


def is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``, as an ``if`` test."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


# Calls that import modules named at run time (by the last name of the callee): what a
# module calling one imports is unknown.
DYNAMIC_IMPORT_CALLS = frozenset(
    {
        "import_module",
        "__import__",
        "walk_packages",
        "iter_modules",
        "spec_from_file_location",
        "autodiscover_modules",
        "autodiscover",
    }
)


def call_tail(func: ast.expr) -> str | None:
    """The last name of a callee as written: ``all`` for ``q.all()``, ``sorted``."""
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def dotted(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def parse_annotation(node: ast.expr | None) -> ast.expr | None:
    """A string annotation parsed into an expression (``"List[Order]"``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            return ast.parse(node.value.strip(), mode="eval").body
        except SyntaxError:
            return None
    return node


def _type_head(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def mapped_wrapper(annotation: ast.expr | None) -> tuple[str | None, ast.expr | None, bool]:
    """(loader fixed by the wrapper, inner type, whether it is ``Mapped[...]`` at all)."""
    annotation = parse_annotation(annotation)
    if isinstance(annotation, ast.Subscript):
        head = _type_head(annotation.value)
        if head in _MAPPED_WRAPPERS:
            return _MAPPED_WRAPPERS[head], parse_annotation(annotation.slice), True
    return None, None, False


def target_of_type(node: ast.expr | None) -> tuple[ast.expr | None, bool | None]:
    """The class a relationship annotation names, and whether it is a collection."""
    node = parse_annotation(node)
    if node is None:
        return None, None
    if isinstance(node, ast.Subscript):
        head = _type_head(node.value)
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head in _COLLECTION_TYPES and args:
            inner, _ = target_of_type(args[0])
            return inner, True
        if head in _KEYED_COLLECTIONS and args:
            inner, _ = target_of_type(args[-1])
            return inner, True
        if head in _OPTIONAL_TYPES and args:
            inner, _ = target_of_type(args[0])
            return inner, False
        if head == "Union":
            rest = [a for a in args if not _is_none(a)]
            if len(rest) == 1:
                inner, _ = target_of_type(rest[0])
                return inner, False
        return None, None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        sides = [s for s in (node.left, node.right) if not _is_none(s)]
        if len(sides) == 1:
            inner, _ = target_of_type(sides[0])
            return inner, False
        return None, None
    if isinstance(node, (ast.Name, ast.Attribute, ast.Constant)):
        return node, False
    return None, None


def _is_none(node: ast.expr) -> bool:
    return (isinstance(node, ast.Constant) and node.value is None) or (
        isinstance(node, ast.Name) and node.id == "None"
    )


def class_ref(resolver: NameResolver, node: ast.expr | None) -> tuple[str | None, bool]:
    """(name, is_string) for a class reference: ``Order``, ``"Order"``, ``lambda: Order``."""
    if node is None:
        return None, False
    if isinstance(node, ast.Lambda):
        return class_ref(resolver, node.body)
    text = literal_str(node)
    if text is not None:
        text = text.strip()
        parsed = parse_annotation(node)
        if isinstance(parsed, (ast.Name, ast.Attribute)):
            return dotted(parsed) or text, True
        return (text or None), True
    if isinstance(node, (ast.Name, ast.Attribute)):
        qualified = resolver.qualify(node)
        if qualified is not None:
            return qualified, False
        return dotted(node), True
    return None, False


def lazy_value(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return node.value
        if node.value in _LAZY_LITERALS:
            return _LAZY_LITERALS[node.value]
    return "?"


def _fk_ref(
    resolver: NameResolver, node: ast.expr, ondelete: str | None = None
) -> ForeignKeyRef | None:
    text = literal_str(node)
    if text is not None:
        return ForeignKeyRef.from_string(text, ondelete)
    if isinstance(node, ast.Attribute):
        # `ForeignKey(User.id)` or `ForeignKey(users.c.id)`.
        owner = node.value
        if isinstance(owner, ast.Attribute) and owner.attr == "c":
            qualified = resolver.qualify(owner.value)
            return ForeignKeyRef(
                model=qualified, attr=node.attr, column=node.attr, ondelete=ondelete
            )
        qualified = resolver.qualify(owner)
        return ForeignKeyRef(model=qualified, attr=node.attr, column=node.attr, ondelete=ondelete)
    return None


def annotated_column(resolver: NameResolver, value: ast.expr) -> ColumnFacts | None:
    """The column of a type alias ``Annotated[int, mapped_column(primary_key=True)]``."""
    if not isinstance(value, ast.Subscript) or _type_head(value.value) != "Annotated":
        return None
    if not isinstance(value.slice, ast.Tuple):
        return None
    for item in value.slice.elts[1:]:
        if isinstance(item, ast.Call) and resolver.sqla_name(item.func) in _COLUMN_CALLS:
            return column_facts(resolver, "", item, item.lineno)
    return None


def _alias_of(resolver: NameResolver, annotation: ast.expr | None) -> str | None:
    """``intpk`` of ``Mapped[intpk]``, qualified, when it names something."""
    _, inner, is_mapped = mapped_wrapper(annotation)
    # `Mapped[Optional[fk_user]]`, `Mapped[fk_user | None]`: the alias is still merged.
    if isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.BitOr):
        parts = [p for p in (inner.left, inner.right) if not _is_none(p)]
        inner = parts[0] if len(parts) == 1 else None
    elif isinstance(inner, ast.Subscript) and _type_head(inner.value) in ("Optional", "Union"):
        elements = inner.slice.elts if isinstance(inner.slice, ast.Tuple) else [inner.slice]
        parts = [p for p in elements if not _is_none(p)]
        inner = parts[0] if len(parts) == 1 else None
    if not is_mapped or not isinstance(inner, (ast.Name, ast.Attribute)):
        return None
    return resolver.qualify(inner)


def column_facts(
    resolver: NameResolver, attr: str, call: ast.Call | None, line: int, sqlmodel: bool = False
) -> ColumnFacts:
    """Facts of ``mapped_column()``/``Column()``/SQLModel ``Field()`` (``call`` may be None)."""
    column = ColumnFacts(attr=attr, name=attr, line=line)
    if call is None:
        return column
    name = resolver.sqla_name(call.func)
    if sqlmodel and name == "Field":
        inner = keyword(call, "sa_column")
        if isinstance(inner, ast.Call):
            nested = column_facts(resolver, attr, inner, line)
            return nested
        column.primary_key = literal_bool(keyword(call, "primary_key")) is True
        column.index = literal_bool(keyword(call, "index")) is True
        column.unique = literal_bool(keyword(call, "unique")) is True
        fk = literal_str(keyword(call, "foreign_key"))
        if fk:
            ondelete = literal_str(keyword(call, "ondelete"))
            column.foreign_keys = (ForeignKeyRef.from_string(fk, ondelete),)
        default = keyword(call, "default")
        column.python_default = (
            keyword(call, "default_factory") is not None
            or (default is not None and not _is_none(default))
            or (bool(call.args) and not _is_none(call.args[0]))
        )
        return column
    fks: list[ForeignKeyRef] = []
    for arg in call.args:
        text = literal_str(arg)
        if text is not None and arg is call.args[0]:
            column.name = text
            continue
        if isinstance(arg, ast.Call):
            arg_name = resolver.sqla_name(arg.func)
            if arg_name == "ForeignKey" and arg.args:
                ref = _fk_ref(resolver, arg.args[0], literal_str(keyword(arg, "ondelete")))
                if ref is not None:
                    fks.append(ref)
            elif arg_name in ("Identity", "Sequence"):
                column.server_default = True
    column.foreign_keys = tuple(fks)
    column.primary_key = literal_bool(keyword(call, "primary_key")) is True
    column.index = literal_bool(keyword(call, "index")) is True
    column.unique = literal_bool(keyword(call, "unique")) is True
    explicit_name = literal_str(keyword(call, "name"))
    if explicit_name:
        column.name = explicit_name
    column.python_default = any(
        keyword(call, k) is not None for k in ("default", "insert_default", "default_factory")
    )
    column.server_default = column.server_default or any(
        keyword(call, k) is not None for k in ("server_default",)
    )
    return column


def relationship_facts(
    resolver: NameResolver,
    attr: str,
    call: ast.Call,
    annotation: ast.expr | None,
    sqlmodel: bool = False,
) -> RelationshipFacts:
    """Facts of a ``relationship()`` call (with the attribute's annotation, if any)."""
    rel = RelationshipFacts(
        attr=attr,
        line=call.lineno,
        col=call.col_offset,
        end_line=call.end_lineno or call.lineno,
        end_col=call.end_col_offset or call.col_offset,
    )
    kwargs: dict[str, ast.expr] = {kw.arg: kw.value for kw in call.keywords if kw.arg}
    if sqlmodel and resolver.sqla_name(call.func) == "Relationship":
        inner = kwargs.get("sa_relationship")
        if isinstance(inner, ast.Call):
            nested = relationship_facts(resolver, attr, inner, annotation)
            nested.back_populates = nested.back_populates or literal_str(
                kwargs.get("back_populates")
            )
            return nested
        extra = kwargs.get("sa_relationship_kwargs")
        if isinstance(extra, ast.Dict):
            for key, value in zip(extra.keys, extra.values, strict=False):
                name = literal_str(key)
                if name is None:
                    rel.incomplete = True
                    continue
                kwargs[name] = value
        elif extra is not None:
            rel.incomplete = True
        link_model = kwargs.get("link_model")
        if link_model is not None and "secondary" not in kwargs:
            kwargs["secondary"] = link_model  # many-to-many through the link model's table
        args_extra = kwargs.get("sa_relationship_args")
        if args_extra is not None:
            rel.incomplete = True
        positional: ast.expr | None = None
    else:
        positional = call.args[0] if call.args else None
        if any(kw.arg is None for kw in call.keywords):
            rel.incomplete = True
    wrapper_lazy, inner, is_mapped = mapped_wrapper(annotation)
    type_target, type_collection = target_of_type(inner if is_mapped else annotation)
    target_node = positional if positional is not None else kwargs.get("argument", type_target)
    rel.target, rel.target_is_string = class_ref(resolver, target_node)
    if target_node is None and type_target is not None:
        rel.target, rel.target_is_string = class_ref(resolver, type_target)
    rel.collection = type_collection
    if wrapper_lazy is not None:
        rel.lazy = wrapper_lazy
        rel.collection = True
    if resolver.sqla_name(call.func) == "dynamic_loader":
        rel.lazy = "dynamic"
        rel.collection = True
    uselist = kwargs.get("uselist")
    if uselist is not None:
        flag = literal_bool(uselist)
        if flag is None:
            rel.incomplete = True
        else:
            rel.collection = flag
    if "collection_class" in kwargs and rel.collection is None:
        rel.collection = True
    if "lazy" in kwargs:
        rel.lazy = lazy_value(kwargs["lazy"])
    secondary = kwargs.get("secondary")
    if secondary is not None:
        text = literal_str(secondary)
        if text is None:
            text = dotted(secondary) or ""
        rel.secondary = text
        if rel.collection is None:
            rel.collection = True
    rel.back_populates = literal_str(kwargs.get("back_populates"))
    if "back_populates" in kwargs and rel.back_populates is None:
        rel.incomplete = True
    backref = kwargs.get("backref")
    if backref is not None:
        text = literal_str(backref)
        if text is not None:
            rel.backref = text
        elif isinstance(backref, ast.Call) and backref.args:
            rel.backref = literal_str(backref.args[0])
            rel.backref_lazy = lazy_value(keyword(backref, "lazy"))
            rel.backref_collection = literal_bool(keyword(backref, "uselist"))
        if rel.backref is None:
            rel.incomplete = True
    rel.explicit_join = any(
        k in kwargs for k in ("primaryjoin", "foreign_keys", "remote_side", "secondaryjoin")
    )
    rel.remote_side = "remote_side" in kwargs
    rel.primaryjoin = "primaryjoin" in kwargs
    if "foreign_keys" in kwargs:
        rel.foreign_key_owners = _column_owners(kwargs["foreign_keys"])
    elif "primaryjoin" in kwargs:
        rel.foreign_key_owners = _foreign_annotated(kwargs["primaryjoin"])
    rel.viewonly = literal_bool(kwargs.get("viewonly")) is True
    rel.cascade = literal_str(kwargs.get("cascade"))
    rel.passive_deletes = kwargs.get("passive_deletes") is not None and (
        literal_bool(kwargs.get("passive_deletes")) is not False
    )
    return rel


def _unwrap_join_argument(node: ast.expr) -> ast.expr | None:
    """What a `foreign_keys=`/`primaryjoin=` argument evaluates to: a lambda's body, a
    string's expression (SQLAlchemy evaluates it against the registry)."""
    if isinstance(node, ast.Lambda):
        return node.body
    text = literal_str(node)
    if text is not None:
        try:
            return ast.parse(text.strip(), mode="eval").body
        except SyntaxError:
            return None
    return node


def _column_owners(node: ast.expr) -> tuple[str, ...]:
    """``[cls.owner_id]`` → ("cls",), ``"Post.owner_id"`` → ("Post",), ``owner_id`` →
    ("",), anything else → ("?",)."""
    expr = _unwrap_join_argument(node)
    items = list(expr.elts) if isinstance(expr, (ast.List, ast.Tuple, ast.Set)) else [expr]
    owners: list[str] = []
    for item in items:
        if isinstance(item, ast.Name):
            owners.append("")
        elif isinstance(item, ast.Attribute) and isinstance(item.value, (ast.Name, ast.Attribute)):
            head = dotted(item.value)
            # `users.c.id` names a Table's column: which class maps it is not known here.
            owners.append("?" if head is None or head.endswith(".c") else head)
        else:
            owners.append("?")
    return tuple(owners) or ("?",)


def _foreign_annotated(node: ast.expr) -> tuple[str, ...] | None:
    """The owners of the columns ``primaryjoin=`` annotates with ``foreign()``."""
    expr = _unwrap_join_argument(node)
    if expr is None:
        return ("?",)
    owners: list[str] = []
    for sub in ast.walk(expr):
        if (
            isinstance(sub, ast.Call)
            and (dotted(sub.func) or "").rpartition(".")[2] == "foreign"
            and len(sub.args) == 1
        ):
            owners.extend(_column_owners(sub.args[0]))
    return tuple(owners) or None


def index_facts(resolver: NameResolver, call: ast.Call, owner: str | None = None) -> IndexFacts:
    """``Index("ix", "email")``, ``Index("ix", func.lower(email))``, ``Index(..., text(...))``."""
    index = IndexFacts(line=call.lineno, owner=owner)
    index.unique = literal_bool(keyword(call, "unique")) is True
    columns: list[str] = []
    functions: list[tuple[str, str]] = []
    for position, arg in enumerate(call.args):
        if position == 0 and literal_str(arg) is not None:
            index.name = literal_str(arg)
            continue
        part = _index_part(resolver, arg)
        if part is None:
            continue
        kind, function, column, model = part
        if model is not None and index.owner is None:
            index.owner = model
        if kind == "column":
            columns.append(column)
        else:
            functions.append((function, column))
    index.columns = tuple(columns)
    index.functions = tuple(functions)
    return index


def _index_part(resolver: NameResolver, node: ast.expr) -> tuple[str, str, str, str | None] | None:
    """("column", "", name, model) or ("function", "lower", name, model)."""
    while (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("desc", "asc", "nulls_first", "nulls_last")
    ):
        node = node.func.value
    text = literal_str(node)
    if text is not None:
        return "column", "", text, None
    if isinstance(node, ast.Name):
        return "column", "", node.id, None
    if isinstance(node, ast.Attribute):
        owner = node.value
        if isinstance(owner, ast.Attribute) and owner.attr == "c":
            # `accounts.c.email`: the `Table` variable stands where the model would.
            return "column", "", node.attr, resolver.qualify(owner.value)
        return "column", "", node.attr, resolver.qualify(owner)
    if isinstance(node, ast.Call):
        name = resolver.sqla_name(node.func)
        if name == "text" and node.args:
            raw = (literal_str(node.args[0]) or "").strip()
            casts = sql_casts(f"({raw})")
            if casts:
                return "function", "cast", casts[0][1], None
            match = _TEXT_FUNCTION.match(raw)
            if match:
                return "function", match.group(1).lower(), match.group(2), None
            if raw.replace('"', "").isidentifier():
                return "column", "", raw.replace('"', ""), None
            return None
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and resolver.sqla_name(func.value) == "func"
            and node.args
        ):
            inner = _index_part(resolver, node.args[0])
            if inner is not None:
                return "function", func.attr.lower(), inner[2], inner[3]
        if name == "cast" and len(node.args) == 2:
            inner = _index_part(resolver, node.args[0])
            if inner is not None:
                return "function", "cast", inner[2], inner[3]
    return None


def table_facts(resolver: NameResolver, qualname: str, call: ast.Call) -> TableFacts | None:
    """A ``Table("users", metadata, Column(...), ...)`` call."""
    name = literal_str(call.args[0]) if call.args else None
    if name is None:
        return None
    table = TableFacts(qualname=qualname, name=name, line=call.lineno)
    if any(kw.arg in (None, "autoload", "autoload_with") for kw in call.keywords):
        table.complete = False  # reflected, or options we cannot see
    for arg in call.args[2:]:  # after the name and the MetaData
        kind = resolver.sqla_name(arg.func) if isinstance(arg, ast.Call) else None
        if kind == "Column":
            assert isinstance(arg, ast.Call)
            first = arg.args[0] if arg.args else keyword(arg, "name")
            column_name = literal_str(first)
            if not column_name:
                table.complete = False
                continue
            column = column_facts(resolver, column_name, arg, arg.lineno)
            table.columns[column_name] = column
            written = sum(
                isinstance(a, ast.Call) and resolver.sqla_name(a.func) == "ForeignKey"
                for a in arg.args
            )
            if written != len(column.foreign_keys):
                table.complete = False
        elif kind == "ForeignKeyConstraint":
            assert isinstance(arg, ast.Call)
            table.complete = _table_fk_constraint(resolver, table, arg) and table.complete
        elif kind not in _TABLE_EXTRAS:
            table.complete = False
    return table


_TABLE_EXTRAS = frozenset(
    {"Index", "UniqueConstraint", "PrimaryKeyConstraint", "CheckConstraint", "Computed"}
)


def _table_fk_constraint(resolver: NameResolver, table: TableFacts, call: ast.Call) -> bool:
    """``ForeignKeyConstraint(["user_id"], ["users.id"])`` in a ``Table``; False when
    it cannot be read."""
    if len(call.args) < 2:
        return False
    local, remote = call.args[0], call.args[1]
    sequences = (ast.List, ast.Tuple)
    if not isinstance(local, sequences) or not isinstance(remote, sequences):
        return False
    columns = tuple(c for c in (literal_str(e) for e in local.elts) if c)
    ondelete = literal_str(keyword(call, "ondelete"))
    refs = [_fk_ref(resolver, target, ondelete) for target in remote.elts]
    if len(columns) != len(local.elts) or any(ref is None for ref in refs):
        return False
    for ref in refs:
        assert ref is not None
        table.fk_constraints.append((columns, ref))
    return True


def _table_args(resolver: NameResolver, facts: ClassFacts, value: ast.expr) -> None:
    items: list[ast.expr]
    if isinstance(value, ast.Tuple):
        items = list(value.elts)
    elif isinstance(value, ast.Dict):
        return
    else:
        facts.table_args_dynamic = True
        return
    for item in items:
        if not isinstance(item, ast.Call):
            if not isinstance(item, ast.Dict):
                facts.table_args_dynamic = True
            continue
        name = resolver.sqla_name(item.func)
        if name == "Index":
            facts.indexes.append(index_facts(resolver, item))
        elif name == "UniqueConstraint":
            cols = tuple(c for c in (literal_str(a) for a in item.args) if c)
            facts.indexes.append(IndexFacts(line=item.lineno, columns=cols, unique=True))
        elif name == "ForeignKeyConstraint" and len(item.args) >= 2:
            local, remote = item.args[0], item.args[1]
            if isinstance(local, (ast.List, ast.Tuple)) and isinstance(
                remote, (ast.List, ast.Tuple)
            ):
                cols = tuple(c for c in (literal_str(e) for e in local.elts) if c)
                for target in remote.elts:
                    ref = _fk_ref(resolver, target, literal_str(keyword(item, "ondelete")))
                    if ref is not None:
                        facts.fk_constraints.append((cols, ref))
        elif name is None:
            facts.table_args_dynamic = True


def _is_declared_attr(resolver: NameResolver, decorator: ast.expr) -> bool:
    node = decorator.func if isinstance(decorator, ast.Call) else decorator
    qualified = resolver.qualify(node) or dotted(node) or ""
    return "declared_attr" in qualified.split(".")


def _validates_names(resolver: NameResolver, decorator: ast.expr) -> list[str]:
    if not isinstance(decorator, ast.Call) or resolver.sqla_name(decorator.func) != "validates":
        return []
    return [name for name in (literal_str(a) for a in decorator.args) if name]


def _single_return(func: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.expr | None:
    returns = [s for s in func.body if isinstance(s, ast.Return)]
    if len(returns) == 1:
        return returns[0].value
    return None


def _name_of_class_rule(func: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """"name" for a function returning `cls.__name__`, "lower" for
    `cls.__name__.lower()`: a `__tablename__` every class using it can be named by; with
    text around it (`cls.__name__.lower() + "s"`, `f"app_{cls.__name__.lower()}"`), the
    rule is "lower|app_|s"."""
    value = _single_return(func)
    params = [*func.args.posonlyargs, *func.args.args]
    if value is None or not params or len(func.body) != 1:
        return None
    prefix, suffix = "", ""
    if isinstance(value, ast.BinOp) and isinstance(value.op, ast.Add):
        left, right = literal_str(value.left), literal_str(value.right)
        if left is not None and right is None:
            prefix, value = left, value.right
        elif right is not None and left is None:
            suffix, value = right, value.left
    elif isinstance(value, ast.JoinedStr):
        parts = value.values
        formatted = [p for p in parts if isinstance(p, ast.FormattedValue)]
        if len(formatted) != 1 or formatted[0].format_spec is not None:
            return None
        if formatted[0].conversion not in (-1, 115):  # none, or `!s`
            return None
        at = parts.index(formatted[0])
        prefix = "".join(str(literal_str(p)) for p in parts[:at])
        suffix = "".join(str(literal_str(p)) for p in parts[at + 1 :])
        value = formatted[0].value
    rule = _case_of_class_name(value, params[0].arg)
    if rule is None:
        return None
    return f"{rule}|{prefix}|{suffix}" if prefix or suffix else rule


def _case_of_class_name(value: ast.expr, cls: str) -> str | None:
    rule = "name"
    if (
        isinstance(value, ast.Call)
        and not value.args
        and not value.keywords
        and isinstance(value.func, ast.Attribute)
        and value.func.attr == "lower"
    ):
        rule, value = "lower", value.func.value
    if (
        isinstance(value, ast.Attribute)
        and value.attr == "__name__"
        and isinstance(value.value, ast.Name)
        and value.value.id == cls
    ):
        return rule
    return None


def class_rule_table(rule: str, class_name: str) -> str:
    """The table name a :func:`_name_of_class_rule` rule gives a class."""
    case, _, around = rule.partition("|")
    prefix, _, suffix = around.partition("|")
    return prefix + (class_name.lower() if case == "lower" else class_name) + suffix


def _pydantic_config(node: ast.expr) -> bool | None:
    if isinstance(node, ast.Call):
        value = keyword(node, "from_attributes")
        if value is None:
            value = keyword(node, "orm_mode")
        return literal_bool(value)
    if isinstance(node, ast.Dict):
        for key, value in zip(node.keys, node.values, strict=False):
            if literal_str(key) in ("from_attributes", "orm_mode"):
                return literal_bool(value)
    return None


def class_literals(node: ast.ClassDef) -> dict[str, bool]:
    """The attributes a class assigns (in its body, or as ``self.x = ...`` in its
    methods), each True when the body gives it a literal string or number and nothing
    in the class assigns or deletes it again: text fixed by the code.

    An annotated one counts only as a ``ClassVar`` or in a plain class: in a dataclass,
    a pydantic or attrs model, the value is the default of an ``__init__`` argument."""
    plain = not node.bases and not node.keywords and not node.decorator_list
    found: dict[str, bool] = {}
    for stmt in node.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign):
            if stmt.value is None:
                continue
            targets, value = [stmt.target], stmt.value
            if not plain and not _is_class_var(stmt.annotation):
                value = None
        else:
            continue
        literal = isinstance(value, ast.Constant) and isinstance(value.value, (str, int, float))
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = literal and found.get(target.id, True)
    for name in _stored_attributes(node.body):
        found[name] = False
    return found


def _stored_attributes(body: list[ast.stmt]) -> Iterator[str]:
    """The attribute names that statements assign or delete (``self.x = ...``,
    ``del cls.y``), in nested blocks and functions too.

    Only statements are visited: an attribute is a target nowhere else but in a
    comprehension's ``for`` (``[... for self.x in ...]``), which is left out. Every class
    of a project is read this way, so skipping the expressions matters."""
    stack: list[Any] = list(body)
    while stack:
        stmt = stack.pop()
        if isinstance(stmt, (ast.Assign, ast.Delete)):
            targets: list[ast.expr] = list(stmt.targets)  # popped below: never the tree's
        elif isinstance(stmt, (ast.AugAssign, ast.AnnAssign, ast.For, ast.AsyncFor)):
            targets = [stmt.target]
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            targets = [item.optional_vars for item in stmt.items if item.optional_vars]
        else:
            targets = []
        while targets:
            target = targets.pop()
            if isinstance(target, ast.Attribute):
                yield target.attr
            elif isinstance(target, (ast.Tuple, ast.List)):
                targets.extend(target.elts)
            elif isinstance(target, ast.Starred):
                targets.append(target.value)
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(stmt, name, None)
            if block:
                stack.extend(block)


def _is_class_var(annotation: ast.expr) -> bool:
    """``ClassVar[float]``, ``typing.ClassVar``, ``"ClassVar[int]"``."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value.startswith(("ClassVar", "typing.ClassVar"))
    target = annotation.value if isinstance(annotation, ast.Subscript) else annotation
    return (isinstance(target, ast.Name) and target.id == "ClassVar") or (
        isinstance(target, ast.Attribute) and target.attr == "ClassVar"
    )


def _enters_self(node: ast.ClassDef) -> bool | None:
    """Whether every ``return`` of the class's ``__enter__``/``__aenter__`` gives the
    instance: ``self``, or ``super().__enter__()`` (the base decides, and returns it)."""
    for stmt in node.body:
        if (
            isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            and stmt.name in ("__enter__", "__aenter__")
        ):
            returned = [n.value for n in ast.walk(stmt) if isinstance(n, ast.Return)]
            return bool(returned) and all(_is_self(value) for value in returned)
    return None


def _is_self(value: ast.expr | None) -> bool:
    if isinstance(value, ast.Await):
        value = value.value
    if isinstance(value, ast.Name):
        return value.id == "self"
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Attribute)
        and value.func.attr in ("__enter__", "__aenter__")
        and isinstance(value.func.value, ast.Call)
        and isinstance(value.func.value.func, ast.Name)
        and value.func.value.func.id == "super"
    )


def _held_instances(resolver: NameResolver, node: ast.ClassDef) -> dict[str, str]:
    """``self.attr = Class(...)`` in the class's methods, else ``attr: Class`` in its
    body: the attribute's class, when one class is named for it."""
    declared: dict[str, str | None] = {}
    made: dict[str, set[str | None]] = {}
    for stmt in node.body:
        if (
            isinstance(stmt, ast.AnnAssign)
            and stmt.value is None
            and isinstance(stmt.target, ast.Name)
            and isinstance(stmt.annotation, (ast.Name, ast.Attribute))
        ):
            declared[stmt.target.id] = resolver.qualify(stmt.annotation)
        if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for assign in ast.walk(stmt):
            if not isinstance(assign, ast.Assign) or len(assign.targets) != 1:
                continue
            target, value = assign.targets[0], assign.value
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                made.setdefault(target.attr, set()).add(
                    resolver.qualify(value.func)
                    if isinstance(value, ast.Call)
                    and isinstance(value.func, (ast.Name, ast.Attribute))
                    else None
                )
    held = {attr: cls for attr, cls in declared.items() if cls is not None and attr not in made}
    for attr, classes in made.items():
        only = next(iter(classes)) if len(classes) == 1 else None
        if only is not None:
            held[attr] = only
    return held


def _type_args(resolver: NameResolver, node: ast.ClassDef) -> tuple[str, ...]:
    """The names in a class's generic bases, its class-level `name = Name` assignments
    and its ``__init__``'s ``super().__init__(...)`` arguments, qualified."""
    named: list[ast.expr] = []
    for base in node.bases:
        if isinstance(base, ast.Subscript):
            inner = base.slice
            named.extend(inner.elts if isinstance(inner, ast.Tuple) else [inner])
    for stmt in node.body:
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None:
            named.append(stmt.value)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == "__init__":
            for call in ast.walk(stmt):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "__init__"
                    and isinstance(call.func.value, ast.Call)
                    and isinstance(call.func.value.func, ast.Name)
                    and call.func.value.func.id == "super"
                ):
                    named.extend([*call.args, *(k.value for k in call.keywords)])
    found = (
        resolver.qualify(expr) for expr in named if isinstance(expr, (ast.Name, ast.Attribute))
    )
    return tuple(name for name in found if name is not None)


def class_facts(resolver: NameResolver, module: str, node: ast.ClassDef) -> ClassFacts:
    """Read one class body."""
    facts = ClassFacts(
        name=node.name,
        qualname=f"{module}.{node.name}" if module else node.name,
        line=node.lineno,
        col=node.col_offset,
    )
    bases: list[str] = []
    for base in node.bases:
        target = base.value if isinstance(base, ast.Subscript) else base
        qualified = (
            resolver.qualify(target) if isinstance(target, (ast.Name, ast.Attribute)) else None
        )
        bases.append(qualified or "?")
    facts.bases = tuple(bases)
    facts.type_args = _type_args(resolver, node)
    facts.held = _held_instances(resolver, node)
    facts.enters_self = _enters_self(node)
    decorators: list[str] = []
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        decorators.append(resolver.qualify(target) or "?")
    facts.decorators = tuple(decorators)
    facts.literals = class_literals(node)
    for kw in node.keywords:
        if kw.arg == "table":
            facts.table_kw = literal_bool(kw.value) is True
        elif kw.arg == "metaclass":
            facts.metaclass = resolver.qualify(kw.value) or "?"
    sqlmodel = any(b.startswith("sqlmodel.") for b in facts.bases) or facts.table_kw
    for stmt in node.body:
        _class_statement(resolver, facts, stmt, sqlmodel)
    facts.query_class_get = _query_class_get(node)
    facts.impl = next(
        (
            ast.unparse(stmt.value)
            for stmt in node.body
            if isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id == "impl"
        ),
        None,
    )
    facts.exit_commits = _exit_commits(node)
    return facts


def _exit_commits(node: ast.ClassDef) -> bool:
    """Whether the class's ``__exit__`` calls ``self.commit()`` (in the body or a ``try``
    of it), as a Session subclass that commits a ``with`` block ending without error."""
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef) and stmt.name == "__exit__":
            for inner in ast.walk(stmt):
                if (
                    isinstance(inner, ast.Call)
                    and isinstance(inner.func, ast.Attribute)
                    and inner.func.attr == "commit"
                    and isinstance(inner.func.value, ast.Name)
                    and inner.func.value.id == "self"
                ):
                    return True
    return False


def _query_class_get(node: ast.ClassDef) -> bool:
    """Whether the class's ``query_class`` may define ``get()``: a class nested in the body
    that defines it or has a base other than ``Query``/``BaseQuery``, or any class this
    body does not define."""
    nested = {s.name: s for s in node.body if isinstance(s, ast.ClassDef)}
    for stmt in node.body:
        if not isinstance(stmt, ast.Assign) or not any(
            isinstance(t, ast.Name) and t.id == "query_class" for t in stmt.targets
        ):
            continue
        query_class = nested.get(stmt.value.id) if isinstance(stmt.value, ast.Name) else None
        if query_class is None:
            return True
        if any(
            (dotted(b) or "").rpartition(".")[2] not in ("Query", "BaseQuery")
            for b in query_class.bases
        ):
            return True
        return any(
            isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == "get"
            for s in query_class.body
        )
    return False


def _class_statement(
    resolver: NameResolver, facts: ClassFacts, stmt: ast.stmt, sqlmodel: bool
) -> None:
    if isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            if isinstance(target, ast.Name):
                _member(resolver, facts, target.id, None, stmt.value, stmt.lineno, sqlmodel)
    elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
        _member(resolver, facts, stmt.target.id, stmt.annotation, stmt.value, stmt.lineno, sqlmodel)
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        _method(resolver, facts, stmt, sqlmodel)
    elif isinstance(stmt, ast.If):
        for branch in _runtime_branches(stmt):
            for inner in branch:
                _class_statement(resolver, facts, inner, sqlmodel)
    elif isinstance(stmt, ast.ClassDef) and stmt.name == "Meta":
        _schema_meta(resolver, facts, stmt)
    elif isinstance(stmt, ast.ClassDef) and stmt.name == "Config":
        for inner in stmt.body:
            if isinstance(inner, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in ("orm_mode", "from_attributes")
                for t in inner.targets
            ):
                facts.from_attributes = literal_bool(inner.value)


def _schema_meta(resolver: NameResolver, facts: ClassFacts, meta: ast.ClassDef) -> None:
    for inner in meta.body:
        if not isinstance(inner, ast.Assign) or len(inner.targets) != 1:
            continue
        target = inner.targets[0]
        if not isinstance(target, ast.Name):
            continue
        if target.id == "model" and isinstance(inner.value, (ast.Name, ast.Attribute)):
            facts.schema_model = resolver.qualify(inner.value)
        elif target.id == "include_relationships":
            facts.include_relationships = literal_bool(inner.value) is True


# marshmallow's field classes that read the attribute of their name (or `attribute=`).
# `fields.Method` and `fields.Function` call code instead, which is not followed.
_SCHEMA_FIELDS = frozenset(
    {
        "Nested", "Pluck", "List", "Str", "String", "Int", "Integer", "Float", "Decimal",
        "Number", "Bool", "Boolean", "DateTime", "AwareDateTime", "NaiveDateTime", "Date",
        "Time", "TimeDelta", "UUID", "Email", "Url", "URL", "Dict", "Mapping", "Raw", "Enum",
        "IP", "Related", "RelatedList", "auto_field",
    }
)
_NESTING_FIELDS = frozenset({"Nested", "Pluck"})


def _schema_field(resolver: NameResolver, facts: ClassFacts, name: str, call: ast.Call) -> bool:
    """``posts = fields.Nested(PostSchema, many=True)``: a marshmallow field (recorded
    under the attribute it reads, with the schema it nests); whether it was one."""
    head = dotted(call.func) or ""
    qualified = resolver.qualify(call.func) or head
    if _field_kind(call) not in _SCHEMA_FIELDS or not (
        qualified.startswith(("marshmallow", "flask_marshmallow"))
        or head.startswith(("fields.", "ma."))
    ):
        return False
    attribute = keyword(call, "attribute")
    read = literal_str(attribute) if attribute is not None else None
    # `List(Nested(PostSchema))` nests as `Nested(PostSchema, many=True)` does.
    nested: ast.expr | None = call
    while isinstance(nested, ast.Call) and _field_kind(nested) == "List":
        nested = nested.args[0] if nested.args else None
    target, is_string = None, False
    if isinstance(nested, ast.Call) and _field_kind(nested) in _NESTING_FIELDS:
        target, is_string = class_ref(resolver, nested.args[0] if nested.args else None)
    facts.fields[read or name] = FieldFacts(read or name, target, is_string)
    return True


def _field_kind(call: ast.Call) -> str:
    return (dotted(call.func) or "").rpartition(".")[2]


def _runtime_branches(stmt: ast.If) -> tuple[list[ast.stmt], ...]:
    """The branches of an ``if`` in a class body that can run: not the
    ``if TYPE_CHECKING:`` side (annotations for type checkers, the mapping is in its
    ``else``); both sides of any other test, which the index cannot decide."""
    test = stmt.test
    negated = isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not)
    if is_type_checking(test.operand if isinstance(test, ast.UnaryOp) else test):
        return (stmt.body,) if negated else (stmt.orelse,)
    return (stmt.body, stmt.orelse)


def _method(
    resolver: NameResolver,
    facts: ClassFacts,
    stmt: ast.FunctionDef | ast.AsyncFunctionDef,
    sqlmodel: bool,
) -> None:
    declared = False
    for decorator in stmt.decorator_list:
        for attr in _validates_names(resolver, decorator):
            facts.validators.setdefault(attr, stmt.name)
        if _is_declared_attr(resolver, decorator):
            declared = True
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        head = dotted(target) or ""
        if head.rpartition(".")[2] in ("property", "cached_property", "hybrid_property"):
            facts.properties.add(stmt.name)
    if declared:
        if stmt.name == "__tablename__":
            facts.tablename_from_class = _name_of_class_rule(stmt)
            facts.tablename_dynamic = facts.tablename_from_class is None
            return
        if stmt.name == "__table_args__":
            facts.table_args_dynamic = True
            return
        value = _single_return(stmt)
        if value is None:
            facts.declared_attr_members = True
            facts.other_attrs.add(stmt.name)
            return
        _member(resolver, facts, stmt.name, stmt.returns, value, stmt.lineno, sqlmodel)
        rel = facts.relationships.get(stmt.name)
        params = [*stmt.args.posonlyargs, *stmt.args.args]
        if rel is not None and rel.foreign_key_owners and params:
            # `foreign_keys=[cls.owner_id]`: a column of whichever class uses the mixin.
            own = params[0].arg
            rel.foreign_key_owners = tuple(
                "" if owner == own else owner for owner in rel.foreign_key_owners
            )
        return
    facts.methods.add(stmt.name)


def _member(
    resolver: NameResolver,
    facts: ClassFacts,
    name: str,
    annotation: ast.expr | None,
    value: ast.expr | None,
    line: int,
    sqlmodel: bool,
) -> None:
    if name == "__tablename__":
        text = literal_str(value)
        if text is not None:
            facts.tablename = text
        else:
            facts.tablename_dynamic = True
        return
    if name == "__abstract__":
        facts.abstract = literal_bool(value) is True
        return
    if name == "__table__":
        facts.has_table = True
        if isinstance(value, ast.Call) and resolver.sqla_name(value.func) == "Table":
            table = table_facts(resolver, facts.qualname, value)
            if table is not None:
                facts.tablename = table.name
                facts.columns.update(table.columns)
                if has_star_kwargs(value) or keyword(value, "autoload_with") is not None:
                    facts.table_columns_known = False
                return
        facts.table_columns_known = False
        return
    if name == "__table_args__":
        if value is not None:
            _table_args(resolver, facts, value)
        return
    if name == "model_config" and value is not None:
        facts.from_attributes = _pydantic_config(value)
        return
    if name.startswith("__") and name.endswith("__"):
        return
    call = value if isinstance(value, ast.Call) else None
    if isinstance(resolver, DeferringResolver):
        resolver.deferred = None
    func_name = resolver.sqla_name(call.func) if call is not None else None
    via = resolver.deferred if isinstance(resolver, DeferringResolver) else None
    _member_call(resolver, facts, name, annotation, value, call, func_name, line, sqlmodel)
    if via is not None:
        member: ColumnFacts | RelationshipFacts | None = facts.relationships.get(
            name
        ) or facts.columns.get(name)
        if member is not None:
            member.via = via


def _member_call(
    resolver: NameResolver,
    facts: ClassFacts,
    name: str,
    annotation: ast.expr | None,
    value: ast.expr | None,
    call: ast.Call | None,
    func_name: str | None,
    line: int,
    sqlmodel: bool,
) -> None:
    if call is not None and (
        func_name in _RELATIONSHIP_CALLS or (sqlmodel and func_name == "Relationship")
    ):
        facts.relationships[name] = relationship_facts(resolver, name, call, annotation, sqlmodel)
        return
    if call is not None and func_name in _COLUMN_CALLS:
        facts.columns[name] = column_facts(resolver, name, call, line)
        facts.columns[name].type_alias = _alias_of(resolver, annotation)
        return
    if call is not None and sqlmodel and func_name == "Field":
        facts.columns[name] = column_facts(resolver, name, call, line, sqlmodel=True)
        _field(resolver, facts, name, annotation)
        return
    if call is not None and func_name in _OTHER_MAPPED_CALLS:
        facts.other_attrs.add(name)
        return
    if call is not None and annotation is None and _schema_field(resolver, facts, name, call):
        return
    if annotation is not None:
        _, _inner, is_mapped = mapped_wrapper(annotation)
        head = annotation.value if isinstance(annotation, ast.Subscript) else annotation
        if is_mapped and value is None:
            # `id: Mapped[int]` alone is a column in 2.0's declarative.
            facts.columns[name] = ColumnFacts(
                attr=name, name=name, line=line, type_alias=_alias_of(resolver, annotation)
            )
            return
        if _type_head(head) != "ClassVar":
            _field(resolver, facts, name, annotation)
            if (sqlmodel and value is None) or (sqlmodel and not isinstance(value, ast.Call)):
                python_default = value is not None and not _is_none(value)
                facts.columns[name] = ColumnFacts(
                    attr=name, name=name, line=line, python_default=python_default
                )
            return
    if call is not None and _may_make_a_column(resolver, call.func):
        # `Column = partial(db.Column, nullable=False)`, `id = primary_key("User")`: a
        # helper of the project or a library may return a column this index cannot see.
        facts.table_columns_known = False
    facts.other_attrs.add(name)


def _may_make_a_column(resolver: NameResolver, func: ast.expr) -> bool:
    """Whether a call in a class body could return a column: anything but a builtin or
    the standard library (`frozenset(...)`, `logging.getLogger(...)`, `re.compile(...)`)."""
    if isinstance(func, ast.Name) and func.id in _BUILTINS and resolver.qualify(func) is None:
        return False
    qualified = resolver.qualify(func) if isinstance(func, (ast.Name, ast.Attribute)) else None
    if qualified is None:
        return True
    head = qualified.partition(".")[0]
    # SQLAlchemy's own column makers were recognised before this point.
    return head not in sys.stdlib_module_names and head not in SQLA_ROOTS


_BUILTINS = frozenset(dir(builtins))


def _field(
    resolver: NameResolver, facts: ClassFacts, name: str, annotation: ast.expr | None
) -> None:
    target_node, _ = target_of_type(annotation)
    target, is_string = class_ref(resolver, target_node)
    facts.fields[name] = FieldFacts(name=name, target=target, target_is_string=is_string)


def late_relationships(
    resolver: NameResolver, body: list[ast.stmt], classes: list[ClassFacts]
) -> None:
    """``Card.articles = relationship("Article", back_populates="card")`` after the class
    body (to name a class defined below it): a declarative class maps what is assigned
    to it later just as what its body declares."""
    by_name = {cls.name: cls for cls in classes}
    for stmt in body:
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            continue
        target, value = stmt.targets[0], stmt.value
        if (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and (cls := by_name.get(target.value.id)) is not None
            and isinstance(value, ast.Call)
            and resolver.sqla_name(value.func) in _RELATIONSHIP_CALLS
            and target.attr not in cls.relationships
        ):
            cls.relationships[target.attr] = relationship_facts(
                resolver, target.attr, value, None
            )


def imperative_facts(
    resolver: NameResolver, call: ast.Call, tables: dict[str, str]
) -> ImperativeFacts | None:
    """``reg.map_imperatively(User, users_table, properties={...})``."""
    if len(call.args) < 1:
        return None
    cls = (
        resolver.qualify(call.args[0])
        if isinstance(call.args[0], (ast.Name, ast.Attribute))
        else None
    )
    if cls is None:
        return None
    facts = ImperativeFacts(cls=cls, line=call.lineno)
    if isinstance(call.func, ast.Attribute):
        facts.registry = resolver.qualify(call.func.value)
    table_node = call.args[1] if len(call.args) > 1 else keyword(call, "local_table")
    if isinstance(table_node, ast.Name):
        facts.table = tables.get(table_node.id)
    if isinstance(table_node, (ast.Name, ast.Attribute)):
        facts.table_ref = resolver.qualify(table_node)
    properties = keyword(call, "properties")
    if isinstance(properties, ast.Dict):
        for key, value in zip(properties.keys, properties.values, strict=False):
            attr = literal_str(key)
            if (
                attr
                and isinstance(value, ast.Call)
                and resolver.sqla_name(value.func) in _RELATIONSHIP_CALLS
            ):
                facts.relationships[attr] = relationship_facts(resolver, attr, value, None)
    return facts


def deleted_models(
    resolver: NameResolver, function: ast.FunctionDef | ast.AsyncFunctionDef
) -> tuple[str, ...]:
    """The models a listener only bulk-deletes rows of (``Notification.query.filter(...)
    .delete()``, ``session.execute(delete(Notification)...)``), following functions it
    defines; () when it does anything else."""
    local: dict[str, str] = {}
    found: list[str] = []

    def model(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name) and expr.id in local:
            return local[expr.id]
        if isinstance(expr, (ast.Name, ast.Attribute)):
            return resolver.qualify(expr)
        return None

    def deleted(call: ast.expr) -> str | None:
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
            return None
        if call.func.attr == "delete":
            current: ast.expr = call.func.value
            while isinstance(current, ast.Call) and isinstance(current.func, ast.Attribute):
                if current.func.attr == "query" and len(current.args) == 1:
                    return model(current.args[0])
                current = current.func.value
            if isinstance(current, ast.Attribute) and current.attr == "query":
                return model(current.value)
            return None
        if call.func.attr == "execute" and call.args:
            statement: ast.expr = call.args[0]
            while isinstance(statement, ast.Call) and isinstance(statement.func, ast.Attribute):
                statement = statement.func.value
            if (
                isinstance(statement, ast.Call)
                and resolver.sqla_name(statement.func) == "delete"
                and statement.args
            ):
                return model(statement.args[0])
        return None

    def walk(body: list[ast.stmt]) -> bool:
        for stmt in body:
            if isinstance(stmt, ast.ImportFrom) and stmt.level == 0 and stmt.module:
                for alias in stmt.names:
                    local[alias.asname or alias.name] = f"{stmt.module}.{alias.name}"
            elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if not walk(stmt.body):
                    return False
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                continue  # a docstring
            elif isinstance(stmt, ast.Expr) and (target := deleted(stmt.value)) is not None:
                found.append(target)
            else:
                return False
        return True

    if not walk(function.body):
        return ()
    return tuple(dict.fromkeys(found))


def watched_attributes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[str, ...]:
    """The attributes a listener's body is guarded by: one ``if`` (no ``else``) whose test
    asks whether they changed, or ``if not <that>: return`` first. () when the body
    may act whatever changed."""
    body = list(function.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    if not body or not isinstance(body[0], ast.If) or body[0].orelse:
        return ()
    first = body[0]
    if len(body) == 1:
        test = first.test
    elif (
        isinstance(first.test, ast.UnaryOp)
        and isinstance(first.test.op, ast.Not)
        and len(first.body) == 1
        and isinstance(first.body[0], ast.Return)
    ):
        test = first.test.operand
    else:
        return ()
    leaves = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or) else [test]
    watched: list[str] = []
    for leaf in leaves:
        names = _history_checks(leaf)
        if not names:
            return ()
        watched.extend(names)
    return tuple(dict.fromkeys(watched))


def _history_checks(test: ast.expr) -> list[str]:
    """Attributes whose history ``test`` reads: ``inspect(t).attrs.email.history``,
    ``get_history(t, "email")``."""
    found: list[str] = []
    for node in ast.walk(test):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "history"
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Attribute)
            and node.value.value.attr == "attrs"
        ):
            found.append(node.value.attr)
        elif (
            isinstance(node, ast.Call)
            and call_tail(node.func) == "get_history"
            and len(node.args) >= 2
            and (name := literal_str(node.args[1])) is not None
        ):
            found.append(name)
    return found


def listener_facts(
    resolver: NameResolver, call: ast.Call, function: str | None
) -> ListenerFacts | None:
    """``event.listen(User, "before_update", fn)`` / ``event.listens_for(User.email, "set")``."""
    if len(call.args) < 2:
        return None
    identifier = literal_str(call.args[1])
    if identifier is None:
        return None
    target_node = call.args[0]
    attr: str | None = None
    qualified = (
        resolver.qualify(target_node)
        if isinstance(target_node, (ast.Name, ast.Attribute))
        else None
    )
    if qualified is None:
        return None
    tail = resolver.sqla_tail(qualified)
    if tail in ("Mapper", "mapper"):
        target = "mapper"
    elif tail in ("Session", "AsyncSession", "sessionmaker", "scoped_session"):
        target = "session"
    elif isinstance(target_node, ast.Attribute) and identifier in _ATTRIBUTE_EVENTS:
        attr = target_node.attr
        target = resolver.qualify(target_node.value) or "?"
    else:
        target = qualified
    if function is None and len(call.args) >= 3:
        handler = call.args[2]
        function = dotted(handler) if isinstance(handler, (ast.Name, ast.Attribute)) else None
    return ListenerFacts(
        target=target,
        identifier=identifier,
        line=call.lineno,
        attr=attr,
        propagate=literal_bool(keyword(call, "propagate")) is True,
        function=function,
    )


_ATTRIBUTE_EVENTS = frozenset(
    {
        "set",
        "append",
        "remove",
        "modified",
        "init_scalar",
        "init_collection",
        "bulk_replace",
        "append_wo_mutation",
        "dispose_collection",
    }
)


def table_name_for(flavor: str, class_name: str) -> str | None:
    """The table name a class gets when it names none (Flask-SQLAlchemy, SQLModel)."""
    if flavor == "flask":
        # Flask-SQLAlchemy 3's camel_to_snake_case.
        name = re.sub(r"((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))", r"_\1", class_name)
        return name.lower().lstrip("_")
    if flavor == "sqlmodel":
        return class_name.lower()
    return None
