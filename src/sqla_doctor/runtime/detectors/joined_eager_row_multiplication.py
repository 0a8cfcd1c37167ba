"""SQD256: a query joined-eager-loaded a collection, multiplying the rows it fetched."""

from __future__ import annotations

import weakref
from typing import Any

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import SELECT, Detector, Flush, Loaded, OrmExecution
from sqla_doctor.runtime.internal_errors import internal_error

# A tree of joined-eager-loaded relationships: relationship -> what is joined below it.
Tree = dict[Any, "Tree"]

_MAX_OPEN = 16
_MAX_PARENTS = 1_000
_MAX_VISITS = 100_000
_MAX_DEPTH = 4
_MAX_SEEN = 1_000
_mapping_cache: dict[Any, bool] = {}


def _lazy(relationship: Any) -> Any:
    lazy = relationship.lazy
    return "joined" if lazy is False else lazy


def _mapping_joins(mapper: Any) -> bool:
    """Whether any relationship of ``mapper`` is ``lazy="joined"`` in the mapping."""
    found = _mapping_cache.get(mapper)
    if found is None:
        found = any(_lazy(r) == "joined" for r in mapper.relationships)
        if len(_mapping_cache) < 10_000:
            _mapping_cache[mapper] = found
    return found


def _option_strategies(statement: Any) -> tuple[dict[tuple[Any, ...], Any], bool]:
    """Loader strategies the statement's options name, by relationship path.

    Loader options keep their paths in ``Load.context`` (``_LoadElement.path`` and
    ``.strategy``), the same on SQLAlchemy 2.0 and 2.1; a wildcard (``lazyload("*")``)
    is keyed by its parent path plus ``"*"``. Read defensively: an unknown shape gives
    no strategies, and the statement is judged by its mapping.
    """
    strategies: dict[tuple[Any, ...], Any] = {}
    joined = False
    for option in getattr(statement, "_with_options", ()):
        for element in getattr(option, "context", ()):
            path = getattr(getattr(element, "path", None), "path", None)
            strategy = getattr(element, "strategy", None)
            if not path or not strategy:
                continue
            lazy = dict(strategy).get("lazy")
            if lazy is None:
                continue
            props: list[Any] = []
            for token in path[1::2]:
                props.append("*" if isinstance(token, str) and token.endswith("*") else token)
            strategies[tuple(props)] = lazy
            joined = joined or lazy == "joined"
    return strategies, joined


def joined_tree(mapper: Any, strategies: dict[tuple[Any, ...], Any]) -> Tree:
    """The relationships a SELECT of ``mapper`` joins: options first, then the mapping."""

    def walk(current: Any, prefix: tuple[Any, ...], depth: int, seen: frozenset[Any]) -> Tree:
        tree: Tree = {}
        if depth >= _MAX_DEPTH:
            return tree
        for relationship in current.relationships:
            path = (*prefix, relationship)
            lazy = strategies.get(path)
            if lazy is None:
                lazy = strategies.get((*prefix, "*"))
                # The mapping's lazy="joined" stops at a cycle unless join_depth says.
                if lazy is None and relationship.mapper not in seen:
                    lazy = _lazy(relationship)
            if lazy == "joined":
                target = relationship.mapper
                tree[relationship] = walk(target, path, depth + 1, seen | {target})
        return tree

    return walk(mapper, (), 0, frozenset({mapper}))


def _collections(tree: Tree, chain: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths from the root to each joined collection, deepest only."""
    found: list[tuple[Any, ...]] = []
    for relationship, below in tree.items():
        path = (*chain, relationship)
        deeper = _collections(below, path)
        if deeper:
            found.extend(deeper)
        elif relationship.uselist:
            found.append(path)
    return found


def _label(relationship: Any) -> str:
    return f"{relationship.parent.class_.__name__}.{relationship.key}"


def _option(path: tuple[Any, ...]) -> str:
    # Collections go to selectinload; a many-to-one on the way stays joined (cheap).
    parts = [f"{'selectinload' if r.uselist else 'joinedload'}({_label(r)})" for r in path]
    return ".".join(parts)


class _Open:
    """A SELECT that joined collections, collecting the parents it loads."""

    __slots__ = (
        "budget",
        "chain",
        "collections",
        "early",
        "keys",
        "loaded_rows",
        "mapper",
        "parents",
        "seen",
        "site",
        "tree",
        "watch",
    )

    def __init__(self, site: CallSite, mapper: Any, tree: Tree) -> None:
        self.site = site
        self.mapper = mapper
        self.tree = tree
        self.collections = _collections(tree)
        # Weak references to the states of the parents loaded, so that counting their
        # rows later keeps none of them alive.
        self.parents: list[weakref.ref[Any]] = []
        # Each parent's rows, counted when the next parent loads (None: not counted).
        # The database returns a parent's joined rows together (SQLite, and PostgreSQL's
        # nested loop and merge joins do), so the count is complete then, and never more
        # than the rows: it stands in for a parent gone before the end, and it counts
        # the children the session already held (shared children of a many-to-many),
        # which load no object and so escape ``loaded_rows``.
        self.early: list[int | None] = []
        self.budget = [_MAX_VISITS]
        self.seen = 0
        # One collection (or a nested chain) is also counted as it loads, for when the
        # parents are gone before they can be counted exactly (a helper that returns a
        # sum): its rows are the objects at the end of the chain, plus one for each
        # object on the way whose next relationship came back empty (a LEFT OUTER JOIN
        # row of NULLs).
        self.chain: tuple[Any, ...] | None = (
            self.collections[0] if len(self.collections) == 1 else None
        )
        self.keys = tuple(r.key for r in self.chain) if self.chain is not None else ()
        self.loaded_rows = 0
        # The last parent loaded, whose rows no next parent will count: counted as it is
        # collected (see _watch), while its own collections are still there.
        self.watch: weakref.ref[Any] | None = None

    def add_parent(self, state: Any) -> None:
        """Keep ``state``, a parent just loaded, and count the rows of the one before it."""
        self.seen += 1
        parents = self.parents
        if len(parents) >= _MAX_PARENTS:
            return
        if parents:
            previous = parents[-1]()
            if previous is not None:
                self.early[-1] = _rows(previous.dict, self.tree, self.budget)
        parents.append(weakref.ref(state))
        self.early.append(None)
        self.watch = _watch(state, self.tree, self.early)

    def count_last(self) -> None:
        """Count the rows of the last parent loaded so far, while its __dict__ holds them
        (a commit is about to expire it)."""
        if self.parents:
            last = self.parents[-1]()
            if last is not None:
                counted = _rows(last.dict, self.tree, self.budget)
                if counted is not None:
                    self.early[-1] = counted

    def count(self, state: Any, path: Any) -> None:
        """Count the rows ``state``, loaded at ``path`` of the joined tree, stands for."""
        chain, keys = self.chain, self.keys
        depth = len(path) // 2
        if chain is None or depth > len(keys):
            return
        if depth and tuple(getattr(p, "key", None) for p in path[1::2]) != keys[:depth]:
            return  # loaded along another branch (a many-to-one beside the chain)
        if depth == len(keys):
            self.loaded_rows += 1
            return
        # The joined loader fills the relationship from the object's first row before
        # the object's load event: empty then means no row below it.
        dict_ = state.dict
        key = keys[depth]
        if key not in dict_:
            return
        value = dict_[key]
        if value is None or (chain[depth].uselist and len(value) == 0):
            self.loaded_rows += 1


class JoinedEagerRowMultiplication(Detector):
    """
    ## What it does
    Checks for a query that joined-eager-loads one or more collections (one-to-many or
    many-to-many relationships), by `joinedload()` options or by relationships mapped
    with `lazy="joined"`, and measures what it cost: the rows the database sent back
    against the objects they made. The rows are counted exactly from what the query
    loaded (one row per child, per combination of children for collections joined side
    by side), without another query. It is the runtime twin of SQD203, which finds
    joined collections in the source.

    Two or more collections joined side by side (a cartesian product) are reported
    whenever they repeated a row. One collection, or a chain of nested ones
    (`joinedload(Author.books).joinedload(Book.reviews)`), is reported only when the
    multiplication is large: the query returned at least `joined-eager-min-rows` rows
    (50) and repeated each parent at least `joined-eager-min-factor` times (3.0) on
    average. A `joinedload()` of a small collection over moderate data (a few parents
    with a few children each) is a reasonable choice and is not reported; both
    minimums are settings of `[tool.sqla-doctor.runtime]`.

    The fix is a `selectinload()` option on that query; a collection mapped with
    `lazy="joined"` is joined into every query of its class, so the fix also names the
    mapping (`lazy="selectin"`).

    ## Why is this bad?
    A JOIN to a collection repeats every parent's columns once per child: 100 users with
    50 posts each come back as 5,000 rows, and the result needs `.unique()`. Two
    collections joined side by side make a cartesian product: 50 posts × 20 comments is
    1,000 rows per user. `selectinload()` loads each collection with one more query and
    no repetition.

    ## Known problems
    The rows are measured over the parents the query loaded into the session, exactly
    when they are all still there at the next query of the unit of work (or its end).
    A parent gone by then (a helper that streams its result, or loads, sums and returns
    a number; a commit that expired it) was counted when the next parent loaded, which
    is exact when the database returned each parent's rows together, and too low
    otherwise; the last one is counted as it is freed, from weak references to its
    collections, or as a commit or rollback is about to expire it. A last parent freed
    by the cycle collector (one in a reference cycle of the program's own) is not
    counted, and is assumed to be like the others.
    One collection, or a nested chain, is also counted from the objects as they
    loaded, which misses children that were already in the session (the shared
    children of a many-to-many), and the larger count is taken. Parents that were
    already in the session are not counted; when no parent was, there are no numbers,
    and only collections side by side are reported (without them). A query whose
    collections held at most one child each is not reported. Collections joined by a
    lazy load or a `selectinload()` batch (`lazy="joined"` one level down) are not
    looked at.

    ## Example
    ```python
    users = session.scalars(select(User).options(joinedload(User.posts))).unique().all()
    ```

    Use instead:
    ```python
    users = session.scalars(select(User).options(selectinload(User.posts))).all()
    ```

    ## References
    - [Joined eager loading](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#joined-eager-loading)
    - [The Zen of Joined Eager Loading](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#the-zen-of-joined-eager-loading)
    - [Select IN loading](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#select-in-loading)
    """

    code = "SQD256"
    name = "joined-eager-row-multiplication"
    pitfalls = ("P29",)
    severity = Severity.WARNING
    execution_kinds = frozenset({SELECT})
    message = "`select({entity})` at {site} joined-eager-loaded {what}{measure} — {fix}"

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        # id(statement) -> its open record; the QueryContext of each loaded object names
        # the statement it runs.
        self.open: dict[int, _Open] = {}
        self.seen: set[tuple[Any, ...]] = set()

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        if self.open:
            self._measure_all()
        state = execution.state
        site = execution.site
        if state is None or site is None or execution.in_flush:
            return
        # bind_mapper is the statement's first entity, already computed by the Session
        # (all_mappers would walk the column descriptions of every SELECT).
        mapper = state.bind_mapper
        if mapper is None:
            return
        statement = state.statement
        if getattr(statement, "_with_options", None):
            strategies, option_joins = _option_strategies(statement)
        else:
            strategies, option_joins = {}, False
        if not option_joins and not _mapping_joins(mapper):
            return
        # Only a SELECT of the entity itself eager-loads (not ``select(Book.title)``).
        descriptions = getattr(statement, "column_descriptions", ())
        if not any(d.get("expr") is mapper.class_ for d in descriptions):
            return
        tree = joined_tree(mapper, strategies)
        record = _Open(site, mapper, tree)
        if not record.collections:
            return
        key = (site.filename, site.lineno, tuple(map(tuple, record.collections)))
        if key in self.seen or len(self.open) >= _MAX_OPEN:
            return
        from sqla_doctor.runtime import listeners

        listeners.watch_loads(mapper)
        if record.chain is not None:
            # The chain's objects are counted as they load, too.
            for relationship in record.chain:
                listeners.watch_loads(relationship.mapper)
        self.open[id(statement)] = record

    def on_load(self, loaded: Loaded) -> None:
        record = self.open.get(id(getattr(loaded.context, "query", None)))
        if record is None:
            return
        state = loaded.state
        # Objects loaded further down the joined path are children (of the same class,
        # or of a watched one).
        path = getattr(getattr(state, "load_path", None), "path", None)
        if path is None:
            return
        if len(path) == 1:
            record.add_parent(state)
        record.count(state, path)

    def on_objects_expire(self, session: Any) -> None:
        # The parents counted when the next one loaded are; the last one is counted now.
        for record in self.open.values():
            record.count_last()

    def on_after_flush(self, flush: Flush) -> None:
        if self.open:
            self._measure_all()

    def checkpoint(self) -> None:
        if self.open:
            self._measure_all()

    def _measure_all(self) -> None:
        records, self.open = list(self.open.values()), {}
        for record in records:
            self._measure(record)

    def _measure(self, record: _Open) -> None:
        parents = rows = 0
        budget = [_MAX_VISITS]
        for ref, early in zip(record.parents, record.early, strict=True):
            state = ref()
            counted = _rows(state.dict, record.tree, budget) if state is not None else None
            if counted is None:
                # Gone, or expired by a commit: as counted before (or not at all).
                counted = early
            if counted is None:
                continue
            parents += 1
            rows += counted
        if record.chain is not None and parents < record.seen and rows <= record.loaded_rows:
            # Some parents died (or were expired) before they could be counted: the
            # rows counted as they loaded cover them all. The count from the objects
            # themselves stays the exact one when they are all there, since children
            # already in the session were joined again without a load event; and when
            # it finds more rows than loaded objects, such children were there.
            parents, rows = record.seen, record.loaded_rows
        if parents and rows <= parents:
            return  # nothing was repeated this time
        if len(record.collections) == 1 and not self._large(record, parents, rows):
            return  # one collection (or a nested chain), moderately multiplied
        key = (
            record.site.filename,
            record.site.lineno,
            tuple(map(tuple, record.collections)),
        )
        if key in self.seen or len(self.seen) >= _MAX_SEEN:
            return
        self.seen.add(key)
        self._report(record, key, parents, rows)

    def _large(self, record: _Open, parents: int, rows: int) -> bool:
        """Whether one joined collection multiplied the rows past the configured minimums.

        Unmeasured (no parent left to count) is not large: only the cartesian product of
        collections side by side is reported without numbers. Parents collected before
        they were counted are assumed to be like the ones counted.
        """
        if not parents:
            return False
        factor = rows / parents
        estimated = factor * max(record.seen, parents)
        return (
            factor >= self.config.joined_eager_min_factor
            and estimated >= self.config.joined_eager_min_rows
        )

    def _report(self, record: _Open, key: Any, parents: int, rows: int) -> None:
        entity = record.mapper.class_.__name__
        collections = record.collections
        labels: list[str] = []
        for path in collections:
            labels.extend(_label(r) for r in path if r.uselist and _label(r) not in labels)
        if len(collections) > 1:
            what = (
                f"the collections {_join(labels)} side by side (a cartesian product: one row "
                f"per combination of their children)"
            )
        else:
            noun = "collection" if len(labels) == 1 else "nested collections"
            what = f"the {noun} {_join(labels)}"
        factor = rows / parents if parents else None
        measure = ""
        if factor is not None:
            measure = (
                f": {parents} {entity} object(s) came back as {rows} rows "
                f"({factor:.1f}× per {entity})"
            )
        options = ", ".join(_option(path) for path in collections)
        fix = f"load the collection(s) with .options({options}) instead"
        mapped = [
            _label(r) for path in collections for r in path if r.uselist and _lazy(r) == "joined"
        ]
        if mapped:
            # Every query of the class joins it: the mapping is the one place to fix.
            fix += (
                f', or map {_join(mapped)} with lazy="selectin" (lazy="joined" in the '
                "mapping joins it into every query)"
            )
        self.report(
            record.site,
            key=key,
            subject=", ".join(labels),
            hint=f".options({options})",
            details={
                "entity": entity,
                "collections": labels,
                "parents": parents,
                "rows": rows,
                "factor": round(factor, 2) if factor is not None else None,
                "loader_option": options,
            },
            entity=entity,
            site=self.where(record.site),
            what=what,
            measure=measure,
            fix=fix,
        )


def _watch(state: Any, tree: Tree, early: list[int | None]) -> weakref.ref[Any] | None:
    """A weak reference to the object of ``state``, the last parent loaded so far, that
    counts its rows into ``early[-1]`` as it is collected.

    Nothing is kept alive: the callback holds weak references to the parent's joined
    values (its collection lists, a many-to-one's object). When reference counting frees
    the parent, its weak references are cleared before its ``__dict__`` is, so those
    values are still there; a parent freed by the cycle collector has its values' weak
    references cleared too, and stays uncounted.
    """
    obj = state.obj()
    if obj is None:
        return None
    dict_ = state.dict
    values: dict[str, weakref.ref[Any] | None] = {}
    try:
        for relationship in tree:
            key = relationship.key
            if key in dict_:
                value = dict_[key]
                values[key] = weakref.ref(value) if value is not None else None
    except TypeError:
        return None  # a collection class without weak references
    index = len(early) - 1
    budget = [_MAX_VISITS]

    def count(_gone: Any) -> None:
        try:
            held = {}
            for key, ref in values.items():
                value = ref() if ref is not None else None
                if ref is not None and value is None:
                    return  # freed with the parent, by the cycle collector
                held[key] = value
            early[index] = _rows(held, tree, budget)
        except Exception:
            internal_error("SQD256's count of a collected parent")

    return weakref.ref(obj, count)


def _rows(dict_: Any, tree: Tree, budget: list[int]) -> int | None:
    """Rows a LEFT OUTER JOIN of ``tree`` returns for one object, from what it holds.

    Reads only the instance's ``__dict__`` (never an attribute, which could load); None
    when a joined relationship is not there (expired, or left unloaded).
    """
    from sqlalchemy.orm.attributes import instance_dict

    total = 1
    for relationship, below in tree.items():
        budget[0] -= 1
        if budget[0] < 0:
            return None
        key = relationship.key
        if key not in dict_:
            return None
        value = dict_[key]
        if value is None:
            children: list[Any] = []
        elif relationship.uselist:
            children = list(value.values() if isinstance(value, dict) else value)
        else:
            children = [value]
        if below:
            count = 0
            for child in children:
                try:
                    counted = _rows(instance_dict(child), below, budget)
                except Exception:
                    counted = None
                count += counted if counted is not None else 1
        else:
            count = len(children)
        total *= max(1, count)
    return total


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
