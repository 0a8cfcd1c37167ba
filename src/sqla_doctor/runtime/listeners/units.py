"""What every handler shares: the guard and the unit of work an event is news to.

``_guarded`` runs a handler so that its own errors are logged once and swallowed
(``internal_error``) while a ``PitfallError`` or a warning turned error goes through.
The rest finds the unit of work a session or a pooled connection reports to (the
explicit one of this context, else an implicit one made on demand) and hands an event to
its detectors (``_dispatch``, ``_checkpoint``). It listens to nothing itself; every other
module of the package builds on it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from sqla_doctor.runtime import session_loops
from sqla_doctor.runtime.internal_errors import internal_error
from sqla_doctor.runtime.modes import PitfallError, SqlaDoctorWarning
from sqla_doctor.runtime.unit_of_work import (
    CheckoutRecord,
    SessionRecord,
    Settings,
    UnitOfWork,
    current,
    process,
)

# Exceptions that are the user's choice and must reach them.
_DELIBERATE = (PitfallError, SqlaDoctorWarning)
# Reentrant: reading a mapper while instrumenting it may configure the registry's new
# mappers, whose mapper_configured listener instruments them in the same thread.
_registration_lock = threading.RLock()
_registered: list[tuple[Any, str, Callable[..., Any]]] = []
_instrumented_mappers: set[Any] = set()
_STACK_LIMIT = 12
F = TypeVar("F", bound=Callable[..., Any])


def _guarded(fn: F) -> F:
    """Run a handler; swallow and log its own errors, let deliberate ones through."""

    @functools.wraps(fn)
    def guard(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _DELIBERATE:
            raise
        except Exception:
            internal_error(fn.__name__)
            return None

    return guard  # type: ignore[return-value]


def _record(session: Session) -> SessionRecord:
    key = id(session)
    record = process.records.get(key)
    if record is None or record.ref() is not session:
        record = SessionRecord(session)
        process.records[key] = record
    return record


def _session_unit(record: SessionRecord) -> UnitOfWork | None:
    """The explicit unit of work of this context, else the session's implicit one."""
    uow = current.get()
    if uow is not None:
        return uow
    return _implicit_unit(record)


def _implicit_unit(record: SessionRecord) -> UnitOfWork | None:
    uow = record.implicit
    if uow is None:
        if not process.installed or process.settings is None:
            return None
        uow = record.implicit = UnitOfWork(
            process.settings,
            "session",
            explicit=False,
            parent=session_loops.loop_unit(process.settings),
        )
    return uow


def _checkout_unit(record: CheckoutRecord) -> UnitOfWork | None:
    if record.owner is not None and record.owner.active:
        return record.owner
    if record.implicit is None:
        settings = _late_settings(record.owner)
        if settings is None:
            return None
        record.implicit = UnitOfWork(settings, "connection", explicit=False)
    return record.implicit


def _late_settings(owner: UnitOfWork | None) -> Settings | None:
    """The settings for news of a session or connection outside any unit of work:
    ``install()``'s, else the ``late_settings`` of the ended unit that watched it. A
    request's leaked session is collected after its middleware's unit ended; without
    ``install()`` its lost writes would otherwise go unreported."""
    if process.installed and process.settings is not None:
        return process.settings
    return owner.late_settings if owner is not None else None


def _dispatch(uow: UnitOfWork, event_name: str, payload: Any, *, can_raise: bool = True) -> None:
    handlers = uow.handlers[event_name]
    if handlers:
        with uow.lock:
            for handler in handlers:
                handler(payload)
    if uow._unemitted:
        uow.release(can_raise=can_raise)


def _checkpoint(uow: UnitOfWork, *, can_raise: bool = True) -> None:
    with uow.lock:
        uow.checkpoint()
    uow.release(can_raise=can_raise)


def _finish_implicit(uow: UnitOfWork | None) -> None:
    if uow is not None and not uow.explicit and uow.active:
        uow.end()
        uow.release(final=True, can_raise=False)


def _bump(counts: dict[str, int], key: str, by: int) -> None:
    if key in counts or len(counts) < 16:
        counts[key] = counts.get(key, 0) + by
