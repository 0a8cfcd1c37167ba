"""The only package that calls ``sqlalchemy.event.listen``.

Listeners are registered once, on the classes: ``Engine`` (every engine, the sync engine
behind an ``AsyncEngine`` too), ``Session`` (every session, including the sync session
behind an ``AsyncSession``), ``Pool``, and lazily the primary-key attributes of each
mapped class an object of which is added to a session. Event registration is a
configuration step in SQLAlchemy, not something to do per request; the per-request state
lives in the ContextVar that each handler reads.

Every handler runs under a guard that never lets an exception reach the host program
(sentry-python's ``capture_internal_exceptions``), except a ``PitfallError`` in ``raise``
mode and a warning the user's filters turned into an error. Handlers compute what several
detectors share once (the call site, what an execution loads, the session's bookkeeping)
and then call the current unit of work's detectors. Nothing here emits SQL or loads an
attribute.

This module holds the registration table and the public surface; each handler lives in
the module of what it listens to. The modules form layers, and a module imports only
those below it: ``units`` (the guard, which unit of work, dispatch); ``endings``
(sessions and connections the garbage collector or the exit ended); ``sharing`` (one
session, several users), ``connections`` (the pool, Engine connections) and ``objects``
(attribute events, loads); ``statements`` (executions); ``flushes``; ``sessions`` (a
Session's transactions and its objects' states). A helper that two layers share lives
in the lower one.
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.pool import Pool

from sqla_doctor.runtime import errors, generator_dependency, reads
from sqla_doctor.runtime.listeners.connections import (
    _on_checkin,
    _on_checkout,
    _on_close,
    _on_do_connect,
    _on_engine_begin,
    _on_engine_commit,
    _on_engine_connect,
    _on_engine_rollback,
    _on_reset,
)
from sqla_doctor.runtime.listeners.endings import drain, end_unit, shutdown
from sqla_doctor.runtime.listeners.flushes import (
    _on_after_flush,
    _on_after_flush_postexec,
    _on_before_flush,
)
from sqla_doctor.runtime.listeners.objects import (
    _instrument_known_mappers,
    _load_watched,
    _on_expire,
    _on_mapper_configured,
    _on_pickle,
    _on_unpickle,
    track_every_read,
    watch_loads,
)
from sqla_doctor.runtime.listeners.sessions import (
    _on_after_begin,
    _on_after_commit,
    _on_after_rollback,
    _on_after_transaction_create,
    _on_after_transaction_end,
    _on_pending_to_persistent,
    _on_pending_to_transient,
    _on_persistent_to_detached,
    _on_transient_to_pending,
)
from sqla_doctor.runtime.listeners.sharing import _on_before_commit, starting_site
from sqla_doctor.runtime.listeners.statements import (
    _on_after_cursor_execute,
    _on_before_cursor_execute,
    _on_do_orm_execute,
    _on_handle_error,
)
from sqla_doctor.runtime.listeners.units import (
    _instrumented_mappers,
    _registered,
    _registration_lock,
)
from sqla_doctor.runtime.unit_of_work import process

__all__ = [
    "drain",
    "end_unit",
    "register",
    "shutdown",
    "starting_site",
    "track_every_read",
    "unregister",
    "watch_loads",
]

_LISTENERS: tuple[tuple[Any, str, Callable[..., Any], dict[str, Any]], ...] = (
    (Session, "do_orm_execute", _on_do_orm_execute, {}),
    (Engine, "before_cursor_execute", _on_before_cursor_execute, {"retval": True}),
    (Engine, "after_cursor_execute", _on_after_cursor_execute, {}),
    (Engine, "handle_error", _on_handle_error, {}),
    (Engine, "do_connect", _on_do_connect, {}),
    (Engine, "engine_connect", _on_engine_connect, {}),
    (Engine, "begin", _on_engine_begin, {}),
    (Engine, "commit", _on_engine_commit, {}),
    (Engine, "rollback", _on_engine_rollback, {}),
    (Session, "after_transaction_create", _on_after_transaction_create, {}),
    (Session, "after_begin", _on_after_begin, {}),
    (Session, "before_commit", _on_before_commit, {}),
    (Session, "after_commit", _on_after_commit, {}),
    (Session, "after_rollback", _on_after_rollback, {}),
    (Session, "after_transaction_end", _on_after_transaction_end, {}),
    (Session, "before_flush", _on_before_flush, {}),
    (Session, "after_flush", _on_after_flush, {}),
    (Session, "after_flush_postexec", _on_after_flush_postexec, {}),
    (Session, "transient_to_pending", _on_transient_to_pending, {"raw": True}),
    (Session, "pending_to_persistent", _on_pending_to_persistent, {"raw": True}),
    (Session, "pending_to_transient", _on_pending_to_transient, {"raw": True}),
    (Session, "persistent_to_detached", _on_persistent_to_detached, {"raw": True}),
    (Mapper, "mapper_configured", _on_mapper_configured, {}),
    (Mapper, "pickle", _on_pickle, {"raw": True}),
    (Mapper, "unpickle", _on_unpickle, {"raw": True}),
    (Mapper, "expire", _on_expire, {"raw": True}),
    (Pool, "checkout", _on_checkout, {}),
    (Pool, "checkin", _on_checkin, {}),
    (Pool, "reset", _on_reset, {}),
    (Pool, "close", _on_close, {}),
)
_atexit_registered = False


def register() -> None:
    """Register every listener once (idempotent, thread-safe)."""
    global _atexit_registered
    with _registration_lock:
        if process.registered:
            return
        for target, name, fn, kwargs in _LISTENERS:
            event.listen(target, name, fn, **kwargs)
            _registered.append((target, name, fn))
        process.registered = True
    _instrument_known_mappers()
    generator_dependency.watch_collections()
    # Errors a framework catches and logs are explained in the unit that logs them.
    errors.install_log_hook()
    with _registration_lock:
        if not _atexit_registered:
            atexit.register(shutdown)
            _atexit_registered = True


def unregister() -> None:
    """Remove every listener this module registered."""
    with _registration_lock:
        while _registered:
            target, name, fn = _registered.pop()
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        _instrumented_mappers.clear()
        _load_watched.clear()
        process.registered = False
    errors.uninstall_log_hook()
    generator_dependency.unwatch_collections()
    # The attribute descriptors switched for read tracking get their own class back.
    reads.disable()
