"""SQD504: `create_all()` reached before every mapped module is imported."""

from __future__ import annotations

from collections.abc import Iterable

from sqla_doctor.findings import Finding, Location, Severity
from sqla_doctor.static.context import ProjectContext
from sqla_doctor.static.files import is_test_path
from sqla_doctor.static.index import CreateAllFacts, FileFacts, Model, ProjectIndex
from sqla_doctor.static.index.import_graph import ImportGraph
from sqla_doctor.static.rule import Invalid, ProjectRule, Valid

_DB = """
from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase

engine = create_engine("sqlite:///app.db")

class Base(DeclarativeBase):
    pass
"""
_USERS = """
from sqlalchemy.orm import Mapped, mapped_column
from app.db import Base

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
"""
_ORDERS = """
from sqlalchemy.orm import Mapped, mapped_column
from app.db import Base

class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
"""
_AUDIT_TEST = """
from sqlalchemy.orm import Mapped, mapped_column
from app.db import Base

class AuditEntry(Base):
    __tablename__ = "audit_entries"
    id: Mapped[int] = mapped_column(primary_key=True)

def test_audit_entry(tables):
    assert AuditEntry.__table__.name == "audit_entries"
"""
_FILES = {
    "app/__init__.py": "",
    "app/db.py": _DB,
    "app/models/__init__.py": "",
    "app/models/users.py": _USERS,
    "app/models/orders.py": _ORDERS,
}
# Flask-SQLAlchemy: the app factory in the package's __init__, which its own modules
# import (`from .extensions import db` runs `app/__init__.py` first, not create_app()).
_FLASK_FILES = {
    "app/extensions.py": "from flask_sqlalchemy import SQLAlchemy\n\ndb = SQLAlchemy()\n",
    "app/models.py": """
        from .extensions import db

        class User(db.Model):
            id = db.Column(db.Integer, primary_key=True)
        """,
    "app/views.py": "from .extensions import db\nfrom .models import User\n",
}
_FLASK_FACTORY = """
from flask import Flask
from .extensions import db

def create_app():
    app = Flask(__name__)
    db.init_app(app)
    with app.app_context():
        {first}
        {second}
    from . import views
    return app
"""


class CreateAllBeforeModelsImported(ProjectRule):
    """
    ## What it does
    Checks for `Base.metadata.create_all()` (also `SQLModel.metadata.create_all()`,
    Flask-SQLAlchemy's `db.create_all()` and `conn.run_sync(Base.metadata.create_all)`)
    that can run before some module defining a mapped class of that base has been
    imported — following the project's imports from the module that calls it and from
    the modules that call the function it is in.

    ## Why is this bad?
    `create_all()` creates the tables in `Base.metadata`, and a class joins that
    metadata only when its module is imported. A model module nobody imported yet
    gets no table, without any error; the app fails later with `no such table` or
    `relation "orders" does not exist`.

    Classes mapped in test modules (`test_*.py`, `conftest.py`, under `tests/`) are not
    asked for by a `create_all()` in a function: pytest imports every test module it
    collects before the first fixture runs, and nothing outside the tests uses their
    tables. One at a module's top level, which runs while pytest is still importing, is
    checked for them too.

    ## Known problems
    Projects that import their models dynamically (`importlib`, `pkgutil`) are not
    checked, nor a `create_all()` reached after importing a module of the project's own
    packages that is not there to read (generated, git-ignored): what it imports is
    unknown.

    ## Example
    ```python
    # app/main.py
    from app.db import Base, engine
    from app.models import users

    Base.metadata.create_all(engine)  # app.models.orders was never imported
    ```

    Use instead:
    ```python
    from app.db import Base, engine
    from app.models import orders, users  # noqa: F401 - register every table

    Base.metadata.create_all(engine)
    ```

    ## References
    - [Emitting DDL to the database](https://docs.sqlalchemy.org/en/20/orm/quickstart.html#emit-create-table-ddl)
    - [MetaData.create_all()](https://docs.sqlalchemy.org/en/20/core/metadata.html#sqlalchemy.schema.MetaData.create_all)
    """

    code = "SQD504"
    name = "create-all-before-models-imported"
    pitfalls = ("P25",)
    severity = Severity.ERROR
    message = (
        "`{call}` can run before {modules} {are} imported: the tables of {models} are not created "
        "(no error) — import {them} first"
    )

    VALID = (
        Valid(
            """
            from app.db import Base, engine
            from app.models import orders, users  # noqa: F401

            Base.metadata.create_all(engine)
            """,
            path="app/main.py",
            files=_FILES,
        ),
        # A package __init__ that imports every model module.
        Valid(
            """
            from app.db import Base, engine
            import app.models

            def init_db():
                Base.metadata.create_all(engine)
            """,
            path="app/main.py",
            files={**_FILES, "app/models/__init__.py": "from app.models import orders, users\n"},
        ),
        # create_all in db.py's function; the caller imports the models first.
        Valid(
            """
            from app.models import orders, users
            from app.db import init_db

            init_db()
            """,
            path="app/main.py",
            files={
                **_FILES,
                "app/db.py": _DB + "\ndef init_db():\n    Base.metadata.create_all(engine)\n",
            },
        ),
        Valid(
            _FLASK_FACTORY.format(first="from . import models", second="db.create_all()"),
            path="app/__init__.py",
            files=_FLASK_FILES,
        ),
        # Models loaded dynamically: not knowable.
        Valid(
            """
            import importlib
            import pkgutil
            import app.models
            from app.db import Base, engine

            for module in pkgutil.iter_modules(app.models.__path__):
                importlib.import_module(f"app.models.{module.name}")
            Base.metadata.create_all(engine)
            """,
            path="app/main.py",
            files=_FILES,
        ),
        # Loaded from a file path at run time: not knowable either.
        Valid(
            """
            import importlib.util
            from app.db import Base, engine

            spec = importlib.util.spec_from_file_location("models", "app/models/all.py")
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
            Base.metadata.create_all(engine)
            """,
            path="app/main.py",
            files=_FILES,
        ),
        # A module of the project that is not there to read (generated, git-ignored) runs
        # first: what it imports is unknown.
        Valid(
            """
            from app.db import Base, engine
            from app.plugins.loader import load_all

            load_all()
            Base.metadata.create_all(engine)
            """,
            path="app/main.py",
            files={**_FILES, "app/plugins/__init__.py": ""},
        ),
        # All models live in the module that creates the tables.
        Valid(
            """
            from sqlalchemy import create_engine
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Note(Base):
                __tablename__ = "notes"
                id: Mapped[int] = mapped_column(primary_key=True)

            Base.metadata.create_all(create_engine("sqlite://"))
            """
        ),
        # A fixture's create_all(): pytest imported every collected test module first,
        # and a class mapped in one serves that module's tests alone.
        Valid(
            """
            import pytest
            from app.db import Base, engine
            from app.models import orders, users  # noqa: F401

            @pytest.fixture
            def tables():
                Base.metadata.create_all(engine)
                yield
                Base.metadata.drop_all(engine)
            """,
            path="tests/conftest.py",
            files={**_FILES, "tests/__init__.py": "", "tests/test_audit.py": _AUDIT_TEST},
        ),
    )
    INVALID = (
        # The same create_all() at conftest's top level runs before pytest imports the
        # test modules.
        Invalid(
            """
            from app.db import Base, engine
            from app.models import orders, users  # noqa: F401

            Base.metadata.create_all(engine)
            """,
            path="tests/conftest.py",
            files={**_FILES, "tests/__init__.py": "", "tests/test_audit.py": _AUDIT_TEST},
            line=4,
            expected_message=(
                "`Base.metadata.create_all()` can run before `tests.test_audit` is imported: "
                "the tables of `AuditEntry` are not created (no error) — import it first"
            ),
        ),
        Invalid(
            """
            from app.db import Base, engine
            from app.models import users

            Base.metadata.create_all(engine)
            """,
            path="app/main.py",
            files=_FILES,
            line=4,
            expected_message=(
                "`Base.metadata.create_all()` can run before `app.models.orders` is imported: "
                "the tables of `Order` are not created (no error) — import it first"
            ),
        ),
        # At module level of db.py itself: the models import db.py, so they come later.
        Invalid(
            """
            from sqlalchemy import create_engine
            from sqlalchemy.orm import DeclarativeBase

            engine = create_engine("sqlite:///app.db")

            class Base(DeclarativeBase):
                pass

            Base.metadata.create_all(engine)
            """,
            path="app/db.py",
            files={
                **{k: v for k, v in _FILES.items() if k != "app/db.py"},
                "app/main.py": "import app.db\nfrom app.models import orders, users\n",
            },
            line=9,
        ),
        # The import comes after the call.
        Invalid(
            """
            from app.db import Base, engine
            from app.models import users

            Base.metadata.create_all(engine)

            from app.models import orders
            """,
            path="app/main.py",
            files=_FILES,
            line=4,
        ),
        # The factory imports the models only after create_all(); the package's own
        # modules importing `.extensions` do not call create_app().
        Invalid(
            _FLASK_FACTORY.format(first="db.create_all()", second="from . import models"),
            path="app/__init__.py",
            files=_FLASK_FILES,
            line=8,
            expected_message=(
                "`db.create_all()` can run before `app.models` is imported: the tables of "
                "`User` are not created (no error) — import it first"
            ),
        ),
        # Async: run_sync(Base.metadata.create_all) in a startup function.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            from app.db import Base

            engine = create_async_engine("sqlite+aiosqlite:///app.db")

            async def init_models():
                async with engine.begin() as conn:
                    await conn.run_sync(Base.metadata.create_all)
            """,
            path="app/startup.py",
            files={
                **_FILES,
                "app/main.py": "from app.models import users\nfrom app.startup import init_models",
            },
            line=8,
        ),
        # SQLModel: a table class in a module nothing imports.
        Invalid(
            """
            from sqlmodel import SQLModel, create_engine
            from app.heroes import Hero

            engine = create_engine("sqlite://")

            def create_db_and_tables():
                SQLModel.metadata.create_all(engine)
            """,
            path="app/main.py",
            files={
                "app/__init__.py": "",
                "app/heroes.py": """
                from sqlmodel import Field, SQLModel

                class Hero(SQLModel, table=True):
                    id: int | None = Field(default=None, primary_key=True)
                """,
                "app/teams.py": """
                from sqlmodel import Field, SQLModel

                class Team(SQLModel, table=True):
                    id: int | None = Field(default=None, primary_key=True)
                """,
            },
            line=7,
        ),
    )

    def check_project(self, project: ProjectContext) -> Iterable[Finding]:
        index = project.index
        graph = index.import_graph()
        for facts in index:
            for call in facts.orm.create_all:
                finding = self._check(index, graph, facts, call)
                if finding is not None:
                    yield finding

    def _check(
        self, index: ProjectIndex, graph: ImportGraph, facts: FileFacts, call: CreateAllFacts
    ) -> Finding | None:
        root = self._root(index, call.receiver)
        if root is None:
            return None
        models = [m for m in index.models() if m.root == root]
        if not models:
            return None
        model_modules: dict[str, list[Model]] = {}
        for model in models:
            module = index.module_of(model.qualname)
            if module is not None:
                model_modules.setdefault(module, []).append(model)
        module = facts.module
        roots = graph.before(module, call.line, call.function is not None)
        for caller in graph.importers(module):
            if caller in model_modules or caller == module:
                continue
            if call.function is None:
                roots |= graph.before(caller, graph.import_line(caller, module), False)
            else:
                roots |= graph.closure({caller})
        reached = graph.closure(roots) | {module}
        if any(index.files[m].orm.dynamic_imports for m in reached if m in index.files):
            return None
        if reached & graph.blind:
            return None
        missing = sorted(
            m
            for m in model_modules
            if m not in reached
            and not (call.function is not None and is_test_path(index.files[m].path))
        )
        if not missing:
            return None
        names = [f"`{m.name}`" for name in missing for m in model_modules[name]]
        receiver = call.receiver.rpartition(".")[2]
        call_text = (
            f"{call.receiver.split('.')[-2]}.metadata.create_all()"
            if receiver == "metadata" and "." in call.receiver
            else f"{receiver}.create_all()"
        )
        return self.finding(
            Location(
                facts.path,
                call.line,
                call.col + 1,
                call.end_line or None,
                (call.end_col + 1) if call.end_col else None,
            ),
            call=call_text,
            modules=", ".join(f"`{m}`" for m in missing),
            are="is" if len(missing) == 1 else "are",
            models=", ".join(names[:5]) + (" …" if len(names) > 5 else ""),
            them="it" if len(missing) == 1 else "them",
        )

    @staticmethod
    def _root(index: ProjectIndex, receiver: str) -> str | None:
        """The registry a `create_all` receiver stands for."""
        target = index.follow(receiver)
        if target.endswith(".metadata"):
            target = index.follow(target[: -len(".metadata")])
        if target in ("sqlmodel.SQLModel", "sqlmodel.main.SQLModel"):
            return "sqlmodel"
        roots = {m.root for m in index.models()}
        return target if target in roots else None
