"""SQD154: a Connection checked out from the pool and never closed."""

from __future__ import annotations

import linecache
import re

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite, format_stack
from sqla_doctor.runtime.detector import Checkin, Detector
from sqla_doctor.runtime.detectors.session_leak import is_awaited
from sqla_doctor.runtime.pytest_fixtures import in_pytest_fixture
from sqla_doctor.runtime.unit_of_work import CheckoutRecord

_FIX = "close it: `with {call} as {name}:` (or {name}.close() in a finally block)"
# engine.raw_connection(): a DBAPI connection no Connection wraps; closing it returns it.
_RAW_FIX = (
    "close it: `raw.close()` in a finally block, or "
    "`with contextlib.closing(engine.raw_connection()) as raw:`; its close() returns it "
    "to the pool"
)
_RAW_HINT = "with contextlib.closing(engine.raw_connection()) as raw: ..."
# An AsyncEngine's connection: checked out where the program awaited connect() (or start()).
_ASYNC_FIX = (
    "close it: `async with {call} as {name}:` (or `await {name}.close()` in a finally block)"
)
_FIXTURE_FIX = (
    "the pytest fixture hands it out and never closes it: `{hint}` closes it at the "
    "fixture's teardown, after the test"
)
# ``conn = db_engine.connect()``, ``conn = await engine.connect()``: the line that checked
# the connection out, whose call and name the fix repeats.
_CONNECTED = re.compile(
    r"^\s*(?P<name>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?)\s*(?::[^=]+)?=\s*(?:await\s+)?"
    r"(?P<call>[A-Za-z_][\w.]*\.connect\(\))\s*(?:#.*)?$"
)


# ``return engine.connect()``: a fixture (or helper) handing the connection out.
_RETURNED = re.compile(
    r"^\s*return\s+(?:await\s+)?(?P<call>[A-Za-z_][\w.]*\.connect\(\))\s*(?:#.*)?$"
)


def _connected_as(site: CallSite | None, default: tuple[str, str]) -> tuple[str, str]:
    """The call and the name of ``conn = db_engine.connect()`` (or the call of ``return
    db_engine.connect()``) at ``site``, else ``default``; read only when a finding is
    reported."""
    if site is not None:
        line = linecache.getline(site.filename, site.lineno)
        found = _CONNECTED.match(line)
        if found is not None:
            return found.group("call"), found.group("name")
        returned = _RETURNED.match(line)
        if returned is not None:
            return returned.group("call"), default[1]
    return default


class ConnectionLeak(Detector):
    """
    ## What it does
    Checks for connections taken from the pool with `engine.connect()` (or
    `engine.raw_connection()`) that are still checked out at the end of the unit of work,
    or that the garbage collector had to return to the pool. The finding points at the
    line that checked the connection out and carries the stack that led there.
    Connections a Session checked out are reported as the session's leak (SQD151).
    Under `sqla-doctor run`, a connection still checked out when the program exits is
    reported too: the leftover connection of an engine nobody closed or disposed (P19).
    A DBAPI connection from `engine.raw_connection()` is told to be closed itself
    (`raw.close()` in `finally`, or `contextlib.closing`). When the reported line
    assigns the connection (`db = warehouse.connect()`), the `with` fix repeats that
    call and name: `with warehouse.connect() as db:`. A pytest fixture that returns the
    connection (`return engine.connect()`) is told to yield it from a `with` block, which
    closes it at the fixture's teardown: `with engine.connect() as connection: yield
    connection`.

    ## Why is this bad?
    Until it is closed, a connection is unavailable to everyone else: under load the pool
    runs dry (`QueuePool limit of size 5 overflow 10 reached`). A connection returned by
    the garbage collector is returned late, at a random moment; under asyncio it cannot be
    reset safely and is dropped, and SQLAlchemy warns "The garbage collector is trying to
    clean up non-checked-in connection".

    ## Example
    ```python
    def count_users(engine):
        connection = engine.connect()
        return connection.scalar(text("SELECT count(*) FROM users"))
    ```

    Use instead:
    ```python
    def count_users(engine):
        with engine.connect() as connection:
            return connection.scalar(text("SELECT count(*) FROM users"))
    ```

    ## References
    - [Working with engines and connections](https://docs.sqlalchemy.org/en/20/core/connections.html#basic-usage)
    - [Pool: returning connections](https://docs.sqlalchemy.org/en/20/core/pooling.html)
    """

    code = "SQD154"
    name = "connection-leak"
    pitfalls = ("P06", "P19")
    severity = Severity.ERROR
    message = "connection checked out at {site} {what} — {fix}"

    def end(self) -> None:
        for record in list(self.uow.checkouts.values()):
            if not record.returned and not record.session_owned and not record.long_lived:
                self._report(record, "is still checked out at the end of the unit of work")

    def on_checkin(self, checkin: Checkin) -> None:
        record = checkin.record
        if checkin.at_exit and not record.session_owned:
            self._report(record, "was still checked out at exit (never closed)")
        elif checkin.garbage_collected and not record.session_owned:
            self._report(record, "was never closed: the garbage collector returned it to the pool")

    def _report(self, record: CheckoutRecord, what: str) -> None:
        if record.reported:
            return
        record.reported = True
        site = record.opened[0] if record.opened else None
        self.uow.note_leak(site)
        awaited = site is not None and is_awaited(site)
        # No Connection ever wrapped it (engine_connect notes the pool): the program took
        # the DBAPI connection itself, with engine.raw_connection() (or pool.connect()).
        raw = record.pool is None
        if raw:
            hint, fix = _RAW_HINT, _RAW_FIX
        elif site is not None and in_pytest_fixture(site):
            # A `with` block around a `return` would close it before the test runs: a
            # fixture closes what it hands out after a `yield`, at its teardown.
            with_ = "async with" if awaited else "with"
            call, name = _connected_as(site, ("engine.connect()", "connection"))
            hint = f"{with_} {call} as {name}: yield {name}"
            fix = _FIXTURE_FIX.format(hint=hint)
        elif awaited:
            call, name = _connected_as(site, ("engine.connect()", "conn"))
            hint = f"async with {call} as {name}: ..."
            fix = _ASYNC_FIX.format(call=call, name=name)
        else:
            call, name = _connected_as(site, ("engine.connect()", "connection"))
            hint = f"with {call} as {name}: ..."
            fix = _FIX.format(call=call, name=name)
        self.report(
            site,
            key=site.key if site is not None else id(record),
            subject="Connection",
            related=[(frame, "called from here") for frame in record.opened[1:4]],
            hint=hint,
            details={
                "stack": format_stack(record.opened, self.uow.settings.root),
                "raw_connection": raw,
            },
            site=self.where(site),
            what=what,
            fix=fix,
        )
