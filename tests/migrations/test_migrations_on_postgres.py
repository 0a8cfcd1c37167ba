"""Each migration check against a real PostgreSQL: the flagged pattern fails or locks, the
recipe from its docs works, and the static check tells the two apart.

Every test builds a small Alembic project, runs it with ``alembic.command.upgrade`` on a
fresh database of the suite's throwaway server, and checks the same project statically.
Lock tests stop the migration inside its transaction (see ``migration_harness.Pause``) and
read ``pg_locks`` and try writes from another connection with a short ``lock_timeout``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config as Config_
from alembic.util import CommandError
from migration_harness import PAUSE, Database, MigrationProject, Pause

from pgserver import PgDatabase
from sqla_doctor.config import Config
from sqla_doctor.registry import registry
from sqla_doctor.static.engine import Engine

pytestmark = pytest.mark.postgres

ORDERS = """
op.execute("CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL)")
op.execute(
    "CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL, total int NOT NULL,"
    " status varchar(20) NOT NULL DEFAULT 'new', note varchar(50))"
)
op.execute("INSERT INTO users (email) SELECT 'u' || g FROM generate_series(1, 50) g")
op.execute(
    "INSERT INTO orders (user_id, total) SELECT 1 + g % 50, g FROM generate_series(1, 500) g"
)
"""


def codes(root: Path) -> list[tuple[str, str, int]]:
    """(code, path, line) of every migration finding in the project at ``root``."""
    selected = {c.code for c in registry() if c.code.startswith("SQD6")}
    result = Engine(Config(root=root), selected).check_paths([root])
    assert not result.internal_errors, result.internal_errors
    return sorted((f.code, f.location.path, f.location.line) for f in result.findings)


def found(root: Path) -> set[str]:
    return {code for code, _, _ in codes(root)}


def project(
    tmp_path: Path, database: PgDatabase, name: str = "p", **options: object
) -> MigrationProject:
    root = tmp_path / name
    root.mkdir()
    migration = MigrationProject(root, database.url, **options)  # type: ignore[arg-type]
    migration.revision(ORDERS)
    return migration


# SQD601 -------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ["sync", "async"])
def test_concurrent_index_in_the_migration_transaction_fails(
    tmp_path: Path, pg_database: PgDatabase, env: str
) -> None:
    bad = project(tmp_path, pg_database, env=env)
    bad.revision(
        'op.create_index("ix_orders_status", "orders", ["status"], postgresql_concurrently=True)'
    )

    with pytest.raises(sa.exc.DBAPIError, match="cannot run inside a transaction block"):
        bad.upgrade()
    assert "SQD601" in found(bad.root)


@pytest.mark.parametrize("env", ["sync", "async"])
def test_concurrent_index_in_autocommit_block_builds_a_valid_index(
    tmp_path: Path, pg_database: PgDatabase, env: str
) -> None:
    good = project(tmp_path, pg_database, env=env, per_migration=True)
    good.revision(
        """
        with op.get_context().autocommit_block():
            op.create_index("ix_orders_status", "orders", ["status"], postgresql_concurrently=True)
        """
    )

    good.upgrade()

    database = Database(pg_database.url)
    assert (
        database.scalar(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_orders_status'::regclass"
        )
        is True
    )
    assert found(good.root) == set()


def test_committing_by_hand_before_concurrently_does_not_help(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    """The old `op.execute("COMMIT")` trick: the driver begins a new transaction at once."""
    bad = project(tmp_path, pg_database)
    bad.revision(
        """
        op.execute("COMMIT")
        op.execute("CREATE INDEX CONCURRENTLY ix_orders_total ON orders (total)")
        """
    )

    with pytest.raises(sa.exc.DBAPIError, match="cannot run inside a transaction block"):
        bad.upgrade()
    assert "SQD601" in found(bad.root)


def test_an_autocommit_connection_in_env_runs_concurrently_without_a_block(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    """Why SQD601 stays silent for env.py files that set isolation_level="AUTOCOMMIT"."""
    good = project(tmp_path, pg_database, connect="autocommit")
    good.revision(
        'op.create_index("ix_orders_total", "orders", ["total"], postgresql_concurrently=True)'
    )

    good.upgrade()

    assert Database(pg_database.url).scalar("SELECT to_regclass('ix_orders_total')::text") == (
        "ix_orders_total"
    )
    assert "SQD601" not in found(good.root)


# SQD611 -------------------------------------------------------------------------------
@pytest.mark.parametrize("env", ["sync", "async"])
def test_env_begin_makes_autocommit_block_fail(
    tmp_path: Path, pg_database: PgDatabase, env: str
) -> None:
    bad = project(tmp_path, pg_database, env=env, connect="engine.begin")
    bad.revision(
        """
        with op.get_context().autocommit_block():
            op.create_index("ix_orders_status", "orders", ["status"], postgresql_concurrently=True)
        """
    )

    with pytest.raises(AssertionError):
        bad.upgrade()
    assert "SQD611" in found(bad.root)


@pytest.mark.parametrize("env", ["sync", "async"])
def test_execute_before_configure_silently_rolls_every_migration_back(
    tmp_path: Path, pg_database: PgDatabase, env: str
) -> None:
    """`SET lock_timeout` (or an advisory lock) before configure(): upgrade "succeeds"."""
    awaited = "await " if env == "async" else ""
    bad = project(
        tmp_path,
        pg_database,
        env=env,
        before_configure=f"{awaited}connection.execute(text(\"SET lock_timeout = '5s'\"))",
    )

    bad.upgrade()  # no error ...

    database = Database(pg_database.url)
    assert database.scalar("SELECT to_regclass('orders')::text") is None  # ... and no tables
    assert "SQD611" in found(bad.root)


@pytest.mark.parametrize("env", ["sync", "async"])
def test_committing_after_the_advisory_lock_keeps_migrations_and_autocommit_working(
    tmp_path: Path, pg_database: PgDatabase, env: str
) -> None:
    awaited = "await " if env == "async" else ""
    good = project(
        tmp_path,
        pg_database,
        env=env,
        per_migration=True,
        before_configure=(
            f'{awaited}connection.execute(text("SELECT pg_advisory_lock(42)"))\n'
            f"{awaited}connection.commit()"
        ),
    )
    good.revision(
        """
        with op.get_context().autocommit_block():
            op.create_index("ix_orders_status", "orders", ["status"], postgresql_concurrently=True)
        """
    )

    good.upgrade()

    database = Database(pg_database.url)
    assert database.scalar("SELECT to_regclass('ix_orders_status')::text") == "ix_orders_status"
    assert found(good.root) == set()


# SQD605 -------------------------------------------------------------------------------
def test_not_null_column_without_default_fails_on_a_table_with_rows(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    bad = project(tmp_path, pg_database)
    bad.revision('op.add_column("orders", sa.Column("currency", sa.String(3), nullable=False))')

    with pytest.raises(sa.exc.IntegrityError, match="contains null values"):
        bad.upgrade()
    assert "SQD605" in found(bad.root)


def test_not_null_column_with_server_default_is_added_without_rewriting(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    good = project(tmp_path, pg_database)
    good.upgrade()
    database = Database(pg_database.url)
    before = database.relfilenode("orders")
    good.revision(
        'op.add_column("orders", sa.Column("currency", sa.String(3), nullable=False,'
        ' server_default="EUR"))'
    )

    good.upgrade()

    assert database.relfilenode("orders") == before  # PostgreSQL 11+: catalogue only
    assert database.scalar("SELECT count(*) FROM orders WHERE currency = 'EUR'") == 500
    assert found(good.root) == set()


def test_not_null_column_in_four_revisions_works(tmp_path: Path, pg_database: PgDatabase) -> None:
    """SQD605's long recipe, with SQD612's: nullable, backfill, validated check, NOT NULL."""
    good = project(tmp_path, pg_database, per_migration=True)
    good.revision('op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))')
    good.revision(
        """
        with op.get_context().autocommit_block():
            while op.get_bind().execute(sa.text(
                "UPDATE orders SET currency = 'EUR' WHERE id IN "
                "(SELECT id FROM orders WHERE currency IS NULL LIMIT 100)"
            )).rowcount:
                pass
        """
    )
    good.revision(
        'op.create_check_constraint("ck_currency", "orders", "currency IS NOT NULL",'
        " postgresql_not_valid=True)"
    )
    good.revision('op.execute("ALTER TABLE orders VALIDATE CONSTRAINT ck_currency")')
    good.revision(
        """
        op.alter_column("orders", "currency", existing_type=sa.String(3), nullable=False)
        op.drop_constraint("ck_currency", "orders", type_="check")
        """
    )

    good.upgrade()

    database = Database(pg_database.url)
    assert (
        database.scalar(
            "SELECT is_nullable FROM information_schema.columns "
            "WHERE table_name = 'orders' AND column_name = 'currency'"
        )
        == "NO"
    )
    assert database.scalar("SELECT count(*) FROM orders WHERE currency = 'EUR'") == 500
    assert found(good.root) == set()


# SQD612 -------------------------------------------------------------------------------
def test_set_not_null_scans_under_access_exclusive_and_fails_on_a_null(
    tmp_path: Path, pg_database: PgDatabase, pg_database_factory: Callable[[], PgDatabase]
) -> None:
    bad = project(tmp_path, pg_database)
    bad.upgrade()
    bad.revision(
        f"""
        op.alter_column("orders", "status", existing_type=sa.String(20), nullable=False)
        {PAUSE}
        """
    )
    database = Database(pg_database.url)
    with Pause(database) as pause, bad.upgrade_in_background() as migration:
        locks = database.relation_locks(pause.wait())
        assert "AccessExclusiveLock" in locks["orders"]
        assert database.try_write("SELECT count(*) FROM orders") == "blocked"
        pause.release()
        migration.finish()
    assert "SQD612" in found(bad.root)

    # A row with a NULL (old code still writing during the deploy): the ALTER fails.
    failing = project(tmp_path, pg_database_factory(), name="q")
    failing.revision(
        'op.alter_column("orders", "note", existing_type=sa.String(50), nullable=False)'
    )
    with pytest.raises(sa.exc.IntegrityError, match="contains null values"):
        failing.upgrade()
    assert "SQD612" in found(failing.root)


# SQD608 -------------------------------------------------------------------------------
def _writer_holding_a_row_lock(database: Database) -> psycopg.Connection:  # type: ignore[type-arg]
    """A transaction that wrote to orders and is still open, like any busy app."""
    connection = psycopg.connect(database.conninfo)
    connection.execute("UPDATE orders SET note = 'busy' WHERE id = 1")
    return connection


def test_plain_create_index_blocks_writes_while_it_waits_and_builds(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    bad = project(tmp_path, pg_database)
    bad.upgrade()
    bad.revision('op.create_index("ix_orders_total", "orders", ["total"])')
    database = Database(pg_database.url)
    writer = _writer_holding_a_row_lock(database)
    try:
        with bad.upgrade_in_background() as migration:
            database.wait_for(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'CREATE INDEX%'"
            )
            # Every new write now queues behind CREATE INDEX's SHARE lock request.
            assert database.try_write("INSERT INTO orders (user_id, total) VALUES (1, 1)") == (
                "blocked"
            )
            writer.rollback()
            migration.finish()
    finally:
        writer.close()
    assert "SQD608" in found(bad.root)


def test_create_index_concurrently_lets_writes_through(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    good = project(tmp_path, pg_database, per_migration=True)
    good.upgrade()
    good.revision(
        """
        with op.get_context().autocommit_block():
            op.create_index("ix_orders_total", "orders", ["total"], postgresql_concurrently=True)
        """
    )
    database = Database(pg_database.url)
    writer = _writer_holding_a_row_lock(database)
    try:
        with good.upgrade_in_background() as migration:
            # CONCURRENTLY waits for the open writer too, but holding only SHARE UPDATE
            # EXCLUSIVE, which lets other writes through.
            pid = database.wait_for(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'CREATE INDEX CONCURRENTLY%'"
            )
            assert isinstance(pid, int)
            assert database.relation_locks(pid)["orders"] == {"ShareUpdateExclusiveLock"}
            assert database.try_write("INSERT INTO orders (user_id, total) VALUES (1, 1)") == "ok"
            writer.rollback()
            migration.finish()
    finally:
        writer.close()
    assert found(good.root) == set()


# SQD606 -------------------------------------------------------------------------------
def test_foreign_key_without_not_valid_locks_both_tables(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    bad = project(tmp_path, pg_database)
    bad.upgrade()
    bad.revision(
        f"""
        op.create_foreign_key("fk_orders_user_id", "orders", "users", ["user_id"], ["id"])
        {PAUSE}
        """
    )
    database = Database(pg_database.url)
    with Pause(database) as pause, bad.upgrade_in_background() as migration:
        locks = database.relation_locks(pause.wait())
        assert "ShareRowExclusiveLock" in locks["orders"]
        assert "ShareRowExclusiveLock" in locks["users"]
        assert database.try_write("INSERT INTO users (email) VALUES ('x@example.com')") == (
            "blocked"
        )
        pause.release()
        migration.finish()
    assert "SQD606" in found(bad.root)


def test_foreign_key_not_valid_then_validate_in_its_own_revision_lets_writes_through(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    good = project(tmp_path, pg_database, per_migration=True)
    good.revision(
        'op.create_foreign_key("fk_orders_user_id", "orders", "users", ["user_id"], ["id"],'
        " postgresql_not_valid=True)"
    )
    good.upgrade()
    good.revision(
        f"""
        op.execute("ALTER TABLE orders VALIDATE CONSTRAINT fk_orders_user_id")
        {PAUSE}
        """
    )
    database = Database(pg_database.url)
    with Pause(database) as pause, good.upgrade_in_background() as migration:
        locks = database.relation_locks(pause.wait())
        # VALIDATE reads orders (AccessShare) under SHARE UPDATE EXCLUSIVE, users under ROW SHARE.
        assert "ShareUpdateExclusiveLock" in locks["orders"]
        assert "RowShareLock" in locks["users"]
        assert "ShareRowExclusiveLock" not in locks["orders"] | locks["users"]
        assert database.try_write("INSERT INTO users (email) VALUES ('x@example.com')") == "ok"
        assert database.try_write("UPDATE orders SET note = 'n' WHERE id = 2") == "ok"
        pause.release()
        migration.finish()
    assert (
        database.scalar(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'fk_orders_user_id'"
        )
        is True
    )
    assert "SQD606" not in found(good.root)


def test_validating_in_the_revision_that_added_not_valid_keeps_the_lock(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    bad = project(tmp_path, pg_database)
    bad.upgrade()
    bad.revision(
        f"""
        op.create_check_constraint("ck_total", "orders", "total > 0", postgresql_not_valid=True)
        op.execute("ALTER TABLE orders VALIDATE CONSTRAINT ck_total")
        {PAUSE}
        """
    )
    database = Database(pg_database.url)
    with Pause(database) as pause, bad.upgrade_in_background() as migration:
        locks = database.relation_locks(pause.wait())
        # ADD CONSTRAINT ... CHECK takes ACCESS EXCLUSIVE, still held after VALIDATE.
        assert "AccessExclusiveLock" in locks["orders"]
        assert database.try_write("SELECT count(*) FROM orders") == "blocked"
        pause.release()
        migration.finish()
    assert "SQD606" in found(bad.root)


def test_a_foreign_key_column_added_in_one_statement_without_a_default_is_not_scanned(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    """``op.add_column`` adds the key in an ALTER of its own, which scans the table; one
    ``ADD COLUMN ... REFERENCES`` statement without a default adds it valid unchecked
    (every row is NULL), with a default it scans."""
    database = Database(pg_database.url)
    scans = "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'orders'"
    counted: dict[str, int] = {}
    for name, statement in {
        "bare": 'op.execute("ALTER TABLE orders ADD COLUMN buyer_id int REFERENCES users (id)")',
        "filled": (
            'op.execute("ALTER TABLE orders ADD COLUMN seller_id int DEFAULT 1"'
            ' " REFERENCES users (id)")'
        ),
        "alembic": (
            'op.add_column("orders",'
            ' sa.Column("payer_id", sa.Integer(), sa.ForeignKey("users.id")))'
        ),
    }.items():
        database.execute("DROP TABLE IF EXISTS orders, users, alembic_version")
        migration = project(tmp_path, pg_database, name=name)
        migration.upgrade()
        before = database.scalar(scans)
        assert isinstance(before, int)
        migration.revision(statement)
        migration.upgrade()
        # The migration's backend reports its scans when it ends: poll for the count to settle.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and database.scalar(scans) == before:
            time.sleep(0.05)
        after = database.scalar(scans)
        assert isinstance(after, int)
        counted[name] = after - before
        assert ("SQD606" in found(migration.root)) is (counted[name] > 0), name
    assert counted == {"bare": 0, "filled": 1, "alembic": 1}


# SQD607 -------------------------------------------------------------------------------
def test_integer_to_bigint_rewrites_the_table_under_access_exclusive(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    bad = project(tmp_path, pg_database)
    bad.upgrade()
    database = Database(pg_database.url)
    before = database.relfilenode("orders")
    bad.revision(
        f"""
        op.alter_column("orders", "total", existing_type=sa.Integer(), type_=sa.BigInteger())
        {PAUSE}
        """
    )
    with Pause(database) as pause, bad.upgrade_in_background() as migration:
        locks = database.relation_locks(pause.wait())
        assert "AccessExclusiveLock" in locks["orders"]
        assert database.try_write("SELECT count(*) FROM orders") == "blocked"  # reads too
        pause.release()
        migration.finish()
    assert database.relfilenode("orders") != before  # rewritten
    assert "SQD607" in found(bad.root)


def test_widening_a_varchar_changes_only_the_catalogue(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    good = project(tmp_path, pg_database)
    good.upgrade()
    database = Database(pg_database.url)
    before = database.relfilenode("orders")
    good.revision(
        'op.alter_column("orders", "status", existing_type=sa.String(20), type_=sa.String(50))'
    )

    good.upgrade()

    assert database.relfilenode("orders") == before
    assert found(good.root) == set()


# SQD610 -------------------------------------------------------------------------------
def test_backfill_in_the_schema_migration_keeps_the_table_locked(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    bad = project(tmp_path, pg_database)
    bad.upgrade()
    bad.revision(
        f"""
        op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))
        op.execute("UPDATE orders SET currency = 'EUR'")
        {PAUSE}  # the rest of a long backfill
        """
    )
    database = Database(pg_database.url)
    with Pause(database) as pause, bad.upgrade_in_background() as migration:
        locks = database.relation_locks(pause.wait())
        assert "AccessExclusiveLock" in locks["orders"]
        assert database.try_write("SELECT count(*) FROM orders") == "blocked"
        pause.release()
        migration.finish()
    assert "SQD610" in found(bad.root)


def test_backfill_in_its_own_revision_lets_the_app_read_and_write(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    good = project(tmp_path, pg_database, per_migration=True)
    good.revision('op.add_column("orders", sa.Column("currency", sa.String(3), nullable=True))')
    good.upgrade()
    good.revision(
        f"""
        op.execute("UPDATE orders SET currency = 'EUR' WHERE id <= 250")
        {PAUSE}
        """
    )
    database = Database(pg_database.url)
    with Pause(database) as pause, good.upgrade_in_background() as migration:
        locks = database.relation_locks(pause.wait())
        assert locks["orders"] <= {"RowExclusiveLock", "AccessShareLock"}
        assert database.try_write("SELECT count(*) FROM orders") == "ok"
        assert database.try_write("UPDATE orders SET note = 'n' WHERE id = 400") == "ok"
        pause.release()
        migration.finish()
    assert "SQD610" not in found(good.root)


# SQD609 -------------------------------------------------------------------------------
MODELS = """
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    total: Mapped[int]
    note: Mapped[str | None] = mapped_column(String(50))
"""


def test_dropping_a_mapped_column_breaks_every_query_of_the_model(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    bad = project(tmp_path, pg_database)
    package = bad.root / "shop_sqd609"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(MODELS)
    bad.revision('op.drop_column("orders", "note")')

    bad.upgrade()

    sys.path.insert(0, str(bad.root))
    try:
        from shop_sqd609.models import Order  # type: ignore[import-not-found]

        engine = sa.create_engine(pg_database.url)
        with engine.connect() as connection, pytest.raises(sa.exc.ProgrammingError, match="note"):
            connection.execute(sa.select(Order)).all()
        engine.dispose()
    finally:
        sys.path.remove(str(bad.root))
        for name in [m for m in sys.modules if m.startswith("shop_sqd609")]:
            del sys.modules[name]
    assert "SQD609" in found(bad.root)

    # The expand/contract order: the model stops mapping the column first.
    (package / "models.py").write_text(
        MODELS.replace("    note: Mapped[str | None] = mapped_column(String(50))\n", "")
    )
    assert "SQD609" not in found(bad.root)


# SQD603 / SQD604 ---------------------------------------------------------------------
def test_two_heads_stop_upgrade_head_and_a_merge_fixes_it(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    migration = project(tmp_path, pg_database)
    base = migration.revisions[-1]
    migration.revision('op.add_column("orders", sa.Column("a", sa.Integer()))', down=base, rev="b2")
    migration.revision('op.add_column("orders", sa.Column("b", sa.Integer()))', down=base, rev="c3")

    with pytest.raises(CommandError, match="Multiple head revisions"):
        migration.upgrade()
    assert "SQD603" in found(migration.root)

    command.merge(migration.config(), ["b2", "c3"], message="merge heads", rev_id="d4")
    migration.upgrade()
    assert Database(pg_database.url).scalar("SELECT version_num FROM alembic_version") == "d4"
    assert found(migration.root) == set()


def test_a_missing_down_revision_stops_every_command(
    tmp_path: Path, pg_database: PgDatabase
) -> None:
    migration = project(tmp_path, pg_database)
    migration.revision("pass", down="b2f1", rev="c3")

    with pytest.warns(UserWarning, match="b2f1"), pytest.raises(KeyError):
        migration.upgrade()
    assert found(migration.root) == {"SQD604"}


# The demo ------------------------------------------------------------------------------
def _demo_config(twin: str, url: str) -> Config_:
    from sqla_doctor.demo import DEMO_ROOT

    # No ini file: the demo's logging section would reconfigure the test process's loggers.
    config = Config_()
    config.set_main_option("script_location", str(DEMO_ROOT / twin / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    return config


def test_fixed_demo_migrations_run_on_postgres(pg_database: PgDatabase) -> None:
    command.upgrade(_demo_config("fixed", pg_database.url), "head")

    database = Database(pg_database.url)
    assert database.scalar("SELECT version_num FROM alembic_version") == "6e5f708192a3"
    assert (
        database.scalar(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'fk_reviews_book_id'"
        )
        is True
    )
    assert (
        database.scalar(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_orders_user_id'::regclass"
        )
        is True
    )


def test_bad_demo_migrations_stop_on_two_heads(pg_database: PgDatabase) -> None:
    with pytest.raises(CommandError, match="Multiple head revisions"):
        command.upgrade(_demo_config("bad", pg_database.url), "head")
