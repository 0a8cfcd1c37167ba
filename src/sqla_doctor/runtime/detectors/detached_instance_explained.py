"""SQD254: a DetachedInstanceError explained: what was read, where it was loaded and detached."""

from __future__ import annotations

import re
from types import FrameType
from typing import Any, NamedTuple

from sqlalchemy.orm import ColumnProperty, RelationshipProperty, Session
from sqlalchemy.orm.attributes import QueryableAttribute
from sqlalchemy.orm.exc import DetachedInstanceError
from sqlalchemy.orm.state import InstanceState

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import USER, CallSite, classify
from sqla_doctor.runtime.detector import LAZY_LOAD, RELATIONSHIP_LOAD, Detector, ErrorSeen
from sqla_doctor.runtime.errors import origin_and_entity_of, record_of, session_records
from sqla_doctor.runtime.loading import (
    attach_option,
    label,
    left_out_by_base_query,
    loader_for,
    query_option,
    snake_case,
    subclass_left_out,
)
from sqla_doctor.runtime.source_blocks import FUNCTIONS, WITHS, enclosing_headers
from sqla_doctor.runtime.unit_of_work import Detachment, SessionRecord, UnitOfWork, process

# SQLAlchemy's own wording, stable since 1.4: "... lazy load operation of attribute 'posts'
# cannot proceed", "deferred load operation of attribute 'bio'".
_ATTRIBUTE = re.compile(r"operation of attribute '([^']+)'")
# How far above a read its function's `with` blocks are looked for.
_MAX_LINES_UP = 200


def attribute_key(seen: ErrorSeen) -> str | None:
    """The attribute whose read failed: the descriptor in the library's frames, else the
    error's wording."""
    for attribute in seen.locals_of_type(QueryableAttribute):
        key = getattr(attribute, "key", None)
        if isinstance(key, str):
            return key
    match = _ATTRIBUTE.search(str(seen.error))
    return match.group(1) if match else None


def instance_state(seen: ErrorSeen) -> InstanceState[Any] | None:
    return next(seen.locals_of_type(InstanceState), None)


def detachment_of(
    uow: UnitOfWork, state: InstanceState[Any]
) -> tuple[SessionRecord | None, Detachment | None]:
    """The session an object left, and where and how it left (from its records)."""
    for record in session_records(uow):
        for detachment in reversed(record.detachments):
            if detachment.holds(state):
                return record, detachment
    return None, None


def session_of(uow: UnitOfWork, state: InstanceState[Any]) -> SessionRecord | None:
    """The record of the session an object is in, or was in until it was closed."""
    session = state.session
    if session is not None:
        return record_of(uow, session)
    return detachment_of(uow, state)[0]


class Reader(NamedTuple):
    """A session the program's frames hold where a detached object is read."""

    session_name: str
    function: str
    awaited: str
    object_name: str | None


def reading_session(seen: ErrorSeen, obj: object, closed: object) -> Reader | None:
    """The open session, other than ``closed`` (the one ``obj`` left), of the program's
    code where ``obj`` was read (innermost frame first), and the name that frame gives
    ``obj``; None when no frame is inside such a session's block.

    Types and identities only: no attribute of the program's objects is read.
    """
    from sqlalchemy.ext.asyncio import AsyncSession

    object_name: str | None = None
    for frame in seen.stack():
        if classify(frame.f_code.co_filename) != USER:
            continue
        names = list(frame.f_locals.items())
        if object_name is None:
            object_name = next((name for name, value in names if value is obj), None)
        for name, value in names:
            # type(), never isinstance(): that reads ``__class__``, which a proxy among
            # the locals (Flask's ``current_user``) resolves by running its code.
            kind = type(value)
            if issubclass(kind, AsyncSession):
                awaited, session = "await ", value.sync_session
            elif issubclass(kind, Session):
                awaited, session = "", value
            else:
                continue
            if session is not closed and _open_in(frame, name):
                return Reader(name, frame.f_code.co_name, awaited, object_name)
    return None


def _open_in(frame: FrameType, name: str) -> bool:
    """Whether the session ``name`` names is open for the line ``frame`` runs: a
    parameter (a request's session handed in), or bound by a ``with`` block around the
    line (`with Session() as name:`). A local left over from an earlier block is not."""
    code = frame.f_code
    if name in code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]:
        return True
    bound = re.compile(rf"\bas\s+{re.escape(name)}\b")
    for _, _, header in enclosing_headers(code.co_filename, frame.f_lineno, _MAX_LINES_UP):
        if header.startswith(FUNCTIONS):
            return False
        if header.startswith(WITHS) and bound.search(header):
            return True
    return False


def created_by_program(state: Any) -> bool:
    """Whether a persistent (or detached) object was never populated from a row: added
    by the program and flushed, then neither loaded by a query nor refreshed (loading
    sets the state's ``runid``, which stays None for an object only ever INSERTed)."""
    return state.key is not None and getattr(state, "runid", 0) is None


class DetachedInstanceExplained(Detector):
    """
    ## What it does
    Explains a `DetachedInstanceError` when it happens: which attribute of which entity
    could not load, where the object was loaded, where it left its session (the end of
    the `with` or `async with` block, `close()`, `expunge()`, `expunge_all()`), what
    expired it (a commit with `expire_on_commit=True`), and the change that fixes it.

    The explanation is a finding at the line that read the attribute, and a note on the
    exception itself, so the traceback carries it in every mode. It is made when the
    error leaves a `track()` unit, reaches the top of the program, or is logged; with
    `track-reads` on (the default under `sqla-doctor run`), and inside a `track()` block
    for the classes whose objects left their session in it (unless `track-reads = false`),
    it is made as the read fails, so an error the program swallows (pydantic's
    `from_attributes` turning it into a `ValidationError`, an `except Exception:
    print(...)`) is explained too. One the program catches by its class's name, `except
    DetachedInstanceError:` around the read or in one of the few functions that called
    it, is the program's to handle (sqladmin adds the object to a new session and reads
    it again) and is explained only if it goes on to a unit's end, the top or a log.

    A subclass's own column that a query of the base class left out (`select(Employee)`
    loads no `Engineer.language`) is not blamed on a commit: the fix named is the option
    that loads it with the query, `selectin_polymorphic(Employee, [Engineer])`; a
    relationship declared on the subclass gets the option that query takes (as SQD251
    names it: `selectin_polymorphic(Employee, [Engineer]), selectinload(Engineer.repos)`
    for `select(Employee)`, `selectinload(poly.Engineer.repos)` for `select(poly)`). For an
    object `session.get()` loaded, the option goes in its argument:
    `session.get(User, id, options=[selectinload(User.posts)])`.

    A relationship of an object the program created (`Post(author_id=1)`, added,
    committed and returned from a helper, `session.refresh(post)`ed or not) was loaded
    by no query, so no option applies, and neither `expire_on_commit=False` nor
    `refresh(post)` loads it: the fix named is `session.refresh(post, ["author"])` after
    the commit, before the session closes.

    A copy made by `pickle.loads()` (an object kept in a cache as bytes) or
    `copy.deepcopy()` belongs to no session and never did: it is named as that copy, with
    the line that made it, and the fix is the option that loads the attribute before the
    object is pickled, or `session.merge(obj, load=False)` to attach the copy to a session.

    An object kept past its session (a module-level cache filled by one request) is
    explained even after that session was garbage-collected: the latest 16 such sessions
    keep where they loaded and closed. When it is read inside another session's `with`
    block, or in a function that was handed a session, the fix also names that session:
    `product = session.merge(product, load=False)` re-attaches it without a query, or
    the cache keeps keys and each session loads its own objects.

    ## Why is this bad?
    An object's unloaded attributes load on first access, through its session. Once the
    session is closed there is nothing to load them with: a relationship that was never
    loaded, a deferred column, or any attribute the last commit expired raises
    `DetachedInstanceError`. SQLAlchemy's message names neither the query nor the place
    the session closed, and the error often shows up far from both: in a template, a
    serializer, a background job.

    ## Example
    ```python
    with Session(engine) as session:
        users = session.scalars(select(User)).all()
    for user in users:
        print(user.posts)  # DetachedInstanceError: lazy load of 'posts' cannot proceed
    ```

    Use instead:
    ```python
    with Session(engine) as session:
        users = session.scalars(select(User).options(selectinload(User.posts))).all()
    for user in users:
        print(user.posts)
    ```

    For attributes expired by `commit()` ("attribute refresh operation cannot proceed"),
    create the session with `expire_on_commit=False`, or read what you need before the
    commit.

    ## References
    - [DetachedInstanceError](https://docs.sqlalchemy.org/en/20/errors.html#error-bhk3)
    - [Relationship loading techniques](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html)
    - [Session.commit and expire_on_commit](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    """

    code = "SQD254"
    name = "detached-instance-explained"
    pitfalls = ("P02",)
    severity = Severity.ERROR
    message = "{attribute} {what} on a detached {entity}: {cause} — {fix}"

    def on_error(self, seen: ErrorSeen) -> None:
        if not isinstance(seen.error, DetachedInstanceError):
            return
        state = instance_state(seen)
        key = attribute_key(seen)
        if state is None or key is None:
            return
        entity = state.class_.__name__
        prop = state.mapper.attrs.get(key)
        subject = f"{state.mapper.class_.__name__}.{key}"
        if isinstance(prop, RelationshipProperty) and key not in state.expired_attributes:
            subject = label(prop)
        record, detachment = detachment_of(self.uow, state)
        found = origin_and_entity_of(self.uow, state.mapper, record)
        origin = found[1] if found is not None else None
        related: list[tuple[CallSite | None, str]] = []
        loaded_at = ""
        by_get = origin is not None and origin.by_get
        loader = "session.get()" if by_get else "query"
        if origin is not None and origin.site is not None:
            loaded_at = self.where(origin.site)
            related.append((origin.site, f"the {entity} was loaded by this {loader}"))
        cause = self._cause(detachment, related)
        how = detachment.how if detachment is not None and detachment.site is not None else None
        # Where the value is still there to read: before the objects left the session.
        inside = {
            "expunge_all": "before session.expunge_all()",
            "expunge": "before session.expunge()",
        }.get(how or "", "inside the session block")
        obj = state.obj()
        copied = process.copied(obj) if obj is not None and detachment is None else None
        if copied is not None:
            # pickle.loads() (a cache) made it: a copy no session ever held, whatever
            # happened to the original, and not one the program created either.
            made_by, made_at = copied
            made_where = f" at {self.where(made_at)}" if made_at is not None else ""
            cause = f"it is a copy made by {made_by}{made_where}, which belongs to no session"
            related.append((made_at, f"{made_by} made the copy here"))
            how = "copy"
            inside = (
                "before the object is copied"
                if "deepcopy" in made_by
                else "before the object is pickled"
            )
        created = created_by_program(state) and copied is None
        if isinstance(prop, RelationshipProperty) and (
            created or (not loaded_at and key in state.expired_attributes)
        ):
            # Made by the program (or only refresh()ed since): no query to give an option
            # to, and expire_on_commit=False keeps what was loaded but never loads the
            # relationship, which refresh(obj) leaves unloaded too.
            what = "lazy-loaded"
            committed = detachment.committed if detachment is not None else None
            if committed is not None and key in state.expired_attributes:
                cause = f"the commit at {self.where(committed)} expired it, then {cause}"
                related.append((committed, "this commit expired its attributes"))
            var = entity.lower()
            hint = f'session.refresh({var}, ["{key}"])'
            made = (
                f"the {entity} was created by the program, not loaded by a query: "
                if created
                else ""
            )
            fix = (
                f"{made}load it before the session closes with `{hint}` after the commit (it "
                f"reloads what the commit expired too), or read {subject} {inside}"
            )
        elif (
            found is not None
            and loaded_at
            and key in state.expired_attributes
            and left_out_by_base_query(state.mapper, found[0], set(state.expired_attributes))
        ):
            # Never loaded, not expired: select(Employee) leaves Engineer's own table out.
            what = "loaded"
            option, left_out = subclass_left_out(found[0], entity)
            hint = f".options({option})"
            fix = (
                f"the query at {loaded_at} {left_out}: add .options({option}) to it, or read "
                f"{subject} {inside}"
            )
        elif key in state.expired_attributes or not isinstance(
            prop, (RelationshipProperty, ColumnProperty)
        ):
            what = "refreshed"
            committed = detachment.committed if detachment is not None else None
            rolled_back = detachment.rolled_back if detachment is not None else None
            if rolled_back is not None:
                cause = f"the rollback at {self.where(rolled_back)} expired it, then {cause}"
                related.append((rolled_back, "this rollback expired its attributes"))
                hint = f"read {subject} before the transaction can fail"
                fix = (
                    f"read {subject} (or copy the values you need) before the transaction "
                    f"can fail, {inside}; a rollback expires every object, "
                    "so expire_on_commit=False does not help here"
                )
            else:
                if committed is not None:
                    cause = (
                        f"the commit at {self.where(committed)} expired it "
                        f"(expire_on_commit=True), then {cause}"
                    )
                    related.append((committed, "this commit expired its attributes"))
                hint = "expire_on_commit=False"
                fix = (
                    "create the session with expire_on_commit=False, or read "
                    f"{subject} before the commit / {inside}"
                )
        else:
            why = ""
            if isinstance(prop, RelationshipProperty):
                what = "lazy-loaded"
                option, why = self._option(prop, origin, found[0] if found is not None else None)
            else:
                what = "loaded (deferred)"
                option = f"undefer({subject})"
            attach, loader, hint = attach_option(option, by_get)
            where = f"the {loader} at {loaded_at}"
            if not loaded_at:
                where = f"the query that loads the {entity}"
            fix = f"{attach} {where}{why}, or read {subject} {inside}"
        if self._torn_down(detachment):
            fix += (
                f"; an object kept past its request outlives db.session: keep its key and load "
                f"it again in each request (`db.session.get({entity}, id)`)"
            )
        reader = (
            reading_session(seen, obj, record.session)
            if record is not None and how in ("close", "async_with") and obj is not None
            else None
        )
        if reader is not None:
            # Kept past its session (a cache) and read in another session's block: that
            # session can re-attach it without a query.
            name = reader.object_name or snake_case(entity)
            fix += (
                f"; it outlived its session and is read inside another session's block "
                f"(`{reader.session_name}`, in {reader.function}()): re-attach it there with "
                f"`{name} = {reader.awaited}{reader.session_name}.merge({name}, load=False)`, "
                "or cache its key and load it in each session"
            )
        elif how in ("expunge", "expunge_all", "copy"):
            name = snake_case(entity)
            fix += (
                f"; to use it with a session again, re-attach it: "
                f"`{name} = session.merge({name}, load=False)`"
            )
        at = seen.site
        site_key: Any = at.key if at is not None else None
        if at is not None and classify(at.filename) != USER and origin is not None:
            # Read in installed code (pydantic serializing a response): the finding moves
            # to the query, and FastAPI's ResponseValidationError, raised from another
            # frame of it, is the same finding.
            site_key = ("query", origin.site.key if origin.site is not None else None)
        finding = self.report(
            seen.site,
            key=(subject, site_key),
            subject=subject,
            related=related,
            hint=hint,
            details={"entity": entity, "attribute": key, "error": type(seen.error).__name__},
            attribute=subject,
            what=what,
            entity=entity,
            cause=cause,
            fix=fix,
        )
        seen.explain(finding)

    def _cause(
        self, detachment: Detachment | None, related: list[tuple[CallSite | None, str]]
    ) -> str:
        if detachment is None or detachment.site is None:
            return "its session was closed or is gone"
        where = self.where(detachment.site)
        if detachment.how == "expunge":
            related.append((detachment.site, "expunged from its session here"))
            return f"it was expunged from its session at {where}"
        if detachment.how == "expunge_all":
            # expunge_all() replaces the identity map as close() does, but the session
            # stays open: "closed" would send the reader looking for a close().
            related.append((detachment.site, "session.expunge_all() detached it here"))
            return f"it was expunged by session.expunge_all() at {where}"
        if self._torn_down(detachment):
            # Closed by no line of the program: the app context's teardown removes
            # `db.session`, which a view's object outlived (a cache, a global).
            related.append((detachment.site, "Flask-SQLAlchemy's teardown closed it here"))
            return (
                "its session, db.session, was removed when the app context of the request "
                f"that loaded it ended ({where})"
            )
        if detachment.how == "async_with":
            related.append((detachment.site, "its session was closed when this block ended"))
            return f"its session was closed when the `async with` block at {where} ended"
        related.append((detachment.site, "its session was closed here"))
        return f"its session was closed at {where}"

    def _torn_down(self, detachment: Detachment | None) -> bool:
        """Whether Flask-SQLAlchemy's app-context teardown closed the session."""
        if detachment is None or detachment.site is None:
            return False
        return self.where(detachment.site).startswith("flask_sqlalchemy/")

    def _option(self, relationship: Any, origin: Any, selected: Any) -> tuple[str, str]:
        """The option, and why it takes that form ("" for the plain one)."""
        option = f"{loader_for(relationship)}({label(relationship)})"
        if origin is None:
            return option, ""
        if origin.kind in (LAZY_LOAD, RELATIONSHIP_LOAD) and origin.relationship is not None:
            outer = origin.relationship
            return f"{loader_for(outer)}({label(outer)}).{option}", ""
        return query_option(relationship, selected, origin.aliased)
