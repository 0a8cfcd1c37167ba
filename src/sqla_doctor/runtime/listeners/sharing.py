"""One session, several users: who runs each operation and statement of a Session.

Listens to the Session's ``before_commit``, and gives the statement, flush and
transaction handlers ``_note_use`` (an operation begins) and ``_enter_statement`` /
``_leave_statement`` (the DBAPI call runs), which tell a session used by two threads or
two asyncio tasks at once (SQD158, SQD159); ``starting_site()`` finds where the other
task started.
"""

from __future__ import annotations

import asyncio
import importlib
import threading
import weakref
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from sqlalchemy.orm import Session

from sqla_doctor.runtime import callsite
from sqla_doctor.runtime.async_sessions import async_owner
from sqla_doctor.runtime.detector import OrmExecution, SharedUse
from sqla_doctor.runtime.listeners.endings import drain
from sqla_doctor.runtime.listeners.units import (
    _STACK_LIMIT,
    _dispatch,
    _guarded,
    _record,
    _session_unit,
)
from sqla_doctor.runtime.unit_of_work import (
    MAX_THREADS_PER_TRANSACTION,
    SessionRecord,
    UnitOfWork,
    current,
    process,
)

# A Session is not safe to use from two asyncio tasks or two threads at once (SQD158,
# SQD159). Each operation that begins (do_orm_execute, a flush, a commit, a begin) notes
# who runs it in the session's ``Sharing``; each statement marks the session busy while
# the DBAPI call runs. Who is a greenlet: an AsyncSession call runs in a greenlet of its
# own (greenlet_spawn), alive exactly while that call is suspended on I/O, so another
# task's operation beginning while it is alive overlaps it, whatever the timing; a sync
# Session runs in its thread's main greenlet. The same caller as last time costs a
# greenlet lookup and a weak reference call.

_sharing_lock = threading.Lock()
_MAX_TASKS_SEARCHED = 1_000
_getcurrent: Callable[[], Any]


try:
    # Imported by name: greenlet ships no type information.
    _getcurrent = importlib.import_module("greenlet").getcurrent
except ImportError:  # pragma: no cover - greenlet is optional since SQLAlchemy 2.1
    _getcurrent = threading.current_thread


def _in_async_call(who: Any) -> bool:
    """Whether ``who`` is SQLAlchemy's greenlet for an AsyncSession call, still running."""
    return bool(getattr(who, "__sqlalchemy_greenlet_provider__", False)) and not who.dead


def _alive(who: Any) -> bool:
    dead = getattr(who, "dead", None)
    return not dead if dead is not None else bool(who.is_alive())


def _note_use(
    record: SessionRecord, site: callsite.CallSite | None, uow: UnitOfWork | None
) -> None:
    """An operation on the session begins here."""
    who = _getcurrent()
    last = record.sharing.last
    if last is not None and last() is who:
        return
    _changed_hands(record, who, site, uow)


def _changed_hands(
    record: SessionRecord, who: Any, site: callsite.CallSite | None, uow: UnitOfWork | None
) -> None:
    sharing = record.sharing
    thread = threading.get_ident()
    if site is None:
        site = callsite.find(2)
    task: weakref.ref[Any] | None = None
    if getattr(who, "__sqlalchemy_greenlet_provider__", False):
        try:
            running = asyncio.current_task()
        except RuntimeError:
            running = None
        task = weakref.ref(running) if running is not None else None
    frames = sharing.last_frames
    pool_task: callsite.PoolTask | None = None
    if sharing.last_thread != thread:
        # A thread takes the session: the work it uses it in, for the next thread to ask
        # whether it is still in it. Not for the main thread, whose script or main()
        # holding a session runs on after handing it to a worker.
        main = threading.main_thread().ident
        frames = () if thread == main else callsite.task_frames(2)
        pool_task = None if thread == main else callsite.pool_task(record.session)
    found: SharedUse | None = None
    with _sharing_lock:
        previous = sharing.last() if sharing.last is not None else None
        if sharing.last_thread == thread:
            if previous is not None and previous is not who and _in_async_call(previous):
                found = SharedUse(
                    record,
                    site,
                    sharing.last_site,
                    _task_name(task),
                    _task_name(sharing.last_task),
                    tasks=True,
                    concurrent=True,
                )
        else:
            found = _thread_sharing(record, thread, site, pool_task)
        threads = sharing.threads
        if len(threads) < MAX_THREADS_PER_TRANSACTION and all(t != thread for t, _ in threads):
            if not threads:
                sharing.first_site = site
            threads.append((thread, threading.current_thread().name))
        sharing.last = weakref.ref(who)
        sharing.last_site = site
        sharing.last_thread = thread
        sharing.last_frames = frames
        sharing.last_task = task
    if found is not None:
        if found.tasks and (found.site is None or found.other_site is None):
            awaiting = _awaiting_site(record)
            found.site = found.site or awaiting
            found.other_site = found.other_site or awaiting
        _shared(record, found, uow)


def _thread_sharing(
    record: SessionRecord,
    thread: int,
    site: callsite.CallSite | None,
    pool_task: callsite.PoolTask | None = None,
) -> SharedUse | None:
    """This thread uses the session: is another one in a statement, or did it take turns?
    ``pool_task`` is the work item of the thread-pool task this thread runs, if that task
    was handed the session."""
    sharing = record.sharing
    busy = sharing.busy() if sharing.busy is not None else None
    if busy is not None and sharing.busy_thread != thread and _alive(busy):
        return SharedUse(
            record,
            site,
            sharing.busy_site,
            _thread_name(record, thread),
            _thread_name(record, sharing.busy_thread),
            tasks=False,
            concurrent=True,
        )
    last = sharing.last_thread
    if last and last != thread and _provisioning(record):
        # Another thread's operation is still connecting (a pool checkout, a new DBAPI
        # connection): SQLAlchemy refuses this one ("This session is provisioning a new
        # connection; concurrent operations are not permitted"), no statement ran yet.
        # The transaction's connection is acquired by its first operation's thread.
        other, other_site = last, sharing.last_site
        if sharing.threads and sharing.threads[0][0] != thread:
            other, other_site = sharing.threads[0][0], sharing.first_site or other_site
        return SharedUse(
            record,
            site,
            other_site,
            _thread_name(record, thread),
            _thread_name(record, other),
            tasks=False,
            concurrent=True,
            connecting=True,
        )
    if last and last != thread and record.committing:
        # Another thread's commit() is under way: between its flush and its COMMIT
        # SQLAlchemy refuses this one ("This session is in 'prepared' state"), and once
        # the COMMIT is done the transaction this one joined is gone. The commit() call
        # noted no site of its own (the thread was the session's last user already).
        return SharedUse(
            record,
            site,
            callsite.thread_site(last) or sharing.last_site,
            _thread_name(record, thread),
            _thread_name(record, last),
            tasks=False,
            concurrent=True,
            committing=True,
        )
    other_site = sharing.last_site
    if (
        last
        and last != thread
        and (
            (
                other_site is not None
                and (
                    callsite.thread_inside(last, other_site, record.session)
                    or (
                        sharing.last_frames
                        and callsite.thread_in_frames(last, sharing.last_frames, record.session)
                    )
                )
            )
            or callsite.thread_task_holds(last, record.session)
        )
    ):
        # The other thread is still in the work it used the session for (not waiting
        # for this one in join() or result()): in the function that used it, or past it
        # in the rest of the work whose locals hold it (a helper looked the row up; the
        # task renders it now), or in a task a thread pool was handed with the session
        # (pool.map() over rows, each given the caller's session). Two workers sharing
        # it between statements, which overlap only now and then in the driver.
        return SharedUse(
            record,
            site,
            other_site,
            _thread_name(record, thread),
            _thread_name(record, last),
            tasks=False,
            concurrent=True,
            midway=True,
        )
    if (
        last
        and last != thread
        and pool_task is not None
        and pool_task.workers > 1
        and callsite.awaited_together(pool_task.item, record.session)
    ):
        # This thread runs one of several tasks handed this session and submitted
        # together to a pool of several threads: they run at the same time whenever the
        # pool can, even if this run's tasks happened to take turns.
        return SharedUse(
            record,
            site,
            other_site,
            _thread_name(record, thread),
            _thread_name(record, last),
            tasks=False,
            concurrent=True,
            pool_workers=pool_task.workers,
        )
    if last and last != thread and any(t == thread for t, _ in sharing.threads):
        # This thread used it earlier in this transaction, another one since: turns
        # taken, not a hand-over.
        return SharedUse(
            record,
            site,
            sharing.last_site,
            _thread_name(record, thread),
            _thread_name(record, last),
            tasks=False,
            concurrent=False,
        )
    return None


def _provisioning(record: SessionRecord) -> bool:
    """Whether the session's transaction is acquiring its connection right now (inside
    ``_connection_for_bind``): read from its state, without touching the connection."""
    session = record.ref()
    if session is None:
        return False
    transaction = session.get_transaction()
    state = getattr(transaction, "_state", None)
    return getattr(state, "name", None) == "PROVISIONING_CONNECTION"


def _thread_name(record: SessionRecord, ident: int) -> str:
    for known, name in record.sharing.threads:
        if known == ident:
            return f"thread {name}"
    if ident == threading.get_ident():
        return f"thread {threading.current_thread().name}"
    return "another thread"


def _task_name(ref: weakref.ref[Any] | None) -> str:
    task = ref() if ref is not None else None
    if task is None:
        return "another task"
    return callsite.task_label(task)


def _shared(record: SessionRecord, found: SharedUse, uow: UnitOfWork | None) -> None:
    record.sharing.seen = found
    if uow is None:
        uow = _session_unit(record)
    if uow is None and record.owner is not None and record.owner.active:
        # A thread that did not inherit the unit watching this transaction (a pool
        # worker started inside track()): that unit reports it, and raises, if it is to,
        # in its own thread at its end, not in this one.
        _dispatch(record.owner, "session_shared", found, can_raise=False)
    elif uow is not None:
        _dispatch(uow, "session_shared", found)


def _enter_statement(
    execution: OrmExecution | None,
    flush_record: SessionRecord | None,
    site: callsite.CallSite | None,
    uow: UnitOfWork,
) -> SessionRecord | None:
    """A statement of a session reaches the DBAPI: the session is busy until it returns
    (the record returned, to hand to ``_leave_statement`` then)."""
    record = flush_record
    if record is None and execution is not None:
        record = process.records.get(execution.session_key)
    if record is None:
        return None
    sharing = record.sharing
    who = _getcurrent()
    thread = threading.get_ident()
    busy = sharing.busy() if sharing.busy is not None else None
    if busy is not None and busy is not who and sharing.busy_thread != thread and _alive(busy):
        # Two threads inside DBAPI calls on the session's one connection.
        with _sharing_lock:
            found = _thread_sharing(record, thread, site or callsite.find(3))
        if found is not None:
            _shared(record, found, uow)
    last = sharing.last
    sharing.busy = last if last is not None and last() is who else weakref.ref(who)
    sharing.busy_site = site if site is not None else sharing.last_site
    sharing.busy_thread = thread
    return record


def _leave_statement(record: SessionRecord) -> None:
    sharing = record.sharing
    busy = sharing.busy
    if busy is not None and busy() is _getcurrent():
        sharing.busy = None


@_guarded
def _on_before_commit(session: Session) -> None:
    record = _active(session)
    if record is not None:
        _note_use(record, None, None)
        record.committing = True
    else:
        _note_unwatched(session)


def _known(session: Session) -> SessionRecord | None:
    record = process.records.get(id(session))
    return record if record is not None and record.ref() is session else None


def _note_unwatched(session: Session) -> None:
    """A context nothing watches uses a session a watched one uses too.

    A thread started inside ``track()`` does not inherit its unit of work; its turns
    with the session still count, for the watching thread to report.
    """
    record = _known(session)
    if record is not None:
        _note_use(record, None, None)


def _awaiting_site(record: SessionRecord) -> callsite.CallSite | None:
    """The user's line awaiting the tasks that share this session, for a task that has
    no user frame of its own (``asyncio.gather(session.execute(a), session.execute(b))``
    wraps the library's coroutines in tasks).

    Looked up only once an overlap is found: the innermost user frame of a task whose
    locals hold the session (or its AsyncSession), by identity.
    """
    for _, frames, inner in _tasks_holding(record):
        frame = frames[inner]
        return callsite.CallSite(
            frame.f_code.co_filename,
            frame.f_lineno,
            frame.f_code.co_name,
            frame.f_globals.get("__name__"),
        )
    return None


def starting_site(record: SessionRecord) -> tuple[callsite.CallSite, str] | None:
    """The user's line that started the tasks sharing this session, and what it is.

    Called by SQD158 in the task whose operation overlapped another's, once per
    finding: the task awaiting an ``asyncio.gather()`` or leaving an ``async with
    TaskGroup()`` block that started the current task, found among the running tasks
    with its innermost user frame holding the session. asyncio keeps no public link
    from a task to what started it: the gather's future (``Task._fut_waiter``) and its
    ``_children``, and a TaskGroup's ``_tasks``, are read defensively, and the line is
    not named when they are missing.
    """
    try:
        current = asyncio.current_task()
    except Exception:
        return None
    if current is None:
        return None
    task_group = getattr(asyncio, "TaskGroup", None)
    for task, frames, inner in _tasks_holding(record, skip=current):
        what = None
        waiting = getattr(task, "_fut_waiter", None)
        if inner == len(frames) - 1 and type(waiting).__name__ == "_GatheringFuture":
            if any(child is current for child in getattr(waiting, "_children", ())):
                what = "asyncio.gather() started these tasks here"
        elif task_group is not None:
            for below in frames[inner + 1 :]:
                group = below.f_locals.get("self")
                if isinstance(group, task_group) and current in getattr(group, "_tasks", ()):
                    what = "the TaskGroup that started these tasks ends here"
                    break
        if what is not None:
            frame = frames[inner]
            site = callsite.CallSite(
                frame.f_code.co_filename,
                callsite.line_of(frame, frame.f_lineno),
                frame.f_code.co_name,
                frame.f_globals.get("__name__"),
            )
            return site, what
    return None


def _tasks_holding(
    record: SessionRecord, skip: asyncio.Task[Any] | None = None
) -> Iterator[tuple[asyncio.Task[Any], list[FrameType], int]]:
    """The running tasks whose innermost user frame holds this session (or its
    AsyncSession) in its locals, by identity: each with its awaiting frames, outermost
    first, and that frame's index."""
    session = record.ref()
    if session is None:
        return
    proxy = async_owner(session)
    try:
        tasks = list(asyncio.all_tasks())[:_MAX_TASKS_SEARCHED]
    except Exception:
        return
    for task in tasks:
        if task is skip:
            continue
        frames = callsite.awaiting_frames(task, _STACK_LIMIT)
        for inner in range(len(frames) - 1, -1, -1):
            if callsite.classify(frames[inner].f_code.co_filename) != callsite.USER:
                continue
            if any(v is session or v is proxy for v in list(frames[inner].f_locals.values())):
                yield task, frames, inner
            break


def _active(session: Session) -> SessionRecord | None:
    """The session's record, if anything is watching this context."""
    if current.get() is None and not process.installed:
        return None
    if process.dead:
        drain()
    return _record(session)
