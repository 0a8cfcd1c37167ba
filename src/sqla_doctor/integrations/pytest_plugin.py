"""The pytest plugin: each test one unit of work, query-count fixtures, a session summary.

Loaded through the ``pytest11`` entry point; ``-p no:sqla_doctor`` turns it off. It
costs nothing until asked: no listener is registered and SQLAlchemy is not imported
until a test is watched or a fixture is used, and ``install()`` is never called.

A test is watched when ``--sqla-doctor`` (or ``sqla_doctor = true`` in the ini file) is
given, when it carries ``@pytest.mark.sqla_doctor``, or when it requests the
``sqla_doctor_unit`` fixture. Its unit of work begins with the test function and ends
after its fixtures are torn down, so a session a fixture closes is not a leak:

- findings at or above ``--sqla-doctor-fail-on`` (default ``warning``) found by the end
  of the test function fail the test with their text;
- findings only the end of the unit can tell (a session or connection still open after
  teardown) fail it at teardown;
- ``@pytest.mark.sqla_doctor(allow=["SQD251", "n-plus-one-lazy-load", "User.posts"])``
  allows findings in one test, ``fail_on="error"`` changes its threshold;
- every finding, failing or not, is listed in the ``sqla-doctor`` section of the terminal
  summary (with pytest-xdist, the workers' findings are combined there).

Code that runs outside the test's context is not part of its unit: a thread that does
not copy the context (Starlette's ``TestClient`` runs the application in one), or a
process. Test such applications through ``httpx.ASGITransport`` in an async test, or add
the ASGI/WSGI middleware in ``raise`` mode to the application under test.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from sqla_doctor.integrations.pytest_fixtures import (
    Allow,
    WatchState,
    sqla_assert_max_num_queries,
    sqla_assert_num_queries,
    sqla_doctor_unit,
    state_key,
    verbosity,
)

if TYPE_CHECKING:
    from sqla_doctor.findings import Finding
    from sqla_doctor.integrations._unit import Units
    from sqla_doctor.runtime.unit_of_work import CheckoutRecord, SessionRecord

__all__ = [
    "sqla_assert_max_num_queries",
    "sqla_assert_num_queries",
    "sqla_doctor_unit",
]

FAIL_ON = ("info", "warning", "error", "never")
_MARKER = "sqla_doctor"
_PLUGIN_NAME = "sqla_doctor_session"
_SUMMARY_LIMIT = 10


# ####### pytest hooks #######


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sqla-doctor", "sqla-doctor: SQLAlchemy pitfalls in tests")
    group.addoption(
        "--sqla-doctor",
        action="store_true",
        dest="sqla_doctor",
        default=None,
        help="watch every test as one unit of work and fail the tests whose findings "
        "reach --sqla-doctor-fail-on (ini: sqla_doctor = true)",
    )
    group.addoption(
        "--no-sqla-doctor",
        action="store_false",
        dest="sqla_doctor",
        help="do not watch every test, whatever the ini file says",
    )
    group.addoption(
        "--sqla-doctor-fail-on",
        choices=FAIL_ON,
        dest="sqla_doctor_fail_on",
        default=None,
        help="the lowest severity that fails a test (default: warning; ini: sqla_doctor_fail_on)",
    )
    parser.addini(
        "sqla_doctor", type="bool", default=False, help="watch every test (--sqla-doctor)"
    )
    parser.addini(
        "sqla_doctor_fail_on",
        default="warning",
        help="lowest severity that fails a test: info, warning, error or never",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(allow=[...], fail_on=None): watch this test with sqla-doctor; "
        "allow findings by code, name or subject; change the severity that fails it",
    )
    enabled = config.getoption("sqla_doctor")
    if enabled is None:
        enabled = bool(config.getini("sqla_doctor"))
    fail_on = config.getoption("sqla_doctor_fail_on") or str(config.getini("sqla_doctor_fail_on"))
    if fail_on not in FAIL_ON:
        raise pytest.UsageError(
            f"sqla_doctor_fail_on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}"
        )
    config.pluginmanager.register(Doctor(config, enabled, fail_on), _PLUGIN_NAME)


class Doctor:
    """The session's state and the hooks that need it."""

    def __init__(self, config: pytest.Config, enabled: bool, fail_on: str) -> None:
        self.config = config
        self.enabled = enabled
        self.fail_on = fail_on
        self._units: Units | None = None
        # The watched test being run: fixtures of a wider scope are set up inside it.
        self._running: WatchState | None = None
        self.summary = Summary()

    # -- which tests, and how -------------------------------------------------------------

    def watched(self, item: pytest.Item) -> bool:
        return (
            self.enabled
            or item.get_closest_marker(_MARKER) is not None
            or "sqla_doctor_unit" in getattr(item, "fixturenames", ())
        )

    def options(self, item: pytest.Item) -> tuple[Allow, str]:
        allow: tuple[str, ...] = ()
        fail_on = self.fail_on
        for marker in reversed(list(item.iter_markers(_MARKER))):
            unknown = set(marker.kwargs) - {"allow", "fail_on"}
            if marker.args or unknown:
                raise ValueError(
                    "takes keyword arguments allow=[...] and fail_on=..., "
                    f"not {', '.join(map(repr, [*marker.args, *sorted(unknown)]))}"
                )
            entries = marker.kwargs.get("allow", ())
            if isinstance(entries, str):
                entries = (entries,)
            if not all(isinstance(entry, str) for entry in entries):
                raise ValueError(f"allow must be a list of strings, not {entries!r}")
            allow += tuple(entries)
            if "fail_on" in marker.kwargs:
                fail_on = marker.kwargs["fail_on"]
                if fail_on not in FAIL_ON:
                    raise ValueError(f"fail_on must be one of {', '.join(FAIL_ON)}")
        return Allow(allow), fail_on

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        if not self.watched(item):
            return (yield)
        try:
            allow, fail_on = self.options(item)
        except ValueError as error:
            problem = f"@pytest.mark.{_MARKER}: {error}"
        else:
            # Before the fixtures: pytest-asyncio sets up and tears down each async
            # fixture in a copy of the context as it is now, which must hold the unit.
            self._start(item, allow, fail_on)
            return (yield)
        pytest.fail(problem, pytrace=False)

    def _start(self, item: pytest.Item, allow: Allow, fail_on: str) -> None:
        from sqla_doctor.integrations._unit import Units
        from sqla_doctor.runtime.internal_errors import internal_error

        try:
            if self._units is None:
                # Collect: the plugin decides what fails, not the runtime's mode.
                self._units = Units("collect")
            tracker = self._units.tracker(item.nodeid)
            unit = tracker.start()
        except Exception:
            internal_error("the start of a test")
            return
        item.stash[state_key] = self._running = WatchState(tracker, unit, allow, fail_on)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        state = self._running
        if state is None or fixturedef.scope == "function":
            return (yield)
        # A module- or session-scoped fixture (a class's for setUpClass) is set up in the
        # unit of the first test that needs it and closes what it made in its teardown,
        # tests later: its sessions and connections are not that test's leaks.
        unit = state.unit
        before = unit.held_resources()
        try:
            return (yield)
        finally:
            made = unit.hand_over(before)
            if made[0] or made[1]:
                # Registered after the fixture's own teardown, so run before it: the test
                # whose teardown ends the fixture judges what it left open.
                request.addfinalizer(functools.partial(self._take_back, made))

    def _take_back(self, made: tuple[list[SessionRecord], list[CheckoutRecord]]) -> None:
        state = self._running
        if state is not None and state.unit.active:
            state.unit.take_back(*made)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, object, object]:
        state = item.stash.get(state_key, None)
        if state is None:
            return (yield)
        state.begin_call()
        try:
            result = yield
        except BaseException:
            state.end_call()
            # The test failed on its own: show the findings beside its error.
            self._checkpoint(state)
            failing = self._judge(state)
            if failing:
                item.add_report_section("call", "sqla-doctor", _describe(failing, state))
            raise
        state.end_call()
        self._checkpoint(state)
        failing = self._judge(state)
        if failing:
            pytest.fail(_failure(failing, state), pytrace=False)
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, object, object]:
        state = item.stash.get(state_key, None)
        if state is None:
            return (yield)
        try:
            result = yield
        except BaseException:
            self._end(item, state)
            raise
        failing = self._end(item, state)
        if failing:
            pytest.fail(_failure(failing, state), pytrace=False)
        return result

    def _checkpoint(self, state: WatchState) -> None:
        """Let the detectors report what the test function did, before its teardown."""
        from sqla_doctor.runtime.internal_errors import internal_error

        unit = state.unit
        try:
            with unit.lock:
                if unit.active:
                    unit.checkpoint()
        except Exception:
            internal_error("the end of a test function")

    def _end(self, item: pytest.Item, state: WatchState) -> list[Finding]:
        from sqla_doctor.runtime.internal_errors import internal_error

        del item.stash[state_key]
        self._running = None
        try:
            state.tracker.stop()
        except Exception:
            internal_error("the end of a test")
        failing = self._judge(state)
        # A test skipped or broken in its setup never ran: not one the summary counts.
        if state.call_start is not None or state.unit.findings:
            self.summary.add(item.nodeid, state)
        return failing

    def _judge(self, state: WatchState) -> list[Finding]:
        """The findings not judged yet that fail the test."""
        from sqla_doctor.findings import Severity

        findings = list(state.unit.findings)
        new, state.reported = findings[state.reported :], len(findings)
        if state.fail_on == "never":
            return []
        threshold = Severity(state.fail_on)
        return [f for f in new if f.severity >= threshold and not state.allow(f)]

    # -- the summary ----------------------------------------------------------------------

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            # A pytest-xdist worker: the controller prints the summary.
            workeroutput["sqla_doctor"] = self.summary.to_json()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output = getattr(node, "workeroutput", None) or {}
        data = output.get("sqla_doctor")
        if data:
            self.summary.merge(data)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        from sqla_doctor.runtime import config_problems

        problems = config_problems()
        if not (self.summary.watched or problems):
            return
        verbose = verbosity(self.config) > 0
        terminalreporter.section("sqla-doctor", sep="-")
        for problem in problems:
            # A typo must not switch the checks off without a word.
            terminalreporter.line(f"sqla-doctor: {problem}; used the default settings", red=True)
        for line in self.summary.lines(limit=None if verbose else _SUMMARY_LIMIT):
            terminalreporter.line(line)


class Summary:
    """Findings of the session's watched tests, in a form xdist can send between processes."""

    def __init__(self) -> None:
        self.watched = 0
        self.queries = 0
        self.allowed = 0
        # (node id, finding as runner.finding_to_dict makes it)
        self.records: list[tuple[str, dict[str, Any]]] = []

    def add(self, nodeid: str, state: WatchState) -> None:
        from sqla_doctor.runtime.runner import finding_to_dict

        self.watched += 1
        self.queries += state.call_queries
        for finding in state.unit.findings:
            if state.allow(finding):
                self.allowed += 1
            else:
                self.records.append((nodeid, finding_to_dict(finding)))

    def to_json(self) -> dict[str, Any]:
        data = {
            "watched": self.watched,
            "queries": self.queries,
            "allowed": self.allowed,
            "records": [[nodeid, record] for nodeid, record in self.records],
        }
        # Details may hold any value; what crosses to the controller must be plain data.
        loaded: dict[str, Any] = json.loads(json.dumps(data, default=str))
        return loaded

    def merge(self, data: dict[str, Any]) -> None:
        self.watched += int(data.get("watched", 0))
        self.queries += int(data.get("queries", 0))
        self.allowed += int(data.get("allowed", 0))
        self.records.extend((str(nodeid), record) for nodeid, record in data.get("records", ()))

    def lines(self, limit: int | None) -> list[str]:
        tests = len({nodeid for nodeid, _ in self.records})
        head = f"{self.watched} tests watched, {self.queries} queries: "
        if not self.records:
            head += "no findings"
        else:
            head += f"{_plural(len(self.records), 'finding')} in {_plural(tests, 'test')}"
        if self.allowed:
            head += f" ({self.allowed} allowed by markers)"
        out = [head]
        if not self.records:
            return out
        rules = Counter((record["code"], record["name"]) for _, record in self.records)
        for (code, name), count in sorted(rules.items(), key=lambda item: (-item[1], item[0])):
            out.append(f"  {count:>4}  {code} {name}")
        out.append("")
        # Stable: each test's findings stay in the order they were found.
        records = sorted(self.records, key=lambda record: record[0])
        shown = records if limit is None else records[:limit]
        previous = None
        for nodeid, record in shown:
            if nodeid != previous:
                out.append(nodeid)
                previous = nodeid
            location = record["location"]
            out.append(
                f"  {location['path']}:{location['line']}: {record['code']} {record['message']}"
            )
        if len(shown) < len(self.records):
            out.append(f"... and {len(self.records) - len(shown)} more (add -v to list them all)")
        return out


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _describe(findings: list[Finding], state: WatchState) -> str:
    from sqla_doctor.runtime.modes import line

    return "\n".join(line(finding) for finding in findings)


def _failure(findings: list[Finding], state: WatchState) -> str:
    codes = sorted({f.code for f in findings})
    allow = ", ".join(f'"{code}"' for code in codes)
    return (
        f"sqla-doctor: {_plural(len(findings), 'finding')} at or above {state.fail_on!r} "
        f"in this test:\n{_describe(findings, state)}\n"
        f"(fix it, or allow it in this test: @pytest.mark.{_MARKER}(allow=[{allow}]))"
    )
