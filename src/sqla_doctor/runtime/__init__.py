"""The runtime doctor: watches a running program through SQLAlchemy's public events.

Two entry points::

    import sqla_doctor

    sqla_doctor.install()            # every engine and session in the process

    with sqla_doctor.track() as uow: # one unit of work: a request, a test, a job
        ...
    uow.findings, uow.query_count

``track()`` is also a decorator, for plain and ``async`` functions and generators (the
unit spans the whole iteration: a streamed body), and works without
``install()``; one tracker may be shared by any number of threads and tasks at
once. ``current_unit()`` is the unit of work of the running thread or task, or None.
Settings come from ``[tool.sqla-doctor.runtime]`` in the nearest pyproject.toml;
``mode`` is ``warn`` (a Python warning at the user's line), ``log``,
``raise`` (a ``PitfallError`` at the end of the unit of work) or ``collect``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import os
import sys
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator, Iterable
from contextvars import Token
from types import TracebackType
from typing import Any, TypeVar, overload

from sqlalchemy import inspect as inspect_object
from sqlalchemy.orm import InstanceState, Session

from sqla_doctor.config import Config, ConfigError, RuntimeConfig
from sqla_doctor.config import load as load_config
from sqla_doctor.findings import Finding
from sqla_doctor.runtime import errors, listeners
from sqla_doctor.runtime.async_sessions import sync_session
from sqla_doctor.runtime.modes import (
    EngineWarning,
    LoadingWarning,
    MappingWarning,
    NPlusOneWarning,
    PitfallError,
    QueryWarning,
    SessionWarning,
    SqlaDoctorError,
    SqlaDoctorWarning,
    describe,
)
from sqla_doctor.runtime.unit_of_work import Settings, UnitOfWork, current, process

__all__ = [
    "EngineWarning",
    "LoadingWarning",
    "MappingWarning",
    "NPlusOneWarning",
    "PitfallError",
    "QueryWarning",
    "SessionWarning",
    "SqlaDoctorError",
    "SqlaDoctorWarning",
    "Tracker",
    "UnitOfWork",
    "collected",
    "current_unit",
    "install",
    "installed",
    "shutdown",
    "statements_observed",
    "track",
    "uninstall",
]

F = TypeVar("F", bound=Callable[..., Any])

_settings_lock = threading.Lock()
_loaded: Settings | None = None
logger = logging.getLogger("sqla_doctor")
# The project configuration's problems, each logged once when it was read (the pytest
# plugin shows them in its summary).
config_errors: list[str] = []


def _as_config(config: Config | RuntimeConfig | None) -> Config | None:
    if isinstance(config, RuntimeConfig):
        return Config(runtime=config)
    return config


def _default_settings() -> Settings:
    """The installed settings, or the project's configuration read once."""
    global _loaded
    if process.settings is not None:
        return process.settings
    with _settings_lock:
        if _loaded is None:
            _loaded = _project_settings()[1]
        return _loaded


def config_problems() -> list[str]:
    """What could not be used in the project's configuration (read now if it was not
    yet): one line each; the defaults were used instead."""
    _default_settings()
    return list(config_errors)


def _project_settings(mode: str | None = None) -> tuple[Config, Settings]:
    """The project's configuration (``pyproject.toml``) and its settings.

    A configuration that cannot be used (an unknown key, a misspelt rule selector, a
    wrong type) is one error line in the ``sqla_doctor`` log, and the defaults: a typo
    in a file must not take the program down (a web app answering 500) nor switch the
    doctor off without a word.
    """
    try:
        config = load_config()
        return config, Settings.build(config, mode=mode)
    except ConfigError as error:
        problem = str(error)
    except ValueError as error:  # a mode the file names that does not exist
        problem = f"[tool.sqla-doctor.runtime]: {error}"
    if problem not in config_errors:  # install() reads the file again: say it once
        config_errors.append(problem)
        logger.error("sqla-doctor: %s; using the default settings", problem)
    config = Config()
    return config, Settings.build(config, mode=mode)


def install(
    *,
    mode: str | None = None,
    config: Config | RuntimeConfig | None = None,
    on_finding: Callable[[Finding], None] | Iterable[Callable[[Finding], None]] = (),
) -> None:
    """Watch every engine and session of the process.

    Code outside ``track()`` gets one implicit unit of work per Session (and per pooled
    connection used without a Session); its findings are emitted as they are found.
    ``on_finding`` is called with every finding of every unit of work. Calling
    ``install()`` again replaces the settings and adds the callbacks.
    """
    resolved = _as_config(config)
    if resolved is None:
        resolved, settings = _project_settings(mode)
    else:
        settings = Settings.build(resolved, mode=mode)
    callbacks = [on_finding] if callable(on_finding) else list(on_finding)
    listeners.register()
    process.on_finding.extend(c for c in callbacks if c not in process.on_finding)
    process.settings = settings
    process.collecting = True
    process.installed = True
    if resolved.runtime.track_reads:
        listeners.track_every_read()


def uninstall() -> None:
    """Stop watching: report what live sessions still hold, then remove every listener."""
    if process.installed:
        listeners.shutdown()
    process.installed = False
    process.collecting = False
    process.settings = None
    process.on_finding = []
    listeners.unregister()
    process.records.clear()
    process.gone_sessions.clear()
    process.checkouts.clear()
    process.checkouts_by_fairy.clear()
    process.shared.clear()
    process.dead.clear()
    process.watched.clear()


def installed() -> bool:
    return process.installed


def collected() -> list[Finding]:
    """Every finding since ``install()``, one per place, sorted by location."""
    return process.findings()


def statements_observed() -> int:
    """How many statements reached a DBAPI cursor while listeners were registered."""
    return process.statements


def shutdown() -> None:
    """Report what live sessions and connections still hold (also run at exit)."""
    listeners.shutdown()


def current_unit() -> UnitOfWork | None:
    """The unit of work of the running thread or task: the innermost ``track()`` open
    in this context, or None.

    A task or a thread started with a copy of the context (``asyncio.create_task``,
    ``asyncio.to_thread``) shares its parent's unit; a plain ``threading.Thread`` does
    not. Outside ``track()``, sessions' implicit units (under ``install()``) are not a
    context's and are not returned. Integrations use it to attach the unit's counts to
    their own records (a log line, a span)::

        uow = sqla_doctor.current_unit()
        if uow is not None:
            span.set_attribute("db.statements", uow.query_count)
    """
    return current.get()


class Tracker:
    """One kind of unit of work: a context manager (sync or async) and a decorator.

    Each ``with``/``async with`` block or decorated call is its own ``UnitOfWork`` (for
    a generator function, from its first item to its end or ``close()``);
    ``last`` is the most recent one that ended. One tracker may be entered by many
    threads and tasks at once (a decorated request handler): a decorated call keeps its
    unit and ContextVar token in its own frame, and ``with`` blocks find theirs by the
    unit active in the exiting context.

    A unit entered inside another (a ``@track`` helper called per row of a request)
    reports what it finds itself, and the unit around it lists those findings once; the
    repeat-counting detectors (N+1s) of the outer unit see the nested units' statements
    too, so the loop that calls the helper is reported there.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        mode: str | None = None,
        config: Config | RuntimeConfig | None = None,
    ) -> None:
        self.name = name
        self.mode = mode
        self.config = _as_config(config)
        self.last: UnitOfWork | None = None
        # The ``with`` blocks open now, by id of their unit (insertion order: the newest
        # last), under ``_lock``: threads enter and exit one tracker concurrently.
        self._open: dict[int, tuple[UnitOfWork, Token[UnitOfWork | None]]] = {}
        self._lock = threading.Lock()
        self._settings: Settings | None = None
        # Validate the mode now, where the caller wrote it.
        self.settings()

    def settings(self) -> Settings:
        if self._settings is None:
            if self.config is not None:
                self._settings = Settings.build(self.config, mode=self.mode)
            else:
                self._settings = _default_settings().with_overrides(mode=self.mode)
        return self._settings

    def start(self) -> UnitOfWork:
        uow, token = self._enter()
        with self._lock:
            self._open[id(uow)] = (uow, token)
        return uow

    def stop(self, error: BaseException | None = None) -> UnitOfWork:
        active = current.get()
        with self._lock:
            entry = self._open.pop(id(active), None) if active is not None else None
            if entry is None:
                if not self._open:
                    raise RuntimeError("Tracker.stop() without a matching start()")
                # Exited in a context where another unit is current (a unit left open
                # inside it): the newest block of this tracker is the one ending.
                entry = self._open.popitem()[1]
        return self._exit(*entry, error)

    def _enter(self, handed: tuple[Any, ...] = ()) -> tuple[UnitOfWork, Token[UnitOfWork | None]]:
        listeners.register()
        uow = UnitOfWork(self.settings(), self.name, explicit=True, parent=current.get())
        if handed:
            uow.handed_in = _sessions_among(handed)
        return uow, current.set(uow)

    def _exit(
        self,
        uow: UnitOfWork,
        token: Token[UnitOfWork | None],
        error: BaseException | None = None,
    ) -> UnitOfWork:
        if error is not None:
            # While the unit still holds what explains the error (origins, sessions).
            errors.dispatch(uow, error)
        listeners.end_unit(uow)
        try:
            current.reset(token)
        except ValueError:
            # Exited in another context than it was entered in (a task switch):
            # restore what the token remembers.
            previous = token.old_value
            current.set(None if previous is Token.MISSING else previous)
        parent = current.get()
        if parent is not None:
            parent.absorb(uow)
        self.last = uow
        _release(uow, error)
        return uow

    def __enter__(self) -> UnitOfWork:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(exc)

    async def __aenter__(self) -> UnitOfWork:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(exc)

    def __call__(self, fn: F) -> F:
        if inspect.isasyncgenfunction(fn):
            return self._wrap_async_generator(fn)  # type: ignore[return-value]
        if inspect.isgeneratorfunction(fn):
            return self._wrap_generator(fn)  # type: ignore[return-value]
        if inspect.iscoroutinefunction(fn):
            coroutine: Callable[..., Awaitable[Any]] = fn

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                uow, token = self._enter((*args, *kwargs.values()))
                try:
                    result = await coroutine(*args, **kwargs)
                except BaseException as error:
                    self._exit(uow, token, error)
                    raise
                uow.returned = _mapped_objects_in(result)
                self._exit(uow, token)
                return result

            return run_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            uow, token = self._enter((*args, *kwargs.values()))
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                self._exit(uow, token, error)
                raise
            uow.returned = _mapped_objects_in(result)
            self._exit(uow, token)
            return result

        return run  # type: ignore[return-value]

    def _wrap_generator(self, fn: Callable[..., Generator[Any, Any, Any]]) -> Callable[..., Any]:
        """A generator function (a streamed body): the unit spans its whole iteration."""

        @functools.wraps(fn)
        def run_generator(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            uow, token = self._enter((*args, *kwargs.values()))
            try:
                result = yield from fn(*args, **kwargs)
            except GeneratorExit:
                self._exit(uow, token)  # closed before its end: not an error
                raise
            except BaseException as error:
                self._exit(uow, token, error)
                raise
            self._exit(uow, token)
            return result

        return run_generator

    def _wrap_async_generator(
        self, fn: Callable[..., AsyncGenerator[Any, Any]]
    ) -> Callable[..., Any]:
        """An async generator function (``stream_scalars``, a streamed response): the unit
        spans its whole iteration; values sent and exceptions thrown in are passed on."""

        @functools.wraps(fn)
        async def run_async_generator(*args: Any, **kwargs: Any) -> AsyncGenerator[Any, Any]:
            uow, token = self._enter((*args, *kwargs.values()))
            inner = fn(*args, **kwargs)
            try:
                try:
                    value = await inner.__anext__()
                    while True:
                        try:
                            sent = yield value
                        except GeneratorExit:
                            await inner.aclose()
                            raise
                        except BaseException as thrown:
                            value = await inner.athrow(thrown)
                        else:
                            value = await inner.asend(sent)
                except StopAsyncIteration:
                    pass
            except GeneratorExit:
                self._exit(uow, token)
                raise
            except BaseException as error:
                self._exit(uow, token, error)
                raise
            self._exit(uow, token)

        return run_async_generator


def _sessions_among(values: tuple[Any, ...]) -> frozenset[int]:
    """The ids of the Sessions among a decorated function's arguments (an AsyncSession's
    own Session): the caller made them, and closes them after the call's unit ends."""
    found = set()
    for value in values:
        # By type(), never isinstance(): that reads ``__class__``, which a proxy resolves
        # by running its code.
        session = value if issubclass(type(value), Session) else sync_session(value)
        if session is not None:
            found.add(id(session))
    return frozenset(found)


# Enough to find a returned list's objects; a longer result is looked at this far.
_MAX_RETURNED = 1000


def _mapped_objects_in(result: Any) -> frozenset[int]:
    """The ids of the mapped objects a decorated function returned, itself or in a list,
    tuple, set or dict's values (an endpoint's rows, which a response model reads after
    the call): looked up by type in SQLAlchemy's inspection registry, no code of theirs
    runs."""
    if isinstance(result, dict):
        values: Iterable[Any] = result.values()
    elif isinstance(result, (list, tuple, set, frozenset)):
        values = result
    else:
        values = (result,)
    found = set()
    for value in itertools.islice(values, _MAX_RETURNED):
        if isinstance(inspect_object(value, raiseerr=False), InstanceState):
            found.add(id(value))
    return frozenset(found)


def _release(uow: UnitOfWork, error: BaseException | None) -> None:
    """Emit a finished unit's findings; never hide an exception already on its way."""
    if error is None:
        uow.release(final=True)
        return
    if uow.settings.mode == "raise":
        pending = uow.take_unemitted()
        if pending:
            _note(error, describe(pending))
        return
    try:
        uow.release(final=True, can_raise=False)
    except SqlaDoctorWarning as warning:
        _note(error, str(warning))


def _note(error: BaseException, text: str) -> None:
    if sys.version_info >= (3, 11):
        error.add_note(f"sqla-doctor: {text}")


@overload
def track(name: F, /) -> F: ...


@overload
def track(
    name: str | None = None,
    /,
    *,
    mode: str | None = None,
    config: Config | RuntimeConfig | None = None,
) -> Tracker: ...


def track(
    name: Any = None,
    /,
    *,
    mode: str | None = None,
    config: Config | RuntimeConfig | None = None,
) -> Any:
    """A unit of work: ``with track() as uow:``, ``async with track():`` or ``@track()``.

    ``uow.findings`` and ``uow.query_count`` hold the result once the block ends. ``mode``
    and ``config`` override the installed (or configured) settings for this unit.
    """
    if callable(name):
        return Tracker(getattr(name, "__qualname__", None))(name)
    return Tracker(name, mode=mode, config=config)


# Under `sqla-doctor run`, the bootstrap starts the doctor once SQLAlchemy is imported;
# when this package is what imported it, that has to wait until now.
_ready = True
if os.environ.get("SQLA_DOCTOR_RUN_DIR"):
    from sqla_doctor.runtime.runner import child_start

    child_start()
