"""The plugin's fixtures: query-count assertions and the test's unit of work.

Re-exported by ``pytest_plugin`` (pytest finds fixtures in the plugin module only). The
runtime, and with it SQLAlchemy, is imported when a fixture is first used.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import partial
from typing import TYPE_CHECKING, Protocol

import pytest

if TYPE_CHECKING:
    from sqla_doctor.findings import Finding
    from sqla_doctor.runtime import Tracker, UnitOfWork

__all__ = [
    "AssertNumQueries",
    "QueryCapture",
    "WatchedTest",
    "sqla_assert_max_num_queries",
    "sqla_assert_num_queries",
    "sqla_doctor_unit",
]


class WatchState:
    """A watched test: its unit of work and what was reported of it so far."""

    __slots__ = ("allow", "call_queries", "call_start", "fail_on", "reported", "tracker", "unit")

    def __init__(self, tracker: Tracker, unit: UnitOfWork, allow: Allow, fail_on: str) -> None:
        self.tracker = tracker
        self.unit = unit
        self.allow = allow
        self.fail_on = fail_on
        self.reported = 0
        # (statements, statements kept) when the test function began.
        self.call_start: tuple[int, int] | None = None
        # Statements of the test function, once it returned: what the summary adds up.
        self.call_queries = 0

    def begin_call(self) -> None:
        self.call_start = (self.unit.query_count, len(self.unit.statements))

    def end_call(self) -> None:
        start = self.call_start[0] if self.call_start else 0
        self.call_queries = self.unit.query_count - start


class Allow:
    """A marker's ``allow=[...]``: codes, names, ``CODE:pattern`` or a subject/place pattern.

    Patterns have the runtime's ``allow`` setting's meaning: they match the finding's
    subject (``User.posts``), its path or its ``path:line``.
    """

    __slots__ = ("codes", "patterns")

    def __init__(self, entries: tuple[str, ...] = ()) -> None:
        self.codes: set[str] = set()
        self.patterns: list[tuple[str | None, str]] = []
        if not entries:
            return
        from sqla_doctor.registry import registry

        checks = registry()
        for entry in entries:
            check = checks.get(entry)
            if check is not None:
                self.codes.add(check.code)
                continue
            head, sep, rest = entry.partition(":")
            named = checks.get(head) if sep else None
            if named is not None:
                self.patterns.append((named.code, rest))
            elif _RULE_LIKE.fullmatch(entry):
                raise ValueError(f"unknown rule {entry!r}: not a code or name of sqla-doctor")
            else:
                self.patterns.append((None, entry))

    def __call__(self, finding: Finding) -> bool:
        if finding.code in self.codes:
            return True
        if not self.patterns:
            return False
        from fnmatch import fnmatch, fnmatchcase

        subject = str(finding.details.get("subject", ""))
        path = finding.location.path
        place = f"{path}:{finding.location.line}"
        for code, pattern in self.patterns:
            if code is not None and code != finding.code:
                continue
            if fnmatchcase(subject, pattern) or fnmatch(path, pattern) or fnmatch(place, pattern):
                return True
        return False


# A code (SQD251) or a kebab-case name: a typo of one is an error, not a pattern.
_RULE_LIKE = re.compile(r"SQD\d+|[a-z][a-z0-9]*(-[a-z0-9]+)+", re.IGNORECASE)

state_key = pytest.StashKey[WatchState]()


class WatchedTest:
    """The ``sqla_doctor_unit`` fixture: the test's unit of work, read when asked.

    The unit begins before the test's fixtures are set up and ends after they are torn
    down. ``query_count`` and ``statements`` count from the start of the test function
    (all of the unit before it); ``findings`` that need the whole unit (an N+1 counts
    loads until the end) are complete once the test function has returned.
    """

    __slots__ = ("_node",)

    def __init__(self, node: pytest.Item) -> None:
        self._node = node

    @property
    def _state(self) -> WatchState | None:
        return self._node.stash.get(state_key, None)

    @property
    def unit(self) -> UnitOfWork | None:
        """The whole unit of work, fixtures included."""
        state = self._state
        return state.unit if state is not None else None

    @property
    def query_count(self) -> int:
        """Statements sent to the database by the test function so far."""
        state = self._state
        if state is None:
            return 0
        start = state.call_start[0] if state.call_start else 0
        return state.unit.query_count - start

    @property
    def statements(self) -> list[str]:
        """The SQL (never parameters) of the test function's statements, as far as kept."""
        state = self._state
        if state is None:
            return []
        from sqla_doctor.runtime.redact import shown_sql

        start = state.call_start[1] if state.call_start else 0
        show = state.unit.settings.runtime.show_parameters
        return [shown_sql(sql, show) for sql in state.unit.statements[start:]]

    @property
    def findings(self) -> list[Finding]:
        state = self._state
        return list(state.unit.findings) if state is not None else []


@pytest.fixture
def sqla_doctor_unit(request: pytest.FixtureRequest) -> WatchedTest:
    """This test's unit of work; requesting it watches the test even without ``--sqla-doctor``."""
    return WatchedTest(request.node)


# -- query counts -------------------------------------------------------------------------


class QueryCapture:
    """What a ``sqla_assert_num_queries`` block ran, filled in when the block ends.

    ``count`` is what the assertion compares: every statement sent to the database in the
    block, less those matching ``ignore``. ``statements`` and ``ignored`` hold their SQL
    (never parameters); ``unlisted`` counts statements whose SQL was not kept.
    """

    __slots__ = ("count", "ignored", "statements", "unlisted")

    def __init__(self) -> None:
        self.count = 0
        self.statements: list[str] = []
        self.ignored: list[str] = []
        self.unlisted = 0

    def __len__(self) -> int:
        return self.count


class AssertNumQueries(Protocol):
    def __call__(
        self, num: int, *, ignore: str | re.Pattern[str] | None = None
    ) -> AbstractContextManager[QueryCapture]: ...


@contextmanager
def _assert_num_queries(
    config: pytest.Config,
    num: int,
    *,
    exact: bool,
    ignore: str | re.Pattern[str] | None = None,
) -> Iterator[QueryCapture]:
    from sqla_doctor.runtime import track
    from sqla_doctor.runtime.redact import shown_sql
    from sqla_doctor.runtime.unit_of_work import current

    pattern = re.compile(ignore, re.IGNORECASE) if isinstance(ignore, str) else ignore
    capture = QueryCapture()
    parent = current.get()
    if parent is not None and parent.active:
        # Count inside the unit that is already watching (the test's, a request's):
        # a nested unit of its own would end at the block's end and report a session
        # that is merely still open as leaked.
        start_count, start_kept = parent.query_count, len(parent.statements)
        yield capture
        total = parent.query_count - start_count
        kept = parent.statements[start_kept : start_kept + total]
    else:
        # Collect mode, and nothing above to absorb its findings: the block is counted,
        # not judged.
        with track("sqla_assert_num_queries", mode="collect") as unit:
            yield capture
        total, kept = unit.query_count, list(unit.statements)
        parent = unit
    # The failure message lists them: literal-rendered values stay out of it.
    show = parent.settings.runtime.show_parameters
    for statement in kept:
        if pattern is not None and pattern.search(statement):
            capture.ignored.append(shown_sql(statement, show))
        else:
            capture.statements.append(shown_sql(statement, show))
    capture.unlisted = total - len(kept)
    capture.count = total - len(capture.ignored)

    failed = capture.count != num if exact else capture.count > num
    if failed:
        pytest.fail(_message(config, num, capture, exact, pattern), pytrace=False)


def _message(
    config: pytest.Config,
    num: int,
    capture: QueryCapture,
    exact: bool,
    pattern: re.Pattern[str] | None,
) -> str:
    expected = f"{num} queries" if exact else f"{num} queries or less"
    text = f"Expected to perform {expected} but {capture.count} were done"
    if capture.ignored and pattern is not None:
        text += f" (not counting {len(capture.ignored)} matching {pattern.pattern!r})"
    if verbosity(config) <= 0:
        return text + " (add -v option to show queries)"
    lines = [text, "", "Queries:", "========", ""]
    for number, statement in enumerate(capture.statements, start=1):
        lines.append(f"{number}. {_one_line(statement)}")
    if capture.unlisted:
        lines.append(f"... and {capture.unlisted} more whose SQL was not kept")
    for statement in capture.ignored:
        lines.append(f"(ignored) {_one_line(statement)}")
    return "\n".join(lines)


def verbosity(config: pytest.Config) -> int:
    """How many -v were given. Config.get_verbosity() came with pytest 8, and the plugin
    loads under any pytest a project pins (sqlalchemy-utils' and sqladmin's 7.4.4)."""
    verbose = config.getoption("verbose", 0)
    return verbose if isinstance(verbose, int) else 0


def _one_line(statement: str) -> str:
    # SQLAlchemy breaks compiled SQL before FROM, WHERE...: one statement, one line.
    return " ".join(statement.split())


@pytest.fixture
def sqla_assert_num_queries(pytestconfig: pytest.Config) -> AssertNumQueries:
    """``with sqla_assert_num_queries(3):`` fails unless the block ran exactly 3 statements."""
    return partial(_assert_num_queries, pytestconfig, exact=True)


@pytest.fixture
def sqla_assert_max_num_queries(pytestconfig: pytest.Config) -> AssertNumQueries:
    """``with sqla_assert_max_num_queries(3):`` fails if the block ran more than 3 statements."""
    return partial(_assert_num_queries, pytestconfig, exact=False)
