"""SQD257: a query eager-loaded a relationship that the program never read."""

from __future__ import annotations

from typing import Any

from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Severity
from sqla_doctor.runtime import loading, reads
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import (
    RELATIONSHIP_LOAD,
    SELECT,
    Detector,
    Flush,
    Loaded,
    OrmExecution,
)
from sqla_doctor.runtime.detectors.session_leak import is_awaited
from sqla_doctor.runtime.followed_queries import FollowedQueries, QueryGroup
from sqla_doctor.runtime.unit_of_work import process

_MAX_CHILD_IDS = 10_000


class _Group(QueryGroup):
    """The parents one line's query loaded with eager relationships, over the unit."""

    __slots__ = (
        "chain",
        "children",
        "distinct",
        "eager",
        "known",
        "link",
        "populated",
        "root",
        "unmeasured",
    )

    def __init__(self, site: CallSite, mapper: Any) -> None:
        super().__init__(site, mapper)
        # For objects a selectin batch loaded (depth > 1): the query's own entity and
        # the option chain that loaded them (``selectinload(Blog.posts)``).
        self.root: Any = None
        self.chain = ""
        # And the group of the query's own rows, with the key of the relationship that
        # loaded these from them: unread, it is that group's finding, not this one's.
        self.link: tuple[_Group, str] | None = None
        # key -> (relationship, strategy, by option)
        self.eager: dict[str, tuple[Any, str, bool]] = {}
        self.unmeasured: list[reads.Watch] = []
        # Parents whose relationships were looked at (alive, not expired, after the query).
        self.known = 0
        self.populated: dict[str, int] = {}
        self.children: dict[str, int] = {}
        # Ids of many-to-one targets, counted once however many parents share them.
        self.distinct: dict[str, set[int]] = {}

    def measure(self) -> None:
        """What the eager loads put into the parents loaded since last time.

        Reads the instance's ``__dict__`` only (never an attribute, which could load).
        Runs at the next query, flush or end of the unit: by then the query's rows are
        consumed and its selectin loads done.
        """
        pending, self.unmeasured = self.unmeasured, []
        from sqlalchemy.orm.attributes import instance_state

        for watch in pending:
            obj = watch()
            if obj is None:
                continue
            state = instance_state(obj)
            if state.expired:
                continue
            self.known += 1
            dict_ = state.dict
            for key, (relationship, _, _) in self.eager.items():
                if key not in dict_:
                    continue
                self.populated[key] = self.populated.get(key, 0) + 1
                value = dict_[key]
                if value is None:
                    continue
                if relationship.uselist:
                    self.children[key] = self.children.get(key, 0) + len(value)
                else:
                    ids = self.distinct.setdefault(key, set())
                    if id(value) not in ids and len(ids) < _MAX_CHILD_IDS:
                        ids.add(id(value))
                        self.children[key] = self.children.get(key, 0) + 1


class UnusedEagerLoad(Detector):
    """
    ## What it does
    Checks for a relationship that a query loaded eagerly (a `selectinload()`,
    `joinedload()` or `subqueryload()` option, or `lazy="selectin"`/`"joined"` in the
    mapping) for objects none of which had it read during the unit of work. Reported
    at the query, with how many related objects were loaded for nothing.

    It needs read tracking, which makes reads of the loaded objects' attributes
    observable: on under `sqla-doctor run`, opt-in elsewhere with `track-reads = true`
    (see the configuration). Relationships of the query's own entity are looked at,
    and those an option chained below a `selectinload()`, `subqueryload()` or
    `joinedload()` loads for the objects that one loaded
    (`selectinload(Blog.posts).selectinload(Post.tags)`,
    `joinedload(Blog.posts).options(selectinload(Post.tags))`: `Post.tags`, which the
    fix tells to drop from the chain); not those further down than one `joinedload()`,
    nor a nested relationship's own `lazy="selectin"` mapping. A chain whose first
    relationship went unread is reported there, once.

    For a relationship eager by its mapping, the fix is `lazy="select"` in the mapping
    or a `lazyload()` option on the query; for a query that is awaited (async code, where
    `lazy="selectin"` is what keeps reads free of IO), a `raiseload()` option on it.

    ## Why is this bad?
    An eager load costs a query (`selectinload`) or a wider, multiplied result
    (`joinedload`), and the objects it builds cost memory and time. Options are
    often copied from one query to the next, or kept after the code that needed them
    changed; a mapping-level `lazy="selectin"` loads the relationship for every query of
    the entity, including those that never look at it.

    ## Known problems
    A read counts whoever makes it: a `__repr__`, a serializer, a debugger. A read
    that bypasses the attribute (`obj.__dict__`, `vars(obj)`) is not seen, so a
    program that serializes that way can be reported wrongly; an object pickled (for a
    cache) or deep-copied counts as reading everything it had loaded. Without `track()`,
    a session's objects are judged only once they are all gone, since they can be read
    after the session ends; the objects a `track()`-decorated function returns are not
    judged, since its caller reads them after its unit has ended. Counts are given when
    the parents were still there at the next query or at the end of the unit of work.

    ## Example
    ```python
    users = session.scalars(select(User).options(selectinload(User.posts))).all()
    return [user.name for user in users]
    ```

    Use instead:
    ```python
    users = session.scalars(select(User)).all()
    return [user.name for user in users]
    ```

    ## References
    - [Relationship loading techniques](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html)
    - [Wildcard loading strategies](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#wildcard-loading-strategies)
    """

    code = "SQD257"
    name = "unused-eager-load"
    pitfalls = ("P30",)
    severity = Severity.WARNING
    execution_kinds = frozenset({SELECT, RELATIONSHIP_LOAD})
    message = (
        "`select({query})` at {site}: {loader} loaded {loaded} for {parents} {entity} "
        "object(s), and {attribute} was never read — {fix}"
    )

    @classmethod
    def enabled(cls, runtime: RuntimeConfig) -> bool:
        return bool(runtime.track_reads)

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self.queries = FollowedQueries(_Group)

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        if execution.kind is RELATIONSHIP_LOAD:
            # A batch inside the root query's loading: its parents are not done yet.
            self._follow_batch(execution)
            return
        if self.queries.groups:
            self._measure()
        state = execution.state
        site = execution.site
        if state is None or site is None or execution.in_flush:
            return
        mapper = state.bind_mapper
        if mapper is None:
            return
        statement = state.statement
        options = None
        if getattr(statement, "_with_options", None):
            options = loading.root_options(statement, mapper)
        elif not loading.mapping_is_eager(mapper):
            return
        eager = loading.eager_relationships(mapper, options)
        if not eager or not loading.selects_entity(statement, mapper):
            return
        group = self.queries.follow(statement, site, mapper)
        if group is not None:
            group.eager.update(eager)
            if options is not None:
                self._follow_joined(group, statement)

    def _follow_joined(self, root: _Group, statement: Any) -> None:
        """The objects a ``joinedload()`` of the query brings in its own rows, when the
        program chained options below it (``joinedload(Blog.posts).selectinload(Post.tags)``
        or ``.options(...)``): followed as the line's, one level down, as for a
        ``selectinload()``'s batch."""
        for loader_path in loading.joined_links(statement, root.mapper):
            nested = loading.nested_eager(statement, loader_path)
            if nested is None:
                continue
            group = self.queries.follow_joined(root, loader_path)
            if group is None:
                continue
            eager, chain = nested
            group.root, group.chain = root.mapper, chain
            group.eager.update(eager)
            group.link = (root, loader_path[1].key)

    def _follow_batch(self, execution: OrmExecution) -> None:
        """A selectin (or subquery) batch whose objects the query's chained options load
        further (``selectinload(Blog.posts).selectinload(Post.tags)``): follow them as
        the root query's line's, one level down. Only options chained by the program
        count, not its mapping's ``lazy="selectin"`` (which is every query's)."""
        state = execution.state
        site = execution.site
        if state is None or site is None or execution.in_flush:
            return
        statement = state.statement
        if not getattr(statement, "_with_options", None):
            return
        mapper = state.bind_mapper
        path = getattr(state.loader_strategy_path, "path", None)
        if mapper is None or not path:
            return
        loader_path = (*path, mapper)
        nested = loading.nested_eager(statement, loader_path)
        if nested is None:
            return
        group = self.queries.follow(statement, site, mapper)
        if group is None or (group.eager and group.depth != len(loader_path)):
            return
        eager, chain = nested
        group.depth, group.root, group.chain = len(loader_path), path[0], chain
        group.eager.update(eager)
        if len(path) == 2:
            root = self.queries.groups.get((site.filename, site.lineno, path[0]))
            if root is not None:
                group.link = (root, path[1].key)

    def on_load(self, loaded: Loaded) -> None:
        group = self.queries.group_of(loaded)
        if group is None:
            return
        watch = self.queries.watch(group, loaded.state)
        if watch is not None:
            group.unmeasured.append(watch)

    def on_after_flush(self, flush: Flush) -> None:
        if self.queries.groups:
            self._measure()

    def checkpoint(self) -> None:
        self._measure()
        self.queries.settle(
            final=self.uow.explicit or process.exiting,
            judge=self._judge,
            returned=self.uow.returned,
        )

    def _measure(self) -> None:
        for group in self.queries.groups.values():
            if group.unmeasured:
                group.measure()

    def _judge(self, group: _Group) -> None:
        if not group.judgeable():
            return
        if group.link is not None:
            root, key = group.link
            if root.judgeable() and not any(key in watch.keys for watch in root.watches):
                return  # the whole chain went unread: its first link is reported
        observed = reads.tracked_keys(group.mapper)
        for key, (relationship, lazy, by_option) in group.eager.items():
            if key not in observed or any(key in watch.keys for watch in group.watches):
                continue
            populated = group.populated.get(key, 0)
            if group.known and not populated:
                continue  # looked at, and the eager load put nothing there
            self._report(group, key, relationship, lazy, by_option, populated)

    def _report(
        self,
        group: _Group,
        key: str,
        relationship: Any,
        lazy: str,
        by_option: bool,
        populated: int,
    ) -> None:
        entity = group.mapper.class_.__name__
        attribute = f"{relationship.parent.class_.__name__}.{key}"
        target = relationship.mapper.class_.__name__
        option = f"{loading.OPTION_NAMES.get(lazy, lazy)}({attribute})"
        lazyload = f".options(lazyload({attribute}))"
        query = group.root.class_.__name__ if group.root is not None else entity
        if group.chain:
            # Chained below the query's own option: the link is what goes.
            loader = f"{group.chain}.{option}"
            fix = f"drop .{option} from that option, keeping {group.chain}"
            hint = f"remove .{option}"
        elif by_option:
            loader = option
            fix = "drop the option"
            hint = f"remove {option}"
        elif is_awaited(group.site):
            # Async code maps lazy="selectin" so that reads need no IO: lazy="select"
            # would raise MissingGreenlet wherever it is read. raiseload() skips the load
            # here and fails loudly if this query's objects are read after all.
            loader = f'{attribute} (lazy="{lazy}" in the mapping)'
            hint = f".options(raiseload({attribute}))"
            fix = f"add {hint} to this query"
        else:
            loader = f'{attribute} (lazy="{lazy}" in the mapping)'
            fix = f'map it with lazy="select", or add {lazyload} to this query'
            hint = lazyload
        children = group.children.get(key) if populated else None
        loaded = f"{children} {target} object(s)" if children is not None else f"{target} objects"
        self.report(
            group.site,
            key=(group.site.filename, group.site.lineno, attribute),
            subject=attribute,
            hint=hint,
            details={
                "entity": entity,
                "query_entity": query,
                "relationship": attribute,
                "strategy": lazy,
                "by_option": by_option,
                "parents": group.seen,
                "children": children,
            },
            query=query,
            entity=entity,
            site=self.where(group.site),
            loader=loader,
            loaded=loaded,
            parents=group.seen,
            attribute=attribute,
            fix=fix,
        )
