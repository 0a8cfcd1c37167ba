"""The database an Alembic env.py connects to when it writes the URL out itself."""

from __future__ import annotations

import ast
import textwrap

import pytest

from sqla_doctor.static.alembic.env_url import env_databases
from sqla_doctor.static.index.names import ModuleNames, NameResolver

HEAD = """
import os

from alembic import context
from sqlalchemy import create_engine, engine_from_config

config = context.config
"""


def databases(body: str) -> frozenset[str]:
    tree = ast.parse(textwrap.dedent(HEAD) + textwrap.dedent(body))
    return env_databases(tree, NameResolver(ModuleNames.collect(tree, "migrations.env", False)))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Offline and online both spelled out: one database each.
        (
            """
            URL = "sqlite:///app.db"
            def offline():
                context.configure(url=URL)
            def online():
                engine = create_engine("mysql+pymysql://app@db/app")
            """,
            {"sqlite", "mysql"},
        ),
        # set_main_option with an f-string; alembic.ini's own URL read back adds nothing.
        (
            """
            config.set_main_option("sqlalchemy.url", f"postgres://{os.environ['HOST']}/app")
            def offline():
                url = config.get_main_option("sqlalchemy.url")
                context.configure(url=url)
            """,
            {"postgresql"},
        ),
        # A URL from the environment, with a SQLite fallback: unknown.
        (
            """
            def online():
                engine = create_engine(os.environ.get("DATABASE_URL", "sqlite:///app.db"))
            """,
            set(),
        ),
        # One URL known, another not: unknown.
        (
            """
            def offline():
                context.configure(url="sqlite:///app.db")
            def online():
                engine = engine_from_config({}, url=os.environ["DATABASE_URL"])
            """,
            set(),
        ),
        # No URL of its own: alembic.ini's decides.
        (
            """
            def online():
                engine = engine_from_config(config.get_section(config.config_ini_section))
            """,
            set(),
        ),
    ],
)
def test_env_databases(body: str, expected: set[str]) -> None:
    assert databases(body) == expected
