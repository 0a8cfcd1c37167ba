"""SQD303: SQLAlchemy 1.x APIs that 2.x removed or turned into warnings."""

from __future__ import annotations

import ast
from dataclasses import replace
from functools import cached_property

from sqla_doctor.findings import Applicability, Fix, Severity
from sqla_doctor.static.dataflow import BindingKind
from sqla_doctor.static.objects import ObjectKind, SqlaObjects
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to
from sqla_doctor.static.syntax import call_keyword, is_false_literal, source_segment

REMOVED = "was removed"
RAISES = "raises"
LEGACY = "is legacy and warns"

# Engine methods that 2.0 removed (connectionless execution and friends).
_ENGINE_METHODS = {
    "execute": "run it on a connection: `with engine.connect() as conn: conn.execute(...)`",
    "scalar": "run it on a connection: `with engine.connect() as conn: conn.scalar(...)`",
    "table_names": "use `sqlalchemy.inspect(engine).get_table_names()`",
    "has_table": "use `sqlalchemy.inspect(engine).has_table(name)`",
    "run_callable": "call the function with a connection from `engine.connect()`",
    "transaction": "use `with engine.begin() as conn:`",
}
# Loader options that 2.0 only accepts class-bound attributes for.
_LOADERS = frozenset(
    {
        "joinedload", "selectinload", "subqueryload", "lazyload", "immediateload", "noload",
        "raiseload", "defaultload", "contains_eager", "load_only", "defer", "undefer",
        "selectin_polymorphic",
    }
)
_SESSION_MAKERS = frozenset(
    {"sessionmaker", "Session", "AsyncSession", "async_sessionmaker"}
)
# Keywords that Session.execute()/Connection.execute() take; any other is a 1.x bind value.
_EXECUTE_KEYWORDS = frozenset(
    {"parameters", "params", "execution_options", "bind_arguments", "_parent_execute_state",
     "_add_event"}
)


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _unbracket(source: str, column: int) -> str:
    """``[a, b]`` → ``a, b``; a list written over several lines keeps one element a line,
    moved left to where the bracket was."""
    inner = source[1:-1]
    if "\n" not in inner:
        return inner.strip().rstrip(",")
    lines = inner.split("\n")
    content = [line for line in lines if line.strip()]
    indent = len(content[0]) - len(content[0].lstrip(" "))
    shift = max(indent - column, 0)
    moved = [line[shift:] if line[:shift].isspace() else line.lstrip(" ") for line in lines]
    return "\n".join(moved).strip().rstrip(",")


class Removed1xApi(Rule):
    """
    ## What it does
    Checks for SQLAlchemy 1.x APIs that 2.x removed or deprecated.

    Reported, when the receiver is knowably SQLAlchemy's:

    - `engine.execute()`, `engine.scalar()`, `engine.table_names()`, `engine.has_table()`
      (connectionless execution), on an engine from `create_engine()` (any module),
      Flask-SQLAlchemy's `db.engine` or a parameter annotated `Engine`;
    - `conn.execute("SELECT ...")` / `session.execute("...")` with plain-string SQL, and
      `conn.execute(stmt, id=5)` with bind values as keyword arguments or several
      parameter dicts as positional arguments, on a known connection or session;
    - `select([User.id, User.name])` and `case([(cond, value)])`, the list forms;
    - `sessionmaker(autocommit=True)`, `Session(autocommit=True)`;
    - `MetaData(bind=engine)`, `Table(..., autoload=True)`;
    - loader options given attribute names as strings: `joinedload("posts")`;
    - `session.query(User).get(1)` and Flask-SQLAlchemy's `User.query.get(1)`
      (`Query.get()` still works but emits `LegacyAPIWarning`; reported as a warning),
      unless the model's `query_class` defines its own `get()`, or is a class this
      model's body does not define (which may).

    ## Why is this bad?
    These calls fail the first time they run on SQLAlchemy 2.x — `AttributeError: 'Engine'
    object has no attribute 'execute'`, `ObjectNotExecutableError`, `ArgumentError`,
    `TypeError` — often on a code path that tests do not cover, after an upgrade that
    looked finished. `Query.get()` warns on every call and will be removed.

    ## Example
    ```python
    engine = create_engine(url)
    rows = engine.execute("SELECT id, name FROM users").fetchall()
    user = session.query(User).get(user_id)
    names = session.execute(select([User.name])).scalars().all()
    ```

    Use instead:
    ```python
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, name FROM users")).fetchall()
    user = session.get(User, user_id)
    names = session.execute(select(User.name)).scalars().all()
    ```

    ## Fix safety
    Safe, and offered only where the rewrite is mechanical: `session.query(User).get(x)`
    becomes `session.get(User, x)` (the same identity-map lookup, then the same SELECT),
    and `select([a, b])` / `case([(c, v)])` lose their brackets (the same construct). Other
    findings need a decision (where the connection comes from, whether autocommit was
    relied on) and have no fix.

    ## Known problems
    A project whose requirements pin SQLAlchemy below 2.0 (`sqlalchemy==1.4.54`,
    `sqlalchemy<2`, Poetry's `^1.4`, in `pyproject.toml`, `setup.cfg`, `setup.py`,
    `Pipfile` or `requirements*.txt` at its top and the files they include, or its
    folders' when the top names no version; a lock file's pin; `sqlmodel<0.0.12` or
    `flask-sqlalchemy<3`, which hold it below 2.0) runs the API this rule reports: the
    rule is off there, said once on stderr, until it is selected by code or name to plan
    the move to 2.0. A requirement of 2.0 or later anywhere keeps it on.

    ## References
    - [SQLAlchemy 2.0 migration guide](https://docs.sqlalchemy.org/en/20/changelog/migration_20.html)
    - [Connectionless execution removed](https://docs.sqlalchemy.org/en/20/changelog/migration_20.html#implicit-and-connectionless-execution-bound-metadata-removed)
    - [`select()` no longer accepts a list](https://docs.sqlalchemy.org/en/20/changelog/migration_20.html#select-no-longer-accepts-varied-constructor-arguments-columns-are-passed-positionally)
    - [Library-level autocommit removed](https://docs.sqlalchemy.org/en/20/changelog/migration_20.html#library-level-but-not-driver-level-autocommit-removed-from-both-core-and-orm)
    - [`Session.get()`](https://docs.sqlalchemy.org/en/20/orm/session_api.html#sqlalchemy.orm.Session.get)
    """

    code = "SQD303"
    requires_sqlalchemy_2 = True
    name = "removed-1x-api"
    pitfalls = ("P37",)
    severity = Severity.ERROR
    fix = Applicability.SAFE
    message = "{api} {status} in SQLAlchemy 2.0 — {instead}"

    VALID = (
        Valid(
            """
            from sqlalchemy import create_engine, select, text, case
            from sqlalchemy.orm import Session, joinedload, sessionmaker
            engine = create_engine("postgresql://localhost/app", pool_pre_ping=True)
            SessionLocal = sessionmaker(engine, autocommit=False, autoflush=False)
            def report(user_id):
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                    conn.execute(text("SELECT :x"), {"x": 1})
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    stmt = select(User.id, User.name).options(joinedload(User.posts))
                    label = case((User.id == 1, "one"), else_="many")
                    return user, session.execute(stmt, execution_options={"yield_per": 10})
            """
        ),
        # Annotated as either an engine or a connection: a connection here (isinstance).
        Valid(
            """
            from typing import Union
            from sqlalchemy import Connection, Engine

            def populate(engine_or_connection: Union[Engine, Connection], stmt) -> None:
                if isinstance(engine_or_connection, Connection):
                    conn = engine_or_connection
                    conn.execute(stmt)
                    conn.commit()

            def count(bind: Engine | Connection, stmt):
                return bind.scalar(stmt)
            """
        ),
        # sqlite3 and DB-API connections take plain strings; dicts have .get().
        Valid(
            """
            import sqlite3
            conn = sqlite3.connect("app.db")
            conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER)")
            cache = {}
            value = cache.get(1)
            """
        ),
        # Unknown receivers: not knowably SQLAlchemy's.
        Valid(
            """
            from sqlalchemy import text
            def run(conn, engine):
                conn.execute("SELECT 1")
                return engine.execute(text("SELECT 1"))
            """
        ),
        # A statement constant from another module is not knowably a string.
        Valid(
            """
            from sqlalchemy.orm import Session
            from app.queries import ACTIVE_USERS
            def active(session: Session):
                return session.execute(ACTIVE_USERS).scalars().all()
            """
        ),
        # select() and case() given a list variable, a dict, or a star.
        Valid(
            """
            from sqlalchemy import case, select
            columns = [User.id, User.name]
            stmt = select(*columns)
            kind = case({"a": "Alpha", "b": "Beta"}, value=User.kind)
            """
        ),
        # Another library's select() takes lists.
        Valid(
            """
            import select
            readable, _, _ = select.select([sock], [], [], 1.0)
            """
        ),
        # Wildcards stay valid, and undefer_group takes a group name.
        Valid(
            """
            from sqlalchemy.orm import raiseload, lazyload, undefer_group
            opts = [raiseload("*"), lazyload("*"), undefer_group("details")]
            """
        ),
        # Alembic's op.execute() takes plain strings; Table() with autoload_with.
        Valid(
            """
            from alembic import op
            import sqlalchemy as sa
            def upgrade():
                op.execute("UPDATE users SET active = true")
                users = sa.Table("users", sa.MetaData(), autoload_with=op.get_bind())
            """
        ),
        # A Flask-SQLAlchemy `query_class` with its own `get()`: the project's method,
        # with its own signature, not `Query.get()`.
        Valid(
            """
            from flask import g
            from flask_sqlalchemy import SQLAlchemy
            from sqlalchemy.orm import Query
            db = SQLAlchemy()
            class Person(db.Model):
                class PersonQuery(Query):
                    def get(self, id, project=None):
                        project = project or g.project
                        return self.filter_by(id=id, project_id=project.id).one_or_none()
                query_class = PersonQuery
                id = db.Column(db.Integer, primary_key=True)
                project_id = db.Column(db.Integer)
            def member(member_id, project):
                return Person.query.get(member_id, project)
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            from sqlalchemy import create_engine
            engine = create_engine("postgresql://localhost/app")
            def names():
                return engine.execute("SELECT name FROM users").fetchall()
            """,
            expected_message=(
                "`engine.execute()` was removed in SQLAlchemy 2.0 — run it on a connection: "
                "`with engine.connect() as conn: conn.execute(...)`"
            ),
            line=4,
        ),
        # An optional engine is still an engine.
        Invalid(
            """
            from typing import Optional
            from sqlalchemy import Engine

            def names(engine: Optional[Engine], other: Engine | None, stmt):
                return engine.execute(stmt), other.execute(stmt)
            """,
            line=5,
            count=2,
        ),
        # Flask-SQLAlchemy's db.engine, and an engine imported from another module.
        Invalid(
            """
            from app import db
            from app.database import engine
            def stats():
                a = db.engine.execute("SELECT count(*) FROM users").scalar()
                b = engine.table_names()
                return a, b
            """,
            files={
                "app/__init__.py": "from flask_sqlalchemy import SQLAlchemy\ndb = SQLAlchemy()\n",
                "app/database.py": "import sqlalchemy as sa\nengine = sa.create_engine('sqlite://')\n",
            },
            path="app/stats.py",
            count=2,
        ),
        Invalid(
            """
            from sqlalchemy.orm import Session
            def user(engine, user_id):
                with Session(engine) as session:
                    return session.query(User).get(user_id)
            """,
            expected_message=(
                "`Query.get()` is legacy and warns in SQLAlchemy 2.0 — use "
                "`session.get(User, user_id)`"
            ),
            expected_fix="""
            from sqlalchemy.orm import Session
            def user(engine, user_id):
                with Session(engine) as session:
                    return session.get(User, user_id)
            """,
        ),
        Invalid(
            """
            import sqlalchemy as sa
            def names(session):
                return session.execute(sa.select([User.id, User.name])).all()
            """,
            expected_fix="""
            import sqlalchemy as sa
            def names(session):
                return session.execute(sa.select(User.id, User.name)).all()
            """,
        ),
        Invalid(
            """
            from sqlalchemy import case
            label = case(
                [
                    (User.score > 90, "gold"),
                    (User.score > 50, "silver"),
                ],
                else_="bronze",
            )
            """,
            expected_fix="""
            from sqlalchemy import case
            label = case(
                (User.score > 90, "gold"),
                (User.score > 50, "silver"),
                else_="bronze",
            )
            """,
        ),
        Invalid(
            """
            from sqlalchemy.orm import scoped_session, sessionmaker
            Session = scoped_session(sessionmaker(bind=engine, autocommit=True))
            """,
            expected_message=(
                "`sessionmaker(autocommit=True)` was removed in SQLAlchemy 2.0 — use "
                "`with session.begin():` blocks, or a connection with "
                '`isolation_level="AUTOCOMMIT"`'
            ),
        ),
        # Plain-string SQL on a connection, keyword bind values.
        Invalid(
            """
            from sqlalchemy import create_engine, text
            engine = create_engine("sqlite:///app.db")
            with engine.connect() as conn:
                conn.execute("DELETE FROM sessions WHERE expired")
                conn.execute(text("SELECT * FROM users WHERE id = :id"), id=5)
            """,
            count=2,
            line=4,
        ),
        # 1.x Session.execute() routing keywords.
        Invalid(
            """
            from sqlalchemy.orm import Session
            def run(session: Session, stmt, engine):
                return session.execute(stmt, bind=engine)
            """,
            expected_message=(
                "`bind=` in `session.execute()` raises in SQLAlchemy 2.0 — pass "
                '`bind_arguments={"bind": ...}`'
            ),
        ),
        # In an Alembic migration: op.get_bind() is a Connection.
        Invalid(
            """
            from alembic import op
            def upgrade():
                bind = op.get_bind()
                bind.execute("UPDATE users SET active = true")
            """,
        ),
        Invalid(
            """
            import sqlalchemy as sa
            metadata = sa.MetaData(bind=engine)
            users = sa.Table("users", metadata, autoload=True)
            """,
            count=2,
        ),
        Invalid(
            """
            from sqlalchemy.orm import joinedload, load_only
            def posts(session):
                return session.scalars(
                    select(Post).options(joinedload("author"), load_only("title", "body"))
                ).all()
            """,
            count=2,
        ),
        # Flask-SQLAlchemy's Model.query.get().
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            class User(db.Model):
                id = db.Column(db.Integer, primary_key=True)
            def load_user(user_id):
                return User.query.get(int(user_id))
            """,
            expected_message=(
                "`Query.get()` is legacy and warns in SQLAlchemy 2.0 — use "
                "`db.session.get(User, int(user_id))`"
            ),
        ),
        # A `query_class` that adds other methods but inherits `Query.get()`.
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy
            from sqlalchemy.orm import Query
            db = SQLAlchemy()
            class Project(db.Model):
                class ProjectQuery(Query):
                    def get_by_name(self, name):
                        return self.filter(Project.name == name).one()
                query_class = ProjectQuery
                id = db.Column(db.String(64), primary_key=True)
                name = db.Column(db.UnicodeText)
            def project(project_id):
                return Project.query.get(project_id)
            """
        ),
        # A session from a Flask-SQLAlchemy extension executing plain text.
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            def purge():
                sql = "DELETE FROM tokens WHERE expires_at < now()"
                db.session.execute(sql)
            """,
            line=5,
        ),
    )

    @cached_property
    def objects(self) -> SqlaObjects:
        return SqlaObjects(self.ctx, self.ctx.dataflow)

    @calls_to(
        named=("select", "case", *_SESSION_MAKERS, "MetaData", "Table", *_LOADERS),
        ending=("get", *_ENGINE_METHODS, "execute", "scalar", "scalars"),
    )
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = self.ctx.names.sqla_name(func)
        if name is not None:
            self._sqla_call(node, name)
        if isinstance(func, ast.Attribute):
            self._method_call(node, func)

    # SQLAlchemy's own functions --------------------------------------------------------
    def _sqla_call(self, node: ast.Call, name: str) -> None:
        if name in ("select", "case"):
            self._list_form(node, name)
        elif name in _SESSION_MAKERS:
            keyword = call_keyword(node, "autocommit")
            # `autocommit=False` is still accepted (and is the only value 2.x accepts).
            value = keyword.value if keyword is not None else None
            if isinstance(value, ast.Constant) and not is_false_literal(value):
                self._report(
                    node, f"`{name}(autocommit=True)`", REMOVED,
                    "use `with session.begin():` blocks, or a connection with "
                    "`isolation_level=\"AUTOCOMMIT\"`",
                )
        elif name == "MetaData" and call_keyword(node, "bind") is not None:
            self._report(
                node, "`MetaData(bind=...)`", REMOVED,
                "pass the engine where it is used: `metadata.create_all(engine)`",
            )
        elif name == "Table" and call_keyword(node, "autoload") is not None:
            self._report(
                node, "`Table(..., autoload=True)`", REMOVED,
                "use `Table(name, metadata, autoload_with=engine)`",
            )
        elif name in _LOADERS:
            self._string_loader(node, name)

    def _list_form(self, node: ast.Call, name: str) -> None:
        first = node.args[0] if node.args else None
        keyword = call_keyword(node, "columns" if name == "select" else "whens")
        if keyword is not None and isinstance(keyword.value, ast.List):
            self._report(node, f"`{name}({keyword.arg}=[...])`", REMOVED,
                         f"pass the elements positionally: `{name}(a, b)`")
            return
        if not isinstance(first, ast.List):
            return
        if name == "case" and not all(isinstance(e, ast.Tuple) for e in first.elts):
            return
        fix = None
        source = source_segment(self.ctx, first)
        if (name == "case" or len(node.args) == 1) and source.startswith("[") and first.elts:
            column = self.ctx.span(first)[1]
            fix = self.replace(
                first, _unbracket(source, column), f"pass the {name}() elements positionally"
            )
        self._report(
            node, f"`{name}([...])` with a list", REMOVED,
            f"pass the elements positionally: `{name}(a, b)`" if name == "select"
            else "pass the `(condition, value)` tuples positionally: `case((cond, value), ...)`",
            fix=fix,
        )

    def _string_loader(self, node: ast.Call, name: str) -> None:
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value != "*":
                if arg.value.endswith(".*"):
                    continue
                self._report(
                    node, f"`{name}({arg.value!r})`", RAISES,
                    f"name the attribute: `{name}(Model.{arg.value.split('.')[0]})`",
                )
                return

    # Methods on sessions, engines, connections, queries ----------------------------------
    def _method_call(self, node: ast.Call, func: ast.Attribute) -> None:
        attr = func.attr
        if attr == "get":
            self._query_get(node, func)
            return
        kind: ObjectKind | None = None
        if attr in _ENGINE_METHODS:
            kind = self.objects.kind_of(func.value)
            if kind is not None and kind.is_engine:
                receiver = _short(source_segment(self.ctx, func.value), 20)
                self._report(node, f"`{receiver}.{attr}()`", REMOVED, _ENGINE_METHODS[attr])
                return
            if kind is None or not (kind.is_session or kind.is_connection):
                # Known already: no need to look at what it runs.
                return
        if attr in ("execute", "scalar", "scalars"):
            self._execute(node, func, kind)

    def _execute(self, node: ast.Call, func: ast.Attribute, kind: ObjectKind | None) -> None:
        statement = node.args[0] if node.args else None
        plain = statement is not None and self._plain_string(statement)
        extra = [
            k.arg for k in node.keywords if k.arg is not None and k.arg not in _EXECUTE_KEYWORDS
        ]
        # What the receiver is costs a data-flow pass: ask only when the call is suspect.
        if not (plain or extra or len(node.args) > 2):
            return
        if kind is None:
            kind = self.objects.kind_of(func.value)
        if kind is None or not (kind.is_session or kind.is_connection):
            return
        receiver = _short(source_segment(self.ctx, func.value), 20)
        call = f"`{receiver}.{func.attr}()`"
        if plain:
            self._report(
                node, f"plain-string SQL in {call}", RAISES,
                "wrap it in `text()`: `" + receiver + "." + func.attr + "(text(\"...\"))`",
            )
            return
        if extra and kind.is_session and extra[0] in ("bind", "mapper"):
            # 1.x Session.execute(stmt, bind=..., mapper=...) chose the connection.
            self._report(
                node, f"`{extra[0]}=` in {call}", RAISES,
                f"pass `bind_arguments={{\"{extra[0]}\": ...}}`",
            )
        elif extra:
            self._report(
                node, f"bind values as keyword arguments to {call}", RAISES,
                f"pass them as a dict: `{receiver}.{func.attr}(stmt, {{\"{extra[0]}\": ...}})`",
            )
        elif len(node.args) > 2:
            self._report(
                node, f"several parameter sets as arguments to {call}", RAISES,
                f"pass a list of dicts: `{receiver}.{func.attr}(stmt, [{{...}}, {{...}}])`",
            )

    def _plain_string(self, expr: ast.expr, depth: int = 0) -> bool:
        """Certainly a ``str``: a literal, an f-string, string formatting or concatenation,
        or a name only ever assigned those here (an imported ``QUERY`` may be a select())."""
        if depth > 8:
            return False
        if isinstance(expr, ast.Constant):
            return isinstance(expr.value, str)
        if isinstance(expr, ast.JoinedStr):
            return True
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
            return self._plain_string(expr.left, depth + 1) or self._plain_string(
                expr.right, depth + 1
            )
        if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Mod):
            return self._plain_string(expr.left, depth + 1)
        if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
            return expr.func.attr == "format" and self._plain_string(expr.func.value, depth + 1)
        if isinstance(expr, ast.Name):
            bindings = [
                b for b in self.objects.flow.bindings(expr)
                if b.kind is not BindingKind.ANNOTATION
            ]
            return bool(bindings) and all(
                b.kind in (BindingKind.ASSIGN, BindingKind.AUG_ASSIGN)
                and b.value is not None
                and not b.path
                and (b.kind is BindingKind.AUG_ASSIGN or self._plain_string(b.value, depth + 1))
                for b in bindings
            )
        return False

    def _query_get(self, node: ast.Call, func: ast.Attribute) -> None:
        """``session.query(User).get(pk)`` and Flask-SQLAlchemy's ``User.query.get(pk)``."""
        target = func.value
        if not node.args or not isinstance(target, (ast.Attribute, ast.Call)):
            return
        if (
            isinstance(target, ast.Attribute)
            and target.attr == "query"
            and self.objects.flask_model(target.value)
        ):
            if self._custom_query_get(target.value):
                return
            ident = ", ".join(source_segment(self.ctx, a) for a in node.args)
            model = source_segment(self.ctx, target.value)
            self._report(
                node, "`Query.get()`", LEGACY, f"use `db.session.get({model}, {ident})`",
                severity=Severity.WARNING,
            )
            return
        query = self._session_query(target)
        if query is None:
            return
        ident = ", ".join(source_segment(self.ctx, a) for a in node.args)
        assert isinstance(query.func, ast.Attribute)
        session = source_segment(self.ctx, query.func.value)
        entity = source_segment(self.ctx, query.args[0]) if query.args else "Model"
        fix = None
        if target is query and len(query.args) == 1 and not query.keywords and not node.keywords:
            fix = self.replace(
                node, f"{session}.get({entity}, {ident})", "use Session.get(Model, pk)"
            )
        self._report(
            node, "`Query.get()`", LEGACY, f"use `{_short(session, 20)}.get({entity}, {ident})`",
            fix=fix, severity=Severity.WARNING,
        )

    def _custom_query_get(self, model_expr: ast.expr) -> bool:
        """Whether the model's ``query_class`` (its own or a base's) may define ``get()``:
        then ``Model.query.get(...)`` calls the project's method, not ``Query.get``."""
        index = self.ctx.index
        model = index.model_for_expr(self.ctx, model_expr)
        if model is None:
            return False
        for name in model.lineage:
            facts = index.class_facts(name)
            if facts is not None and facts.query_class_get:
                return True
        return False

    def _session_query(self, target: ast.expr) -> ast.Call | None:
        """The ``<session>.query(...)`` call a chain of Query methods starts from."""
        current = target
        while isinstance(current, ast.Call) and isinstance(current.func, ast.Attribute):
            if current.func.attr == "query":
                receiver = current.func.value
                kind = self.objects.kind_of(receiver)
                if kind is not None and kind.is_session:
                    return current
                return None
            current = current.func.value
        return None

    def _report(
        self,
        node: ast.AST,
        api: str,
        status: str,
        instead: str,
        *,
        fix: Fix | None = None,
        severity: Severity | None = None,
    ) -> None:
        self.report(
            node,
            api=api,
            status=status,
            instead=instead,
            fix=fix,
            hint=instead[0].upper() + instead[1:],
        )
        if severity is not None:
            # `Query.get()` still works in 2.x (with a LegacyAPIWarning): not an error.
            self.findings[-1] = replace(self.findings[-1], severity=severity)
