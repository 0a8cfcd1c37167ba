"""Exceptions on their way out: hand them to the detectors that explain them.

SQLAlchemy's errors say what failed, not why: ``DetachedInstanceError`` does not say where
the session closed, ``PendingRollbackError`` does not say which flush failed. The unit of
work saw both. When an exception leaves a unit of work (``track()``'s exit, which the
pytest plugin and the ASGI/WSGI middleware use) or the program (``sqla-doctor run``'s
excepthook), ``dispatch`` gives it to every detector's ``on_error`` handler; what they
explain becomes findings, and a note on the exception (Python 3.11+), so the traceback
the user reads carries the cause and the fix, in every mode. An error raised inside a
statement's execution (``MissingGreenlet``) is explained earlier, from the engine's
``handle_error`` event while it is being raised (listeners/statements.py): programs catch errors.

Nothing here may raise into the program, and nothing changes the exception but its notes.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from types import FrameType, TracebackType
from typing import Any, Final

from sqlalchemy import inspect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import InstanceState
from sqlalchemy.orm.exc import DetachedInstanceError

from sqla_doctor.findings import Finding
from sqla_doctor.runtime.callsite import THIRD_PARTY, USER, CallSite, classify, line_of
from sqla_doctor.runtime.callsite import find as find_call_site
from sqla_doctor.runtime.caught import caught_by_name
from sqla_doctor.runtime.detector import _MAX_TRACEBACK, ErrorSeen, OrmExecution
from sqla_doctor.runtime.unit_of_work import (
    SessionRecord,
    UnitOfWork,
    current,
    origin_in,
    process,
)

__all__ = [
    "NOTE_PREFIX",
    "dispatch",
    "explain_fatal",
    "explain_now",
    "explain_uncaught",
    "install_hooks",
    "install_log_hook",
    "note_text",
    "origin_and_entity_of",
    "origin_of",
    "record_of",
    "seen",
    "session_records",
    "uninstall_hooks",
    "uninstall_log_hook",
]

NOTE_PREFIX: Final = "sqla-doctor: "
_MAX_CHAIN: Final = 16
_hooks_lock = threading.Lock()
_previous_excepthook: Callable[..., Any] | None = None
_previous_threading_hook: Callable[..., Any] | None = None
_previous_record_factory: Callable[..., logging.LogRecord] | None = None
_log_hook_installed = False
# The id of the last exception explain_uncaught() was given: explain_fatal() skips it.
_uncaught_seen: int | None = None
# Set while a logged error is explained: what explaining logs is not explained again.
_logging_explains = threading.local()

logger = logging.getLogger("sqla_doctor")


def sqlstate_of(error: BaseException | None) -> str | None:
    """PostgreSQL's SQLSTATE of a driver error: psycopg and SQLAlchemy's asyncpg adapter
    say ``sqlstate``, psycopg2 ``pgcode``."""
    sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return sqlstate if isinstance(sqlstate, str) else None


def _is_sqlalchemy(error: BaseException) -> bool:
    module = type(error).__module__
    return module == "sqlalchemy" or module.startswith("sqlalchemy.")


def seen(raised: BaseException) -> ErrorSeen:
    """The payload for ``raised``: its SQLAlchemy error and the user's line that hit it."""
    chain: list[BaseException] = []
    candidate: BaseException | None = raised
    while candidate is not None and candidate not in chain and len(chain) < _MAX_CHAIN:
        chain.append(candidate)
        if _is_sqlalchemy(candidate):
            # A StatementError wraps what failed inside the execution (MissingGreenlet
            # from the driver's await, for one); a DBAPIError wraps the driver's error,
            # which stays its ``orig``.
            # Only a SQLAlchemy error proper: asyncpg's DBAPI errors are SQLAlchemy-made
            # emulations (sqlalchemy.dialects...AsyncAdapt_*), for which the DBAPIError
            # itself is the error to explain.
            inner = getattr(candidate, "orig", None)
            if isinstance(inner, SQLAlchemyError) and inner not in chain:
                chain.append(inner)
            break
        candidate = candidate.__cause__ or candidate.__context__
    error = chain[-1] if _is_sqlalchemy(chain[-1]) else raised
    # Innermost first: the frames that raised it, then those it went through.
    tracebacks = tuple(e.__traceback__ for e in reversed(chain) if e.__traceback__ is not None)
    site = None
    for traceback in tracebacks:
        site = _user_site(traceback)
        if site is not None:
            break
    return ErrorSeen(raised, error, site, tracebacks)


def _payloads(raised: BaseException) -> list[ErrorSeen]:
    payload = seen(raised)
    if payload.error is raised and not _is_sqlalchemy(raised):
        return [payload, *_reported_by_validation(raised, payload)]
    return [payload]


# SQLAlchemy errors a validation library reports by name when reading an attribute raised
# them: pydantic's ``get_attribute_error``, which FastAPI's ``ResponseValidationError``
# carries for a ``response_model`` read from ORM objects.
_REPORTED_ERRORS: Final[dict[str, type[SQLAlchemyError]]] = {
    "DetachedInstanceError": DetachedInstanceError
}
_MAX_REPORTED: Final = 64


def _reported_by_validation(raised: BaseException, payload: ErrorSeen) -> list[ErrorSeen]:
    """The SQLAlchemy errors inside a validation error, one per class and attribute.

    pydantic catches what reading an attribute raised and keeps only its text, so the
    error has no traceback: the object it was about (the entry's ``input``) stands in for
    the library frames that would have held its state.
    """
    found: dict[tuple[type, str], ErrorSeen] = {}
    for kind, message, entry in _reported_errors(raised):
        state = inspect(entry.get("input"), raiseerr=False)
        if not isinstance(state, InstanceState):
            continue
        location = entry.get("loc")
        attribute = location[-1] if isinstance(location, (list, tuple)) and location else message
        key = (state.class_, str(attribute))
        if key not in found:
            found[key] = ErrorSeen(
                raised, kind(message), payload.site, payload.tracebacks, objects=(state,)
            )
    return list(found.values())


def _reported_errors(
    raised: BaseException,
) -> Iterator[tuple[type[SQLAlchemyError], str, dict[str, Any]]]:
    """``(error class, its message, the entry)`` of each attribute read a validation
    error reports as having raised one of ``_REPORTED_ERRORS``."""
    if not type(raised).__module__.startswith(("pydantic", "fastapi")):
        return
    errors = getattr(raised, "errors", None)
    if not callable(errors):
        return
    try:
        entries = errors()
    except Exception:
        return
    if not isinstance(entries, (list, tuple)):
        return
    for entry in entries[:_MAX_REPORTED]:
        if not isinstance(entry, dict) or entry.get("type") != "get_attribute_error":
            continue
        context = entry.get("ctx")
        text = context.get("error") if isinstance(context, dict) else None
        if not isinstance(text, str):
            continue
        name, _, message = text.partition(": ")
        kind = _REPORTED_ERRORS.get(name)
        if kind is not None:
            yield kind, message, entry


def _user_site(traceback: TracebackType | None) -> CallSite | None:
    """The innermost user frame of a traceback (where the program hit the error).

    From the traceback, not a live stack walk: by the time an exception reaches the end
    of a unit of work, the frames that raised it are gone from the stack.
    """
    site: CallSite | None = None
    fallback: CallSite | None = None
    walked = 0
    while traceback is not None and walked < _MAX_TRACEBACK:
        walked += 1
        frame = traceback.tb_frame
        code = frame.f_code
        kind = classify(code.co_filename)
        here = CallSite(
            code.co_filename,
            line_of(frame, traceback.tb_lineno),
            code.co_name,
            frame.f_globals.get("__name__"),
        )
        if kind == USER:
            site = here
        elif kind == THIRD_PARTY:
            # An app installed into site-packages: its frames are the user's then.
            fallback = here
        traceback = traceback.tb_next
    return site or fallback


def _explained(error: BaseException) -> bool:
    notes = getattr(error, "__notes__", None) or ()
    return any(isinstance(note, str) and note.startswith(NOTE_PREFIX + "SQD") for note in notes)


def note_text(finding: Finding) -> str:
    lines = [f"{NOTE_PREFIX}{finding.code} {finding.message}"]
    lines.extend(
        f"  {related.location.path}:{related.location.line}: {related.message}"
        for related in finding.related
    )
    return "\n".join(lines)


def _add_note(error: BaseException, text: str) -> None:
    if sys.version_info >= (3, 11):
        notes = getattr(error, "__notes__", None)
        if not notes or text not in notes:
            error.add_note(text)


def dispatch(
    uow: UnitOfWork,
    raised: BaseException,
    payload: ErrorSeen | None = None,
    *,
    emit: bool = False,
) -> list[Finding]:
    """Let the unit's detectors explain ``raised``; note what they found on it.

    Called before the unit ends (its origins and sessions are still there) and before
    its findings are released. An exception already explained by an inner unit of work
    is left alone. The explained findings are not emitted again as warnings or a
    ``PitfallError`` note: the traceback carries them (``log`` mode still logs them),
    unless ``emit`` (an error explained while raised, which the program may swallow).
    """
    try:
        if not uow.active:
            return []
        if _explained(raised):
            if not emit:
                # Explained while raised (read tracking), and now leaving the unit with
                # that note: its traceback carries the finding, as below.
                notes = getattr(raised, "__notes__", None) or ()
                with uow.lock:
                    uow._unemitted = [
                        p for p in uow._unemitted if note_text(p.finding) not in notes
                    ]
            return []
        handlers = uow.handlers["error"]
        if not handlers:
            return []
        payloads = [payload] if payload is not None else _payloads(raised)
        with uow.lock:
            for each in payloads:
                for handler in handlers:
                    try:
                        handler(each)
                    except Exception:
                        _internal_error(getattr(handler, "__qualname__", handler))
        explained = [f for each in payloads for f in each.explained]
        shown = [f for f in dict.fromkeys(explained) if not _suppressed(uow, f)]
        for finding in shown:
            _add_note(raised, note_text(finding))
        if shown and not emit and uow.settings.mode != "log":
            with uow.lock:
                uow._unemitted = [p for p in uow._unemitted if p.finding not in shown]
        return shown
    except Exception:
        _internal_error(dispatch)
        return []


def _suppressed(uow: UnitOfWork, finding: Finding) -> bool:
    filename = os.path.join(uow.settings.root, finding.location.path)
    return uow.settings.suppressed(finding, filename, str(finding.details.get("subject", "")))


def _internal_error(where: object) -> None:
    process.internal_errors += 1
    logger.warning(
        "sqla-doctor: internal error while explaining an exception in %r; the program is "
        "unaffected, but please report this with the traceback below",
        where,
        exc_info=True,
    )


def explain_uncaught(raised: BaseException) -> list[Finding]:
    """Explain an exception that reached the top of the program (or of a thread).

    The unit of work is the context's own if one is open, else a short-lived implicit one
    whose detectors read what the process still knows (live sessions' records).
    """
    global _uncaught_seen
    _uncaught_seen = id(raised)
    try:
        uow = current.get()
        if uow is None:
            settings = process.settings
            if not process.installed or settings is None:
                return []
            uow = UnitOfWork(settings, "uncaught exception", explicit=False)
            shown = dispatch(uow, raised)
            uow.end()
            uow.release(final=True, can_raise=False)
            return shown
        return dispatch(uow, raised)
    except Exception:
        _internal_error(explain_uncaught)
        return []


def explain_fatal(raised: BaseException) -> None:
    """Explain, at exit, the exception the program died of when the excepthook never
    saw it: a framework replaced ``sys.excepthook`` after install without chaining to
    the hook before it (typer with rich prints its own traceback). The traceback is
    printed already; the findings still reach the report. Only when the hook installed
    was replaced: under it, the exception was explained already or not SQLAlchemy's (a
    test runner's ``sys.last_value`` is a failed test's, explained in its own unit)."""
    replaced = _previous_excepthook is not None and sys.excepthook is not _excepthook
    if replaced and id(raised) != _uncaught_seen and not _explained(raised):
        explain_uncaught(raised)


def explain_raised(raised: BaseException, live: FrameType) -> None:
    """Explain an error the program may still catch, while it is raised.

    ``live`` is the frame that will receive it (the attribute read that failed). A
    finding is made in the context's unit of work, or in a short-lived implicit one, and
    noted on the exception: explaining it again when it reaches a unit's end, the
    excepthook or a log record is then skipped. An error that ``live`` or a frame that
    called it catches by its class's name is the program's to handle, and left alone
    unless it goes on to reach one of those.
    """
    try:
        if _explained(raised) or caught_by_name(live, type(raised).__name__):
            return
        payload = ErrorSeen(
            raised,
            raised,
            find_call_site(1),
            (raised.__traceback__,) if raised.__traceback__ is not None else (),
            live,
        )
        explain_now(raised, payload)
    except Exception:
        _internal_error(explain_raised)


def explain_passing(raised: BaseException) -> None:
    """Explain an error on its way out of the program's session (its ``with`` block
    closing it), which the program may still catch and swallow: a worker thread that
    returns the error's name. The user's line is the traceback's, where it was raised;
    when that holds none, the program's frame on the stack: the `with` block whose exit
    raised it (`with Session.begin():` committing, its checkout timing out) is not in
    the traceback yet, since the error has not unwound to it."""
    try:
        if not _explained(raised):
            payload = seen(raised)
            if payload.site is None:
                payload.site = find_call_site(1)
            explain_now(raised, payload)
    except Exception:
        _internal_error(explain_passing)


def explain_now(raised: BaseException, payload: ErrorSeen) -> None:
    """In the context's unit of work, or a short-lived implicit one."""
    uow = current.get()
    if uow is not None:
        dispatch(uow, raised, payload, emit=True)
        return
    settings = process.settings
    if not process.installed or settings is None:
        return
    uow = UnitOfWork(settings, "raised", explicit=False)
    dispatch(uow, raised, payload, emit=True)
    uow.end()
    uow.release(final=True, can_raise=False)


def _excepthook(
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | None,
) -> None:
    if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
        explain_uncaught(exc)
    previous = _previous_excepthook or sys.__excepthook__
    previous(exc_type, exc, tb)


def _threading_excepthook(args: Any) -> None:
    if args.exc_value is not None and not isinstance(args.exc_value, SystemExit):
        explain_uncaught(args.exc_value)
    previous = _previous_threading_hook or threading.__excepthook__
    previous(args)


def _involves_sqlalchemy(raised: BaseException) -> bool:
    candidate: BaseException | None = raised
    for _ in range(_MAX_CHAIN):
        if candidate is None:
            return False
        if _is_sqlalchemy(candidate):
            return True
        candidate = candidate.__cause__ or candidate.__context__
    return False


def _worth_explaining(raised: BaseException) -> bool:
    return _involves_sqlalchemy(raised) or next(_reported_errors(raised), None) is not None


def _log_record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """Explain a SQLAlchemy error the program caught and logged, before it is formatted.

    Servers and frameworks catch what a request raised and log it (uvicorn's "Exception
    in ASGI application", Flask's ``log_exception``): such an error never reaches the
    excepthook. Made here, the explanation's note is in the traceback the log shows.
    """
    if getattr(_logging_explains, "making", False):
        # Back in here from a factory that wraps this one and that this one chains to:
        # break the cycle.
        return logging.LogRecord(*args, **kwargs)
    previous = _previous_record_factory or logging.LogRecord
    _logging_explains.making = True
    try:
        record = previous(*args, **kwargs)
    finally:
        _logging_explains.making = False
    exc_info = record.exc_info
    if (
        exc_info
        and exc_info[1] is not None
        and not getattr(_logging_explains, "busy", False)
        and not record.name.startswith("sqla_doctor")
        and _worth_explaining(exc_info[1])
    ):
        _logging_explains.busy = True
        try:
            explain_uncaught(exc_info[1])
        finally:
            _logging_explains.busy = False
    return record


def install_hooks() -> None:
    """Explain uncaught exceptions (main thread and threads) and logged ones; chains to
    the hooks before."""
    global _previous_excepthook, _previous_threading_hook
    with _hooks_lock:
        if sys.excepthook is not _excepthook:
            _previous_excepthook = sys.excepthook
            sys.excepthook = _excepthook
        if threading.excepthook is not _threading_excepthook:
            _previous_threading_hook = threading.excepthook
            threading.excepthook = _threading_excepthook
    install_log_hook()


def uninstall_hooks() -> None:
    global _previous_excepthook, _previous_threading_hook
    with _hooks_lock:
        if sys.excepthook is _excepthook:
            sys.excepthook = _previous_excepthook or sys.__excepthook__
        if threading.excepthook is _threading_excepthook:
            threading.excepthook = _previous_threading_hook or threading.__excepthook__
        _previous_excepthook = _previous_threading_hook = None
    uninstall_log_hook()


def install_log_hook() -> None:
    """Explain SQLAlchemy errors the program catches and logs (a web framework's 500)
    in the unit of work that logs them; chains to the record factory before."""
    global _previous_record_factory, _log_hook_installed
    with _hooks_lock:
        # Once: a factory set since may wrap this one (installing again would chain to it).
        if _log_hook_installed:
            return
        factory = logging.getLogRecordFactory()
        if factory is not _log_record_factory:
            _previous_record_factory = factory
            logging.setLogRecordFactory(_log_record_factory)
        _log_hook_installed = True


def uninstall_log_hook() -> None:
    global _previous_record_factory, _log_hook_installed
    with _hooks_lock:
        if logging.getLogRecordFactory() is _log_record_factory:
            logging.setLogRecordFactory(_previous_record_factory or logging.LogRecord)
            _previous_record_factory = None
        # Else a factory set since wraps this one: it stays in that chain, still chaining.
        _log_hook_installed = False


# -- what explainers share -----------------------------------------------------------------


def session_records(uow: UnitOfWork) -> list[SessionRecord]:
    """The sessions this unit saw, then every live one the process knows, then the
    latest ones collected after detaching objects."""
    seen_ids: set[int] = set()
    out: list[SessionRecord] = []
    for record in [*uow.sessions.values(), *process.records.values(), *process.gone_sessions]:
        if id(record) not in seen_ids:
            seen_ids.add(id(record))
            out.append(record)
    return out


def record_of(uow: UnitOfWork, session: object) -> SessionRecord | None:
    """The record of a live session (``None`` for one nothing watched)."""
    record = process.records.get(id(session))
    if record is not None and record.session is session:
        return record
    for candidate in uow.sessions.values():
        if candidate.session is session:
            return candidate
    return None


def origin_of(
    uow: UnitOfWork, mapper: Any, record: SessionRecord | None = None
) -> OrmExecution | None:
    """The last execution that loaded ``mapper``'s objects: in this unit, else in the
    session's own units (an uncaught exception's unit is new and saw nothing)."""
    found = origin_and_entity_of(uow, mapper, record)
    return found[1] if found is not None else None


def origin_and_entity_of(
    uow: UnitOfWork, mapper: Any, record: SessionRecord | None = None
) -> tuple[Any, OrmExecution] | None:
    """As ``origin_of``, with the mapper that execution selected (``mapper``, or a
    superclass for a query of the base class)."""
    found = uow.origin_and_entity_for(mapper)
    if record is None or (found is not None and found[1].session_key == record.key):
        return found
    if record.origins_kept is not None:
        # A collected session: its implicit unit ended, this is what it saw.
        return origin_in(record.origins_kept, mapper)
    for other in (record.owner, record.implicit):
        if other is not None and other is not uow and other.active:
            found = other.origin_and_entity_for(mapper)
            if found is not None:
                return found if found[1].session_key == record.key else None
    return None
