"""Run real Alembic migrations against the throwaway PostgreSQL, and watch their locks.

:class:`MigrationProject` writes a small Alembic project (env.py and revisions) to a
temporary folder and runs ``alembic.command.upgrade`` on it. :class:`Pause` lets a test stop
a migration half way: the revision runs ``PAUSE`` (waiting for an advisory lock the test
holds) while its transaction still holds every lock taken so far, so the test can read
``pg_locks`` and try writes from another connection with a short ``lock_timeout``.
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config

PAUSE_KEY = 861_442
PAUSE = f'op.execute("SELECT pg_advisory_lock({PAUSE_KEY})")'

SYNC_ENV = """
from alembic import context
from sqlalchemy import engine_from_config, pool, text

config = context.config
target_metadata = None


def run_migrations_online():
    connectable = engine_from_config(
        config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    {connect}
        {before_configure}
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration={per_migration},
        )
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
"""

ASYNC_ENV = """
import asyncio

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import async_engine_from_config

config = context.config
target_metadata = None


def do_run_migrations(connection):
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        transaction_per_migration={per_migration},
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations():
    connectable = async_engine_from_config(
        config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    {connect}
        {before_configure}
        await connection.run_sync(do_run_migrations)
    await connectable.dispose()


asyncio.run(run_async_migrations())
"""


MAKO = '''"""${message}"""
from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade():
    ${upgrades if upgrades else "pass"}


def downgrade():
    ${downgrades if downgrades else "pass"}
'''


def conninfo(url: str) -> str:
    """A SQLAlchemy URL as a libpq connection string."""
    return url.replace("postgresql+psycopg://", "postgresql://").replace(
        "postgresql+asyncpg://", "postgresql://"
    )


@dataclass
class MigrationProject:
    """An Alembic project in a folder, run with ``alembic.command`` against ``url``."""

    root: Path
    url: str
    env: str = "sync"
    connect: str = "begin_transaction"  # or "engine.begin", "autocommit"
    before_configure: str = "pass"
    per_migration: bool = False
    revisions: list[str] = field(default_factory=list)

    def revision(
        self,
        upgrade: str,
        downgrade: str = "pass",
        down: str | tuple[str, ...] | bool | None = True,
        rev: str | None = None,
        header: str = "",
    ) -> str:
        """Add a revision after the last one (``down=True``) and return its id."""
        rev = rev or f"r{len(self.revisions) + 1:03d}"
        if down is True:
            down = self.revisions[-1] if self.revisions else None
        body = (
            "import sqlalchemy as sa\nfrom alembic import op\n"
            f"{header}\n"
            f"revision = {rev!r}\ndown_revision = {down!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{textwrap.indent(textwrap.dedent(upgrade).strip(), '    ')}\n\n\n"
            f"def downgrade():\n{textwrap.indent(textwrap.dedent(downgrade).strip(), '    ')}\n"
        )
        versions = self.root / "migrations" / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        (versions / f"{rev}.py").write_text(body, encoding="utf-8")
        self.revisions.append(rev)
        return rev

    def write_env(self) -> None:
        template = ASYNC_ENV if self.env == "async" else SYNC_ENV
        prefix = "async " if self.env == "async" else ""
        if self.connect == "engine.begin":
            connect = f"{prefix}with connectable.begin() as connection:"
        elif self.connect == "autocommit":
            connect = (
                f"{prefix}with connectable.connect()"
                '.execution_options(isolation_level="AUTOCOMMIT") as connection:'
            )
        else:
            connect = f"{prefix}with connectable.connect() as connection:"
        text = template.format(
            connect=connect,
            before_configure=textwrap.indent(
                textwrap.dedent(self.before_configure).strip(), "        "
            ).strip(),
            per_migration=self.per_migration,
        )
        path = self.root / "migrations" / "env.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        (path.parent / "script.py.mako").write_text(MAKO, encoding="utf-8")
        ini = (
            "[alembic]\nscript_location = %(here)s/migrations\npath_separator = os\n"
            f"sqlalchemy.url = {self.alembic_url}\n"
        )
        (self.root / "alembic.ini").write_text(ini, encoding="utf-8")

    @property
    def alembic_url(self) -> str:
        if self.env == "async":
            return self.url.replace("postgresql+psycopg://", "postgresql+asyncpg://")
        return self.url

    def config(self) -> Config:
        self.write_env()
        config = Config(str(self.root / "alembic.ini"))
        config.set_main_option("sqlalchemy.url", self.alembic_url)
        return config

    def upgrade(self, target: str = "head") -> None:
        command.upgrade(self.config(), target)

    @contextmanager
    def upgrade_in_background(self, target: str = "head") -> Iterator[Background]:
        background = Background(self, target)
        background.start()
        # The test calls finish(); after a failed assertion the thread (a daemon) is left
        # waiting on the pause, which the enclosing Pause releases.
        yield background


class Background(threading.Thread):
    """``alembic upgrade`` in a thread, its exception kept for the test."""

    def __init__(self, project: MigrationProject, target: str) -> None:
        super().__init__(daemon=True)
        self.project = project
        self.target = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.project.upgrade(self.target)
        except BaseException as error:  # reported by finish()
            self.error = error

    def finish(self, timeout: float = 60) -> None:
        self.join(timeout)
        assert not self.is_alive(), "the migration did not finish"
        if self.error is not None:
            raise self.error


class Database:
    """Plain psycopg connections to a test database, for setup, probes and pg_locks."""

    def __init__(self, url: str) -> None:
        self.conninfo = conninfo(url)

    def execute(self, *statements: str) -> None:
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            for statement in statements:
                connection.execute(statement)  # type: ignore[arg-type]

    def scalar(self, statement: str) -> object:
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            row = connection.execute(statement).fetchone()  # type: ignore[arg-type]
            return None if row is None else row[0]

    def try_write(self, statement: str, lock_timeout_ms: int = 400) -> str:
        """'ok' when the statement runs, 'blocked' when it waits past ``lock_timeout``."""
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            connection.execute(f"SET lock_timeout = '{lock_timeout_ms}ms'")  # type: ignore[arg-type]
            try:
                connection.execute(statement)  # type: ignore[arg-type]
            except psycopg.errors.LockNotAvailable:
                return "blocked"
            return "ok"

    def relation_locks(self, pid: int) -> dict[str, set[str]]:
        """Table name → lock modes held (granted) by backend ``pid``."""
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            rows = connection.execute(
                "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE l.pid = %s AND l.granted AND l.locktype = 'relation' AND c.relkind = 'r'",
                (pid,),
            ).fetchall()
        locks: dict[str, set[str]] = {}
        for name, mode in rows:
            locks.setdefault(name, set()).add(mode)
        return locks

    def relfilenode(self, table: str) -> int:
        value = self.scalar(f"SELECT relfilenode FROM pg_class WHERE relname = '{table}'")
        assert isinstance(value, int)
        return value

    def wait_for(self, query: str, timeout: float = 20) -> object:
        """Poll ``query`` until it returns a row; its first column."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.scalar(query)
            if value is not None:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for: {query}")


class Pause:
    """Holds the advisory lock that ``PAUSE`` in a revision waits for."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.connection = psycopg.connect(database.conninfo, autocommit=True)
        self.connection.execute(f"SELECT pg_advisory_lock({PAUSE_KEY})")  # type: ignore[arg-type]

    def wait(self) -> int:
        """The pid of the migration once it waits at ``PAUSE``."""
        pid = self.database.wait_for(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            f"AND objid = {PAUSE_KEY}"
        )
        assert isinstance(pid, int)
        return pid

    def release(self) -> None:
        if not self.connection.closed:
            self.connection.execute(f"SELECT pg_advisory_unlock({PAUSE_KEY})")  # type: ignore[arg-type]
            self.connection.close()

    def __enter__(self) -> Pause:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
