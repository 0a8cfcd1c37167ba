"""SQD253: expired or deferred attributes reloaded one object at a time (N+1 of columns)."""

from __future__ import annotations

from typing import Any

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite, called_again_by_library
from sqla_doctor.runtime.detector import COLUMN_LOAD, Detector, OrmExecution
from sqla_doctor.runtime.detectors.session_leak import flask_sqlalchemy_name, is_async_session
from sqla_doctor.runtime.loading import (
    OptionDeferral,
    deferred_by_option,
    left_out_by_base_query,
    primary_key_attributes,
    relationship_chain,
    subclass_left_out,
)
from sqla_doctor.runtime.source_blocks import LOOP, SCOPES, enclosing_headers
from sqla_doctor.runtime.unit_of_work import record_of_object

MAX_GROUPS = 1_000
MAX_PARENTS_TRACKED = 4_096
MAX_ATTRIBUTES_SHOWN = 6


def _refreshed(execution: OrmExecution) -> tuple[Any, frozenset[str] | None, bool]:
    """The object being refreshed, the attributes asked for, and whether refresh() asked.

    ORMExecuteState names the object only for lazy loads (``lazy_loaded_from``); for
    column loads these sit in its load and compile options (2.0 and 2.1 alike). They say
    *which* attributes and *why*; without them (another SQLAlchemy version) the detector
    still counts, by the primary-key parameters, and says less.
    """
    state = execution.state
    if state is None:
        return None, None, False
    try:
        load_options = state.load_options
        compile_options = getattr(state.statement, "_compile_options", None)
        props = getattr(compile_options, "_only_load_props", None)
        return (
            getattr(load_options, "_refresh_state", None),
            frozenset(props) if props else None,
            bool(getattr(load_options, "_is_user_refresh", False)),
        )
    except Exception:
        return None, None, False


def _lock_option(execution: OrmExecution) -> str:
    """``.with_for_update(...)`` as the refresh that ran asked for it
    (``refresh(obj, with_for_update=True)``), '' for one that locks nothing."""
    statement = execution.state.statement if execution.state is not None else None
    lock = getattr(statement, "_for_update_arg", None)
    if lock is None:
        return ""
    names = ("read", "key_share", "nowait", "skip_locked")
    arguments = [f"{name}=True" for name in names if getattr(lock, name, False) is True]
    return f".with_for_update({', '.join(arguments)})"


def _identity(execution: OrmExecution, state: Any) -> int:
    if state is not None and state.key is not None:
        return hash(state.key)
    parameters = execution.state.parameters if execution.state is not None else None
    try:
        if isinstance(parameters, dict):
            return hash(tuple(sorted(parameters.items())))
        return hash(repr(parameters))
    except TypeError:
        return id(execution)


# Lines read upwards from an expire call to the loop around it, at most.
_MAX_LINES_UP = 60


def _loop_around(expire: CallSite, read: CallSite) -> CallSite | None:
    """The ``for``/``while`` line of the innermost loop, in the function around the
    program's expire call, whose block holds the line that read the expired objects too
    (`for user in users: session.expire_all(); user.name`); None when there is none."""
    if expire.filename != read.filename or read.lineno <= expire.lineno:
        return None
    for number, _, header in enclosing_headers(expire.filename, expire.lineno, _MAX_LINES_UP):
        if header.startswith(SCOPES):
            return None
        if LOOP.match(header):
            around = {
                line for line, _, _ in enclosing_headers(read.filename, read.lineno, _MAX_LINES_UP)
            }
            if number in around:
                return CallSite(expire.filename, number, expire.function, expire.module)
            return None
    return None


class _Group:
    __slots__ = (
        "async_session",
        "attributes",
        "by_library",
        "commit_site",
        "deferred",
        "deferred_by",
        "entity",
        "expire_site",
        "expired",
        "first_session",
        "loaded_by",
        "loads",
        "lock",
        "parents",
        "primary_key",
        "refreshed",
        "site",
        "subclass_of",
    )

    def __init__(self, execution: OrmExecution, entity: str, mapper: Any) -> None:
        self.entity = entity
        # Its attribute, named in the one-query fix; None for a composite key.
        keys = primary_key_attributes(mapper)
        self.primary_key: str | None = keys[0] if len(keys) == 1 else None
        self.site = execution.site
        self.loads = 0
        self.parents: set[int] = set()
        self.attributes: set[str] = set()
        self.expired = False
        self.deferred = False
        # A load_only() or defer() that left them out, as deferred_by_option() says,
        # and the query that had it.
        self.deferred_by: tuple[OptionDeferral, CallSite | None] | None = None
        # For columns the mapping defers: the relationships the objects were loaded
        # through (empty when a query selected them), and the query at their root.
        self.loaded_by: tuple[list[str], CallSite | None] | None = None
        self.refreshed = False
        # The row lock the refreshes took, as the one query must keep it.
        self.lock = ""
        self.commit_site: CallSite | None = None
        # Reloaded again by installed code calling the program's function anew (each
        # request of a test client, each job of a worker), with no loop of the program.
        self.by_library = False
        self.first_session: int | None = None
        # The program's expire_all() or expire() that expired them, which it was, and
        # the query that had loaded them.
        self.expire_site: tuple[CallSite, str, CallSite | None] | None = None
        # Whether the committing session was an AsyncSession's: its factory is
        # async_sessionmaker. Asked once, at the first commit seen.
        self.async_session = False
        # The superclass a query selected, and that query, when the objects' own
        # table's columns were left out by it rather than expired.
        self.subclass_of: tuple[Any, OrmExecution] | None = None


class NPlusOneAttributeReload(Detector):
    """
    ## What it does
    Checks for column attributes loaded one object at a time, for several objects of one
    class from the same line: attributes expired by `commit()` (with the default
    `expire_on_commit=True`), by `expire()`/`refresh()`, or deferred with `defer()`,
    `load_only()` or `deferred()`.

    ## Why is this bad?
    Each reload is one `SELECT ... WHERE id = ?` per object: reading `user.name` for 50
    users after a commit runs 50 queries. Under `AsyncSession` the first of them raises
    `MissingGreenlet`, and after the session closes, `DetachedInstanceError`.

    ## Example
    ```python
    users = session.scalars(select(User)).all()
    session.commit()  # expires every loaded object
    names = [user.name for user in users]  # one SELECT per user
    ```

    Use instead:
    ```python
    Session = sessionmaker(engine, expire_on_commit=False)
    ...
    users = session.scalars(select(User)).all()
    session.commit()
    names = [user.name for user in users]
    ```

    Objects expired by the program's own `session.expire_all()` (or `expire(obj)`) are
    told where it was called, and to run the query that loaded them again after it: one
    query refreshes every expired object it returns (their ids are expired too, so a
    query built from `[user.id for user in users]` would reload each one first). A call
    inside the loop that reads them (`for user in users: session.expire_all();
    user.name`) is told to move before the loop: the query run again after each call
    would load every row once per object.

    `session.refresh(obj)` per object is told the one query that reloads them all,
    `select(User).where(User.id.in_(ids)).execution_options(populate_existing=True)`,
    with `.with_for_update(...)` as the refreshes asked (`refresh(obj,
    with_for_update=True)`), so that it still locks the rows.

    Columns a query's own `load_only()` or `defer()` left out are told that option
    and its query: name them in the `load_only(...)` (chained, as
    `selectinload(User.posts).load_only(Post.title, Post.author_id)`, when it loads
    related objects), or drop the `defer(...)`. A column the mapping defers
    (`deferred()`, `deferred=True`) is told `undefer()` on the query that loaded the
    objects, chained from its entity when they came through a relationship
    (`defaultload(Post.author).undefer(User.bio)`: `undefer(User.bio)` alone on
    `select(Post)` raises `ArgumentError`).

    A query of the base class of a joined-table hierarchy (`select(Employee)`) loads
    each subclass object without its own table's columns; reading one of them
    (`engineer.language`) then loads it per object. The finding names the query and the
    option that loads them with it, `selectin_polymorphic(Employee, [Engineer])`; when
    several subclasses are read that way after one query, that option names them all
    (`[Engineer, Manager]`), since two of them on one base conflict.

    ## Options
    - `tool.sqla-doctor.runtime.attribute-reload-threshold`: distinct objects reloaded
      from one line before it is reported (default 5).

    ## References
    - [Session.commit() and expire_on_commit](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    - [Limiting which columns load with column deferral](https://docs.sqlalchemy.org/en/20/orm/queryguide/columns.html)
    """

    code = "SQD253"
    name = "n-plus-one-attribute-reload"
    pitfalls = ("P01", "P05")
    severity = Severity.WARNING
    spans_nested_units = True
    execution_kinds = frozenset({COLUMN_LOAD})
    message = "{entity} {attributes}{verb} one object at a time {count}× from {site} — {fix}"

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self.groups: dict[tuple[str, str, int], _Group] = {}

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        if execution.kind != COLUMN_LOAD or execution.in_flush or execution.site is None:
            return
        mapper = execution.state.bind_mapper if execution.state is not None else None
        if mapper is None:
            return
        entity = mapper.class_.__name__
        site = execution.site
        key = (entity, site.filename, site.lineno)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                return
            group = self.groups[key] = _Group(execution, entity, mapper)
        state, asked, refreshed = _refreshed(execution)
        if state is not None and not self._explain(group, state, mapper, asked):
            return
        if refreshed and not group.refreshed:
            group.lock = _lock_option(execution)
        group.refreshed = group.refreshed or refreshed
        group.loads += 1
        session = state.session_id if state is not None else None
        if not group.parents:
            group.first_session = session
        if len(group.parents) < MAX_PARENTS_TRACKED:
            group.parents.add(_identity(execution, state))
            if len(group.parents) == 2 and session != group.first_session:
                # Objects of two sessions (two requests, two jobs?): ask the stack once.
                record = record_of_object(state) if state is not None else None
                held_by = record.opened if record is not None else ()
                group.by_library = called_again_by_library(execution.site, held_by)

    def _explain(
        self, group: _Group, state: Any, mapper: Any, asked: frozenset[str] | None
    ) -> bool:
        """Note which columns load and why; False when no column does.

        ``refresh(obj, ["posts"])`` is a column load of relationships only: its lazy loads
        are SQD251's.
        """
        # Primary keys are expired with the rest but never what the code wanted to read;
        # deferred columns are expired too, yet only load when read themselves.
        keys = set(primary_key_attributes(mapper))
        eager = {p.key for p in mapper.column_attrs if not p.deferred} - keys
        deferred = {p.key for p in mapper.column_attrs if p.deferred} - keys
        if asked is not None:
            eager &= asked
            deferred &= asked
        expired = set(state.expired_attributes) & eager
        if expired:
            found = self.uow.origin_and_entity_for(mapper)
            if found is not None and left_out_by_base_query(mapper, found[0], expired):
                group.subclass_of = found
            group.expired = True
            if len(group.attributes) < MAX_ATTRIBUTES_SHOWN:
                group.attributes.update(expired)
            record = record_of_object(state)
            if (
                record is not None
                and record.expire_site is not None
                and record.expire_call is not None
            ):
                # Cleared by each commit or rollback: it came after the last one.
                origin = self.uow.origin_for(mapper, query=True)
                group.expire_site = (
                    record.expire_site,
                    record.expire_call[0],
                    origin.site if origin is not None else None,
                )
            elif record is not None and record.commit_site is not None:
                if group.commit_site is None:
                    group.async_session = is_async_session(record)
                group.commit_site = record.commit_site
            return True
        unloaded = set(state.unloaded) & deferred
        if unloaded:
            group.deferred = True
            if len(group.attributes) < MAX_ATTRIBUTES_SHOWN:
                group.attributes.update(unloaded)
            if group.loaded_by is None:
                path = state.load_path.path if len(state.load_path) else ()
                group.loaded_by = (relationship_chain(path), self._root_query(state, mapper))
            return True
        # Columns the mapping loads, left out by the query's load_only() or defer().
        by_option = deferred_by_option(state.load_options, mapper, set(state.unloaded) & eager)
        if by_option is None:
            return False
        group.deferred = True
        if len(group.attributes) < MAX_ATTRIBUTES_SHOWN:
            group.attributes.update(
                set(state.unloaded) & eager if by_option.how == "load_only" else by_option.deferred
            )
        if group.deferred_by is None:
            group.deferred_by = (by_option, self._root_query(state, mapper))
        return True

    def _root_query(self, state: Any, mapper: Any) -> CallSite | None:
        """The query that loaded the object: the one that selected it, or the one whose
        relationship option or lazy load brought it in (load_path starts at its entity)."""
        root = state.load_path[0] if len(state.load_path) else mapper
        origin = self.uow.origin_for(getattr(root, "mapper", mapper), query=True)
        return origin.site if origin is not None else None

    def _option_fix(
        self, group: _Group, names: list[str], related: list[tuple[CallSite | None, str]]
    ) -> tuple[str, str]:
        assert group.deferred_by is not None
        option, site = group.deferred_by
        query = f"the query at {self.where(site)}" if site is not None else "the query"
        if site is not None:
            related.append((site, "the query that left them out"))
        entity = group.entity
        on = f"chained under {option.through} on {query}" if option.through else f"on {query}"
        if option.how == "load_only":
            shown = ", ".join(f"{entity}.{name}" for name in option.kept)
            columns = ", ".join(f"{entity}.{name}" for name in [*option.kept, *names])
            fix = f"load_only({columns})"
            fix = f".{fix}" if option.through else f".options({fix})"
            return (
                f"the load_only({shown}) {on} left them out: name them in it too, {fix}",
                fix,
            )
        dropped = ", ".join(f"defer({entity}.{name})" for name in option.deferred)
        return (
            f"the {dropped} {on} left them out: drop that option, they are read anyway",
            f"remove {dropped}",
        )

    def _undefer_fix(
        self, group: _Group, names: list[str], related: list[tuple[CallSite | None, str]]
    ) -> tuple[str, str]:
        """For columns the mapping defers (``deferred()``, ``deferred=True``)."""
        chain, site = group.loaded_by if group.loaded_by is not None else ([], None)
        undefers = [f"undefer({group.entity}.{name})" for name in names]
        if chain:
            # Chained from the root entity's query: undefer(Book.summary) alone on
            # select(Author) raises ArgumentError. defaultload() keeps each relationship's
            # own loading, lazy or eager, and reaches its lazy loads too.
            path = ".".join(f"defaultload({name})" for name in chain)
            tail = f".{undefers[0]}" if len(undefers) == 1 else f".options({', '.join(undefers)})"
            option = f".options({path}{tail})"
            how = f"they are deferred in the mapping and were loaded through {', '.join(chain)}"
        else:
            option = f".options({', '.join(undefers)})"
            how = "they are deferred in the mapping"
        if site is None:
            return f"{how}: load them with the query, {option}", option
        related.append((site, "the query that loaded them"))
        return f"{how}: load them with the query at {self.where(site)}, {option}", option

    def _subclass_fix(
        self,
        group: _Group,
        subclass_of: tuple[Any, OrmExecution],
        related: list[tuple[CallSite | None, str]],
    ) -> tuple[str, str]:
        base, origin = subclass_of[0].class_.__name__, subclass_of[1]
        entity = group.entity
        if origin.relationship is None and origin.site is not None:
            polymorphic, left_out = subclass_left_out(
                subclass_of[0], entity, self._subclasses_left_out(subclass_of[0], origin.site)
            )
            option = f".options({polymorphic})"
            related.append((origin.site, f"the query that selected {base}"))
            return (
                f"the query at {self.where(origin.site)} {left_out}: add {option} to it",
                option,
            )
        # Loaded through a relationship to the base class: the mapping loads them.
        mapping = '__mapper_args__ = {..., "polymorphic_load": "selectin"}'
        return (
            f"they were loaded as {base} objects, which leaves {entity}'s own table out: "
            f"load it with them, {mapping} on {entity}",
            mapping,
        )

    def _subclasses_left_out(self, base: Any, site: CallSite) -> list[str]:
        """The subclasses read one object at a time after the query at ``site`` selected
        ``base`` (a Circle's radius and a Square's side after select(Shape))."""
        return [
            group.entity
            for group in self.groups.values()
            if group.subclass_of is not None
            and group.subclass_of[0] is base
            and group.subclass_of[1].site is not None
            and group.subclass_of[1].site.key == site.key
        ]

    def checkpoint(self) -> None:
        threshold = max(self.config.attribute_reload_threshold, 2)
        for key, group in self.groups.items():
            if len(group.parents) >= threshold and not group.by_library and not self.reported(key):
                self._report(key, group)

    def _report(self, key: Any, group: _Group) -> None:
        names = sorted(group.attributes)[:MAX_ATTRIBUTES_SHOWN]
        attributes = f"attributes ({', '.join(names)}) " if names else "attributes "
        related: list[tuple[CallSite | None, str]] = []
        if group.refreshed:
            entity = group.entity
            where = (
                f".where({entity}.{group.primary_key}.in_(ids))"
                if group.primary_key is not None
                else ".where(...)"
            )
            locks = (
                f" (it locks the rows it reads: {group.lock} keeps the lock)" if group.lock else ""
            )
            fix = (
                "session.refresh() one object at a time: reload them with one query, "
                f"select({entity}){where}{group.lock}.execution_options(populate_existing=True)"
                + locks
            )
            hint = f"{group.lock}.execution_options(populate_existing=True)"
        elif group.subclass_of is not None:
            fix, hint = self._subclass_fix(group, group.subclass_of, related)
        elif group.expired and group.expire_site is not None:
            site, call, loaded_at = group.expire_site
            query = (
                f"the query at {self.where(loaded_at)}"
                if loaded_at is not None
                else "the query that loaded them"
            )
            loop = _loop_around(site, group.site) if group.site is not None else None
            if loop is not None:
                # Run again after each expiry, the query would load every row per object.
                fix = (
                    f"the {call} at {self.where(site)} runs inside the loop at "
                    f"{self.where(loop)}, before each read, so each object reloads its own: "
                    f"call it once, before the loop, then run {query} again (one query "
                    "refreshes every expired object it returns), or leave it out if nothing "
                    "changed the rows behind the session's back"
                )
                hint = f"{call} once, before the loop"
            else:
                fix = (
                    f"the {call} at {self.where(site)} expired them, and each one reloads "
                    f"its own on first read: run {query} again after it (one query "
                    "refreshes every expired object it returns; their ids are expired too), "
                    f"or leave out the {call} if nothing changed the rows behind the "
                    "session's back"
                )
                hint = f"session.scalars(select({group.entity})...).all() after {call}"
            related.append((site, f"the {call} that expired the objects"))
        elif group.expired and group.commit_site is not None:
            factory = "async_sessionmaker" if group.async_session else "sessionmaker"
            hint = f"{factory}(..., expire_on_commit=False)"
            create = "create the session with expire_on_commit=False"
            if flask_sqlalchemy_name(group.commit_site) is not None:
                # Flask-SQLAlchemy makes the sessionmaker: its options go to the extension.
                hint = 'SQLAlchemy(app, session_options={"expire_on_commit": False})'
                create = f"create the extension with {hint}"
            fix = (
                f"the commit at {self.where(group.commit_site)} expired them: {create}, or "
                "read the values before committing"
            )
            related.append((group.commit_site, "the commit that expired the objects"))
        elif group.expired:
            fix = "they were expired: load the objects again with one query instead"
            hint = ".execution_options(populate_existing=True)"
        elif group.deferred and group.deferred_by is not None:
            fix, hint = self._option_fix(group, names, related)
        elif group.deferred:
            fix, hint = self._undefer_fix(group, names, related)
        else:
            fix = "load the objects with one query instead of one reload per object"
            hint = None
        first_load = group.deferred and not group.expired
        self.report(
            group.site,
            key=key,
            subject=group.entity,
            related=related,
            hint=hint,
            details={
                "entity": group.entity,
                "attributes": names,
                "loads": group.loads,
                "distinct_objects": len(group.parents),
            },
            entity=group.entity,
            attributes=attributes,
            # Columns a base-class query left out, and deferred ones, were never loaded
            # before: the read is their first load, not a reload.
            verb="loaded" if group.subclass_of is not None or first_load else "reloaded",
            count=self.count_so_far(group.loads),
            site=self.where(group.site),
            fix=fix,
        )
