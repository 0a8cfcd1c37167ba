"""Where in the user's code a statement, a lazy load or an attribute read came from.

The call site is the first frame outside SQLAlchemy, sqla-doctor, the standard library and
installed packages. It is found by walking ``f_back`` from the event handler, which costs
well under a microsecond for the dozen SQLAlchemy frames in between; formatting a
traceback costs a hundred times more (django-debug-toolbar's lesson). Each file name is
classified once.

``AsyncSession`` runs the synchronous ORM inside a greenlet spawned by SQLAlchemy's
``greenlet_spawn``; that greenlet's bottom frame has no ``f_back``, so the walk continues
in the parent greenlet's suspended frame (``gr_frame``), which is ``greenlet_spawn``
itself, awaited by the user's coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import dis
import functools
import importlib
import inspect
import os
import re
import site
import sys
import sysconfig
import threading
from collections.abc import Callable, Hashable, Iterable, Sequence
from inspect import CO_VARARGS
from pathlib import Path
from types import CodeType, FrameType
from typing import Any, Final, NamedTuple

import sqlalchemy
from sqlalchemy.orm import Session

from sqla_doctor.runtime.async_sessions import sync_session
from sqla_doctor.static.files import display_path as _display_path

_get_current_greenlet: Callable[[], Any] | None
try:
    # Imported by name: greenlet ships no type information.
    _get_current_greenlet = importlib.import_module("greenlet").getcurrent
except ImportError:  # pragma: no cover - greenlet is optional since SQLAlchemy 2.1
    _get_current_greenlet = None

USER: Final = 0
THIRD_PARTY: Final = 1
INTERNAL: Final = 2
# The event loop running a task, or a middleware running a request. Above it is whatever
# started the loop (the ``asyncio.run()`` line) or sent the request, not the code the
# task or request belongs to: a statement issued from a task with no user frame of its
# own (``AsyncSession.__aexit__`` closes the session in a shielded task) has no call
# site, rather than a wrong one.
BOUNDARY: Final = 3

# Pseudo-files the user typed code into; other "<...>" names are generated code
# (dataclass methods, ``exec`` in libraries) with no line a user could edit.
_USER_PSEUDO_FILES = ("<stdin>", "<console>", "<ipython-input-")
_CACHE_LIMIT = 20_000
# Deep framework stacks are walked this far for a resource's opening stack, no further.
_MAX_FRAMES = 96


class CallSite:
    """One frame of user code: where a finding points and what its key is made of.

    ``caller`` is the file and line of the frame that called this one. Statements are
    keyed on both, so that one helper called once from several places is not mistaken for
    one helper called many times from a loop.
    """

    __slots__ = ("caller", "filename", "function", "lineno", "module")

    def __init__(
        self,
        filename: str,
        lineno: int,
        function: str,
        module: str | None = None,
        caller: tuple[str, int] | None = None,
    ) -> None:
        self.filename = filename
        self.lineno = lineno
        self.function = function
        self.module = module
        self.caller = caller

    @property
    def key(self) -> tuple[str, int]:
        return (self.filename, self.lineno)

    def __repr__(self) -> str:
        return f"CallSite({self.filename}:{self.lineno} in {self.function})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CallSite):
            return NotImplemented
        return (self.filename, self.lineno, self.function) == (
            other.filename,
            other.lineno,
            other.function,
        )

    def __hash__(self) -> int:
        return hash((self.filename, self.lineno, self.function))


def _norm(path: str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _dirs(paths: Iterable[str | None]) -> tuple[str, ...]:
    seen: list[str] = []
    for path in paths:
        if path:
            normalised = _norm(path).rstrip(os.sep) + os.sep
            if normalised not in seen:
                seen.append(normalised)
    return tuple(seen)


def _package_dir(module_file: str | None) -> str:
    return os.path.dirname(module_file or "")


_SQLA_DOCTOR_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The demo app ships inside the package but is user code: its lines are what findings
# should point at.
_USER_INSIDE_US = _dirs([os.path.join(_SQLA_DOCTOR_DIR, "demo")])
_INTERNAL_DIRS = _dirs([_package_dir(sqlalchemy.__file__), _SQLA_DOCTOR_DIR])
_SQLALCHEMY_DIR = _dirs([_package_dir(sqlalchemy.__file__)])[0]


def _site_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    # Console scripts (bin/pytest, bin/uvicorn) are installed code, not the user's.
    candidates: list[str | None] = [
        paths.get("purelib"),
        paths.get("platlib"),
        paths.get("scripts"),
    ]
    # Some virtualenv builds lack these functions.
    with contextlib.suppress(AttributeError):
        candidates += site.getsitepackages()
    with contextlib.suppress(AttributeError):
        candidates.append(site.getusersitepackages())
    return _dirs(candidates)


def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return _dirs([paths.get("stdlib"), paths.get("platstdlib"), os.path.dirname(os.__file__)])


_THIRD_PARTY_DIRS = _site_dirs()
_ASYNCIO_LOOP_FILES = tuple(
    _norm(os.path.join(os.path.dirname(asyncio.__file__), name))
    for name in ("events.py", "base_events.py", "tasks.py", "runners.py")
) + tuple(
    # The middlewares: above them is the server, or a test's in-process client call
    # (httpx's ASGITransport, Flask's test client), not the request's code.
    _norm(os.path.join(_SQLA_DOCTOR_DIR, "integrations", name))
    for name in ("asgi.py", "wsgi.py")
)
# Test clients that run an app in-process: the frame above one is the test driving the
# app, never the request's code (an endpoint's response serialized by the framework
# after the endpoint returned has no line of the app on the stack). Matched by path, so
# that nothing is imported to find them.
_IN_PROCESS_CLIENT_FILES = tuple(
    os.path.join(*parts)
    for parts in (
        ("httpx", "_transports", "asgi.py"),
        ("httpx", "_transports", "wsgi.py"),
        ("starlette", "testclient.py"),
        ("werkzeug", "test.py"),
        ("django", "test", "client.py"),
        # click's CliRunner.invoke (Flask's test_cli_runner(), typer's CliRunner).
        ("click", "testing.py"),
    )
)
_STDLIB_DIRS = _stdlib_dirs()
_kinds: dict[str, int] = {}


def classify(filename: str) -> int:
    """USER, THIRD_PARTY or INTERNAL for a code object's file name (cached)."""
    kind = _kinds.get(filename)
    if kind is None:
        kind = _classify(filename)
        if len(_kinds) >= _CACHE_LIMIT:
            _kinds.clear()
        _kinds[filename] = kind
    return kind


def task_label(task: Any) -> str:
    """``task <name> (<coroutine>)`` for an asyncio task: its coroutine is named when it
    is the program's own, not a library's wrapper (anyio runs each task in its
    ``TaskHandle._run_coro`` and names the task after the function it runs)."""
    name = task.get_name()
    coroutine = task.get_coro()
    code = getattr(coroutine, "cr_code", None)
    if code is not None and classify(code.co_filename) != USER:
        return f"task {name}"
    qualname = getattr(coroutine, "__qualname__", None)
    return f"task {name} ({qualname})" if qualname else f"task {name}"


def _classify(filename: str) -> int:
    if filename.startswith("<"):
        return USER if filename.startswith(_USER_PSEUDO_FILES) else INTERNAL
    path = _norm(filename)
    if path.startswith(_ASYNCIO_LOOP_FILES) or path.endswith(_IN_PROCESS_CLIENT_FILES):
        return BOUNDARY
    if path.startswith(_USER_INSIDE_US):
        return USER
    if path.startswith(_INTERNAL_DIRS):
        return INTERNAL
    # site-packages often lives below the standard library's directory: test it first.
    parts = path.split(os.sep)
    if path.startswith(_THIRD_PARTY_DIRS) or "site-packages" in parts or "dist-packages" in parts:
        return THIRD_PARTY
    if path.startswith(_STDLIB_DIRS):
        return INTERNAL
    return USER


def module_file(module: Any) -> str | None:
    """The source file of an imported module, read from its dictionary (a module's
    ``__getattr__`` is the program's code). The script ``python app.py`` ran is
    ``__main__``, whose ``__file__`` CPython deletes when the script returns (before
    ``atexit`` handlers run): its loader still knows the path."""
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict):
        return None
    source = namespace.get("__file__")
    if not isinstance(source, str):
        source = getattr(namespace.get("__loader__"), "path", None)
    return source if isinstance(source, str) else None


def line_of(frame: FrameType, lineno: int) -> int:
    """The line the user wrote: a Jinja template's own line, not its compiled module's.

    Jinja compiles a template into Python whose code objects carry the template's file
    name and their own line numbers; the template maps them back (as Jinja's tracebacks
    do).
    """
    template = frame.f_globals.get("__jinja_template__")
    if template is None:
        return lineno
    try:
        return int(template.get_corresponding_lineno(lineno))
    except Exception:
        return lineno


def _site_of(frame: FrameType) -> CallSite:
    code = frame.f_code
    back = frame.f_back
    caller = (back.f_code.co_filename, back.f_lineno) if back is not None else None
    return CallSite(
        code.co_filename,
        line_of(frame, frame.f_lineno),
        code.co_name,
        frame.f_globals.get("__name__"),
        caller,
    )


def next_frame(frame: FrameType, greenlet: Any) -> tuple[FrameType | None, Any]:
    """The caller of ``frame``, across greenlet switches; and the greenlet it runs in."""
    back = frame.f_back
    if back is None and _get_current_greenlet is not None:
        if greenlet is None:
            greenlet = _get_current_greenlet()
        # The parent greenlet is suspended where it switched into this one: in
        # SQLAlchemy's greenlet_spawn, awaited by the user's coroutine.
        greenlet = greenlet.parent
        back = greenlet.gr_frame if greenlet is not None else None
    return back, greenlet


# How many frames above the caller of find() the user's frame was, the last time, for
# each kind of execution: the next one of that kind usually comes the same way.
_learned: dict[Hashable, int] = {}


def find(
    depth: int = 1,
    skip: int = 0,
    *,
    learn: Hashable = None,
    caller: bool = True,
) -> CallSite | None:
    """The user's frame that led to the caller of this function, ``depth`` frames up.

    Since Python 3.11, reading ``f_back`` makes the interpreter build a frame object for
    a frame that must then be copied when it returns; that, not the walk, is what a call
    site costs. ``sys._getframe(n)`` builds only the frame it returns, so:

    - ``skip`` frames known to be SQLAlchemy's (``_execute_internal`` and the Session
      method that called it, for an ORM execution) are jumped over;
    - with ``learn``, the depth where the user's frame was last time for that key is
      tried first, and taken when it holds a user frame called by SQLAlchemy;
    - ``caller`` (the frame calling the user's one, part of statement keys) is read only
      when asked for.

    Falls back to the first installed-package frame (an app installed into
    site-packages, a framework) when no frame is the user's own.
    """
    kinds = _kinds
    base = depth + 1
    if learn is not None:
        level = _learned.get(learn)
        if level is not None:
            try:
                frame: FrameType | None = sys._getframe(base + level)
            except ValueError:
                frame = None
            if frame is not None and kinds.get(frame.f_code.co_filename) == USER:
                # Even a lazy load's route is not always the same length (a comprehension,
                # a property, a different caller of the loader): the frame below must be
                # SQLAlchemy's, or a user frame one level further up would be taken.
                callee = sys._getframe(base + level - 1)
                if kinds.get(callee.f_code.co_filename) == INTERNAL:
                    return _user_site(frame, caller)
    try:
        frame = sys._getframe(base + skip)
        level = skip
    except ValueError:  # a shallower stack than SQLAlchemy's usual one
        frame = sys._getframe(base)
        level = 0
    fallback: FrameType | None = None
    greenlet: Any = None
    while frame is not None:
        filename = frame.f_code.co_filename
        kind = kinds.get(filename)
        if kind is None:
            kind = classify(filename)
        if kind == USER:
            # Only depths within one greenlet can be jumped to with sys._getframe.
            if learn is not None and greenlet is None and level > 0:
                _learned[learn] = level
            return _user_site(frame, caller)
        if kind == BOUNDARY:
            break
        if kind == THIRD_PARTY and fallback is None:
            fallback = frame
        back = frame.f_back
        if back is None:
            back, greenlet = next_frame(frame, greenlet)
        frame = back
        level += 1
    return _site_of(fallback) if fallback is not None else None


_EXITS = frozenset({"__exit__", "__aexit__"})
_NO_EXIT_ARGUMENT = object()


def unit_of_work_exit(depth: int = 1, limit: int = 3) -> tuple[CallSite, CallSite] | None:
    """The ``__exit__`` (or ``__aexit__``) of a user's unit-of-work class — one with a
    ``commit()`` method — among the nearest ``limit`` user frames of the caller, when its
    ``with`` block ended without an exception; and the frame of that ``with`` block.
    Such an ``__exit__`` rolls back what the block did not commit. None otherwise, or
    when other code stands between those frames."""
    frame: FrameType | None = sys._getframe(depth + 1)
    greenlet: Any = None
    exit_frame: FrameType | None = None
    seen = 0
    while frame is not None and seen < limit + 1:
        code = frame.f_code
        kind = classify(code.co_filename)
        if kind == USER:
            seen += 1
            if code.co_name in _EXITS:
                if _exit_argument(frame) is not None or not _commits(frame):
                    return None
                exit_frame = exit_frame or frame
            elif exit_frame is not None:
                exit_site = _user_site(exit_frame, caller=False)
                # "UnitOfWork.__exit__", also for a class defined in a function.
                qualname = getattr(exit_frame.f_code, "co_qualname", exit_site.function)
                exit_site.function = ".".join(qualname.split(".")[-2:])
                return exit_site, _user_site(frame, caller=False)
        elif seen:
            return None
        back = frame.f_back
        if back is None:
            back, greenlet = next_frame(frame, greenlet)
        frame = back
    return None


def _commits(frame: FrameType) -> bool:
    """Whether the object an ``__exit__`` frame runs for has a ``commit()`` method: a
    helper that only ever rolls back (a test's "undo it all") means to."""
    code = frame.f_code
    if not code.co_argcount:
        return False
    try:
        owner = frame.f_locals.get(code.co_varnames[0])
        return callable(getattr(type(owner), "commit", None))
    except Exception:
        return False


def _exit_argument(frame: FrameType) -> Any:
    """The exception type an ``__exit__`` frame was called with (None: no exception)."""
    code = frame.f_code
    try:
        if code.co_argcount >= 2:
            return frame.f_locals.get(code.co_varnames[1], _NO_EXIT_ARGUMENT)
        if code.co_flags & CO_VARARGS:  # __exit__(self, *args)
            args = frame.f_locals.get(code.co_varnames[code.co_argcount])
            return args[0] if args else _NO_EXIT_ARGUMENT
    except Exception:
        pass
    return _NO_EXIT_ARGUMENT


def awaiting_frames(task: Any, limit: int = 12) -> list[FrameType]:
    """A suspended task's coroutine frames, outermost first, through ``cr_await``
    (``Task.get_stack()`` gives only the outermost coroutine's), and into an async
    generator that a frame drives with ``await gen.__anext__()`` (pytest-asyncio tearing
    down a ``yield`` fixture, an ``async for``)."""
    frames: list[FrameType] = []
    awaited = task.get_coro()
    while awaited is not None and len(frames) < limit:
        frame = (
            getattr(awaited, "cr_frame", None)
            or getattr(awaited, "gi_frame", None)
            or getattr(awaited, "ag_frame", None)
        )
        if frame is None:
            break
        frames.append(frame)
        awaited = (
            getattr(awaited, "cr_await", None)
            or getattr(awaited, "gi_yieldfrom", None)
            or getattr(awaited, "ag_await", None)
        )
        if type(awaited).__name__ == "async_generator_asend":
            awaited = _driven_generator(frame)
    return frames


def _driven_generator(frame: FrameType) -> Any:
    """The async generator that ``frame`` awaits the ``__anext__()`` of: the awaitable
    (``async_generator_asend``) has no link to its generator, but the frame holds it, and
    of its async generators the one suspended in an ``await`` is the one it is driving."""
    try:
        for value in frame.f_locals.values():
            if inspect.isasyncgen(value) and value.ag_await is not None:
                return value
    except Exception:  # f_locals of a frame that is running elsewhere
        pass
    return None


# Tasks climbed from a task to the one awaiting it, at most: SQLAlchemy's begin() context
# awaits a task that awaits the close task.
_MAX_AWAITERS = 4


def async_with_exit_site() -> CallSite | None:
    """The program's ``async with`` line whose ``__aexit__`` awaits the task running now:
    ``AsyncSession.__aexit__`` closes the session in a task of its own (``await
    asyncio.shield(create_task(self.close()))``), so its stack ends in the event loop,
    while the task that left the ``async with`` block waits for it.

    asyncio keeps no public link from a task to its awaiter: the awaiter's wakeup is one
    of the task's done callbacks (bound to that task), or one of the callbacks of the
    future ``shield()`` made, which the shield's callback holds in its closure. The line
    is the program's frame awaiting SQLAlchemy's ``__aexit__`` in that task (or in the
    task awaiting that one: ``sessionmaker.begin()``'s context closes one task deeper);
    None when the shape differs or another library's frame awaits it (a framework's
    exit stack closing a dependency's session). Asked once per close that detached
    objects and had no call site."""
    try:
        task: Any = asyncio.current_task()
    except RuntimeError:
        return None
    for _ in range(_MAX_AWAITERS):
        task = _awaiter(task)
        if task is None:
            return None
        frames = awaiting_frames(task)
        for index in range(len(frames) - 1, 0, -1):
            code = frames[index].f_code
            if code.co_name == "__aexit__" and classify(code.co_filename) == INTERNAL:
                before = frames[index - 1]
                if classify(before.f_code.co_filename) == USER:
                    return _user_site(before, caller=False)
                break
    return None


def _awaiter(task: Any) -> Any:
    """The task waiting for ``task`` (directly, or through one ``shield()``), else None."""
    found = _waiting_task(getattr(task, "_callbacks", None))
    if found is not None:
        return found
    for callback, _ in getattr(task, "_callbacks", None) or ():
        for cell in getattr(callback, "__closure__", None) or ():
            try:
                held = cell.cell_contents
            except ValueError:
                continue
            if isinstance(held, asyncio.Future):
                found = _waiting_task(getattr(held, "_callbacks", None))
                if found is not None:
                    return found
    return None


def _waiting_task(callbacks: Any) -> Any:
    for callback, _ in callbacks or ():
        owner = getattr(callback, "__self__", None)
        if isinstance(owner, asyncio.Task):
            return owner
    return None


def thread_site(ident: int, limit: int = 64) -> CallSite | None:
    """The program's line another thread (``threading.get_ident()``) is running now: its
    outermost frame that called into SQLAlchemy (the ``session.commit()`` line, not an
    event listener that commit runs), else its innermost user frame. Walks that thread's
    stack once; asked only when reporting."""
    frame: FrameType | None = sys._current_frames().get(ident)
    innermost: FrameType | None = None
    calling: FrameType | None = None
    inner_is_sqlalchemy = False
    for _ in range(limit):
        if frame is None:
            break
        filename = frame.f_code.co_filename
        if classify(filename) == USER:
            innermost = innermost or frame
            if inner_is_sqlalchemy:
                calling = frame
        # SQLAlchemy's generated wrappers too ("<sqlalchemy generated _go() wrapper ...>").
        inner_is_sqlalchemy = filename.startswith("<sqlalchemy") or _norm(filename).startswith(
            _SQLALCHEMY_DIR
        )
        frame = frame.f_back
    found = calling or innermost
    return _user_site(found, caller=False) if found is not None else None


# Where a thread that handed its work over waits for it: Thread.join(), Event.wait(),
# Future.result(), a queue, an event loop's select.
_WAITING_FILES = (
    os.sep + "threading.py",
    os.sep + "queue.py",
    os.path.join("concurrent", "futures", "_base.py"),
    os.sep + "selectors.py",
)


def _working_frame(ident: int) -> FrameType | None:
    """Another thread's innermost frame; None when it is gone or waits in ``join()``,
    ``wait()``, ``result()`` or a queue for work it handed over."""
    frame = sys._current_frames().get(ident)
    if frame is None or frame.f_code.co_filename.endswith(_WAITING_FILES):
        return None
    return frame


def thread_inside(ident: int, site: CallSite, session: object = None, limit: int = 64) -> bool:
    """Whether another thread is still running the program's function that ``site`` is
    in (not waiting in ``join()``, ``wait()``, ``result()`` or a queue for the work it
    handed over), with ``session``: a run of that function whose locals hold another
    session and not this one is another request's (a streaming response's generator,
    resumed in whichever worker thread is free). Walks that thread's stack once; asked
    only when a session changes threads inside a transaction."""
    frame = _working_frame(ident)
    for _ in range(limit):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name == site.function and code.co_filename == site.filename:
            return session is None or not _holds_other_session(frame, session)
        frame = frame.f_back
    return False


# concurrent.futures' _WorkItem.run: the frame of a pool worker running a submitted task.
_WORK_ITEM_FILE = os.sep + os.path.join("concurrent", "futures", "thread.py")


def thread_task_holds(ident: int, session: object) -> bool:
    """Whether another thread is running a task a ``ThreadPoolExecutor`` (or an event
    loop's ``run_in_executor()``) was handed with ``session``: as an argument, in the
    function's closure (``pool.map(lambda pid: work(session, pid), ids)``), bound in a
    ``functools.partial`` or as the method's owner (``pool.submit(session.execute, q)``).
    Such tasks run in parallel whenever the pool can; a worker between two statements
    of its task is still using the session. Asked only when a session changes threads
    inside a transaction."""
    found = _work_item(_working_frame(ident))
    return found is not None and _handed(found[0], session)


def _work_item(frame: FrameType | None) -> tuple[Any, FrameType] | None:
    """The concurrent.futures work item a stack, from ``frame`` outwards, is running,
    with the frame of its ``_WorkItem.run``."""
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return None
        code = frame.f_code
        if code.co_name == "run" and code.co_filename.endswith(_WORK_ITEM_FILE):
            return frame.f_locals.get("self"), frame
        frame = frame.f_back
    return None


def _handed(item: Any, session: object) -> bool:
    fn, args, kwargs = (getattr(item, name, None) for name in ("fn", "args", "kwargs"))
    return _hands(fn, args or (), kwargs or {}, session)


# concurrent.futures' functions that wait for several futures at once, each with its
# futures in the local ``fs``: Executor.map()'s result iterator, as_completed(), wait().
_FUTURES_BASE_FILE = os.sep + os.path.join("concurrent", "futures", "_base.py")
_AWAITING_TOGETHER = frozenset({"result_iterator", "as_completed", "wait"})


class PoolTask(NamedTuple):
    """A thread-pool task this thread runs: its work item (``fn``, ``future``) and how
    many threads its pool may run at once (0 when unknown)."""

    item: Any
    workers: int


def pool_task(session: object) -> PoolTask | None:
    """The thread-pool task this thread is running, when it was handed ``session`` (see
    :func:`thread_task_holds`); else None."""
    found = _work_item(sys._getframe(1))
    if found is None or not _handed(found[0], session):
        return None
    return PoolTask(found[0], _pool_workers(found[1].f_back))


def _pool_workers(frame: FrameType | None) -> int:
    """How many threads the pool whose ``_worker`` runs in ``frame`` may start. No
    public attribute says: ThreadPoolExecutor keeps it in ``_max_workers``."""
    if frame is None or frame.f_code.co_name != "_worker":
        return 0
    reference = frame.f_locals.get("executor_reference")
    executor = reference() if callable(reference) else None
    workers = getattr(executor, "_max_workers", 0)
    return workers if isinstance(workers, int) else 0


def awaited_together(item: Any, session: object, limit: int = 32) -> bool:
    """Whether another thread submits or waits for the task of work item ``item``
    together with others: in ``Executor.map()`` (still submitting its calls of the same
    function, or in its results), in ``submit()`` of another task handed ``session``,
    in ``as_completed()`` or ``wait()``. Tasks submitted that way are meant to run in
    parallel. Walks every thread's stack; asked only when a session moves from one pool
    task to another inside a transaction."""
    me = threading.get_ident()
    future, fn = getattr(item, "future", None), getattr(item, "fn", None)
    for ident, frame in list(sys._current_frames().items()):
        if ident == me:
            continue
        walked: FrameType | None = frame
        # Waiting for this very future now (Future.result(), map()'s _result_or_cancel()),
        # which map()'s result iterator took off its list.
        waiting = False
        for _ in range(limit):
            if walked is None:
                break
            code = walked.f_code
            if code.co_name == "submit" and code.co_filename.endswith(_WORK_ITEM_FILE):
                scope = walked.f_locals
                # Another task handed the session; not this very one, whose submit() may
                # still be starting its thread (map() above it is asked next).
                if scope.get("f") is not future and _hands(
                    scope.get("fn"), scope.get("args", ()), scope.get("kwargs", {}), session
                ):
                    return True
            if code.co_filename.endswith(_FUTURES_BASE_FILE):
                scope = walked.f_locals
                if code.co_name == "map" and fn is not None and scope.get("fn") is fn:
                    return True
                waiting = waiting or scope.get("self") is future or scope.get("fut") is future
                futures = scope.get("fs")
                if code.co_name in _AWAITING_TOGETHER and isinstance(
                    futures, (list, set, frozenset, tuple)
                ):
                    if any(other is future for other in futures):
                        return len(futures) >= 2
                    # Taken off the list and awaited now: together with those left.
                    return waiting and len(futures) >= 1
            walked = walked.f_back
    return False


def _hands(fn: Any, args: Any, kwargs: Any, session: object) -> bool:
    """Whether a call of ``fn(*args, **kwargs)`` is handed ``session``: as an argument,
    bound, in its closure or a module global it names. Identities only."""
    values = [*args, *kwargs.values()] if isinstance(kwargs, dict) else list(args)
    for _ in range(4):  # partial(partial(f, ...), ...)
        if issubclass(type(fn), functools.partial):
            values += [*fn.args, *fn.keywords.values()]
            fn = fn.func
            continue
        break
    values.append(getattr(fn, "__self__", None))
    for cell in getattr(fn, "__closure__", None) or ():
        with contextlib.suppress(ValueError):  # a cell not filled yet
            values.append(cell.cell_contents)
    code = getattr(fn, "__code__", None)
    scope = getattr(fn, "__globals__", None)
    if code is not None and isinstance(scope, dict):
        # A module-level session a function names (a lambda in a script's `with` block).
        values += [scope.get(name) for name in code.co_names]
    return any(_session_in(value) is session for value in values)


def task_frames(depth: int = 1, limit: int = 16) -> tuple[tuple[int, CodeType], ...]:
    """The frames of the program's code this thread is running, innermost first: the
    innermost run of user frames (a helper, the pool worker's task function that called
    it, up to the thread's or the framework's code), each as (id, code), holding neither
    the frames nor their locals. Read only when a session changes threads."""
    frame: FrameType | None = sys._getframe(depth + 1)
    found: list[tuple[int, CodeType]] = []
    for _ in range(_MAX_FRAMES):
        if frame is None or len(found) >= limit:
            break
        if classify(frame.f_code.co_filename) == USER:
            found.append((id(frame), frame.f_code))
        elif found:
            break
        frame = frame.f_back
    return tuple(found)


def thread_in_frames(ident: int, frames: tuple[tuple[int, CodeType], ...], session: object) -> bool:
    """Whether another thread is still in one of ``frames`` (see :func:`task_frames`)
    whose locals hold ``session``, and not waiting in ``join()``, ``wait()``, ``result()``
    or a queue: still in the work it used the session for. A frame of the same code at
    the same address is that run, or the next run of the same task."""
    frame = _working_frame(ident)
    for _ in range(_MAX_FRAMES):
        if frame is None:
            return False
        if (id(frame), frame.f_code) in frames and _holds_session(frame, session):
            return True
        frame = frame.f_back
    return False


def names_holding(site: CallSite, session: object, names: set[str]) -> set[str]:
    """Which of ``names`` hold ``session`` (or the AsyncSession around it) in the frame
    running the line at ``site``, if that frame is on this thread's stack."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_MAX_FRAMES):
        if frame is None:
            break
        if frame.f_code.co_filename == site.filename and frame.f_lineno == site.lineno:
            scope = frame.f_locals
            return {name for name in names if _session_in(scope.get(name)) is session}
        frame = frame.f_back
    return set()


def _holds_session(frame: FrameType, session: object) -> bool:
    """Whether ``frame``'s locals hold ``session`` (or the AsyncSession around it)."""
    return any(_session_in(value) is session for value in list(frame.f_locals.values()))


def _holds_other_session(frame: FrameType, session: object) -> bool:
    """Whether ``frame``'s locals hold a session, none of them ``session`` (or the
    AsyncSession around it)."""
    others = False
    for value in list(frame.f_locals.values()):
        held = _session_in(value)
        if held is not None:
            if held is session:
                return False
            others = True
    return others


def _session_in(value: object) -> Any:
    """The Session ``value`` is, or the one behind an AsyncSession; else None. By type(),
    never isinstance(): that reads ``__class__``, which a proxy among a frame's locals
    (Flask's ``current_app``) resolves by running its code, and may raise."""
    return value if issubclass(type(value), Session) else sync_session(value)


def _user_site(frame: FrameType, caller: bool) -> CallSite:
    code = frame.f_code
    back = frame.f_back if caller else None
    return CallSite(
        code.co_filename,
        line_of(frame, frame.f_lineno),
        code.co_name,
        frame.f_globals.get("__name__"),
        (back.f_code.co_filename, back.f_lineno) if back is not None else None,
    )


def stack(depth: int = 1, limit: int = 12) -> tuple[CallSite, ...]:
    """Up to ``limit`` user frames, innermost first (the stack that opened a resource).

    Installed-package frames are kept only when no user frame exists at all.
    """
    frame: FrameType | None = sys._getframe(depth + 1)
    user: list[CallSite] = []
    third_party: list[CallSite] = []
    greenlet: Any = None
    kinds = _kinds
    walked = 0
    while frame is not None and len(user) < limit and walked < _MAX_FRAMES:
        walked += 1
        code = frame.f_code
        kind = kinds.get(code.co_filename)
        if kind is None:
            kind = classify(code.co_filename)
        if kind == BOUNDARY:
            break
        if kind == USER:
            user.append(CallSite(code.co_filename, line_of(frame, frame.f_lineno), code.co_name))
        elif kind == THIRD_PARTY and len(third_party) < limit:
            third_party.append(CallSite(code.co_filename, frame.f_lineno, code.co_name))
        back = frame.f_back
        if back is None:
            back, greenlet = next_frame(frame, greenlet)
        frame = back
    return tuple(user or third_party)


_display: dict[tuple[str, str], str] = {}


def display_path(filename: str, root: str) -> str:
    """``filename`` as static findings show paths: relative to ``root`` when below it."""
    key = (filename, root)
    shown = _display.get(key)
    if shown is None:
        if filename.startswith("<"):
            shown = filename
        else:
            try:
                shown = _display_path(Path(filename), Path(root))
            except OSError:
                shown = Path(filename).as_posix()
            if shown.startswith("/") or shown[1:3] == ":/":
                shown = _installed_path(shown)
            elif _INSTALLED[0].match(shown):
                # A virtualenv inside the project (`.venv/lib/python3.12/site-packages/`).
                shown = _INSTALLED[0].sub("", shown, count=1)
        if len(_display) >= _CACHE_LIMIT:
            _display.clear()
        _display[key] = shown
    return shown


_INSTALLED = (
    re.compile(r"^.*/(?:site-packages|dist-packages)/"),
    re.compile(r"^.*?/lib/python\d+\.\d+/"),
)


def _installed_path(shown: str) -> str:
    """An installed package's or the standard library's file outside the project, as its
    import path shows it (``pydantic/type_adapter.py``): the same on every machine, for
    messages, fingerprints and baselines."""
    for prefix in _INSTALLED:
        stripped = prefix.sub("", shown, count=1)
        if stripped != shown:
            return stripped
    return shown


def format_stack(frames: Iterable[CallSite], root: str) -> list[str]:
    """``path:line in function`` lines, for a finding's details."""
    return [f"{display_path(f.filename, root)}:{f.lineno} in {f.function}" for f in frames]


# Code object -> the (start, end) offsets of its loops: a backward jump and its target.
_loops: dict[CodeType, tuple[tuple[int, int], ...]] = {}


def _loop_ranges(code: CodeType) -> tuple[tuple[int, int], ...]:
    ranges = _loops.get(code)
    if ranges is None:
        ranges = tuple(
            (instruction.argval, instruction.offset)
            for instruction in dis.get_instructions(code)
            if instruction.opcode in _JUMPS
            and isinstance(instruction.argval, int)
            and instruction.argval < instruction.offset
        )
        if len(_loops) >= _CACHE_LIMIT:
            _loops.clear()
        _loops[code] = ranges
    return ranges


# Jumps, but not the one an `await` or `yield from` loops with while it waits (3.11+).
_JUMPS = (frozenset(dis.hasjrel) | frozenset(dis.hasjabs)) - {
    dis.opmap.get("JUMP_BACKWARD_NO_INTERRUPT", -1)
}


def _in_loop(frame: FrameType) -> bool:
    """Whether the frame is running an instruction inside one of its loops."""
    at = frame.f_lasti
    return any(start <= at <= end for start, end in _loop_ranges(frame.f_code))


def not_from_the_program(site: CallSite) -> bool:
    """Whether installed code called the function holding ``site`` (a framework, a
    worker pool), the cheap test before :func:`called_again_by_library`'s walk."""
    return site.caller is not None and classify(site.caller[0]) != USER


def called_again_by_library(site: CallSite, held_by: Sequence[CallSite] = ()) -> bool:
    """Whether the statement at ``site``, running now, is in no loop of the program: no
    frame of the program on the stack is inside a loop, and the outermost of them is a
    function that installed code called (a thread pool's worker, a web framework, a job
    runner), not the program's module. Its runs then come from that code calling the
    program again, each call a job or a request of its own, not from the program
    iterating. A loop that reaches the program through an in-process client (Flask's
    or Starlette's test client, one request per item) is the caller's, not the
    program's. ``held_by``: where this run's session began its transaction, innermost
    first (``SessionRecord.opened``); a loop in a function that the innermost of those
    still on the stack called runs inside that one session, so it is not what ran the
    statement again in another (sqladmin's loop over a form's fields, one object per
    request). Walks the stack: ask once per repeated statement."""
    frames: list[FrameType] = []
    frame: FrameType | None = sys._getframe(1)
    greenlet: Any = None
    for _ in range(_MAX_FRAMES * 2):
        if frame is None:
            break
        frames.append(frame)
        frame, greenlet = next_frame(frame, greenlet)
    else:
        return False  # deeper than that: nothing to say
    holders = {(held.filename, held.function) for held in held_by}
    inside = next(
        (
            index
            for index, frame in enumerate(frames)
            if (frame.f_code.co_filename, frame.f_code.co_name) in holders
        ),
        0,
    )
    outermost: FrameType | None = None
    found = False
    through_client = False
    for index, frame in enumerate(frames):
        code = frame.f_code
        if not found:
            found = code.co_filename == site.filename and frame.f_lineno == site.lineno
        if found:
            kind = classify(code.co_filename)
            if kind == BOUNDARY:
                # An in-process client, not the event loop: a loop around asyncio.run()
                # is still the program's.
                through_client = through_client or (
                    outermost is not None
                    and _norm(code.co_filename).endswith(_IN_PROCESS_CLIENT_FILES)
                )
            elif kind == USER:
                if index >= inside and _in_loop(frame):
                    return through_client
                outermost = frame
    return outermost is not None and outermost.f_code.co_name != "<module>"
