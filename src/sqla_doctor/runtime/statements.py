"""A unit of work's statements as reports show them: one row per SQL, with timings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqla_doctor.runtime.redact import shown_sql

if TYPE_CHECKING:
    from sqla_doctor.runtime.unit_of_work import UnitOfWork


def statement_rows(uow: UnitOfWork) -> list[dict[str, object]]:
    """``{"sql", "count", "duration_ms"}`` per distinct statement, slowest total first.

    Only the statements the unit kept (its first ``MAX_STATEMENTS_KEPT``) are counted;
    string literals are redacted unless ``show_parameters`` is on.
    """
    show = uow.settings.runtime.show_parameters
    counts: dict[str, int] = {}
    seconds: dict[str, float] = {}
    durations = uow.durations
    for index, sql in enumerate(uow.statements):
        shown = shown_sql(sql, show)
        counts[shown] = counts.get(shown, 0) + 1
        taken = durations[index] if index < len(durations) else 0.0
        seconds[shown] = seconds.get(shown, 0.0) + taken
    order = sorted(counts, key=lambda sql: -seconds[sql])
    return [
        {"sql": sql, "count": counts[sql], "duration_ms": round(seconds[sql] * 1000, 3)}
        for sql in order
    ]
