"""SQD257: a query eager-loaded a relationship that the program never read."""

from __future__ import annotations

import weakref
from typing import Any

from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Severity
from sqla_doctor.runtime import loading, reads
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import SELECT, Detector, Flush, Loaded, OrmExecution

_MAX_GROUPS = 256
_MAX_OPEN = 64
# Objects tracked per unit of work by this detector (SQD258 tracks as many): memory
# stays bounded, and what was read by the first ones decides.
MAX_TRACKED = 5_000
_MAX_CHILD_IDS = 10_000


class _Group:
    """The parents one line's query loaded with eager relationships, over the unit."""

    __slots__ = (
        "children",
        "distinct",
        "eager",
        "generation",
        "known",
        "mapper",
        "parents",
        "populated",
        "seen",
        "site",
        "unmeasured",
    )

    def __init__(self, site: CallSite, mapper: Any) -> None:
        self.site = site
        self.mapper = mapper
        # key -> (relationship, strategy, by option)
        self.eager: dict[str, tuple[Any, str, bool]] = {}
        self.parents: list[reads.Watch] = []
        self.unmeasured: list[reads.Watch] = []
        self.seen = 0
        # Parents whose relationships were looked at (alive, not expired, after the query).
        self.known = 0
        self.populated: dict[str, int] = {}
        self.children: dict[str, int] = {}
        # Ids of many-to-one targets, counted once however many parents share them.
        self.distinct: dict[str, set[int]] = {}
        self.generation = reads.generation()

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

    Opt-in: it needs `track-reads = true` (see the configuration), which makes reads of
    the loaded objects' attributes observable. Only relationships of the query's own
    entity are looked at, not nested ones.

    ## Why is this bad?
    An eager load costs a query (`selectinload`) or a wider, multiplied result
    (`joinedload`), and the objects it builds cost memory and time. Options are
    often copied from one query to the next, or kept after the code that needed them
    changed; a mapping-level `lazy="selectin"` loads the relationship for every query of
    the entity, including those that never look at it.

    ## Known problems
    A read counts whoever makes it: a `__repr__`, a serializer, a debugger. A read
    that bypasses the attribute (`obj.__dict__`, `vars(obj)`) is not seen, so a
    program that serializes that way can be reported wrongly. Without `track()`,
    a session's objects are judged only once they are all gone, since they can be read
    after the session ends. Counts are given when the parents were still there at the
    next query or at the end of the unit of work.

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
    execution_kinds = frozenset({SELECT})
    message = (
        "`select({entity})` at {site}: {loader} loaded {loaded} for {parents} {entity} "
        "object(s), and {attribute} was never read — {fix}"
    )

    @classmethod
    def enabled(cls, runtime: RuntimeConfig) -> bool:
        return runtime.track_reads

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self.groups: dict[tuple[Any, ...], _Group] = {}
        # id(statement) -> (a weak reference to it, its group): the QueryContext of each
        # loaded object names the statement it runs.
        self.open: dict[int, tuple[weakref.ref[Any], _Group]] = {}
        self.tracked = 0

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        if self.groups:
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
        if self.tracked >= MAX_TRACKED or not reads.enable() or not reads.cover(mapper):
            return
        key = (site.filename, site.lineno, mapper)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= _MAX_GROUPS:
                return
            group = self.groups[key] = _Group(site, mapper)
        group.eager.update(eager)
        from sqla_doctor.runtime import listeners

        listeners.watch_loads(mapper)
        if len(self.open) >= _MAX_OPEN:
            del self.open[next(iter(self.open))]
        self.open[id(statement)] = (weakref.ref(statement), group)

    def on_load(self, loaded: Loaded) -> None:
        query = getattr(loaded.context, "query", None)
        entry = self.open.get(id(query))
        if entry is None or entry[0]() is not query or self.tracked >= MAX_TRACKED:
            return
        state = loaded.state
        if not loading.loaded_at_root(state):
            return
        group = entry[1]
        group.seen += 1
        obj = state.obj()
        watch = reads.watch(obj) if obj is not None else None
        if watch is None:
            return
        self.tracked += 1
        group.parents.append(watch)
        group.unmeasured.append(watch)

    def on_after_flush(self, flush: Flush) -> None:
        if self.groups:
            self._measure()

    def checkpoint(self) -> None:
        self._measure()
        # An explicit unit checkpoints once, at its end. A session's implicit unit
        # checkpoints at each transaction's end: its objects may still be read after
        # that (returned, serialized), so a group waits until they are all gone.
        final = self.uow.explicit
        for key, group in list(self.groups.items()):
            if not final and any(watch() is not None for watch in group.parents):
                continue
            del self.groups[key]
            self._judge(group)
        if final:
            self.open = {}

    def _measure(self) -> None:
        for group in self.groups.values():
            if group.unmeasured:
                group.measure()

    def _judge(self, group: _Group) -> None:
        if not group.parents or not reads.healthy() or reads.generation() != group.generation:
            return
        observed = reads.tracked_keys(group.mapper)
        for key, (relationship, lazy, by_option) in group.eager.items():
            if key not in observed or any(key in watch.keys for watch in group.parents):
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
        if by_option:
            loader = option
            fix = "drop the option"
            hint = f"remove {option}"
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
                "relationship": attribute,
                "strategy": lazy,
                "by_option": by_option,
                "parents": group.seen,
                "children": children,
            },
            entity=entity,
            site=self.where(group.site),
            loader=loader,
            loaded=loaded,
            parents=group.seen,
            attribute=attribute,
            fix=fix,
        )
