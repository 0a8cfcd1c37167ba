"""The demo's Alembic twins: the bad one shows the migration checks, the fixed one none."""

from __future__ import annotations

from sqla_doctor.config import Config
from sqla_doctor.demo import DEMO_ROOT
from sqla_doctor.findings import Kind
from sqla_doctor.registry import registry
from sqla_doctor.static.engine import Engine

MIGRATION_CODES = {c.code for c in registry() if c.kind is Kind.MIGRATION}


def migration_codes(twin: str) -> set[str]:
    result = Engine(Config(root=DEMO_ROOT), MIGRATION_CODES).check_paths([DEMO_ROOT / twin])
    assert not result.internal_errors
    return {f.code for f in result.findings}


def test_bad_demo_migrations_show_the_migration_pitfalls() -> None:
    assert migration_codes("bad") >= {
        "SQD601",
        "SQD603",
        "SQD605",
        "SQD606",
        "SQD607",
        "SQD608",
        "SQD609",
        "SQD610",
        "SQD611",
    }


def test_fixed_demo_migrations_are_clean() -> None:
    assert migration_codes("fixed") == set()
