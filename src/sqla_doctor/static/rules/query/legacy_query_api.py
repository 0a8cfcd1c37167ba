"""SQD302: the legacy ``Session.query()`` / ``Model.query`` API in SQLAlchemy 2.x code."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from functools import cached_property

from sqla_doctor.findings import Severity
from sqla_doctor.static.alembic.ops import is_migration_module
from sqla_doctor.static.objects import ObjectKind, SqlaObjects, expr_is_class_like
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to
from sqla_doctor.static.syntax import source_segment

# Methods of Query: what follows `Model.query` when it is Flask-SQLAlchemy's query property
# (a mapped column that happens to be called `query` is followed by column operators).
QUERY_METHODS = frozenset(
    {
        "add_columns", "all", "count", "delete", "distinct", "enable_eagerloads",
        "execution_options", "exists", "filter", "filter_by", "first", "first_or_404",
        "from_self", "get", "get_or_404", "group_by", "having", "join", "limit", "offset",
        "one", "one_or_404", "one_or_none", "options", "order_by", "outerjoin", "paginate",
        "params", "populate_existing", "scalar", "select_from", "slice", "union", "update",
        "where", "with_entities", "with_for_update", "yield_per",
    }
)


def _without_comments(text: str) -> str:
    """The call's source without the comments written between its arguments."""
    if "#" not in text:
        return text
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text
    return tokenize.untokenize(t for t in tokens if t.type != tokenize.COMMENT)


def _short(text: str, limit: int = 40) -> str:
    text = _without_comments(text)
    # A backslash continuation joins its lines: `gb.db\<newline>    .query(...)`.
    text = " ".join(re.sub(r"\\\n\s*", "", text).split())
    # A chain broken before its dot, after a space and a backslash (`db.session \`).
    text = re.sub(r"\s+\.(?=[A-Za-z_])", ".", text)
    # A call broken after or before its parenthesis: `query(\n    models.Service.binary,`.
    text = text.replace("( ", "(").replace(" )", ")")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Flask's classic recipe: a scoped session's query property on the declarative base,
# and a second base without one.
_QUERY_PROPERTY_FILES = {
    "app/__init__.py": "",
    "app/database.py": """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import declarative_base, scoped_session, sessionmaker

    engine = create_engine("sqlite:///app.db")
    db_session = scoped_session(sessionmaker(bind=engine))
    Base = declarative_base()
    Base.query = db_session.query_property()
    Other = declarative_base()
    """,
    "app/models.py": """
    from sqlalchemy import Column, Integer, String
    from app.database import Base, Other

    class Warehouse(Base):
        __tablename__ = "warehouses"
        id = Column(Integer, primary_key=True)
        code = Column(String(10))

    class Report(Other):
        __tablename__ = "reports"
        id = Column(Integer, primary_key=True)
        query = Column(String(200))
    """,
}


class LegacyQueryApi(Rule):
    """
    ## What it does
    Checks for the legacy `Query` API: `session.query(...)` on a SQLAlchemy session,
    Flask-SQLAlchemy's `Model.query`, and `Model.query` of a model whose base got a
    scoped session's `query_property()` (Flask's older recipe, `Base.query =
    db_session.query_property()`, in any module).

    A session is anything known to be one: `Session(...)`, a `sessionmaker()` or
    `scoped_session()` product (defined in any module of the project), `with Session(engine)
    as s`, a parameter annotated `Session`/`AsyncSession`/`scoped_session` (also inside
    `Annotated[...]`), a FastAPI `Depends()` on a function of the file that yields a
    session, `self.session` assigned from one, Flask-SQLAlchemy's `db.session`.

    A receiver only *named* like a session (`session`, `db`, `db_session`, `self.session`,
    `request.state.db`) counts when the file or the project imports SQLAlchemy, SQLModel or
    Flask-SQLAlchemy, nothing says it is something else (`requests.Session()`, a parameter
    annotated with another library's type), and `query()` is given entities
    (`db.query(User)`, `db.query(func.count(Post.id))`), not a string.

    ## Why is this bad?
    SQLAlchemy 2.0 unified ORM and Core querying on `select()`: `Query` is legacy, gets no
    new features, is missing from `AsyncSession` entirely, and mixes two styles in one code
    base. Code written against `select()` works the same with sync and async sessions,
    composes with Core, and is fully typed (`session.scalars(select(User))` returns
    `ScalarResult[User]`).

    The severity is *info*: `Query` still works in 2.x without a warning, and moving a code
    base is a project of its own. Its 1.x-only corners that break or warn in 2.x
    (`Query.get()`, `autocommit=True`, ...) are SQD303.

    ## Example
    ```python
    def active_users(session: Session) -> list[User]:
        return session.query(User).filter(User.active).order_by(User.name).all()

    def get_post(post_id: int) -> Post:
        return Post.query.get_or_404(post_id)  # Flask-SQLAlchemy
    ```

    Use instead:
    ```python
    def active_users(session: Session) -> list[User]:
        stmt = select(User).where(User.active).order_by(User.name)
        return list(session.scalars(stmt))

    def get_post(post_id: int) -> Post:
        return db.get_or_404(Post, post_id)
    ```

    An Alembic revision (a module that imports Alembic's `op` and defines `upgrade()`) is
    left alone: it is history, run once per database and not rewritten for style. What in
    it no longer runs on 2.x is SQD303's. So is test code (`tests/`, `test_*.py`,
    `conftest.py`): a library's tests use `Query` on purpose, to cover its users' code,
    and an application's tests move after the code they test.

    ## Known problems
    There is no autofix: `Query` methods map onto `select()` and the `Result` API one by
    one, but not mechanically (`.count()`, `.delete()`, `.update()` and `.first()` each
    become something different).

    A project whose requirements pin SQLAlchemy below 2.0 (`sqlalchemy==1.4.54`,
    `sqlalchemy<2`, Poetry's `^1.4`, in `pyproject.toml`, `setup.cfg`, `setup.py`,
    `Pipfile` or `requirements*.txt` at its top and the files they include, or its
    folders' when the top names no version; a lock file's pin; `sqlmodel<0.0.12` or
    `flask-sqlalchemy<3`, which hold it below 2.0) runs the API this rule reports: the
    rule is off there, said once on stderr, until it is selected by code or name to plan
    the move to 2.0. A requirement of 2.0 or later anywhere keeps it on.

    ## References
    - [ORM querying in 2.0: legacy `Query`](https://docs.sqlalchemy.org/en/20/orm/queryguide/query.html)
    - [2.0 migration: ORM querying](https://docs.sqlalchemy.org/en/20/changelog/migration_20.html#migration-20-query-usage)
    - [Flask-SQLAlchemy: legacy query interface](https://flask-sqlalchemy.readthedocs.io/en/stable/legacy-query/)
    """

    code = "SQD302"
    requires_sqlalchemy_2 = True
    name = "legacy-query-api"
    pitfalls = ("P22",)
    severity = Severity.INFO
    message = "`{call}` is the legacy Query API{note} — use `{session}.{verb}(select(...))`"

    VALID = (
        # A model of a base with no query property: `Report.query` is its column.
        Valid(
            """
            from sqlalchemy import select
            from app.database import db_session
            from app.models import Report

            def saved(text):
                return db_session.scalars(select(Report).where(Report.query.contains(text))).all()
            """,
            path="app/views.py",
            files=_QUERY_PROPERTY_FILES,
        ),
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            def active_users(session: Session):
                return session.scalars(select(User).where(User.active)).all()
            """
        ),
        # Lookalikes: pandas, a search client, BigQuery, a repository's own query().
        Valid(
            """
            import pandas as pd
            from google.cloud import bigquery
            from sqlalchemy import select
            def report(df: pd.DataFrame, client: bigquery.Client, repo):
                adults = df.query("age >= 18")
                rows = client.query("SELECT * FROM dataset.users").result()
                users = repo.query(User)
                return adults, rows, users
            """
        ),
        # A `Session` from another library.
        Valid(
            """
            from neo4j import Session
            import sqlalchemy
            def friends(session: Session, name):
                return session.query(Person, name=name)
            """
        ),
        # A conventional name, but nothing in the file is SQLAlchemy: not knowable.
        Valid(
            """
            def get_user(db, user_id):
                return db.query(User).filter(User.id == user_id).first()
            """
        ),
        # A conventional name given SQL text: a different database client.
        Valid(
            """
            import records
            from sqlalchemy import create_engine
            def rows(db):
                return db.query("SELECT * FROM users")
            """
        ),
        # `cls.query` of a class that is no Flask-SQLAlchemy model, and `cls` rebound.
        Valid(
            """
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            class Search:
                query = SearchQuery()
                @classmethod
                def recent(cls):
                    return cls.query.order_by("-created").limit(10)
            class Dashboard(db.Model):
                id = db.Column(db.Integer, primary_key=True)
                @classmethod
                def saved(cls):
                    cls = SavedSearch
                    return cls.query.filter(active=True)
            """,
        ),
        # A mapped column called `query` is compared, not queried.
        Valid(
            """
            from sqlalchemy import String, select
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
            class Base(DeclarativeBase):
                pass
            class Search(Base):
                __tablename__ = "searches"
                id: Mapped[int] = mapped_column(primary_key=True)
                query: Mapped[str] = mapped_column(String)
            stmt = select(Search).where(Search.query.ilike("%shoes%"))
            """
        ),
        # A session factory is not a session, and a requests session has no query().
        Valid(
            """
            import requests
            from sqlalchemy.orm import sessionmaker
            SessionLocal = sessionmaker()
            def fetch(url):
                session = requests.Session()
                return session.get(url), session.query
            """
        ),
        # Flask-SQLAlchemy 2.x style: db.session.execute(db.select(...)).
        Valid(
            """
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            class User(db.Model):
                id = db.Column(db.Integer, primary_key=True)
            def users():
                return db.session.execute(db.select(User)).scalars().all()
            """
        ),
        # Test code: GeoAlchemy2's and sqlalchemy-utils' tests cover their users' Query.
        Valid(
            """
            from sqlalchemy.orm import Session
            def test_lake_geometry(session: Session):
                assert session.query(Lake).one().geom is not None
            """,
            path="tests/test_functional.py",
        ),
        # An Alembic revision: history, not restyled (neutron's data migrations).
        Valid(
            """
            from alembic import op
            import sqlalchemy as sa
            network = sa.Table("networks", sa.MetaData(), sa.Column("id", sa.String(36)))
            def upgrade():
                session = sa.orm.Session(bind=op.get_bind())
                for row in session.query(network).all():
                    op.execute(network.update().where(network.c.id == row.id))
                session.commit()
            """,
            path="migrations/versions/5ffceebfada_rbac.py",
        ),
    )
    INVALID = (
        # `Base.query = db_session.query_property()` in another module.
        Invalid(
            """
            from app.models import Warehouse

            def codes():
                return [w.code for w in Warehouse.query.order_by(Warehouse.code).all()]
            """,
            path="app/views.py",
            files=_QUERY_PROPERTY_FILES,
            line=4,
            expected_message=(
                "`Warehouse.query` is the legacy Query API — use `session.scalars(select(...))`"
            ),
        ),
        # An `upgrade()` that is no Alembic revision's: an application's own command.
        Invalid(
            """
            from sqlalchemy.orm import Session
            def upgrade(session: Session):
                for user in session.query(User).filter(User.legacy):
                    user.migrate()
            """,
        ),
        # A receiver continued on the next line with a backslash.
        Invalid(
            """
            from sqlalchemy.orm import Session
            def totals(engine, Student):
                with Session(engine) as session:
                    return dict(session\\
                        .query(Student.id, Student.total).all())
            """,
            expected_message=(
                "`session.query(Student.id, Student.total)` is the legacy Query API — use "
                "`session.execute(select(...))`"
            ),
        ),
        # A comment inside the call (hypothesis/h's document URIs).
        Invalid(
            """
            from sqlalchemy.orm import Session
            def type_uris(session: Session, DocumentURI):
                return list(
                    session.query(
                        # The fields alone: no objects to build
                        DocumentURI.type,
                    ).all()
                )
            """,
            expected_message=(
                "`session.query(DocumentURI.type,)` is the legacy Query API — use "
                "`session.scalars(select(...))`"
            ),
        ),
        # A chain broken after a space and a backslash (pgAdmin's settings).
        Invalid(
            """
            from sqlalchemy.orm import Session
            def last_state(session: Session, ApplicationState, uid):
                result = session \\
                    .query(ApplicationState) \\
                    .filter(ApplicationState.uid == uid).first()
                return result
            """,
            expected_message=(
                "`session.query(ApplicationState)` is the legacy Query API — use "
                "`session.scalars(select(...))`"
            ),
        ),
        # Columns unpacked from a list (hypothesis/lms's recursive CTE): several, maybe.
        Invalid(
            """
            from sqlalchemy.orm import Session
            def ancestry(session: Session, Organization):
                cols = [Organization.id, Organization.parent_id]
                return session.query(*cols).all()
            """,
            expected_message=(
                "`session.query(*cols)` is the legacy Query API — use "
                "`session.execute(select(...))`"
            ),
        ),
        Invalid(
            """
            from sqlalchemy.orm import Session
            def active_users(engine):
                with Session(engine) as session:
                    return session.query(User).filter(User.active).all()
            """,
            expected_message=(
                "`session.query(User)` is the legacy Query API — use `session.scalars(select(...))`"
            ),
            line=4,
        ),
        # A factory product, the factory made in another module.
        Invalid(
            """
            from app.db import SessionLocal
            def count_orders():
                db = SessionLocal()
                try:
                    return db.query(Order).count()
                finally:
                    db.close()
            """,
            files={
                "app/__init__.py": "",
                "app/db.py": (
                    "from sqlalchemy import create_engine\n"
                    "from sqlalchemy.orm import sessionmaker\n"
                    "engine = create_engine('postgresql://localhost/app')\n"
                    "SessionLocal = sessionmaker(bind=engine)\n"
                ),
            },
            path="app/orders.py",
            line=5,
        ),
        # FastAPI dependency, parameter annotated Session.
        Invalid(
            """
            from fastapi import Depends
            from sqlalchemy.orm import Session
            from .deps import get_db
            def read_items(skip: int = 0, db: Session = Depends(get_db)):
                return db.query(Item).offset(skip).all()
            """,
        ),
        # Annotated[...] and an in-file generator dependency without annotation.
        Invalid(
            """
            from typing import Annotated
            from fastapi import Depends
            from sqlalchemy.orm import Session, sessionmaker
            SessionLocal = sessionmaker()
            def get_db():
                db = SessionLocal()
                try:
                    yield db
                finally:
                    db.close()
            SessionDep = Annotated[Session, Depends(get_db)]
            def by_alias(session: SessionDep):
                return session.query(User).all()
            def by_dependency(db=Depends(get_db)):
                return db.query(User).all()
            """,
            count=2,
        ),
        # Flask-SQLAlchemy: db.session.query and Model.query.
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            class User(db.Model):
                id = db.Column(db.Integer, primary_key=True)
                name = db.Column(db.String)
            def find(name):
                first = User.query.filter_by(name=name).first()
                return first or db.session.query(User).filter(User.name.ilike(name)).first()
            """,
            expected_message=(
                "`User.query` is the legacy Query API — use `db.session.scalars(select(...))`"
            ),
            count=2,
            line=7,
        ),
        # `cls.query` in a classmethod of a Flask-SQLAlchemy model.
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            class Dashboard(db.Model):
                id = db.Column(db.Integer, primary_key=True)
                @classmethod
                def recent(cls):
                    return cls.query.order_by(cls.id.desc()).limit(10)
            """,
            expected_message=(
                "`cls.query` is the legacy Query API — use `db.session.scalars(select(...))`"
            ),
            line=7,
        ),
        # A Flask-SQLAlchemy model imported from the project's models module.
        Invalid(
            """
            from app.models import Post
            def show(post_id):
                return Post.query.get_or_404(post_id)
            """,
            files={
                "app/__init__.py": "from flask_sqlalchemy import SQLAlchemy\ndb = SQLAlchemy()\n",
                "app/models.py": (
                    "from app import db\n"
                    "class Post(db.Model):\n"
                    "    id = db.Column(db.Integer, primary_key=True)\n"
                ),
            },
            path="app/views.py",
        ),
        # Classic scoped_session registry used as a session.
        Invalid(
            """
            from sqlalchemy.orm import scoped_session, sessionmaker
            Session = scoped_session(sessionmaker())
            def names():
                return [u.name for u in Session.query(User)]
            """,
        ),
        # A repository holding its session.
        Invalid(
            """
            from sqlalchemy.orm import Session
            class UserRepository:
                def __init__(self, session: Session) -> None:
                    self.session = session
                def by_email(self, email):
                    return self.session.query(User).filter_by(email=email).one_or_none()
            """,
            line=6,
        ),
        # AsyncSession has no query() at all.
        Invalid(
            """
            from sqlalchemy.ext.asyncio import AsyncSession
            async def users(session: AsyncSession):
                return session.query(User).all()
            """,
            expected_message=(
                "`session.query(User)` is the legacy Query API (and `AsyncSession` has no "
                "`query()`: this raises AttributeError) — use `session.scalars(select(...))`"
            ),
        ),
        # A conventional name in a file that uses SQLAlchemy, entities as arguments.
        Invalid(
            """
            from sqlalchemy import func
            from . import models
            def count_by_user(db, user_id):
                total = db.query(func.count(models.Post.id))
                return total.filter(models.Post.user_id == user_id).scalar()
            """,
        ),
        # SQLModel's Session, a context manager helper of this file, multi-line chains.
        Invalid(
            """
            from contextlib import contextmanager
            from sqlmodel import Session, create_engine
            engine = create_engine("sqlite://")
            @contextmanager
            def session_scope():
                with Session(engine) as session:
                    yield session
                    session.commit()
            def heroes():
                with session_scope() as s:
                    return (
                        s.query(Hero)
                        .filter(Hero.age > 30)
                        .all()
                    )
            """,
            line=12,
        ),
        # A context-manager helper from another module; the file itself does not import
        # SQLAlchemy, the project does.
        Invalid(
            """
            from app.db import session_scope
            from app.models import User
            def deactivate(user_id):
                with session_scope() as session:
                    session.query(User).filter_by(id=user_id).update({"active": False})
            """,
            files={
                "app/__init__.py": "",
                "app/db.py": "from sqlalchemy.orm import sessionmaker\nLocal = sessionmaker()\n",
                "app/models.py": "",
            },
            path="app/tasks.py",
            line=5,
        ),
        # Middleware puts the session on request.state; run_sync hands over a sync Session.
        Invalid(
            """
            from fastapi import Request
            from sqlalchemy.ext.asyncio import AsyncSession
            def current_user(request: Request):
                return request.state.db.query(User).get(request.state.user_id)
            async def legacy_count(session: AsyncSession):
                return await session.run_sync(lambda sync: sync.query(User).count())
            """,
            count=2,
        ),
    )

    @cached_property
    def objects(self) -> SqlaObjects:
        return SqlaObjects(self.ctx, self.ctx.dataflow)

    @cached_property
    def left_alone(self) -> bool:
        return self.ctx.in_tests or is_migration_module(self.ctx.tree, self.ctx.names)

    @calls_to(ending=("query",))
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if not (isinstance(func, ast.Attribute) and func.attr == "query") or self.left_alone:
            return
        receiver = func.value
        kind = self.objects.kind_of(receiver)
        if kind is None:
            if not self._probably_session(receiver, node):
                return
        elif not kind.is_session:
            return
        session = _short(source_segment(self.ctx, receiver), 30)
        note = ""
        if kind in (ObjectKind.ASYNC_SESSION, ObjectKind.ASYNC_SCOPED_SESSION):
            note = " (and `AsyncSession` has no `query()`: this raises AttributeError)"
        entities = ", ".join(_short(source_segment(self.ctx, a), 40) for a in node.args[:2])
        entities += ", ..." if len(node.args) > 2 else ""
        # Rows of several columns come from execute(); scalars() would keep the first.
        # `query(*cols)` may be several too.
        several = len(node.args) > 1 or any(isinstance(a, ast.Starred) for a in node.args)
        verb = "execute" if several else "scalars"
        if "get" in self._chained_methods(node) and len(node.args) == 1:
            hint = f"rewrite as `{session}.get({entities}, pk)`"
        else:
            hint = f"rewrite as `{session}.{verb}(select({entities or '...'}).where(...))`"
        self.report(
            node,
            call=_short(source_segment(self.ctx, node)),
            note=note,
            session=session,
            verb=verb,
            hint=hint,
        )

    def _chained_methods(self, node: ast.expr) -> list[str]:
        """The methods called on the query in the same expression: ``.filter().get()``."""
        methods: list[str] = []
        attribute = self.ctx.parent(node)
        while isinstance(attribute, ast.Attribute) and attribute.value is node:
            call = self.ctx.parent(attribute)
            if not (isinstance(call, ast.Call) and call.func is attribute):
                break
            methods.append(attribute.attr)
            node, attribute = call, self.ctx.parent(call)
        return methods

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr != "query" or self.left_alone:
            return
        parent = self.ctx.parent(node)
        if not (isinstance(parent, ast.Attribute) and parent.attr in QUERY_METHODS):
            return
        flask = self.objects.flask_model(node.value)
        if not flask and not self._query_property(node.value):
            return
        model = _short(source_segment(self.ctx, node.value), 30)
        if not flask:
            self.report(
                node,
                call=f"{model}.query",
                note="",
                session="session",
                verb="scalars",
                hint=f"rewrite as `session.scalars(select({model}).where(...))` on the scoped "
                f"session whose `query_property()` gave `{model}.query`",
            )
            return
        self.report(
            node,
            call=f"{model}.query",
            note="",
            session="db.session",
            verb="scalars",
            hint=f"rewrite as `db.session.scalars(db.select({model}).where(...))`; "
            f"`{model}.query.get_or_404(pk)` becomes `db.get_or_404({model}, pk)`",
        )

    def _query_property(self, owner: ast.expr) -> bool:
        """``Warehouse.query``, a mapped class (of any module) whose base got a scoped
        session's ``query_property()``: Flask's classic recipe, ``Base.query =
        db_session.query_property()``."""
        if not isinstance(owner, (ast.Name, ast.Attribute)):
            return False
        index = self.ctx.index
        model = index.model(self.ctx.names.qualify(owner))
        return model is not None and index.has_query_property(model)

    def _probably_session(self, receiver: ast.expr, call: ast.Call) -> bool:
        objects = self.objects
        if objects.foreign(receiver):
            return False
        named = objects.named_like_session(receiver) or objects.session_annotation_name(receiver)
        if not named:
            return False
        corroborated = (
            objects.imports_sqlalchemy()
            or objects.session_annotation_name(receiver)
            or objects.project_imports_sqlalchemy()
        )
        if not corroborated:
            return False
        # Entities (`User`, `models.User`, `User.id`, `func.count(User.id)`), never SQL text.
        return bool(call.args) and all(_entity_like(arg) for arg in call.args)


def _entity_like(arg: ast.expr) -> bool:
    if isinstance(arg, ast.Call):
        return any(_entity_like(a) for a in arg.args) or _entity_like(arg.func)
    if isinstance(arg, ast.Attribute):
        return expr_is_class_like(arg) or _entity_like(arg.value)
    if isinstance(arg, ast.Name):
        return expr_is_class_like(arg)
    return isinstance(arg, ast.Starred)
