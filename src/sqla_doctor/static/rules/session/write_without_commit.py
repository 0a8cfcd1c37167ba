"""SQD104: writes in a session block that never commits."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from sqla_doctor.findings import Applicability, Fix, Severity
from sqla_doctor.static.alembic.sql import classify
from sqla_doctor.static.dataflow import Binding, BindingKind
from sqla_doctor.static.flow import (
    FunctionFlow,
    InstanceValue,
    ObjectsValue,
    SessionValue,
    StatementValue,
    contains,
    flow_for,
    receiver_key,
    runs_code,
    worth_analysing,
)
from sqla_doctor.static.index import Model, ProjectIndex
from sqla_doctor.static.index.extract import declares_dependencies, dependency_targets
from sqla_doctor.static.index.models import call_tail, keyword, literal_str
from sqla_doctor.static.index.sessions import ENGINE_CALLS
from sqla_doctor.static.lifecycle import (
    BEGIN,
    COMMIT,
    DDL,
    DML,
    ROLLBACK,
    WRITES,
    OwnedConnection,
    OwnedSession,
    Statements,
    bound_to_connection,
    escapes,
    exit_method,
    method_calls,
    owned_connections,
    owned_sessions,
    sessions_ended,
    sets_isolation,
    unbound,
)
from sqla_doctor.static.navigation import route_decorators
from sqla_doctor.static.objects import SqlaObjects
from sqla_doctor.static.rule import Invalid, Rule, Valid

_FILES = {
    "app/__init__.py": "",
    "app/db.py": """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    engine = create_engine("sqlite:///app.db")
    SessionLocal = sessionmaker(engine)
    """,
    "app/models.py": """
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
    """,
}

# A copy script's top-level code: rows read from one database, added to another.
_COPY_SCRIPT = """
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from app.models import User

legacy = create_engine("sqlite:///legacy.db")
target = create_engine("sqlite:///app.db")
with Session(legacy) as src, Session(target) as dst:
    for user in src.scalars(select(User)):
        dst.add(User(name=user.name)){commit}
"""

# A context manager that commits only when its caller passes `commit=True` (packit-service's
# sa_session_transaction).
_FLAG_FILES = {
    **_FILES,
    "app/scopes.py": """
    from contextlib import contextmanager
    from app.db import SessionLocal

    @contextmanager
    def scope(commit=False):
        session = SessionLocal()
        try:
            yield session
            if commit:
                session.commit()
        finally:
            session.close()
    """,
}
_FLAG_BLOCK = """
from app.models import User
from app.scopes import scope

def create(name, save):
    with scope({args}) as session:
        session.add(User(name=name))
"""

# A seed script whose factory a helper returns in a tuple (runtime scenario s82's setup).
_TUPLE_FILES = {
    **_FILES,
    "app/setup.py": """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    def setup(url="sqlite://"):
        engine = create_engine(url)
        factory = sessionmaker(engine)
        return engine, factory
    """,
}
_TUPLE_SCRIPT = """
from app.models import User
from app.setup import setup

engine, Session = setup()
with Session() as session:
    session.add(User(name="admin")){commit}
"""

# A model with a relationship collection, and a JSON list SQLAlchemy does not watch.
_COLLECTION_FILES = {
    **_FILES,
    "app/models.py": """
    from sqlalchemy import JSON, ForeignKey
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        labels: Mapped[list[str]] = mapped_column(JSON, default=list)
        posts: Mapped[list["Post"]] = relationship()

    class Post(Base):
        __tablename__ = "posts"
        id: Mapped[int] = mapped_column(primary_key=True)
        user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
        title: Mapped[str]
    """,
}
_COLLECTION_CHANGE = """
from app.db import SessionLocal
from app.models import Post, User

def add_post(user_id, title):
    with SessionLocal() as session:
        user = session.get(User, user_id)
        user.posts.append(Post(title=title)){commit}

def unlabel(user_id):
    with SessionLocal() as session:
        user = session.get(User, user_id)
        user.labels.clear()
"""

# A Flask-SQLAlchemy app: `db.session` is removed (rolled back) when the request ends.
_FLASK_FILES = {
    "app/__init__.py": "",
    "app/ext.py": """
    from flask_sqlalchemy import SQLAlchemy

    db = SQLAlchemy()
    """,
    "app/models.py": """
    from app.ext import db

    class User(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        name = db.Column(db.String(80))
    """,
    "app/store.py": """
    from app.ext import db

    def save(obj):
        db.session.add(obj)
        db.session.commit()

    def get(key):
        # Counts every lookup: a function named `get` that commits.
        db.session.execute(db.text("UPDATE hits SET n = n + 1 WHERE key = :k"), {"k": key})
        db.session.commit()

    def transactional(view):
        def wrapper(*args, **kwargs):
            result = view(*args, **kwargs)
            db.session.commit()
            return result
        return wrapper
    """,
}


# A FastAPI generator dependency that closes its session and leaves committing to the
# routes, and one that commits after the route ran.
_DEPENDENCY_FILES = {
    **_FILES,
    "app/deps.py": """
    from collections.abc import Iterator

    from fastapi import Depends
    from sqlalchemy.orm import Session

    from app.db import SessionLocal
    from app.models import User

    def get_db() -> Iterator[Session]:
        with SessionLocal() as session:
            yield session

    def get_unit_of_work() -> Iterator[Session]:
        with SessionLocal() as session:
            yield session
            session.commit()

    def get_transaction() -> Iterator[Session]:
        with SessionLocal() as session:
            with session.begin():
                yield session

    def commit_after(db: Session = Depends(get_db)) -> Iterator[None]:
        yield
        db.commit()

    def current_user(token: str, db: Session = Depends(get_db)) -> object:
        return db.get(User, int(token))

    def finish(db: Session) -> None:
        db.commit()

    def settle(db: Session = Depends(get_db)) -> Iterator[None]:
        yield
        finish(db)
    """,
    "app/crud.py": """
    def save(db, obj):
        db.add(obj)
        db.commit()
    """,
}

_CORE_FILES = {
    "app/__init__.py": "",
    "app/core.py": """
    from sqlalchemy import Boolean, Column, Integer, MetaData, Table, create_engine

    engine = create_engine("postgresql+psycopg://app@db/app")
    autocommit_engine = create_engine(
        "postgresql+psycopg://app@db/app", isolation_level="AUTOCOMMIT"
    )
    local_engine = create_engine("sqlite:///cache.db")
    metadata = MetaData()
    events = Table(
        "events", metadata, Column("id", Integer, primary_key=True), Column("seen", Boolean)
    )
    """,
}


# Tables made on a connection of a local engine whose URL is an f-string (singer-sdk's
# test_bench_discovery), never committed.
_DDL_ON_LOCAL_ENGINE = """
import sqlalchemy

def seed(path, host):
    engine = sqlalchemy.create_engine({url})
    with engine.connect() as conn:
        for i in range(3):
            conn.execute(sqlalchemy.text(f"CREATE TABLE table_{{i}} (id INTEGER PRIMARY KEY)"))
"""


# A session method that ends or frames its transaction by hand: its writes are settled.
_READS = frozenset({"execute", "scalars", "scalar", "get", "query", "exec"})
_SETTLED = frozenset({"commit", "begin", "rollback", "begin_nested", "in_transaction"})
# Class-based Flask views, and the methods that handle a request in them.
_FLASK_VIEW_CLASSES = frozenset(
    {
        "flask.views.MethodView", "flask.views.View", "flask.MethodView",
        "flask_restful.Resource", "flask_restx.Resource", "flask_restplus.Resource",
    }
)
_VIEW_HANDLERS = frozenset({"get", "post", "put", "patch", "delete"})
# Libraries a Flask view calls that never commit its session, whatever a method is named
# (`request.args.get()`, `json.dumps()`); `flask.g` may hold the project's own objects.
_INERT_LIBRARIES = frozenset(
    {
        "flask",
        "werkzeug",
        "json",
        "logging",
        "datetime",
        "time",
        "uuid",
        "re",
        "os",
        "math",
        "decimal",
        "hashlib",
        "base64",
        "secrets",
        "urllib",
        "sqlalchemy",
        "flask_sqlalchemy",
    }
)


_CONTEXT_SESSION = """
from sqlalchemy import orm


class ContextSession(orm.Session):
    \"\"\"Commits when its `with` block ends without an error.\"\"\"

    def __exit__(self, exc_type, exc_val, exc_tb):
        try:
            if exc_type is None:
                self.commit()
            else:
                self.rollback()
        finally:
            super().__exit__(exc_type, exc_val, exc_tb)


class ClosingSession(orm.Session):
    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()


Session = orm.sessionmaker(class_=ContextSession)
PlainSession = orm.sessionmaker(class_=ClosingSession)
"""
# A unit of work whose `__exit__` rolls back unless told to commit (or commits itself).
_UNIT_OF_WORK = """
from app.db import SessionLocal
from app.models import User


class UnitOfWork:
    def __enter__(self):
        self.session = SessionLocal()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        {exit}
        self.session.close()

    def commit(self):
        self.session.commit()


def register(email):
    with UnitOfWork() as uow:
        uow.session.add(User(email=email)){commit}
"""


# Cosmic Python's unit of work: an abstract base whose `__exit__` rolls back, a
# SQLAlchemy one making its session and repository in `__enter__`; handlers get it as a
# parameter and write through `uow.users` inside `with uow:`.
_COSMIC_FILES = {
    **_FILES,
    "app/repository.py": """
    from app.models import User

    class SqlAlchemyRepository:
        def __init__(self, session):
            self.session = session

        def add(self, user):
            self.session.add(user)

        def get(self, user_id):
            return self.session.get(User, user_id)
    """,
    "app/unit_of_work.py": """
    import abc
    from app import repository
    from app.db import SessionLocal

    class AbstractUnitOfWork(abc.ABC):
        users: repository.SqlAlchemyRepository

        def __enter__(self):
            return self

        def __exit__(self, *args):
            self.rollback()

        def commit(self):
            self._commit()

        @abc.abstractmethod
        def _commit(self): ...

        @abc.abstractmethod
        def rollback(self): ...

    class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
        def __init__(self, session_factory=SessionLocal):
            self.session_factory = session_factory

        def __enter__(self):
            self.session = self.session_factory()
            self.users = repository.SqlAlchemyRepository(self.session)
            return super().__enter__()

        def __exit__(self, *args):
            super().__exit__(*args)
            self.session.close()

        def _commit(self):
            self.session.commit()

        def rollback(self):
            self.session.rollback()
    """,
}
_COSMIC_HANDLERS = """
from app.models import User
from app.unit_of_work import AbstractUnitOfWork, SqlAlchemyUnitOfWork

def register(name: str, uow: AbstractUnitOfWork):
    with uow:
        uow.users.add(User(name=name)){commit}

def rename(user_id: int, name: str, uow: SqlAlchemyUnitOfWork):
    with uow:
        user = uow.users.get(user_id)
        user.name = name{commit}

def greet(user_id: int, uow: SqlAlchemyUnitOfWork) -> str:
    with uow:
        return "hello " + uow.users.get(user_id).name
"""


def _decorator_may_commit(decorator: ast.expr, committing: frozenset[str]) -> bool:
    """A decorator (`@transactional`, `@with_commit(...)`) named like a project function
    that may commit."""
    return call_tail(decorator.func if isinstance(decorator, ast.Call) else decorator) in committing


# pgAdmin's revision 81c7ffeffeee: an ORM session on the migration's connection.
_MIGRATION_SESSION = """
from alembic import op
from sqlalchemy.orm import Session
from app.models import User

revision = "81c7ffeffeee"
down_revision = "398697dc9550"

def upgrade():
    session = Session(bind=op.get_bind())
    old_setting = session.query(User).filter_by(name="new_browser_tab").first()
    if old_setting:
        session.delete(old_setting){flush}
"""


def _rolled_back(held: str, session: str, after: str) -> str:
    """Why a write is lost when the session ends: ``held`` says how it ends."""
    return f"{held} without `{session}.commit()`{after}, which rolls the write back"


def _class_decorators(view: ast.ClassDef) -> Iterator[ast.expr]:
    """What a class-based view's `decorators = [...]` / `method_decorators = [...]` lists:
    Flask applies them to every handler."""
    for statement in view.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id in ("decorators", "method_decorators")
            for t in statement.targets
        ):
            value = statement.value
            yield from value.elts if isinstance(value, (ast.List, ast.Tuple)) else (value,)


class WriteWithoutCommit(Rule):
    """
    ## What it does
    Checks for a session (`with SessionLocal() as s`) or a Core connection
    (`with engine.connect() as conn`) that the code opens, writes through and closes
    without committing the writes: no `commit()` after them, no `begin()` block. A
    script's top-level code is checked as a function's body is.

    Sessions: a session this function opens (`with SessionLocal() as s`, or
    `s = SessionLocal()`) that receives writes — `add()`, `add_all()`, `delete()`,
    `merge()`, `execute(insert/update/delete(...))`, or a column or relationship set on
    an object it loaded (`user = session.get(User, id)` then `user.name = name`), or a
    relationship collection of it changed in place (`user.posts.append(post)`) — but
    is never committed: no `commit()`, no `begin()` block, no `SessionLocal.begin()`,
    and not the `with` block of a factory whose Session subclass commits in its
    `__exit__` (`sessionmaker(class_=ContextSession)`). A session bound to a connection
    the code was given (`Session(bind=op.get_bind())` in an Alembic revision) writes in
    that connection's transaction, which its owner commits: there only objects that no
    flush sends are lost (no query, `flush()` or `commit()` after them), and the message
    says so.

    Connections: one opened with `engine.connect()` (`with engine.connect() as conn:`,
    `async with engine.connect() as conn:`, or `conn = engine.connect()` ...
    `conn.close()`, in a function or a script) that runs a write — `insert()`, `update()`,
    `delete()`, `table.insert()`, `text("INSERT/UPDATE/DELETE/CREATE/DROP/ALTER ...")`,
    `exec_driver_sql(...)`, `metadata.create_all(conn)`, `run_sync(metadata.create_all)` —
    with no `conn.commit()` after it before the connection is closed.

    Units of work: `with UnitOfWork() as uow:` (or `with uow:` on one the function is
    given) writing through `uow.session`, or through a repository it holds
    (`uow.products.add(...)`, a change to an object `uow.products.get()` loaded), with no
    `uow.commit()`, when the class's `__exit__`/`__aexit__` rolls back or closes that
    session and never commits it.

    Flask views: a view (`@app.post(...)`, `@bp.route(...)`, the `post()` of a
    `MethodView` or a Flask-RESTful/RESTX `Resource`) that writes through
    Flask-SQLAlchemy's `db.session` with no `db.session.commit()`, when nothing it calls
    or is decorated with may commit (a project function that commits, itself or through
    what it calls: see Known problems) and no `after_request`/`teardown_request`/
    `teardown_appcontext` hook of the project commits: Flask-SQLAlchemy removes the
    session when the request's app context ends, which rolls the write back.

    Web routes (FastAPI): a route (`@app.post(...)`, `@router.put(...)`) that writes
    through the session a generator dependency yields (`db: Session = Depends(get_db)`),
    when that dependency closes the session without committing it and nothing in the
    route commits: the write is rolled back when the request ends, even after a
    `flush()`.

    ## Why is this bad?
    Closing a session rolls back its transaction. The code runs without an error, the
    objects even get primary keys after a flush, and the data is silently gone: the
    classic forgotten commit.

    SQLAlchemy 2.0 does the same to connections ("commit as you go"): the first statement
    begins a transaction, and closing the connection rolls it back. 1.x's library-level
    autocommit, which committed an `INSERT` run on `engine.connect()` by itself, is gone,
    so code written for it (or copied from a 1.x tutorial) loses every write without an
    error.

    ## Known problems
    A session or connection handed to another function (which may commit) is not
    reported, nor one that is explicitly rolled back or flushed (tests and dry runs do
    this on purpose), nor one whose transaction is managed by hand (`conn.begin()`,
    `text("COMMIT")`), nor DDL that drops every table it creates (a probe that the
    database takes writes). Sessions and connections the function receives as
    parameters are the caller's to commit. In tests, a session that reads its writes back
    (through autoflush) before it closes, or a connection that runs a query after them,
    is taken as isolation on purpose. A loaded
    object that is changed and then returned, stored or handed to a call is left alone:
    whoever gets it may save it, or the change is meant for the copy alone (a field
    masked before a response).

    A connection is reported only when its engine is known not to run in AUTOCOMMIT:
    `create_engine(..., isolation_level="AUTOCOMMIT")`, `execution_options(isolation_level=
    ...)` on the engine or the connection, options passed as `**kwargs`, or an engine made
    somewhere the analysis cannot see stay silent. DDL alone is not reported on SQLite and
    MySQL engines, whose drivers run it outside a transaction. Alembic's `env.py` and
    migrations are left alone: Alembic commits their connection. So are the connections
    of a project whose requirements hold SQLAlchemy below 2.0 (`SQLAlchemy==1.4.*`), where
    `engine.connect()` commits an `INSERT` by itself; an engine made with `future=True`
    there does not, and is not told apart.

    A route's session is judged only when the dependency is a project generator that
    closes it (`with`, or `close()` in a `finally`) and never commits; a route handing it
    to a helper is left alone. So is a route given a dependency that may commit the same
    session (FastAPI shares it within a request): by its own `dependencies=[...]`, by its
    router (`APIRouter(dependencies=...)`, or `include_router(router, dependencies=...)`
    anywhere in the project, directly or through a parent router), or by its app
    (`FastAPI(dependencies=...)`). A dependency may commit when it is a project function
    that commits or rolls back, itself or through a function of its module it calls, or
    when it cannot be read (a library's, a class instance, a list built elsewhere); a token
    check or a current-user lookup does not silence anything.

    A Flask view's calls are judged by their target where the analysis knows it (a
    project function, a model's method, the session's or a query's methods, `flask` and
    other libraries that cannot commit); a call on anything else named like a project
    function that may commit (`service.save()`), or any `commit()`, leaves the view
    alone. Flask-SQLAlchemy 2's `SQLALCHEMY_COMMIT_ON_TEARDOWN` (removed in 3.0) is not
    read. Class-based views are judged the same way: the HTTP methods of a `MethodView`
    or a Flask-RESTful / Flask-RESTX `Resource`, a `View`'s `dispatch_request`, unless
    the class lists `decorators`/`method_decorators` that may commit or a base class of
    the project overrides `dispatch_request` with something that may.

    ## Example
    ```python
    def rename(user_id, name):
        with SessionLocal() as session:
            session.execute(update(User).where(User.id == user_id).values(name=name))


    def deactivate(user_id):
        with SessionLocal() as session:
            user = session.get(User, user_id)
            user.active = False


    def archive(day):
        with engine.connect() as conn:
            conn.execute(insert(archive_table).from_select(["id"], select(events.c.id)))
    ```

    Use instead:
    ```python
    def rename(user_id, name):
        with SessionLocal.begin() as session:
            session.execute(update(User).where(User.id == user_id).values(name=name))


    def deactivate(user_id):
        with SessionLocal() as session:
            user = session.get(User, user_id)
            user.active = False
            session.commit()


    def archive(day):
        with engine.begin() as conn:  # or conn.commit() after the writes
            conn.execute(insert(archive_table).from_select(["id"], select(events.c.id)))
    ```

    ## Fix safety
    Unsafe, and offered for connections only: a `with engine.connect() as conn:` block
    that never commits nor rolls back by hand is opened with `engine.begin()` instead,
    which commits when the block ends without an exception. That makes the writes
    permanent, which is what the code meant unless it was a dry run; review it. Sessions
    get no automatic fix (where to commit is a unit-of-work decision).

    ## References
    - [Committing](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    - [Framing out a begin / commit / rollback block](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#framing-out-a-begin-commit-rollback-block)
    - [Commit as you go](https://docs.sqlalchemy.org/en/20/core/connections.html#commit-as-you-go)
    - [Library-level autocommit removed](https://docs.sqlalchemy.org/en/20/changelog/migration_20.html#library-level-but-not-driver-level-autocommit-removed-from-both-core-and-orm)
    - [Setting transaction isolation levels, including DBAPI autocommit](https://docs.sqlalchemy.org/en/20/core/connections.html#setting-transaction-isolation-levels-including-dbapi-autocommit)
    """

    code = "SQD104"
    name = "write-without-commit"
    pitfalls = ("P17",)
    severity = Severity.ERROR
    fix = Applicability.UNSAFE
    message = "`{write}` is never {never}: {why} — {remedy}"

    VALID = (
        # SQLite's driver runs the CREATE TABLE outside a transaction: it stays.
        Valid(_DDL_ON_LOCAL_ENGINE.format(url='f"sqlite:///{path}/foo.db"')),
        Valid(
            _TUPLE_SCRIPT.format(commit="\n    session.commit()"),
            path="scripts/seed.py",
            files=_TUPLE_FILES,
        ),
        Valid(
            _COPY_SCRIPT.format(commit="\n    dst.commit()"),
            path="scripts/copy_users.py",
            files=_FILES,
        ),
        # A migration's session on Alembic's connection, flushed after its writes.
        Valid(
            _MIGRATION_SESSION.format(flush="\n    session.flush()"),
            path="migrations/versions/81c7ffeffeee_.py",
            files=_FILES,
        ),
        # The collection change committed; a JSON list changed in place is no write the
        # session sees (SQLAlchemy does not track it without MutableList).
        Valid(
            _COLLECTION_CHANGE.format(commit="\n        session.commit()"),
            path="app/jobs.py",
            files=_COLLECTION_FILES,
        ),
        # A test that reads its writes back (autoflush) and lets the session roll them away.
        Valid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            def test_create_user():
                with SessionLocal() as session:
                    session.add(User(name="ada"))
                    assert session.scalars(select(User)).one().name == "ada"
            """,
            path="tests/test_users.py",
            files=_FILES,
        ),
        # Cosmic Python's handlers, each committing through the unit of work (or only
        # reading in its block).
        Valid(
            _COSMIC_HANDLERS.format(commit="\n        uow.commit()"),
            path="app/handlers.py",
            files=_COSMIC_FILES,
        ),
        Valid(
            _UNIT_OF_WORK.format(exit="self.session.rollback()", commit="\n        uow.commit()"),
            path="app/services.py",
            files=_FILES,
        ),
        Valid(
            _UNIT_OF_WORK.format(
                exit="if exc_type is None:\n            self.session.commit()", commit=""
            ),
            path="app/services.py",
            files=_FILES,
        ),
        # Routes on a dependency's session that commit: themselves, through a helper,
        # through the dependency (after its `yield`, or one the route declares).
        Valid(
            """
            from fastapi import Depends, FastAPI
            from sqlalchemy import update
            from sqlalchemy.orm import Session
            from app.crud import save
            from app.deps import get_db, get_transaction, get_unit_of_work
            from app.models import User

            app = FastAPI()

            @app.post("/a")
            def a(name: str, db: Session = Depends(get_db)):
                db.add(User(name=name))
                db.commit()

            @app.post("/b")
            def b(name: str, db: Session = Depends(get_db)):
                save(db, User(name=name))

            @app.post("/c")
            def c(name: str, db: Session = Depends(get_unit_of_work)):
                db.add(User(name=name))

            @app.post("/d", dependencies=[Depends(commits_at_the_end)])
            def d(name: str, db: Session = Depends(get_db)):
                db.execute(update(User).values(name=name))

            @app.post("/e")
            def e(name: str, db: Session = Depends(get_transaction)):
                db.add(User(name=name))  # the dependency's begin() block commits it

            def not_a_route(name: str, db: Session = Depends(get_db)):
                db.add(User(name=name))  # a dependency: the route it serves may commit
            """,
            path="app/routes.py",
            files=_DEPENDENCY_FILES,
        ),
        # Dependencies from the router: made with them, included with them elsewhere
        # (through a parent router), or declared by the app for every route.
        Valid(
            """
            from fastapi import APIRouter, Depends
            from sqlalchemy.orm import Session
            from app.deps import commit_after, get_db
            from app.models import User

            router = APIRouter(prefix="/users", dependencies=[Depends(commit_after)])

            @router.post("/")
            def create(name: str, db: Session = Depends(get_db)):
                db.add(User(name=name))
            """,
            path="app/routes.py",
            files=_DEPENDENCY_FILES,
        ),
        Valid(
            """
            from fastapi import APIRouter, Depends
            from sqlalchemy.orm import Session
            from app.deps import get_db
            from app.models import User

            router = APIRouter(prefix="/users", tags=["users"])

            @router.post("/")
            def create(name: str, db: Session = Depends(get_db)):
                db.add(User(name=name))
            """,
            path="app/routes.py",
            files={
                **_DEPENDENCY_FILES,
                "app/main.py": """
                from fastapi import APIRouter, Depends, FastAPI
                from app import routes
                from app.deps import commit_after

                api = APIRouter(prefix="/api")
                api.include_router(routes.router)
                app = FastAPI()
                app.include_router(api, dependencies=[Depends(commit_after)])
                """,
            },
        ),
        Valid(
            """
            from fastapi import APIRouter, Depends
            from sqlalchemy.orm import Session
            from app.deps import get_db
            from app.models import User

            router = APIRouter(prefix="/users", tags=["users"])

            @router.post("/")
            def create(name: str, db: Session = Depends(get_db)):
                db.add(User(name=name))
            """,
            path="app/routes.py",
            files={
                **_DEPENDENCY_FILES,
                "app/main.py": """
                from fastapi import Depends, FastAPI
                from app.deps import commit_after
                from app.routes import router

                def create_app():
                    app = FastAPI(dependencies=[Depends(commit_after)])
                    app.include_router(router)
                    return app
                """,
            },
        ),
        # A dependency that commits through a helper of its module.
        Valid(
            """
            from fastapi import APIRouter, Depends
            from sqlalchemy.orm import Session
            from app.deps import get_db, settle
            from app.models import User

            router = APIRouter(prefix="/users", dependencies=[Depends(settle)])

            @router.post("/")
            def create(name: str, db: Session = Depends(get_db)):
                db.add(User(name=name))
            """,
            path="app/routes.py",
            files=_DEPENDENCY_FILES,
        ),
        # A session with nothing to connect to, used to see what add() cascades to.
        Valid(
            """
            from sqlalchemy.orm import Session

            def cascaded(instance):
                session = Session()
                session.add(instance)
                related = list(session.new)
                session.expunge_all()
                return related
            """
        ),
        Valid(
            """
            from app.db import SessionLocal
            from app.models import User

            def a(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
                    session.commit()

            def b(name):
                with SessionLocal.begin() as session:
                    session.add(User(name=name))

            def c(name):
                with SessionLocal() as session, session.begin():
                    session.add(User(name=name))
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Handed to a function that may commit; a deliberate rollback; a flush in a test.
        Valid(
            """
            from app.db import SessionLocal
            from app.models import User
            from app.service import save

            def a(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
                    save(session)

            def b(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
                    session.rollback()

            def c(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
                    session.flush()
                    assert session.get(User, 1)
            """,
            path="app/jobs.py",
            files={**_FILES, "app/service.py": "def save(session):\n    session.commit()\n"},
        ),
        # A session the function receives: the caller commits (unit of work).
        Valid(
            """
            from sqlalchemy.orm import Session
            from app.models import User

            def create(session: Session, name: str) -> User:
                user = User(name=name)
                session.add(user)
                return user
            """,
            path="app/crud.py",
            files=_FILES,
        ),
        # Reads only.
        Valid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            def names():
                with SessionLocal() as session:
                    return session.scalars(select(User.name)).all()
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # A requests session's `delete()` is not a write to the database.
        Valid(
            """
            import requests

            def purge(url):
                with requests.Session() as session:
                    session.delete(url)
            """,
            path="app/jobs.py",
            files=_FILES,
        ),
        # Core: committed after the writes, `engine.begin()`, a `conn.begin()` block, a
        # transaction begun by hand.
        Valid(
            """
            from sqlalchemy import insert, update
            from app.core import engine, events

            def a(rows):
                with engine.connect() as conn:
                    conn.execute(insert(events), rows)
                    conn.execute(update(events).values(seen=True))
                    conn.commit()

            def b(rows):
                with engine.begin() as conn:
                    conn.execute(insert(events), rows)

            def c(rows):
                with engine.connect() as conn, conn.begin():
                    conn.execute(events.insert(), rows)

            def d(rows):
                with engine.connect() as conn:
                    trans = conn.begin()
                    conn.execute(insert(events), rows)
                    trans.commit()

            async def e(aengine, rows):
                async with aengine.connect() as conn:
                    for row in rows:
                        await conn.execute(insert(events).values(**row))
                    await conn.commit()
            """,
            path="app/jobs.py",
            files=_CORE_FILES,
        ),
        # A project held below SQLAlchemy 2.0: 1.x's `engine.connect()` commits DML itself.
        Valid(
            """
            from sqlalchemy import insert
            from app.core import engine, events

            def record(rows):
                with engine.connect() as conn:
                    conn.execute(insert(events), rows)
            """,
            path="app/jobs.py",
            files={**_CORE_FILES, "requirements.txt": "SQLAlchemy==1.4.54\n"},
        ),
        # A test that reads its writes back on the connection, then lets them roll back.
        Valid(
            """
            from sqlalchemy import insert, select
            from app.core import engine, events

            def test_insert_round_trips():
                with engine.connect() as conn:
                    conn.execute(insert(events).values(seen=True))
                    assert conn.execute(select(events.c.seen)).scalar_one()
            """,
            path="tests/test_events.py",
            files=_CORE_FILES,
        ),
        # AUTOCOMMIT: on the engine, on the connection, on an engine made here.
        Valid(
            """
            from sqlalchemy import create_engine, insert, text
            from app.core import autocommit_engine, engine, events

            def a(rows):
                with autocommit_engine.connect() as conn:
                    conn.execute(insert(events), rows)

            def b():
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.execute(text("VACUUM ANALYZE events"))
                    conn.execute(text("DELETE FROM events WHERE seen"))

            def c():
                with engine.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    conn.exec_driver_sql("CREATE INDEX CONCURRENTLY ix_seen ON events (seen)")

            def d(url):
                admin = create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(text("CREATE DATABASE reports"))
            """,
            path="app/jobs.py",
            files=_CORE_FILES,
        ),
        # Reads; a connection received (the caller commits); handed to a helper after the
        # write; a dry run rolled back on purpose; `COMMIT` by hand; DDL on SQLite, whose
        # driver runs it outside the transaction; a connection opened but never closed here.
        Valid(
            """
            from sqlalchemy import Connection, delete, insert, select, text
            from app.core import engine, events, local_engine, metadata
            from app.helpers import finish

            def a():
                with engine.connect() as conn:
                    rows = conn.execute(select(events)).all()
                    total = conn.execute(text("SELECT count(*) FROM events")).scalar()
                    return rows, total

            def b(conn: Connection, rows):
                conn.execute(insert(events), rows)

            def c(rows):
                with engine.connect() as conn:
                    conn.execute(insert(events), rows)
                    finish(conn)

            def d():
                with engine.connect() as conn:
                    deleted = conn.execute(delete(events).where(events.c.seen)).rowcount
                    conn.rollback()
                    return deleted

            def e():
                with engine.connect() as conn:
                    conn.exec_driver_sql("DELETE FROM events")
                    conn.exec_driver_sql("COMMIT")

            def f():
                with local_engine.connect() as conn:
                    conn.execute(text("CREATE TABLE IF NOT EXISTS kv (k TEXT, v TEXT)"))
                    metadata.create_all(conn)

            def g():
                conn = engine.connect()
                conn.execute(insert(events).values(seen=False))
                return conn
            """,
            path="app/jobs.py",
            files={**_CORE_FILES, "app/helpers.py": "def finish(conn):\n    conn.commit()\n"},
        ),
        # A probe that the database takes writes: the table it creates, it drops.
        Valid(
            """
            from sqlalchemy import text
            from app.core import engine

            def wait_until_writable():
                with engine.connect() as conn:
                    conn.execute(text("CREATE TABLE IF NOT EXISTS probe (id INT)"))
                    conn.execute(text("DROP TABLE probe"))
            """,
            path="app/jobs.py",
            files=_CORE_FILES,
        ),
        # Lookalikes: the standard library's sqlite3 (whose `with` commits), a client's
        # connect().
        Valid(
            """
            import sqlite3

            def a(path):
                with sqlite3.connect(path) as conn:
                    conn.execute("INSERT INTO events (seen) VALUES (0)")

            def b(client):
                with client.connect() as conn:
                    conn.execute("DELETE FROM events")
            """,
            path="app/jobs.py",
            files=_CORE_FILES,
        ),
        # Alembic's env.py: the connection is handed to Alembic, which commits.
        Valid(
            """
            from alembic import context
            from sqlalchemy import engine_from_config, pool, text

            def run_migrations_online():
                connectable = engine_from_config(
                    context.config.get_section(context.config.config_ini_section, {}),
                    prefix="sqlalchemy.",
                    poolclass=pool.NullPool,
                )
                with connectable.connect() as connection:
                    connection.execute(text("SET lock_timeout = '5s'"))
                    connection.execute(text("CREATE SCHEMA IF NOT EXISTS app"))
                    context.configure(connection=connection, target_metadata=None)
                    with context.begin_transaction():
                        context.run_migrations()
            """,
            path="migrations/env.py",
            files=_CORE_FILES,
        ),
        # A factory whose Session subclass commits in `__exit__` (`sessionmaker(class_=...)`):
        # the `with` block commits like `.begin()`.
        Valid(
            """
            from app.db import Session

            def remember(name):
                with Session() as session:
                    session.add(Seen(name=name))
            """,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/db.py": _CONTEXT_SESSION},
        ),
        # Loaded objects changed for the caller (a masked copy, a helper that saves it),
        # a change the block commits, attributes that are not mapped, and a change made
        # after the block closed (the object is detached: nothing would flush it).
        Valid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User
            from app.service import save

            def public_users():
                with SessionLocal() as session:
                    users = session.scalars(select(User)).all()
                    for user in users:
                        user.name = user.name.title()
                    return users

            def masked(user_id):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    user.name = "***"
                    return user

            def saved(user_id):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    user.name = "ada"
                    save(user)

            def committed(user_id):
                with SessionLocal() as session:
                    for user in session.scalars(select(User).where(User.id > user_id)):
                        user.name += "!"
                    session.commit()

            def cached(user_id):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    user._display = user.name.upper()
                    print(user._display)

            def after_close(user_id):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                user.name = "ada"
                print(user.name)
            """,
            path="app/jobs.py",
            files={**_FILES, "app/service.py": "def save(user):\n    pass\n"},
        ),
        # Flask views that commit, call a helper that commits, are wrapped by a
        # decorator that commits, or only read.
        Valid(
            """
            from flask import Blueprint, current_app, request
            from app.ext import db
            from app.models import User
            from app.store import save, transactional

            bp = Blueprint("users", __name__)

            @bp.post("/users")
            def create():
                db.session.add(User(name=request.form["name"]))
                db.session.commit()
                return "", 201

            @bp.post("/users/<int:user_id>")
            def rename(user_id):
                user = db.session.get(User, user_id)
                user.name = request.form["name"]
                save(user)
                return ""

            @bp.route("/users/<int:user_id>", methods=["DELETE"])
            @transactional
            def remove(user_id):
                db.session.delete(db.session.get(User, user_id))
                return ""

            @bp.get("/users/<int:user_id>")
            def show(user_id):
                return db.session.get(User, user_id).name

            @bp.put("/users/<int:user_id>")
            def replace(user_id):
                db.session.add(User(id=user_id, name=request.form["name"]))
                current_app.extensions["sqlalchemy"].session.commit()
                return ""
            """,
            path="app/views.py",
            files=_FLASK_FILES,
        ),
        # Class-based views that commit, are decorated (every handler) with what commits,
        # or inherit a dispatch_request() that commits; a helper method of a view class.
        Valid(
            """
            from flask import request
            from flask.views import MethodView
            from flask_restx import Resource
            from app.ext import db
            from app.models import User
            from app.store import transactional

            class UserAPI(MethodView):
                def post(self):
                    db.session.add(User(name=request.form["name"]))
                    db.session.commit()
                    return "", 201

                def stage(self, name):
                    db.session.add(User(name=name))

            class Users(Resource):
                method_decorators = [transactional]

                def post(self):
                    db.session.add(User(name=request.json["name"]))
                    return {}, 201

            class CommittingResource(Resource):
                def dispatch_request(self, *args, **kwargs):
                    response = super().dispatch_request(*args, **kwargs)
                    db.session.commit()
                    return response

            class Renames(CommittingResource):
                def put(self, user_id):
                    db.session.get(User, user_id).name = request.json["name"]
                    return {}
            """,
            path="app/views.py",
            files=_FLASK_FILES,
        ),
        # An app whose teardown hook commits what the views wrote.
        Valid(
            """
            from flask import Flask, request
            from app.ext import db
            from app.models import User

            app = Flask(__name__)

            @app.teardown_appcontext
            def commit_session(exc):
                if exc is None:
                    db.session.commit()

            @app.post("/users")
            def create():
                db.session.add(User(name=request.form["name"]))
                return "", 201
            """,
            path="app/main.py",
            files=_FLASK_FILES,
        ),
        # The block's context manager commits only `if commit:`, and these calls say
        # true (or maybe: a variable, `**options`).
        *(
            Valid(_FLAG_BLOCK.format(args=args), path="app/views.py", files=_FLAG_FILES)
            for args in ("commit=True", "True", "commit=save", "**options")
        ),
    )
    INVALID = (
        # The same context manager, left at its default False or told False.
        *(
            Invalid(
                _FLAG_BLOCK.format(args=args),
                path="app/views.py",
                files=_FLAG_FILES,
                line=6,
                expected_message=(
                    "`session.add(User(name=name))` is never committed: `session` (line 5) "
                    "is closed without `session.commit()`, which rolls the write back — "
                    "`scope()` commits only when `commit` is true: pass `commit=True`, or "
                    "commit before the block ends"
                ),
            )
            for args in ("", "commit=False")
        ),
        # On PostgreSQL the CREATE TABLE is rolled back as the connection closes.
        Invalid(
            _DDL_ON_LOCAL_ENGINE.format(url='f"postgresql+psycopg://app@{host}/app"'),
            line=7,
        ),
        Invalid(
            _TUPLE_SCRIPT.format(commit=""),
            path="scripts/seed.py",
            files=_TUPLE_FILES,
            line=6,
            expected_message=(
                '`session.add(User(name="admin"))` is never committed: `session` (line 5) is '
                "closed without `session.commit()`, which rolls the write back — commit "
                "before the block ends, or open it with `.begin()`"
            ),
        ),
        Invalid(
            _COPY_SCRIPT.format(commit=""),
            path="scripts/copy_users.py",
            files=_FILES,
            line=9,
            expected_message=(
                "`dst.add(User(name=user.name))` is never committed: `dst` (line 7) is "
                "closed without `dst.commit()`, which rolls the write back — commit before "
                "the block ends, or open it with `.begin()`"
            ),
        ),
        # pgAdmin's revision deleting old preferences: no query runs after the deletes,
        # so nothing flushes them, and the migration's transaction commits without them.
        Invalid(
            _MIGRATION_SESSION.format(flush=""),
            path="migrations/versions/81c7ffeffeee_.py",
            files=_FILES,
            line=12,
            expected_message=(
                "`session.delete(old_setting)` is never flushed: `session` (line 9) is bound "
                "to `op.get_bind()`, and nothing flushes it after this write, so the write is "
                "never sent — call `session.flush()` (or `session.commit()`) after the last "
                "write"
            ),
        ),
        # `with uow:` on the unit of work a handler is given: an object added through its
        # repository, and one its repository loaded then changed, never committed.
        Invalid(
            _COSMIC_HANDLERS.format(commit=""),
            path="app/handlers.py",
            files=_COSMIC_FILES,
            count=2,
            expected_message=(
                "`uow.users.add(User(name=name))` is never committed: `uow` (line 5) ends in "
                "`AbstractUnitOfWork.__exit__()` without `uow.commit()`, which rolls the "
                "write back — call `uow.commit()` before the block ends"
            ),
        ),
        Invalid(
            _UNIT_OF_WORK.format(exit="self.session.rollback()", commit=""),
            path="app/services.py",
            files=_FILES,
            line=20,
            expected_message=(
                "`uow.session.add(User(email=email))` is never committed: `uow` (line 19) is "
                "closed by `UnitOfWork.__exit__()` without `uow.commit()`, which rolls the "
                "write back — call `uow.commit()` before the block ends"
            ),
        ),
        # A Session subclass whose `__exit__` only closes.
        Invalid(
            """
            from app.db import PlainSession

            def remember(name):
                with PlainSession() as session:
                    session.add(Seen(name=name))
            """,
            path="app/jobs.py",
            files={"app/__init__.py": "", "app/db.py": _CONTEXT_SESSION},
            line=5,
        ),
        # A route writing through a dependency that closes the session without a commit:
        # flushed or not, the write is rolled back when the request ends.
        Invalid(
            """
            from typing import Annotated

            from fastapi import APIRouter, Depends
            from sqlalchemy.orm import Session
            from app.deps import get_db
            from app.models import User

            router = APIRouter()

            @router.post("/users")
            def create(name: str, db: Annotated[Session, Depends(get_db)]) -> int:
                user = User(name=name)
                db.add(user)
                db.flush()
                return user.id
            """,
            path="app/routes.py",
            files=_DEPENDENCY_FILES,
            line=13,
            expected_message=(
                "`db.add(user)` is never committed: `get_db()` (app/deps.py:9) closes `db` "
                "when the request ends without `db.commit()`, which rolls the write back — "
                "call `db.commit()` after the writes, or commit in `get_db()` after its "
                "`yield`"
            ),
        ),
        # Dependencies that only read (FastAPI's global-dependency shape: a token check,
        # the current user) commit nothing: on the route, its router or the app.
        Invalid(
            """
            from fastapi import APIRouter, Depends, FastAPI, Header
            from sqlalchemy.orm import Session
            from app.deps import current_user, get_db
            from app.models import User

            async def verify_token(x_token: str = Header()):
                if x_token != "secret":
                    raise ValueError(x_token)

            app = FastAPI(dependencies=[Depends(verify_token)])
            router = APIRouter(prefix="/users", dependencies=[Depends(current_user)])

            @router.post("/", dependencies=[Depends(verify_token), Depends(current_user)])
            def create(name: str, db: Session = Depends(get_db)):
                db.add(User(name=name))

            app.include_router(router, dependencies=[Depends(current_user)])
            """,
            path="app/routes.py",
            files=_DEPENDENCY_FILES,
            line=15,
        ),
        # A router with a prefix and tags but no dependencies, included without any.
        Invalid(
            """
            from fastapi import APIRouter, Depends, FastAPI
            from sqlalchemy.orm import Session
            from app.deps import get_db
            from app.models import User

            router = APIRouter(prefix="/users", tags=["users"])

            @router.post("/")
            def create(name: str, db: Session = Depends(get_db)):
                db.add(User(name=name))

            app = FastAPI(title="users")
            app.include_router(router, prefix="/api")
            """,
            path="app/routes.py",
            files=_DEPENDENCY_FILES,
            line=10,
        ),
        # The probe keeps the table it creates.
        Invalid(
            """
            from sqlalchemy import text
            from app.core import engine

            def wait_until_writable():
                with engine.connect() as conn:
                    conn.execute(text("DROP TABLE IF EXISTS probe"))
                    conn.execute(text("CREATE TABLE probe (id INT)"))

            def setup():
                with engine.connect() as conn:
                    conn.execute(text("CREATE TABLE kv (k TEXT, v TEXT)"))
            """,
            path="app/jobs.py",
            files=_CORE_FILES,
            line=6,
            count=2,
        ),
        Invalid(
            """
            from app.db import SessionLocal
            from app.models import User

            def create(name):
                with SessionLocal() as session:
                    session.add(User(name=name))
            """,
            path="app/jobs.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`session.add(User(name=name))` is never committed: `session` (line 5) is "
                "closed without `session.commit()`, which rolls the write back — commit before "
                "the block ends, or open it with `.begin()`"
            ),
        ),
        # A bulk UPDATE through execute().
        Invalid(
            """
            import sqlalchemy as sa
            from app.db import SessionLocal
            from app.models import User

            def rename(user_id, name):
                with SessionLocal() as s:
                    s.execute(sa.update(User).where(User.id == user_id).values(name=name))
            """,
            path="app/jobs.py",
            files=_FILES,
            line=7,
        ),
        # Raw DML through text().
        Invalid(
            """
            from sqlalchemy import text
            from app.db import SessionLocal

            def purge():
                session = SessionLocal()
                try:
                    session.execute(text("DELETE FROM audit WHERE created < now() - interval '1y'"))
                finally:
                    session.close()
            """,
            path="app/jobs.py",
            files=_FILES,
            line=7,
        ),
        # Async, delete() of a loaded object.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.models import User

            async def remove(engine, user_id):
                async with AsyncSession(engine) as session:
                    user = await session.get(User, user_id)
                    await session.delete(user)
            """,
            path="app/jobs.py",
            files=_FILES,
            line=7,
        ),
        # A Celery-style task with a session from the factory and add_all().
        Invalid(
            """
            from app import db
            from app.models import User

            def import_rows(rows):
                with db.SessionLocal() as session:
                    session.add_all([User(name=row["name"]) for row in rows])
                    return len(rows)
            """,
            path="app/tasks.py",
            files=_FILES,
            line=6,
        ),
        # Core "commit as you go": the connection rolls the insert back when it closes.
        Invalid(
            """
            from sqlalchemy import insert
            from app.core import engine, events

            def record(rows):
                with engine.connect() as conn:
                    conn.execute(insert(events), rows)
            """,
            path="app/jobs.py",
            files=_CORE_FILES,
            line=6,
            expected_message=(
                "`conn.execute(insert(events), rows)` is never committed: `conn` (line 5) is "
                "closed without `conn.commit()`, which rolls the write back — commit before "
                "the block ends, or open it with `engine.begin()`"
            ),
            expected_fix="""
            from sqlalchemy import insert
            from app.core import engine, events

            def record(rows):
                with engine.begin() as conn:
                    conn.execute(insert(events), rows)
            """,
        ),
        # Async, with the tables created through run_sync() on PostgreSQL.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            from app.core import metadata

            engine = create_async_engine("postgresql+asyncpg://app@db/app")

            async def init_models():
                async with engine.connect() as conn:
                    await conn.run_sync(metadata.create_all)
            """,
            path="app/startup.py",
            files=_CORE_FILES,
            line=8,
            expected_fix="""
            from sqlalchemy.ext.asyncio import create_async_engine
            from app.core import metadata

            engine = create_async_engine("postgresql+asyncpg://app@db/app")

            async def init_models():
                async with engine.begin() as conn:
                    await conn.run_sync(metadata.create_all)
            """,
        ),
        # A test fixture writing rows that no one reads back on that connection: the rows
        # are gone before the test runs. Requirements that allow 2.x judge connections.
        Invalid(
            """
            from sqlalchemy import insert
            from app.core import engine, events

            def seed_events(rows):
                with engine.connect() as conn:
                    conn.execute(insert(events), rows)
            """,
            path="tests/fixtures.py",
            files={**_CORE_FILES, "requirements.txt": "SQLAlchemy>=1.4,<2.1\n"},
            line=6,
        ),
        # A write after the last commit.
        Invalid(
            """
            from sqlalchemy import insert, update
            from app.core import engine, events

            def record(rows):
                with engine.connect() as conn:
                    conn.execute(insert(events), rows)
                    conn.commit()
                    conn.execute(update(events).values(seen=True))
            """,
            path="app/jobs.py",
            files=_CORE_FILES,
            line=8,
            expected_message=(
                "`conn.execute(update(events).values(seen=True))` is never committed: `conn` "
                "(line 5) is closed without `conn.commit()` after it, which rolls the write "
                "back — commit before the block ends, or open it with `engine.begin()`"
            ),
        ),
        # Opened and closed by hand; rolled back only when it fails; SQL text through a
        # name; a table's insert(); an engine passed in; a second block on the same name.
        Invalid(
            """
            from sqlalchemy import text
            from app.core import engine, events

            PURGE = "DELETE FROM events WHERE seen"

            def purge():
                conn = engine.connect()
                try:
                    conn.execute(text(PURGE))
                finally:
                    conn.close()

            def record(row):
                with engine.connect() as conn:
                    try:
                        conn.execute(events.insert().values(**row))
                    except Exception:
                        conn.rollback()
                        raise

            def seed(db_engine):
                with db_engine.connect() as conn:
                    conn.exec_driver_sql("INSERT INTO events (seen) VALUES (false)")

            def copy(source):
                with source.connect() as conn:
                    rows = conn.execute(events.select()).mappings().all()
                with engine.connect() as conn:
                    conn.execute(events.insert(), rows)
            """,
            path="app/jobs.py",
            files=_CORE_FILES,
            line=9,
            count=4,
        ),
        # A script: module-level code, DDL on PostgreSQL.
        Invalid(
            """
            from sqlalchemy import text
            from app.core import engine

            with engine.connect() as conn:
                conn.execute(text("ALTER TABLE events ADD COLUMN source text"))
                print("done")
            """,
            path="scripts/add_source.py",
            files=_CORE_FILES,
            line=5,
        ),
        # A relationship collection of a loaded object changed in place, never committed.
        Invalid(
            _COLLECTION_CHANGE.format(commit=""),
            path="app/jobs.py",
            files=_COLLECTION_FILES,
            line=7,
            expected_message=(
                "`user.posts.append(Post(title=title))` is never committed: `session` (line "
                "5) is closed without `session.commit()`, which rolls the write back — "
                "commit before the block ends, or open it with `.begin()`"
            ),
        ),
        # A loaded object changed and never committed: the classic forgotten commit of
        # an update, in a loop over results and on one object.
        Invalid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import User

            def rename(user_id, name):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    user.name = name

            def shout(prefix):
                with SessionLocal() as session:
                    for user in session.scalars(select(User).where(User.name.startswith(prefix))):
                        user.name += "!"
            """,
            path="app/jobs.py",
            files=_FILES,
            line=8,
            count=2,
            expected_message=(
                "`user.name = name` is never committed: `session` (line 6) is closed "
                "without `session.commit()`, which rolls the write back — commit before "
                "the block ends, or open it with `.begin()`"
            ),
        ),
        # A session made and never closed (FlexGet's version checker): dropped with the
        # function, it rolls back; one closed explicitly is told it is closed.
        Invalid(
            """
            from app.db import SessionLocal
            from app.models import User

            def remember(name):
                session = SessionLocal()
                if session.query(User).filter_by(name=name).first():
                    return
                session.add(User(name=name))

            def forget(name):
                session = SessionLocal()
                session.add(User(name=name))
                session.close()
            """,
            path="app/jobs.py",
            files=_FILES,
            count=2,
            expected_message=(
                "`session.add(User(name=name))` is never committed: `session` (line 5) is "
                "never closed, and is dropped without `session.commit()`, which rolls the "
                "write back — commit after the last write, and close it: `with "
                "SessionLocal() as session:`"
            ),
        ),
        # The same in a route, on the session of a dependency that only closes it.
        Invalid(
            """
            from fastapi import APIRouter, Depends
            from sqlalchemy.orm import Session
            from app.deps import get_db
            from app.models import User

            router = APIRouter()

            @router.put("/users/{user_id}")
            def rename(user_id: int, name: str, db: Session = Depends(get_db)):
                user = db.get(User, user_id)
                user.name = name
                return {"ok": True}
            """,
            path="app/routes.py",
            files=_DEPENDENCY_FILES,
            line=11,
        ),
        # Flask views writing through `db.session` with no commit.
        Invalid(
            """
            from flask import Blueprint, request
            from app.ext import db
            from app.models import User

            bp = Blueprint("users", __name__)

            @bp.post("/users")
            def create():
                db.session.add(User(name=request.form["name"]))
                return "", 201

            @bp.route("/users/<int:user_id>", methods=["POST"])
            def rename(user_id):
                user = db.session.get(User, user_id)
                user.name = request.form["name"]
                return ""

            # Flask's `request.args.get()` is not the project's committing `get()`.
            @bp.post("/users/<int:user_id>/name")
            def rename_from_query(user_id):
                user = User.query.get_or_404(user_id)
                user.name = request.args.get("name")
                return ""
            """,
            path="app/views.py",
            files=_FLASK_FILES,
            line=9,
            count=3,
            expected_message=(
                "`db.session.add(User(name=request.form[\"name\"]))` is never committed: "
                "Flask-SQLAlchemy removes `db.session` when the request ends without "
                "`db.session.commit()`, which rolls the write back — call "
                "`db.session.commit()` after the writes"
            ),
        ),
        # The same in class-based views: a MethodView's handler, a Resource's through a
        # base class of the project.
        Invalid(
            """
            from flask import request
            from flask.views import MethodView
            from flask_restful import Resource
            from app.ext import db
            from app.models import User

            class UserAPI(MethodView):
                def post(self):
                    db.session.add(User(name=request.form["name"]))
                    return "", 201

            class BaseResource(Resource):
                decorators = []

            class Renames(BaseResource):
                def put(self, user_id):
                    user = db.session.get(User, user_id)
                    user.name = request.json["name"]
                    return {}
            """,
            path="app/views.py",
            files=_FLASK_FILES,
            line=9,
            count=2,
        ),
    )

    @cached_property
    def objects(self) -> SqlaObjects:
        return SqlaObjects(self.ctx, self.ctx.dataflow)

    @cached_property
    def statements(self) -> Statements:
        return Statements(self.ctx)

    @cached_property
    def in_alembic(self) -> bool:
        """An Alembic env.py or migration: its connection is Alembic's to commit."""
        return any(
            target == "alembic" or target.startswith(("alembic.op", "alembic.context"))
            for target in self.ctx.names.names.imports.values()
        )

    @cached_property
    def judges_connections(self) -> bool:
        """Not in Alembic's env.py and migrations (the connection is Alembic's to commit),
        nor in a project held below SQLAlchemy 2.0, where `engine.connect()` commits DML
        by itself (1.x's library-level autocommit)."""
        return not self.in_alembic and not self.ctx.index.sqlalchemy_below_2

    def visit_Module(self, node: ast.Module) -> None:
        # Scripts open sessions and connections at module level (`with Session(engine)
        # as session:`, `with engine.connect() as conn:`).
        connections = "connect" in self.ctx.source and self.judges_connections
        if not connections and not runs_code(node):
            return
        flow = flow_for(self.ctx, node)
        if runs_code(node):
            self._check_sessions(flow)
        if connections:
            for owned in owned_connections(flow):
                self._check_connection(flow, owned)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if not worth_analysing(self.ctx, node):
            return
        flow = flow_for(self.ctx, node)
        self._check_sessions(flow)
        if self.judges_connections:
            for connection in owned_connections(flow):
                self._check_connection(flow, connection)
        if route_decorators(node):
            for name, binding, value in flow.sessions():
                if binding.kind == "param" and value.how == "depends":
                    self._check_dependency(flow, node, name, value)
            self._check_flask_view(flow, node)
        elif self._class_view_method(node):
            self._check_flask_view(flow, node)
        for name, bindings in flow.bindings.items():
            if len(bindings) == 1 and bindings[0].kind == "with":
                binding = bindings[0]
                assert isinstance(binding.node, (ast.With, ast.AsyncWith))
                if binding.value is not None:
                    self._check_unit_of_work(
                        flow, name, binding.value, binding.node, binding.pos[0]
                    )
        for block in flow.withs:
            for item in block.items:
                # `with uow:` on a unit of work the function was given (Cosmic Python).
                expr = item.context_expr
                if (
                    item.optional_vars is None
                    and isinstance(expr, ast.Name)
                    and len(flow.bindings.get(expr.id, ())) == 1
                ):
                    self._check_unit_of_work(flow, expr.id, expr, block, block.lineno)

    visit_AsyncFunctionDef = visit_FunctionDef

    def _check_sessions(self, flow: FunctionFlow) -> None:
        for owned in owned_sessions(flow):
            if owned.value.commits or owned.value.scoped or owned.value.how == "flask":
                continue
            self._check(flow, owned)

    def _check_unit_of_work(
        self,
        flow: FunctionFlow,
        name: str,
        entered: ast.expr,
        block: ast.With | ast.AsyncWith,
        line: int,
    ) -> None:
        """``with UnitOfWork() as uow: uow.session.add(x)`` (or ``with uow:``, writing
        through a repository it holds: ``uow.products.add(x)``, a change to an object
        ``uow.products.get()`` loaded) with no ``uow.commit()``, where the class's
        ``__exit__``/``__aexit__`` rolls back or closes its session and never commits."""
        instance = flow.value(entered)
        if not isinstance(instance, InstanceValue) or escapes(flow, name):
            return
        is_async = isinstance(block, ast.AsyncWith)
        index = self.ctx.index
        exit_name = "__aexit__" if is_async else "__exit__"
        exits = exit_method(index, instance.cls, is_async=is_async)
        if exits is None or "commit" in exits.calls:
            return
        # The attributes its exit rolls back or closes: the sessions it holds.
        held = sessions_ended(exits, "rollback()", "close()")
        rolls_back = held or (0, False, ("rollback()",)) in exits.reads
        if not rolls_back or {m for m, _ in method_calls(flow, name)} & _SETTLED:
            return
        writes = [
            self._lost_write(flow, f"{name}.{attr}", settled=_SETTLED) for attr in sorted(held)
        ]
        writes.extend(
            self._lost_write(flow, f"{name}.{attr}", settled=_SETTLED, changes_in=block)
            for attr in _repositories(index, instance.cls, held)
        )
        lost = [write for write in writes if write is not None]
        if not lost:
            return
        write = min(lost, key=_start)
        cls_name = instance.cls.rpartition(".")[2]
        commit = f"{'await ' if is_async else ''}{name}.commit()"
        ends = "is closed by" if held else "ends in"
        self.report(
            write,
            write=_shorten(self.ctx.text(write)),
            never="committed",
            why=_rolled_back(f"`{name}` (line {line}) {ends} `{cls_name}.{exit_name}()`", name, ""),
            remedy=f"call `{commit}` before the block ends",
        )

    def _check(self, flow: FunctionFlow, owned: OwnedSession) -> None:
        name = owned.name
        # A session that can never connect, or objects added and then expunged, are
        # deliberately not written (code computing cascades with `session.new`); a flush
        # without a commit is a test's or a dry run's.
        if unbound(owned.value, owned.binding.value):
            return
        # On a connection someone else commits (an Alembic migration, a test), statements
        # run in that transaction; only objects never flushed are lost.
        on_connection = bound_to_connection(flow, owned.binding.value)
        write = self._lost_write(
            flow,
            name,
            settled=_SETTLED | {"expunge_all", "flush"},
            not_writes=frozenset({"execute"}) if on_connection else frozenset(),
            # Changed objects of a session on someone else's connection are flushed by
            # the session's next query or never; only the with block's own are judged.
            changes_in=None if on_connection else (owned.block or flow.node),
        )
        if write is None:
            return
        if self.ctx.in_tests and any(
            method in _READS and _start(call) > _start(write)
            for method, call in method_calls(flow, name)
        ):
            # A test reading its writes back through autoflush, then rolling them away
            # with the session: isolation on purpose.
            return
        line = owned.binding.node.lineno  # type: ignore[attr-defined]
        if on_connection:
            # Nothing closes or rolls back such a session: its pending objects are simply
            # never sent, while the connection's owner commits what was.
            self.report(
                write,
                write=_shorten(self.ctx.text(write)),
                never="flushed",
                why=(
                    f"`{name}` (line {line}) is bound to {self._bind_text(owned)}, and nothing "
                    "flushes it after this write, so the write is never sent"
                ),
                remedy=f"call `{name}.flush()` (or `{name}.commit()`) after the last write",
            )
            return
        if owned.block is None and not any(
            method == "close" for method, _ in method_calls(flow, name)
        ):
            # Never closed: the pool rolls its connection back when the session is
            # garbage-collected.
            made = owned.binding.value
            factory = _shorten(self.ctx.text(made)) if made is not None else "Session()"
            self.report(
                write,
                write=_shorten(self.ctx.text(write)),
                never="committed",
                why=_rolled_back(
                    f"`{name}` (line {line}) is never closed, and is dropped", name, ""
                ),
                remedy=(
                    f"commit after the last write, and close it: `with {factory} as {name}:`"
                ),
            )
            return
        remedy = "commit before the block ends, or open it with `.begin()`"
        flag = self.ctx.index.commit_flag(owned.value.source)
        entered = owned.value.node
        if flag is not None and isinstance(entered, ast.Call):
            # `with scope() as s:` whose provider commits only `if commit:`.
            remedy = (
                f"`{_shorten(self.ctx.text(entered.func))}()` commits only when `{flag.name}` "
                f"is true: pass `{flag.name}=True`, or commit before the block ends"
            )
        self.report(
            write,
            write=_shorten(self.ctx.text(write)),
            never="committed",
            why=_rolled_back(f"`{name}` (line {line}) is closed", name, ""),
            remedy=remedy,
        )

    def _bind_text(self, owned: OwnedSession) -> str:
        """``op.get_bind()`` of ``Session(bind=op.get_bind())``, or what it is."""
        made = owned.binding.value
        if isinstance(made, ast.Await):
            made = made.value
        bind = None
        if isinstance(made, ast.Call):
            bind = next((k.value for k in made.keywords if k.arg == "bind"), None)
            if bind is None and made.args:
                bind = made.args[0]
        text = " ".join(self.ctx.text(bind).split()) if bind is not None else ""
        return f"`{text}`" if text and len(text) <= 40 else "a connection it was given"

    def _check_dependency(
        self,
        flow: FunctionFlow,
        route: ast.FunctionDef | ast.AsyncFunctionDef,
        name: str,
        value: SessionValue,
    ) -> None:
        """A route writing through the session a generator dependency yields, which
        closes it when the request ends without committing: nothing commits the write."""
        index = self.ctx.index
        source = index.session_source(value.source)
        if (
            source is None
            or source.kind != "provider"
            or source.style != "generator"
            or not source.managed
            or source.commits
            or source.scoped
        ):
            return
        decorators = route_decorators(route)
        names, index = self.ctx.names, self.ctx.index
        if any(
            declares_dependencies(d) and index.dependencies_may_commit(dependency_targets(names, d))
            for d in decorators
        ):
            return  # a dependency of the route's own may commit the same session
        if any(self._router_may_commit(d) for d in decorators):
            return  # so may one its router declares, or one it is included with
        # Flushed or not, what the route wrote is rolled back when the request ends.
        write = self._lost_write(flow, name, settled=_SETTLED, changes_in=flow.node)
        if write is None:
            return
        provider = index.function(source.qualname)
        assert provider is not None  # a provider source is a project function
        where = f"{index.path_of(provider.qualname) or '?'}:{provider.line}"
        commit = f"{'await ' if value.is_async else ''}{name}.commit()"
        self.report(
            write,
            write=_shorten(self.ctx.text(write)),
            never="committed",
            why=_rolled_back(
                f"`{provider.name}()` ({where}) closes `{name}` when the request ends", name, ""
            ),
            remedy=(
                f"call `{commit}` after the writes, or commit in `{provider.name}()` "
                "after its `yield`"
            ),
        )

    def _check_flask_view(
        self, flow: FunctionFlow, view: ast.FunctionDef | ast.AsyncFunctionDef
    ) -> None:
        """A Flask view writing through Flask-SQLAlchemy's ``db.session`` with no commit:
        the session is removed when the request's app context ends, which rolls back
        whatever was not committed. Left alone when anything the view calls or is decorated
        with may commit (see _call_may_commit) or a request hook of the project commits."""
        keys = [
            key
            for key, calls in flow.receiver_calls.items()
            if "." in key
            and isinstance(calls[0].func, ast.Attribute)
            and (session := flow.session_of(calls[0].func.value)) is not None
            and session.how == "flask"
        ]
        # `User.query.get(id)` loads through the session of the model's `db` too.
        keys.extend(key for key in self._flask_sessions if key not in keys)
        if not keys or any(
            method in _SETTLED for key in keys for method, _ in method_calls(flow, key)
        ):
            return
        index = self.ctx.index
        committing = index.committing_names()
        if any(_decorator_may_commit(d, committing) for d in view.decorator_list):
            return
        if any(self._call_may_commit(flow, call, keys, committing) for call in _calls_in(view)):
            return
        if index.flask_hooks_commit():
            return
        for key in keys:
            write = self._lost_write(flow, key, settled=_SETTLED, changes_in=view)
            if write is None:
                continue
            self.report(
                write,
                write=_shorten(self.ctx.text(write)),
                never="committed",
                why=_rolled_back(
                    f"Flask-SQLAlchemy removes `{key}` when the request ends", key, ""
                ),
                remedy=f"call `{key}.commit()` after the writes",
            )
            return

    def _class_view_method(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        """A handler of a class-based Flask view: an HTTP method of a `MethodView` (or a
        Flask-RESTful / Flask-RESTX `Resource`), `dispatch_request` of a `View`, whose
        class lists no decorators (`decorators`, `method_decorators`) that may commit and
        whose project bases override `dispatch_request` with nothing that may."""
        owner = self.ctx.parents.get(node)
        if not isinstance(owner, ast.ClassDef):
            return False
        if node.name not in _VIEW_HANDLERS and node.name != "dispatch_request":
            return False
        committing = self.ctx.index.committing_names()
        if any(
            isinstance(d, ast.Lambda) or _decorator_may_commit(d, committing)
            for d in _class_decorators(owner)
        ):
            return False  # a decorator of every handler may commit
        bases = [self.ctx.names.qualify(base) for base in owner.bases]
        return self._view_lineage([b for b in bases if b is not None], committing, 0)

    def _view_lineage(self, bases: list[str], committing: frozenset[str], depth: int) -> bool:
        """Whether one of ``bases`` is Flask's view class (through project classes whose
        ``dispatch_request`` cannot commit)."""
        index = self.ctx.index
        for base in bases:
            if base in _FLASK_VIEW_CLASSES:
                return True
            facts = index.class_facts(base)
            if facts is None or depth > 5:
                continue
            dispatch = index.function(f"{base}.dispatch_request")
            if dispatch is not None and (
                dispatch.commits or not dispatch.calls.isdisjoint(committing)
            ):
                return False
            if self._view_lineage(list(facts.bases), committing, depth + 1):
                return True
        return False

    def _call_may_commit(
        self, flow: FunctionFlow, call: ast.Call, keys: list[str], committing: frozenset[str]
    ) -> bool:
        """Whether a call in a view may commit the request's session: a project function
        or method that may (by its target where the analysis knows it, else by its name),
        never a method of the session itself, of a query, or of a library module such as
        ``flask.request``."""
        name = call_tail(call.func)
        if name is None:
            return False
        if name == "commit":
            return True  # on a session reached another way (`g.db_session.commit()`)
        index = self.ctx.index
        func = call.func
        if isinstance(func, ast.Attribute):
            if receiver_key(func.value) in keys:
                return False
            receiver = flow.value(func.value)
            if isinstance(receiver, (StatementValue, SessionValue)):
                return False
            if isinstance(receiver, ObjectsValue):
                if receiver.many:
                    return False
                model = index.model(receiver.model)
                for cls in model.lineage if model is not None else ():
                    method = index.function(f"{cls}.{name}")
                    if method is not None:
                        return method.commits or not method.calls.isdisjoint(committing)
                return False  # the mapping's own methods commit nothing
        qualified = flow.qualify(func)
        if qualified is not None:
            function = index.function(qualified)
            if function is not None:
                return function.commits or not function.calls.isdisjoint(committing)
            if qualified.partition(".")[0] in _INERT_LIBRARIES and not qualified.startswith(
                "flask.g."
            ):
                return False
        return name in committing

    @cached_property
    def _flask_sessions(self) -> list[str]:
        """``db.session`` for each Flask-SQLAlchemy ``db`` the project's models use."""
        roots = {m.root for m in self.ctx.index.models() if m.flavor == "flask"}
        return sorted(_flask_session_key(root) for root in roots)

    def _router_may_commit(self, decorator: ast.Call) -> bool:
        """Whether the router or app of ``@router.post(...)`` may give the route a
        dependency that commits: made with it here, or (by the index) included with it
        anywhere, or an app of the project declares it."""
        assert isinstance(decorator.func, ast.Attribute)
        receiver = decorator.func.value
        if isinstance(receiver, ast.Name):
            for binding in self.ctx.dataflow.bindings(receiver):
                value = binding.value
                if (
                    isinstance(value, ast.Call)
                    and declares_dependencies(value)
                    and self.ctx.index.dependencies_may_commit(
                        dependency_targets(self.ctx.names, value)
                    )
                ):
                    return True
        qualified = self.ctx.names.qualify(receiver)
        return self.ctx.index.router_may_commit(qualified or "")

    def _lost_write(
        self,
        flow: FunctionFlow,
        name: str,
        *,
        settled: frozenset[str],
        not_writes: frozenset[str] = frozenset(),
        changes_in: ast.AST | None = None,
    ) -> ast.AST | None:
        """The first write through the session ``name`` that nothing here commits, or
        None: when ``name`` is rebound, leaves the function or is handed to another one
        (which may commit), has one of the ``settled`` methods called on it, or is
        committed by hand (``execute(text("COMMIT"))``). Calls of ``not_writes`` methods
        do not count as writes. With ``changes_in``, a mapped attribute set inside it on
        an object the session loaded (``user.name = ...``) is a write too."""
        if len(flow.bindings.get(name, ())) > 1 or escapes(flow, name):
            return None
        calls = method_calls(flow, name)
        if {method for method, _ in calls} & settled:
            return None
        for load in flow.name_loads.get(name, ()):
            if isinstance(flow.parent(load), (ast.Call, ast.keyword, ast.withitem)):
                return None
        if any(
            method == "execute" and call.args and self.statements.of(call.args[0]) == COMMIT
            for method, call in calls
        ):
            return None
        write: ast.AST | None = next(
            (
                call
                for method, call in calls
                if method not in not_writes and self._is_write(flow, method, call)
            ),
            None,
        )
        if changes_in is not None:
            changed = self._changed_object(flow, name, changes_in)
            if changed is not None and (write is None or _start(changed) < _start(write)):
                write = changed
        return write

    def _changed_object(
        self, flow: FunctionFlow, session: str, region: ast.AST
    ) -> ast.stmt | None:
        """The first ``obj.attr = value`` in ``region`` that sets a column or relationship
        of an object ``session`` loaded (``session.get()``, ``.scalars(...).one()``, a
        loop over its results): a change the session's unit of work would flush. Objects
        handed to a call, returned or stored are left alone: whoever gets them may save
        them, or the change is the point (a masked copy for a response)."""
        index = self.ctx.index
        found: ast.stmt | None = None
        for obj, attributes in flow.attr_loads.items():
            for attribute in attributes:
                if not contains(region, attribute):
                    continue
                mutated = _collection_mutation(flow, attribute)
                if mutated is not None:
                    statement: ast.AST | None = mutated
                elif isinstance(attribute.ctx, ast.Store):
                    statement = flow.parent(attribute)
                    if not isinstance(statement, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                        continue
                else:
                    continue
                assert isinstance(statement, ast.stmt)
                if found is not None and _start(found) <= _start(statement):
                    continue
                binding = flow.binding(obj, attribute)
                value = flow.binding_value(binding) if binding is not None else None
                if not isinstance(value, ObjectsValue) or value.many or value.path:
                    continue
                model = index.model(value.model)
                if model is None or not _loaded_through(value, model, session):
                    continue
                if mutated is not None:
                    rel = index.relationship(model, attribute.attr)
                    if rel is None or rel.collection is not True:
                        continue
                elif (
                    index.column(model, attribute.attr) is None
                    and index.relationship(model, attribute.attr) is None
                ):
                    continue
                # `for user in users:` changes the objects of `users`, returned or not.
                iterable = binding.value if binding is not None and binding.kind == "for" else None
                if _handed_over(flow, obj) or (
                    isinstance(iterable, ast.Name) and _handed_over(flow, iterable.id)
                ):
                    continue
                found = statement
        return found

    def _is_write(self, flow: FunctionFlow, method: str, call: ast.Call) -> bool:
        if method in WRITES:
            return True
        if method != "execute" or not call.args:
            return False
        statement = flow.value(call.args[0])
        if isinstance(statement, StatementValue):
            return statement.kind in ("insert", "update", "delete")
        # Rows only: what a session's DDL does depends on the database, which the session
        # does not show.
        return self.statements.of(call.args[0]) == DML

    # Connections (Core "commit as you go") --------------------------------------------
    def _check_connection(self, flow: FunctionFlow, owned: OwnedConnection) -> None:
        name = owned.name
        # A `with` block is judged on its own (a function often opens one connection to
        # read and another to write, both named `conn`); anything else needs one binding.
        block = owned.block
        others = [b for b in flow.bindings.get(name, ()) if b is not owned.binding]
        if block is None and others:
            return
        if block is not None and any(contains(block, b.node) for b in others):
            return

        def inside(node: ast.AST) -> bool:
            return block is None or contains(block, node)

        if escapes(flow, name, region=block):
            return
        if any(sets_isolation(option) for option in owned.options):
            return
        engine = self._engine(owned.engine)
        if engine is None:
            return
        # `conn.connection` is the DB-API connection: committed (or not) out of our sight.
        raw = ("connection", "driver_connection")
        if any(
            attribute.attr in raw and inside(attribute)
            for attribute in flow.attr_loads.get(name, ())
        ):
            return
        writes: list[tuple[ast.Call, str]] = []
        reads: list[ast.Call] = []  # statements that write nothing we can tell
        ends: list[ast.Call] = []  # commits (and deliberate rollbacks) after writes
        manual = False  # commits or rolls back by hand somewhere
        close: ast.Call | None = None
        for load in flow.name_loads.get(name, ()):
            if not inside(load):
                continue
            parent = flow.parent(load)
            if isinstance(parent, (ast.keyword, ast.withitem)):
                return
            if isinstance(parent, ast.Call) and load in parent.args:
                if _creates_schema(parent) and parent.args[0] is load:
                    writes.append((parent, DDL))
                    continue
                # Handed to another function, which may commit.
                return
        for method, call in method_calls(flow, name):
            if not inside(call):
                continue
            if method in _TRANSACTION_CHECKS:
                return
            if method == "execution_options" and sets_isolation(call):
                return
            manual = manual or method in ("commit", "rollback")
            if method == "commit":
                ends.append(call)
            elif method == "rollback":
                # A rollback on the error path says nothing about the happy one.
                if next(flow.enclosing(call, ast.ExceptHandler), None) is None:
                    ends.append(call)
            elif method in ("invalidate", "detach"):
                return
            elif method == "close":
                close = close or call
            elif method == "run_sync":
                if not call.args or not _creates_schema_ref(call.args[0]):
                    return  # a function that receives the connection, and may commit
                writes.append((call, DDL))
            elif method in _EXECUTES and call.args:
                if method == "exec_driver_sql":
                    kind = self.statements.sql(call.args[0])
                else:
                    kind = self.statements.of(call.args[0])
                if kind in (COMMIT, BEGIN):
                    return  # transaction control by hand
                if kind == ROLLBACK:
                    ends.append(call)
                elif kind in (DML, DDL):
                    writes.append((call, kind))
                else:
                    reads.append(call)
        if owned.block is None:
            # `conn = engine.connect()`: judged only when the function closes it.
            if close is None:
                return
            region_end = _start(close)
            writes = [w for w in writes if _start(owned.binding.node) <= _start(w[0]) < region_end]
        else:
            writes = [w for w in writes if any(contains(stmt, w[0]) for stmt in owned.block.body)]
        if engine.ddl_autocommits:
            # SQLite's driver runs DDL outside a transaction; MySQL commits around it.
            writes = [w for w in writes if w[1] != DDL]
        if writes and _undone(writes):
            return
        writes.sort(key=lambda w: _start(w[0]))
        lost = next((call for call, _ in writes if not self._covered(flow, call, ends)), None)
        if lost is None:
            return
        if self.ctx.in_tests and any(_start(read) > _start(lost) for read in reads):
            return  # a test reading its writes back, then rolling them away: on purpose
        earlier = any(_start(end) < _start(lost) for end in ends)
        engine_text = self.ctx.text(owned.engine)
        if not isinstance(owned.engine, (ast.Name, ast.Attribute)) or len(engine_text) > 30:
            engine_text = "engine"
        is_async = isinstance(owned.block, ast.AsyncWith) or isinstance(
            owned.binding.value, ast.Await
        )
        prefix = "async " if is_async else ""
        commit = f"await {name}.commit()" if is_async else f"{name}.commit()"
        self.report(
            lost,
            write=_shorten(self.ctx.text(lost)),
            never="committed",
            why=_rolled_back(
                f"`{name}` (line {owned.binding.node.lineno}) is closed",  # type: ignore[attr-defined]
                name,
                " after it" if earlier else "",
            ),
            remedy=f"commit before the block ends, or open it with `{engine_text}.begin()`",
            hint=(
                f"call `{commit}` after the last write, or open the connection with "
                f"`{prefix}with {engine_text}.begin() as {name}:`, which commits when the "
                "block ends"
            ),
            fix=self._fix(owned, engine_text, manual),
        )

    @staticmethod
    def _covered(flow: FunctionFlow, write: ast.Call, ends: list[ast.Call]) -> bool:
        """Whether a commit follows the write (or shares a loop with it)."""
        for end in ends:
            if _start(end) > _start(write):
                return True
            for loop in flow.enclosing(write, ast.For, ast.AsyncFor, ast.While):
                if contains(loop, end):
                    return True
        return False

    def _fix(
        self,
        owned: OwnedConnection,
        engine_text: str,
        manual: bool,
    ) -> Fix | None:
        """``with engine.connect() as conn:`` → ``with engine.begin() as conn:`` when the
        block never commits or rolls back by hand (so that nothing else changes)."""
        if owned.block is None or owned.options or manual:
            return None
        if not isinstance(owned.engine, (ast.Name, ast.Attribute)):
            return None
        return self.replace(
            owned.call,
            f"{self.ctx.text(owned.engine)}.begin()",
            f"open the connection with `{engine_text}.begin()`",
        )

    # Which engine a connection comes from ------------------------------------------------
    def _engine(self, expr: ast.expr, depth: int = 0) -> _Engine | None:
        """The engine ``connect()`` is called on; None when it is not known to be one, or
        may run in AUTOCOMMIT (where nothing is left to commit)."""
        if depth > 6:
            return None
        if isinstance(expr, ast.Await):
            return self._engine(expr.value, depth + 1)
        if isinstance(expr, ast.Call):
            return self._engine_call(expr, depth)
        if isinstance(expr, ast.Name):
            bindings = self.ctx.dataflow.bindings(expr)
            if not bindings:
                return self._module_engine(expr)
            found: list[_Engine | None] = []
            for binding in bindings:
                if binding.kind is BindingKind.ASSIGN and binding.value is not None:
                    found.append(None if binding.path else self._engine(binding.value, depth + 1))
                elif binding.kind is BindingKind.PARAMETER:
                    found.append(self._parameter_engine(binding))
                elif binding.kind is BindingKind.IMPORT:
                    found.append(self._module_engine(expr))
                else:
                    return None
            return _agree_engines(found)
        if isinstance(expr, ast.Attribute):
            kind = self.objects.kind_of(expr)
            if kind is None or not kind.is_engine:
                return None
            if isinstance(expr.value, ast.Name) and expr.value.id == "self":
                return self._member_engine(expr, depth)
            return self._module_engine(expr)
        return None

    def _engine_call(self, call: ast.Call, depth: int) -> _Engine | None:
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr == "execution_options":
            return None if sets_isolation(call) else self._engine(func.value, depth + 1)
        if self.ctx.names.sqla_name(func) in ENGINE_CALLS:
            if sets_isolation(call):
                return None
            argument = call.args[0] if call.args else keyword(call, "url")
            url = literal_str(argument)
            if isinstance(argument, ast.JoinedStr):
                # `f"sqlite:///{path}"`: the scheme is written out.
                prefixes = self.statements.strings.prefixes(argument)
                if prefixes and "://" in prefixes[0].text:
                    url = prefixes[0].text
            return _Engine(url)
        kind = self.objects.kind_of(call)
        return _Engine(None) if kind is not None and kind.is_engine else None

    def _parameter_engine(self, binding: Binding) -> _Engine | None:
        """An engine parameter: annotated as one, or not annotated (what its caller
        passes is only known by what the function executes on it)."""
        if binding.annotation is None:
            return _Engine(None)
        kind = self.objects.annotation_kind(binding.annotation)
        return _Engine(None) if kind is not None and kind.is_engine else None

    def _module_engine(self, expr: ast.expr) -> _Engine | None:
        qualified = self.ctx.names.qualify(expr)
        if qualified is None:
            return None
        kind = self.objects.kind_of(expr)
        origin = self.ctx.names.origin_of(qualified) or ""
        # Last assigned from `engine.execution_options(...)`: its options are not known.
        if origin.endswith(".execution_options"):
            return None
        facts = self.ctx.index.engine(qualified)
        if facts is not None and self.ctx.names.sqla_tail(origin[5:]) in ENGINE_CALLS:
            if {"isolation_level", "execution_options", "**"} & facts.options.keys():
                return None
            return _Engine(facts.url)
        return _Engine(None) if kind is not None and kind.is_engine else None

    def _member_engine(self, expr: ast.Attribute, depth: int) -> _Engine | None:
        """``self.engine``: every value the class assigns to it."""
        owner = next(
            (a for a in self.ctx.ancestors(expr) if isinstance(a, ast.ClassDef)), None
        )
        if owner is None:
            return None
        found: list[_Engine | None] = []
        for node in ast.walk(owner):
            if not isinstance(node, (ast.Assign, ast.AnnAssign)) or node.value is None:
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and target.attr == expr.attr
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    found.append(self._engine(node.value, depth + 1))
        return _agree_engines(found) if found else _Engine(None)


@dataclass(frozen=True)
class _Engine:
    url: str | None

    @property
    def ddl_autocommits(self) -> bool:
        """SQLite's driver runs DDL outside a transaction; MySQL commits around DDL."""
        dialect = (self.url or "").partition(":")[0].partition("+")[0].lower()
        return dialect in ("sqlite", "mysql", "mariadb")


def _agree_engines(found: list[_Engine | None]) -> _Engine | None:
    if not found or any(engine is None for engine in found):
        return None
    urls = {engine.url for engine in found if engine is not None}
    return _Engine(urls.pop() if len(urls) == 1 else None)


# Methods that run a statement on a connection.
_EXECUTES = frozenset({"execute", "exec_driver_sql", "scalar", "scalars", "scalar_one"})
# Transactions managed by hand (`trans = conn.begin()`), or checked before deciding.
_TRANSACTION_CHECKS = frozenset(
    {
        "begin", "begin_nested", "begin_twophase", "in_transaction", "in_nested_transaction",
        "get_transaction", "get_nested_transaction",
    }
)


def _flask_session_key(root: str) -> str:
    """``db.session`` for the Flask-SQLAlchemy instance ``app.ext.db``."""
    return f"{root.rpartition('.')[2]}.session"


def _repositories(index: ProjectIndex, cls: str, sessions: set[str]) -> list[str]:
    """The attributes of a unit of work holding project objects (its repositories:
    ``self.products = SqlAlchemyRepository(self.session)``), its sessions aside."""
    found: set[str] = set()
    for facts in index.lineage(cls):
        for attr, held in facts.held.items():
            if (
                attr not in sessions
                and index.class_facts(held) is not None
                and index.model(held) is None
            ):
                found.add(attr)
    return sorted(found)


def _loaded_through(value: ObjectsValue, model: Model, session: str) -> bool:
    """Whether ``value`` came from the session ``session``: its own query, or
    Flask-SQLAlchemy's ``Model.query`` on the session of the model's ``db``; or from a
    method of the repository ``session`` names (``uow.products.get(sku)``)."""
    if value.via is not None and value.via == session:
        return True
    if value.receiver is not None:
        return value.receiver == session
    return (
        value.stmt is not None
        and value.stmt.model_query
        and model.flavor == "flask"
        and _flask_session_key(model.root) == session
    )


def _calls_in(function: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.Call]:
    for statement in function.body:
        for node in ast.walk(statement):
            if isinstance(node, ast.Call):
                yield node


def _handed_over(flow: FunctionFlow, name: str) -> bool:
    """Whether ``name`` leaves the function or is given to any call."""
    return escapes(flow, name) or any(
        isinstance(flow.parent(load), (ast.Call, ast.keyword)) and load is not getattr(
            flow.parent(load), "func", None
        )
        for load in flow.name_loads.get(name, ())
    )


def _start(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


def _shorten(text: str) -> str:
    return text if len(text) <= 50 else text[:47] + "..."


def _creates_schema(call: ast.Call) -> bool:
    """``metadata.create_all(conn)``, ``Base.metadata.drop_all(conn)``."""
    return _creates_schema_ref(call.func)


def _creates_schema_ref(node: ast.expr) -> bool:
    """``Base.metadata.create_all`` (for ``run_sync``) or the callee of such a call."""
    return isinstance(node, ast.Attribute) and node.attr in ("create_all", "drop_all")


def _undone(writes: list[tuple[ast.Call, str]]) -> bool:
    """Only DDL that drops every table it creates, after creating it: nothing is left
    to commit (a probe that the database takes writes)."""
    created: set[str] = set()
    for call, kind in writes:
        sql = _literal_sql(call.args[0]) if kind == DDL and call.args else None
        if sql is None:
            return False
        for action in classify(sql):
            if action.table is None:
                return False
            if action.kind == "create_table":
                created.add(action.table)
            elif action.kind == "drop_table" and action.table in created:
                created.discard(action.table)
            else:
                return False
    return not created


def _literal_sql(statement: ast.expr) -> str | None:
    """The SQL of ``"..."`` or ``text("...")`` written as a literal."""
    if isinstance(statement, ast.Call) and len(statement.args) == 1:
        statement = statement.args[0]
    if isinstance(statement, ast.Constant) and isinstance(statement.value, str):
        return statement.value
    return None


# list and set methods that change a relationship collection in place.
_COLLECTION_MUTATORS = frozenset(
    {"append", "extend", "insert", "remove", "pop", "clear", "add", "discard", "update"}
)


def _collection_mutation(flow: FunctionFlow, attribute: ast.Attribute) -> ast.Expr | None:
    """The statement ``user.posts.append(post)`` (``.remove()``, ``.clear()``, ...) when
    ``attribute`` is the ``user.posts`` it changes: the unit of work flushes that change
    as an INSERT or UPDATE of the rows' foreign keys, as it does ``user.name = ...``."""
    method = flow.parent(attribute)
    if not isinstance(method, ast.Attribute) or method.attr not in _COLLECTION_MUTATORS:
        return None
    call = flow.parent(method)
    if not isinstance(call, ast.Call) or call.func is not method:
        return None
    statement = flow.parent(call)
    return statement if isinstance(statement, ast.Expr) else None
