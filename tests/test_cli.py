"""The `sqla-doctor` command: exit codes, selection, config, bad input, fix, explain, rules."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import run_cli, write_tree

MUTABLE = """
import sqlalchemy as sa
tags = sa.Column(sa.JSON, default=[])
"""


def test_clean_project_exits_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No findings: exit 0 and an explicit all-clean line."""
    write_tree(tmp_path, {"app.py": "x = 1\n"})
    result = run_cli(capsys, "check", str(tmp_path))
    assert result.code == 0
    assert "All clean: no findings in 1 file." in result.out


def test_findings_exit_one_with_path_line_col_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Findings: exit 1, `path:line:col: CODE message` and the fix."""
    write_tree(tmp_path, {"app.py": MUTABLE})
    result = run_cli(capsys, "check", str(tmp_path))
    assert result.code == 1
    assert "app.py:2:27: SQD501 [*] mutable `default=[]`" in result.out
    assert "= fix: use `default=lambda: []`" in result.out


def test_exit_zero_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"app.py": MUTABLE})
    assert run_cli(capsys, "check", "--exit-zero", str(tmp_path)).code == 0


@pytest.mark.parametrize("flag", ["--ignore", "--select"])
def test_select_and_ignore_by_code_name_and_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    """Codes, names and prefixes all select; ignoring the code silences it."""
    write_tree(tmp_path, {"app.py": MUTABLE})
    for selector in ("SQD501", "mutable-column-default", "SQD5"):
        result = run_cli(capsys, "check", flag, selector, str(tmp_path))
        assert result.code == (0 if flag == "--ignore" else 1), (selector, result)


def test_unknown_selector_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(tmp_path, {"app.py": "x = 1\n"})
    result = run_cli(capsys, "check", "--select", "SQD999", str(tmp_path))
    assert result.code == 2
    assert result.err.count("\n") == 1
    assert "unknown rule selector 'SQD999'" in result.err


def test_missing_path_is_one_line_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing path is reported in one line; the other paths are still checked; exit 2."""
    write_tree(tmp_path, {"app.py": MUTABLE})
    result = run_cli(capsys, "check", str(tmp_path / "nope.py"), str(tmp_path / "app.py"))
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        f"sqla-doctor: error: path does not exist: {tmp_path / 'nope.py'}"
    ]
    assert "SQD501" in result.out


def test_a_run_with_errors_and_no_findings_is_not_called_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_cli(capsys, "check", str(tmp_path / "nope.py"))
    assert result.code == 2
    assert "All clean" not in result.out
    assert result.out.strip() == "No findings, but 1 error reported: not everything was checked."
    sarif = run_cli(capsys, "check", "--format", "sarif", str(tmp_path / "nope.py"))
    assert json.loads(sarif.out)["runs"][0]["invocations"] == [{"executionSuccessful": False}]


def test_unparsable_and_undecodable_files_are_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A syntax error or bad bytes become SQD901 findings and the other files are checked."""
    write_tree(
        tmp_path,
        {
            "broken.py": "def f(:\n    pass\n",
            "latin.py": b"name = '\xe9t\xe9'\n",
            "nulls.py": b"x = 1\x00\n",
            "app.py": MUTABLE,
        },
    )
    result = run_cli(capsys, "check", str(tmp_path))
    assert result.code == 1
    python = "{}.{}".format(*sys.version_info[:2])
    assert f"broken.py:1:7: SQD901 cannot parse file with Python {python}: " in result.out
    assert "latin.py:1:1: SQD901 cannot decode file" in result.out
    assert "nulls.py:1:1: SQD901" in result.out
    assert "app.py:2:27: SQD501" in result.out


def test_declared_encoding_is_honoured(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(
        tmp_path, {"latin.py": "# -*- coding: latin-1 -*-\nname = 'été'\n".encode("latin-1")}
    )
    assert run_cli(capsys, "check", str(tmp_path)).code == 0


def test_broken_config_is_one_line_and_defaults_are_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(
        tmp_path,
        {"pyproject.toml": "[tool.sqla-doctor]\nselect = 3\n", "app.py": MUTABLE},
    )
    result = run_cli(capsys, "check", str(tmp_path))
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1
    assert "select must be a string or a list of strings" in result.err
    assert "SQD501" in result.out


def test_invalid_toml_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(tmp_path, {"pyproject.toml": "[tool.sqla-doctor\n", "app.py": "x = 1\n"})
    result = run_cli(capsys, "check", str(tmp_path))
    assert result.code == 2
    assert "invalid TOML" in result.err


def test_config_ignore_and_per_file_ignores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": """
                [tool.sqla-doctor]
                per-file-ignores = { "legacy/*" = ["mutable-column-default"] }
            """,
            "legacy/old.py": MUTABLE,
            "new.py": MUTABLE,
        },
    )
    result = run_cli(capsys, "check", "--format", "json", str(tmp_path))
    paths = {f["location"]["path"] for f in json.loads(result.out)["findings"]}
    assert paths == {"new.py"}


def test_exclude_gitignore_and_virtualenvs_are_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": '[tool.sqla-doctor]\nexclude = ["generated/"]\n',
            ".gitignore": "build_output/\n*.tmp.py\n!keep.tmp.py\n",
            "generated/a.py": MUTABLE,
            "build_output/b.py": MUTABLE,
            "scratch.tmp.py": MUTABLE,
            "keep.tmp.py": MUTABLE,
            "env/pyvenv.cfg": "home = /usr\n",
            "env/lib/c.py": MUTABLE,
            ".venv/lib/d.py": MUTABLE,
            "src/app.py": MUTABLE,
            # A cookiecutter template: Jinja in .py files, reported unparsable before.
            "template/{{cookiecutter.slug}}/plugin.py": "{% if x %}\nimport os\n{% endif %}\n",
            # Braces alone do not make a template folder.
            "{data}/e.py": MUTABLE,
        },
    )
    result = run_cli(capsys, "check", "--format", "json", str(tmp_path))
    paths = {f["location"]["path"] for f in json.loads(result.out)["findings"]}
    assert paths == {"src/app.py", "keep.tmp.py", "{data}/e.py"}


def test_a_dangling_symlink_is_no_file_to_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pagure keeps `hooks/files/default_hook.py -> /does/not/exist` in git; the walk reported
    it as SQD901 'cannot read file'. A symlink to a real file is still read."""
    write_tree(tmp_path, {"app.py": MUTABLE, "real/target.py": MUTABLE})
    (tmp_path / "hook.py").symlink_to("/does/not/exist")
    (tmp_path / "linked.py").symlink_to(tmp_path / "real" / "target.py")
    result = run_cli(capsys, "check", "--format", "json", str(tmp_path))
    findings = json.loads(result.out)["findings"]
    assert {(f["code"], f["location"]["path"]) for f in findings} == {
        ("SQD501", "app.py"),
        ("SQD501", "real/target.py"),
    }


def test_gitignore_escapes_brackets_and_a_reversed_range_matches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flask-Admin's .gitignore names a pytest id with escaped brackets
    (`file:test_x\\[with-SQLALiteProvider\\]`); read as a class, `[with-SQLA...]` was a
    reversed range and the whole check stopped with an internal error."""
    write_tree(
        tmp_path,
        {
            ".gitignore": (
                "/instance/file:test_x\\[with_session-SQLALiteProvider\\]\n"
                "[z-a]*.py\n"
                "gen_[0-9].py\n"
                "lit\\[1\\].py\n"
                "\\#hash.py\n"
            ),
            "app.py": MUTABLE,
            "gen_1.py": MUTABLE,
            "gen_x.py": MUTABLE,
            "lit[1].py": MUTABLE,
            "lit1.py": MUTABLE,
            "#hash.py": MUTABLE,
        },
    )
    result = run_cli(capsys, "check", "--format", "json", str(tmp_path))
    paths = {f["location"]["path"] for f in json.loads(result.out)["findings"]}
    assert paths == {"app.py", "gen_x.py", "lit1.py"}


def test_default_path_is_the_project_around_the_cwd(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tree(tmp_path, {"pyproject.toml": "[tool.sqla-doctor]\n", "pkg/app.py": MUTABLE})
    monkeypatch.chdir(tmp_path / "pkg")
    result = run_cli(capsys, "check")
    assert "pkg/app.py:2:27: SQD501" in result.out


def test_noqa_by_code_and_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(
        tmp_path,
        {
            "a.py": "import sqlalchemy as sa\nx = sa.Column(sa.JSON, default=[])  # noqa: SQD501\n",
            "b.py": "import sqlalchemy as sa\n"
            "x = sa.Column(sa.JSON, default=[])  # noqa: mutable-column-default\n",
            "c.py": "# sqla-doctor: noqa: SQD501\n"
            "import sqlalchemy as sa\nx = sa.Column(sa.JSON, default=[])\n",
        },
    )
    assert run_cli(capsys, "check", str(tmp_path)).code == 0


def test_fix_applies_safe_fixes_and_diff_shows_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(tmp_path, {"app.py": MUTABLE})
    diff = run_cli(capsys, "fix", "--diff", str(tmp_path))
    assert diff.code == 1
    assert "+tags = sa.Column(sa.JSON, default=lambda: [])" in diff.out
    assert "default=[]" in (tmp_path / "app.py").read_text()
    fixed = run_cli(capsys, "fix", str(tmp_path))
    assert fixed.code == 0
    assert (tmp_path / "app.py").read_text().endswith("default=lambda: [])\n")
    assert run_cli(capsys, "check", str(tmp_path)).code == 0


def test_fix_diff_shows_what_every_pass_of_fix_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two fixes that both add to one import line overlap: `fix` applies them in two
    passes, and `--diff` shows both without writing anything."""
    write_tree(
        tmp_path,
        {
            "pyproject.toml": "",
            "app.py": """\
from sqlalchemy import ForeignKey, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "author"
    id: Mapped[int] = mapped_column(primary_key=True)
    books: Mapped[list["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "book"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("author.id"))
    author: Mapped[Author] = relationship(back_populates="books")


def titles(session: Session) -> list[int]:
    return [len(a.books) for a in session.scalars(select(Author))]


def authors(session: Session) -> list[int]:
    return [b.author.id for b in session.scalars(select(Book))]
""",
        },
    )
    before = (tmp_path / "app.py").read_text()
    diff = run_cli(capsys, "fix", "--unsafe-fixes", "--diff", str(tmp_path))
    assert diff.code == 1
    assert "--- a/app.py" in diff.out
    assert "Would apply 2 fix(es) in 1 file(s)." in diff.out
    assert (tmp_path / "app.py").read_text() == before
    fixed = run_cli(capsys, "fix", "--unsafe-fixes", str(tmp_path))
    assert "Applied 2 fix(es)" in fixed.out
    after = (tmp_path / "app.py").read_text()
    assert "joinedload(Book.author)" in after
    assert "selectinload(Author.books)" in after
    shown = difflib.unified_diff(
        before.splitlines(True), after.splitlines(True), "a/app.py", "b/app.py"
    )
    assert diff.out.startswith("".join(shown))


def test_fix_diff_of_a_migration_shows_what_fix_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Alembic rules read the text earlier passes would have written, as the
    per-file rules do: the fix is shown once, not re-applied on every pass."""
    write_tree(
        tmp_path,
        {
            "alembic.ini": "[alembic]\nscript_location = migrations\n",
            "migrations/env.py": "from alembic import context\n",
            "migrations/versions/0001_index.py": """\
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.create_index("ix_users_email", "users", ["email"], postgresql_concurrently=True)
""",
        },
    )
    migration = tmp_path / "migrations/versions/0001_index.py"
    before = migration.read_text()
    diff = run_cli(capsys, "fix", "--unsafe-fixes", "--diff", str(tmp_path))
    assert "Would apply 1 fix(es) in 1 file(s)." in diff.out
    assert migration.read_text() == before
    run_cli(capsys, "fix", "--unsafe-fixes", str(tmp_path))
    after = migration.read_text()
    assert "autocommit_block()" in after
    shown = difflib.unified_diff(
        before.splitlines(True),
        after.splitlines(True),
        "a/migrations/versions/0001_index.py",
        "b/migrations/versions/0001_index.py",
    )
    assert diff.out.startswith("".join(shown))


def test_explain_prints_the_rule_page(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_cli(capsys, "explain", "mutable-column-default")
    assert result.code == 0
    assert result.out.startswith("# SQD501: mutable-column-default")
    assert "## Why is this bad?" in result.out
    assert run_cli(capsys, "explain", "SQD000").code == 2


def test_rules_json_lists_metadata(capsys: pytest.CaptureFixture[str]) -> None:
    rows = json.loads(run_cli(capsys, "rules", "--format", "json").out)
    row = next(r for r in rows if r["code"] == "SQD501")
    assert row == {
        "code": "SQD501",
        "name": "mutable-column-default",
        "pitfalls": ["P11"],
        "kind": "static",
        "severity": "error",
        "fix": "safe",
        "summary": row["summary"],
    }
    assert {r["kind"] for r in rows} <= {"static", "runtime", "migration"}


def test_baseline_reports_only_new_findings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tree(tmp_path, {"app.py": MUTABLE})
    baseline = tmp_path / "baseline.json"
    assert run_cli(capsys, "check", "--write-baseline", str(baseline), str(tmp_path)).code == 0
    # Moving the line does not resurrect it; a second occurrence is new.
    (tmp_path / "app.py").write_text("\n\n" + MUTABLE + "other = sa.Column(sa.JSON, default={})\n")
    result = run_cli(capsys, "check", "--baseline", str(baseline), str(tmp_path))
    assert result.code == 1
    assert "default={}" in result.out
    assert "default=[]" not in result.out


def test_console_script_runs_without_importing_the_checked_code(tmp_path: Path) -> None:
    """The checked module would write a file when imported; checking it must not."""
    marker = tmp_path / "imported"
    write_tree(tmp_path, {"evil.py": f"open({str(marker)!r}, 'w').write('x')\n" + MUTABLE})
    proc = subprocess.run(
        [sys.executable, "-m", "sqla_doctor", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert not marker.exists()


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys).code == 2


def test_diff_against_reports_only_changed_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Old findings stay quiet; a new line and a new file are reported."""
    write_tree(tmp_path, {"old.py": MUTABLE, "pyproject.toml": "[tool.sqla-doctor]\n"})

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    (tmp_path / "old.py").write_text(MUTABLE.lstrip() + "more = sa.Column(sa.JSON, default={})\n")
    write_tree(tmp_path, {"new.py": MUTABLE})
    result = run_cli(capsys, "check", "--format", "json", "--diff-against", "HEAD", str(tmp_path))
    found = {
        (f["location"]["path"], f["location"]["line"]) for f in json.loads(result.out)["findings"]
    }
    assert found == {("old.py", 3), ("new.py", 2)}
    bad = run_cli(capsys, "check", "--diff-against", "no-such-rev", str(tmp_path))
    assert bad.code == 2
    assert "--diff-against no-such-rev" in bad.err


_MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "user"
    id: Mapped[int] = mapped_column(primary_key=True)
    posts: Mapped[list["Post"]] = relationship(back_populates="author")

class Post(Base):
    __tablename__ = "post"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    author: Mapped[User] = relationship(back_populates="posts")
"""
_VIEWS = """
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import User


def report(session: Session) -> list[int]:
    users = session.scalars(select(User)).all()
    return [len(user.posts) for user in users]
"""


@pytest.mark.parametrize("marker", ["pyproject.toml", "setup.cfg", ".git/HEAD"])
def test_a_file_checked_alone_is_checked_against_the_whole_project(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    """The N+1 needs `User.posts` from models.py, which was not named: the project's
    other files feed the index, and paths read as they do from the project's top."""
    write_tree(
        tmp_path,
        {marker: "", "app/__init__.py": "", "app/models.py": _MODELS, "app/views.py": _VIEWS},
    )
    monkeypatch.chdir(tmp_path / "app")
    result = run_cli(capsys, "check", "--no-cache", "views.py")
    assert result.code == 1, result
    assert "app/views.py:9:17: SQD201" in result.out
    assert "in 1 file." in result.out


def test_files_around_a_checked_file_are_read_but_not_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Neither a finding of a file that was not named, nor its parse error, nor a
    project rule's finding located in it (SQD504 in main.py) is reported."""
    write_tree(
        tmp_path,
        {
            "pyproject.toml": "",
            "app/__init__.py": "",
            "app/models.py": _MODELS + MUTABLE,
            "app/views.py": "x = 1\n",
            "app/broken.py": "def (:\n",
            "app/main.py": (
                "from sqlalchemy import create_engine\n"
                "from app.models import Base\n"
                "Base.metadata.create_all(create_engine('sqlite://'))\n"
            ),
            "app/tags.py": (
                "from sqlalchemy.orm import Mapped, mapped_column\n"
                "from app.models import Base\n"
                "class Tag(Base):\n"
                "    __tablename__ = 'tag'\n"
                "    id: Mapped[int] = mapped_column(primary_key=True)\n"
            ),
        },
    )
    result = run_cli(capsys, "check", "--no-cache", str(tmp_path / "app" / "views.py"))
    assert (result.code, result.err) == (0, ""), result
    assert "All clean: no findings in 1 file." in result.out
    whole = run_cli(capsys, "check", "--no-cache", str(tmp_path))
    codes = {line.split()[1] for line in whole.out.splitlines() if ": SQD" in line}
    assert {"SQD501", "SQD504", "SQD901"} <= codes, whole.out


def test_a_file_outside_any_project_is_checked_on_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No pyproject.toml, setup.cfg, setup.py or .git above it: nothing else is read."""
    files = {"app/models.py": _MODELS, "app/views.py": _VIEWS, "app/bad.py": "def (:\n"}
    write_tree(tmp_path, files)
    result = run_cli(capsys, "check", "--no-cache", str(tmp_path / "app" / "views.py"))
    assert result.code == 0, result


def test_findings_on_one_line_keep_the_order_of_the_statements_under_any_hash_seed(
    tmp_path: Path,
) -> None:
    """One op.execute() adding a constraint to each of eight tables: eight findings at one
    line and column, listed as the SQL lists them, whatever the hash seed."""
    statements = ";\n".join(
        f"ALTER TABLE t{i} ADD CONSTRAINT ck_t{i}_positive CHECK (n > 0)" for i in range(8)
    )
    write_tree(
        tmp_path,
        {
            "alembic.ini": "[alembic]\nscript_location = migrations\n",
            "migrations/env.py": "",
            "migrations/versions/b2.py": (
                'from alembic import op\n\nrevision = "b2"\ndown_revision = None\n\n\n'
                f'def upgrade():\n    op.execute("""\n{statements}\n""")\n'
            ),
        },
    )
    for seed in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-m", "sqla_doctor", "check", "--no-cache", str(tmp_path)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        named = [
            line.split("check constraint ")[1].split()[0]
            for line in proc.stdout.splitlines()
            if ": SQD606 " in line
        ]
        assert named == [f"ck_t{i}_positive" for i in range(8)], proc.stdout
