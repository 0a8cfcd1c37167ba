"""SQD258: a query loaded every column of a wide entity, and the program read few."""

from __future__ import annotations

from typing import Any

from sqla_doctor.config import RuntimeConfig
from sqla_doctor.findings import Severity
from sqla_doctor.runtime import loading, reads
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import SELECT, Detector, Loaded, OrmExecution
from sqla_doctor.runtime.followed_queries import FollowedQueries, QueryGroup
from sqla_doctor.runtime.unit_of_work import process

# Objects a line's query must load over the unit of work to be reported: one or two rows
# (a session.get(), a .first() lookup) cost a few wasted bytes each, nothing a load_only()
# list kept in step with the code is worth. A lookup repeated in a loop adds up.
MIN_OBJECTS = 3


def _column_keys(mapper: Any) -> tuple[str, ...]:
    return tuple(prop.key for prop in mapper.column_attrs)


def _keys_of(mapper: Any, columns: Any) -> set[str]:
    keys: set[str] = set()
    for column in columns:
        try:
            keys.add(mapper.get_property_by_column(column).key)
        except Exception:
            continue  # a column of another table is not this mapper's
    return keys


class _Group(QueryGroup):
    """The objects one line's query loaded in full, over the unit of work."""

    __slots__ = ("columns", "eager", "loaded", "measured")

    def __init__(self, site: CallSite, mapper: Any) -> None:
        super().__init__(site, mapper)
        # The entity's column attributes, in mapping order.
        self.columns = _column_keys(mapper)
        # The columns the query put into its objects (not those deferred in the mapping).
        self.loaded: set[str] = set()
        # Mappers of the objects whose loaded columns were looked at already.
        self.measured: set[Any] = set()
        # Relationships the query loads eagerly: their columns are needed to load them.
        self.eager: set[str] = set()


class OverFetchedColumns(Detector):
    """
    ## What it does
    Checks for a query that loaded every column of an entity with many columns
    (`over-fetch-min-columns`, 10) when the program read only a few of them
    (`over-fetch-max-used-ratio`, 0.3, of those loaded) on all the objects that query
    loaded during the unit of work, when that was at least 3 objects: a one-row
    lookup (`session.get()`, `.first()`) over-fetches too little to be worth it, unless
    the line runs again and again. Reported at the query, with the `load_only()`
    option that loads what was read (and the primary key).

    It needs read tracking, which makes reads of the loaded objects' attributes
    observable: on under `sqla-doctor run`, opt-in elsewhere with `track-reads = true`
    (see the configuration). Queries with `load_only()`, `defer()` or
    `undefer()` options on the entity are not reported: their columns were chosen.

    ## Why is this bad?
    A `SELECT` of every column moves and converts data nobody uses: wide text and JSON
    columns, blobs, columns added for other screens. On a list of a thousand rows
    that is most of the query's time and memory, and it keeps the database from
    answering from an index alone.

    ## Known problems
    A read counts whoever makes it (a `__repr__` or a serializer reading every column
    makes the query look used); a read that bypasses the attribute (`obj.__dict__`)
    is not seen, but an object pickled (for a cache) or deep-copied counts all its
    loaded columns as read. The columns a relationship read needs (its foreign key)
    count as read. Objects none of whose attributes is read are not reported: a serializer
    reading `vars(obj)` would be emptied by `load_only()`. A
    column read only on objects of a later query of the same line, after the
    tracked objects (5,000 per unit of work), is not seen. Without `track()`, a
    session's objects are judged only once they are all gone; the objects a
    `track()`-decorated function returns are not judged, since its caller reads them
    after its unit has ended (a response model serializing an endpoint's rows).

    ## Example
    ```python
    users = session.scalars(select(User)).all()  # User has 25 columns
    return [{"id": u.id, "name": u.name} for u in users]
    ```

    Use instead:
    ```python
    users = session.scalars(select(User).options(load_only(User.id, User.name))).all()
    return [{"id": u.id, "name": u.name} for u in users]
    ```

    ## Options
    - `tool.sqla-doctor.runtime.over-fetch-min-columns`: entities with fewer loaded
      columns are never reported (default 10).
    - `tool.sqla-doctor.runtime.over-fetch-max-used-ratio`: the share of loaded
      columns read at or below which a query is reported (default 0.3).

    ## References
    - [Limiting which columns load with column deferral](https://docs.sqlalchemy.org/en/20/orm/queryguide/columns.html)
    - [load_only()](https://docs.sqlalchemy.org/en/20/orm/queryguide/columns.html#sqlalchemy.orm.load_only)
    """

    code = "SQD258"
    name = "over-fetched-columns"
    pitfalls = ("P15",)
    severity = Severity.WARNING
    execution_kinds = frozenset({SELECT})
    message = (
        "`select({entity})` at {site} loaded all {loaded} columns of {count} {entity} "
        "object(s), and only {used}{names} — {fix}"
    )

    @classmethod
    def enabled(cls, runtime: RuntimeConfig) -> bool:
        return bool(runtime.track_reads)

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self.queries = FollowedQueries(_Group)

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        state = execution.state
        site = execution.site
        if state is None or site is None or execution.in_flush:
            return
        mapper = state.bind_mapper
        if mapper is None or len(mapper.column_attrs) < self.config.over_fetch_min_columns:
            return
        statement = state.statement
        options = None
        if getattr(statement, "_with_options", None):
            options = loading.root_options(statement, mapper)
            if options.columns:
                return
        if not loading.selects_entity(statement, mapper):
            return
        group = self.queries.follow(statement, site, mapper)
        if group is not None and (options is not None or loading.mapping_is_eager(mapper)):
            group.eager.update(loading.eager_relationships(mapper, options))

    def on_load(self, loaded: Loaded) -> None:
        group = self.queries.group_of(loaded)
        if group is None:
            return
        state = loaded.state
        if state.mapper not in group.measured:
            # The load event follows the row's columns into the instance's __dict__:
            # what is there is what the query fetched (all objects of one mapper alike).
            group.measured.add(state.mapper)
            dict_ = state.dict
            group.loaded.update(key for key in group.columns if key in dict_)
        self.queries.watch(group, state)

    def checkpoint(self) -> None:
        self.queries.settle(
            final=self.uow.explicit or process.exiting,
            judge=self._judge,
            returned=self.uow.returned,
        )

    def _judge(self, group: _Group) -> None:
        if group.seen < MIN_OBJECTS or not group.judgeable():
            return
        loaded = group.loaded
        runtime = self.config
        if len(loaded) < max(runtime.over_fetch_min_columns, 1):
            return
        mapper = group.mapper
        read: set[str] = set()
        for watch in group.watches:
            read |= watch.keys
        if not read:
            # No attribute read at all: either read around them
            # (`vars(obj)`, `obj.__dict__`), and load_only() would empty that output, or
            # not used, which is no case for load_only() either.
            return
        # A column whose reads cannot be seen (its descriptor is not switched) counts as used.
        used = (read | (loaded - reads.tracked_keys(mapper))) & loaded
        # A relationship read or loaded eagerly needs its own columns (a foreign key).
        needing = (read | group.eager) & set(mapper.relationships.keys())
        for key in needing:
            used |= _keys_of(mapper, mapper.relationships[key].local_columns) & loaded
        if len(used) > runtime.over_fetch_max_used_ratio * len(loaded):
            return
        primary = _keys_of(mapper, mapper.primary_key)
        keep = [key for key in group.columns if key in primary or key in used]
        entity = mapper.class_.__name__
        option = f"load_only({', '.join(f'{entity}.{key}' for key in keep)})"
        names = [key for key in group.columns if key in used]
        self.report(
            group.site,
            key=(group.site.filename, group.site.lineno, entity),
            subject=entity,
            hint=f".options({option})",
            details={
                "entity": entity,
                "loaded_columns": len(loaded),
                "read_columns": names,
                "objects": group.seen,
                "loader_option": option,
            },
            entity=entity,
            site=self.where(group.site),
            loaded=len(loaded),
            count=group.seen,
            used=f"{len(names)} {'was' if len(names) == 1 else 'were'} used",
            names=f" ({', '.join(names)})" if names else "",
            fix=f"add .options({option}) to that query",
        )
