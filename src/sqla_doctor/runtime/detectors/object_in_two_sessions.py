"""SQD156: an object given to a session while it is still attached to another one."""

from __future__ import annotations

import linecache
import re
import weakref
from collections.abc import Hashable
from typing import Any

from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session
from sqlalchemy.orm.state import InstanceState

from sqla_doctor.findings import Finding, Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import AttachedElsewhere, Detector, ErrorSeen
from sqla_doctor.runtime.detectors.session_leak import is_async_session
from sqla_doctor.runtime.errors import origin_of, record_of, session_records
from sqla_doctor.runtime.unit_of_work import SessionRecord, UnitOfWork

# SQLAlchemy's wording, stable since 1.x: "Object '<User at 0x...>' is already attached
# to session '1' (this is '2')".
_ALREADY_ATTACHED = "is already attached to session"
_SESSION_KEYS = re.compile(r"attached to session '(\d+)' \(this is '(\d+)'\)")
# ``job.add(user)``: the session and the object as the failing line names them.
# The object an add()'s cascade was about to attach, while it lives: the key and the finding
# reported, for the "already attached" error SQLAlchemy raises next.
_cascaded: weakref.WeakKeyDictionary[InstanceState[Any], tuple[Hashable, Finding]] = (
    weakref.WeakKeyDictionary()
)
_ADDED = re.compile(r"(?<![\w.])([A-Za-z_][\w.]*)\.add\(\s*([A-Za-z_]\w*)\s*\)")


class ObjectInTwoSessions(Detector):
    """
    ## What it does
    Explains `InvalidRequestError: Object '<User at 0x...>' is already attached to
    session '1' (this is '2')`: it names the entity, the line that handed the object to
    the second session, where the first session loaded it (or had it added) and where
    each session began, and the fix.

    The explanation is a finding at that line, and a note on the exception itself.

    ## Why is this bad?
    An object belongs to one session at a time: the session tracks its changes and
    flushes them. Passing an object loaded by one session to another one (`add()`, or a
    relationship assignment that cascades it) fails; the usual cause is an object kept
    across units of work (a module-level cache, a background task given the request's
    object, two `Depends(get_session)` in one request).

    A new object whose relationship holds an object of another session
    (`action.add(Comment(user=current_user))`, `add()`'s cascade reaching the `User`) is
    reported as it is added, before SQLAlchemy raises: also when the program catches the
    error.

    ## Known problems
    The error of `add(user)` itself is explained when it leaves a unit of work
    (`track()`, a request under the middleware, a test), reaches the top of the program
    or is logged. One the program catches and swallows (`except Exception: pass` in a
    worker) is not seen: SQLAlchemy raises it inside `add()` before any event a listener
    could watch (`before_attach` comes after that check). An object reached more than
    one relationship down from the added one is not looked for.

    ## Example
    ```python
    user = request_session.get(User, user_id)
    with Session(engine) as job_session:
        job_session.add(user)  # InvalidRequestError: already attached
    ```

    Use instead:
    ```python
    user = request_session.get(User, user_id)
    with Session(engine) as job_session:
        user = job_session.merge(user)  # the copy that belongs to job_session
    ```

    Or `request_session.expunge(user)` (or close it) first, or pass the id and load the
    object again in the second session; better still, one session per unit of work.

    ## References
    - [Session.merge](https://docs.sqlalchemy.org/en/20/orm/session_state_management.html#merging)
    - [Is the Session thread-safe? / one session per unit of work](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#when-do-i-construct-a-session-when-do-i-commit-it-and-when-do-i-close-it)
    """

    code = "SQD156"
    name = "object-in-two-sessions"
    pitfalls = ("P18",)
    severity = Severity.ERROR
    message = (
        "{entity} object {given} a second session while still attached to the session "
        "that {how} — {fix}"
    )

    def on_attached_elsewhere(self, attached: AttachedElsewhere) -> None:
        # Seen before SQLAlchemy raises: reported even when the program catches the error.
        state = attached.state
        second = record_of(self.uow, attached.session)
        finding = self._report(state, attached.site, state.session, second, via=attached.via)
        _cascaded[state] = (_key(state, attached.site), finding)

    def on_error(self, seen: ErrorSeen) -> None:
        error = seen.error
        if not isinstance(error, InvalidRequestError) or _ALREADY_ATTACHED not in str(error):
            return
        state = next(seen.locals_of_type(InstanceState), None)
        if state is None:
            return
        cascaded = _cascaded.get(state)
        if cascaded is not None and cascaded[0] == _key(state, seen.site):
            # Reported as the add() began: explained with that finding, also from another
            # unit of work (the uncaught exception's under `sqla-doctor run`).
            seen.explain(cascaded[1])
            return
        # The sessions may be closed by now (their ``with`` blocks ended before the unit
        # of work's): the message's session keys still tell which records are theirs.
        keys = _SESSION_KEYS.search(str(error))
        second_key = int(keys.group(2)) if keys else None
        first = state.session
        second = next((s for s in seen.locals_of_type(Session) if s is not first), None)
        second_record = (
            record_of(self.uow, second) if second is not None else _by_key(self.uow, second_key)
        )
        first_key = int(keys.group(1)) if keys else None
        seen.explain(self._report(state, seen.site, first, second_record, first_key))

    def _report(
        self,
        state: InstanceState[Any],
        site: CallSite | None,
        first: Session | None,
        second_record: SessionRecord | None,
        first_key: int | None = None,
        *,
        via: str | None = None,
    ) -> Finding:
        entity = state.class_.__name__
        first_record = (
            record_of(self.uow, first) if first is not None else _by_key(self.uow, first_key)
        )
        related: list[tuple[CallSite | None, str]] = []
        how = "has it"
        origin = origin_of(self.uow, state.mapper, first_record) if state.key else None
        added = first_record.pending.get(id(state)) if first_record is not None else None
        if origin is not None and origin.site is not None:
            how = f"loaded it at {self.where(origin.site)}"
            related.append((origin.site, f"the first session loaded the {entity} here"))
        elif added is not None and added.site is not None:
            how = f"added it at {self.where(added.site)}"
            related.append((added.site, f"the {entity} was added to the first session here"))
        for record, which in ((first_record, "first"), (second_record, "second")):
            began = _began(record)
            if began is not None:
                related.append((began, f"the {which} session began here"))
        if via is None:
            given = "given to"
            merge: str | None = _merge_call(site, second_record)
            copy = f"use {merge} to get this session's copy"
        else:
            # add(Comment(user=user)): the new object's relationship cascades the User in.
            given = f"reached through {via}, added to"
            merge = None
            copy = (
                f"set {via} to this session's copy (merge() or get() it there), or set its "
                "foreign key column instead"
            )
        return self.report(
            site,
            key=_key(state, site),
            subject=entity,
            related=related,
            hint=merge,
            details={"entity": entity},
            entity=entity,
            given=given,
            how=how,
            fix=(
                f"{copy}, or close/expunge it from the first session first; keep one session "
                "per unit of work"
            ),
        )


def _key(state: InstanceState[Any], site: CallSite | None) -> Hashable:
    return (state.class_.__name__, site.key if site is not None else None)


def _merge_call(site: CallSite | None, second: SessionRecord | None) -> str:
    """``user = await job.merge(user)``: merge() as the failing ``job.add(user)`` line
    would write it, awaited for an AsyncSession's."""
    line = linecache.getline(site.filename, site.lineno) if site is not None else ""
    added = _ADDED.search(line)
    session, obj = added.groups() if added is not None else ("session", "obj")
    awaited = "await " if second is not None and is_async_session(second) else ""
    return f"{obj} = {awaited}{session}.merge({obj})"


def _by_key(uow: UnitOfWork, key: int | None) -> SessionRecord | None:
    """The record of the live session whose ``hash_key`` (the number in the message) is key."""
    if key is None:
        return None
    for record in session_records(uow):
        if getattr(record.session, "hash_key", None) == key:
            return record
    return None


def _began(record: Any) -> CallSite | None:
    """Where a session first used a connection (the start of its work)."""
    if record is None or not record.opened:
        return None
    site: CallSite = record.opened[0]
    return site
