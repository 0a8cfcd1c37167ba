"""SQD602: env.py's target_metadata misses mapped classes whose modules it never imports."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqla_doctor.findings import Finding, Location, Related, Severity
from sqla_doctor.static.alembic.project import AlembicAnalysis, AlembicProject
from sqla_doctor.static.alembic.rule import MigrationRule
from sqla_doctor.static.rule import Invalid, Valid

_INI = "[alembic]\nscript_location = %(here)s/migrations\nprepend_sys_path = .\n"
_ENV = """
from alembic import context
from app.db import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online():
    with config.attributes["connection"] as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
"""
_DB = """
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass
"""
_USER = """
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
"""
_ORDER = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
"""
_PROJECT = {
    "alembic.ini": _INI,
    "app/__init__.py": "",
    "app/db.py": _DB,
    "app/models/user.py": _USER,
    "app/models/order.py": _ORDER,
}

_TWO_APPS_ENV = """
from alembic import context
from sqlmodel import SQLModel
import %s  # noqa: F401

target_metadata = SQLModel.metadata
"""
_TWO_APPS = {
    "backend/alembic.ini": _INI.replace("migrations", "alembic"),
    "backend/alembic/versions/.keep": "",
    "backend/__init__.py": "",
    "backend/models.py": (
        "from sqlmodel import Field, SQLModel\n"
        "class Message(SQLModel, table=True):\n"
        "    id: int | None = Field(default=None, primary_key=True)\n"
    ),
    "inference/alembic.ini": _INI.replace("migrations", "alembic"),
    "inference/alembic/env.py": _TWO_APPS_ENV.replace("%s", "inference.models"),
    "inference/alembic/versions/.keep": "",
    "inference/__init__.py": "",
    "inference/models.py": (
        "from sqlmodel import Field, SQLModel\n"
        "class Chat(SQLModel, table=True):\n"
        "    id: int | None = Field(default=None, primary_key=True)\n"
    ),
}


class ModelsNotImportedInEnv(MigrationRule):
    """
    ## What it does
    Checks that an Alembic `env.py` imports, directly or through the modules it imports
    (packages' `__init__.py` re-exports included), every module that defines a class
    mapped on the metadata it gives as `target_metadata`. Mapped classes are found
    statically: subclasses of a `DeclarativeBase`, `declarative_base()`, Flask-SQLAlchemy's
    `db.Model`, SQLModel `table=True` classes, and `Table(...)` objects on that metadata.
    In a repository of several applications, each with its own Alembic project
    (`backend/alembic.ini`, `worker/alembic.ini`), the classes in another project's folder
    are that one's to import, even on a shared metadata such as `SQLModel.metadata`.
    A script location that no `alembic.ini` or `pyproject.toml` names, only the
    application's code (`cfg.set_main_option("script_location", "app:migrations")`), runs
    inside the application's process after whatever it imported, and is not checked.
    Nor is an `env.py` whose imports load models dynamically (`importlib`, `pkgutil`), or
    import a module of the project's own packages that is not there to read (generated,
    git-ignored): what they import is unknown.

    ## Why is this bad?
    `Base.metadata` only knows the tables of the classes whose modules Python has imported.
    With a model module missing, `alembic revision --autogenerate` produces an empty
    migration for its changes, or worse, one that drops its existing tables, because they
    are in the database and not in the metadata. Nothing fails: the import was "unused", so
    a linter cleanup or an IDE's "optimize imports" removes it silently. Imports under
    `if TYPE_CHECKING:` never run and do not count.

    ## Example
    ```python
    # migrations/env.py
    from app.db import Base            # Base.metadata has no tables yet

    target_metadata = Base.metadata
    ```

    Use instead:
    ```python
    # migrations/env.py
    from app.db import Base
    import app.models  # noqa: F401  (app/models/__init__.py imports every model module)

    target_metadata = Base.metadata
    ```

    ## References
    - [Alembic: What does autogenerate detect](https://alembic.sqlalchemy.org/en/latest/autogenerate.html#what-does-autogenerate-detect-and-what-does-it-not-detect)
    - [Alembic: Autogenerate, Base.metadata and imports](https://alembic.sqlalchemy.org/en/latest/autogenerate.html)
    """

    code = "SQD602"
    name = "models-not-imported-in-env"
    pitfalls = ("P13",)
    severity = Severity.ERROR
    message = (
        "target_metadata `{target}` misses {classes}: env.py never imports {modules}, so "
        "autogenerate does not see {them} — import {import_hint} in env.py"
    )
    postgresql_only = False

    VALID = (
        # The package __init__ imports every model module.
        Valid(
            _ENV.replace("from app.db import Base", "from app.db import Base\nimport app.models"),
            path="migrations/env.py",
            files={
                **_PROJECT,
                "app/models/__init__.py": (
                    "from app.models.order import Order\nfrom app.models.user import User\n"
                ),
            },
        ),
        # Two applications of one repository, each with its Alembic project, whose
        # models share SQLModel.metadata: each env.py imports its own.
        Valid(
            _TWO_APPS_ENV % "backend.models",
            path="backend/alembic/env.py",
            files=_TWO_APPS,
        ),
        # Star re-exports, and a module imported inside a function env.py calls.
        Valid(
            _ENV.replace(
                "def run_migrations_online():",
                "def run_migrations_online():\n    from app.models import order  # noqa: F401",
            ).replace(
                "from app.db import Base", "from app.db import Base\nfrom app.models.user import *"
            ),
            path="migrations/env.py",
            files=_PROJECT,
        ),
        # Models loaded dynamically: unknowable, so silent.
        Valid(
            _ENV.replace("from app.db import Base", "from app.db import Base\nimport app.models"),
            path="migrations/env.py",
            files={
                **_PROJECT,
                "app/models/__init__.py": (
                    "import importlib, pkgutil\n"
                    "for info in pkgutil.iter_modules(__path__):\n"
                    "    importlib.import_module(f'{__name__}.{info.name}')\n"
                ),
            },
        ),
        # Modules imported by a literal name (mistral's `importutils.try_import(...)`) are
        # imported all the same.
        Valid(
            _ENV.replace(
                "from app.db import Base",
                "from oslo_utils import importutils\nfrom app.db import Base\n"
                "importutils.try_import('app.models.user')\n"
                "importutils.try_import('app.models.order')",
            ),
            path="migrations/env.py",
            files=_PROJECT,
        ),
        # The package runs a module of the project that is not there to read (generated,
        # git-ignored): what it imports is unknown, so silent.
        Valid(
            _ENV,
            path="migrations/env.py",
            files={
                **_PROJECT,
                "app/__init__.py": (
                    "from app.generated.registry import load_models\nload_models()\n"
                ),
            },
        ),
        # A class on another metadata (a second database) is not this env.py's business.
        Valid(
            _ENV.replace(
                "from app.db import Base", "from app.db import Base\nimport app.models.user"
            ),
            path="migrations/env.py",
            files={
                **_PROJECT,
                "app/models/order.py": _ORDER.replace(
                    "from app.db import Base", "from app.analytics_db import Base"
                ),
                "app/analytics_db.py": _DB,
            },
        ),
        # Flask-Migrate: the metadata comes from the running app; not knowable here.
        Valid(
            """
            from alembic import context
            from flask import current_app

            def get_metadata():
                return current_app.extensions["migrate"].db.metadata

            context.configure(target_metadata=get_metadata())
            """,
            path="migrations/env.py",
            files={**_PROJECT, "migrations/versions/.keep": ""},
        ),
        # Flask-SQLAlchemy: the app factory imports the models when env.py calls it.
        Valid(
            """
            from alembic import context
            from blog import create_app, db

            app = create_app()
            target_metadata = db.metadata
            """,
            path="migrations/env.py",
            files={
                "migrations/versions/.keep": "",
                "blog/__init__.py": (
                    "from flask_sqlalchemy import SQLAlchemy\n"
                    "db = SQLAlchemy()\n"
                    "def create_app():\n"
                    "    from blog import models\n"
                ),
                "blog/models.py": (
                    "from blog import db\n"
                    "class Post(db.Model):\n"
                    "    id = db.Column(db.Integer, primary_key=True)\n"
                ),
            },
        ),
        # No alembic.ini: the application builds Alembic's Config itself and runs the
        # migrations from its own process, after its scan imported every model (pypi/warehouse).
        Valid(
            """
            from alembic import context
            from app import db

            context.configure(url="postgresql://", target_metadata=db.Base.metadata)
            """,
            path="app/migrations/env.py",
            files={
                "app/__init__.py": "",
                "app/migrations/versions/.keep": "",
                "app/db.py": _DB + (
                    "\nimport alembic.config\n\n"
                    "def alembic_config(settings):\n"
                    "    cfg = alembic.config.Config()\n"
                    '    cfg.set_main_option("script_location", "app:migrations")\n'
                    "    return cfg\n"
                ),
                "app/models/user.py": _USER,
            },
        ),
    )
    INVALID = (
        # The other application's env.py imports its own models; this one misses one.
        Invalid(
            _TWO_APPS_ENV % "backend.models",
            path="backend/alembic/env.py",
            files={
                **_TWO_APPS,
                "backend/audit.py": (
                    "from sqlmodel import Field, SQLModel\n"
                    "class Audit(SQLModel, table=True):\n"
                    "    id: int | None = Field(default=None, primary_key=True)\n"
                ),
            },
            expected_message=(
                "target_metadata `SQLModel.metadata` misses Audit (backend/audit.py): env.py "
                "never imports backend.audit, so autogenerate does not see it — import "
                "backend.audit in env.py"
            ),
        ),
        Invalid(
            _ENV,
            path="migrations/env.py",
            files=_PROJECT,
            line=5,
            expected_message=(
                "target_metadata `Base.metadata` misses Order (app/models/order.py), User "
                "(app/models/user.py): env.py never imports app.models.order, app.models.user, "
                "so autogenerate does not see them — import app.models.order, app.models.user "
                "in env.py"
            ),
        ),
        # A literal importlib.import_module() is followed, not taken for a dynamic import.
        Invalid(
            _ENV.replace(
                "from app.db import Base",
                "import importlib\nfrom app.db import Base\n"
                "importlib.import_module('app.models.user')",
            ),
            path="migrations/env.py",
            files=_PROJECT,
            expected_message=(
                "target_metadata `Base.metadata` misses Order (app/models/order.py): env.py never "
                "imports app.models.order, so autogenerate does not see it — import "
                "app.models.order in env.py"
            ),
        ),
        # A model import moved under TYPE_CHECKING by a linter never runs.
        Invalid(
            _ENV.replace(
                "from app.db import Base",
                "from typing import TYPE_CHECKING\nfrom app.db import Base\n"
                "import app.models.user\n"
                "if TYPE_CHECKING:\n    import app.models.order",
            ),
            path="migrations/env.py",
            files=_PROJECT,
            expected_message=(
                "target_metadata `Base.metadata` misses Order (app/models/order.py): env.py never "
                "imports app.models.order, so autogenerate does not see it — import "
                "app.models.order in env.py"
            ),
        ),
        # The package __init__ lost one re-export (the "unused import" cleanup).
        Invalid(
            _ENV.replace("from app.db import Base", "from app.db import Base\nimport app.models"),
            path="migrations/env.py",
            files={**_PROJECT, "app/models/__init__.py": "from app.models.user import User\n"},
            count=1,
        ),
        # Flask-SQLAlchemy without the factory: db.metadata knows no model.
        Invalid(
            """
            from alembic import context
            from blog.extensions import db

            target_metadata = db.metadata
            """,
            path="migrations/env.py",
            files={
                "migrations/versions/.keep": "",
                "blog/__init__.py": "",
                "blog/extensions.py": (
                    "from flask_sqlalchemy import SQLAlchemy\ndb = SQLAlchemy()\n"
                ),
                "blog/models.py": (
                    "from blog.extensions import db\n"
                    "class Post(db.Model):\n"
                    "    id = db.Column(db.Integer, primary_key=True)\n"
                ),
            },
            expected_message=(
                "target_metadata `db.metadata` misses Post (blog/models.py): env.py never "
                "imports blog.models, so autogenerate does not see it — import blog.models in "
                "env.py"
            ),
        ),
        # Imperative tables on a MetaData, and SQLModel.
        Invalid(
            """
            from alembic import context
            from sqlmodel import SQLModel
            from app.tables import metadata

            target_metadata = [metadata, SQLModel.metadata]
            """,
            path="migrations/env.py",
            files={
                "migrations/versions/.keep": "",
                "app/__init__.py": "",
                "app/tables.py": "from sqlalchemy import MetaData\nmetadata = MetaData()\n",
                "app/audit.py": (
                    "from sqlalchemy import Column, Integer, Table\n"
                    "from app.tables import metadata\n"
                    "audit_log = Table('audit_log', metadata, Column('id', Integer))\n"
                ),
                "app/heroes.py": (
                    "from sqlmodel import Field, SQLModel\n"
                    "class Hero(SQLModel, table=True):\n"
                    "    id: int | None = Field(default=None, primary_key=True)\n"
                ),
            },
            expected_message=(
                "target_metadata `metadata + SQLModel.metadata` misses Table('audit_log') "
                "(app/audit.py), Hero (app/heroes.py): env.py never imports app.audit, "
                "app.heroes, so autogenerate does not see them — import app.audit, app.heroes "
                "in env.py"
            ),
        ),
    )

    def check_alembic_project(
        self, project: AlembicProject, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        env = project.env
        if env is None or env.facts.target_node is None:
            return
        target = shared.target_keys(project)
        if target is None:
            return
        reach = shared.reached(project)
        if reach.dynamic or shared.configured_in_code(project):
            return
        env_path = env.file.path.resolve()
        missing: dict[str, list[str]] = {}
        paths: dict[str, str] = {}
        related: list[Related] = []
        for mapped in shared.models.mapped_classes(target.extra_bases):
            if mapped.metadata not in target.keys or mapped.table is None:
                continue
            path = _disk(shared, mapped.path)
            if path is None or path == env_path or path in reach.paths:
                continue
            if _migrated_elsewhere(shared, project, path):
                continue
            if shared.is_test_or_migration(path):
                continue
            module = _import_name(mapped.module, mapped.path)
            missing.setdefault(module, []).append(mapped.qualname.rpartition(".")[2])
            paths[module] = mapped.path
            related.append(
                Related(Location(mapped.path, mapped.line), f"{mapped.qualname} is mapped here")
            )
        for table in shared.models.tables():
            if table.metadata not in target.keys:
                continue
            path = _disk(shared, table.path)
            if path is None or path in reach.paths or path == env_path:
                continue
            if _migrated_elsewhere(shared, project, path):
                continue
            if shared.is_test_or_migration(path):
                continue
            module = _import_name(table.module, table.path)
            missing.setdefault(module, []).append(f"Table({table.name!r})")
            paths[module] = table.path
            related.append(
                Related(Location(table.path, table.line), f"table {table.name} is defined here")
            )
        if not missing:
            return
        modules = sorted(missing)
        classes = ", ".join(f"{', '.join(sorted(missing[m]))} ({paths.get(m, m)})" for m in modules)
        count = sum(len(v) for v in missing.values())
        shown = modules if len(modules) <= 4 else [*modules[:3], f"{len(modules) - 3} more"]
        yield self.at(
            env.file,
            env.facts.target_node,
            target=" + ".join(target.described),
            classes=classes,
            modules=", ".join(shown),
            them="them" if count > 1 else "it",
            import_hint=", ".join(shown),
            related=tuple(related[:10]),
            hint="import the models package whose __init__ imports every model module",
        )


def _migrated_elsewhere(shared: AlembicAnalysis, project: AlembicProject, path: Path) -> bool:
    """Whether ``path`` lies in the folder of another Alembic project, nearer to it than
    this one's: two applications of one repository (``backend/alembic.ini``,
    ``inference/alembic.ini``) whose models share ``SQLModel.metadata`` each import and
    migrate their own."""
    depth = {id(p): _home_depth(p, path) for p in shared.projects}
    nearest = max(depth.values(), default=-1)
    return nearest >= 0 and depth[id(project)] < nearest


def _home_depth(project: AlembicProject, path: Path) -> int:
    """How deep the deepest folder of ``project`` holding ``path`` is (where its configs
    are, else its script directory's parent); -1 when none holds it."""
    location = project.location
    homes = [c.resolve().parent for c in location.configs] or [location.directory.resolve().parent]
    return max((len(h.parts) for h in homes if h in path.parents), default=-1)


def _disk(shared: AlembicAnalysis, display: str) -> Path | None:
    path = Path(display)
    if not path.is_absolute():
        path = shared.root / path
    return path.resolve() if path.exists() else None


def _import_name(module: str, display: str) -> str:
    """How env.py would import a module: its package name, or its path for a module in a
    folder without ``__init__.py`` (a namespace package)."""
    parts = Path(display).with_suffix("").parts
    if "." in module or len(parts) <= 1 or Path(display).is_absolute():
        return module
    if parts[0] == "src":
        parts = parts[1:]
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) if all(p.isidentifier() for p in parts) else module
