"""SQD151: a Session that still holds its connection when nobody can close it any more."""

from __future__ import annotations

import inspect
import linecache
import re
import sys
from types import ModuleType
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.app_context import KeptInG, assignment_to_g
from sqla_doctor.runtime.async_sessions import async_owner
from sqla_doctor.runtime.callsite import USER, CallSite, classify, format_stack
from sqla_doctor.runtime.detector import Detector
from sqla_doctor.runtime.generator_dependency import generator_dependency, module_of
from sqla_doctor.runtime.source_blocks import FUNCTION, indent
from sqla_doctor.runtime.unit_of_work import SessionRecord

_FIX = "close it: `with {call} as {name}:` (or {name}.close() in a finally block)"
_ASYNC_FIX = (
    "close it: `async with {call} as {name}:` (or `await {name}.close()` in a finally block)"
)
# What the fix names when the line that made the session is not found.
_SYNC_CALL = "Session(engine)"
_ASYNC_CALL = "session_factory()"
_SCOPED_FIX = (
    "{name} is a scoped_session: its session lives until `{awaited}{name}.remove()`; call "
    "it when each request or job ends (Flask: in an `@app.teardown_appcontext` function; "
    "a worker: in a finally block)"
)
_DEPENDENCY_FIX = (
    "the session comes from {name}() ({where}), {what} whose code after `yield` does not "
    "run when {fails}: write it as `{yields}` ({closes})"
)
_AWAITED = re.compile(r"\bawait\b|\basync\s+(?:with|for)\b")
# ``session = SessionLocal()``, ``self.db = Session(engine)``: one call, on one line.
_OPENED = re.compile(
    r"^\s*(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)\s*(?::[^=]+)?=\s*"
    r"(?P<call>[A-Za-z_][\w.]*\([^()]*\))\s*(?:#.*)?$"
)
# A call that fetches an object kept elsewhere (Flask's g, a dict, request.state).
_LOOKUP = re.compile(r"(?:\.(?:pop|get|setdefault)|^getattr)\(")
_HELD_FIX = (
    "{owner} keeps the session it made at {where} (`{name} = {call}`) and nothing closes "
    "it: give {owner} a close() that calls `{close}`, called in a finally block (or make "
    "{owner} a context manager), or hand {owner} a session from `{with_} {call} as session:`"
)
_TEST_CASE_FIX = (
    "{owner} makes a session for each test at {where} (`{name} = {call}`) and nothing "
    "closes it: close it after each test, `self.{cleanup}({name}.close)` on the line after "
    "(or `{close}` in tearDown())"
)
_MODULE_SESSION_FIX = (
    "{name} is a module-level Session{made}, kept from one use to the next with its "
    "transaction and connection: end each unit of work with `{name}.commit()` or "
    "`{name}.close()` (a closed session can be used again), or make a session for each "
    "one, `with {call} as session:`"
)
_CLASS = re.compile(r"^(\s*)class\s+([A-Za-z_]\w*)")
METHOD_CALLS = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)\.(\w+)\(")
_YIELD = re.compile(r"^\s*yield\s+([A-Za-z_]\w*)\s*(?:#.*)?$")
# Lines read upwards from the reported line to its function's ``def``, at most.
_MAX_LINES_UP = 200


def opened_as(site: CallSite) -> tuple[str, str] | None:
    """How the function at ``site`` made the session it leaked, when it did so itself:
    the call and the name it was assigned to (``("SessionLocal()", "session")``), so
    that the fix names them. Read from the source, upwards from ``site`` to its
    function's ``def``, for an assignment to a name the reported line uses; asked only
    when a finding is reported."""
    found = _assigned(site)
    return None if found is None or _LOOKUP.search(found[0]) else found


def fetched_as(site: CallSite) -> str | None:
    """The name the function at ``site`` gave a session it fetched from where another
    function keeps it (``s = g.pop("db", None)`` in a Flask teardown), not made."""
    found = _assigned(site)
    return found[1] if found is not None and _LOOKUP.search(found[0]) else None


def _assigned(site: CallSite) -> tuple[str, str] | None:
    line = linecache.getline(site.filename, site.lineno)
    # The names whose session methods the line calls (``session.execute(``): not a
    # statement's (``stmt.where(``), built by a call of its own above.
    names = {name for name, method in METHOD_CALLS.findall(line) if hasattr(Session, method)}
    if not names:
        return None
    indent = len(line) - len(line.lstrip())
    for number in range(site.lineno, max(site.lineno - _MAX_LINES_UP, 0), -1):
        text = linecache.getline(site.filename, number)
        opened = _OPENED.match(text)
        if opened is not None and opened.group("name") in names:
            return opened.group("call"), opened.group("name")
        function = FUNCTION.match(text)
        if function is not None and len(function.group(1)) < indent:
            return None
    return None


class HeldOnSelf(NamedTuple):
    """A session a method made and kept on the object (``self.session = SessionLocal()``)."""

    call: str
    name: str
    lineno: int
    owner: str


def held_on_self(site: CallSite) -> HeldOnSelf | None:
    """The assignment that made the session the line at ``site`` uses as an attribute of
    ``self`` (``self.session.scalars(``), in another method of its class above it: a
    repository or service that opens its session in ``__init__``. Read from the source
    only when a finding is reported."""
    line = linecache.getline(site.filename, site.lineno)
    names = {
        name
        for name, method in METHOD_CALLS.findall(line)
        if name.startswith("self.") and hasattr(Session, method)
    }
    if not names:
        return None
    indent = len(line) - len(line.lstrip())
    made: tuple[str, str, int] | None = None
    for number in range(site.lineno, max(site.lineno - _MAX_LINES_UP, 0), -1):
        text = linecache.getline(site.filename, number)
        opened = _OPENED.match(text)
        if made is None and opened is not None and opened.group("name") in names:
            made = opened.group("call"), opened.group("name"), number
        klass = _CLASS.match(text)
        if klass is not None and len(klass.group(1)) < indent:
            return HeldOnSelf(*made, klass.group(2)) if made is not None else None
    return None


class ModuleSession(NamedTuple):
    """A Session a module-level name holds (``sess = Session(engine)``)."""

    name: str
    call: str | None  # as the module's line spells it, when found
    lineno: int | None


def module_session(site: CallSite) -> ModuleSession | None:
    """The module-level Session the line at ``site`` calls a method of, looked up in its
    module's dictionary, with the module's line that made it. Read only when reporting."""
    line = linecache.getline(site.filename, site.lineno)
    for name, method in METHOD_CALLS.findall(line):
        if "." in name or not hasattr(Session, method):
            continue
        if not isinstance(_module_global(site, name), Session):
            continue
        for number, text in enumerate(linecache.getlines(site.filename), start=1):
            opened = _OPENED.match(text)
            if opened is not None and opened.group("name") == name and not text[0].isspace():
                return ModuleSession(name, opened.group("call"), number)
        return ModuleSession(name, None, None)
    return None


def is_test_case(site: CallSite, owner: str) -> bool:
    """Whether the class ``owner`` of the module of ``site`` is a unittest.TestCase, whose
    setUp() runs before each test and tearDown() (or a cleanup) after it."""
    unittest = sys.modules.get("unittest")
    found = _module_global(site, owner)
    return unittest is not None and isinstance(found, type) and issubclass(found, unittest.TestCase)


def _module_namespace(site: CallSite) -> Any:
    """The dictionary of the module of ``site`` (None if it is not loaded)."""
    module = sys.modules.get(site.module) if site.module else module_of(site.filename)
    return getattr(module, "__dict__", None)


def _module_global(site: CallSite, dotted: str) -> Any:
    """The object a module-level (dotted) name of the module of ``site`` is bound to,
    read from the modules' dictionaries only (no attribute lookup runs the program's
    code)."""
    namespace = _module_namespace(site)
    value: Any = None
    for part in dotted.split("."):
        if not isinstance(namespace, dict):
            return None
        value = namespace.get(part)
        namespace = getattr(value, "__dict__", None) if isinstance(value, ModuleType) else None
    return value


def module_factory(site: CallSite | None, asynchronous: bool) -> str:
    """The call of the one module-level ``sessionmaker`` (``async_sessionmaker``) of the
    module of ``site`` (``SessionLocal()``), for a fix that makes a session per task or
    thread; ``Session(engine)`` (``session_factory()``) when there is none, or several.
    Read from the module's dictionary only when a finding is reported."""
    fallback = _ASYNC_CALL if asynchronous else _SYNC_CALL
    if site is None:
        return fallback
    from sqlalchemy.orm import sessionmaker

    kind: type = sessionmaker
    if asynchronous:
        from sqlalchemy.ext.asyncio import async_sessionmaker

        kind = async_sessionmaker
    namespace = _module_namespace(site)
    if not isinstance(namespace, dict):
        return fallback
    names = [name for name, value in list(namespace.items()) if isinstance(value, kind)]
    return f"{names[0]}()" if len(names) == 1 else fallback


def begin_block(site: CallSite, call: str, name: str) -> str | None:
    """The items of a ``with`` statement that commits, for a session the program made
    with ``call`` (a name of the module of ``site``) and named ``name``:
    ``SessionLocal.begin() as db`` for a sessionmaker, ``Session(engine) as db,
    db.begin()`` for the class; None when ``call`` is neither (a helper function)."""
    from sqlalchemy.orm import sessionmaker

    makers: tuple[type, ...] = (sessionmaker,)
    classes: tuple[type, ...] = (Session,)
    if "sqlalchemy.ext.asyncio" in sys.modules:
        from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

        makers, classes = (sessionmaker, async_sessionmaker), (Session, AsyncSession)
    factory = call.partition("(")[0]
    made_by = _module_global(site, factory)
    if isinstance(made_by, makers) and call.endswith("()"):
        return f"{factory}.begin() as {name}"
    if isinstance(made_by, makers) or (isinstance(made_by, type) and issubclass(made_by, classes)):
        # sessionmaker.begin() takes no arguments: a session made with some
        # (`SessionLocal(bind=conn)`) begins inside the block instead.
        return f"{call} as {name}, {name}.begin()"
    return None


def yielded_session(site: CallSite) -> tuple[str, str] | None:
    """How the generator whose ``def`` is at ``site`` made the session it yields:
    ``("SessionLocal()", "db")`` for ``db = SessionLocal()`` … ``yield db``. Read from the
    source only when a finding is reported."""
    indent: int | None = None  # the def's, once past its decorators
    made: dict[str, str] = {}
    for number in range(site.lineno, site.lineno + _MAX_LINES_UP):
        text = linecache.getline(site.filename, number)
        if not text:
            break
        if indent is None:
            function = FUNCTION.match(text)
            if function is not None:
                indent = len(function.group(1))
            continue
        if text.strip() and len(text) - len(text.lstrip()) <= indent:
            break  # the function ended
        opened = _OPENED.match(text)
        if opened is not None:
            made[opened.group("name")] = opened.group("call")
        yielded = _YIELD.match(text)
        if yielded is not None and yielded.group(1) in made:
            return made[yielded.group(1)], yielded.group(1)
    return None


def is_async_session(record: SessionRecord) -> bool:
    """Whether the record's Session is the sync side of an ``AsyncSession``.

    Asked when a finding is made, not per event. A live session answers through
    SQLAlchemy's public ``async_session()``; one whose AsyncSession is gone, by the line
    that acquired its connection or flushed: an AsyncSession's work is awaited there.
    """
    if "sqlalchemy.ext.asyncio" not in sys.modules:
        return False  # nothing in this process can have made an AsyncSession
    session = record.ref()
    if session is not None and async_owner(session) is not None:
        return True
    # None also when the AsyncSession was collected and its Session outlived it (kept
    # by an unfinished coroutine's frame until exit): ask the line too.
    sites = [
        record.opened[0] if record.opened else None,
        record.flush_site,
        record.commit_site,
    ]
    return any(is_awaited(site) for site in sites if site is not None)


def _last_user_site(record: SessionRecord) -> CallSite | None:
    """A line of the program that flushed, committed or rolled back the session."""
    for site in (record.flush_site, record.commit_site, record.rollback_site):
        if site is not None and classify(site.filename) == USER:
            return site
    return None


def is_awaited(site: CallSite) -> bool:
    """Whether the line of ``site`` awaits (``await``, ``async with``, ``async for``)."""
    return _AWAITED.search(linecache.getline(site.filename, site.lineno)) is not None


class ScopedProxy(NamedTuple):
    name: str  # as the reported line spells it: ``db_session``, ``db.session``
    awaited: bool  # an async_scoped_session, whose remove() is awaited


_NAMES = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)\s*[.(]")


def scoped_proxy(*sites: CallSite | None) -> ScopedProxy | None:
    """The ``scoped_session`` the line at the first of ``sites`` that names one used,
    when a module-level name says so, or an assignment in a function around the line.

    Asked only when a finding is reported: the line's names are looked up in its module's
    globals (``db_session.query(...)``, Flask-SQLAlchemy's ``db.session.get(...)``).
    """
    try:
        from sqlalchemy.ext.asyncio import async_scoped_session
        from sqlalchemy.orm import scoped_session
    except Exception:  # pragma: no cover - an unusual SQLAlchemy build
        return None
    for site in sites:
        if site is not None:
            found = _scoped_proxy_at(site, scoped_session, async_scoped_session)
            if found is not None:
                return found
    return None


def _scoped_proxy_at(site: CallSite, sync: type, asynchronous: type) -> ScopedProxy | None:
    module = module_of(site.filename)
    if module is None:
        return None
    line = linecache.getline(site.filename, site.lineno)
    for dotted in _NAMES.findall(line):
        first, _, attribute = dotted.partition(".")
        owner = module.__dict__.get(first)
        if owner is None and first not in module.__dict__:
            local = _enclosing_scoped_session(site, first)
            if local is not None:
                return local
        name, value = first, owner
        if attribute and not isinstance(value, (sync, asynchronous)):
            # Static lookup: a property of the user's object must not run (it might query).
            name, value = dotted, inspect.getattr_static(owner, attribute, None)
            if (
                value is not None
                and attribute != "session"
                and not isinstance(value, (sync, asynchronous))
            ):
                # A method of the object that holds the scoped_session as `session`:
                # Flask-SQLAlchemy's db.get_or_404(), db.paginate() use db.session. (A
                # name the object lacks is a local that shadows it: `db.scalars(...)`.)
                name = f"{first}.session"
                value = inspect.getattr_static(owner, "session", None)
        if isinstance(value, sync):
            return ScopedProxy(name, False)
        if isinstance(value, asynchronous):
            return ScopedProxy(name, True)
    return None


# ``Session = async_scoped_session(factory, scopefunc=current_task)``, in a function.
_SCOPED_MADE = re.compile(
    r"\s*(?P<name>[A-Za-z_]\w*)\s*(?::[^=]+)?=\s*(?:[\w.]+\.)?"
    r"(?P<kind>async_scoped_session|scoped_session)\("
)


def _enclosing_scoped_session(site: CallSite, name: str) -> ScopedProxy | None:
    """The scoped_session bound to ``name`` in the function around the line at
    ``site``, or in a function around that one (a closure's registry): a local the
    module's globals do not have. Read from the source, upwards, skipping the blocks
    nested deeper than the ones the line sits in."""
    line = linecache.getline(site.filename, site.lineno)
    floor = indent(line)
    for number in range(site.lineno - 1, max(site.lineno - _MAX_LINES_UP, 0), -1):
        text = linecache.getline(site.filename, number)
        stripped = text.strip()
        width = indent(text)
        if not stripped or stripped.startswith("#") or width > floor:
            continue
        if width == 0:
            return None  # module level: its names are the globals already asked
        made = _SCOPED_MADE.match(text)
        if made is not None and made.group("name") == name:
            return ScopedProxy(name, made.group("kind") == "async_scoped_session")
        floor = width
    return None


def flask_sqlalchemy_name(site: CallSite | None) -> str | None:
    """The module-level name of the Flask-SQLAlchemy extension the line at ``site`` uses
    (``db.session.commit()``: ``db``), else None; read only when a finding is reported."""
    module = module_of(site.filename) if site is not None else None
    if site is None or module is None:
        return None
    for dotted in _NAMES.findall(linecache.getline(site.filename, site.lineno)):
        first: str = dotted.partition(".")[0]
        if type(module.__dict__.get(first)).__module__.startswith("flask_sqlalchemy"):
            return first
    return None


def _close_interrupted(record: SessionRecord) -> bool:
    """Whether the program closed the session, and its close stopped before the end of
    the transaction reached us: the session has no transaction any more (a close that
    raised while returning its connection, an AsyncSession's close cancelled when
    ``asyncio.run()`` shut the loop down after a crash). Not a session left open; the
    error that interrupted it is the program's to see. Asked only when reporting."""
    session = record.ref()
    if session is None:
        return False
    try:
        return session.get_transaction() is None
    except Exception:
        return False


class SessionLeak(Detector):
    """
    ## What it does
    Checks for sessions that still hold a pooled connection (an open transaction) at the
    end of the unit of work, or when they are garbage-collected without having been
    closed, committed or rolled back. The finding points at the line where the session
    acquired its connection and carries the stack that led there. A session that a
    `track()`-decorated function was called with (a FastAPI endpoint's `db` from a
    dependency) is its caller's to close, after the call's unit has ended: only the
    garbage collector's or the exit's check judges it.

    When the function at that line (or the endpoint that called it: a repository
    method) got the session from a FastAPI generator dependency (`db: Session =
    Depends(get_db)`, `Annotated[..., Depends(get_db)]` or an alias of it, or through a
    sub-dependency such as `Depends(get_repository)` whose own parameter depends on
    `get_db`) whose `yield` is in no `with` block and no `try/finally`, the finding
    names that dependency: the code after its `yield` does not run when the request
    fails (P35). The same goes for a `@contextmanager` generator the leaking code entered
    with `with` (`with session_scope() as session:`), whose close (and commit) after
    `yield` is skipped when the block raises (P06); when it commits there, the fix is
    `session_factory.begin()`. A generator that yields no session (`yield Settings()`,
    a literal) is not named. Only signatures and source are read; no annotation is
    evaluated.

    A session a Flask app keeps in `flask.g` for the request (`g.db = Session(engine)`
    in a `get_db()` helper) is traced to that assignment and to the app's
    `teardown_appcontext` function, which is told to close it whatever happened (`db =
    g.pop("db", None)`, then `db.close()`): Flask runs it after a failed request too,
    with the error as its argument, and one that closes only when there was none leaks
    the session of every failed request. An app with no such function is told to add one.

    When the program dies of an uncaught exception, a session still open at exit is not
    reported if a frame that exception unwound holds it (a local variable, an attribute
    of a local such as `self.session`, a module global, or the current session of a
    module-level `scoped_session`) and that frame's code closes it (`close()` or
    `remove()`): the close comes after the line that raised and never ran, and the
    traceback already tells what happened. A session nothing on the crash's path holds,
    or held by a function that never closes it, is reported as usual. Nor is a session
    the program closed whose close was interrupted before the connection went back (it
    raised, or, for an `AsyncSession` in tasks that `asyncio.gather()` ran, was cancelled
    when `asyncio.run()` shut down after the crash): it has no transaction any more.

    ## Why is this bad?
    A session keeps its connection checked out until its transaction ends. Sessions that
    are never closed hold connections until the garbage collector finds them, and under
    load the pool runs dry: `TimeoutError: QueuePool limit of size 5 overflow 10
    reached, connection timed out`. Meanwhile the open transaction holds its locks and,
    on PostgreSQL, shows as "idle in transaction".

    ## Known problems
    A session created outside `track()`, first used inside it and closed after it ends is
    reported at the end of the tracked block; track the whole lifetime of the session, or
    allow it with `# noqa: SQD151` on the reported line. Whether a garbage-collected
    session belonged to an `AsyncSession` (which decides between the `with` and the
    `async with` fix) is read from the line that acquired its connection: an `await`
    there. A session of a `scoped_session` is told to call `remove()` on the name the
    reported line uses, when that name is a module-level `scoped_session` (or an
    attribute of one, as Flask-SQLAlchemy's `db.session`), or is assigned a
    `scoped_session(...)` / `async_scoped_session(...)` call in the function around the
    line (or around that function, for a closure); through any other local alias the
    plain `with` fix is given. The `with` fix names the call that made the session and
    the name it was given (`with SessionLocal() as db:`) when the function at the
    reported line made it itself, on one line above it (`db = SessionLocal()`). A session
    the reported line uses as an attribute of `self`, made by another method of its
    class above it (a repository's `__init__`: `self.session = SessionLocal()`), is
    traced to that line, and the class is told to close it or be handed a session (a
    `unittest.TestCase` whose `setUp()` made it, to close it after each test with
    `self.addCleanup(self.session.close)`). A Session a module-level name holds (`sess =
    Session(engine)`, used by every function of the module) is named with the line that
    made it, and told to end each unit of work with a commit or a close. Any
    other session is told `with SessionLocal() as session:` after the one module-level
    `sessionmaker` of the reported line's module, else `with Session(engine) as session:`.

    ## Example
    ```python
    def get_user(user_id):
        session = SessionLocal()
        return session.get(User, user_id)  # the session and its connection stay open
    ```

    Use instead:
    ```python
    def get_user(user_id):
        with SessionLocal() as session:
            return session.get(User, user_id)

    # an AsyncSession, e.g. a FastAPI dependency: the fix says `async with`
    async def get_db():
        async with AsyncSessionLocal() as session:
            yield session
    ```

    ## References
    - [Session basics: opening and closing a session](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#opening-and-closing-a-session)
    - [QueuePool limit reached (3o7r)](https://docs.sqlalchemy.org/en/20/errors.html#error-3o7r)
    """

    code = "SQD151"
    name = "session-leak"
    pitfalls = ("P06", "P35")
    severity = Severity.ERROR
    message = "Session whose transaction began at {site} {what} — {fix}"

    def end(self) -> None:
        for record in list(self.uow.sessions.values()):
            if (
                record.owner is self.uow
                and record.holds_connection
                and not record.external
                and not record.long_lived
                and record.key not in self.uow.handed_in
            ):
                self._report(record, "still holds its connection at the end of the unit of work")

    def on_session_gc(self, record: SessionRecord) -> None:
        if record.holds_connection and not record.external:
            when = "was still open at exit" if record.at_exit else "was garbage-collected"
            self._report(record, f"{when} while holding a connection (never closed)")

    def _kept_in_g_fix(
        self,
        kept: KeptInG,
        sites: tuple[CallSite, ...],
        related: list[tuple[CallSite, str]],
    ) -> tuple[str, str]:
        """A session a Flask app kept in flask.g for the request: its teardown function
        is where it closes, whether the request failed or not."""
        name = kept.name
        files = [site.filename for site in sites[:2]]
        files += [t.filename for t in kept.teardowns if t.filename not in files]
        made = assignment_to_g(files, name)
        if made is not None:
            related.insert(0, (made, f"the session was kept in flask.g.{name} here"))
        held = f"it was kept in flask.g.{name} for the request" + (
            f" ({self.where(made)})" if made is not None else ""
        )
        close = f'db = g.pop("{name}", None)` then `if db is not None: db.close()'
        if kept.teardowns:
            teardown = kept.teardowns[0]
            related.append((teardown, "this teardown_appcontext function left it open"))
            fix = (
                f"{held}, and the app context ended without closing it: close it in "
                f"{teardown.function}() ({self.where(teardown)}) whatever happened, `{close}`"
                " — Flask runs teardown functions after a failed request too, with the "
                "error as their argument"
            )
        else:
            fix = (
                f"{held}, and nothing closes it when the app context ends: add "
                "`@app.teardown_appcontext def close_db(exc):` with "
                f"`{close}` (it runs after failed requests too)"
            )
        return fix, f'db = g.pop("{name}", None)  # then db.close() unless it is None'

    def _report(self, record: SessionRecord, what: str) -> None:
        if self.code in record.reported or _close_interrupted(record):
            return
        record.reported.add(self.code)
        site = record.opened[0] if record.opened else None
        self.uow.note_leak(site)
        stack = format_stack(record.opened, self.uow.settings.root)
        key: Any = site.key if site is not None else id(record)
        related = [(frame, "called from here") for frame in record.opened[1:4]]
        sites = record.opened
        if site is None or classify(site.filename) != USER:
            # The transaction began in installed code (a response model's serializer
            # refreshing what the commit expired): the program's own last line on this
            # session says where it came from.
            used = _last_user_site(record)
            if used is not None:
                sites = (used,)
                related.insert(0, (used, "the program last used the session here"))
        proxy = scoped_proxy(sites[0] if sites else None)
        dependency = generator_dependency(sites) if proxy is None else None
        kept = record.kept_in
        if kept is not None and proxy is None and dependency is None:
            fix, hint = self._kept_in_g_fix(kept, sites, related)
        elif dependency is not None:
            name = dependency.name
            with_ = "async with" if dependency.awaited else "with"
            # The dependency's own `db = SessionLocal()`, named back to the program.
            call, yielded = yielded_session(dependency.site) or ("session_factory()", "session")
            if dependency.commits:
                begin = begin_block(dependency.site, call, yielded)
                if begin is None:
                    yielded, begin = "session", "session_factory.begin() as session"
                yields = f"{with_} {begin}: yield {yielded}"
                closes = "commits when the block succeeds, rolls back when it raises, closes"
            else:
                yields = f"{with_} {call} as {yielded}: yield {yielded}"
                closes = "or close the session in a finally block"
            hint = f"{yields}  # in {name}()"
            fix = _DEPENDENCY_FIX.format(
                name=name,
                where=self.where(dependency.site),
                what=(
                    "a @contextmanager generator"
                    if dependency.context_manager
                    else "a generator dependency"
                ),
                fails=(
                    "its `with` block raises" if dependency.context_manager else "the request fails"
                ),
                yields=yields,
                closes=closes,
            )
            related.insert(0, (dependency.site, f"{name}() opened the session"))
        elif proxy is not None:
            hint = f"{'await ' if proxy.awaited else ''}{proxy.name}.remove()"
            fix = _SCOPED_FIX.format(name=proxy.name, awaited="await " if proxy.awaited else "")
        else:
            asynchronous = is_async_session(record)
            made = opened_as(sites[0]) if sites else None
            held = held_on_self(sites[0]) if sites and made is None else None
            with_ = "async with" if asynchronous else "with"
            if held is not None:
                close = f"{'await ' if asynchronous else ''}{held.name}.close()"
                made_at = CallSite(sites[0].filename, held.lineno, "?")
                related.insert(0, (made_at, f"{held.owner} made the session here"))
                hint = close
                if is_test_case(sites[0], held.owner):
                    fix = _TEST_CASE_FIX.format(
                        owner=held.owner,
                        where=self.where(made_at),
                        name=held.name,
                        call=held.call,
                        cleanup="addAsyncCleanup" if asynchronous else "addCleanup",
                        close=close,
                    )
                else:
                    fix = _HELD_FIX.format(
                        owner=held.owner,
                        where=self.where(made_at),
                        name=held.name,
                        call=held.call,
                        close=close,
                        with_=with_,
                    )
            elif made is None and sites and (shared := module_session(sites[0])) is not None:
                made_here = ""
                if shared.lineno is not None:
                    made_at = CallSite(sites[0].filename, shared.lineno, "?")
                    related.insert(0, (made_at, "the module made the session here"))
                    made_here = f" ({self.where(made_at)})"
                hint = f"{shared.name}.close()"
                fix = _MODULE_SESSION_FIX.format(
                    name=shared.name,
                    made=made_here,
                    call=shared.call or module_factory(sites[0], asynchronous),
                )
            else:
                # Made on another line: the module's one session factory, if it has one.
                factory = module_factory(sites[0] if sites else None, asynchronous)
                call, name = made or (factory, "session")
                hint = f"{with_} {call} as {name}: ..."
                fix = (_ASYNC_FIX if asynchronous else _FIX).format(call=call, name=name)
        self.report(
            site,
            key=key,
            subject="Session",
            related=related,
            hint=hint,
            details={"stack": stack},
            site=self.where(site),
            what=what,
            fix=fix,
        )
