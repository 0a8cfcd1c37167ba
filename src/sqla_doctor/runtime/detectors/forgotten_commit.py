"""SQD152: a session closed or collected with writes that were never committed."""

from __future__ import annotations

import asyncio
import linecache
import re
import sys
from collections.abc import Callable
from types import FrameType

from sqla_doctor.findings import Severity
from sqla_doctor.runtime import source_blocks
from sqla_doctor.runtime.async_sessions import async_owner
from sqla_doctor.runtime.callsite import (
    USER,
    CallSite,
    awaiting_frames,
    classify,
    line_of,
    names_holding,
    unit_of_work_exit,
)
from sqla_doctor.runtime.detector import ConnectionWritesLost, Detector, TransactionEnd
from sqla_doctor.runtime.detectors.session_leak import (
    METHOD_CALLS,
    begin_block,
    fetched_as,
    is_async_session,
    is_awaited,
    opened_as,
    scoped_proxy,
)
from sqla_doctor.runtime.pytest_fixtures import closed_by_pytest_fixture
from sqla_doctor.runtime.raised_responses import passing_response, raised_response
from sqla_doctor.runtime.skipped_commits import commit_skipped
from sqla_doctor.runtime.source_blocks import enclosing_headers
from sqla_doctor.runtime.unit_of_work import EXECUTED_WRITES, Added, SessionRecord

_MAX_NAMED = 4
_MAX_AWAIT_DEPTH = 64


def _raised_fix(raised: str, hint: str, site: CallSite | None) -> str:
    """What to do about writes a raised success response (``raised``) threw away at
    ``site``: a ``with`` block (``Session.begin()``) rolls back on any exception, so the
    raise moves after it; a plugin's ``finally: session.close()`` or ``except Exception:
    session.rollback()`` has to commit when that exception passes (only then: Bottle's
    HTTPError, a 4xx or 5xx, is a subclass of its HTTPResponse)."""
    cls = raised.rpartition("'s ")[2].partition(" (")[0]
    line = linecache.getline(site.filename, site.lineno).lstrip() if site is not None else ""
    where = (
        "raise it after the with block ends"
        if line.startswith(source_blocks.WITHS)
        else f"commit where the session ends when a {cls} with a status below 400 passes"
    )
    return (
        f"a raised {cls} is a successful response, not an error, yet the session dropped "
        f"the request's writes as for one: call `{hint}` before raising it, or {where}"
    )


def _counted(names: list[str]) -> str:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    parts = [f"{count} {name}" for name, count in list(counts.items())[:_MAX_NAMED]]
    return ", ".join(parts)


def _async_with_exit(session: object) -> tuple[BaseException | None, CallSite | None] | None:
    """The ``async with`` block whose ``__aexit__`` is closing this session: the
    exception that left it, if one did, and the program's line that awaits it (the
    ``async with``).

    ``AsyncSession.__aexit__`` closes in a task of its own, off the caller's stack and
    where ``sys.exc_info()`` is empty: the exception is the ``type_`` argument of that
    ``__aexit__``, suspended in another task while it waits for the close, and the
    frames awaiting it are the program's. Only asked when writes would be lost.
    """
    owner = async_owner(session)
    if owner is None:
        return None
    return _awaited_exit(
        lambda closing: closing is owner or getattr(closing, "async_session", None) is owner
    )


def _async_connection_exit(
    connection: object,
) -> tuple[BaseException | None, CallSite | None] | None:
    """The same for the ``async with engine.connect()`` block closing this Connection:
    ``AsyncConnection.__aexit__`` also closes in a shielded task of its own."""
    if "sqlalchemy.ext.asyncio" not in sys.modules:
        return None
    from sqlalchemy.ext.asyncio import AsyncConnection

    # By type(), never isinstance() or getattr() on whatever `self` an __aexit__ has.
    return _awaited_exit(
        lambda closing: (
            issubclass(type(closing), AsyncConnection)
            and getattr(closing, "sync_connection", None) is connection
        )
    )


def _awaited_exit(
    closes: Callable[[object], bool],
) -> tuple[BaseException | None, CallSite | None] | None:
    """The suspended ``__aexit__`` whose ``self`` ``closes`` accepts, in any task of the
    running loop: the exception that left its block, if any, and the program's line
    awaiting it."""
    try:
        loop = asyncio.get_running_loop()
        tasks = asyncio.all_tasks(loop)
    except Exception:
        return None
    for task in tasks:
        frames = awaiting_frames(task, _MAX_AWAIT_DEPTH)
        for index, frame in enumerate(frames):
            if frame.f_code.co_name == "__aexit__":
                scope = frame.f_locals
                if closes(scope.get("self")):
                    value = scope.get("value")
                    left_by = value if isinstance(value, BaseException) else None
                    if left_by is None and scope.get("type_") is not None:
                        left_by = Exception()  # the class alone: an error all the same
                    return left_by, _awaiting_user_site(frames[:index])
    return None


def _awaiting_user_site(frames: list[FrameType]) -> CallSite | None:
    """The innermost of the program's frames among ``frames`` (outermost first)."""
    for frame in reversed(frames):
        code = frame.f_code
        if classify(code.co_filename) == USER:
            return CallSite(
                code.co_filename,
                line_of(frame, frame.f_lineno),
                code.co_name,
                frame.f_globals.get("__name__"),
            )
    return None


# ``db_session.close()``, ``p.call(db_session.close)``: the session the line closes.
_CLOSED = re.compile(r"(?<![\w.])([A-Za-z_][\w.]*)\.close\b")
# Lines read upwards from a close to its function's ``def``, at most.
_MAX_LINES_UP = 60


def conditional_commit_before(site: CallSite) -> bool:
    """Whether the close at ``site`` follows, in its function, a commit of the same
    session that did not run this time: ``if 200 <= response.status_code < 300:
    db_session.commit()`` then ``db_session.close()`` (advanced-alchemy's Flask
    extension, committing after a successful response only) drops the writes of a
    failed request on purpose. A commit inside a loop is a commit per batch, whose last
    short batch the close loses: not this. Read from the source only when a close lost
    writes."""
    line = linecache.getline(site.filename, site.lineno)
    closed = _CLOSED.search(line)
    if closed is None:
        return False
    commit = re.compile(rf"(?<![\w.]){re.escape(closed.group(1))}\.commit\b")
    indent = source_blocks.indent(line)
    for number in range(site.lineno - 1, max(site.lineno - _MAX_LINES_UP, 0), -1):
        text = linecache.getline(site.filename, number).split("#", 1)[0]
        function = source_blocks.FUNCTION.match(text)
        if function is not None and len(function.group(1)) < indent:
            return False  # the close's own function has no commit above it
        if commit.search(text):
            break
    else:
        return False
    for _, _, header in enclosing_headers(site.filename, number, _MAX_LINES_UP):
        if header.startswith(source_blocks.FUNCTIONS):
            return True
        if source_blocks.LOOP.match(header):
            return False
    return False


# ``with SessionLocal() as db:``, ``async with AsyncSession(engine) as session,``: each
# item of a with statement that makes something and names it.
_WITH_ITEM = re.compile(
    r"(?<![\w.])(?P<call>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\([^()]*\))\s+as\s+(?P<name>[A-Za-z_]\w*)"
)


def _begin_block(
    site: CallSite, asynchronous: bool, session: object, written: list[CallSite]
) -> tuple[str, str] | None:
    """The program's own spelling of a block that commits, for the session that the
    line at ``site`` closed: ``("with SessionLocal.begin() as db:", "db")`` for a
    sessionmaker, ``("with Session(engine) as db, db.begin():", "db")`` for the class;
    None when the line does not say which one made it. Asked only when reporting."""
    line = linecache.getline(site.filename, site.lineno)
    made = [(m["call"], m["name"]) for m in _WITH_ITEM.finditer(line)]
    if not made:
        opened = opened_as(site)  # ``db.close()``: the assignment that made ``db``
        if opened is not None:
            made = [opened]
    elif len(made) > 1:
        made = _the_one_closed(made, site, session, written)
    with_ = "async with" if asynchronous else "with"
    for call, name in made:
        begin = begin_block(site, call, name)
        if begin is not None:
            return f"{with_} {begin}:", name
    if len(made) == 1:
        # A factory the module does not bind (a parameter, `self.session_factory`): the
        # session's own begin() commits whatever made it.
        call, name = made[0]
        return f"{with_} {call} as {name}, {name}.begin():", name
    return None


def _the_one_closed(
    made: list[tuple[str, str]], site: CallSite, session: object, written: list[CallSite]
) -> list[tuple[str, str]]:
    """Of the sessions one ``with`` line made (``with Session(a) as src, Session(b) as
    dst:``), the one that lost the writes: the name that holds it in the frame closing
    it, else the name the lines that wrote call (``dst.add(``: an AsyncSession closes
    in a task of its own, off the stack); all of them when neither tells."""
    names = {name for _, name in made}
    held = names_holding(site, session, names)
    if not held:
        for where in written:
            line = linecache.getline(where.filename, where.lineno)
            held |= {name for name, _ in METHOD_CALLS.findall(line)} & names
    chosen = [item for item in made if item[1] in held]
    return chosen if len(chosen) == 1 else made


def _unit_of_work_commit(block: CallSite | None, owner: str, awaited: bool) -> str:
    """The commit() call of the unit of work the ``with`` line at ``block`` entered, by
    the name it was given there (``with UnitOfWork() as uow:``: ``uow.commit()``)."""
    line = linecache.getline(block.filename, block.lineno) if block is not None else ""
    for item in _WITH_ITEM.finditer(line):
        if item["call"].partition("(")[0].rpartition(".")[2] == owner:
            return f"{'await ' if awaited else ''}{item['name']}.commit()"
    return "commit()"


def _skipped_by_a_caught_error(record: SessionRecord) -> bool:
    """Whether every write the session lost was made in a ``try`` body whose later
    ``commit()`` did not run: the error its handler caught skipped it (changes to loaded
    objects leave no line, and are not judged)."""
    if record.discarded_dirty:
        return False
    sites = [added.site for added in record.discarded]
    if record.writes:
        sites.append(record.flush_site)
    return bool(sites) and all(site is not None and commit_skipped(site) for site in sites)


class ForgottenCommit(Detector):
    """
    ## What it does
    Checks for sessions that end without `commit()` while holding work that was meant to
    be saved: objects added but never flushed, changed objects never flushed, rows
    already flushed (by `flush()` or an autoflush), or write statements the session ran
    itself (`session.execute(insert(User), rows)`, `session.execute(update(...))`,
    `session.execute(text("UPDATE ..."))`) inside a transaction that is then closed
    instead of committed. Both `Session.close()` (including the end of a `with
    Session() as session:` block) and garbage collection of an unclosed session count;
    an explicit `rollback()` does not, and neither does a close while an exception
    unwinds (a `with` block left by a raise, a close in an `except` block): dropping
    the writes is what that error path is for. Nor does a `commit()` that an error the
    block caught skipped: the writes were made in a `try` body whose later statement
    commits, and its handler let the block end (`try: session.add(user);
    check(user); session.commit()` / `except Invalid: return error_page`); a commit
    in a branch not taken (`if count % 100 == 0:`) is no such path. The same goes for
    a session still open when the program dies of an uncaught exception, held by a
    frame that exception unwound whose code closes it (see SQD151): its `commit()`
    never ran either. A web framework's successful response raised as an exception is
    not such an error: Falcon's redirects (`raise falcon.HTTPSeeOther(url)`), Bottle's
    `redirect()`, Pyramid's `raise HTTPFound(url)`, any exception whose class is named
    for HTTP or a redirect and whose status is 2xx or 3xx. A `with Session.begin()`
    block it leaves rolls back, and a plugin's `finally: session.close()` or `except
    Exception: session.rollback()` drops the writes, while the client is told the
    request succeeded: that is reported, with the fix to commit before raising it. A
    module-level `scoped_session` (Flask-SQLAlchemy's `db.session`, a worker's
    `db_session`), whose `remove()` at the end of a request or job closes it, is named
    in the fix as the program spells it: `db.session.commit()`. When that close runs in
    the framework's code, with no line of the program on the stack, the finding points
    at the program's line that added or flushed the objects, or, for changed objects,
    where the session began its transaction. An `async with` block is found in the task
    awaiting the AsyncSession's `__aexit__`, as a sync `with` block is on the stack.

    The fix names the session and the factory the program used, read from the line
    that closed it (or the assignment that made it): `with SessionLocal.begin() as
    db:` for a module-level `sessionmaker` or `async_sessionmaker`, `with
    Session(engine) as db, db.begin():` for the class, and the session's own `begin()`
    for a factory the module does not bind (`with session_factory() as db,
    db.begin():` for a parameter). Of two sessions made on one line (`with
    Session(legacy) as src, Session(target) as dst:`), it names the one that lost the
    writes. A session a teardown fetched to close it (`db = g.pop("db", None)` in a Flask
    `teardown_appcontext`) was made elsewhere: the fix is a commit after the writes, or
    `db.commit()` there when no error ended the request.

    A unit-of-work class (the repository pattern's: it has a `commit()` method) whose
    `__exit__` or `__aexit__` calls `rollback()` or `close()` whatever happened is
    reported at the `with` block over it that ended without an error and without its
    `commit()`, which the fix names (`uow.commit()`): that rollback or close discards
    the block's writes. A helper without `commit()`
    that rolls back on purpose (a dry run) is not.

    A Core `Connection` (`with engine.connect() as conn:`) that ran INSERT, UPDATE,
    DELETE or MERGE statements (also behind a `WITH`) and closes without `conn.commit()`
    is reported too: in SQLAlchemy 2.x a connection "commits as you go", and closing it
    rolls its transaction back. On PostgreSQL and SQL Server, whose DDL is
    transactional, CREATE/ALTER/DROP count too (`metadata.create_all(conn)` in a block
    that never commits: the tables are gone). `engine.begin()`, `conn.begin()` blocks,
    an explicit `conn.rollback()`, AUTOCOMMIT connections and writes to a temporary
    table the connection created (`CREATE TEMP TABLE`) are silent. So are the flushes of
    a Session on an AUTOCOMMIT connection (`create_engine(url,
    isolation_level="AUTOCOMMIT")`), which the database committed as they ran; objects
    it never flushed are still lost.

    ## Why is this bad?
    Nothing fails. Closing a session rolls its transaction back, and the pool rolls back
    every connection returned to it, so the data is silently lost: the request returns
    200, the row is not there.

    ## Known problems
    An object removed with `session.delete()` and never flushed leaves no trace SQLAlchemy
    reports through its events, so a forgotten delete is not detected. A pending object
    removed on purpose with `expunge()` before the session closes is reported. Sessions
    bound to a Connection their caller manages (the test-suite "join an external
    transaction" recipe) are skipped: committing is the caller's business. So are a
    session or connection that a pytest fixture closes (`with Session(engine) as s:
    yield s`, pytest-asyncio's `async with AsyncSession(engine) as s: yield s`, Flask's
    `with app.app_context(): yield`, a `teardown()` handed to
    `request.addfinalizer()` that calls `close_all_sessions()`): discarding the test's
    writes is how it gives the next test the same data. Nor is a close that follows, in
    its function, a commit of the same session that did not run this time (`if
    response.status_code < 400: db_session.commit()`, then `db_session.close()`): the
    program chose to drop the writes of that request. The price is that application code given
    the fixture's session, which forgets its own commit, goes unnoticed in that test. In async
    code, an `async with AsyncSession()` block left by an exception is recognised, but
    `await session.close()` in an `except` block is not (the close runs in a greenlet
    that does not see the exception being handled) and is reported.

    ## Example
    ```python
    with Session(engine) as session:
        session.add(User(name="ada"))
    # the session closed: the INSERT never happened
    ```

    Use instead:
    ```python
    with Session(engine) as session:
        session.add(User(name="ada"))
        session.commit()

    # or
    with Session(engine) as session, session.begin():
        session.add(User(name="ada"))
    ```

    ## References
    - [Session basics: committing](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    - [Framing out a begin / commit / rollback block](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#framing-out-a-begin-commit-rollback-block)
    """

    code = "SQD152"
    name = "forgotten-commit"
    pitfalls = ("P17",)
    severity = Severity.ERROR
    message = "{holder} {ended} without commit(): {lost} — {fix}"

    def on_after_transaction_end(self, end: TransactionEnd) -> None:
        record = end.record
        if not (record.writes or record.discarded or record.discarded_dirty):
            return
        if end.outcome == "rollback" and record.exit_rollback is not None:
            exit_site, block = record.exit_rollback
            ended = (
                f"rolled back by {exit_site.function} ({self.where(exit_site)}) when the "
                f"with block at {self.where(block)} ended"
            )
            self._check(record, block, ended, exit_site)
            return
        raised = record.raised_response if end.outcome == "rollback" else None
        if raised is not None:
            # `with Session.begin():` left by `raise HTTPSeeOther(url)` rolls back as for
            # an error, and the client is told the request succeeded. `async with
            # factory.begin()` rolls back in a task of its own, with no line of the program.
            site = record.rollback_site
            if site is None:
                exit_ = _async_with_exit(end.session)
                site = exit_[1] if exit_ is not None else None
            if site is None:
                return
            ended = f"rolled back at {self.where(site)} as {raised} passed through it"
            self._check(record, site, ended, session=end.session, raised=raised)
            return
        if end.outcome != "close":
            return
        raised = passing_response()
        if sys.exc_info()[1] is not None and raised is None:
            # Closed while an exception unwinds (a `with` block left by a raise, a close
            # in an except block): dropping the writes is what that error path means.
            return
        exit_close = unit_of_work_exit(1)
        if exit_close is not None:
            # A unit-of-work class's __exit__ closed it: the block that forgot its
            # commit() is the one to point at.
            exit_site, block = exit_close
            ended = (
                f"closed by {exit_site.function} ({self.where(exit_site)}) when the with "
                f"block at {self.where(block)} ended"
            )
            self._check(record, block, ended, exit_site, closed=True)
            return
        site = end.site
        if site is None:
            # AsyncSession closes itself in a shielded task, out of the caller's stack:
            # the task awaiting its __aexit__ holds the `async with` line.
            exit_ = _async_with_exit(end.session)
            if exit_ is not None:
                left_by, site = exit_
                raised = raised_response(left_by)
                if left_by is not None and raised is None:
                    return
        if site is not None:
            if closed_by_pytest_fixture(site):
                return
            if raised is not None:
                # The commit above the close did not run because the response was raised,
                # not because a condition skipped it.
                ended = f"closed at {self.where(site)} as {raised} passed through it"
                self._check(record, site, ended, session=end.session, raised=raised)
                return
            if conditional_commit_before(site):
                return
            self._check(record, site, "closed at " + self.where(site), session=end.session)
        else:
            # Closed out of any of the program's frames: point at where the writes
            # were made instead.
            added = record.discarded[0].site if record.discarded else None
            opened = record.opened[0] if record.opened else None
            self._check(record, record.flush_site or added or opened, "closed")

    def on_connection_writes_lost(self, lost: ConnectionWritesLost) -> None:
        closed_at = lost.site
        if closed_at is None:
            # An AsyncConnection closes in a shielded task of its own: the task awaiting
            # its __aexit__ holds the `async with` line, and the error that left it.
            exit_ = _async_connection_exit(lost.connection)
            if exit_ is not None:
                left_by, closed_at = exit_
                if left_by is not None:
                    return
        site = closed_at or lost.first
        if closed_at is not None and closed_by_pytest_fixture(closed_at):
            return
        ended = f"closed at {self.where(site)}" if closed_at is not None else "closed"
        awaited = site is not None and is_awaited(site)
        ddl = (
            f", {lost.ddl} of them DDL (the tables, columns or indexes they made are gone)"
            if lost.ddl
            else ""
        )
        commit, begin = (
            ("await conn.commit()", "async with") if awaited else ("conn.commit()", "with")
        )
        self.report(
            site,
            key=site.key if site is not None else id(lost.record),
            subject="Connection",
            related=[(lost.first, "written here, never committed")] if lost.first != site else [],
            hint=commit,
            details={"flushes": 0, "written": {"statement(s)": lost.writes, "ddl": lost.ddl}},
            holder="Connection",
            ended=ended,
            lost=f"its {lost.writes} write statement(s) were rolled back" + ddl,
            fix=(
                f"call `{commit}` before the block ends (a Connection commits as you go), "
                f"or use `{begin} engine.begin() as conn:`"
                + (" (`metadata.create_all(engine)` commits itself)" if lost.ddl else "")
            ),
        )

    def on_session_gc(self, record: SessionRecord) -> None:
        # What close() would have discarded is still pending: the session never closed.
        pending = list(record.pending.values())
        if pending and not record.discarded:
            record.discarded.extend(pending)
        site = record.flush_site or (pending[0].site if pending else None)
        if site is None and record.opened:
            site = record.opened[0]
        self._check(record, site, "still open at exit" if record.at_exit else "garbage-collected")

    def _check(
        self,
        record: SessionRecord,
        site: CallSite | None,
        ended: str,
        exit_site: CallSite | None = None,
        closed: bool = False,
        session: object = None,
        raised: str | None = None,
    ) -> None:
        if record.external or _skipped_by_a_caught_error(record):
            return
        lost: list[str] = []
        related: list[tuple[CallSite | None, str]] = []
        if record.writes:
            written = ", ".join(f"{count} {what}" for what, count in record.written.items())
            if EXECUTED_WRITES in record.written:
                lost.append(f"the writes ({written}) were rolled back")
                related.append((record.flush_site, "written here, never committed"))
            else:
                lost.append(f"the flushed writes ({written}) were rolled back")
                related.append((record.flush_site, "flushed here, never committed"))
        discarded: list[Added] = list(record.discarded)
        if discarded:
            entities = _counted([a.entity for a in discarded])
            lost.append(f"{len(discarded)} added object(s) ({entities}) were never inserted")
            # One entry per line: a loop adds many objects from the same one.
            by_line: dict[CallSite | None, list[str]] = {}
            for added in discarded:
                if added.site in by_line or len(by_line) < _MAX_NAMED:
                    by_line.setdefault(added.site, []).append(added.entity)
            for added_at, entities_there in by_line.items():
                what = entities_there[0] if len(entities_there) == 1 else _counted(entities_there)
                related.append((added_at, f"{what} added here"))
        began = record.opened[0] if record.opened else None
        if record.discarded_dirty:
            lost.append(f"changes to {_counted(record.discarded_dirty)} were never written")
            # Changed objects leave no line of their own: where the session began its
            # transaction is the program's code that made them (a framework's teardown
            # that closed the session is not).
            related.append((began, "the session's transaction began here"))
        if not lost:
            return
        proxy = scoped_proxy(site, record.flush_site, *(a.site for a in discarded[:1]), began)
        if proxy is not None:
            # Flask-SQLAlchemy's db.session, a worker's db_session: their remove() at the
            # end of the request or job is the close; a `with` block is not their shape.
            hint = f"{'await ' if proxy.awaited else ''}{proxy.name}.commit()"
            fix = (
                f"call `{hint}` before the request or job ends ({proxy.name} is a "
                "scoped_session: its remove() discards what was not committed)"
            )
        elif exit_site is not None:
            owner = exit_site.function.rpartition(".")[0] or "the unit of work"
            hint = _unit_of_work_commit(site, owner, exit_site.function.endswith("__aexit__"))
            does = "closes the session, which rolls back" if closed else "rolls back"
            fix = (
                f"call the unit of work's commit() before the with block ends ({owner}'s "
                f"{exit_site.function.rpartition('.')[2]} {does} what was not committed)"
            )
        else:
            asynchronous = is_async_session(record)
            awaited = "await " if asynchronous else ""
            writers = [a.site for a in discarded if a.site is not None]
            if record.writes and record.flush_site is not None:
                writers.append(record.flush_site)
            block = _begin_block(site, asynchronous, session, writers) if site is not None else None
            fetched = fetched_as(site) if block is None and site is not None else None
            if block is not None:
                begin, name = block
            elif fetched is not None:
                # Closed by a teardown that fetched it (`s = g.pop("db", None)`): the
                # code that made and wrote through it is elsewhere, with no with block.
                name = begin = fetched
            else:
                # A session the function was handed: what made it is not known here.
                # (sessionmaker.begin() makes one that commits; the Session class has
                # no such classmethod.)
                name = "session"
                begin = (
                    "async with session_factory.begin() as session:"
                    if asynchronous
                    else "with Session(engine) as session, session.begin():"
                )
            hint = f"{awaited}{name}.commit()"
            if raised is not None:
                fix = _raised_fix(raised, hint, site)
            elif fetched is not None:
                fix = (
                    "commit where the writes are made, after them, or call "
                    f"`{hint}` here before it is closed when no error ended the request"
                )
            else:
                fix = f"call `{hint}` before the session ends, or use `{begin}`"
        self.report(
            site,
            key=site.key if site is not None else id(record),
            subject="Session",
            related=[(where, text) for where, text in related if where != site],
            hint=hint,
            details={
                "flushes": record.writes,
                "written": dict(record.written),
                "discarded": [a.entity for a in discarded[:50]],
                "changed": list(record.discarded_dirty[:50]),
            },
            holder="Session",
            ended=ended,
            lost="; ".join(lost),
            fix=fix,
        )
