"""The SQLAlchemy a project declares, and the 2.0-migration rules a 1.x pin turns off."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import run_cli, write_tree
from sqla_doctor.static.declared_version import DeclaredPin, pinned_below_2


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
        {"requirements.txt": "sqlalchemy\nflask-sqlalchemy==2.5.1\nsqlalchemy-utils==0.38\n"},
        {"requirements.txt": "# sqlalchemy==1.4.54\n"},
        {"pyproject.toml": '[project]\ndependencies = ["sqlalchemy[asyncio]>=2.0.30"]\n'},
        # Pinned in a lock file, allowed 2.x where the project declares it: not pinned.
        {"requirements.txt": "sqlalchemy==1.4.54\n", "requirements.in": "sqlalchemy>=1.4\n"},
        {},
    ],
)
def test_requirements_that_allow_2_or_name_no_version_are_no_pin(
    tmp_path: Path, files: dict[str, str]
) -> None:
    write_tree(tmp_path, files)
    assert pinned_below_2(tmp_path) is None


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
