"""`sqla-doctor check` and `fix` read a project; they never import or run any of it.

A project where every file Python, pytest, setuptools, Alembic or the interpreter's start-up
would execute does something visible when executed: it creates a marker file and connects
to a socket the test listens on. The real CLI runs in a subprocess from inside the project
(the way a developer runs it), as the console script and as ``python -m sqla_doctor``, with
worker processes and without. Afterwards no marker exists and no connection was attempted:
``accept()`` on the listening socket times out.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest


def payload(marker_dir: Path, port: int, name: str) -> str:
    """Module-level code that leaves ``marker_dir/name`` and phones home."""
    return textwrap.dedent(
        f"""\
        import pathlib as _pathlib, socket as _socket
        _pathlib.Path({str(marker_dir)!r}, {name!r}).touch()
        try:
            _socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
        except OSError:
            pass
        """
    )


MODELS = """
from sqlalchemy import JSON, Column, ForeignKey, Integer
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    tags = Column(JSON, default=[])
    posts: Mapped[list["Post"]] = relationship()


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
"""

ENV_PY = """
from alembic import context
from pkg.models import Base

target_metadata = Base.metadata
context.configure(url="sqlite://", target_metadata=target_metadata)
with context.begin_transaction():
    context.run_migrations()
"""

REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade():
    op.create_index("ix_users_tags", "users", ["tags"])
"""


def hostile_project(root: Path, marker_dir: Path, port: int) -> None:

    def code(name: str) -> str:
        return payload(marker_dir, port, name)

    files = {
        "pkg/__init__.py": code("package-init"),
        "pkg/models.py": code("module-level") + MODELS,
        "pkg/__main__.py": code("dunder-main"),
        "conftest.py": code("conftest") + "import pytest\n",
        "tests/conftest.py": code("tests-conftest"),
        "setup.py": code("setup-py") + "from setuptools import setup\nsetup(name='evil')\n",
        "noxfile.py": code("noxfile"),
        "migrations/env.py": code("alembic-env") + ENV_PY,
        "migrations/versions/0001_index.py": code("alembic-revision") + REVISION,
        "sitecustomize.py": code("sitecustomize"),
        "usercustomize.py": code("usercustomize"),
        # Shadows of what the tool itself imports, for runs with the project on sys.path.
        "sqlalchemy/__init__.py": code("shadow-sqlalchemy"),
        "tomllib.py": code("shadow-tomllib"),
        "json.py": code("shadow-json"),
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    # A .pth file runs its `import` lines when `site` processes the folder it is in.
    (root / "evil.pth").write_text(
        "import pathlib; pathlib.Path(" + repr(str(marker_dir)) + ", 'pth').touch()\n",
        encoding="utf-8",
    )
    (root / "alembic.ini").write_text(
        "[alembic]\nscript_location = migrations\nsqlalchemy.url = sqlite://\n", encoding="utf-8"
    )
    # Hostile values in a valid config: strings that are code, which must stay strings.
    evil = f"__import__('pathlib').Path({str(marker_dir)!r}, 'config').touch()"
    (root / "pyproject.toml").write_text(
        "[build-system]\nrequires = ['setuptools']\nbuild-backend = 'evil_backend'\n\n"
        "[tool.sqla-doctor]\n"
        f"extend-exclude = [{evil!r}]\n"
        f"per-file-ignores = {{ {evil!r} = ['SQD501'] }}\n"
        "[tool.sqla-doctor.runtime]\n"
        f"allow = [{evil!r}]\n",
        encoding="utf-8",
    )
    (root / "evil_backend.py").write_text(code("build-backend"), encoding="utf-8")


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server
    server.close()


def _cli_variants() -> list[list[str]]:
    script = shutil.which("sqla-doctor", path=str(Path(sys.executable).parent))
    variants = [[sys.executable, "-m", "sqla_doctor"]]
    if script:
        variants.insert(0, [script])
    return variants


def test_checking_and_fixing_a_hostile_project_runs_none_of_it(
    tmp_path: Path, listener: socket.socket
) -> None:
    project = tmp_path / "project"
    markers = tmp_path / "markers"
    markers.mkdir()
    port = listener.getsockname()[1]
    hostile_project(project, markers, port)
    # The payload itself works: run one file on purpose, then start from a clean slate.
    subprocess.run([sys.executable, str(project / "noxfile.py")], check=True, timeout=30)
    assert [p.name for p in markers.iterdir()] == ["noxfile"]
    connection, _ = listener.accept()
    connection.close()
    (markers / "noxfile").unlink()

    outputs = []
    for cli in _cli_variants():
        for args in (
            ["check", "--no-cache"],
            ["check", "--jobs", "2"],  # worker processes, and the cache written and read
            ["check", "--jobs", "2"],
            ["check", "--no-cache", "--format", "json", "pkg"],
            ["fix", "--no-cache", "--unsafe-fixes"],
        ):
            proc = subprocess.run(
                [*cli, *args],
                cwd=project,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
            outputs.append((cli, args, proc))
            assert proc.returncode in (0, 1), (cli, args, proc.stderr)
            assert "Traceback" not in proc.stderr

    assert sorted(p.name for p in markers.iterdir()) == []
    listener.settimeout(0.5)
    with pytest.raises(TimeoutError):
        listener.accept()
    # It did read the project: the first check found the mutable default, fix fixed it.
    first = outputs[0][2].stdout
    assert "pkg/models.py" in first
    assert "SQD501" in first
    assert "default=lambda: []" in (project / "pkg" / "models.py").read_text()
