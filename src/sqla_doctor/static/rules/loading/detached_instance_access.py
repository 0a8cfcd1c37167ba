"""SQD204: ORM objects navigated after the session that loaded them closed."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from sqla_doctor.findings import Severity
from sqla_doctor.static.flow import (
    Binding,
    FunctionFlow,
    InstanceValue,
    ObjectsValue,
    RowValue,
    SessionValue,
    contains,
    flow_for,
    runs_code,
    worth_analysing,
)
from sqla_doctor.static.lifecycle import exit_method, sessions_ended
from sqla_doctor.static.navigation import (
    Navigator,
    access_option,
    left_open,
    row_entity_reads,
)
from sqla_doctor.static.rule import Invalid, Rule, Valid

_SETTINGS = """
class Settings:
    EXPIRE = False

settings = Settings()
OPTIONS = {"expire_on_commit": False}
"""

_FILES = {
    "app/__init__.py": "",
    "app/db.py": """
    from contextlib import contextmanager

    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    engine = create_engine("postgresql+psycopg://app@db/app")
    SessionLocal = sessionmaker(engine)
    ReadSession = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def session_scope():
        session = SessionLocal()
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise
        finally:
            session.close()
    """,
    "app/models.py": """
    from sqlalchemy import ForeignKey
    from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

    class Base(DeclarativeBase):
        pass

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]
        posts: Mapped[list["Post"]] = relationship(back_populates="author")

    class Post(Base):
        __tablename__ = "posts"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str]
        author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
        author: Mapped[User] = relationship(back_populates="posts")
    """,
}


@dataclass(frozen=True)
class _Region:
    """A source range (what `contains()` needs) from a position to the scope's end."""

    lineno: int
    col_offset: int
    end_lineno: int
    end_col_offset: int

    @classmethod
    def after(cls, node: ast.AST, scope: ast.AST) -> _Region:
        """From the end of ``node`` (a ``with`` block, a ``close()`` call) to the end of
        ``scope``."""
        start = (getattr(node, "end_lineno", None) or 0, getattr(node, "end_col_offset", None) or 0)
        return cls(*start, *_end_of(scope))


# A context manager that commits only when its caller passes `commit=True`.
# A module-level alias named `key`, its rows' collection read after the block.
_MODULE_ALIAS = """
from sqlalchemy import func, select
from sqlalchemy.orm import aliased, selectinload
from app.db import SessionLocal
from app.models import User

author = aliased(User, name="{key}")

def by_author():
    with SessionLocal() as session:
        rows = session.execute(select(author, func.length(author.name)){options}).all()
    return [len(row.author.posts) for row in rows]
"""
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

# A helper returning rows that hold an entity, its session closed.
_ROW_FILES = {
    **_FILES,
    "app/reports.py": """
    from sqlalchemy import func, select
    from app.db import SessionLocal
    from app.models import User

    def name_lengths():
        with SessionLocal() as session:
            stmt = select(User, func.length(User.name).label("len"))
            return session.execute(stmt).all()
    """,
}

# A service object made once at module level, whose methods close their own session.
_SERVICE_FILES = {
    **_FILES,
    "app/service.py": """
    from sqlalchemy import select
    from sqlalchemy.orm import selectinload
    from app.db import SessionLocal
    from app.models import User

    class UserService:
        def __init__(self, factory=SessionLocal):
            self.factory = factory

        def all_users(self):
            with self.factory() as session:
                return session.scalars(select(User)).all()

        def all_users_with_posts(self):
            with self.factory() as session:
                return session.scalars(select(User).options(selectinload(User.posts))).all()

    users = UserService()
    """,
}
# Loaders in one module returning what a helper of another module loads, some from
# inside a `with` block that closes the session.
_HELPER_FILES = {
    **_FILES,
    "app/repo.py": """
    from sqlalchemy.orm import selectinload
    from app.models import User

    def by_id(session, user_id):
        return session.get(User, user_id)

    def with_posts(session, user_id):
        return session.get(User, user_id, options=[selectinload(User.posts)])

    class UserRepository:
        def __init__(self, session):
            self.session = session

        def by_id(self, user_id):
            return self.session.get(User, user_id)
    """,
    "app/loaders.py": """
    from app.db import SessionLocal
    from app.repo import UserRepository, by_id, with_posts

    def load_user(user_id):
        with SessionLocal() as session:
            return by_id(session, user_id)

    def load_through_repository(user_id):
        with SessionLocal() as session:
            return UserRepository(session).by_id(user_id)

    def load_with_posts(user_id):
        with SessionLocal() as session:
            return with_posts(session, user_id)

    def load_in(session, user_id):
        return by_id(session, user_id)
    """,
}
# A unit of work whose `__exit__` closes its session, and its repository.
_UNIT_OF_WORK_FILES = {
    **_HELPER_FILES,
    "app/uow.py": """
    from app.db import SessionLocal
    from app.repo import UserRepository

    class UnitOfWork:
        def __enter__(self):
            self.session = SessionLocal()
            self.users = UserRepository(self.session)
            return self

        def __exit__(self, *args):
            self.session.rollback()
            self.session.close()
    """,
}
_THROUGH_UNIT_OF_WORK = """
from app.uow import UnitOfWork

def titles(user_id, uow: UnitOfWork):
    with uow:
        user = uow.users.by_id(user_id){inside}
    return {after}

def count(user_id):
    with UnitOfWork() as uow:
        user = uow.users.by_id(user_id){inside}
    return {after}
"""
# A session's objects, loaded in its `with` block and returned after the block.
_LOADED_THEN_RETURNED = """
from sqlalchemy.orm import selectinload
from app.db import SessionLocal
from app.models import User

def get_user(user_id):
    with SessionLocal() as session:
        user = session.get(User, user_id{options})
    return user

def post_titles(user_id):
    user = get_user(user_id)
    return [post.title for post in user.posts]
"""
# A relationship read straight off the returned object.
_READ_OFF_THE_CALL = """
from sqlalchemy.orm import selectinload
from app.db import SessionLocal
from app.models import User

def get_user(user_id):
    with SessionLocal() as session:
        return session.get(User, user_id{options})

def post_titles(user_id):
    return [post.title for post in get_user(user_id).posts]
"""
# A script's top-level code reading what a helper returned from its closed session.
_SCRIPT_AFTER_HELPER = """
from sqlalchemy.orm import selectinload
from app.db import SessionLocal
from app.models import User

def get_user(user_id):
    with SessionLocal() as session:
        return session.get(User, user_id{options})

user = get_user(1)
for post in user.posts:
    print(post.title)
"""
# A context manager over a scoped_session's registry (or a module-level session) that
# frames a transaction but, without the cleanup, never closes the session it yields:
# the registry keeps it, and its objects, after the block (packit-service).
_REGISTRY_FILES = {
    **_FILES,
    "app/registry.py": """
    import os
    from contextlib import contextmanager

    from sqlalchemy import create_engine
    from sqlalchemy.orm import scoped_session, sessionmaker

    engine = create_engine("postgresql+psycopg://app@db/app")
    Session = sessionmaker(bind=engine)
    if os.environ.get("POOL") == "gevent":
        singleton_session = Session()
    else:
        Session = scoped_session(Session)
        singleton_session = None

    @contextmanager
    def sa_session_transaction(commit=False):
        session = {make}
        try:
            yield session
            if commit:
                session.commit()
        except Exception:
            session.rollback()
            raise{cleanup}
    """,
}
_THROUGH_REGISTRY = """
from app.models import User
from app.registry import sa_session_transaction

def get_user(user_id):
    with sa_session_transaction() as session:
        return session.get(User, user_id)

def post_titles(user_id):
    return [post.title for post in get_user(user_id).posts]
"""
# The objects read after the block in the function that loaded them.
_AFTER_REGISTRY_BLOCK = """
from app.models import User
from app.registry import sa_session_transaction

def post_count(user_id):
    with sa_session_transaction() as session:
        user = session.get(User, user_id)
    return len(user.posts)
"""
_REMOVED = "\n        finally:\n            Session.remove()"


def _registry_files(make: str, cleanup: str) -> dict[str, str]:
    registry = _REGISTRY_FILES["app/registry.py"].format(make=make, cleanup=cleanup)
    return {**_REGISTRY_FILES, "app/registry.py": registry}


# The relationship read by a helper the detached object is handed to.
_READ_BY_HELPER = """
from app.db import SessionLocal
from app.models import User

def get_user(user_id):
    with SessionLocal() as session:
        return session.get(User, user_id)

def titles(user):
    return [p.title for p in user.posts]

def post_titles(user_id):
    user = get_user(user_id)
    return titles(user)
"""
_SERVICE_USE = """
from app.service import users

def post_counts():
    return {{u.name: len(u.posts) for u in users.{method}()}}
"""


def _detached_read(
    relationship: str, shown: str, where: str, option: str, via: str | None = None
) -> str:
    # `via`: the helper that reads it, already quoted (`` `titles()` (app/views.py:8) ``).
    on = f"`{shown}`" if via is None else f"`{shown}` in {via}"
    return (
        f"`{relationship}` is lazy-loaded on {on} after the session that loaded it "
        f"closed ({where}): this raises DetachedInstanceError — add `{option}` to that "
        "query, or read it before the session closes"
    )


class DetachedInstanceAccess(Rule):
    """
    ## What it does
    Checks for ORM objects used after the session that loaded them is closed — after
    its `with` block, after `close()`, after the `with uow:` block of a unit of work whose
    `__exit__` closes its session (objects its repository loaded, `uow.users.get(id)`),
    or returned by a function (in any module) that loads them inside a session it
    closes, itself or through another function — when the code then reads a relationship
    the query did not eager-load, or reads any attribute after a commit expired them
    (`expire_on_commit=True`, the default): a `commit()` call, or the commit that ends a
    `with SessionLocal.begin()` block or a context manager that commits after its
    `yield`. Objects the block makes and `add()`s are expired by that commit too. A
    script's top-level code is checked as a function's body is.

    ## Why is this bad?
    A closed session cannot load anything: `DetachedInstanceError: Parent instance
    <User at 0x...> is not bound to a Session; lazy load operation of attribute 'posts'
    cannot proceed` (or `Instance <User> is not bound to a Session; attribute refresh
    operation cannot proceed` once a commit has expired it). It typically fires in the
    template or serializer, far from the query.

    ## Known problems
    Objects loaded by async sessions are reported by SQD202 for relationships; here
    only their expired attributes are. Objects merged into another session later are
    not tracked. A commit is taken to expire objects only when the session is known to
    do so: `expire_on_commit` left out or `True`; a value read from settings, or options
    passed as `**kwargs` to the session or its factory, stay silent.

    ## Example
    ```python
    def get_user(user_id):
        with SessionLocal() as session:
            return session.get(User, user_id)

    user = get_user(1)
    print(user.posts)
    ```

    Use instead:
    ```python
    def get_user(user_id):
        with SessionLocal() as session:
            return session.get(User, user_id, options=[selectinload(User.posts)])
    ```
    or read what you need while the session is open, or keep the session open for the
    whole unit of work (and `expire_on_commit=False` if objects outlive a commit).

    ## References
    - [DetachedInstanceError](https://docs.sqlalchemy.org/en/20/errors.html#error-bhk3)
    - [Session basics: expire_on_commit](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#committing)
    """

    code = "SQD204"
    name = "detached-instance-access"
    pitfalls = ("P02",)
    severity = Severity.ERROR
    message = "{problem}"

    VALID = (
        Valid(
            _THROUGH_REGISTRY,
            path="app/views.py",
            files=_registry_files("singleton_session or Session()", ""),
        ),
        Valid(
            _AFTER_REGISTRY_BLOCK,
            path="app/views.py",
            files=_registry_files("Session()", ""),
        ),
        Valid(
            _SCRIPT_AFTER_HELPER.format(options=", options=[selectinload(User.posts)]"),
            path="scripts/titles.py",
            files=_FILES,
        ),
        Valid(
            _SERVICE_USE.format(method="all_users_with_posts"),
            path="app/views.py",
            files=_SERVICE_FILES,
        ),
        Valid(
            """
            from sqlalchemy.orm import selectinload
            from app.db import SessionLocal
            from app.models import User

            def show(user_id):
                with SessionLocal() as session:
                    user = session.get(User, user_id, options=[selectinload(User.posts)])
                    name = user.name
                return name, [p.title for p in user.posts]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Used inside the block; columns after close (loaded, not expired).
        Valid(
            """
            from app.db import SessionLocal
            from app.models import User

            def show(user_id):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    titles = [p.title for p in user.posts]
                return user.name, titles
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Objects made and added in the block: read before it ends, refreshed after the
        # commit, kept loaded by the session (expire_on_commit=False), only flushed.
        Valid(
            """
            from sqlalchemy.orm import Session
            from app.db import engine
            from app.models import User

            def a(name):
                with Session(engine) as session:
                    user = User(name=name)
                    session.add(user)
                    session.commit()
                    ident = user.id
                return ident

            def b(name):
                with Session(engine) as session:
                    user = User(name=name)
                    session.add(user)
                    session.commit()
                    session.refresh(user)
                return user.id

            def c(name):
                with Session(engine, expire_on_commit=False) as session:
                    user = User(name=name)
                    session.add(user)
                    session.commit()
                return user.id

            def d(name):
                with Session(engine) as session:
                    user = User(name=name)
                    session.add(user)
                    session.flush()
                return user.id
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Committed, but the factory keeps objects loaded (expire_on_commit=False).
        Valid(
            """
            from app.db import ReadSession
            from app.models import User

            def rename(user_id, name):
                with ReadSession() as session:
                    user = session.get(User, user_id)
                    user.name = name
                    session.commit()
                return user.name

            def rename_in_block(user_id, name):
                with ReadSession.begin() as session:
                    user = session.get(User, user_id)
                    user.name = name
                return user.name
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Whether the factory expires objects is not knowable here (settings, options
        # passed as `**kwargs`), or is a literal False by another route (a registry of a
        # factory that keeps them, a call that overrides the factory's default).
        Valid(
            """
            from sqlalchemy.orm import Session, scoped_session, sessionmaker
            from app.db import ReadSession, SessionLocal, engine
            from app.models import User
            from app.settings import OPTIONS, settings

            SettingsSession = sessionmaker(engine, expire_on_commit=settings.EXPIRE)
            OptionsSession = sessionmaker(engine, **OPTIONS)
            Registry = scoped_session(ReadSession)

            def a(user_id, name):
                with SettingsSession() as session:
                    user = session.get(User, user_id)
                    user.name = name
                    session.commit()
                return user.name

            def b(user_id, name):
                with OptionsSession() as session:
                    user = session.get(User, user_id)
                    user.name = name
                    session.commit()
                return user.name

            def c(user_id, name):
                with Session(engine, **OPTIONS) as session:
                    user = session.get(User, user_id)
                    user.name = name
                    session.commit()
                return user.name

            def d(user_id, name):
                with SessionLocal(expire_on_commit=False) as session:
                    user = session.get(User, user_id)
                    user.name = name
                    session.commit()
                return user.name

            def e(user_id, name):
                session = Registry()
                user = session.get(User, user_id)
                user.name = name
                session.commit()
                session.close()
                return user.name
            """,
            path="app/views.py",
            files={**_FILES, "app/settings.py": _SETTINGS},
        ),
        # A helper that returns objects from a session it does not close.
        Valid(
            """
            from app.models import User
            from app.repo import get_user

            def show(session, user_id):
                user = get_user(session, user_id)
                return [p.title for p in user.posts]
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/repo.py": """
                from app.models import User

                def get_user(session, user_id):
                    return session.get(User, user_id)
                """,
            },
        ),
        # Relationship read before close, refreshed after commit.
        Valid(
            """
            from app.db import SessionLocal
            from app.models import User

            def rename(user_id, name):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    user.name = name
                    session.commit()
                    session.refresh(user)
                    return user
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Read in the unit of work's block, before its `__exit__` closes the session.
        Valid(
            _THROUGH_UNIT_OF_WORK.format(
                inside="\n        print([p.title for p in user.posts])", after="user.name"
            ),
            path="app/views.py",
            files=_UNIT_OF_WORK_FILES,
        ),
        # A helper's objects, eager-loaded by it, or returned while the session is open.
        Valid(
            """
            from app.loaders import load_in, load_with_posts

            def titles(session, user_id):
                user = load_in(session, user_id)
                return [p.title for p in load_with_posts(user_id).posts + user.posts]
            """,
            path="app/views.py",
            files=_HELPER_FILES,
        ),
        # Read straight off the call, eager-loaded by the query.
        Valid(
            _READ_OFF_THE_CALL.format(options=", options=[selectinload(User.posts)]"),
            path="app/views.py",
            files=_FILES,
        ),
        # Loaded in the block and returned after it, with what the caller reads.
        Valid(
            _LOADED_THEN_RETURNED.format(options=", options=[selectinload(User.posts)]"),
            path="app/views.py",
            files=_FILES,
        ),
        # The block's context manager commits only `if commit:`, and these calls leave
        # it false: the objects are not expired, and their loaded columns stay readable.
        Valid(
            """
            from app.models import User
            from app.scopes import scope

            def name_of(user_id):
                with scope() as session:
                    user = session.get(User, user_id)
                return user.name

            def create(name):
                with scope(False) as session:
                    user = User(name=name)
                    session.add(user)
                return user.name
            """,
            path="app/views.py",
            files=_FLAG_FILES,
        ),
        # The same helper's rows, only their columns read.
        Valid(
            """
            from app.reports import name_lengths

            def export():
                return [(row.len, row.User.name, row[0].id) for row in name_lengths()]
            """,
            path="app/views.py",
            files=_ROW_FILES,
        ),
        # Rows kept after the block: their columns and the entity's loaded columns read,
        # the relationship loaded with the rows (also under an alias's name), and a
        # commit of a session that does not expire them.
        Valid(
            """
            from sqlalchemy import func, select
            from sqlalchemy.orm import aliased, selectinload
            from app.db import ReadSession, SessionLocal
            from app.models import Post, User

            def counts():
                with SessionLocal() as session:
                    stmt = select(User, func.count(Post.id).label("n")).join(User.posts)
                    rows = session.execute(stmt.group_by(User.id)).all()
                return [(row.User.name, row[0].id, row.n, row[1]) for row in rows]

            def with_posts():
                with SessionLocal() as session:
                    stmt = select(User, func.length(User.name)).options(selectinload(User.posts))
                    rows = session.execute(stmt).all()
                for row in rows:
                    print(len(row.User.posts), len(row[0].posts))

            def by_author():
                author = aliased(User, name="author")
                with SessionLocal() as session:
                    stmt = select(author, func.length(author.name)).options(
                        selectinload(author.posts)
                    )
                    rows = session.execute(stmt).all()
                return [len(row.author.posts) for row in rows]

            def committed_unexpired():
                with ReadSession() as session:
                    rows = session.execute(select(User, func.length(User.name))).all()
                    session.commit()
                return [row.User.name for row in rows]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # The module-level alias's collection loaded with the rows, or a Row whose alias
        # is keyed by another name (`row.author` is no entity of it).
        Valid(
            _MODULE_ALIAS.format(key="author", options=".options(selectinload(author.posts))"),
            path="app/views.py",
            files=_FILES,
        ),
        Valid(_MODULE_ALIAS.format(key="writer", options=""), path="app/views.py", files=_FILES),
    )
    INVALID = (
        # A module-level alias too; its Row key is the name= it was given.
        Invalid(
            _MODULE_ALIAS.format(key="author", options=""),
            path="app/views.py",
            files=_FILES,
            line=11,
            expected_message=(
                "`User.posts` is lazy-loaded on `row.author` after the session that loaded it "
                "closed (the `with` block at line 9 closed it): this raises "
                "DetachedInstanceError — add `selectinload(author.posts)` to that query, or "
                "read it before the session closes"
            ),
        ),
        # A Row names an `aliased(..., name=...)` entity by that name.
        Invalid(
            """
            from sqlalchemy import func, select
            from sqlalchemy.orm import aliased
            from app.db import SessionLocal
            from app.models import User

            def by_author():
                author = aliased(User, name="author")
                with SessionLocal() as session:
                    rows = session.execute(select(author, func.length(author.name))).all()
                return [len(row.author.posts) for row in rows]
            """,
            path="app/views.py",
            files=_FILES,
            line=10,
            expected_message=(
                "`User.posts` is lazy-loaded on `row.author` after the session that loaded it "
                "closed (the `with` block at line 8 closed it): this raises "
                "DetachedInstanceError — add `selectinload(author.posts)` to that query, or "
                "read it before the session closes"
            ),
        ),
        # A commit before the block closed expired the Row's entity: a column read fails.
        Invalid(
            """
            from sqlalchemy import func, select
            from app.db import SessionLocal
            from app.models import User

            def counts():
                with SessionLocal() as session:
                    rows = session.execute(select(User, func.length(User.name))).all()
                    session.commit()
                return [row.User.name for row in rows]
            """,
            path="app/views.py",
            files=_FILES,
            line=9,
            expected_message=(
                "`row.User.name` is read after `session.commit()` (line 8) expired `row.User` "
                "and the session closed: this raises DetachedInstanceError — set "
                "`expire_on_commit=False` on the session factory, or read it before the "
                "session closes"
            ),
        ),
        # Rows a helper returns from a session it closed: each row's entity is detached.
        Invalid(
            """
            from app.reports import name_lengths

            def export():
                return [(row.len, len(row.User.posts)) for row in name_lengths()]
            """,
            path="app/views.py",
            files=_ROW_FILES,
            line=4,
            expected_message=(
                "`User.posts` is lazy-loaded on `row.User` after the session that loaded it "
                "closed (`name_lengths()` at app/reports.py:7 closes it): this raises "
                "DetachedInstanceError — add `selectinload(User.posts)` to that query, or "
                "read it before the session closes"
            ),
        ),
        # The entity a Row holds, read by name or position after the block closed.
        Invalid(
            """
            from sqlalchemy import func, select
            from app.db import SessionLocal
            from app.models import User

            def export():
                with SessionLocal() as session:
                    rows = session.execute(select(User, func.length(User.name))).all()
                for row in rows:
                    print(len(row.User.posts))

            def export_by_position():
                with SessionLocal() as session:
                    rows = session.execute(select(User, func.length(User.name))).all()
                return [len(row[0].posts) for row in rows]
            """,
            path="app/views.py",
            files=_FILES,
            line=9,
            count=2,
            expected_message=(
                "`User.posts` is lazy-loaded on `row.User` after the session that loaded it "
                "closed (the `with` block at line 6 closed it): this raises "
                "DetachedInstanceError — add `selectinload(User.posts)` to that query, or "
                "read it before the session closes"
            ),
        ),
        # The same context manager, told to commit (or maybe told to).
        Invalid(
            """
            from app.models import User
            from app.scopes import scope

            def rename(user_id, name):
                with scope(commit=True) as session:
                    user = session.get(User, user_id)
                    user.name = name
                return user.name

            def rename_if(user_id, name, save):
                with scope(commit=save) as session:
                    user = session.get(User, user_id)
                    user.name = name
                return user.name
            """,
            path="app/views.py",
            files=_FLAG_FILES,
            line=8,
            count=2,
            expected_message=(
                "`user.name` is read after the commit that ends the `with` block at line 11 "
                "(if `save` is true) expired `user` and the session closed: this raises "
                "DetachedInstanceError — set `expire_on_commit=False` on the session factory, "
                "or read it before the session closes"
            ),
        ),
        # Rows of an aliased entity: the option names the alias.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import aliased
            from app.db import SessionLocal
            from app.models import User

            def first_titles():
                with SessionLocal() as session:
                    ua = aliased(User)
                    user = session.scalars(select(ua).limit(1)).one()
                return [p.title for p in user.posts]
            """,
            path="app/views.py",
            files=_FILES,
            line=10,
            expected_message=(
                "`User.posts` is lazy-loaded on `user` after the session that loaded it closed "
                "(the `with` block at line 7 closed it): this raises DetachedInstanceError — "
                "add `selectinload(ua.posts)` to that query, or read it before the session "
                "closes"
            ),
        ),
        Invalid(
            _READ_BY_HELPER,
            path="app/views.py",
            files=_FILES,
            line=13,
            expected_message=_detached_read(
                "User.posts",
                "user",
                "`get_user()` at app/views.py:6 closes it",
                "selectinload(User.posts)",
                via="`titles()` (app/views.py:8)",
            ),
        ),
        # The same context manager removes the thread's session as the block ends.
        Invalid(
            _THROUGH_REGISTRY,
            path="app/views.py",
            files=_registry_files("singleton_session or Session()", _REMOVED),
            line=9,
            expected_message=_detached_read(
                "User.posts",
                "get_user(user_id)",
                "`get_user()` at app/views.py:6 closes it",
                "selectinload(User.posts)",
            ),
        ),
        Invalid(
            _AFTER_REGISTRY_BLOCK,
            path="app/views.py",
            files=_registry_files("Session()", _REMOVED),
            line=7,
        ),
        Invalid(
            _SCRIPT_AFTER_HELPER.format(options=""),
            path="scripts/titles.py",
            files=_FILES,
            line=10,
        ),
        # Loaded by a unit of work's repository, read after `with uow:` closed its session.
        Invalid(
            _THROUGH_UNIT_OF_WORK.format(inside="", after="[p.title for p in user.posts]"),
            path="app/views.py",
            files=_UNIT_OF_WORK_FILES,
            count=2,
            expected_message=(
                "`User.posts` is lazy-loaded on `user` after the session that loaded it closed "
                "(the `with` block at line 4 closed it in `UnitOfWork.__exit__()`): this raises "
                "DetachedInstanceError — add `selectinload(User.posts)` to that query, or read "
                "it before the session closes"
            ),
        ),
        # A helper (or a repository) of another module loads them in a `with` block.
        Invalid(
            """
            from app.loaders import load_through_repository, load_user

            def titles(user_id):
                user = load_through_repository(user_id)
                return [p.title for p in load_user(user_id).posts + user.posts]
            """,
            path="app/views.py",
            files=_HELPER_FILES,
            count=2,
        ),
        # Read straight off the call: `get_user(user_id).posts`.
        Invalid(
            _READ_OFF_THE_CALL.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=10,
            expected_message=(
                "`User.posts` is lazy-loaded on `get_user(user_id)` after the session that "
                "loaded it closed (`get_user()` at app/views.py:7 closes it): this raises "
                "DetachedInstanceError — add `selectinload(User.posts)` to that query, or "
                "read it before the session closes"
            ),
        ),
        # Loaded in the block and returned after it: the block closed the session.
        Invalid(
            _LOADED_THEN_RETURNED.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=12,
        ),
        Invalid(
            _SERVICE_USE.format(method="all_users"),
            path="app/views.py",
            files=_SERVICE_FILES,
            line=4,
            expected_message=(
                "`User.posts` is lazy-loaded on `u` after the session that loaded it closed "
                "(`all_users()` at app/service.py:12 closes it): this raises "
                "DetachedInstanceError — add `selectinload(User.posts)` to that query, or "
                "read it before the session closes"
            ),
        ),
        # A call that names `expire_on_commit=True` expires them, whatever the factory's
        # options say.
        Invalid(
            """
            from sqlalchemy.orm import sessionmaker
            from app.db import engine
            from app.models import User
            from app.settings import OPTIONS

            OptionsSession = sessionmaker(engine, **OPTIONS)

            def rename(user_id, name):
                with OptionsSession(expire_on_commit=True) as session:
                    user = session.get(User, user_id)
                    user.name = name
                    session.commit()
                return user.name
            """,
            path="app/views.py",
            files={**_FILES, "app/settings.py": _SETTINGS},
            line=13,
        ),
        # The seed's shape, across modules.
        Invalid(
            """
            from app.repo import get_user

            def profile(user_id):
                user = get_user(user_id)
                return {"name": user.name, "posts": [p.title for p in user.posts]}
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/repo.py": """
                from app.db import SessionLocal
                from app.models import User

                def get_user(user_id):
                    with SessionLocal() as session:
                        return session.get(User, user_id)
                """,
            },
            line=5,
            expected_message=(
                "`User.posts` is lazy-loaded on `user` after the session that loaded it closed "
                "(`get_user()` at app/repo.py:6 closes it): this raises DetachedInstanceError — "
                "add `selectinload(User.posts)` to that query, or read it before the session "
                "closes"
            ),
        ),
        # A list from a helper that closed its session, read in a loop and a comprehension.
        Invalid(
            """
            from app.repo import all_users

            def report():
                for user in all_users():
                    print(user.name, len(user.posts))

            def counts():
                users = all_users()
                return {u.name: len(u.posts) for u in users}
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/repo.py": """
                from sqlalchemy import select
                from app.db import SessionLocal
                from app.models import User

                def all_users():
                    with SessionLocal() as session:
                        return session.scalars(select(User)).all()
                """,
            },
            line=5,
            count=2,
        ),
        # After the with block in the same function.
        Invalid(
            """
            from sqlalchemy import select
            from app.db import SessionLocal
            from app.models import Post

            def feed():
                with SessionLocal() as session:
                    posts = session.scalars(select(Post)).all()
                return [f"{p.title} by {p.author.name}" for p in posts]
            """,
            path="app/views.py",
            files=_FILES,
            line=8,
        ),
        # Committed (expiring everything), then returned and read.
        Invalid(
            """
            from app.db import SessionLocal
            from app.models import User

            def rename(user_id, name):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    user.name = name
                    session.commit()
                return {"id": user.id, "name": user.name}
            """,
            path="app/views.py",
            files=_FILES,
            line=9,
            expected_message=(
                "`user.id` is read after `session.commit()` (line 8) expired `user` and the "
                "session closed: this raises DetachedInstanceError — set `expire_on_commit=False` "
                "on the session factory, or read it before the session closes"
            ),
        ),
        # The block commits as it ends (`.begin()`, a committing context manager): the
        # objects it loaded are expired, then detached.
        Invalid(
            """
            from app.db import SessionLocal, session_scope
            from app.models import User

            def rename(user_id, name):
                with SessionLocal.begin() as session:
                    user = session.get(User, user_id)
                    user.name = name
                return user.name

            def rename_in_scope(user_id, name):
                with session_scope() as session:
                    user = session.get(User, user_id)
                    user.name = name
                return user.name
            """,
            path="app/views.py",
            files=_FILES,
            count=2,
            expected_message=(
                "`user.name` is read after the commit that ends the `with` block at line 5 "
                "expired `user` and the session closed: this raises DetachedInstanceError — "
                "set `expire_on_commit=False` on the session factory, or read it before the "
                "session closes"
            ),
        ),
        # An object made here and added in the block, read after the commit detached it.
        Invalid(
            """
            from sqlalchemy.orm import Session
            from app.db import engine
            from app.models import User

            def create(name):
                with Session(engine) as session:
                    user = User(name=name)
                    session.add(user)
                    session.commit()
                return user.id

            def create_first(name):
                user = User(name=name)
                with Session(engine) as session:
                    session.add(user)
                    session.commit()
                print(user.name)
            """,
            path="app/views.py",
            files=_FILES,
            line=10,
            count=2,
            expected_message=(
                "`user.id` is read after `session.commit()` (line 9) expired `user` and the "
                "session closed: this raises DetachedInstanceError — set `expire_on_commit=False` "
                "on the session factory, or read it before the session closes"
            ),
        ),
        # close() called explicitly, then a many-to-one read.
        Invalid(
            """
            from app.db import SessionLocal
            from app.models import Post

            def title_and_author(post_id):
                session = SessionLocal()
                try:
                    post = session.get(Post, post_id)
                finally:
                    session.close()
                return post.title, post.author.name
            """,
            path="app/views.py",
            files=_FILES,
            line=10,
        ),
        # A helper in another module that commits before returning.
        Invalid(
            """
            from app.services import create_user

            def signup(name):
                user = create_user(name)
                return f"welcome {user.name}"
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/services.py": """
                from app.db import SessionLocal
                from sqlalchemy import select
                from app.models import User

                def create_user(name):
                    with SessionLocal() as session:
                        session.add(User(name=name))
                        session.commit()
                        user = session.scalars(select(User).where(User.name == name)).one()
                        session.commit()
                        return user
                """,
            },
            line=5,
        ),
    )

    def visit_Module(self, node: ast.Module) -> None:
        if runs_code(node):
            self._check_scope(node)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        if worth_analysing(self.ctx, node):
            self._check_scope(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def _check_scope(self, node: ast.Module | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        flow = flow_for(self.ctx, node)
        navigator = Navigator(flow, self.ctx.index, strict=True)
        for bindings in list(flow.bindings.values()):
            for binding in bindings:
                if binding.kind not in ("assign", "for", "comp"):
                    continue
                objects = flow.binding_value(binding)
                if isinstance(objects, RowValue):
                    self._check_row(flow, navigator, binding, objects.rows)
                    continue
                if not isinstance(objects, ObjectsValue) or objects.path:
                    continue
                closed = self._closed(flow, binding, objects)
                if closed is None:
                    continue
                region, where, commit = closed
                self._check(flow, navigator, binding, objects, region, where, commit)
        for with_node in flow.withs:
            self._check_added(flow, with_node)
        for call in flow.calls:
            self._check_call_result(flow, navigator, call)

    def _check_row(
        self, flow: FunctionFlow, navigator: Navigator, binding: Binding, rows: ObjectsValue
    ) -> None:
        """``for row in rows:`` then ``row.User.posts`` or ``row[0].posts``: the entity a
        Row holds is detached with the session that loaded it, as an unpacked one is."""
        if rows.path or rows.is_async:
            return
        closed = self._closed(flow, binding, rows)
        if closed is None:
            return
        region, where, commit = closed
        seen: set[tuple[str, str]] = set()
        for entity, attribute, objects in row_entity_reads(flow, binding, region):  # type: ignore[arg-type]
            if commit is not None:
                # The commit expired the Row's objects: any attribute read refreshes.
                problem = _expired(
                    self.ctx.text(entity), attribute.attr, commit, objects.receiver or "session"
                )
                self.report(attribute, problem=problem)
                return
            for access in navigator.on_attribute(attribute, objects, per_row=False):
                key = (access.rel.owner, access.rel.attr)
                if key in seen:
                    continue
                seen.add(key)
                option = access_option(self.ctx.index, access)
                self.report(
                    access.node,
                    problem=_detached_read(
                        access.rel.name, self.ctx.text(entity), where, option
                    ),
                )

    def _check_call_result(self, flow: FunctionFlow, navigator: Navigator, call: ast.Call) -> None:
        """``get_user(1).posts``: a relationship read straight off what a function returns
        after closing the session that loaded it."""
        attribute = flow.parent(call)
        if not isinstance(attribute, ast.Attribute) or attribute.value is not call:
            return
        objects = flow.value(call)
        if (
            not isinstance(objects, ObjectsValue)
            or objects.many
            or objects.path
            or objects.is_async
            or objects.returns is None
            or not objects.returns.session_closed
        ):
            return
        where = (
            f"`{objects.origin_name}()` at {objects.origin_path}:{objects.returns.line} closes it"
        )
        shown = self.ctx.text(call)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        for access in navigator.on_attribute(attribute, objects, per_row=False):
            option = access_option(self.ctx.index, access)
            self.report(
                access.node,
                problem=_detached_read(access.rel.name, shown, where, option),
            )
            return

    def _check_added(self, flow: FunctionFlow, with_node: ast.With | ast.AsyncWith) -> None:
        """Objects made here and ``add()``-ed to the block's session, read after the
        block: a commit in it expired them, and they cannot be refreshed once detached."""
        closed = _Region.after(with_node, flow.node)
        for item in with_node.items:
            target = item.optional_vars
            if not isinstance(target, ast.Name):
                continue
            session = flow.session_of(target)
            if session is None or session.is_async or session.scoped:
                continue
            key = target.id
            for call in flow.calls_on(key):
                func = call.func
                assert isinstance(func, ast.Attribute)
                if (
                    func.attr != "add"
                    or len(call.args) != 1
                    or not isinstance(call.args[0], ast.Name)
                    or not contains(with_node, call)
                ):
                    continue
                name = call.args[0].id
                binding = flow.binding(name, call)
                if binding is None or not self._made_here(flow, binding):
                    continue
                commit = self._commit(flow, key, call, closed, session) or _block_commit(
                    session, with_node
                )
                if commit is not None:
                    self._expired_read(flow, binding, closed, commit, key)

    def _expired_read(
        self,
        flow: FunctionFlow,
        binding: Binding,
        region: _Region,
        commit: ast.Call | str,
        session: str,
    ) -> bool:
        """Report the first read in ``region`` of what ``binding`` holds, expired by
        ``commit`` (a call, or what committed) and detached since."""
        name = binding.name
        for read in flow.reads_in(name, region):  # type: ignore[arg-type]
            if flow.binding(name, read) is not binding:
                continue
            self.report(read, problem=_expired(name, read.attr, commit, session))
            return True
        return False

    def _made_here(self, flow: FunctionFlow, binding: Binding) -> bool:
        """``user = User(...)`` in this function, with a mapped class of the project."""
        value = binding.value
        if (
            binding.kind != "assign"
            or binding.element is not None
            or not isinstance(value, ast.Call)
            or not isinstance(value.func, (ast.Name, ast.Attribute))
        ):
            return False
        return self.ctx.index.model(flow.qualify(value.func)) is not None

    def _closed(
        self, flow: FunctionFlow, binding: Binding, objects: ObjectsValue
    ) -> tuple[_Region, str, ast.Call | str | None] | None:
        """(region after the close, how it closed, the commit that expired them)."""
        if objects.via is not None and objects.node is not None:
            found = self._closed_by_unit_of_work(flow, objects.via, objects.node)
            if found is not None:
                return found
        returns = objects.returns
        if returns is not None:
            if not returns.session_closed:
                return None
            commit: ast.Call | str | None = None
            if returns.committed and self._expires(returns.factory):
                commit = f"the commit in `{objects.origin_name}()` ({objects.origin_path})"
            # Reads see the objects after they are bound: in a `for` loop's body (after
            # its iterable), in a comprehension's element (before its `for` clause).
            if binding.kind == "comp":
                start = (binding.node.lineno, binding.node.col_offset)  # type: ignore[attr-defined]
                region = _Region(*start, *_end_of(flow.node))
            else:
                after = binding.value if binding.kind == "for" and binding.value else binding.node
                region = _Region.after(after, flow.node)
            return (
                region,
                f"`{objects.origin_name}()` at {objects.origin_path}:{returns.line} closes it",
                commit,
            )
        key = objects.receiver
        if key is None or objects.session is None or objects.node is None:
            return None
        load = objects.node
        for with_node in flow.withs:
            if not contains(with_node, load):
                continue
            for item in with_node.items:
                if isinstance(item.optional_vars, ast.Name) and item.optional_vars.id == key:
                    if left_open(flow, item):
                        return None
                    region = _Region.after(with_node, flow.node)
                    return (
                        region,
                        f"the `with` block at line {with_node.lineno} closed it",
                        self._commit(flow, key, load, region, objects.session)
                        or _block_commit(objects.session, with_node),
                    )
        for call in flow.calls_on(key):
            func = call.func
            if isinstance(func, ast.Attribute) and func.attr == "close" and _after(call, load):
                region = _Region.after(call, flow.node)
                return (
                    region,
                    f"`{key}.close()` at line {call.lineno}",
                    self._commit(flow, key, load, region, objects.session),
                )
        return None

    def _closed_by_unit_of_work(
        self, flow: FunctionFlow, via: str, load: ast.AST
    ) -> tuple[_Region, str, None] | None:
        """Loaded by a repository of a unit of work (`uow.products.get(sku)`) inside
        ``with uow:``, whose ``__exit__`` closes the session it holds."""
        name = via.partition(".")[0]
        for with_node in flow.withs:
            if not contains(with_node, load):
                continue
            for item in with_node.items:
                target = item.optional_vars if item.optional_vars is not None else item.context_expr
                if not isinstance(target, ast.Name) or target.id != name:
                    continue
                instance = flow.value(item.context_expr)
                if not isinstance(instance, InstanceValue):
                    return None
                is_async = isinstance(with_node, ast.AsyncWith)
                exits = exit_method(self.ctx.index, instance.cls, is_async=is_async)
                if exits is None or not sessions_ended(exits, "close()"):
                    return None
                cls_name = instance.cls.rpartition(".")[2]
                return (
                    _Region.after(with_node, flow.node),
                    f"the `with` block at line {with_node.lineno} closed it in "
                    f"`{cls_name}.{'__aexit__' if is_async else '__exit__'}()`",
                    None,
                )
        return None

    def _expires(self, factory: str | None) -> bool:
        if factory is None:
            return False
        source = self.ctx.index.session_source(factory)
        return source is not None and source.expire_on_commit is True

    def _commit(
        self,
        flow: FunctionFlow,
        key: str,
        load: ast.AST,
        closed: _Region,
        session: SessionValue | None,
    ) -> ast.Call | None:
        if session is None or session.expire_on_commit is not True:
            return None
        found: ast.Call | None = None
        for call in flow.calls_on(key):
            func = call.func
            if not isinstance(func, ast.Attribute) or not _after(call, load):
                continue
            if (call.lineno, call.col_offset) >= (closed.lineno, closed.col_offset):
                continue
            if func.attr == "commit":
                found = call
            elif (
                func.attr in ("refresh", "execute", "scalars", "get", "scalar", "query")
                and found is not None
            ):
                # A refresh (or reload) after the commit loads them again.
                found = None
        return found

    def _check(
        self,
        flow: FunctionFlow,
        navigator: Navigator,
        binding: Binding,
        objects: ObjectsValue,
        region: _Region,
        where: str,
        commit: ast.Call | str | None,
    ) -> None:
        name = binding.name
        receiver = objects.receiver or "session"
        if (
            commit is not None
            and not objects.many
            and self._expired_read(flow, binding, region, commit, receiver)
        ):
            return
        if objects.is_async:
            return  # SQD202 reports relationship loads in async code
        seen: set[tuple[str, str]] = set()
        for access in navigator.on_binding(binding, objects, region, per_row=False):  # type: ignore[arg-type]
            key = (access.rel.owner, access.rel.attr)
            if key in seen:
                continue
            seen.add(key)
            option = access_option(self.ctx.index, access)
            self.report(
                access.node,
                problem=_detached_read(access.rel.name, name, where, option, access.via),
            )


def _expired(shown: str, attr: str, commit: ast.Call | str, session: str) -> str:
    """A read of ``shown.attr``, expired by ``commit`` (a call, or what committed)."""
    by = commit if isinstance(commit, str) else f"`{session}.commit()` (line {commit.lineno})"
    return (
        f"`{shown}.{attr}` is read after {by} expired `{shown}` and the session closed: this "
        "raises DetachedInstanceError — set `expire_on_commit=False` on the session factory, "
        "or read it before the session closes"
    )


def _block_commit(session: SessionValue | None, with_node: ast.With | ast.AsyncWith) -> str | None:
    """The commit a ``with`` block makes as it ends (``Factory.begin()``, a provider that
    commits after its ``yield``) when it expires what the session loaded. A provider that
    commits only ``if commit:`` maybe commits a block whose call passes a variable, and
    is not judged when ``*args``/``**kwargs`` may carry the flag."""
    if session is None or not session.commits or session.expire_on_commit is not True:
        return None
    where = f"the commit that ends the `with` block at line {with_node.lineno}"
    if session.commits_if is None:
        return where
    return f"{where} (if `{session.commits_if}` is true)" if session.commits_if else None


def _after(node: ast.AST, other: ast.AST) -> bool:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0)) > (
        getattr(other, "lineno", 0),
        getattr(other, "col_offset", 0),
    )


def _end_of(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "end_lineno", None) or 10**9, getattr(node, "end_col_offset", None) or 0)
