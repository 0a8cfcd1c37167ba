"""A throwaway PostgreSQL server for the whole test suite (a pytest plugin module).

Register it with ``pytest_plugins = ["tests.pgserver"]`` (or ``"pgserver"`` when ``tests/``
is on ``sys.path``). The server starts on first use, once per session, in a temporary
directory, listening on 127.0.0.1 on a free port with trust authentication, and is stopped
and deleted at the end of the session.

Fixtures:

- ``pg_server``: the :class:`PostgresServer` (``url(database, driver)``, ``create_database()``,
  ``drop_database()``, ``version``);
- ``pg_url`` / ``pg_async_url``: SQLAlchemy URLs (psycopg 3 / asyncpg) of one database
  shared by the session;
- ``pg_database``: a fresh, empty database per test (:class:`PgDatabase` with ``url`` and
  ``async_url``), dropped afterwards;
- ``pg_database_factory``: a callable making as many fresh databases as a test needs.

Tests that use any of these get the ``postgres`` marker, so ``-m "not postgres"`` works.
When no PostgreSQL binaries are found the fixtures skip, except under ``CI`` (set by
``.ci/run``) where they fail: a CI run must not pass by skipping its PostgreSQL tests.

PostgreSQL refuses to run as root, so as root ``initdb`` and ``pg_ctl`` run as the
``postgres`` user (``runuser``) on a data directory that user owns. Binaries are looked for
in ``$SQLA_DOCTOR_PG_BIN``, ``/usr/lib/postgresql/15/bin``, other versions there, then PATH.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PREFERRED_VERSION = "15"
SERVICE_USER = "postgres"
PG_FIXTURES = frozenset(
    {"pg_server", "pg_url", "pg_async_url", "pg_database", "pg_database_factory"}
)
_DRIVERS = {"psycopg": "postgresql+psycopg", "asyncpg": "postgresql+asyncpg"}


class PostgresUnavailable(Exception):
    """No PostgreSQL binaries on this machine."""


def find_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[str] = []
    if os.environ.get("SQLA_DOCTOR_PG_BIN"):
        candidates.append(os.environ["SQLA_DOCTOR_PG_BIN"])
    candidates.append(f"/usr/lib/postgresql/{PREFERRED_VERSION}/bin")
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for candidate in candidates:
        directory = Path(candidate)
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    raise PostgresUnavailable(
        "no PostgreSQL server binaries (initdb, pg_ctl) found in "
        + ", ".join(dict.fromkeys(candidates))
        + "; install them (Debian: apt-get install postgresql-15) or set SQLA_DOCTOR_PG_BIN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A PostgreSQL cluster in a temporary directory, owned by this test session."""

    bindir: Path
    base: Path
    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"
    version: str = ""
    _run_as: str | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "postgres.log"

    # Lifecycle ---------------------------------------------------------------------
    @classmethod
    def start(cls) -> PostgresServer:
        bindir = find_bindir()
        base = Path(tempfile.mkdtemp(prefix="sqla-doctor-pg-"))
        run_as = SERVICE_USER if os.geteuid() == 0 else None
        server = cls(bindir=bindir, base=base, port=free_port(), _run_as=run_as)
        if run_as is not None:
            account = pwd.getpwnam(run_as)
            os.chown(base, account.pw_uid, account.pw_gid)
            os.chmod(base, 0o700)
        try:
            server._initdb()
            server._pg_ctl_start()
        except BaseException:
            server._remove()
            raise
        server.version = server._run(["postgres", "--version"]).stdout.strip()
        return server

    def _command(self, tool: str, *args: str) -> list[str]:
        argv = [str(self.bindir / tool), *args]
        if self._run_as is not None:
            return ["runuser", "-u", self._run_as, "--", *argv]
        return argv

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        command = self._command(argv[0], *argv[1:])
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.base,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            log = self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{log}"
            )
        return result

    def _initdb(self) -> None:
        self._run(
            [
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )

    def _pg_ctl_start(self) -> None:
        # Durability is pointless for a throwaway cluster and costs seconds per test.
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.base}",
                f"-c listen_addresses={self.host}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=100",
            ]
        )
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(
                ["pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop"], check=False
            )
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    # Databases ---------------------------------------------------------------------
    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        return f"{_DRIVERS[driver]}://{self.user}@{self.host}:{self.port}/{database}"

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(statement)  # type: ignore[arg-type]

    def create_database(self, prefix: str = "test") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass(frozen=True)
class PgDatabase:
    """One database of the throwaway server."""

    name: str
    url: str
    async_url: str


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


# Fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """Start the server once per session; skip (fail under CI) without binaries."""
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as error:
        _unavailable(str(error))
        raise AssertionError("unreachable") from error
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _pg_shared_database(pg_server: PostgresServer) -> str:
    return pg_server.create_database("shared")


@pytest.fixture(scope="session")
def pg_url(pg_server: PostgresServer, _pg_shared_database: str) -> str:
    """postgresql+psycopg:// URL of a database shared by the whole session."""
    return pg_server.url(_pg_shared_database, "psycopg")


@pytest.fixture(scope="session")
def pg_async_url(pg_server: PostgresServer, _pg_shared_database: str) -> str:
    """postgresql+asyncpg:// URL of the same shared database."""
    return pg_server.url(_pg_shared_database, "asyncpg")


@pytest.fixture
def pg_database_factory(pg_server: PostgresServer) -> Iterator[Callable[[], PgDatabase]]:
    """Make fresh empty databases on demand; all are dropped after the test."""
    made: list[str] = []

    def make() -> PgDatabase:
        name = pg_server.create_database()
        made.append(name)
        return PgDatabase(name, pg_server.url(name, "psycopg"), pg_server.url(name, "asyncpg"))

    yield make
    for name in made:
        pg_server.drop_database(name)


@pytest.fixture
def pg_database(pg_database_factory: Callable[[], PgDatabase]) -> PgDatabase:
    """A fresh, empty database for this test only."""
    return pg_database_factory()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the server, so that ``-m "not postgres"`` deselects it."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & PG_FIXTURES and not item.get_closest_marker("postgres"):
            item.add_marker(pytest.mark.postgres)
