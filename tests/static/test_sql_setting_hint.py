"""SQD301's advice for a PostgreSQL setting built into SQL text: bind it through
set_config(), named as the setting is and as local as the SET was."""

from __future__ import annotations

import pytest

from sqla_doctor.static.rule import Invalid
from sqla_doctor.static.rules.query.sql_built_from_strings import SqlBuiltFromStrings
from sqla_doctor.static.testing import run_example

HEADER = """
from sqlalchemy import text
def scope(session, request):
    value = request.args["value"]
"""


@pytest.mark.parametrize(
    ("statement", "hint"),
    [
        (
            "SET LOCAL app.current_tenant = '{value}'",
            "`text(\"SELECT set_config('app.current_tenant', :value, true)\")` with "
            '`{"value": ...}` sets `app.current_tenant` with the value bound (true: for this '
            "transaction only)",
        ),
        (
            "SET search_path TO {value}",
            "`text(\"SELECT set_config('search_path', :value, false)\")` with "
            '`{"value": ...}` sets `search_path` with the value bound (false: for the session)',
        ),
        (
            "SET   LOCAL  TIME  ZONE '{value}'",
            "`text(\"SELECT set_config('TimeZone', :value, true)\")` with "
            '`{"value": ...}` sets `TimeZone` with the value bound (true: for this transaction '
            "only)",
        ),
        (
            "set statement_timeout = {value}",
            "`text(\"SELECT set_config('statement_timeout', :value, false)\")` with "
            '`{"value": ...}` sets `statement_timeout` with the value bound (false: for the '
            "session)",
        ),
    ],
)
def test_a_setting_is_bound_through_set_config(statement: str, hint: str) -> None:
    code = HEADER + f'    session.execute(text(f"{statement}"))\n'
    [finding] = run_example(SqlBuiltFromStrings, Invalid(code)).findings
    assert "a SET statement takes no bound parameters" in finding.message
    assert finding.fix_hint == hint


def test_a_whole_setting_is_bound_through_set_config_name_and_value() -> None:
    code = HEADER + '    session.execute(text(f"SET LOCAL {value};"))\n'
    [finding] = run_example(SqlBuiltFromStrings, Invalid(code)).findings
    assert "a SET statement takes no bound parameters" in finding.message
    assert finding.fix_hint == (
        '`text("SELECT set_config(:name, :value, true)")` with `{"name": ..., "value": ...}` '
        "binds both, the name checked against the settings allowed"
    )


def test_a_statement_that_only_starts_like_set_is_not_a_setting() -> None:
    code = HEADER + '    session.execute(text(f"SETTLE {value}"))\n'
    [finding] = run_example(SqlBuiltFromStrings, Invalid(code)).findings
    assert finding.message.endswith("bind them as parameters")


def test_a_mysql_session_variable_is_told_to_bind_its_value() -> None:
    code = HEADER + '    session.execute(text(f"SET @limit = {value}"))\n'
    [finding] = run_example(SqlBuiltFromStrings, Invalid(code)).findings
    assert finding.message.endswith("bind them as parameters")
