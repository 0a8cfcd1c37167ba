"""SQD611: env.py runs migrations inside a transaction Alembic does not own."""

from __future__ import annotations

from collections.abc import Iterable

from sqla_doctor.findings import Finding, Related, Severity
from sqla_doctor.static.alembic.project import AlembicAnalysis, AlembicProject, MigrationFile
from sqla_doctor.static.alembic.rule import MigrationRule
from sqla_doctor.static.rule import Invalid, Valid

_INI = {"alembic.ini": "[alembic]\nscript_location = %(here)s/migrations\n"}
_HEAD = """
            from alembic import context
            from sqlalchemy import engine_from_config, pool, text

            config = context.config
            target_metadata = None
"""
_ENV_COMMITS = """
            def run_migrations_online():
                section = config.get_section(config.config_ini_section)
                connectable = engine_from_config(section, poolclass=pool.NullPool)
                with connectable.connect() as connection:
                    connection.execute(text("SET statement_timeout = '10s'"))
                    context.configure(connection=connection, target_metadata=target_metadata)
                    with context.begin_transaction():
                        context.run_migrations()
                        context.get_bind().commit()

            run_migrations_online()
"""
_PLAIN_REVISION = """
from alembic import op

revision = "a1"
down_revision = None

def upgrade():
    op.execute("UPDATE orders SET note = ''")
"""
_REVISION = """
from alembic import op

revision = "a1"
down_revision = None

def upgrade():
    with op.get_context().autocommit_block():
        op.create_index("ix_orders_user_id", "orders", ["user_id"], postgresql_concurrently=True)
"""


class EnvTransactionBlocksAutocommit(MigrationRule):
    """
    ## What it does
    Checks an Alembic `env.py` for migrations run inside a transaction that Alembic does
    not own: `with engine.begin() as connection:` (or `async with ... begin()`) around
    `context.configure()`, an explicit `connection.begin()`, and any
    `connection.execute(...)` before `context.configure()` without a `connection.commit()`
    (a `SET lock_timeout`, a `SET search_path`, or taking an advisory lock), which
    SQLAlchemy 2.x turns into an implicitly begun transaction. Also checks for a
    `pg_advisory_xact_lock` in a project whose migrations use `autocommit_block()`.

    ## Why is this bad?
    `context.configure()` looks at the connection: if a transaction is already open, Alembic
    treats it as *external*. It then begins no transaction and commits none, and
    `op.get_context().autocommit_block()` fails with `AssertionError` (`assert
    self._transaction is not None`), so `CREATE INDEX CONCURRENTLY` has no way to run.
    With an implicitly begun transaction it is worse: nothing commits it, and closing the
    connection rolls every migration back while `alembic upgrade` reports success.
    A transaction-level advisory lock is released by the commit that `autocommit_block()`
    makes, so the migrations after it run unlocked.

    ## Example
    ```python
    def run_migrations_online():
        connectable = engine_from_config(config.get_section(config.config_ini_section))
        with connectable.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(42)"))
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
    ```

    Use instead:
    ```python
    def run_migrations_online():
        connectable = engine_from_config(config.get_section(config.config_ini_section))
        with connectable.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(42)"))
            connection.commit()  # a session-level advisory lock survives the commit
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                transaction_per_migration=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    ```
    And `with connectable.connect() as connection:` rather than `connectable.begin()`:
    `context.begin_transaction()` is the transaction.

    ## References
    - [Alembic: `EnvironmentContext.begin_transaction`](https://alembic.sqlalchemy.org/en/latest/api/runtime.html#alembic.runtime.environment.EnvironmentContext.begin_transaction)
    - [Alembic: `MigrationContext.autocommit_block`](https://alembic.sqlalchemy.org/en/latest/api/runtime.html#alembic.runtime.migration.MigrationContext.autocommit_block)
    - [SQLAlchemy 2.0: library-level (autobegin) transactions](https://docs.sqlalchemy.org/en/20/core/connections.html#commit-as-you-go)
    """

    code = "SQD611"
    name = "env-transaction-blocks-autocommit"
    pitfalls = ("P12",)
    severity = Severity.ERROR
    message = "{what}"
    postgresql_only = False

    VALID = (
        # env.py commits the transaction it began once the migrations ran, and the
        # migration commits it before its autocommit_block() (pypi/warehouse).
        Valid(
            _HEAD + _ENV_COMMITS,
            path="migrations/env.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _REVISION.replace(
                    "def upgrade():\n", "def upgrade():\n    op.get_bind().commit()\n"
                ),
            },
        ),
        Valid(
            _HEAD
            + """
            def run_migrations_online():
                section = config.get_section(config.config_ini_section)
                connectable = engine_from_config(section, poolclass=pool.NullPool)
                with connectable.connect() as connection:
                    connection.execute(text("SELECT pg_advisory_lock(42)"))
                    connection.commit()
                    context.configure(connection=connection, target_metadata=target_metadata)
                    connection.execute(text("SET lock_timeout = '5s'"))
                    with context.begin_transaction():
                        context.run_migrations()

            run_migrations_online()
            """,
            path="migrations/env.py",
            files={**_INI, "migrations/versions/a1.py": _REVISION},
        ),
        # The function that runs the migrations on a connection its caller commits once
        # they ran; a helper defined (not run) before the function that configures.
        Valid(
            _HEAD
            + """
            import asyncio
            from sqlalchemy.ext.asyncio import async_engine_from_config

            def current_revision(connection):
                return connection.execute(text("SELECT version_num FROM alembic_version"))

            def do_run_migrations(connection, schema):
                connection.execute(text(f'SET search_path TO "{schema}"'))
                context.configure(connection=connection, target_metadata=target_metadata)
                with context.begin_transaction():
                    context.run_migrations()

            async def run_async_migrations():
                section = config.get_section(config.config_ini_section)
                connectable = async_engine_from_config(section)
                async with connectable.connect() as connection:
                    await connection.run_sync(do_run_migrations, "tenant")
                    await connection.commit()
                await connectable.dispose()

            asyncio.run(run_async_migrations())
            """,
            path="migrations/env.py",
            files={**_INI, "migrations/versions/a1.py": _PLAIN_REVISION},
        ),
        # The async template.
        Valid(
            _HEAD
            + """
            import asyncio
            from sqlalchemy.ext.asyncio import async_engine_from_config

            def do_run_migrations(connection):
                context.configure(connection=connection, target_metadata=target_metadata)
                with context.begin_transaction():
                    context.run_migrations()

            async def run_async_migrations():
                section = config.get_section(config.config_ini_section)
                connectable = async_engine_from_config(section)
                async with connectable.connect() as connection:
                    await connection.run_sync(do_run_migrations)
                await connectable.dispose()

            asyncio.run(run_async_migrations())
            """,
            path="migrations/env.py",
            files={**_INI, "migrations/versions/a1.py": _REVISION},
        ),
    )
    INVALID = (
        # The same, but nothing commits after the migrations ran.
        Invalid(
            _HEAD
            + """
            import asyncio
            from sqlalchemy.ext.asyncio import async_engine_from_config

            def do_run_migrations(connection, schema):
                connection.execute(text(f'SET search_path TO "{schema}"'))
                context.configure(connection=connection, target_metadata=target_metadata)
                with context.begin_transaction():
                    context.run_migrations()

            async def run_async_migrations():
                section = config.get_section(config.config_ini_section)
                connectable = async_engine_from_config(section)
                async with connectable.connect() as connection:
                    await connection.run_sync(do_run_migrations, "tenant")
                await connectable.dispose()

            asyncio.run(run_async_migrations())
            """,
            path="migrations/env.py",
            files={**_INI, "migrations/versions/a1.py": _PLAIN_REVISION},
            line=11,
        ),
        # The same env.py, but a migration enters autocommit_block() uncommitted.
        Invalid(
            _HEAD + _ENV_COMMITS,
            path="migrations/env.py",
            files={**_INI, "migrations/versions/a1.py": _REVISION},
            line=11,
        ),
        Invalid(
            _HEAD
            + """
            def run_migrations_online():
                section = config.get_section(config.config_ini_section)
                connectable = engine_from_config(section, poolclass=pool.NullPool)
                with connectable.begin() as connection:
                    context.configure(connection=connection, target_metadata=target_metadata)
                    with context.begin_transaction():
                        context.run_migrations()

            run_migrations_online()
            """,
            path="migrations/env.py",
            files={**_INI, "migrations/versions/a1.py": _REVISION},
            line=10,
            expected_message=(
                "migrations run inside `connectable.begin()`, a transaction Alembic treats as "
                "external: `autocommit_block()` fails with AssertionError "
                "(used by migrations/versions/a1.py) — use `connectable.connect()` and let "
                "`context.begin_transaction()` own the transaction"
            ),
        ),
        Invalid(
            _HEAD
            + """
            import asyncio
            from sqlalchemy.ext.asyncio import async_engine_from_config

            def do_run_migrations(connection):
                context.configure(connection=connection, target_metadata=target_metadata)
                with context.begin_transaction():
                    context.run_migrations()

            async def run_async_migrations():
                section = config.get_section(config.config_ini_section)
                connectable = async_engine_from_config(section)
                async with connectable.connect() as connection:
                    await connection.execute(text("SELECT pg_advisory_lock(42)"))
                    await connection.run_sync(do_run_migrations)
                await connectable.dispose()

            asyncio.run(run_async_migrations())
            """,
            path="migrations/env.py",
            files=_INI,
            line=19,
            expected_message=(
                "`connection.execute(text('SELECT pg_advisory_lock(42)'))` before "
                "`context.configure()` begins a transaction Alembic treats as external: it "
                "never commits it, so closing the connection rolls every migration back, and "
                "`autocommit_block()` fails — call `connection.commit()` right after taking "
                "the advisory lock (it survives the commit)"
            ),
        ),
        Invalid(
            _HEAD
            + """
            def run_migrations_online():
                section = config.get_section(config.config_ini_section)
                connectable = engine_from_config(section)
                with connectable.connect() as connection:
                    context.configure(connection=connection, target_metadata=target_metadata)
                    with context.begin_transaction():
                        context.execute("SELECT pg_advisory_xact_lock(42)")
                        context.run_migrations()

            run_migrations_online()
            """,
            path="migrations/env.py",
            files={**_INI, "migrations/versions/a1.py": _REVISION},
            line=13,
        ),
        # The multidb template begins each connection's transaction itself.
        Invalid(
            _HEAD
            + """
            def run_migrations_online():
                engine = engine_from_config(config.get_section("core"), prefix="sqlalchemy.")
                connection = engine.connect()
                transaction = connection.begin()
                try:
                    context.configure(connection=connection, target_metadata=target_metadata)
                    context.run_migrations(engine_name="core")
                    transaction.commit()
                finally:
                    connection.close()

            run_migrations_online()
            """,
            path="migrations/env.py",
            files={**_INI, "migrations/versions/a1.py": _REVISION},
            line=10,
        ),
    )

    def check_alembic_project(
        self, project: AlembicProject, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        env = project.env
        if env is None:
            return
        users = [m for m in project.files if m.uses_autocommit_block()]
        related = tuple(
            Related(m.file.ctx.location(m.file.tree), "uses autocommit_block()") for m in users[:3]
        )
        used_by = f" (used by {_names(users)})" if users else ""
        for outer in env.facts.outer:
            if outer.how == "explicit":
                if not users:
                    continue  # the multidb template's own begin(): a problem only once used
                what = (
                    f"`{_short(outer.detail)}` begins the transaction before "
                    "`context.configure()`, so Alembic treats it as external and "
                    f"`autocommit_block()` fails with AssertionError{used_by} — begin no "
                    "transaction yourself; `context.begin_transaction()` owns it"
                )
                severity = Severity.ERROR
            elif outer.how == "begin":
                what = (
                    f"migrations run inside `{outer.detail}`, a transaction Alembic treats as "
                    f"external: `autocommit_block()` fails with AssertionError{used_by} — use "
                    f"`{outer.detail.replace('.begin()', '.connect()')}` and let "
                    "`context.begin_transaction()` own the transaction"
                )
                severity = Severity.ERROR if users else Severity.WARNING
            elif outer.committed_after:
                # env.py commits the connection after the migrations: only an
                # autocommit_block() that meets the transaction uncommitted fails.
                failing = [m for m in users if m.autocommit_block_needs_alembic_transaction()]
                if not failing:
                    continue
                what = (
                    f"`{_short(outer.detail)}` before `context.configure()` begins a "
                    "transaction Alembic treats as external: `autocommit_block()` fails with "
                    f"AssertionError (used by {_names(failing)}) — call `connection.commit()` "
                    "before `context.configure()`"
                )
                severity = Severity.ERROR
            else:
                what = (
                    f"`{_short(outer.detail)}` before `context.configure()` begins a "
                    "transaction Alembic treats as external: it never commits it, so closing the "
                    "connection rolls every migration back, and `autocommit_block()` fails — "
                    + (
                        "call `connection.commit()` right after taking the advisory lock "
                        "(it survives the commit)"
                        if outer.advisory_lock
                        else "call `connection.commit()` before `context.configure()`"
                    )
                )
                severity = Severity.ERROR
            yield self.at(env.file, outer.node, what=what, related=related, severity=severity)
        if users:
            for node in env.facts.xact_locks:
                yield self.at(
                    env.file,
                    node,
                    what=(
                        "`pg_advisory_xact_lock` is released by the commit that "
                        f"`autocommit_block()` makes{used_by}: the migrations after it run "
                        "unlocked — take a session-level `pg_advisory_lock` on the connection "
                        "before `context.configure()` and commit"
                    ),
                    related=related,
                    severity=Severity.WARNING,
                )

    def check_migration(
        self, migration: MigrationFile, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        return ()


def _names(files: list[MigrationFile]) -> str:
    shown = ", ".join(m.display for m in files[:2])
    return shown + (f" and {len(files) - 2} more" if len(files) > 2 else "")


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 70 else text[:67] + "..."
