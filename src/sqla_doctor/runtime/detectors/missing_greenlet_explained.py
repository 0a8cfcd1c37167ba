"""SQD255: a MissingGreenlet explained: which load ran implicit IO in async code, and the fix."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import MissingGreenlet
from sqlalchemy.orm import ColumnProperty, RelationshipProperty

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import (
    COLUMN_LOAD,
    LAZY_LOAD,
    Detector,
    ErrorSeen,
    OrmExecution,
)
from sqla_doctor.runtime.detectors.detached_instance_explained import (
    attribute_key,
    created_by_program,
    instance_state,
    session_of,
)
from sqla_doctor.runtime.errors import origin_and_entity_of
from sqla_doctor.runtime.loading import (
    attach_option,
    label,
    left_out_by_base_query,
    loader_for,
    query_option,
    subclass_left_out,
)


def _column(mapper: Any, key: str) -> bool:
    return isinstance(mapper.attrs.get(key), ColumnProperty)


def _awaitable(cls: type, entity: str, key: str) -> str:
    """``await user.awaitable_attrs.posts``, for classes that have it (the AsyncAttrs
    mixin); else what to add to get it."""
    if hasattr(cls, "awaitable_attrs"):
        return f"`await {entity.lower()}.awaitable_attrs.{key}`"
    return (
        f"add the AsyncAttrs mixin to {entity}'s base and "
        f"`await {entity.lower()}.awaitable_attrs.{key}`"
    )


class MissingGreenletExplained(Detector):
    """
    ## What it does
    Explains a `MissingGreenlet` error in asyncio code: which relationship was
    lazy-loaded (or which expired attribute was refreshed) from which line, where the
    objects were loaded, and the fix.

    The explanation is a finding at the line that read the attribute, and a note on the
    exception itself, so the traceback carries it in every mode. It is made while the
    error is raised, so an error the program catches (a web framework answering 500)
    is explained too.

    ## Why is this bad?
    With `AsyncSession`, SQL runs only where the code awaits. Reading a relationship
    that was not loaded, or an attribute the last commit expired, is a plain attribute
    access: it would have to run SQL without an `await`, and SQLAlchemy raises
    `greenlet_spawn has not been called; can't call await_only() here`, which names
    neither the attribute nor the query.

    ## Example
    ```python
    async with async_session() as session:
        users = (await session.scalars(select(User))).all()
        for user in users:
            print(user.posts)  # MissingGreenlet
    ```

    Use instead:
    ```python
    async with async_session() as session:
        stmt = select(User).options(selectinload(User.posts))
        users = (await session.scalars(stmt)).all()
        for user in users:
            print(user.posts)
    ```

    Or load it explicitly with `await user.awaitable_attrs.posts`, or make the
    relationship `lazy="selectin"` (always loaded) or `lazy="raise"` (fails at once,
    with the attribute's name). For attributes expired by `commit()`, create the
    sessions with `async_sessionmaker(engine, expire_on_commit=False)` or
    `await session.refresh(obj)` before reading them. A column the query did not load —
    deferred (`deferred()`, `defer()`, `load_only()`), or a subclass's own column that a
    query of the base class leaves out (`select(Member)` for an `Admin`) — is told the
    option that loads it with the query: `undefer(Document.content)`,
    `selectin_polymorphic(Member, [Admin])`; a relationship declared on the subclass gets
    the option that query takes, as SQD251 names it. For an object `session.get()` loaded, the
    option goes in its argument: `session.get(User, id, options=[selectinload(User.posts)])`.

    A relationship of an object no query loaded (the program created it:
    `Project(owner_id=user_id)`, added and committed, then returned to a response model,
    refreshed or not) takes no loader option, and `await session.refresh(project)`
    reloads its columns but not its lazy relationships: the fix named is
    `await session.refresh(project, ["owner"])` after the commit or flush (which reloads
    what the commit expired too).
    The columns one commit expired are one finding, however many of them a
    serializer reads.

    ## References
    - [Preventing implicit IO when using AsyncSession](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#preventing-implicit-io-when-using-asyncsession)
    - [MissingGreenlet](https://docs.sqlalchemy.org/en/20/errors.html#error-xd2s)
    - [AsyncAttrs](https://docs.sqlalchemy.org/en/20/orm/extensions/asyncio.html#sqlalchemy.ext.asyncio.AsyncAttrs)
    """

    code = "SQD255"
    name = "missing-greenlet-explained"
    pitfalls = ("P03",)
    severity = Severity.ERROR
    # Only what the failing load was: a cheap assignment per load.
    execution_kinds = frozenset({LAZY_LOAD, COLUMN_LOAD})
    message = "{attribute} {what} in async code without await{origin} — {fix}"

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        # do_orm_execute fires for the load before MissingGreenlet is raised.
        self.last_load: OrmExecution | None = None

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        self.last_load = execution

    def on_error(self, seen: ErrorSeen) -> None:
        if not isinstance(seen.error, MissingGreenlet):
            return
        state = instance_state(seen)
        key = attribute_key(seen)
        last = self.last_load
        site = seen.site if seen.site is not None else (last.site if last is not None else None)
        if state is None or key is None:
            if last is None or last.kind != LAZY_LOAD or last.relationship is None:
                return
            self._lazy(seen, site, last.relationship, None, None)
            return
        prop = state.mapper.attrs.get(key)
        record = session_of(self.uow, state)
        if isinstance(prop, RelationshipProperty) and (
            created_by_program(state)
            or origin_and_entity_of(self.uow, state.mapper, record) is None
        ):
            # No query loaded it (made by the program, refresh()ed since): no option.
            self._created(seen, site, state, prop, record)
            return
        # A commit expires relationships too, but once the object's columns are loaded
        # again reading one is a lazy load like any other.
        lazy = key not in state.expired_attributes or (last is not None and last.kind == LAZY_LOAD)
        if isinstance(prop, RelationshipProperty) and lazy:
            self._lazy(seen, site, prop, state, record)
        else:
            self._refresh(seen, site, state, key, record)

    def _lazy(
        self, seen: ErrorSeen, site: CallSite | None, relationship: Any, state: Any, record: Any
    ) -> None:
        name = label(relationship)
        option = f"{loader_for(relationship)}({name})"
        parents = relationship.parent.class_.__name__
        mapper = state.mapper if state is not None else relationship.parent
        found = origin_and_entity_of(self.uow, mapper, record)
        origin = found[1] if found is not None else None
        related: list[tuple[CallSite | None, str]] = []
        origin_text = ""
        why = ""
        attach, loader, hint = attach_option(option, False)
        query = f"the query that loads the {parents} objects"
        if origin is not None and origin.site is not None:
            where = self.where(origin.site)
            if origin.relationship is None and found is not None:
                option, why = query_option(relationship, found[0], origin.aliased)
            attach, loader, hint = attach_option(option, origin.by_get)
            origin_text = f" (the {parents} was loaded by the {loader} at {where})"
            query = f"that {loader}"
            related.append((origin.site, f"the {loader} that loaded the {parents}"))
        awaited = _awaitable(relationship.parent.class_, parents, relationship.key)
        fix = (
            f"{attach} {query}{why}, or {awaited}, or declare the "
            'relationship with lazy="selectin" (or lazy="raise" to fail early)'
        )
        self._explain(seen, site, name, "lazy-loaded", origin_text, fix, hint, related)

    def _created(
        self, seen: ErrorSeen, site: CallSite | None, state: Any, relationship: Any, record: Any
    ) -> None:
        """A relationship of an object the program made (``Project(owner_id=1)``, added
        and flushed): no query loaded it, so no loader option can, and ``refresh(obj)``
        reloads its columns but leaves its lazy relationships unloaded."""
        entity = state.class_.__name__
        key = relationship.key
        name = label(relationship)
        var = entity.lower()
        related: list[tuple[CallSite | None, str]] = []
        committed = record.commit_site if record is not None else None
        expired = key in state.expired_attributes and committed is not None
        origin_text = (
            f" (the {entity} was created by the program, not loaded by a query"
            if created_by_program(state)
            else f" (no query of this session loaded the {entity}"
        )
        if expired:
            origin_text += f"; the commit at {self.where(committed)} expired it"
            related.append((committed, "this commit expired its attributes"))
        elif record is not None and record.flush_site is not None:
            # The read is often a serializer's, past the program's code (a response
            # model): the flush of the open transaction is the program's line.
            related.append((record.flush_site, f"the session flushed the new {entity} here"))
        origin_text += ")"
        refresh = f'await session.refresh({var}, ["{key}"])'
        awaited = _awaitable(state.class_, entity, key)
        fix = (
            f"load it once the {entity} is written: `{refresh}` after the commit or flush "
            f"(it reloads what the commit expired too; refresh({var}) alone leaves its "
            f"relationships unloaded), or {awaited}"
        )
        self._explain(seen, site, name, "lazy-loaded", origin_text, fix, refresh, related)

    def _refresh(
        self, seen: ErrorSeen, site: CallSite | None, state: Any, key: str, record: Any
    ) -> None:
        entity = state.class_.__name__
        name = f"{entity}.{key}"
        related: list[tuple[CallSite | None, str]] = []
        origin_text = ""
        committed = record.commit_site if record is not None else None
        rolled_back = record.rollback_site if record is not None else None
        expired = key in state.expired_attributes
        refresh = f"`await session.refresh({entity.lower()})`"
        # A column the query never loaded is loaded, not refreshed.
        what = "loaded"
        awaited = _awaitable(state.class_, entity, key)
        found = origin_and_entity_of(self.uow, state.mapper, record)
        if (
            expired
            and found is not None
            and found[1].site is not None
            and left_out_by_base_query(state.mapper, found[0], set(state.expired_attributes))
        ):
            # Never loaded, not expired: select(Member) leaves Admin's own table out.
            polymorphic, left_out = subclass_left_out(found[0], entity)
            option = f".options({polymorphic})"
            origin_text = f" (the query at {self.where(found[1].site)} {left_out})"
            related.append((found[1].site, f"the query that selected {found[0].class_.__name__}"))
            fix = f"add {option} to that query, or {awaited}"
            hint = option
        elif not expired and _column(state.mapper, key):
            # Deferred: by the mapping, or by defer()/load_only() on the query.
            origin = found[1] if found is not None else None
            attach, loader, hint = attach_option(f"undefer({name})", False)
            query = "the query that loads them"
            if origin is not None and origin.site is not None:
                attach, loader, hint = attach_option(f"undefer({name})", origin.by_get)
                where = self.where(origin.site)
                origin_text = f" (deferred: not loaded by the {loader} at {where})"
                related.append((origin.site, f"the {loader} that loaded the {entity}"))
                query = f"that {loader}"
            fix = f"{attach} {query}, or {awaited}"
        elif expired and rolled_back is not None:
            what = "refreshed"
            origin_text = f" (expired by the rollback at {self.where(rolled_back)})"
            related.append((rolled_back, "this rollback expired its attributes"))
            # A rollback expires every object whatever expire_on_commit says.
            fix = f"{refresh} before reading it, or {awaited}"
            hint = f"await session.refresh({entity.lower()})"
        else:
            what = "refreshed"
            if expired and committed is not None:
                origin_text = (
                    f" (expired by the commit at {self.where(committed)}: expire_on_commit=True)"
                )
                related.append((committed, "this commit expired its attributes"))
            fix = (
                "create the session with expire_on_commit=False (async_sessionmaker(engine, "
                f"expire_on_commit=False)), or {refresh} before reading it, or {awaited}"
            )
            hint = "expire_on_commit=False"
            if expired and committed is not None:
                # One commit expired them all: a serializer reading id, name, … of the
                # object is one mistake with one fix, not one finding per column.
                key_of = (entity, "expired by commit", committed.key)
                self._explain(seen, site, name, what, origin_text, fix, hint, related, key_of)
                return
        self._explain(seen, site, name, what, origin_text, fix, hint, related)

    def _explain(
        self,
        seen: ErrorSeen,
        site: CallSite | None,
        name: str,
        what: str,
        origin: str,
        fix: str,
        hint: str,
        related: list[tuple[CallSite | None, str]],
        key: Any = None,
    ) -> None:
        finding = self.report(
            site,
            key=(key or name, site.key if site is not None else None),
            subject=name,
            related=related,
            hint=hint,
            details={"attribute": name, "error": "MissingGreenlet"},
            attribute=name,
            what=what,
            origin=origin,
            fix=fix,
        )
        seen.explain(finding)
