"""What a SELECT of an entity loads with it: eager relationships, and column options.

Loader options keep their paths in ``Load.context`` (``_LoadElement.path`` and
``.strategy``), and a wildcard (``lazyload("*")``, ``defer("*")``) keeps them on the
option itself (``_WildcardLoad.path`` and ``.strategy``); both the same on SQLAlchemy
2.0 and 2.1. Read defensively: an unknown shape gives nothing, and the statement is
judged by its mapping.

Also the other way round: the loader option a fix tells a query to take, and how.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

# Strategies that load a relationship with its parents (``lazy=`` values and options).
EAGER = frozenset({"selectin", "joined", "subquery", "immediate"})
OPTION_NAMES = {
    "selectin": "selectinload",
    "joined": "joinedload",
    "subquery": "subqueryload",
    "immediate": "immediateload",
}


# Mapper -> the attribute keys of its primary key (bounded: mappers are few, but a
# program that makes classes at run time must not grow it forever).
_pk_attributes: dict[Any, tuple[str, ...]] = {}


def primary_key_attributes(mapper: Any) -> tuple[str, ...]:
    """The attribute keys of a mapper's primary key columns (``("id",)``); () if unknown."""
    keys = _pk_attributes.get(mapper)
    if keys is None:
        try:
            keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
        except Exception:
            keys = ()
        if len(_pk_attributes) < 10_000:
            _pk_attributes[mapper] = keys
    return keys


_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def snake_case(name: str) -> str:
    """``order_line`` for ``OrderLine``: a variable name for one object of a class."""
    return _WORD_START.sub("_", name).lower()


def label(relationship: Any) -> str:
    """``User.posts``: the class that declares the relationship, and its key."""
    return f"{relationship.parent.class_.__name__}.{relationship.key}"


def loader_for(relationship: Any) -> str:
    # A collection eager-loaded with a JOIN multiplies the parent rows (P29): selectinload
    # runs one extra query for all parents. A scalar (many-to-one) joins at no such cost.
    return "selectinload" if relationship.uselist else "joinedload"


def _through_with_polymorphic(relationship: Any, selected: Any) -> str | None:
    """``with_polymorphic(Party, [Customer])`` when a query selected that entity and
    ``relationship`` is declared on one of its subclasses; else None."""
    if selected is None:
        return None
    declaring = relationship.parent
    try:
        if declaring is selected.mapper or declaring not in selected.with_polymorphic_mappers:
            return None
        return str(selected)
    except Exception:
        return None


def _through_alias(relationship: Any, selected: Any) -> bool:
    """Whether a query selected ``aliased(User, ...)`` (not a with_polymorphic()) whose
    class has ``relationship``."""
    if selected is None or getattr(selected, "_is_with_polymorphic", False):
        return False
    try:
        return bool(selected.mapper.isa(relationship.parent))
    except Exception:
        return False


def query_option(
    relationship: Any, selected: Any, aliased: Any, others: Sequence[Any] = ()
) -> tuple[str, str]:
    """The loader option for ``relationship`` on a query that selected the mapper
    ``selected``, or the aliased entity ``aliased`` (a ``with_polymorphic()`` or an
    ``aliased()`` class); and, when it is not the plain option, why (to follow "add
    .options(...) to that query").

    ``others``: the other relationships lazy-loaded from the objects of the same query,
    whose subclasses' options join this one's (a Circle's marks and a Square's tags after
    select(Shape))."""
    name = label(relationship)
    option = f"{loader_for(relationship)}({name})"
    parents = relationship.parent.class_.__name__
    if _through_alias(relationship, aliased):
        # select(top) refuses selectinload(User.posts) too: the path starts from the
        # alias. Its variable's name is the user's.
        return (
            f"{loader_for(relationship)}(alias.{relationship.key})",
            f", alias being the aliased({aliased.mapper.class_.__name__}) it selects: an "
            f"option on {name} alone does not apply to it",
        )
    through = _through_with_polymorphic(relationship, aliased)
    if through is not None:
        # select(poly) refuses selectinload(Engineer.repos): the option's path starts
        # from the entity it selects. Its variable's name is the user's.
        return (
            f"{loader_for(relationship)}(poly.{parents}.{relationship.key})",
            f", poly being the {through} it selects: an option on {name} alone does not "
            "apply to it",
        )
    if base_class_query(relationship, selected):
        # select(Party) ignores selectinload(Customer.orders) on its own: the subclass's
        # rows must load with their own SELECT, which carries it.
        base = selected.class_.__name__
        # Two selectin_polymorphic() of one base in a query raise InvalidRequestError
        # ("Loader strategy replacement ... is in conflict"): one names every subclass.
        loaded = [relationship, *(r for r in others if base_class_query(r, selected))]
        subclasses = ", ".join(sorted({r.parent.class_.__name__ for r in loaded}))
        options = ", ".join(sorted({f"{loader_for(r)}({label(r)})" for r in loaded}))
        return (
            f"selectin_polymorphic({base}, [{subclasses}]), {options}",
            f": it selects {base}, and an option on {name} alone is ignored there",
        )
    return option, ""


# Relationships whose collection is a query of its own, never loaded into the parent:
# a loader option on them raises "does not support object population".
UNLOADABLE = frozenset({"write_only", "dynamic"})


# Mapper -> the write_only and dynamic relationships that load it (cached, bounded).
_unloadable_to: dict[Any, tuple[Any, ...]] = {}


def collection_queried(statement: Any, mapper: Any) -> Any:
    """The ``lazy="write_only"`` or ``lazy="dynamic"`` relationship whose collection
    ``statement``, a SELECT of ``mapper``, queries (``parent.notes.select()``,
    ``parent.logs.all()`` or ``.count()``); None for any other statement.

    Both build their WHERE with the relationship's own lazy clause, whose bound
    parameters keep the keys of ``RelationshipProperty._lazy_strategy`` (2.0 and 2.1): a
    hand-written ``Note.parent_id == parent.id`` has other keys. Asked once per repeated
    statement, not per execution.
    """
    try:
        candidates = _unloadable_to.get(mapper)
        if candidates is None:
            candidates = tuple(
                relationship
                for other in mapper.registry.mappers
                for relationship in other.relationships
                if relationship.lazy in UNLOADABLE and mapper.isa(relationship.mapper)
            )
            if len(_unloadable_to) < 10_000:
                _unloadable_to[mapper] = candidates
        if not candidates:
            return None
        from sqlalchemy.sql import visitors

        keys = {
            getattr(element, "_identifying_key", None)
            for element in visitors.iterate(statement)
            if element.__visit_name__ == "bindparam"
        }
        for relationship in candidates:
            strategy = relationship._lazy_strategy
            if keys & (strategy._bind_to_col.keys() | strategy._rev_bind_to_col.keys()):
                return relationship
    except Exception:
        return None
    return None


def collection_fix(relationship: Any, function: str | None) -> str:
    """What to do instead of querying a write_only or dynamic ``relationship`` once per
    parent: one query for the children of all of them (or, for ``function``, an
    aggregate such as ``count``, one grouped query), since no loader option loads it."""
    name = label(relationship)
    parents = relationship.parent.class_.__name__
    target = relationship.mapper.class_.__name__
    key = _foreign_key_attribute(relationship)
    own = primary_key_attributes(relationship.parent)
    parent_id = f"{parents}.{own[0] if len(own) == 1 else 'id'}"
    why = f'{name} is lazy="{relationship.lazy}", which no loader option loads'
    if function is not None:
        call = "func.count()" if function == "count" else f"func.{function}(...)"
        if key is not None:
            column = f"{target}.{key}"
            query = f"select({column}, {call}).where({column}.in_(ids)).group_by({column})"
        else:
            query = (
                f"select({parent_id}, {call}).join({name}).where({parent_id}.in_(ids))"
                f".group_by({parent_id})"
            )
        return (
            f"{why}: compute the {function}() for all the {parents} objects in one query, {query}"
        )
    if key is not None:
        query = f"select({target}).where({target}.{key}.in_(ids))"
        grouped = f"group them by {key}"
    else:
        query = f"select({parent_id}, {target}).join({name}).where({parent_id}.in_(ids))"
        grouped = f"group them by {parent_id}"
    return (
        f"{why}: fetch the {target} rows of all the {parents} objects in one query, "
        f"{query}, and {grouped}; if each needs its whole collection, map {name} as a "
        f"loadable relationship (Mapped[list[{target}]]) and add .options("
        f"selectinload({name})) to the query that loads the {parents} objects"
    )


def filtered_by(statement: Any, mapper: Any) -> tuple[str, Any, bool] | None:
    """What a SELECT of ``mapper`` run once per parent compares with a bound value: the
    attribute (``"customer_id"`` for ``Order.customer_id == customer.id`` or
    ``with_parent(customer, Customer.orders)``) and the loadable one-to-many relationship
    whose foreign key it is (``Customer.orders``; None when there is none); and whether
    the WHERE compares other columns too. A foreign key column is taken over other
    compared columns (``Order.status == "new"`` is the same in every run); None when the
    WHERE compares no single such column. Asked once per repeated statement, not per
    execution."""
    try:
        where = getattr(statement, "whereclause", None)
        if where is None:
            # Query.count() wraps the query: `SELECT count(*) FROM (SELECT ... WHERE ...)`.
            froms = statement.get_final_froms() if hasattr(statement, "get_final_froms") else []
            inner = froms[0] if len(froms) == 1 else None
            for _ in range(3):  # Alias -> Subquery -> Select
                if inner is None or hasattr(inner, "whereclause"):
                    break
                inner = getattr(inner, "element", None)
            where = getattr(inner, "whereclause", None)
            if where is None:
                return None
        from sqlalchemy.sql import operators, visitors

        compared = []
        conditions = 0
        element: Any
        for element in visitors.iterate(where):
            if element.__visit_name__ != "binary":
                continue
            conditions += 1
            if element.operator is not operators.eq:
                continue
            sides = (element.left, element.right)
            kinds = tuple(side.__visit_name__ for side in sides)
            if kinds == ("column", "bindparam"):
                compared.append(sides[0])
            elif kinds == ("bindparam", "column"):
                compared.append(sides[1])
        keyed = [column for column in compared if column.foreign_keys]
        if len(keyed) == 1:
            column = keyed[0]
        elif len(compared) == 1 and not keyed:
            column = compared[0]
        else:
            return None
        key = str(mapper.get_property_by_column(column).key)
        for other in mapper.registry.mappers:
            for relationship in other.relationships:
                if (
                    relationship.secondary is None
                    and relationship.lazy not in UNLOADABLE
                    and relationship.uselist
                    and mapper.isa(relationship.mapper)
                    and len(relationship.local_remote_pairs) == 1
                    and relationship.local_remote_pairs[0][1].compare(column)
                ):
                    return key, relationship, conditions > 1
        return key, None, conditions > 1
    except Exception:
        return None


def _foreign_key_attribute(relationship: Any) -> str | None:
    """``parent_id``: the child's attribute that refers to the parent, for a one-to-many
    on one column (no secondary table); None otherwise."""
    try:
        if relationship.secondary is not None or len(relationship.local_remote_pairs) != 1:
            return None
        remote = relationship.local_remote_pairs[0][1]
        return str(relationship.mapper.get_property_by_column(remote).key)
    except Exception:
        return None


def subclass_left_out(base: Any, entity: str, loaded: Sequence[str] = ()) -> tuple[str, str]:
    """For a query that selected the mapper ``base`` and so left the subclass ``entity``'s
    own table out: the option that loads it with the query, and what the query did
    ("selected Employee, which leaves Engineer's own table out").

    ``loaded``: every subclass of that query read the same way, ``entity`` among them.
    The option names them all, since a second ``selectin_polymorphic()`` of the same base
    in one query raises InvalidRequestError ("Loader strategy replacement ... is in
    conflict with existing strategy").
    """
    name = base.class_.__name__
    subclasses = ", ".join(sorted({entity, *loaded}))
    return (
        f"selectin_polymorphic({name}, [{subclasses}])",
        f"selected {name}, which leaves {entity}'s own table out",
    )


def attach_option(option: str, by_get: bool) -> tuple[str, str, str]:
    """How a fix attaches a loader option to what loaded the objects: the verb, what it
    is called, and the hint. ``session.get()`` takes ``options=[...]``."""
    if by_get:
        return f"pass options=[{option}] to", "session.get()", f"options=[{option}]"
    return f"add .options({option}) to", "query", f".options({option})"


def lazy_value(lazy: Any) -> Any:
    """``relationship(lazy=...)`` in its spelled-out form (False is joined, True select)."""
    if lazy is False:
        return "joined"
    if lazy is True:
        return "select"
    if lazy is None:
        return "noload"
    return lazy


class RootOptions:
    """The options of one statement that apply to its root entity itself (path length 1).

    ``relationships``: relationship key -> the ``lazy`` strategy an option gives it;
    ``wildcard``: the strategy a ``*load("*")`` gives the others, or None;
    ``columns``: whether an option decides which of its columns load (``load_only``,
    ``defer``, ``undefer``).
    """

    __slots__ = ("columns", "relationships", "wildcard")

    def __init__(self) -> None:
        self.relationships: dict[str, Any] = {}
        self.wildcard: Any = None
        self.columns = False


def root_options(statement: Any, mapper: Any) -> RootOptions:
    found = RootOptions()
    for option in getattr(statement, "_with_options", ()):
        context = getattr(option, "context", None)
        if context is None:
            # A wildcard: its path is the token alone.
            _token(found, getattr(option, "path", None), getattr(option, "strategy", None))
            continue
        for element in context:
            path = getattr(getattr(element, "path", None), "path", None)
            strategy = getattr(element, "strategy", None)
            # (entity, column or token) for a column; (entity, relationship, target)
            # for a relationship.
            if not path or not strategy or len(path) not in (2, 3):
                continue
            if not _is_root(path[0], mapper):
                continue
            token = path[1]
            if isinstance(token, str):
                _token(found, (token,), strategy)
                continue
            values = dict(strategy)
            if "deferred" in values:
                found.columns = True
            lazy = values.get("lazy")
            key = getattr(token, "key", None)
            if lazy is not None and isinstance(key, str):
                found.relationships[key] = lazy_value(lazy)
    return found


def _token(found: RootOptions, path: Any, strategy: Any) -> None:
    if not path or not strategy or len(path) != 1 or not isinstance(path[0], str):
        return
    values = dict(strategy)
    if path[0].startswith("column:") or "deferred" in values:
        found.columns = True
    elif path[0].startswith("relationship:") and "lazy" in values:
        found.wildcard = lazy_value(values["lazy"])


def _is_root(entity: Any, mapper: Any) -> bool:
    target = getattr(entity, "mapper", None)
    if target is None:
        return False
    try:
        return bool(target.isa(mapper) or mapper.isa(target))
    except Exception:
        return False


def eager_relationships(
    mapper: Any, options: RootOptions | None
) -> dict[str, tuple[Any, str, bool]]:
    """Relationships of ``mapper`` a SELECT of it loads eagerly: key -> (relationship,
    strategy, whether an option said so rather than the mapping)."""
    found: dict[str, tuple[Any, str, bool]] = {}
    for relationship in mapper.relationships:
        lazy: Any = None
        by_option = False
        if options is not None:
            lazy = options.relationships.get(relationship.key)
            if lazy is None:
                lazy = options.wildcard
            by_option = lazy is not None
        if lazy is None:
            lazy = lazy_value(relationship.lazy)
        if lazy in EAGER:
            found[relationship.key] = (relationship, lazy, by_option)
    return found


def joined_links(statement: Any, mapper: Any) -> list[tuple[Any, ...]]:
    """The load paths (``(Blog, Blog.posts, Post)``) of the relationships of ``mapper``
    that the statement's options ``joinedload()``: their objects come in the statement's
    own rows, and options chained below them load further (see :func:`nested_eager`)."""
    found: list[tuple[Any, ...]] = []
    for option in getattr(statement, "_with_options", ()):
        for element in getattr(option, "context", ()):
            path = getattr(getattr(element, "path", None), "path", None)
            strategy = getattr(element, "strategy", None)
            if not path or not strategy or len(path) != 3 or not _is_root(path[0], mapper):
                continue
            lazy = dict(strategy).get("lazy")
            if lazy is not None and lazy_value(lazy) == "joined":
                found.append(tuple(path))
    return found


def nested_eager(
    statement: Any, loader_path: tuple[Any, ...]
) -> tuple[dict[str, tuple[Any, str, bool]], str] | None:
    """For a selectin (or subquery) batch that loads the objects at ``loader_path``
    (``(Blog, Blog.posts, Post)``), the relationships of those objects that the root
    query's chained options load eagerly in turn (``selectinload(Blog.posts)
    .selectinload(Post.tags)``: ``tags``), keyed as :func:`eager_relationships` does; and
    the chain that loaded them, spelled as the program wrote it. None when the options
    load nothing below them. Read from the batch's statement, which carries the root
    query's options (``Load.context`` elements, 2.0 and 2.1)."""
    depth = len(loader_path)
    found: dict[str, tuple[Any, str, bool]] = {}
    links: dict[int, str] = {}
    for option in getattr(statement, "_with_options", ()):
        for element in getattr(option, "context", ()):
            path = getattr(getattr(element, "path", None), "path", None)
            strategy = getattr(element, "strategy", None)
            if not path or not strategy or len(path) < 3:
                continue
            lazy = dict(strategy).get("lazy")
            if lazy is None:
                continue
            lazy = lazy_value(lazy)
            if len(path) <= depth and all(a is b for a, b in zip(path, loader_path, strict=False)):
                links[len(path)] = lazy  # a link of the chain that led here
            elif len(path) in (depth + 1, depth + 2) and all(
                a is b for a, b in zip(path[:depth], loader_path, strict=False)
            ):
                relationship = path[depth]
                key = getattr(relationship, "key", None)
                if lazy in EAGER and isinstance(key, str) and hasattr(relationship, "mapper"):
                    found[key] = (relationship, lazy, True)
    if not found:
        return None
    chain = []
    for end in range(3, depth + 1, 2):
        lazy = links.get(end)
        if lazy not in EAGER:
            return None
        chain.append(f"{OPTION_NAMES.get(lazy, lazy)}({label(loader_path[end - 2])})")
    return found, ".".join(chain)


_mapping_eager: dict[Any, bool] = {}


def mapping_is_eager(mapper: Any) -> bool:
    """Whether any relationship of ``mapper`` is eager in the mapping (cached)."""
    found = _mapping_eager.get(mapper)
    if found is None:
        found = any(lazy_value(r.lazy) in EAGER for r in mapper.relationships)
        if len(_mapping_eager) < 10_000:
            _mapping_eager[mapper] = found
    return found


def selects_entity(statement: Any, mapper: Any) -> bool:
    """Whether the statement's columns include the entity itself (not ``select(User.id)``)."""
    descriptions = getattr(statement, "column_descriptions", ())
    return any(d.get("expr") is mapper.class_ for d in descriptions)


def loaded_at_depth(state: Any, depth: int) -> bool:
    """Whether an object the ``load`` event hands over was loaded at a path of
    ``depth`` (1: the statement's own rows; 3: a selectin batch's one level down)."""
    path = getattr(getattr(state, "load_path", None), "path", None)
    return path is None or len(path) == depth


def joined_targets(joins: Any) -> tuple[Any, ...]:
    """The relationships a SELECT joins along by name (``join(User.posts)``: its
    ``_setup_joins``, the same on 2.0 and 2.1), without an ON clause or an alias of its
    own. A join to the class (``join(Post)``), with an ON clause, or through
    ``of_type()`` may follow another path, and contains_eager() would then fill the
    relationship with the wrong rows: those are left out."""
    found: list[Any] = []
    try:
        for join in joins:
            target, onclause = join[0], join[1]
            prop = getattr(target, "property", None)
            if prop is None or onclause is not None:
                continue
            if getattr(target, "_of_type", None) is not None:
                continue
            found.append(prop)
    except Exception:
        return ()
    return tuple(found)


def aliased_selected(statement: Any) -> Any:
    """The aliased entity a SELECT selects, ``with_polymorphic(...)`` or ``aliased(User,
    subquery)``, or None. Options must start from it (``selectinload(poly.Engineer.repos)``,
    ``selectinload(top.posts)``): one on ``Engineer.repos`` alone raises ArgumentError
    there."""
    try:
        for column in statement._raw_columns:
            entity = column._annotations.get("parententity")
            if entity is not None and getattr(entity, "is_aliased_class", False):
                return entity
    except Exception:
        return None
    return None


def joins_relationship(joined: tuple[Any, ...], relationship: Any) -> bool:
    """Whether a SELECT that joined ``joined`` joins along ``relationship`` itself."""
    return any(item is relationship for item in joined)


def base_class_query(relationship: Any, selected: Any) -> bool:
    """Whether a query of ``selected`` (the mapper a SELECT names) ignores a loader option
    on ``relationship`` alone: ``select(Party).options(selectinload(Customer.orders))``
    loads nothing when ``Customer.orders`` is declared on a subclass, unless the
    subclass's columns already load with the base (``with_polymorphic`` on the base's
    mapping, or ``polymorphic_load="selectin"`` on the subclass)."""
    declaring = relationship.parent
    if selected is None or declaring is selected:
        return False
    try:
        if not declaring.isa(selected):
            return False
        if declaring.polymorphic_load == "selectin":
            return False
        return declaring not in selected.with_polymorphic_mappers
    except Exception:
        return False


def left_out_by_base_query(mapper: Any, selected: Any, keys: set[str]) -> bool:
    """Whether ``keys``, attributes of a ``mapper`` object that must load now, are columns
    that a query of ``selected``, a superclass, never loads: ``select(Employee)`` leaves
    ``Engineer``'s own table out, and marks its columns expired, unless ``with_polymorphic``
    or ``selectin_polymorphic`` brings them in. An object expired by a commit misses its
    base class's columns too."""
    if selected is None or selected is mapper or not keys:
        return False
    try:
        return bool(mapper.isa(selected)) and not any(key in selected.attrs for key in keys)
    except Exception:
        return False


def is_superclass_of_declaring(relationship: Any, target: Any) -> bool:
    """Whether ``target`` (what an outer relationship loads) is a strict superclass of
    the class that declares ``relationship``: the chained option then needs
    ``of_type()`` to reach it."""
    declaring = relationship.parent
    try:
        return target is not declaring and bool(declaring.isa(target))
    except Exception:
        return False


def relationship_chain(path: Sequence[Any]) -> list[str]:
    """The relationships along an ORM path of (entity, relationship, ...) pairs, as the
    code names them: ``["Author.books"]`` for an object loaded through ``Author.books``
    (its ``InstanceState.load_path``), empty for one a query selected."""
    return [
        f"{getattr(path[at], 'class_', path[at]).__name__}.{path[at + 1].key}"
        for at in range(0, len(path) - 1, 2)
        if hasattr(path[at + 1], "key")
    ]


class OptionDeferral(NamedTuple):
    """How a ``load_only()`` or ``defer()`` left columns out (see deferred_by_option)."""

    how: str  # "load_only" or "defer"
    kept: list[str]  # the columns load_only() names
    deferred: list[str]  # the columns defer() names, of those read
    through: str  # the relationships it is chained under ("Author.books"), or ""


def deferred_by_option(load_options: Any, mapper: Any, keys: set[str]) -> OptionDeferral | None:
    """How the loader options an object was loaded with (``InstanceState.load_options``)
    left out ``keys``, columns its mapping loads: a ``load_only()`` (a ``column:*``
    wildcard deferring what it does not name) or a ``defer()`` of some of them, on the
    query's entity or chained under a relationship; None when no option deferred them
    (a pending object's unset columns, say)."""
    kept: list[str] = []
    deferred: list[str] = []
    wildcard = False
    through = ""
    for option in load_options or ():
        for element in getattr(option, "context", None) or ():
            path = getattr(getattr(element, "path", None), "path", None)
            strategy = getattr(element, "strategy", None)
            # (entity, column or token), after (entity, relationship) pairs when chained
            # under relationships: the option is the entity's before the last element.
            if not path or not strategy or len(path) % 2 or not _is_root(path[-2], mapper):
                continue
            values = dict(strategy)
            if "deferred" not in values:
                continue
            token = path[-1]
            if isinstance(token, str):
                if token.startswith("column:") and values["deferred"]:
                    wildcard = True
            elif isinstance(getattr(token, "key", None), str):
                (deferred if values["deferred"] else kept).append(token.key)
            else:
                continue
            through = ".".join(relationship_chain(path[:-2]))
    if any(key in keys for key in deferred):
        return OptionDeferral("defer", [], [key for key in deferred if key in keys], through)
    if wildcard:
        return OptionDeferral("load_only", [key for key in kept if key not in keys], [], through)
    return None
