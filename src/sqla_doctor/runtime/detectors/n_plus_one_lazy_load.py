"""SQD251: one relationship lazy-loaded for many parents from one line (N+1)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.orm import Session, loading, strategies

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite, called_again_by_library
from sqla_doctor.runtime.detector import (
    LAZY_LOAD,
    RELATIONSHIP_LOAD,
    Detector,
    ErrorSeen,
    OrmExecution,
    inside_call,
    method_codes,
)
from sqla_doctor.runtime.loading import (
    is_superclass_of_declaring,
    joins_relationship,
    label,
    loader_for,
    primary_key_attributes,
    query_option,
)
from sqla_doctor.runtime.unit_of_work import record_of_object

MAX_GROUPS = 1_000
MAX_PARENTS_TRACKED = 4_096
# session.refresh(obj, ["posts"]) loads a relationship it names with a lazy load.
_REFRESH = method_codes(Session, "refresh")
# immediateload() (or lazy="immediate") loads a relationship as each parent's row loads,
# with a lazy load per parent: eager in name only.
# (SQLAlchemy 2.1 named its class _ImmediateLoader.)
_IMMEDIATE_LOADER = getattr(strategies, "_ImmediateLoader", None) or getattr(
    strategies, "ImmediateLoader", None
)
_IMMEDIATE = method_codes(_IMMEDIATE_LOADER, "_load_for_path") if _IMMEDIATE_LOADER else frozenset()
# Reading an attribute of an expired object reloads it (load_scalar_attributes) with the
# loader options of the query that loaded it; a selectinload() among them then loads the
# relationship for that one object, with an immediate load per object reloaded.
# (SQLAlchemy 2.1 named it _load_scalar_attributes.)
_LOAD_EXPIRED = getattr(loading, "_load_scalar_attributes", None) or getattr(
    loading, "load_scalar_attributes", None
)
_EXPIRED_RELOAD = frozenset({_LOAD_EXPIRED.__code__}) if _LOAD_EXPIRED else frozenset()


def _refresh_fix(relationship: Any, option: str) -> str:
    """One query that reloads every parent and the relationship: populate_existing
    overwrites what the session holds, the option reloads the relationship with it."""
    parents = relationship.parent.class_.__name__
    keys = primary_key_attributes(relationship.parent)
    where = f".where({parents}.{keys[0]}.in_(ids))" if len(keys) == 1 else ".where(...)"
    return (
        f"reload all of them in one query instead: session.scalars(select({parents}){where}"
        f".options({option}).execution_options(populate_existing=True))"
    )


def _immediate_fix(relationship: Any, name: str, option: str) -> str:
    parents = relationship.parent.class_.__name__
    if relationship.lazy == "immediate":
        return (
            f'{name} is lazy="immediate", which runs one SELECT per {parents}: add '
            f'.options({option}) to that query, or declare the relationship lazy="selectin"'
        )
    return (
        f"immediateload({name}) runs one SELECT per {parents}: use .options({option}) on that "
        "query instead"
    )


def _contains_eager_fix(relationship: Any, name: str, option: str) -> str:
    # The JOIN is there already (for a WHERE or an ORDER BY): reading the related rows
    # from it costs no query. For a collection it also filters the collection.
    target = relationship.mapper.class_.__name__
    if not relationship.uselist:
        return f"that query already joins {target}: add .options({option}) to fill it from the join"
    return (
        f"that query already joins {target}: add .options({option}) and .unique() to fill "
        f"{name} from the joined rows; it then holds only the rows the query keeps "
        f"(selectinload({name}) loads all of them)"
    )


def _in_ids_example(mapper: Any) -> str:
    keys = primary_key_attributes(mapper)
    if len(keys) != 1:
        return ""
    name = mapper.class_.__name__
    return f" (e.g. select({name}).where({name}.{keys[0]}.in_(ids)))"


def _loaded_through(state: Any, relationship: Any) -> bool:
    """Whether the object of ``state`` was loaded through ``relationship`` (its load path,
    ``Category -> Category.children -> Category``, passes it), not by a query of its own."""
    try:
        return any(element is relationship for element in state.load_path.path)
    except Exception:  # a state without a load path: taken as loaded by a query
        return False


class _Group:
    __slots__ = (
        "by_library",
        "commit_site",
        "expired_reload",
        "first_session",
        "immediate",
        "latest",
        "loads",
        "origin",
        "origin_runs",
        "overflow",
        "parents",
        "refreshed",
        "relationship",
        "root",
        "root_selected",
        "selected",
        "site",
        "walked",
    )

    def __init__(
        self,
        relationship: Any,
        site: CallSite,
        origin: OrmExecution | None,
        selected: Any,
        root: OrmExecution | None = None,
        root_selected: Any = None,
    ) -> None:
        self.relationship = relationship
        self.site = site
        self.origin = origin
        # The mapper the origin query selected (a superclass for a polymorphic query).
        self.selected = selected
        # For a tree walked by lazy loads: the query that loaded its first level, and the
        # mapper it selected.
        self.root = root
        self.root_selected = root_selected
        # Whether a parent was itself loaded through the relationship (a tree walked
        # level by level), not only by a query.
        self.walked = False
        self.loads = 0
        self.parents: set[int] = set()
        self.overflow = 0
        # The executions of the origin's line that loaded the parents, counted as the
        # lazy loads find a new one (0 once another line loaded a parent): as many as
        # the parents means one query per parent, as `session.get()` in a loop.
        self.latest = origin
        self.origin_runs = 1 if origin is not None else 0
        # Loaded by session.refresh(obj, [key]) rather than by reading the attribute.
        self.refreshed = False
        # Loaded by immediateload() as the query's rows loaded.
        self.immediate = False
        # Loaded again by installed code calling the program's function anew (each
        # request of a test client, each job of a worker), with no loop of the program.
        self.by_library = False
        self.first_session: int | None = None
        # Loaded as each expired parent was reloaded, by its query's eager option.
        self.expired_reload = False
        # The commit that expired the parents, if a commit did.
        self.commit_site: CallSite | None = None

    def saw_origin(self, origin: OrmExecution | None) -> None:
        """``origin`` loaded the parent of a new lazy load."""
        if origin is self.latest or not self.origin_runs:
            return
        if origin is None or self.origin is None or origin.site != self.origin.site:
            self.origin_runs = 0
            return
        self.latest = origin
        self.origin_runs += 1

    @property
    def one_query_per_parent(self) -> bool:
        return self.origin_runs >= self.distinct_parents

    def add(self, parent: Any) -> int | None:
        """Count a load; the parent's marker if it is a new parent, else None."""
        self.loads += 1
        key = parent.key
        marker = hash(key) if key is not None else id(parent)
        if marker in self.parents:
            return None
        if len(self.parents) < MAX_PARENTS_TRACKED:
            self.parents.add(marker)
        else:
            self.overflow += 1
        return marker

    def remove(self, marker: int | None) -> None:
        """Take back a load counted by ``add``."""
        self.loads -= 1
        if marker in self.parents:
            self.parents.discard(marker)
        elif marker is not None:
            self.overflow -= 1

    @property
    def distinct_parents(self) -> int:
        return len(self.parents) + self.overflow


class NPlusOneLazyLoad(Detector):
    """
    ## What it does
    Checks for one relationship lazy-loaded, one parent object at a time, for several
    parents from the same line of code in one unit of work (an N+1).

    The line is where the attribute was read: often a loop, a comprehension, a
    serializer, a template or a `to_dict()` helper. Loads are counted per distinct parent,
    so reading the same object's relationship twice is not an N+1. Parents of different
    sessions whose loads come from the program's function called anew by installed code,
    with no loop of the program between (each request a test client sends, each job a
    worker pool takes), are requests of their own, not a loop: a test that calls an
    endpoint once per item is not told its endpoint has an N+1. A loop inside one
    request's session (a view setting a form's fields one by one on the one object it
    loaded) is not a loop over those requests; one that opens a session per item is.

    ## Why is this bad?
    Each lazy load is a round trip to the database. Listing 50 users with their posts runs
    51 queries instead of 2; the page is fast on a developer's ten rows and slow in
    production. Under `AsyncSession` the same lazy load raises `MissingGreenlet` instead.

    ## Known problems
    Lazy loads triggered by the unit of work itself during a flush (cascades, backrefs)
    are not counted. A relationship read for a handful of parents on purpose can be
    allowed with `allow = ["User.posts"]` or `# noqa: SQD251` on the line.

    ## Example
    ```python
    users = session.scalars(select(User)).all()
    for user in users:
        print(user.name, len(user.posts))  # one SELECT per user
    ```

    Use instead:
    ```python
    users = session.scalars(select(User).options(selectinload(User.posts))).all()
    for user in users:
        print(user.name, len(user.posts))
    ```

    When each parent came from its own run of the same query (`session.get(User, id)` in
    a loop, a task run per id), an option on that query would still run two queries per
    parent: the fix named is to load all of them in one query with the option.

    `session.refresh(obj, ["posts"])` in a loop reloads the relationship one parent at a
    time too; an option on the query that first loaded them would reload nothing. The fix
    named is one query that reloads all of them:
    `session.scalars(select(User).where(User.id.in_(ids)).options(selectinload(User.posts))
    .execution_options(populate_existing=True))`.

    `immediateload()` (or `lazy="immediate"`) loads the relationship as each parent's
    row loads, with one SELECT per parent: the fix named is `selectinload()` in its place.

    When the query that loaded the parents already joins along the relationship itself
    (`join(User.posts)`, for a `where()` or an `order_by()`), the fix named is
    `contains_eager()`, which fills the relationship from that join at no extra cost;
    for a collection the message says that it then holds only the rows the query keeps.
    A join to the class, with an ON clause or through `of_type()` may follow another
    path to it, and gets the usual option.

    When the query selects a base class of a polymorphic hierarchy (`select(Party)`) and
    the relationship is declared on a subclass (`Customer.orders`), the option on the
    relationship alone is ignored: the fix named is
    `.options(selectin_polymorphic(Party, [Customer]), selectinload(Customer.orders))`,
    which loads the subclass's rows with their own SELECT that carries it; relationships
    of several subclasses read after one query get one option naming them all (two
    `selectin_polymorphic()` of one base conflict). (No such
    advice when the subclass already loads with the base: `with_polymorphic` in the
    base's mapping, or `polymorphic_load="selectin"` on the subclass.) Below a
    relationship to the base class, the chained option goes through `of_type()`:
    `selectinload(Club.members.of_type(Customer)).selectinload(Customer.orders)`.
    A query of a `with_polymorphic()` entity (`poly = with_polymorphic(Party,
    [Customer])`, `select(poly)`) is told the path through it,
    `selectinload(poly.Customer.orders)`: the option on `Customer.orders` alone raises
    `ArgumentError` there. So is a query of an `aliased()` class (`top = aliased(User,
    ranked)`, `select(top)`): `selectinload(alias.posts)`, alias being that entity.

    ## Options
    - `tool.sqla-doctor.runtime.n-plus-one-threshold`: distinct parents from one line
      before it is reported (default 2).

    ## References
    - [Relationship loading techniques](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html)
    - [Select IN loading](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#select-in-loading)
    - [Preventing implicit IO when using AsyncSession](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#preventing-implicit-io-when-using-asyncsession)
    """

    code = "SQD251"
    name = "n-plus-one-lazy-load"
    pitfalls = ("P01",)
    severity = Severity.WARNING
    spans_nested_units = True
    execution_kinds = frozenset({LAZY_LOAD})
    message = "{relationship} lazy-loaded {count}× from {site}{origin} — {fix}"

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self.groups: dict[tuple[Any, str, int], _Group] = {}
        self.last: tuple[_Group, int | None] | None = None

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        if execution.kind != LAZY_LOAD or execution.in_flush:
            return
        site, relationship, parent = execution.site, execution.relationship, execution.parent
        if site is None or relationship is None or parent is None:
            return
        key = (relationship, site.filename, site.lineno)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                return
            found = self.uow.origin_and_entity_for(parent.mapper)
            selected, origin = found if found is not None else (None, None)
            root = root_selected = None
            if origin is not None and origin.relationship is relationship:
                found_root = self.uow.origin_and_entity_for(parent.mapper, query=True)
                if found_root is not None:
                    root_selected, root = found_root
            group = self.groups[key] = _Group(
                relationship, site, origin, selected, root, root_selected
            )
            group.refreshed = inside_call(_REFRESH)
            group.expired_reload = not group.refreshed and inside_call(_EXPIRED_RELOAD)
            if group.expired_reload:
                # Where the parent's session last committed: what expired it.
                record = record_of_object(parent)
                group.commit_site = record.commit_site if record is not None else None
            group.immediate = (
                not group.refreshed and not group.expired_reload and inside_call(_IMMEDIATE)
            )
            group.first_session = parent.session_id
            marker = group.add(parent)
        else:
            marker = group.add(parent)
            if marker is not None:
                found = self.uow.origin_and_entity_for(parent.mapper)
                group.saw_origin(found[1] if found is not None else None)
                if len(group.parents) == 2 and parent.session_id != group.first_session:
                    # Parents of two sessions (two requests, two jobs?): ask the stack once.
                    record = record_of_object(parent)
                    held_by = record.opened if record is not None else ()
                    group.by_library = called_again_by_library(site, held_by)
        if not group.walked and _loaded_through(parent, relationship):
            group.walked = True
        self.last = (group, marker)

    def on_error(self, seen: ErrorSeen) -> None:
        # A lazy load that raised MissingGreenlet loaded nothing, and repeats for every
        # parent because it fails: SQD255 explains it, it is not an N+1.
        if isinstance(seen.error, MissingGreenlet) and self.last is not None:
            group, marker = self.last
            self.last = None
            group.remove(marker)

    def checkpoint(self) -> None:
        threshold = max(self.config.n_plus_one_threshold, 2)
        for key, group in self.groups.items():
            if (
                group.distinct_parents >= threshold
                and not group.by_library
                and not self.reported(key)
            ):
                self._report(key, group)

    def _report(self, key: Any, group: _Group) -> None:
        relationship = group.relationship
        name = label(relationship)
        option = f"{loader_for(relationship)}({name})"
        origin, selected, per_parent = group.origin, group.selected, group.one_query_per_parent
        if origin is not None and origin.relationship is relationship and not group.walked:
            # A self-referential load registers itself as the last load of its parents'
            # class before the handlers see it, and took the place of the query that
            # loaded them: no parent came through the relationship, so that query did.
            origin, selected, per_parent = group.root, group.root_selected, False
        related: list[tuple[CallSite | None, str]] = []
        origin_text = ""
        parents = relationship.parent.class_.__name__
        fix = f"add .options({option}) to the query that loads the {parents} objects"
        if group.refreshed:
            # An option on the query that first loaded them does not reload anything.
            origin_text = f" by session.refresh(), one {parents} at a time"
            fix = _refresh_fix(relationship, option)
        elif group.expired_reload:
            # The query's option did load them; the objects were expired since, and each
            # one read is reloaded alone, its option with it.
            origin_text = f" as each expired {parents} was reloaded, one at a time"
            if group.commit_site is not None:
                fix = (
                    f"the commit at {self.where(group.commit_site)} expired them: commit "
                    "after the loop, or create the session with expire_on_commit=False"
                )
                related.append((group.commit_site, "the commit that expired the parents"))
            else:
                fix = "they were expired: read what the loop needs before expiring them"
        elif origin is not None and origin.site is not None:
            where = self.where(origin.site)
            if origin.kind in (LAZY_LOAD, RELATIONSHIP_LOAD) and origin.relationship is not None:
                outer = label(origin.relationship)
                verb = "lazy load" if origin.kind == LAZY_LOAD else "eager load"
                origin_text = f" (parents loaded by the {verb} of {outer} at {where})"
                top = origin.relationship.parent.class_.__name__
                if origin.relationship is relationship and relationship.mapper.isa(
                    relationship.parent
                ):
                    # A tree walked level by level: one option loads every level.
                    option = f"selectinload({name}, recursion_depth=-1)"
                    levels = "the whole tree"
                else:
                    path = outer
                    if is_superclass_of_declaring(relationship, origin.relationship.mapper):
                        # The outer relationship loads the base class: the path reaches
                        # the subclass that declares this one only through of_type().
                        path = f"{outer}.of_type({parents})"
                    option = f"{loader_for(origin.relationship)}({path}).{option}"
                    levels = "both levels"
                fix = f"load {levels} up front: .options({option}) on the query that loads {top}"
                root = group.root
                if root is not None and root.site is not None and root.site != origin.site:
                    # The tree's first level: where the option goes.
                    fix += f" (at {self.where(root.site)})"
                    related.append((root.site, f"the query that loaded the first {top} objects"))
                related.append((origin.site, f"the {verb} of {outer} that loaded the parents"))
            elif per_parent:
                # session.get() (or a query) per id: an option on it still runs two
                # queries per parent; one query for all of them is the fix.
                origin_text = f" (each {parents} loaded by its own query at {where})"
                fix = (
                    f"load the {parents} objects in one query with .options({option})"
                    f"{_in_ids_example(relationship.parent)} instead of one query per {parents}"
                )
                related.append((origin.site, f"the query that loaded each {parents}"))
            else:
                origin_text = f" (parents loaded by the query at {where})"
                others = [
                    other.relationship
                    for other in self.groups.values()
                    if other.origin is not None
                    and other.origin.site == origin.site
                    and other.selected is selected
                    and other.relationship is not relationship
                ]
                option, why = query_option(relationship, selected, origin.aliased, others)
                fix = f"add .options({option}) to that query{why}"
                if group.immediate and not why:
                    fix = _immediate_fix(relationship, name, option)
                elif not why and joins_relationship(origin.joined, relationship):
                    option = f"contains_eager({name})"
                    fix = _contains_eager_fix(relationship, name, option)
                related.append((origin.site, "the query that loaded the parents"))
        hint = f".options({option})"
        if group.expired_reload and group.commit_site is not None:
            hint = "expire_on_commit=False"
        if group.refreshed:
            hint += ".execution_options(populate_existing=True)"
        self.report(
            group.site,
            key=key,
            subject=name,
            related=related,
            hint=hint,
            details={
                "relationship": name,
                "loads": group.loads,
                "distinct_parents": group.distinct_parents,
                "loader_option": option,
            },
            relationship=name,
            count=self.count_so_far(group.loads),
            site=self.where(group.site),
            origin=origin_text,
            fix=fix,
        )
