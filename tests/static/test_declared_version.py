"""The SQLAlchemy a project declares, and the 2.0-migration rules a 1.x pin turns off."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_cli, write_tree
from sqla_doctor.static.declared_version import (
    DeclaredPin,
    declared_databases,
    declared_drivers,
    pinned_below_2,
)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"requirements.txt": "flask==3.0\nsqlalchemy==1.4.54\n"}, ("requirements.txt", 2)),
        ({"requirements.in": "sqlalchemy<2  # major upgrade\n"}, ("requirements.in", 1)),
        (
            {"pyproject.toml": '[project]\ndependencies = [\n"SQLAlchemy[asyncio]>=1.3,<2",\n]\n'},
            ("pyproject.toml", 3),
        ),
        (
            {"pyproject.toml": '[tool.poetry.dependencies]\nsqlalchemy = "^1.4"\n'},
            ("pyproject.toml", 2),
        ),
        (
            {"pyproject.toml": '[tool.poetry.dependencies]\nsqlalchemy = {version = "~1.3"}\n'},
            ("pyproject.toml", 2),
        ),
        ({"setup.cfg": "[options]\ninstall_requires =\n    SQLAlchemy~=1.4.0\n"}, ("setup.cfg", 3)),
        ({"requirements/base.txt": "sqlalchemy==1.3.24\n"}, ("requirements/base.txt", 1)),
        (
            {"requirements.txt": "pandas<2.2\n", "extras-requirements.txt": "sqlalchemy~=1.4\n"},
            ("extras-requirements.txt", 1),
        ),
        ({"dev_requirements.txt": "SQLAlchemy<2\n"}, ("dev_requirements.txt", 1)),
        # Included by the project's requirement files.
        (
            {"requirements.txt": "-r deps/base.txt\n", "deps/base.txt": "sqlalchemy==1.4.54\n"},
            ("deps/base.txt", 1),
        ),
        (
            {
                "requirements-dev.txt": "-c constraints.txt\nsqlalchemy>=1.3\n",
                "constraints.txt": "sqlalchemy<2\n",
            },
            ("constraints.txt", 1),
        ),
        (
            {
                "reqs/a.txt": "--requirement=../reqs/b.txt\n",
                "reqs/b.txt": "SQLAlchemy~=1.3\n",
                "requirements.txt": "-r reqs/a.txt\n",
            },
            ("reqs/b.txt", 1),
        ),
        # Nothing at the top names SQLAlchemy: the application's folder does.
        (
            {
                "pyproject.toml": "[tool.ruff]\n",
                "app/requirements/python3/requirements.txt": "sqlalchemy==1.3.3\n",
            },
            ("app/requirements/python3/requirements.txt", 1),
        ),
        # A lock file's pin is what runs, whatever range its .in allows.
        (
            {
                "requirements.in": "sqlalchemy>=1.3\n",
                "requirements.txt": "sqlalchemy==1.3.3 \\\n    --hash=sha256:91c5\n",
            },
            ("requirements.txt", 1),
        ),
        (
            {
                "pyproject.toml": '[project]\ndependencies = ["sqlalchemy>=1.4"]\n',
                "requirements/prod.txt": (
                    "# by the following command:\n#    pip-compile\nsqlalchemy==1.4.54\n"
                ),
            },
            ("requirements/prod.txt", 3),
        ),
        (
            {
                "pyproject.toml": '[tool.poetry.dependencies]\nsqlalchemy = ">=1.4"\n',
                "poetry.lock": (
                    '[[package]]\nname = "alembic"\nversion = "1.13.1"\n\n'
                    '[[package]]\nname = "sqlalchemy"\nversion = "1.4.52"\n'
                ),
            },
            ("poetry.lock", 6),
        ),
        # Through a package whose release holds SQLAlchemy below 2.0; SQLAlchemy's own pin
        # is the one named where there is one.
        ({"requirements.txt": "sqlmodel==0.0.8\n"}, ("requirements.txt", 1)),
        ({"requirements.txt": "sqlmodel==0.0.8\nSQLAlchemy==1.4.41\n"}, ("requirements.txt", 2)),
        (
            {"pyproject.toml": '[tool.poetry.dependencies]\nsqlmodel = "^0.0.8"\n'},
            ("pyproject.toml", 2),
        ),
        (
            {
                "setup.py": (
                    'install_requires=[\n    "Flask-SQLAlchemy==2.4.4",\n'
                    '    "SQLAlchemy>=1.3.0",\n]\n'
                )
            },
            ("setup.py", 2),
        ),
    ],
)
def test_a_pin_below_2_is_found_where_it_is_written(
    tmp_path: Path, files: dict[str, str], expected: tuple[str, int]
) -> None:
    write_tree(tmp_path, files)
    pin = pinned_below_2(tmp_path)
    assert isinstance(pin, DeclaredPin)
    assert (pin.path, pin.line) == expected


@pytest.mark.parametrize(
    "files",
    [
        {"requirements.txt": "sqlalchemy>=1.4\n"},
        {"requirements.txt": "sqlalchemy<2.1\n"},
        {"requirements.txt": "sqlalchemy\nflask-sqlalchemy==3.1.1\nsqlalchemy-utils==0.38\n"},
        {"requirements.txt": "sqlmodel==0.0.14\nfastapi-sqlmodel==0.0.1\n"},
        {"requirements.txt": "sqlmodel>=0.0.8\nflask-sqlalchemy~=2.5\nsqlalchemy>=2.0\n"},
        {"requirements.txt": "# sqlalchemy==1.4.54\n"},
        {"pyproject.toml": '[project]\ndependencies = ["sqlalchemy[asyncio]>=2.0.30"]\n'},
        # A lock file on 2.x.
        {"requirements.txt": "sqlalchemy==2.0.30\n", "requirements.in": "sqlalchemy>=1.4\n"},
        # A pin that is no lock (a test matrix's), where the project allows 2.x.
        {
            "pyproject.toml": '[project]\ndependencies = ["sqlalchemy>=1.4"]\n',
            "requirements-sqla14.txt": "sqlalchemy==1.4.54\n",
        },
        # 2.x required anywhere outranks what holds it below.
        {
            "pyproject.toml": '[project]\ndependencies = ["sqlalchemy>=2.0.30"]\n',
            "requirements/legacy.txt": "flask-sqlalchemy==2.5.1\n",
        },
        # The top names SQLAlchemy: its folders' requirement files are not read.
        {"requirements.txt": "sqlalchemy>=1.4\n", "tools/requirements.txt": "sqlalchemy==1.3.0\n"},
        # Folders that are not the project's: a demo's, a virtualenv's, a hidden one.
        {"examples/old/requirements.txt": "sqlalchemy==1.3.0\n"},
        {".tox/py/requirements.txt": "sqlalchemy==1.3.0\n"},
        {"venv/lib/requirements.txt": "sqlalchemy==1.3.0\n", "venv/pyvenv.cfg": ""},
        # Deeper than three folders below the top.
        {"a/b/c/d/requirements.txt": "sqlalchemy==1.3.0\n"},
        {},
    ],
)
def test_requirements_that_allow_2_or_name_no_version_are_no_pin(
    tmp_path: Path, files: dict[str, str]
) -> None:
    write_tree(tmp_path, files)
    assert pinned_below_2(tmp_path) is None


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"test-requirements.txt": "PyMySQL>=0.8.0  # MIT\n"}, {"mysql"}),
        ({"requirements.txt": "oslo.db[mysql]>=8.4.0 # Apache-2.0\n"}, {"mysql"}),
        (
            {
                "pyproject.toml": (
                    '[project]\ndependencies = ["sqlalchemy[postgresql_psycopg2binary]"]\n'
                )
            },
            {"postgresql"},
        ),
        ({"requirements/base.txt": "mysqlclient\nasyncpg==0.29\n"}, {"mysql", "postgresql"}),
        (
            {"requirements.txt": "-r deps/db.txt\n", "deps/db.txt": "psycopg[binary]\n"},
            {"postgresql"},
        ),
        # Nothing at the top: the application's folder.
        ({"app/requirements/python3/requirements.txt": "PyMySQL\n"}, {"mysql"}),
        # Comments, stubs, and packages named alike are no drivers.
        (
            {
                "test-requirements.txt": (
                    "# psycopg2 and PyMySQL are optional\n"
                    "types-PyMySQL\npsycopg2-stubs\nsqlalchemy[asyncio]  # not asyncpg\n"
                )
            },
            set(),
        ),
    ],
)
def test_the_databases_a_project_installs_drivers_for(
    tmp_path: Path, files: dict[str, str], expected: set[str]
) -> None:
    write_tree(tmp_path, files)
    assert declared_databases(tmp_path) == expected


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"requirements.txt": "psycopg2-binary==2.9.10\n"}, {"psycopg2"}),
        ({"requirements.txt": "-r deps/db.txt\n", "deps/db.txt": "psycopg[binary]\n"}, {"psycopg"}),
        (
            {
                "pyproject.toml": (
                    '[project]\ndependencies = ["sqlalchemy[postgresql_psycopg2binary]"]\n'
                )
            },
            {"psycopg2"},
        ),
        ({"requirements/base.txt": "PyMySQL\nasyncpg==0.29\n"}, {"pymysql", "asyncpg"}),
        ({"requirements.txt": "# psycopg2 is optional\npsycopg2-stubs\n"}, set()),
    ],
)
def test_the_drivers_a_project_installs(
    tmp_path: Path, files: dict[str, str], expected: set[str]
) -> None:
    write_tree(tmp_path, files)
    assert declared_drivers(tmp_path) == expected


def test_an_include_outside_the_project_is_not_read(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {"outside.txt": "sqlalchemy==1.4.54\n", "project/requirements.txt": "-r ../outside.txt\n"},
    )
    assert pinned_below_2(tmp_path / "project") is None


def test_includes_are_followed_three_steps_deep(tmp_path: Path) -> None:
    chain = {f"r{n}.txt": f"-r r{n + 1}.txt\n" for n in range(4)}
    write_tree(tmp_path, {**chain, "requirements.txt": "-r r1.txt\n", "r4.txt": "sqlalchemy<2\n"})
    assert pinned_below_2(tmp_path) is None
    write_tree(tmp_path, {"requirements.txt": "-r r2.txt\n"})
    pin = pinned_below_2(tmp_path)
    assert pin is not None
    assert (pin.path, pin.line) == ("r4.txt", 1)


def test_includes_that_loop_are_read_once(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {"requirements.txt": "-r base.txt\nsqlalchemy<2\n", "base.txt": "-r requirements.txt\n"},
    )
    pin = pinned_below_2(tmp_path)
    assert pin is not None
    assert (pin.path, pin.line) == ("requirements.txt", 2)


LEGACY = """
from sqlalchemy import select

def names(session, User):
    return [u.name for u in session.query(User).all()]
"""


def test_a_project_pinned_below_2_gets_no_2_0_migration_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`session.query()` is the API of the SQLAlchemy it runs on: SQD302 is off, said once
    on stderr; selected by code, it reports as usual."""
    write_tree(tmp_path, {"requirements.txt": "sqlalchemy==1.4.54\n", "app.py": LEGACY})
    quiet = run_cli(capsys, "check", "--no-cache", str(tmp_path))
    assert quiet.code == 0, quiet
    assert "SQD302" not in quiet.out
    assert quiet.err == (
        "sqla-doctor: note: requirements.txt:1 pins `sqlalchemy==1.4.54`: SQD302, SQD303 "
        "(moving to SQLAlchemy 2.0) are off; select them by code to plan the move\n"
    )
    asked = run_cli(capsys, "check", "--no-cache", "--select", "SQD302", str(tmp_path))
    assert asked.code == 1
    assert ": SQD302 " in asked.out
    assert asked.err == ""


def test_a_project_on_2_gets_the_migration_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(tmp_path, {"requirements.txt": "sqlalchemy>=2.0\n", "app.py": LEGACY})
    result = run_cli(capsys, "check", "--no-cache", str(tmp_path))
    assert result.code == 1
    assert ": SQD302 " in result.out
    assert "note" not in result.err
