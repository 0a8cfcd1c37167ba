"""How sqla-doctor reads Alembic projects: discovery, revision graphs, --since, raw SQL."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers import run_cli, write_tree
from sqla_doctor.config import Config
from sqla_doctor.static.alembic import analysis, since_unknown
from sqla_doctor.static.alembic.discovery import find_script_locations
from sqla_doctor.static.alembic.project import _dialect_dir
from sqla_doctor.static.alembic.revisions import Revision, RevisionGraph
from sqla_doctor.static.alembic.sql import classify
from sqla_doctor.static.context import ProjectContext
from sqla_doctor.static.engine import Engine
from sqla_doctor.static.index import ProjectIndex

ENV = "from alembic import context\n"


def revision(rev: str, down: object, body: str = "pass") -> str:
    return (
        f"import sqlalchemy as sa\nfrom alembic import op\n\nrevision = {rev!r}\n"
        f"down_revision = {down!r}\n\n\ndef upgrade():\n    {body}\n"
    )


def locations(root: Path, *paths: Path) -> dict[str, list[str]]:
    """Script directory (relative) → its version folders (relative)."""
    found = find_script_locations(list(paths) or [root], root)
    return {
        loc.directory.resolve().relative_to(root.resolve()).as_posix(): [
            d.resolve().relative_to(root.resolve()).as_posix() for d in loc.version_dirs
        ]
        for loc in found
    }


# Discovery ---------------------------------------------------------------------------
def test_alembic_ini_with_here_and_version_locations(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "alembic.ini": """
                [alembic]
                script_location = %(here)s/db/migrations
                path_separator = space
                version_locations = %(here)s/db/migrations/versions %(here)s/plugins/versions
                sqlalchemy.url = postgresql+psycopg://app@db/app
                """,
            "db/migrations/env.py": ENV,
            "plugins/versions/p1.py": revision("p1", None),
        },
    )
    assert locations(tmp_path) == {"db/migrations": ["db/migrations/versions", "plugins/versions"]}


def test_every_ini_section_with_a_script_location_is_a_project(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "alembic.ini": """
                [alembic]
                file_template = %%(rev)s

                [core]
                script_location = app:migrations/core

                [tenant]
                script_location = app:migrations/tenant
                """,
            "src/app/__init__.py": "",
            "src/app/migrations/core/env.py": ENV,
            "src/app/migrations/tenant/env.py": ENV,
        },
    )
    assert set(locations(tmp_path)) == {"src/app/migrations/core", "src/app/migrations/tenant"}


def test_pyproject_tool_alembic(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "pyproject.toml": """
                [tool.alembic]
                script_location = "%(here)s/migrations"
                version_locations = ["%(here)s/migrations/versions", "%(here)s/more"]
                """,
            "migrations/env.py": ENV,
        },
    )
    assert locations(tmp_path) == {"migrations": ["migrations/versions", "more"]}


def test_bare_env_and_versions_tree_without_config(tmp_path: Path) -> None:
    """Flask-Migrate keeps an alembic.ini without script_location inside migrations/."""
    write_tree(
        tmp_path,
        {
            "migrations/alembic.ini": "[alembic]\n# file_template = %%(rev)s\n",
            "migrations/env.py": ENV,
            "migrations/versions/a1.py": revision("a1", None),
            "tools/env.py": "print('not alembic')\n",
        },
    )
    assert locations(tmp_path) == {"migrations": ["migrations/versions"]}


def test_a_checked_subfolder_finds_the_ini_above_it(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "alembic.ini": "[alembic]\nscript_location = migrations\n",
            "migrations/env.py": ENV,
            "migrations/versions/a1.py": revision("a1", None),
        },
    )
    assert locations(tmp_path, tmp_path / "migrations" / "versions") == {
        "migrations": ["migrations/versions"]
    }


def test_a_broken_ini_is_skipped(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {"alembic.ini": "[alembic\nscript_location = %(nope)s/x\n", "setup.cfg": "[x]\ny=1\n"},
    )
    assert locations(tmp_path) == {}


# Revision graphs -----------------------------------------------------------------------
def rev(name: str, *down: str, labels: tuple[str, ...] = ()) -> Revision:
    return Revision(Path(f"{name}.py"), f"{name}.py", name, tuple(down), labels)


def test_merges_close_branches_and_heads_follow_down_revision_only() -> None:
    graph = RevisionGraph.build(
        [rev("a"), rev("b", "a"), rev("c", "a"), rev("d", "b", "c"), rev("e", "d")]
    )
    assert [h.revision for h in graph.heads()] == ["e"]
    assert graph.descendants("b") == {"d", "e"}
    assert graph.ancestors("e") == {"a", "b", "c", "d"}


def test_missing_down_revision_marks_its_line_broken() -> None:
    graph = RevisionGraph.build([rev("a"), rev("c", "x"), rev("d", "c")])
    assert [(r.revision, m) for r, m in graph.missing_down_revisions()] == [("c", "x")]
    assert graph.broken() == {"c", "d"}


def test_cycles_and_duplicates() -> None:
    graph = RevisionGraph.build([rev("a", "c"), rev("b", "a"), rev("c", "b"), rev("a", "c")])
    assert [r.revision for r in graph.cycles()] == ["a"]
    assert len(graph.duplicates) == 1


def test_resolve_accepts_unique_prefixes_and_branch_labels() -> None:
    graph = RevisionGraph.build([rev("ae1027a6acf"), rev("b2c3d4", "ae1027a6acf", labels=("x",))])
    assert graph.resolve("ae10") == "ae1027a6acf"
    assert graph.resolve("x") == "b2c3d4"
    assert graph.resolve("a") is None  # too short to be a prefix


# --since ---------------------------------------------------------------------------
def context(root: Path, since: str | None) -> ProjectContext:
    config = Config(root=root, migrations_since=since)
    return ProjectContext(root=root, index=ProjectIndex(), config=config, paths=[root])


def linted(root: Path, since: str | None) -> list[str]:
    return sorted(m.display for m in analysis(context(root, since)).linted())


def test_since_keeps_only_descendants_of_the_revision(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "alembic.ini": "[alembic]\nscript_location = migrations\n",
            "migrations/env.py": ENV,
            "migrations/versions/a.py": revision("a1", None),
            "migrations/versions/b.py": revision("b2", "a1"),
            "migrations/versions/c.py": revision("c3", "a1"),
            "migrations/versions/d.py": revision("d4", ("b2", "c3")),
        },
    )
    assert linted(tmp_path, None) == [f"migrations/versions/{n}.py" for n in "abcd"]
    assert linted(tmp_path, "b2") == ["migrations/versions/d.py"]
    assert linted(tmp_path, "a1") == [f"migrations/versions/{n}.py" for n in "bcd"]
    assert linted(tmp_path, "d4") == []
    assert linted(tmp_path, "zz,b2") == ["migrations/versions/d.py"]
    # Unknown revisions filter nothing, and are reported.
    assert linted(tmp_path, "zz") == [f"migrations/versions/{n}.py" for n in "abcd"]
    assert analysis(context(tmp_path, "zz,b2")).since_missing == ["zz"]
    config = Config(root=tmp_path, migrations_since="zz,b2")
    assert since_unknown(config, [tmp_path]) == ["zz"]


def test_since_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_tree(
        tmp_path,
        {
            "alembic.ini": "[alembic]\nscript_location = migrations\n",
            "migrations/env.py": ENV,
            "migrations/versions/a.py": revision(
                "a1", None, 'op.create_index("ix_orders_total", "orders", ["total"])'
            ),
            "migrations/versions/b.py": revision(
                "b2", "a1", 'op.create_index("ix_orders_user_id", "orders", ["user_id"])'
            ),
        },
    )
    old_and_new = run_cli(capsys, "check", str(tmp_path), "--select", "SQD608")
    new_only = run_cli(capsys, "check", str(tmp_path), "--select", "SQD608", "--since", "a1")
    assert "versions/a.py" in old_and_new.out
    assert "versions/b.py" in old_and_new.out
    assert "versions/a.py" not in new_only.out
    assert "versions/b.py" in new_only.out


def test_an_excluded_migration_is_not_linted(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "alembic.ini": "[alembic]\nscript_location = migrations\n",
            "migrations/env.py": ENV,
            "migrations/versions/a.py": revision(
                "a1", None, 'op.create_index("ix_orders_total", "orders", ["total"])'
            ),
        },
    )
    config = Config(root=tmp_path, exclude=("migrations/versions/",))
    assert Engine(config, {"SQD608"}).check_paths([tmp_path]).findings == []


# Raw SQL -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix ON public.t (x)", [("create_index", "t")]),
        ("create unique index ix on only t using btree (lower(x))", [("create_index", "t")]),
        ('ALTER TABLE "Orders" ADD COLUMN c int NOT NULL', [("add_column", "Orders")]),
        ("ALTER TABLE t ALTER COLUMN c DROP NOT NULL", [("ddl_other", "t")]),
        (
            "ALTER TABLE t ADD CONSTRAINT k CHECK (a IS NOT NULL) NOT VALID",
            [("add_constraint", "t")],
        ),
        (
            "ALTER TABLE t RENAME COLUMN a TO b; DROP TABLE u, v",
            [
                ("rename_column", "t"),
                ("drop_table", "u"),
                ("drop_table", "v"),
            ],
        ),
        ("WITH x AS (SELECT 1) UPDATE t SET a = 1", [("dml", "t")]),
        ("-- UPDATE t SET a = 1\nSELECT 1 /* DELETE FROM t */", [("query", None)]),
        ("DO $$ BEGIN UPDATE t SET a = 1; END $$", [("unknown", None)]),
        (
            "CREATE FUNCTION f() RETURNS trigger AS $body$ ALTER TABLE t DROP x; $body$"
            " LANGUAGE sql",
            [("ddl_minor", None)],
        ),
        ("SELECT 'ALTER TABLE t ADD COLUMN c int NOT NULL'", [("query", None)]),
        ("VACUUM ANALYZE t", [("no_transaction", None)]),
    ],
)
def test_sql_is_read_token_by_token(sql: str, expected: list[tuple[str, str | None]]) -> None:
    assert [(a.kind, a.table) for a in classify(sql)] == expected


def test_not_null_inside_a_check_is_not_the_columns(tmp_path: Path) -> None:
    (action,) = classify(
        textwrap.dedent(
            """
            ALTER TABLE orders ADD COLUMN shipped_at timestamptz
                CHECK (shipped_at IS NOT NULL OR status <> 'shipped')
            """
        )
    )
    assert action.kind == "add_column"
    assert not action.not_null


@pytest.mark.parametrize(
    ("folder", "other"),
    [
        ("sqlite", True),
        ("mysql_versions", True),
        ("versions-mariadb", True),
        ("postgresql_versions", False),
        ("versions", False),
        ("mysql_to_postgresql", False),
        ("mysql_import", False),
    ],
)
def test_a_version_folder_named_for_another_database(folder: str, other: bool) -> None:
    """Its revisions never run on PostgreSQL; a folder that only mentions one may."""
    assert (_dialect_dir(folder) is not None) is other


@pytest.mark.parametrize(
    ("sql", "one_row"),
    [
        ("UPDATE bw_metadata SET version = '1.6.5' WHERE id = 1", True),
        ('DELETE FROM "settings" WHERE "id" = \'main\';', True),
        ("UPDATE orders SET currency = 'EUR' WHERE status = 'open'", False),
        ("UPDATE orders SET x = 1 WHERE id = 1 OR id = 2", False),
        ("UPDATE plugins SET type = 'core' WHERE id = 'crowdsec' AND type = 'external'", True),
        ("UPDATE t SET x = 1 WHERE id > 1 AND x IS NULL", False),
        ("UPDATE t SET x = s.x FROM (SELECT id, x FROM u) AS s WHERE t.id = s.id", False),
        ("INSERT INTO t (id) VALUES (1), (2)", True),
        ("INSERT INTO t (id) SELECT id FROM u", False),
        ("INSERT INTO t (id) VALUES ((SELECT max(id) FROM u))", False),
    ],
)
def test_a_data_change_of_one_row_by_its_key(sql: str, one_row: bool) -> None:
    """One row by its `id`, or rows the statement writes out, is no backfill; any other
    condition (or a query) may match every row."""
    (action,) = classify(sql)
    assert ("one_row" in action.extra) is one_row
