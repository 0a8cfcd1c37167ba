"""The project index: mapped classes, relationships, listeners, sessions, across modules."""

from __future__ import annotations

import ast
import pickle
import textwrap
from pathlib import Path
from typing import Any

from sqla_doctor.static.files import display_path, module_for
from sqla_doctor.static.index import FileFacts, ProjectIndex


def build(tmp_path: Path, files: dict[str, str]) -> ProjectIndex:
    facts = []
    for relative, source in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"), encoding="utf-8")
    for path in sorted(tmp_path.rglob("*.py")):
        module, is_package = module_for(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        facts.append(FileFacts.extract(display_path(path, tmp_path), module, is_package, tree))
    return ProjectIndex.build(facts)


MODELS = """
from __future__ import annotations
from typing import List, Optional
from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, func, text
from sqlalchemy.orm import (
    DeclarativeBase, Mapped, WriteOnlyMapped, mapped_column, relationship, validates,
)
from .base import Base, TimestampMixin

tags = Table("post_tags", Base.metadata, Column("post_id", ForeignKey("posts.id")))

class User(TimestampMixin, Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_email_lower", func.lower(text("email"))),)
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(index=True)
    posts: Mapped[List["Post"]] = relationship(back_populates="author")
    profile: Mapped[Optional["Profile"]] = relationship(lazy="joined")
    events: WriteOnlyMapped["Event"] = relationship()

    @validates("email")
    def check_email(self, key, value):
        return value

class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped["User"] = relationship(back_populates="posts")
    tags = relationship("app.models.Tag", secondary=tags, backref="posts")
    editor = relationship(lambda: User, foreign_keys=[author_id])

class Tag(Base):
    __tablename__ = "tags"
    id = Column(Integer, primary_key=True)

class Profile(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

class Event(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))

class AbstractThing(Base):
    __abstract__ = True
    id: Mapped[int] = mapped_column(primary_key=True)

Index("ix_users_name_upper", func.upper(User.name))
"""
BASE = """
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class TimestampMixin:
    created: Mapped[int] = mapped_column(default=0)
"""


def test_declarative_models_with_mixins_and_abstract_bases(tmp_path: Path) -> None:
    """DeclarativeBase subclasses are mapped; the base, mixins and abstract classes are not."""
    index = build(tmp_path, {"app/__init__.py": "", "app/base.py": BASE, "app/models.py": MODELS})
    names = {m.qualname for m in index.models()}
    assert names == {
        "app.models.User",
        "app.models.Post",
        "app.models.Tag",
        "app.models.Profile",
        "app.models.Event",
    }
    user = index.model("app.models.User")
    assert user is not None
    assert user.table == "users"
    assert user.root == "app.base.Base"
    assert set(user.columns) >= {"id", "email", "name", "created"}
    assert user.columns["id"].primary_key
    assert index.model("app.base.Base") is None
    assert index.model("app.base.TimestampMixin") is None


def test_relationship_targets_directions_and_loaders(tmp_path: Path) -> None:
    """Targets resolve from strings, dotted strings, lambdas and Mapped[...] annotations."""
    index = build(tmp_path, {"app/__init__.py": "", "app/base.py": BASE, "app/models.py": MODELS})
    posts = index.relationship("app.models.User", "posts")
    assert posts is not None
    assert (posts.target, posts.collection, posts.direction, posts.lazy) == (
        "app.models.Post",
        True,
        "one-to-many",
        "select",
    )
    author = index.relationship("app.models.Post", "author")
    assert author is not None
    assert (author.target, author.collection, author.direction) == (
        "app.models.User",
        False,
        "many-to-one",
    )
    profile = index.relationship("app.models.User", "profile")
    assert profile is not None
    assert (profile.target, profile.collection, profile.lazy) == (
        "app.models.Profile",
        False,
        "joined",
    )
    events = index.relationship("app.models.User", "events")
    assert events is not None
    assert (events.collection, events.lazy) == (True, "write_only")
    tags = index.relationship("app.models.Post", "tags")
    assert tags is not None
    assert (tags.target, tags.direction) == ("app.models.Tag", "many-to-many")
    editor = index.relationship("app.models.Post", "editor")
    assert editor is not None
    assert editor.target == "app.models.User"


def test_backref_creates_the_reverse_relationship(tmp_path: Path) -> None:
    """`backref="posts"` on Post.tags gives Tag a `posts` collection."""
    index = build(tmp_path, {"app/__init__.py": "", "app/base.py": BASE, "app/models.py": MODELS})
    reverse = index.relationship("app.models.Tag", "posts")
    assert reverse is not None
    assert reverse.target == "app.models.Post"
    assert reverse.collection is True
    assert reverse.backref_of == ("app.models.Post", "tags")


def test_indexes_validators_and_functional_indexes(tmp_path: Path) -> None:
    """Plain, unique and functional indexes, from `__table_args__`, module level and migrations."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/base.py": BASE,
            "app/models.py": MODELS,
            "migrations/versions/0001.py": """
            import sqlalchemy as sa
            from alembic import op

            def upgrade():
                op.create_index("ix_users_name_trim", "users", [sa.text("trim(name)")])
                op.execute('CREATE INDEX ix_users_created ON users (date("created"))')
            """,
        },
    )
    user = index.model("app.models.User")
    assert user is not None
    assert index.is_indexed(user, "email")
    assert index.is_indexed(user, "name")
    assert not index.is_indexed(user, "created")
    assert index.has_functional_index(user, "lower", "email") is True
    assert index.has_functional_index(user, "upper", "name") is True
    assert index.has_functional_index(user, "trim", "name") is True
    assert index.has_functional_index(user, "date", "created") is True
    assert index.has_functional_index(user, "lower", "name") is False
    assert user.validators == {"email": "check_email"}


def test_listeners_by_decorator_call_and_propagation(tmp_path: Path) -> None:
    """`@event.listens_for`, `event.listen`, attribute events and propagate=True on a base."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/base.py": BASE,
            "app/models.py": MODELS,
            "app/events.py": """
            from sqlalchemy import event
            from sqlalchemy.orm import Mapper
            from app.base import Base
            from app.models import Post, User

            @event.listens_for(User, "before_update")
            def stamp(mapper, connection, target):
                pass

            def audit(mapper, connection, target):
                pass

            event.listen(Base, "after_delete", audit, propagate=True)
            event.listen(User.email, "set", audit)
            event.listen(Mapper, "after_insert", audit)
            """,
        },
    )
    user = index.model("app.models.User")
    post = index.model("app.models.Post")
    assert user is not None
    assert post is not None
    assert [listener.function for listener, _ in index.mutation_listeners(user, "update")] == [
        "stamp"
    ]
    assert [listener.function for listener, _ in index.mutation_listeners(post, "delete")] == [
        "audit"
    ]
    assert index.mutation_listeners(post, "update") == []
    ((attribute, _),) = index.listeners_for(user, ("set",))
    assert attribute.attr == "email"
    assert len(index.mutation_listeners(post, "insert")) == 1


def test_declarative_base_registry_mapped_flask_and_sqlmodel(tmp_path: Path) -> None:
    """Every way of declaring models is recognised; lookalikes are not."""
    index = build(
        tmp_path,
        {
            "proj/__init__.py": "",
            "proj/legacy.py": """
            from sqlalchemy import Column, Integer
            from sqlalchemy.orm import declarative_base, registry

            Base = declarative_base()
            mapper_registry = registry()

            class Legacy(Base):
                __tablename__ = "legacy"
                id = Column(Integer, primary_key=True)

            @mapper_registry.mapped
            class Decorated:
                __tablename__ = "decorated"
                id = Column(Integer, primary_key=True)
            """,
            "proj/ext.py": "from flask_sqlalchemy import SQLAlchemy\ndb = SQLAlchemy()\n",
            "proj/flaskmodels.py": """
            from proj.ext import db

            class UserAccount(db.Model):
                id = db.Column(db.Integer, primary_key=True)
                sessions = db.relationship("LoginSession", backref="account", lazy="dynamic")

            class LoginSession(db.Model):
                id = db.Column(db.Integer, primary_key=True)
                account_id = db.Column(db.Integer, db.ForeignKey("user_account.id"))
            """,
            "proj/heroes.py": """
            from sqlmodel import Field, Relationship, SQLModel

            class HeroBase(SQLModel):
                name: str = Field(index=True)

            class Hero(HeroBase, table=True):
                id: int | None = Field(default=None, primary_key=True)
                team_id: int | None = Field(default=None, foreign_key="team.id")
                team: "Team" = Relationship(
                    back_populates="heroes", sa_relationship_kwargs={"lazy": "selectin"}
                )

            class Team(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                heroes: list[Hero] = Relationship(back_populates="team")
            """,
            "proj/lookalike.py": """
            from wtforms import Form, Column

            class Model(Form):
                name = Column()
            """,
        },
    )
    names = {m.qualname: m for m in index.models()}
    assert set(names) == {
        "proj.legacy.Legacy",
        "proj.legacy.Decorated",
        "proj.flaskmodels.UserAccount",
        "proj.flaskmodels.LoginSession",
        "proj.heroes.Hero",
        "proj.heroes.Team",
    }
    assert names["proj.flaskmodels.UserAccount"].table == "user_account"
    assert names["proj.heroes.Hero"].table == "hero"
    assert index.is_indexed(names["proj.heroes.Hero"], "name")
    sessions = index.relationship("proj.flaskmodels.UserAccount", "sessions")
    assert sessions is not None
    assert (sessions.target, sessions.collection, sessions.lazy) == (
        "proj.flaskmodels.LoginSession",
        True,
        "dynamic",
    )
    account = index.relationship("proj.flaskmodels.LoginSession", "account")
    assert account is not None
    assert (account.target, account.collection) == ("proj.flaskmodels.UserAccount", False)
    team = index.relationship("proj.heroes.Hero", "team")
    assert team is not None
    assert (team.target, team.lazy, team.direction) == (
        "proj.heroes.Team",
        "selectin",
        "many-to-one",
    )


def test_names_resolve_through_reexports_relative_imports_and_path_aliases(tmp_path: Path) -> None:
    """`from app.models import User` works when User lives in app/models/user.py and is
    re-exported by the package; folders without __init__.py answer to their path."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/models/__init__.py": "from .user import User\n",
            "app/models/user.py": """
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(primary_key=True)
            """,
            "scripts/nopkg/models.py": """
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

            class Base(DeclarativeBase):
                pass

            class Note(Base):
                __tablename__ = "notes"
                id: Mapped[int] = mapped_column(primary_key=True)
            """,
        },
    )
    user = index.model("app.models.User")
    assert user is not None
    assert user.qualname == "app.models.user.User"
    assert index.model("scripts.nopkg.models.Note") is not None
    assert index.model("models.Note") is not None


def test_session_factories_engines_and_providers(tmp_path: Path) -> None:
    """Factories and engines with their options; generator dependencies as session sources."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/db.py": """
            from contextlib import contextmanager
            from sqlalchemy import create_engine
            from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
            from sqlalchemy.orm import scoped_session, sessionmaker

            engine = create_engine("postgresql+psycopg://app@db/app", pool_pre_ping=True)
            aengine = create_async_engine("postgresql+asyncpg://app@db/app")
            SessionLocal = sessionmaker(bind=engine, expire_on_commit=False)
            AsyncLocal = async_sessionmaker(aengine)
            Legacy = sessionmaker(aengine, class_=AsyncSession)
            Scoped = scoped_session(sessionmaker(engine))

            async def get_session():
                async with AsyncLocal() as session:
                    yield session

            @contextmanager
            def session_scope():
                session = SessionLocal()
                try:
                    yield session
                    session.commit()
                finally:
                    session.close()
            """,
            "app/deps.py": "from app.db import get_session as provide\n",
        },
    )
    factory = index.factory("app.db.SessionLocal")
    assert factory is not None
    assert (factory.is_async, factory.options["expire_on_commit"], factory.bind) == (
        False,
        "False",
        "app.db.engine",
    )
    legacy = index.factory("app.db.Legacy")
    assert legacy is not None
    assert legacy.is_async
    scoped = index.session_source("app.db.Scoped")
    assert scoped is not None
    assert scoped.scoped
    engine = index.engine("app.db.aengine")
    assert engine is not None
    assert (engine.is_async, engine.url) == (True, "postgresql+asyncpg://app@db/app")
    provider = index.session_source("app.deps.provide")
    assert provider is not None
    assert (provider.kind, provider.is_async, provider.style, provider.managed) == (
        "provider",
        True,
        "generator",
        True,
    )
    scope = index.session_source("app.db.session_scope")
    assert scope is not None
    assert (scope.style, scope.commits, scope.expire_on_commit) == ("contextmanager", True, False)


def test_function_summaries_for_helpers_and_repositories(tmp_path: Path) -> None:
    """What a helper reads on its arguments, and what a repository function returns."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/base.py": BASE,
            "app/models.py": MODELS,
            "app/render.py": """
            def render(users, title):
                for user in users:
                    print(title.upper(), user.name, [p.author.email for p in user.posts])
            """,
            "app/repo.py": """
            from sqlalchemy import select
            from sqlalchemy.orm import selectinload
            from app.db import SessionLocal
            from app.models import User

            def active(session):
                return session.scalars(select(User).options(selectinload(User.posts))).all()

            def one(user_id):
                with SessionLocal() as session:
                    user = session.get(User, user_id)
                    session.commit()
                    return user
            """,
        },
    )
    render = index.function("app.render.render")
    assert render is not None
    assert render.element_reads(0) >= {
        ("name",),
        ("posts",),
        ("posts", "author"),
        ("posts", "author", "email"),
    }
    assert ("upper()",) in render.direct_reads(1)
    active = index.function("app.repo.active")
    assert active is not None
    assert active.returns is not None
    assert (active.returns.model, active.returns.many) == ("app.models.User", True)
    assert active.returns.options.strategy_for((("app.models.User", "posts"),)) == "selectin"
    one = index.function("app.repo.one")
    assert one is not None
    assert one.returns is not None
    assert (one.returns.many, one.returns.session_closed, one.returns.committed) == (
        False,
        True,
        True,
    )


def test_file_facts_are_picklable(tmp_path: Path) -> None:
    """Facts are cached and built in worker processes: they must pickle and round-trip."""
    index = build(tmp_path, {"app/__init__.py": "", "app/base.py": BASE, "app/models.py": MODELS})
    for facts in index:
        restored = pickle.loads(pickle.dumps(facts))
        assert restored == facts
    rebuilt = ProjectIndex.build(pickle.loads(pickle.dumps(list(index))))
    assert {m.qualname for m in rebuilt.models()} == {m.qualname for m in index.models()}


def test_imperative_mapping_and_declared_attr_mixins(tmp_path: Path) -> None:
    """`registry.map_imperatively()` (best effort) and relationships from `declared_attr`."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/classic.py": """
            from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table
            from sqlalchemy.orm import registry, relationship

            mapper_registry = registry()
            metadata = MetaData()
            users = Table("users", metadata, Column("id", Integer, primary_key=True))
            addresses = Table(
                "addresses", metadata,
                Column("id", Integer, primary_key=True),
                Column("user_id", ForeignKey("users.id")),
            )

            class User:
                pass

            class Address:
                pass

            mapper_registry.map_imperatively(
                User, users, properties={"addresses": relationship(Address, lazy="selectin")}
            )
            mapper_registry.map_imperatively(Address, addresses)
            """,
            "app/declared.py": """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
            from sqlalchemy.orm import relationship

            class Base(DeclarativeBase):
                pass

            class Owner(Base):
                __tablename__ = "owners"
                id: Mapped[int] = mapped_column(primary_key=True)

            class OwnedMixin:
                @declared_attr
                def owner_id(cls) -> Mapped[int]:
                    return mapped_column(ForeignKey("owners.id"))

                @declared_attr
                def owner(cls) -> Mapped["Owner"]:
                    return relationship("Owner")

            class Car(OwnedMixin, Base):
                __tablename__ = "cars"
                id: Mapped[int] = mapped_column(primary_key=True)
            """,
        },
    )
    user = index.model("app.classic.User")
    assert user is not None
    assert (user.flavor, user.table) == ("imperative", "users")
    addresses = index.relationship(user, "addresses")
    assert addresses is not None
    assert (addresses.target, addresses.lazy) == ("app.classic.Address", "selectin")
    car = index.model("app.declared.Car")
    assert car is not None
    owner = index.relationship(car, "owner")
    assert owner is not None
    assert (owner.target, owner.direction, owner.declared_on) == (
        "app.declared.Owner",
        "many-to-one",
        "app.declared.OwnedMixin",
    )


def test_class_bodies_map_what_runs_not_what_type_checkers_read(tmp_path: Path) -> None:
    """`if TYPE_CHECKING:` annotations in a class body are not columns; the mapping in the
    `else:` branch is (fastapi-users' mixins declare their foreign keys there)."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/mixins.py": """
            import sys
            from typing import TYPE_CHECKING
            from sqlalchemy import ForeignKey, String
            from sqlalchemy.orm import Mapped, declared_attr, mapped_column

            class AccountMixin:
                __tablename__ = "account"
                if TYPE_CHECKING:
                    id: int
                    user_id: int
                else:
                    id: Mapped[int] = mapped_column(primary_key=True)

                    @declared_attr
                    def user_id(cls) -> Mapped[int]:
                        return mapped_column(ForeignKey("user.id"), nullable=False)
                if sys.version_info >= (3, 10):
                    nickname: Mapped[str] = mapped_column(String(50), index=True)
            """,
            "app/models.py": """
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
            from app.mixins import AccountMixin

            class Base(DeclarativeBase):
                pass

            class Account(AccountMixin, Base):
                pass

            class User(Base):
                __tablename__ = "user"
                id: Mapped[int] = mapped_column(primary_key=True)
                accounts: Mapped[list[Account]] = relationship("Account", lazy="joined")
            """,
        },
    )
    account = index.model("app.models.Account")
    assert account is not None
    assert {"id", "user_id", "nickname"} <= set(account.columns)
    user = index.model("app.models.User")
    assert user is not None
    assert [c.attr for c in index.foreign_keys_to(account, user)] == ["user_id"]
    accounts = index.relationship(user, "accounts")
    assert accounts is not None
    assert accounts.direction == "one-to-many"


def test_marshmallow_schemas_their_fields_and_models(tmp_path: Path) -> None:
    """marshmallow, marshmallow-sqlalchemy and Flask-Marshmallow schemas: the attributes
    their fields read, the schemas they nest, the model of `Meta`."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/ext.py": """
            from flask_marshmallow import Marshmallow
            ma = Marshmallow()
            """,
            "app/schemas.py": """
            from marshmallow import Schema, fields
            from app.ext import ma
            from app.models import User

            class PostSchema(Schema):
                title = fields.Str()
                writer = fields.Pluck("UserSchema", "name", attribute="author")
                total = fields.Method("count")

            class UserSchema(ma.SQLAlchemyAutoSchema):
                class Meta:
                    model = User
                    include_relationships = True
                posts = ma.List(ma.Nested(PostSchema))

            class NotASchema:
                name = fields.Str()
            """,
        },
    )
    assert index.is_schema("app.schemas.PostSchema")
    assert index.is_schema("app.schemas.UserSchema")
    assert not index.is_schema("app.schemas.NotASchema")
    post = index.fields_of("app.schemas.PostSchema")
    assert set(post) == {"title", "author"}
    assert (post["author"].target, post["author"].target_is_string) == ("UserSchema", True)
    assert index.fields_of("app.schemas.UserSchema")["posts"].target == "app.schemas.PostSchema"
    assert index.schema_model("app.schemas.UserSchema") == ("app.models.User", True)


def test_directions_from_tables_of_imperative_mappings(tmp_path: Path) -> None:
    """A classic mapping's relationships get their direction from the `Table`s' foreign
    keys (in another module too), only when the side found without keys was read whole."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/domain.py": """
            class User:
                pass

            class Address:
                pass

            class Profile:
                pass

            class Note:
                pass

            class Badge:
                pass
            """,
            "app/tables.py": """
            from sqlalchemy import Column, ForeignKey, ForeignKeyConstraint, Integer, MetaData
            from sqlalchemy import Table
            from app.columns import audit_columns

            metadata = MetaData()
            users = Table(
                "users", metadata,
                Column("id", Integer, primary_key=True),
                Column("note_id", ForeignKey("notes.id")),
            )
            addresses = Table(
                "addresses", metadata,
                Column("id", Integer, primary_key=True),
                Column("user_id", Integer),
                ForeignKeyConstraint(["user_id"], ["users.id"]),
            )
            profiles = Table(
                "profiles", metadata,
                Column("id", Integer, primary_key=True),
                Column("user_id", ForeignKey(users.c.id), unique=True),
            )
            notes = Table("notes", metadata, Column("id", Integer), autoload_with=None)
            badges = Table(
                "badges", metadata, Column("id", Integer, primary_key=True), *audit_columns()
            )
            """,
            "app/orm.py": """
            from sqlalchemy.orm import registry, relationship
            from app import domain
            from app.tables import addresses, badges, notes, profiles, users

            mapper_registry = registry()

            def start_mappers():
                mapper_registry.map_imperatively(
                    domain.User,
                    users,
                    properties={
                        "addresses": relationship("Address", backref="user"),
                        "profile": relationship(domain.Profile, uselist=False, backref="owner"),
                        "note": relationship(domain.Note),
                        "badges": relationship(domain.Badge),
                    },
                )
                mapper_registry.map_imperatively(domain.Address, addresses)
                mapper_registry.map_imperatively(domain.Profile, profiles)
                mapper_registry.map_imperatively(domain.Note, notes)
                mapper_registry.map_imperatively(domain.Badge, badges)
            """,
        },
    )

    def shape(model: str, attr: str) -> tuple[str | None, bool | None, str | None]:
        rel = index.relationship(model, attr)
        assert rel is not None, (model, attr)
        return rel.target, rel.collection, rel.direction

    user = index.model("app.domain.User")
    assert user is not None
    assert user.table == "users"
    # A string target, found in the registry that maps both; a key in ForeignKeyConstraint.
    assert shape("app.domain.User", "addresses") == ("app.domain.Address", True, "one-to-many")
    assert shape("app.domain.Address", "user") == ("app.domain.User", False, "many-to-one")
    # `uselist=False` and a key to `users.c.id`; the backref holds the key: a scalar.
    assert shape("app.domain.User", "profile") == ("app.domain.Profile", False, "one-to-one")
    assert shape("app.domain.Profile", "owner") == ("app.domain.User", False, "many-to-one")
    # The reflected table may hold a key back; the helper's columns may hold one: unknown.
    assert shape("app.domain.User", "note") == ("app.domain.Note", None, None)
    assert shape("app.domain.User", "badges") == ("app.domain.Badge", None, None)


def test_directions_from_the_columns_foreign_keys_names(tmp_path: Path) -> None:
    """`foreign_keys=` and `foreign()` in `declared_attr` relationships of mixins name the
    side that holds the key, even when no `ForeignKey` is declared."""
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/models.py": """
            from sqlalchemy import Integer
            from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, foreign
            from sqlalchemy.orm import mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class Mixin:
                owner_id = mapped_column(Integer)
                parent_id = mapped_column(Integer)

                @declared_attr
                def owner(cls):
                    return relationship("Account", foreign_keys=lambda: [cls.owner_id])

                @declared_attr
                def notes(this):
                    return relationship(
                        "Note", primaryjoin=lambda: foreign(Note.doc_id) == this.id
                    )

                @declared_attr
                def files(cls):
                    return relationship("File", foreign_keys="File.doc_id")

                @declared_attr
                def single_file(cls):
                    return relationship("File", foreign_keys="[File.doc_id]", uselist=False)

                @declared_attr
                def parent(cls):
                    return relationship("Doc", foreign_keys=[cls.parent_id])

                @declared_attr
                def mixed(cls):
                    return relationship("File", foreign_keys=[cls.owner_id, File.doc_id])

                @declared_attr
                def by_table(cls):
                    return relationship("File", foreign_keys=[files_table.c.doc_id])

            class Account(Base):
                __tablename__ = "accounts"
                id: Mapped[int] = mapped_column(primary_key=True)

            class Doc(Mixin, Base):
                __tablename__ = "docs"
                id: Mapped[int] = mapped_column(primary_key=True)

            class Note(Base):
                __tablename__ = "notes"
                id: Mapped[int] = mapped_column(primary_key=True)
                doc_id: Mapped[int]

            class File(Base):
                __tablename__ = "files"
                id: Mapped[int] = mapped_column(primary_key=True)
                doc_id: Mapped[int]
            """,
        },
    )

    def shape(attr: str) -> tuple[bool | None, str | None]:
        rel = index.relationship("app.models.Doc", attr)
        assert rel is not None, attr
        return rel.collection, rel.direction

    assert shape("owner") == (False, "many-to-one")
    assert shape("notes") == (True, "one-to-many")
    assert shape("files") == (True, "one-to-many")
    assert shape("single_file") == (False, "one-to-one")
    # Self-referential: without `remote_side=` SQLAlchemy makes it one-to-many whatever
    # `foreign_keys=` names (its mapper says ONETOMANY, uselist=True for this one).
    assert shape("parent") == (True, "one-to-many")
    # Both sides, a Table's column: unknown.
    assert shape("mixed") == (None, None)
    assert shape("by_table") == (None, None)


_ADJACENCY = """
from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, backref, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class Item(Base):
    __tablename__ = "items"
    id = mapped_column(Integer, primary_key=True)
    type = mapped_column(String)
    parent_id = mapped_column(Integer, ForeignKey("items.id"))
    children = relationship(
        "Item", foreign_keys=[parent_id], backref=backref("parent", remote_side=[id])
    )
    up = relationship("Item", remote_side=[id], viewonly=True)
    __mapper_args__ = {"polymorphic_on": type, "polymorphic_identity": "item"}

class Section(Item):
    __mapper_args__ = {"polymorphic_identity": "section"}
"""


def test_adjacency_lists_are_read_as_sqlalchemy_maps_them(tmp_path: Path) -> None:
    """A self-referential relationship is one-to-many unless `remote_side=` is given,
    whatever `foreign_keys=` names, also read on a single-table subclass (indico's
    `RegistrationFormSection.children` was taken for many-to-one). Checked against the
    mappers SQLAlchemy builds from the same source."""
    index = build(tmp_path, {"app/__init__.py": "", "app/models.py": _ADJACENCY})
    namespace: dict[str, Any] = {}
    exec(compile(_ADJACENCY, "models.py", "exec"), namespace)
    namespace["Base"].registry.configure()
    for owner in ("Item", "Section"):
        for attr in ("children", "parent", "up"):
            prop = getattr(namespace[owner], attr).property
            expected = (prop.uselist, prop.direction.name.lower().replace("to", "-to-"))
            rel = index.relationship(f"app.models.{owner}", attr)
            assert rel is not None, (owner, attr)
            assert (rel.collection, rel.direction) == expected, (owner, attr)


def test_identifier_quoting_helpers_every_return_escapes(tmp_path: Path) -> None:
    index = build(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/sql.py": """
            def per_database(db_type, identifier):
                \"\"\"Backticks for MySQL, double quotes elsewhere.\"\"\"
                if db_type == "mysql":
                    escaped = identifier.replace("`", "``")
                    return f"`{escaped}`"
                else:
                    escaped = identifier.replace('"', '""')
                    return f'"{escaped}"'

            def one_return(identifier):
                return '"' + identifier.replace('"', '""') + '"'

            def raw_branch(db_type, identifier):
                if db_type == "mysql":
                    return f"`{identifier}`"
                escaped = identifier.replace('"', '""')
                return f'"{escaped}"'

            def raw_local(identifier):
                escaped = identifier
                return f'"{escaped}"'

            def loops(identifiers):
                for identifier in identifiers:
                    return '"' + identifier.replace('"', '""') + '"'
            """,
        },
    )
    quotes = {
        name: function.quotes
        for name in ("per_database", "one_return", "raw_branch", "raw_local", "loops")
        if (function := index.function(f"app.sql.{name}")) is not None
    }
    assert quotes == {
        "per_database": True,
        "one_return": True,
        "raw_branch": False,
        "raw_local": False,
        "loops": False,
    }
