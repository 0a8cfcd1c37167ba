"""SQD201: a lazy relationship read once per row of query results (N+1)."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Applicability, Fix, Related, Severity
from sqla_doctor.static.context import FileContext
from sqla_doctor.static.flow import (
    Binding,
    FunctionFlow,
    ObjectsValue,
    RowValue,
    flow_for,
    worth_analysing,
)
from sqla_doctor.static.index.functions import MAX_PATH
from sqla_doctor.static.loader_fix import model_name_here, options_edits
from sqla_doctor.static.navigation import (
    SCHEMA_DUMPERS,
    LazyAccess,
    Navigator,
    access_option,
    back_to_parent,
    closed_before,
    option_steps,
    row_entity_reads,
    shared_by_every_row,
)
from sqla_doctor.static.rule import Invalid, Rule, Valid

_MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    posts: Mapped[list["Post"]] = relationship(back_populates="author")
    tags: Mapped[list["Tag"]] = relationship(lazy="selectin")

    def to_dict(self):
        return {"name": self.name, "posts": [p.title for p in self.posts]}

class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")

class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
"""
_FILES = {"app/__init__.py": "", "app/models.py": _MODELS}
# A loop that returns from its first row, or, with the `continue`, reads each row's
# author until one has a name.
_FIRST_ROW = """
from sqlalchemy import select
from app.models import Post

def first_byline(session, title):
    for post in session.scalars(select(Post).where(Post.title == title)):
        if not post.author.name:
            {skip}
        return f"{{post.title}} by {{post.author.name}}"
    return None
"""
# A script below the models it queries, all at the module's top level.
_SCRIPT = """
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.orm import selectinload

class Base(DeclarativeBase):
    pass

class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    books: Mapped[list["Book"]] = relationship()

class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))

engine = create_engine("sqlite://")
with Session(engine) as session:
    for author in session.scalars(select(Author){options}):
        print(author.id, len(author.books))
"""
# Rows of an aliased entity: an option must name the alias (`selectinload(User.posts)`
# on a query of `top` raises ArgumentError).
_ALIASED = """
from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased, selectinload
from app.models import Post, User

def leaderboard(session: Session):
    ranked = select(User).join(User.posts).group_by(User.id).order_by(func.count(Post.id))
    top = aliased(User, ranked.limit(10).subquery())
    for user in session.scalars(select(top){options}):
        print(user.name, [p.title for p in user.posts])
"""
# A joined-table hierarchy whose subclasses each have a collection (scenario s126).
_SHAPES = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class Shape(Base):
    __tablename__ = "shapes"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]
    __mapper_args__ = {"polymorphic_on": kind, "polymorphic_identity": "shape"}

class Mark(Base):
    __tablename__ = "marks"
    id: Mapped[int] = mapped_column(primary_key=True)
    circle_id: Mapped[int] = mapped_column(ForeignKey("circles.id"))

class Tag(Base):
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(primary_key=True)
    square_id: Mapped[int] = mapped_column(ForeignKey("squares.id"))

class Circle(Shape):
    __tablename__ = "circles"
    id: Mapped[int] = mapped_column(ForeignKey("shapes.id"), primary_key=True)
    marks: Mapped[list[Mark]] = relationship()
    __mapper_args__ = {"polymorphic_identity": "circle"}

class Square(Shape):
    __tablename__ = "squares"
    id: Mapped[int] = mapped_column(ForeignKey("shapes.id"), primary_key=True)
    tags: Mapped[list[Tag]] = relationship()
    __mapper_args__ = {"polymorphic_identity": "square"}
"""
_SHAPE_FILES = {"app/__init__.py": "", "app/models.py": _SHAPES}
# A loop over the base class reading each subclass's collection after an isinstance().
_SHAPE_LOOP = """
from sqlalchemy import select
from sqlalchemy.orm import Session, selectin_polymorphic, selectinload
from app.models import Circle, Shape, Square

def marked(session: Session) -> int:
    n = 0
    for shape in session.scalars(select(Shape){options}):
        n += len(shape.marks) if isinstance(shape, Circle) else len(shape.tags)
    return n
"""
# Rows of an entity and a count, the entity read off each Row while the session is open.
_ROWS = """
from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload
from app.models import Post, User

def counts(session: Session):
    stmt = select(User, func.count(Post.id).label("n")).join(User.posts).group_by(User.id){options}
    for row in session.execute(stmt):
        print(row.n, row.User.name, [p.title for p in row.User.posts], len(row[0].posts))
"""
# A module-level alias, read in a function.
_MODULE_ALIAS = """
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased, selectinload
from app.models import User

Author = aliased(User, name="author")

def authors(session: Session):
    for user in session.scalars(select(Author){options}).all():
        print(len(user.posts))
"""
# The second entity of each row: its option names that entity, not the first.
_PAIRS = """
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from app.models import Post, User

def pairs(session: Session):
    for post, user in session.execute(select(Post, User).join(Post.author){options}):
        print(post.title, len(user.posts))
"""
# An ORM INSERT ... RETURNING of the entity loads the new objects (the option goes on it).
_RETURNING = """
from sqlalchemy import insert
from sqlalchemy.orm import Session, selectinload
from app.models import User

def import_users(session: Session, rows):
    users = session.scalars(insert(User).returning({returned}){options}, rows).all()
    return [len(u.posts) for u in users]
"""
# An export in partitions: each partition a list of the rows' objects.
_PARTITIONS = """
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from app.models import User

def export(session: Session):
    result = session.scalars(select(User){options}.execution_options(yield_per=100))
    for partition in result.partitions():
        for user in partition:
            print(user.name, len(user.posts))
"""
# Every author loaded first, into the session the posts come from.
_AUTHORS_FIRST = """
from sqlalchemy import select
from sqlalchemy.orm import Session
from app.models import Post, User

def bylines(session: Session):
    authors = session.scalars(select(User){narrowed}).all()
    posts = session.scalars(select(Post)).all()
    return [f"{{post.title}} by {{post.author.name}}" for post in posts], len(authors)
"""
# Dataclass models turned into dicts: asdict() reads every field, relationships too.
_DATACLASS_ROWS = """
import dataclasses
from sqlalchemy import ForeignKey, select
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedAsDataclass, Session
from sqlalchemy.orm import mapped_column, relationship, selectinload

class Base(MappedAsDataclass, DeclarativeBase):
    pass

class Owner(Base):
    __tablename__ = "owners"
    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    pets: Mapped[list["Pet"]] = relationship(default_factory=list)

class Pet(Base):
    __tablename__ = "pets"
    id: Mapped[int] = mapped_column(primary_key=True, init=False)
    owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"), init=False)

def export(session: Session):
    return [dataclasses.asdict(owner) for owner in session.scalars(select(Owner){options})]
"""
# Rows a hand-written SQL query maps onto the model.
_FROM_STATEMENT = """
from sqlalchemy import select, text
from sqlalchemy.orm import Session, selectinload
from app.models import User

def active(session: Session):
    users = session.scalars(
        select(User).from_statement(text("SELECT * FROM users WHERE active")){options}
    ).all()
    return [(user.name, len(user.posts)) for user in users]
"""
# Rows read by a lambda map() runs on each, and through filter().
_MAPPED = """
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from app.models import User

def post_counts(session: Session):
    users = session.scalars(select(User){options}).all()
    counts = list(map(lambda user: len(user.posts), users))
    named = [len(user.posts) for user in filter(lambda user: user.name, users)]
    return counts, named
"""
# Rows read through enumerate() and zip().
_NUMBERED = """
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from app.models import User

def ranking(session: Session, scores: list[int]):
    users = session.scalars(select(User){options}).all()
    for rank, user in enumerate(users, start=1):
        print(rank, user.name, len(user.posts))
    return [(user.name, score, len(user.posts)) for user, score in zip(users, scores)]
"""
# Serializers that read a collection only when asked (`is_admin=True`), one calling the
# other without asking.
_FLAG_MODELS = _MODELS.replace(
    '''        return {"name": self.name, "posts": [p.title for p in self.posts]}
''',
    '''        return {"name": self.name, "posts": [p.title for p in self.posts]}

    def serialize(self, is_admin=False):
        data = {"name": self.name}
        if is_admin:
            data["posts"] = len(self.posts)
        return data
''',
).replace(
    '''    author: Mapped[User] = relationship(back_populates="posts")
''',
    '''    author: Mapped[User] = relationship(back_populates="posts", lazy="joined")

    def serialize(self):
        return {"title": self.title, "author": self.author.serialize()}
''',
)
_FLAG_FILES = {"app/__init__.py": "", "app/models.py": _FLAG_MODELS}
# User with classmethods that query `cls` (after to_dict(): the lines above stay).
_CLASSMETHOD_MODELS = _MODELS.replace(
    '''        return {"name": self.name, "posts": [p.title for p in self.posts]}
''',
    '''        return {"name": self.name, "posts": [p.title for p in self.posts]}

    @classmethod
    def active(cls, session):
        from sqlalchemy import select
        return session.scalars(select(cls).where(cls.name != "")).all()

    @classmethod
    def active_with_posts(cls, session):
        from sqlalchemy import select
        from sqlalchemy.orm import selectinload
        return session.scalars(select(cls).options(selectinload(cls.posts))).all()
''',
)
_SCHEMAS = """
from marshmallow import Schema, fields
from marshmallow_sqlalchemy import SQLAlchemyAutoSchema
from app.models import User

class PostSchema(Schema):
    id = fields.Int()
    title = fields.Str()

class UserSchema(Schema):
    id = fields.Int()
    name = fields.Str()
    posts = fields.List(fields.Nested(PostSchema))

class UserNameSchema(Schema):
    id = fields.Int()
    name = fields.Str()

class UserAutoSchema(SQLAlchemyAutoSchema):
    class Meta:
        model = User
        include_relationships = True

users_schema = UserSchema(many=True)
"""
_SCHEMA_FILES = {**_FILES, "app/schemas.py": _SCHEMAS}
_REPOSITORY = """
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from app.models import User

class UserRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def all_users(self) -> list[User]:
        return list(self.session.scalars(select(User)).all())

    def with_posts(self) -> list[User]:
        stmt = select(User).options(selectinload(User.posts))
        return list(self.session.scalars(stmt).all())
"""
_REPOSITORY_FILES = {**_FILES, "app/repo.py": _REPOSITORY}
# A generic repository base, its model given by a subclass's base, by the constructor or
# by a class attribute (the full-stack template's `CRUDBase(Generic[ModelType])`).
_GENERIC_REPOSITORY_FILES = {
    **_FILES,
    "app/repo.py": """
from typing import Generic, TypeVar
from sqlalchemy import select
from sqlalchemy.orm import Session
from app.models import Base, Post, User

T = TypeVar("T", bound=Base)

class Repository(Generic[T]):
    def __init__(self, session: Session, model: type[T]) -> None:
        self.session = session
        self.model = model

    def list(self) -> list[T]:
        return list(self.session.scalars(select(self.model)))

class UserRepo(Repository[User]):
    def __init__(self, session: Session) -> None:
        super().__init__(session, User)

class CRUDBase(Generic[T]):
    def __init__(self, model: type[T]) -> None:
        self.model = model

    def get_multi(self, db: Session, limit: int = 100) -> list[T]:
        return db.query(self.model).limit(limit).all()

class CRUDPost(CRUDBase[Post]):
    pass

post = CRUDPost(Post)
""",
}
# A unit of work making its session and repository when entered (Cosmic Python).
_UNIT_OF_WORK_FILES = {
    **_REPOSITORY_FILES,
    "app/uow.py": """
from sqlalchemy.orm import Session
from app.repo import UserRepository

class UnitOfWork:
    def __init__(self, factory):
        self.factory = factory

    def __enter__(self):
        self.session: Session = self.factory()
        self.users = UserRepository(self.session)
        return self

    def __exit__(self, *args):
        self.session.close()
""",
}
# A repository function that hands back a Query, filtered by what its caller passes.
_LISTING_FILES = {
    **_FILES,
    "app/repo.py": """
from sqlalchemy import select
from app.models import Post

def list_posts(db, author_id=None, title=None):
    filters = []
    if author_id:
        filters.append(Post.author_id == author_id)
    if title:
        filters.append(Post.title == title)
    return db.query(Post).filter(*filters)

def fetch_posts(db, author_id=None, title=None):
    if title:
        return db.scalars(select(Post).where(Post.title == title)).all()
    return db.scalars(select(Post).where(Post.author_id == author_id)).all()
""",
}
# The project's subclass of Flask-SQLAlchemy, and `Column` as a partial of `db.Column`.
_PARTIAL_FILES = {
    "app/__init__.py": "",
    "app/base.py": """
import functools
from flask_sqlalchemy import SQLAlchemy

class AppSQLAlchemy(SQLAlchemy):
    pass

db = AppSQLAlchemy()
Column = functools.partial(db.Column, nullable=False)
""",
    "app/models.py": """
from app.base import Column, db

class Query(db.Model):
    id = Column(db.Integer, primary_key=True)
    alerts = db.relationship("Alert", back_populates="query")

class Alert(db.Model):
    id = Column(db.Integer, primary_key=True)
    query_id = Column(db.Integer, db.ForeignKey("query.id"))
    query = db.relationship(Query, back_populates="alerts")
    subscriptions = db.relationship("Subscription")

class Subscription(db.Model):
    id = Column(db.Integer, primary_key=True)
    alert_id = Column(db.Integer, db.ForeignKey("alert.id"))
""",
}
# Flask-SQLAlchemy models whose classmethods hand back a Query unrun (`cls.query...`).
_FLASK_FILES = {
    "app/__init__.py": "",
    "app/ext.py": "from flask_sqlalchemy import SQLAlchemy\ndb = SQLAlchemy()\n",
    "app/models.py": """
from app.ext import db

class User(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String)

class Dashboard(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    user_id = db.Column(db.Integer, db.ForeignKey("user.id"))
    user = db.relationship(User)

    @classmethod
    def recent(cls):
        return cls.query.filter(cls.id > 0).order_by(cls.id.desc())

    @classmethod
    def recent_with_user(cls):
        return cls.query.options(db.joinedload(cls.user)).filter(cls.id > 0)

    def to_dict(self):
        return {"id": self.id, "user": self.user.name}
""",
}
# Nested collections, a mapping-level joined eager load and a `to_dict()` reading two.
_BLOG = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class Author(Base):
    __tablename__ = "authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[list["Book"]] = relationship()
    awards: Mapped[list["Award"]] = relationship()
    teams: Mapped[list["Team"]] = relationship(lazy="joined")

    def to_dict(self):
        return {
            "name": self.name,
            "books": [book.title for book in self.books],
            "awards": [award.name for award in self.awards],
        }

class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    title: Mapped[str]
    reviews: Mapped[list["Review"]] = relationship()

class Review(Base):
    __tablename__ = "reviews"
    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[int] = mapped_column(ForeignKey("books.id"))

class Award(Base):
    __tablename__ = "awards"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    name: Mapped[str]

class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    members: Mapped[list["Member"]] = relationship()

class Member(Base):
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
"""
_BLOG_FILES = {"app/__init__.py": "", "app/blog.py": _BLOG}
# A declarative class pointing by name at a class mapped by the base's own registry.
_MIXED_FILES = {
    "app/__init__.py": "",
    "app/models.py": """
    from sqlalchemy import Column, ForeignKey, Integer, String, Table
    from sqlalchemy.orm import declarative_base, relationship

    Base = declarative_base()
    accounts = Table(
        "accounts", Base.metadata,
        Column("id", Integer, primary_key=True),
        Column("email", String(255)),
    )

    class Account:
        pass

    Base.registry.map_imperatively(Account, accounts)

    class Invoice(Base):
        __tablename__ = "invoices"
        id = Column(Integer, primary_key=True)
        account_id = Column(Integer, ForeignKey("accounts.id"))
        account = relationship("Account")
    """,
}
# Flask's classic recipe: `Base.query = db_session.query_property()`, models elsewhere.
_QUERY_PROPERTY_FILES = {
    "app/__init__.py": "",
    "app/database.py": """
    from sqlalchemy import create_engine
    from sqlalchemy.orm import declarative_base, scoped_session, sessionmaker

    engine = create_engine("sqlite:////tmp/test.db")
    db_session = scoped_session(sessionmaker(bind=engine))
    Base = declarative_base()
    Base.query = db_session.query_property()
    """,
    "app/models.py": """
    from sqlalchemy import Column, ForeignKey, Integer, String
    from sqlalchemy.orm import relationship
    from .database import Base

    class User(Base):
        __tablename__ = "users"
        id = Column(Integer, primary_key=True)
        name = Column(String(50))
        orders = relationship("Order")

    class Order(Base):
        __tablename__ = "orders"
        id = Column(Integer, primary_key=True)
        user_id = Column(Integer, ForeignKey("users.id"))
    """,
}
_QUERY_PROPERTY_LOOP = """
from sqlalchemy.orm import selectinload
from app.models import User

def users():
    return {{u.name: len(u.orders) for u in User.query{options}.all()}}
"""
# Async code that awaits each row's relationship: no MissingGreenlet, one SELECT per row.
_AWAITED_LOOP = """
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from app.models import User

async def post_titles(session):
    users = (await session.scalars(select(User){options})).all()
    titles = []
    for user in users:
        for post in await user.awaitable_attrs.posts:
            titles.append(post.title)
    return titles
"""
_MIXED_LOOP = """
from sqlalchemy.orm import joinedload
from app.models import Invoice

def emails(session):
    return [inv.account.email for inv in session.query(Invoice){options}]
"""
# Classic mapping: plain classes, `Table`s in one module, `map_imperatively()` in another.
_IMPERATIVE_FILES = {
    "app/__init__.py": "",
    "app/domain.py": """
    class Customer:
        pass

    class Address:
        pass

    class Note:
        pass
    """,
    "app/tables.py": """
    from sqlalchemy import Column, ForeignKey, Integer, MetaData, String, Table

    metadata = MetaData()
    customers = Table(
        "customers", metadata,
        Column("id", Integer, primary_key=True),
        Column("name", String(50)),
    )
    addresses = Table(
        "addresses", metadata,
        Column("id", Integer, primary_key=True),
        Column("customer_id", ForeignKey("customers.id")),
        Column("email", String(100)),
    )
    notes = Table("notes", metadata, autoload_with=None)
    """,
    "app/orm.py": """
    from sqlalchemy.orm import registry, relationship
    from app.domain import Address, Customer, Note
    from app.tables import addresses, customers, notes

    mapper_registry = registry()

    def start_mappers():
        mapper_registry.map_imperatively(
            Customer,
            customers,
            properties={
                "addresses": relationship(Address, backref="customer"),
                "notes": relationship(Note),
            },
        )
        mapper_registry.map_imperatively(Address, addresses)
        mapper_registry.map_imperatively(Note, notes)
    """,
}
# Mixins whose `declared_attr` relationships name their foreign key columns.
_MIXIN_MODELS = """
from sqlalchemy import Integer
from sqlalchemy.orm import (
    DeclarativeBase, Mapped, declared_attr, foreign, mapped_column, relationship
)

class Base(DeclarativeBase):
    pass

class OwnedMixin:
    owner_id = mapped_column(Integer)

    @declared_attr
    def owner(cls):
        return relationship(
            "Account",
            primaryjoin=lambda: Account.id == cls.owner_id,
            foreign_keys=lambda: [cls.owner_id],
        )

class HasAttachments:
    @declared_attr
    def attachments(cls):
        return relationship(
            "Attachment", primaryjoin=lambda: foreign(Attachment.doc_id) == cls.id
        )

class TreeMixin:
    parent_id = mapped_column(Integer)

    @declared_attr
    def parent(cls):
        return relationship(cls.__name__, foreign_keys=[cls.parent_id])

class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]

class Document(OwnedMixin, HasAttachments, Base):
    __tablename__ = "documents"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]

class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    doc_id: Mapped[int]

class Folder(TreeMixin, Base):
    __tablename__ = "folders"
    id: Mapped[int] = mapped_column(primary_key=True)
"""
_MIXIN_FILES = {"app/__init__.py": "", "app/models.py": _MIXIN_MODELS}


def _source(loaded: ObjectsValue) -> str:
    if loaded.origin_name is not None:
        return f"loaded by `{loaded.origin_name}()` at {loaded.origin_path}:{loaded.line}"
    return f"loaded at line {loaded.line}"


class RelationshipAccessInLoop(Rule):
    """
    ## What it does
    Checks for a lazy-loaded relationship read on every row of query results — in a
    `for` loop (also over `enumerate()`, `zip()` or `filter()` of the rows), a
    comprehension, a generator, a lambda `map()` calls, a helper function the rows are
    passed to,
    a repository method that returned them (called through `self.repo` too), a model
    method such as `to_dict()`, a Pydantic model (`model_validate`,
    `response_model`) or a marshmallow schema (`Schema.dump()`, nested fields,
    marshmallow-sqlalchemy's `include_relationships`) — when the statement that loaded
    the rows has no loader option for it and the relationship is not eager in the mapping.
    In async code, where a plain read is SQD202's, `await row.awaitable_attrs.rel` in a
    loop over the rows: it works, with one `SELECT` per row.

    Whether a relationship is a collection or a reference comes from its annotation,
    `uselist=`, `secondary=`, or the foreign keys: the models' columns, the `Table`s a
    classic mapping (`registry.map_imperatively()`) maps, or the columns `foreign_keys=`
    and `foreign()` name (in a mixin's `declared_attr` too). A relationship whose direction
    none of these tells is not reported.

    ## Why is this bad?
    Each row's first access emits its own `SELECT`: one query for the list, then one
    per row (N+1). Fifty users cost fifty-one round trips, and the page gets slower as
    the table grows; under load the extra queries hold connections and drain the pool.

    Alembic revisions and test code (`tests/`, `test_*.py`, `conftest.py`) are not
    checked: they run once, over a few rows.

    ## Known problems
    Relationships with `lazy="dynamic"` or `lazy="write_only"` also query per row, but
    no loader option can eager-load them; they are not reported. A many-to-one whose
    targets are few (already in the identity map) costs fewer queries than rows; one
    to the entity the statement joins is therefore not reported. Rows whose session is
    closed before the loop (after its `with` block, or returned by a function that
    closes it) raise DetachedInstanceError instead of querying: SQD204 reports those.
    A method (or a function handed the row) that reads a relationship only under
    `if flag:`, `flag` another of its parameters, is not reported for a call that
    passes it a false literal (`serialize(row, include_posts=False)`) or leaves it off
    when it defaults to `False` or `None` (`user.serialize()` where
    `serialize(self, is_admin=False)` reads `self.posts` for admins); one passing
    anything else, by keyword or position, is.

    ## Example
    ```python
    users = session.scalars(select(User)).all()
    for user in users:
        print(user.name, len(user.posts))
    ```

    Use instead:
    ```python
    users = session.scalars(select(User).options(selectinload(User.posts))).all()
    for user in users:
        print(user.name, len(user.posts))
    ```
    Use `selectinload()` for collections and `joinedload()` for many-to-one
    references; or set `lazy="raise"` on the relationship to catch every N+1 in tests.

    The option continues what already loads the way there: under the statement's
    `joinedload(Author.books)` it is `joinedload(Author.books).selectinload(Book.reviews)`;
    under `lazy="joined"` on `Author.teams` in the mapping it starts with
    `defaultload(Author.teams)`, which leaves that loader in charge — never a second,
    conflicting loader for the same relationship. Where one read (a `to_dict()`) loads
    several relationships, the option loads them all.

    ## Fix safety
    Unsafe: the fix adds `selectinload()` (collections) or `joinedload()` (many-to-one)
    to the statement that loaded the rows — continuing the statement's own option in
    place when it already loads the first steps — which changes how many queries run and
    when, and loads data even on paths that never read it. It is offered only when every
    class the option names has a name in the file.

    ## References
    - [Relationship Loading Techniques](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html)
    - [Select IN loading](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#select-in-loading)
    - [Specifying sub-options with `Load.options()`](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#specifying-sub-options-with-load-options)
    """

    code = "SQD201"
    name = "relationship-access-in-loop"
    pitfalls = ("P01",)
    severity = Severity.WARNING
    fix = Applicability.UNSAFE
    message = (
        "{rels} lazy-loaded once per row of `{rows}`{via} ({source}) — add "
        "`.options({option})` to that query"
    )

    VALID = (
        Valid(
            _RETURNING.format(returned="User", options=".options(selectinload(User.posts))"),
            path="app/imports.py",
            files=_FILES,
        ),
        # Columns returned, not the entity: no objects.
        Valid(
            _RETURNING.format(returned="User.id", options=""),
            path="app/imports.py",
            files=_FILES,
        ),
        Valid(
            _PARTITIONS.format(options=".options(selectinload(User.posts))"),
            path="app/export.py",
            files=_FILES,
        ),
        Valid(
            _ALIASED.format(options=".options(selectinload(top.posts))"),
            path="app/views.py",
            files=_FILES,
        ),
        Valid(
            _MODULE_ALIAS.format(options=".options(selectinload(Author.posts))"),
            path="app/views.py",
            files=_FILES,
        ),
        Valid(
            _PAIRS.format(options=".options(selectinload(User.posts))"),
            path="app/views.py",
            files=_FILES,
        ),
        Valid(
            _DATACLASS_ROWS.format(options=".options(selectinload(Owner.pets))"),
            path="app/export.py",
        ),
        # Every path through the body returns or raises: one row is read, one lazy load
        # (packit-service's `for run in model.runs: return run.project_event`).
        Valid(
            _FIRST_ROW.format(skip="raise LookupError(title)"), path="app/views.py", files=_FILES
        ),
        # Each post's author is in the session's identity map already: no SQL per post.
        Valid(_AUTHORS_FIRST.format(narrowed=""), path="app/views.py", files=_FILES),
        Valid(_SCRIPT.format(options=".options(selectinload(Author.books))"), path="load.py"),
        Valid(
            _FROM_STATEMENT.format(options=".options(selectinload(User.posts))"),
            path="app/views.py",
            files=_FILES,
        ),
        # map() and filter() over rows whose statement loads the posts.
        Valid(
            _MAPPED.format(options=".options(selectinload(User.posts))"),
            path="app/views.py",
            files=_FILES,
        ),
        # Numbered or paired with other values, from a statement that loads the posts.
        Valid(
            _NUMBERED.format(options=".options(selectinload(User.posts))"),
            path="app/views.py",
            files=_FILES,
        ),
        Valid(
            _AWAITED_LOOP.format(options=".options(selectinload(User.posts))"),
            path="app/views.py",
            files=_FILES,
        ),
        Valid(
            _QUERY_PROPERTY_LOOP.format(options=".options(selectinload(User.orders))"),
            path="app/views.py",
            files=_QUERY_PROPERTY_FILES,
        ),
        # Without the query_property(), what `User.query` is cannot be known.
        Valid(
            _QUERY_PROPERTY_LOOP.format(options=""),
            path="app/views.py",
            files={
                **_QUERY_PROPERTY_FILES,
                "app/database.py": _QUERY_PROPERTY_FILES["app/database.py"].replace(
                    "Base.query = db_session.query_property()", ""
                ),
            },
        ),
        Valid(
            _MIXED_LOOP.format(options=".options(joinedload(Invoice.account))"),
            path="app/views.py",
            files=_MIXED_FILES,
        ),
        # Its own query method through `self`, with the collection loaded up front.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session, selectinload
            from app.models import User

            class UserRepository:
                def __init__(self, session: Session) -> None:
                    self.session = session

                def with_posts(self) -> list[User]:
                    stmt = select(User).options(selectinload(User.posts))
                    return list(self.session.scalars(stmt))

                def titles(self) -> dict[str, list[str]]:
                    return {u.name: [p.title for p in u.posts] for u in self.with_posts()}
            """,
            path="app/repo.py",
            files=_FILES,
        ),
        # A test asserting on a few fixture rows.
        Valid(
            """
            from sqlalchemy import select
            from app.models import Post

            def test_posts_have_authors(session):
                posts = session.scalars(select(Post).where(Post.title != "")).all()
                for post in posts:
                    assert post.author.name
            """,
            path="tests/test_models.py",
            files=_FILES,
        ),
        # The session closed before the loop: the read raises DetachedInstanceError
        # (SQD204's finding), it does not query once per row.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.models import User

            def names(engine):
                with Session(engine) as session:
                    users = session.scalars(select(User)).all()
                return [len(u.posts) for u in users]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # A generic repository's rows read for their columns only.
        Valid(
            """
            from app import repo
            from app.models import User

            def names(session):
                users = repo.Repository(session, User).list()
                return [u.name for u in users] + [p.title for p in repo.post.get_multi(session)]
            """,
            path="app/views.py",
            files=_GENERIC_REPOSITORY_FILES,
        ),
        # The repository method that loads the relationship up front.
        Valid(
            """
            from app.repo import UserRepository

            class UserService:
                repo: UserRepository

                def titles(self):
                    return [[p.title for p in u.posts] for u in self.repo.with_posts()]
            """,
            path="app/service.py",
            files=_REPOSITORY_FILES,
        ),
        # marshmallow: the relationship loaded up front, a schema that reads no
        # relationship, and `dump()` of something that is not a schema.
        Valid(
            """
            import json
            from sqlalchemy import select
            from sqlalchemy.orm import selectinload
            from app.models import User
            from app.schemas import UserNameSchema, UserSchema

            def users(session, out):
                rows = session.scalars(select(User).options(selectinload(User.posts))).all()
                names = session.scalars(select(User)).all()
                json.dump([u.name for u in names], out)
                return UserSchema(many=True).dump(rows), UserNameSchema(many=True).dump(names)
            """,
            path="app/views.py",
            files=_SCHEMA_FILES,
        ),
        # The statement eager-loads the relationship.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session, selectinload
            from app.models import User

            def report(session: Session):
                users = session.scalars(select(User).options(selectinload(User.posts))).all()
                for user in users:
                    print(user.name, len(user.posts))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # A wildcard raiseload, a joinedload chain and a mapping-level `lazy="selectin"`.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload, raiseload
            from app.models import Post, User

            def report(session):
                for user in session.scalars(select(User).options(raiseload("*"))):
                    print(user.posts)
                posts = session.scalars(select(Post).options(joinedload(Post.author))).all()
                names = [p.author.name for p in posts]
                tags = [len(u.tags) for u in session.scalars(select(User))]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # One object, not rows: a single lazy load is no N+1; columns are loaded.
        Valid(
            """
            from sqlalchemy import select
            from app.models import User

            def show(session, user_id):
                user = session.get(User, user_id)
                names = [p.title for p in user.posts]
                for u in session.scalars(select(User)).all():
                    print(u.name, u.id)
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # A many-to-one to the entity the query joins and filters on: the rows share it.
        Valid(
            """
            from sqlalchemy import select
            from app.models import Post, User

            def titles_by(session, name):
                stmt = select(Post).join(Post.author).where(User.name == name)
                return [f"{p.title} ({p.author.name})" for p in session.scalars(stmt)]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Options built elsewhere cannot be read: stay silent.
        Valid(
            """
            from sqlalchemy import select
            from app.models import User

            def report(session, opts):
                for user in session.scalars(select(User).options(*opts)):
                    print(user.posts)
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Not SQLAlchemy: a requests session and a plain class with the same names.
        Valid(
            """
            import requests

            class User:
                posts = []

            def fetch(session: requests.Session):
                for user in session.get("https://example.com/users").json():
                    print(user["posts"])
                for user in [User(), User()]:
                    print(user.posts)
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Async code is SQD202's (the lazy load raises MissingGreenlet there).
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.ext.asyncio import AsyncSession
            from app.models import User

            async def report(session: AsyncSession):
                users = (await session.scalars(select(User))).all()
                return [u.posts for u in users]
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Classic mapping: a relationship to a reflected table (its foreign keys are not
        # in the source), and one whose direction the tables cannot tell.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.domain import Customer

            def notes(session: Session):
                for customer in session.scalars(select(Customer)).all():
                    print(customer.notes)
            """,
            path="app/views.py",
            files=_IMPERATIVE_FILES,
        ),
        # A self-referential `declared_attr` relationship (its direction is
        # `remote_side=`'s), eager-loaded ones, a mixin relationship loaded up front.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session, joinedload, selectinload
            from app.models import Document, Folder

            def tree(session: Session):
                for folder in session.scalars(select(Folder)).all():
                    print(folder.parent)
                docs = session.scalars(
                    select(Document).options(
                        joinedload(Document.owner), selectinload(Document.attachments)
                    )
                ).all()
                return [(d.owner.name, len(d.attachments)) for d in docs]
            """,
            path="app/views.py",
            files=_MIXIN_FILES,
        ),
        # The options this rule suggests: a chain continuing the statement's joinedload,
        # defaultload() under the mapping's lazy="joined", both of `to_dict()`'s reads.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session, defaultload, joinedload, selectinload
            from app.blog import Author, Book, Team

            def reviews(session: Session):
                stmt = select(Author).options(joinedload(Author.books).selectinload(Book.reviews))
                for author in session.scalars(stmt).unique():
                    for book in author.books:
                        print(book.title, len(book.reviews))

            def members(session: Session):
                stmt = select(Author).options(defaultload(Author.teams).selectinload(Team.members))
                for author in session.scalars(stmt).unique():
                    print([len(team.members) for team in author.teams])

            def dicts(session: Session):
                stmt = select(Author).options(
                    selectinload(Author.books), selectinload(Author.awards)
                )
                return [author.to_dict() for author in session.scalars(stmt).unique()]
            """,
            path="app/views.py",
            files=_BLOG_FILES,
        ),
        # The query pins the foreign key to one value: every post has the same author,
        # loaded once, then found in the identity map.
        Valid(
            """
            from sqlalchemy import and_, select
            from app.models import Post

            def by_author(session, uid, current_user):
                posts = session.scalars(select(Post).where(Post.author_id == uid)).all()
                mine = session.query(Post).filter_by(author_id=current_user.id)
                both = select(Post).where(and_(Post.author_id == uid, Post.title != ""))
                return (
                    [p.author.name for p in posts]
                    + [p.author.name for p in mine]
                    + [p.author.name for p in session.scalars(both)]
                )
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # The caller passes the value the helper pins the foreign key to.
        Valid(
            """
            from app.repo import list_posts

            def by_author(db, uid):
                return [p.author.name for p in list_posts(db, author_id=uid).all()]
            """,
            path="app/views.py",
            files=_LISTING_FILES,
        ),
        # The same for a helper that runs the query and returns the objects.
        Valid(
            """
            from app.repo import fetch_posts

            def by_author(db, uid):
                return [p.author.name for p in fetch_posts(db, author_id=uid)]
            """,
            path="app/views.py",
            files=_LISTING_FILES,
        ),
        # Back up to the object the collection hangs from: the identity map has it.
        Valid(
            """
            from app.models import Query

            def check(query_id):
                query = Query.query.get(query_id)
                return [alert.query.id for alert in query.alerts]
            """,
            path="app/views.py",
            files=_PARTIAL_FILES,
        ),
        # A Query handed back unrun: eager-loaded there, or by the caller.
        Valid(
            """
            from app.ext import db
            from app.models import Dashboard

            def dashboards():
                return [d.to_dict() for d in Dashboard.recent_with_user()]

            def dashboards_fixed():
                query = Dashboard.recent().options(db.joinedload(Dashboard.user))
                return [d.to_dict() for d in query]

            def newest_owner():
                newest = Dashboard.recent().first()
                return newest.user.name if newest else None
            """,
            path="app/views.py",
            files=_FLASK_FILES,
        ),
        # A classmethod whose query eager-loads what the loop reads.
        Valid(
            """
            from app.models import User

            def export(session):
                return [user.to_dict() for user in User.active_with_posts(session)]
            """,
            path="app/views.py",
            files={"app/__init__.py": "", "app/models.py": _CLASSMETHOD_MODELS},
        ),
        # A read behind a flag parameter that defaults to False, in a call (or a call the
        # serializer makes) that leaves the flag off.
        Valid(
            """
            from sqlalchemy import select
            from app.models import Post, User

            def users(session):
                return [u.serialize() for u in session.scalars(select(User)).all()]

            def posts(session):
                return [p.serialize() for p in session.scalars(select(Post)).all()]
            """,
            path="app/views.py",
            files=_FLAG_FILES,
        ),
        # The flag passed, but as a false literal: the read under it never runs.
        Valid(
            """
            from sqlalchemy import select
            from app.models import User

            def users(session):
                rows = session.scalars(select(User)).all()
                return [u.serialize(is_admin=False) for u in rows] + [
                    u.serialize(None) for u in rows
                ]
            """,
            path="app/views.py",
            files=_FLAG_FILES,
        ),
        # The same loop over the base class with that option set (scenario s126f).
        Valid(
            _SHAPE_LOOP.format(
                options=(
                    ".options(selectin_polymorphic(Shape, [Circle, Square]), "
                    "selectinload(Circle.marks), selectinload(Square.tags))"
                )
            ),
            path="app/views.py",
            files=_SHAPE_FILES,
        ),
        # The same rows with the collection eager-loaded: only the Row's columns and
        # the entity's loaded ones are read per row.
        Valid(_ROWS.format(options=".options(selectinload(User.posts))"), files=_FILES),
    )

    INVALID = (
        # Two subclasses' collections read on a base-class query's rows: each finding
        # gives the one option set both need (two selectin_polymorphic(Shape, ...)
        # options would conflict, and selectinload(Circle.marks) alone loads nothing).
        Invalid(
            _SHAPE_LOOP.format(options=""),
            path="app/views.py",
            files=_SHAPE_FILES,
            line=8,
            count=2,
            expected_message=(
                "`Circle.marks` is lazy-loaded once per row of "
                "`session.scalars(select(Shape))` (loaded at line 7) — add `.options("
                "selectin_polymorphic(Shape, [Circle, Square]), selectinload(Circle.marks), "
                "selectinload(Square.tags))` to that query"
            ),
        ),
        # A Row's entity (`row.User`, `row[0]`) is read as an unpacked one is.
        Invalid(
            _ROWS.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=8,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `session.execute(stmt)` (loaded "
                "at line 6) — add `.options(selectinload(User.posts))` to that query"
            ),
            expected_fix=_ROWS.format(options=".options(selectinload(User.posts))"),
        ),
        # A `continue` goes on to the next row: each skipped post's author is loaded.
        Invalid(
            _FIRST_ROW.format(skip="continue"),
            path="app/views.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`Post.author` is lazy-loaded once per row of "
                "`session.scalars(select(Post).where(Po...` (loaded at line 5) — add "
                "`.options(joinedload(Post.author))` to that query"
            ),
        ),
        Invalid(
            _RETURNING.format(returned="User", options=""),
            path="app/imports.py",
            files=_FILES,
            line=7,
            expected_fix=_RETURNING.format(
                returned="User", options=".options(selectinload(User.posts))"
            ),
        ),
        Invalid(
            _PARTITIONS.format(options=""),
            path="app/export.py",
            files=_FILES,
            line=9,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `partition` (loaded at line 6) — "
                "add `.options(selectinload(User.posts))` to that query"
            ),
        ),
        Invalid(
            _ALIASED.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=9,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `session.scalars(select(top))` "
                "(loaded at line 8) — add `.options(selectinload(top.posts))` to that query"
            ),
            expected_fix=_ALIASED.format(options=".options(selectinload(top.posts))"),
        ),
        Invalid(
            _MODULE_ALIAS.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=9,
            expected_fix=_MODULE_ALIAS.format(options=".options(selectinload(Author.posts))"),
        ),
        Invalid(
            _PAIRS.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=7,
            expected_fix=_PAIRS.format(options=".options(selectinload(User.posts))"),
        ),
        # The models' own names, in the module's top-level code that queries them.
        Invalid(
            _SCRIPT.format(options=""),
            path="load.py",
            line=21,
            expected_message=(
                "`Author.books` is lazy-loaded once per row of "
                "`session.scalars(select(Author))` (loaded at line 20) — add "
                "`.options(selectinload(Author.books))` to that query"
            ),
        ),
        # Every author loaded first, but by another session, closed since.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.db import engine
            from app.models import Post, User

            def bylines():
                with Session(engine) as session:
                    authors = session.scalars(select(User)).all()
                with Session(engine) as session:
                    posts = session.scalars(select(Post)).all()
                    return [f"{post.title} by {post.author.name}" for post in posts], authors
            """,
            path="app/views.py",
            files=_FILES,
            line=11,
        ),
        # Only some authors loaded first: the others are loaded one post at a time.
        Invalid(
            _AUTHORS_FIRST.format(narrowed=".where(User.name.in_(EDITORS))"),
            path="app/views.py",
            files=_FILES,
            line=8,
        ),
        Invalid(
            _DATACLASS_ROWS.format(options=""),
            path="app/export.py",
            line=20,
            expected_message=(
                "`Owner.pets` is lazy-loaded once per row of "
                "`session.scalars(select(Owner))` in `asdict()` (loaded at line 20) — add "
                "`.options(selectinload(Owner.pets))` to that query"
            ),
        ),
        # A FromStatement takes the option as a select() does.
        Invalid(
            _FROM_STATEMENT.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=9,
            expected_fix=_FROM_STATEMENT.format(options=".options(selectinload(User.posts))"),
        ),
        # A lambda map() calls once per row; a comprehension over filter()'s rows.
        Invalid(
            _MAPPED.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=7,
            count=2,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `users` (loaded at line 6) — "
                "add `.options(selectinload(User.posts))` to that query"
            ),
        ),
        # Rows numbered by enumerate(), or paired with others by zip(): each is a row.
        Invalid(
            _NUMBERED.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=8,
            count=2,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `enumerate(users, start=1)` "
                "(loaded at line 6) — add `.options(selectinload(User.posts))` to that query"
            ),
        ),
        Invalid(
            _AWAITED_LOOP.format(options=""),
            path="app/views.py",
            files=_FILES,
            line=9,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `users` (loaded at line 6) — add "
                "`.options(selectinload(User.posts))` to that query"
            ),
        ),
        Invalid(
            _QUERY_PROPERTY_LOOP.format(options=""),
            path="app/views.py",
            files=_QUERY_PROPERTY_FILES,
            line=5,
            expected_message=(
                "`User.orders` is lazy-loaded once per row of `User.query.all()` (loaded at "
                "line 5) — add `.options(selectinload(User.orders))` to that query"
            ),
        ),
        Invalid(
            _MIXED_LOOP.format(options=""),
            path="app/views.py",
            files=_MIXED_FILES,
            line=5,
            expected_message=(
                "`Invoice.account` is lazy-loaded once per row of `session.query(Invoice)` "
                "(loaded at line 5) — add `.options(joinedload(Invoice.account))` to that query"
            ),
        ),
        # The rows of the repository a unit of work holds, and of the one it eager-loads.
        Invalid(
            """
            from app.uow import UnitOfWork

            def titles(uow: UnitOfWork):
                with uow:
                    loaded = [[p.title for p in u.posts] for u in uow.users.with_posts()]
                    return loaded + [[p.title for p in u.posts] for u in uow.users.all_users()]
            """,
            path="app/service.py",
            files=_UNIT_OF_WORK_FILES,
            line=6,
        ),
        # The rows of a generic repository: its model comes from the subclass's base
        # (`UserRepo(Repository[User])`), the constructor (`Repository(session, User)`)
        # or a module-level instance's class (`post = CRUDPost(Post)`).
        Invalid(
            """
            from app import repo
            from app.models import User

            def counts(session):
                by_user = {u.name: len(u.posts) for u in repo.UserRepo(session).list()}
                for u in repo.Repository(session, User).list():
                    by_user[u.name] += len(u.posts)
                return by_user, [p.author.name for p in repo.post.get_multi(session)]
            """,
            path="app/views.py",
            files=_GENERIC_REPOSITORY_FILES,
            count=3,
        ),
        # The flag passed, by keyword or by position: the collection is read per row.
        Invalid(
            """
            from sqlalchemy import select
            from app.models import User

            def users(session, admin):
                rows = session.scalars(select(User)).all()
                return [u.serialize(is_admin=admin) for u in rows] + [
                    u.serialize(True) for u in rows
                ]
            """,
            path="app/views.py",
            files=_FLAG_FILES,
            count=2,
        ),
        # A `scoped_session` registry used as the session (Pyramid's `DBSession`), the
        # model imported inside the function.
        Invalid(
            """
            from app.db import DBSession

            def emails():
                from app.models import User

                out = []
                for user in DBSession.query(User).all():
                    out.extend(p.title for p in user.posts)
                return out
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/db.py": """
                from sqlalchemy import create_engine
                from sqlalchemy.orm import scoped_session, sessionmaker

                DBSession = scoped_session(sessionmaker(bind=create_engine("sqlite://")))
                """,
            },
            line=8,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `DBSession.query(User).all()` "
                "(loaded at line 7) — add `.options(selectinload(User.posts))` to that query"
            ),
        ),
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.models import User

            def report(session: Session):
                users = session.scalars(select(User)).all()
                for user in users:
                    print(user.name, len(user.posts))
            """,
            path="app/views.py",
            files=_FILES,
            line=8,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `users` (loaded at line 6) — "
                "add `.options(selectinload(User.posts))` to that query"
            ),
            expected_fix="""
            from sqlalchemy import select
            from sqlalchemy.orm import Session, selectinload
            from app.models import User

            def report(session: Session):
                users = session.scalars(select(User).options(selectinload(User.posts))).all()
                for user in users:
                    print(user.name, len(user.posts))
            """,
        ),
        # A many-to-one in a comprehension over a statement in a variable: joinedload.
        Invalid(
            """
            import sqlalchemy as sa
            import app.models as m

            def titles(session):
                stmt = sa.select(m.Post).where(m.Post.id > 10)
                return [f"{p.title} by {p.author.name}" for p in session.execute(stmt).scalars()]
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
            expected_fix="""
            import sqlalchemy as sa
            import app.models as m
            from sqlalchemy.orm import joinedload

            def titles(session):
                stmt = sa.select(m.Post).where(m.Post.id > 10).options(joinedload(m.Post.author))
                return [f"{p.title} by {p.author.name}" for p in session.execute(stmt).scalars()]
            """,
        ),
        # Legacy Query, nested loops: `User.posts` per user; `Post.author` is that user,
        # which the identity map answers without a query.
        Invalid(
            """
            from sqlalchemy.orm import joinedload
            from app.models import User

            def feed(session):
                query = session.query(User).options(joinedload(User.tags))
                for user in query.all():
                    for post in user.posts:
                        print(post.author.name)
            """,
            path="app/views.py",
            files=_FILES,
            count=1,
            expected_fix="""
            from sqlalchemy.orm import joinedload, selectinload
            from app.models import User

            def feed(session):
                query = session.query(User).options(joinedload(User.tags), selectinload(User.posts))
                for user in query.all():
                    for post in user.posts:
                        print(post.author.name)
            """,
        ),
        # Rows handed to a helper in another module that walks a relationship of each.
        Invalid(
            """
            from sqlalchemy import select
            from app.models import User
            from app.render import render_users

            def page(session):
                users = session.scalars(select(User)).all()
                return render_users(users)
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/render.py": """
                def render_users(users):
                    return "\\n".join(f"{u.name}: {len(u.posts)}" for u in users)
                """,
            },
            line=7,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `users` in `render_users()` "
                "(app/render.py:1) (loaded at line 6) — add "
                "`.options(selectinload(User.posts))` to that query"
            ),
        ),
        # A classmethod of the model that queries `cls`, called through the module.
        Invalid(
            """
            from app import models

            def export(session):
                return [user.to_dict() for user in models.User.active(session)]
            """,
            path="app/views.py",
            files={"app/__init__.py": "", "app/models.py": _CLASSMETHOD_MODELS},
            line=4,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `models.User.active(session)` in "
                "`User.to_dict()` (app/models.py:14) (loaded by `active()` at "
                "app/models.py:20) — add `.options(selectinload(User.posts))` to that query"
            ),
        ),
        # Rows loaded by a repository function elsewhere, serialized by `to_dict()`.
        Invalid(
            """
            from app.repo import all_users

            def export(session):
                return [user.to_dict() for user in all_users(session)]
            """,
            path="app/views.py",
            files={
                **_FILES,
                "app/repo.py": """
                from sqlalchemy import select
                from app.models import User

                def all_users(session):
                    return session.scalars(select(User).order_by(User.name)).all()
                """,
            },
            line=4,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `all_users(session)` in "
                "`User.to_dict()` (app/models.py:14) (loaded by `all_users()` at "
                "app/repo.py:5) — add `.options(selectinload(User.posts))` to that query"
            ),
        ),
        # `db` of the project's SQLAlchemy subclass, columns through `partial(db.Column)`.
        Invalid(
            """
            from app.models import Alert

            def report():
                return [len(alert.subscriptions) for alert in Alert.query.all()]
            """,
            path="app/views.py",
            files=_PARTIAL_FILES,
            line=4,
            expected_message=(
                "`Alert.subscriptions` is lazy-loaded once per row of `Alert.query.all()` "
                "(loaded at line 4) — add `.options(selectinload(Alert.subscriptions))` to "
                "that query"
            ),
        ),
        # The same helper without the author: posts of every author.
        Invalid(
            """
            from app.repo import fetch_posts, list_posts

            def titled(db, title):
                return [p.author.name for p in list_posts(db, title=title).all()]

            def fetched(db, title):
                return [p.author.name for p in fetch_posts(db, title=title)]
            """,
            path="app/views.py",
            files=_LISTING_FILES,
            count=2,
        ),
        # Posts of several authors, or pinned on another column: one load per author.
        Invalid(
            """
            from sqlalchemy import select
            from app.models import Post

            def by_authors(session, uids, title):
                posts = session.scalars(select(Post).where(Post.author_id.in_(uids))).all()
                named = session.scalars(select(Post).where(Post.title == title)).all()
                return [p.author.name for p in posts] + [p.author.name for p in named]
            """,
            path="app/views.py",
            files=_FILES,
            count=2,
        ),
        # A classmethod hands back `cls.query...` unrun; the caller's loop runs it.
        Invalid(
            """
            from app.models import Dashboard

            def dashboards():
                return [d.to_dict() for d in Dashboard.recent()]
            """,
            path="app/views.py",
            files=_FLASK_FILES,
            line=4,
            expected_message=(
                "`Dashboard.user` is lazy-loaded once per row of `Dashboard.recent()` in "
                "`Dashboard.to_dict()` (app/models.py:20) (loaded at line 4) — add "
                "`.options(joinedload(Dashboard.user))` to that query"
            ),
        ),
        # A function and a method hand back `Model.query.filter(...)` unrun (no call that
        # runs it in their body); the caller's loop runs it.
        Invalid(
            """
            from app.models import Dashboard

            def newest(limit):
                return Dashboard.query.filter(Dashboard.id > limit)

            class Board:
                def rows(self, limit):
                    return Dashboard.query.filter(Dashboard.id > limit)

            def names(limit):
                return [d.user.name for d in newest(limit)]

            def board_names(limit):
                return [d.user.name for d in Board().rows(limit)]
            """,
            path="app/views.py",
            files=_FLASK_FILES,
            count=2,
        ),
        # Flask-SQLAlchemy: `Model.query` and a Pydantic schema reading attributes.
        Invalid(
            """
            from pydantic import BaseModel, ConfigDict
            from app.models import Author

            class AuthorOut(BaseModel):
                model_config = ConfigDict(from_attributes=True)
                name: str
                books: list[str]

            def authors():
                return [AuthorOut.model_validate(a) for a in Author.query.filter_by(active=True)]
            """,
            path="app/views.py",
            files={
                "app/__init__.py": "",
                "app/ext.py": """
                from flask_sqlalchemy import SQLAlchemy
                db = SQLAlchemy()
                """,
                "app/models.py": """
                from app.ext import db

                class Author(db.Model):
                    id = db.Column(db.Integer, primary_key=True)
                    name = db.Column(db.String)
                    active = db.Column(db.Boolean)
                    books = db.relationship("Book", backref="author")

                class Book(db.Model):
                    id = db.Column(db.Integer, primary_key=True)
                    author_id = db.Column(db.Integer, db.ForeignKey("author.id"))
                """,
            },
            line=10,
        ),
        # marshmallow: a schema with a nested field, dumping the rows (many=True) or
        # each row; a marshmallow-sqlalchemy schema with include_relationships.
        Invalid(
            """
            from sqlalchemy import select
            from app.models import User
            from app.schemas import UserSchema, users_schema

            def users(session):
                rows = session.scalars(select(User)).all()
                return UserSchema(many=True).dump(rows)

            def users_again(session):
                rows = session.scalars(select(User)).all()
                return users_schema.dump(rows)
            """,
            path="app/views.py",
            files=_SCHEMA_FILES,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `rows` in `UserSchema().dump()` "
                "(loaded at line 6) — add `.options(selectinload(User.posts))` to that query"
            ),
            line=7,
        ),
        Invalid(
            """
            from sqlalchemy import select
            from app.models import User
            from app.schemas import UserAutoSchema

            def users(session):
                schema = UserAutoSchema()
                return [schema.dump(u) for u in session.scalars(select(User))]
            """,
            path="app/views.py",
            files=_SCHEMA_FILES,
            line=7,
        ),
        # A service calling its repository through `self` (set from an annotated
        # parameter, or declared in the class body).
        Invalid(
            """
            from app.repo import UserRepository

            class UserService:
                def __init__(self, repo: UserRepository) -> None:
                    self.repo = repo

                def titles(self):
                    return [[p.title for p in u.posts] for u in self.repo.all_users()]
            """,
            path="app/service.py",
            files=_REPOSITORY_FILES,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `self.repo.all_users()` (loaded "
                "by `all_users()` at app/repo.py:10) — add `.options(selectinload(User.posts))` "
                "to that query"
            ),
            line=8,
        ),
        # A repository calling its own query method through `self`.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.models import User

            class UserRepository:
                def __init__(self, session: Session) -> None:
                    self.session = session

                def all_users(self) -> list[User]:
                    return list(self.session.scalars(select(User)))

                def titles(self) -> dict[str, list[str]]:
                    return {u.name: [p.title for p in u.posts] for u in self.all_users()}
            """,
            path="app/repo.py",
            files=_FILES,
            expected_message=(
                "`User.posts` is lazy-loaded once per row of `self.all_users()` (loaded "
                "by `all_users()` at app/repo.py:10) — add `.options(selectinload(User.posts))` "
                "to that query"
            ),
            line=13,
        ),
        # Classic mapping: the direction comes from the tables' foreign keys
        # (addresses.customer_id → customers: a collection of addresses)...
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.domain import Customer

            def emails(s: Session):
                rows = s.scalars(select(Customer)).all()
                return {c: [a.email for a in c.addresses] for c in rows}
            """,
            path="app/views.py",
            files=_IMPERATIVE_FILES,
            line=7,
            expected_fix="""
            from sqlalchemy import select
            from sqlalchemy.orm import Session, selectinload
            from app.domain import Customer

            def emails(s: Session):
                rows = s.scalars(select(Customer).options(selectinload(Customer.addresses))).all()
                return {c: [a.email for a in c.addresses] for c in rows}
            """,
        ),
        # ... and the backref it makes, a reference to one customer.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.domain import Address

            def names(session: Session):
                for address in session.scalars(select(Address)).all():
                    print(address.customer.name)
            """,
            path="app/views.py",
            files=_IMPERATIVE_FILES,
            line=7,
            expected_message=(
                "`Address.customer` is lazy-loaded once per row of "
                "`session.scalars(select(Address)).all()` (loaded at line 6) — add "
                "`.options(joinedload(Address.customer))` to that query"
            ),
        ),
        # Mixins: `foreign_keys=[cls.owner_id]` is the document's column (many-to-one);
        # `foreign(Attachment.doc_id)` is the attachment's (one-to-many).
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.models import Document

            def listing(session: Session):
                for doc in session.scalars(select(Document)).all():
                    print(doc.title, doc.owner.name, len(doc.attachments))
            """,
            path="app/views.py",
            files=_MIXIN_FILES,
            line=7,
            count=2,
            expected_message=(
                "`Document.attachments` is lazy-loaded once per row of "
                "`session.scalars(select(Document)).all()` (loaded at line 6) — add "
                "`.options(selectinload(Document.attachments))` to that query"
            ),
        ),
        # A collection under one the statement already joinedload()s: the option continues
        # that one (a second `selectinload(Author.books)` would conflict with it).
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session, joinedload
            from app.blog import Author, Book

            def reviews(session: Session):
                stmt = select(Author).options(joinedload(Author.books))
                for author in session.scalars(stmt).unique():
                    for book in author.books:
                        print(book.title, len(book.reviews))
            """,
            path="app/views.py",
            files=_BLOG_FILES,
            line=9,
            expected_message=(
                "`Book.reviews` is lazy-loaded once per row of `author.books` (loaded at line 6)"
                " — add `.options(joinedload(Author.books).selectinload(Book.reviews))` to that"
                " query"
            ),
            expected_fix="""
            from sqlalchemy import select
            from sqlalchemy.orm import Session, joinedload, selectinload
            from app.blog import Author, Book

            def reviews(session: Session):
                stmt = select(Author).options(joinedload(Author.books).selectinload(Book.reviews))
                for author in session.scalars(stmt).unique():
                    for book in author.books:
                        print(book.title, len(book.reviews))
            """,
        ),
        # A helper reads a collection and, in each of its items, another: one option
        # loads both levels (a separate `selectinload(Author.books)` would repeat it).
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.blog import Author, Book

            def review_total(author: Author) -> int:
                return sum(len(book.reviews) for book in author.books)

            def review_counts(session: Session):
                stmt = select(Author)
                for author in session.scalars(stmt):
                    print(review_total(author))
            """,
            path="app/views.py",
            files=_BLOG_FILES,
            line=11,
            expected_message=(
                "`Author.books` and `Book.reviews` are lazy-loaded once per row of "
                "`session.scalars(stmt)` in `review_total()` (app/views.py:5) "
                "(loaded at line 9) — add "
                "`.options(selectinload(Author.books).selectinload(Book.reviews))` to that query"
            ),
            expected_fix="""
            from sqlalchemy import select
            from sqlalchemy.orm import Session, selectinload
            from app.blog import Author, Book

            def review_total(author: Author) -> int:
                return sum(len(book.reviews) for book in author.books)

            def review_counts(session: Session):
                stmt = select(Author).options(selectinload(Author.books).selectinload(Book.reviews))
                for author in session.scalars(stmt):
                    print(review_total(author))
            """,
        ),
        # Under the mapping's lazy="joined": defaultload() keeps it. No fix: `Team` has no
        # name in this file for the option to use.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.blog import Author

            def members(session: Session):
                for author in session.scalars(select(Author)).unique():
                    print([len(team.members) for team in author.teams])
            """,
            path="app/views.py",
            files=_BLOG_FILES,
            line=7,
            expected_message=(
                "`Team.members` is lazy-loaded once per row of `author.teams` (loaded at line 6)"
                " — add `.options(defaultload(Author.teams).selectinload(Team.members))` to that"
                " query"
            ),
            expected_fix="""
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.blog import Author

            def members(session: Session):
                for author in session.scalars(select(Author)).unique():
                    print([len(team.members) for team in author.teams])
            """,
        ),
        # `to_dict()` reads two relationships: the option loads both.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session
            from app.blog import Author

            def dicts(session: Session):
                q = select(Author)
                authors = session.scalars(q).unique().all()
                return [author.to_dict() for author in authors]
            """,
            path="app/views.py",
            files=_BLOG_FILES,
            line=8,
            expected_message=(
                "`Author.awards` and `Author.books` are lazy-loaded once per row of `authors` in "
                "`Author.to_dict()` (app/blog.py:15) (loaded at line 6) — add "
                "`.options(selectinload(Author.awards), selectinload(Author.books))` to that query"
            ),
            expected_fix="""
            from sqlalchemy import select
            from sqlalchemy.orm import Session, selectinload
            from app.blog import Author

            def dicts(session: Session):
                q = select(Author).options(selectinload(Author.awards), selectinload(Author.books))
                authors = session.scalars(q).unique().all()
                return [author.to_dict() for author in authors]
            """,
        ),
    )

    def __init__(self, ctx: FileContext) -> None:
        super().__init__(ctx)
        self._skip = False
        self._reported: set[tuple[int, str, str]] = set()

    def visit_Module(self, node: ast.Module) -> None:
        # Alembic revisions run once, offline, and a test's loop reads a few fixture
        # rows: an N+1 there costs nothing that matters.
        names = self.ctx.facts.names.defined
        self._skip = ("upgrade" in names and "revision" in names) or self.ctx.in_tests

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        if _runs_once(node):
            return
        self._loop(node, [(node.target, node.iter)], _body_region(node))

    visit_AsyncFor = visit_For

    def visit_ListComp(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        self._loop(node, [(g.target, g.iter) for g in node.generators], node)

    visit_SetComp = visit_ListComp
    visit_GeneratorExp = visit_ListComp
    visit_DictComp = visit_ListComp

    def visit_Call(self, node: ast.Call) -> None:
        """Rows passed whole to a helper that iterates them."""
        func = node.func
        if self._skip or not node.args or not isinstance(func, (ast.Name, ast.Attribute)):
            return
        if isinstance(func, ast.Name) and func.id == "map":
            self._mapped(node)
            return
        tail = func.attr if isinstance(func, ast.Attribute) else func.id
        if tail not in self.ctx.index.element_readers() and tail not in SCHEMA_DUMPERS:
            return
        flow = flow_for(self.ctx, node)
        found: list[tuple[LazyAccess, ObjectsValue, ast.expr]] = []
        for position, arg in enumerate(node.args):
            if not isinstance(arg, (ast.Name, ast.Attribute, ast.Call)):
                continue
            rows = flow.value(arg)
            if not isinstance(rows, ObjectsValue) or not rows.many or rows.is_async:
                continue
            if closed_before(flow, rows, node):
                continue
            navigator = Navigator(flow, self.ctx.index, strict=False)
            element = _element(rows)
            for access in navigator.via_call(node, position, element, per_row=True, elements=True):
                found.append((access, rows, arg))
        self._emit(found)

    def _mapped(self, node: ast.Call) -> None:
        """``map(lambda t: t.author.name, rows)``: the lambda runs once per row."""
        if len(node.args) != 2 or not isinstance(node.args[0], ast.Lambda):
            return
        function = node.args[0]
        params = function.args.args
        if len(params) != 1 or function.args.vararg or function.args.kwonlyargs:
            return
        flow = flow_for(self.ctx, node)
        if flow.is_local("map") or flow.qualify(node.func) is not None:
            return
        rows = flow.value(node.args[1])
        if not isinstance(rows, ObjectsValue) or not rows.many or rows.is_async:
            return
        if closed_before(flow, rows, node):
            return
        navigator = Navigator(flow, self.ctx.index, strict=False)
        element = _element(rows)
        found: list[tuple[LazyAccess, ObjectsValue, ast.expr]] = []
        for first, attrs in _chains_on(function.body, params[0].arg):
            for access in navigator.path(element, attrs, first, via=None, per_row=True):
                found.append((access, rows, node.args[1]))
        self._emit(found)

    def visit_Return(self, node: ast.Return) -> None:
        """Rows returned from a route whose ``response_model`` reads relationships."""
        if self._skip or node.value is None:
            return
        flow = flow_for(self.ctx, node)
        if not isinstance(flow.node, ast.FunctionDef) or not flow.node.decorator_list:
            return
        rows = flow.value(node.value)
        if not isinstance(rows, ObjectsValue) or not rows.many or rows.is_async:
            return
        navigator = Navigator(flow, self.ctx.index, strict=False)
        self._emit([(access, rows, node.value) for access in navigator.response_model(node, rows)])

    def _loop(
        self, loop: ast.AST, generators: list[tuple[ast.expr, ast.expr]], region: ast.AST
    ) -> None:
        if self._skip or not self._worth(loop):
            return
        flow: FunctionFlow | None = None
        found: list[tuple[LazyAccess, ObjectsValue, ast.expr]] = []
        for target, iterable in generators:
            if not isinstance(target, (ast.Name, ast.Tuple)):
                continue
            if flow is None:
                flow = flow_for(self.ctx, loop)
            rows = flow.iterated(iterable)
            if rows is None or closed_before(flow, rows, loop):
                continue
            for binding in _loop_bindings(flow, loop, target):
                element = flow.binding_value(binding)
                if isinstance(element, RowValue) and not rows.is_async:
                    # `for row in session.execute(select(User, ...))`: `row.User.posts`.
                    navigator = Navigator(flow, self.ctx.index, strict=False)
                    for _, attribute, entity in row_entity_reads(flow, binding, region):
                        for access in navigator.on_attribute(attribute, entity, per_row=True):
                            if not _targets_held(flow, access, rows, loop):
                                found.append((access, rows, iterable))
                    continue
                if not isinstance(element, ObjectsValue):
                    continue
                navigator = Navigator(flow, self.ctx.index, strict=False, subclasses=True)
                if rows.is_async:
                    # Plain reads are SQD202's (MissingGreenlet); `await
                    # row.awaitable_attrs.rel` works, one SELECT per row.
                    for awaited in _awaited_loads(flow, binding, region):
                        for access in navigator.path(
                            element, (awaited.attr,), awaited, via=None, per_row=True
                        ):
                            found.append((access, rows, iterable))
                    continue
                for access in navigator.on_binding(binding, element, region, per_row=True):
                    if not _targets_held(flow, access, rows, loop):
                        found.append((access, rows, iterable))
        self._emit(found)

    def _worth(self, node: ast.AST) -> bool:
        scope = self.ctx.enclosing_scope(node)
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            return worth_analysing(self.ctx, scope)
        return True

    def _emit(self, found: list[tuple[LazyAccess, ObjectsValue, ast.expr]]) -> None:
        """One finding per place: the relationships read there, shortest path first."""
        index = self.ctx.index
        found = [
            item
            for item in found
            if not back_to_parent(index, item[0], item[1].path)
            and not shared_by_every_row(index, item[0], item[1])
        ]
        # Each relationship once per loop (at its first read), then grouped by place.
        first: dict[tuple[str, str], tuple[LazyAccess, ObjectsValue, ast.expr]] = {}
        for item in sorted(found, key=lambda i: _position(i[0].node)):
            first.setdefault((item[0].rel.owner, item[0].rel.attr), item)
        # Subclasses' relationships on a base-class query's rows: one option set for all.
        subclass_reads = [item[0] for item in first.values() if item[0].base is not None]
        by_node: dict[int, list[tuple[LazyAccess, ObjectsValue, ast.expr]]] = {}
        for item in first.values():
            by_node.setdefault(id(item[0].node), []).append(item)
        for items in by_node.values():
            unique: dict[tuple[str, str], tuple[LazyAccess, ObjectsValue, ast.expr]] = {}
            for item in sorted(items, key=lambda i: len(i[0].path)):
                unique.setdefault((item[0].rel.owner, item[0].rel.attr), item)
            chosen = list(unique.values())
            key = (id(chosen[0][0].node), chosen[0][0].rel.owner, chosen[0][0].rel.attr)
            if key in self._reported:
                continue
            self._reported.add(key)
            self._report([c[0] for c in chosen], chosen[0][1], chosen[0][2], subclass_reads)

    def _report(
        self,
        accesses: list[LazyAccess],
        rows: ObjectsValue,
        iterable: ast.expr,
        subclass_reads: list[LazyAccess],
    ) -> None:
        access = accesses[0]
        index = self.ctx.index
        # Every relationship read here needs its option (a `to_dict()` reading two needs
        # both), each continuing from what already loads the steps before it.
        optioned = _not_implied(accesses)
        option = ", ".join(access_option(index, a) for a in optioned)
        fix: Fix | None = None
        loaded = access.objects
        stmt = loaded.stmt
        chains = self._chains(optioned)
        polymorphic = next((a for a in optioned if a.base is not None), None)
        if polymorphic is not None:
            option = self._polymorphic_option(polymorphic, optioned, subclass_reads)
            chains = None
        if chains is not None and stmt is not None:
            existing = [_option_prefix(a) for a in optioned]
            edits = options_edits(self.ctx, stmt, chains, existing)
            if edits is not None:
                option = edits[1]
                fix = Fix(
                    description=(
                        f"eager-load with `{option}`"
                        if edits[2]
                        else f"add `.options({option})` to the statement"
                    ),
                    edits=edits[0],
                    applicability=Applicability.UNSAFE,
                )
        rows_text = " ".join(self.ctx.text(iterable).split())
        if len(rows_text) > 40:
            rows_text = rows_text[:37] + "..."
        # Rows reached through a relationship (`for row in build.package_builds`) came from
        # the query that loaded their parent, the line the message names.
        query = loaded.stmt.node if loaded.path and loaded.stmt is not None else loaded.node
        related = (
            [Related(self.ctx.location(query), "the query that loaded the rows")]
            if (query is not None and loaded.origin_path is None)
            else []
        )
        names = [f"`{a.rel.name}`" for a in accesses]
        if len(names) == 1:
            rels = f"{names[0]} is"
        elif len(names) <= 3:
            rels = ", ".join(names[:-1]) + f" and {names[-1]} are"
        else:
            rels = ", ".join(names[:2]) + f" and {len(names) - 2} more relationships are"
        options = (
            option
            if polymorphic is not None
            else ", ".join(access_option(index, a) for a in optioned[:4])
        )
        self.report(
            access.node,
            fix=fix,
            related=related,
            hint=(
                f'eager-load with `{options}`, or set `lazy="raise"` on the relationship to '
                "catch this in tests"
            ),
            rels=rels,
            rows=rows_text,
            via=f" in {access.via}" if access.via else "",
            source=_source(loaded),
            option=option,
        )


    def _polymorphic_option(
        self, access: LazyAccess, optioned: list[LazyAccess], subclass_reads: list[LazyAccess]
    ) -> str:
        """``selectin_polymorphic(Shape, [Circle, Square]), selectinload(Circle.marks),
        selectinload(Square.tags)``: one option set for every subclass relationship the
        loop reads on the base-class query's rows. Separate ``selectin_polymorphic()``
        options for one base conflict (InvalidRequestError), and ``selectinload(Circle.
        marks)`` alone does not load it on a ``select(Shape)``."""
        assert access.base is not None
        same = [
            read
            for read in subclass_reads
            if read.base == access.base and read.objects.stmt is access.objects.stmt
        ]
        same += [read for read in optioned if read not in same]
        subclasses = dict.fromkeys(read.rel.owner for read in same if read.base is not None)
        written = access.objects.entity
        base = (
            self.ctx.text(written)
            if written is not None
            else model_name_here(self.ctx, access.base) or access.base.rpartition(".")[2]
        )
        shown = ", ".join(
            model_name_here(self.ctx, sub) or sub.rpartition(".")[2] for sub in subclasses
        )
        loaders = ", ".join(access_option(self.ctx.index, read) for read in same)
        scope = self.ctx.enclosing_scope(access.node)
        if "selectin_polymorphic(" in self.ctx.text(scope):
            # The query has one already: a second for the same base would conflict.
            return loaders
        return f"selectin_polymorphic({base}, [{shown}]), {loaders}"

    def _chains(self, accesses: list[LazyAccess]) -> list[list[tuple[str, str]]] | None:
        """The options as (loader, attribute text) steps, for a fix: when the statement
        that loaded every row is in this file and each class an option names has a name
        here (the loaded entity as the statement writes it)."""
        stmt = accesses[0].objects.stmt
        written = accesses[0].objects.entity
        if stmt is None or written is None:
            return None
        entity = self.ctx.text(written)
        chains: list[list[tuple[str, str]]] = []
        for access in accesses:
            loaded = access.objects
            if (
                loaded.stmt is not stmt
                or loaded.origin_path is not None
                or loaded.position != accesses[0].objects.position
            ):
                return None
            chain: list[tuple[str, str]] = []
            steps = option_steps(self.ctx.index, access.path, loaded.options)
            for depth, (loader, model, attr) in enumerate(steps):
                owner = entity if depth == 0 else model_name_here(self.ctx, model)
                if owner is None:
                    return None
                chain.append((loader, f"{owner}.{attr}"))
            chains.append(chain)
        return chains


def _not_implied(accesses: list[LazyAccess]) -> list[LazyAccess]:
    """The accesses whose option a longer path's does not already give: the option for
    `Order.lines` then `Line.product` loads `Order.lines` too."""
    paths = [tuple(a.path) for a in accesses]
    return [
        access
        for access, path in zip(accesses, paths, strict=True)
        if not any(len(other) > len(path) and other[: len(path)] == path for other in paths)
    ]


def _option_prefix(access: LazyAccess) -> tuple[str, ...]:
    """The attributes of the path's first steps that the statement's options load."""
    path = access.path
    options = access.objects.options
    found: tuple[str, ...] = ()
    for depth in range(len(path) - 1):
        if options.strategy_for(path[: depth + 1]) is None:
            break
        found = tuple(attr for _, attr in path[: depth + 1])
    return found


def _position(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


def _runs_once(loop: ast.For | ast.AsyncFor) -> bool:
    """A loop whose body ends in ``return``, ``raise`` or ``break`` on every path, with
    no ``continue`` of its own: it reads the first row only (``for run in model.runs:
    return run.project_event``)."""
    if not _always_exits(loop.body):
        return False
    stack: list[ast.AST] = list(loop.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Continue):
            return False
        if isinstance(
            node, (ast.For, ast.AsyncFor, ast.While, ast.FunctionDef, ast.AsyncFunctionDef)
        ):
            # Their `continue` is their own; the for/while's else runs in this loop.
            stack.extend(getattr(node, "orelse", ()))
            continue
        stack.extend(ast.iter_child_nodes(node))
    return True


def _always_exits(body: list[ast.stmt]) -> bool:
    if not body:
        return False
    last = body[-1]
    if isinstance(last, (ast.Return, ast.Raise, ast.Break)):
        return True
    if isinstance(last, ast.If):
        return _always_exits(last.body) and _always_exits(last.orelse)
    return False


def _body_region(node: ast.For | ast.AsyncFor) -> ast.AST:
    region = ast.Module(body=list(node.body), type_ignores=[])
    first, last = node.body[0], node.body[-1]
    region.lineno, region.col_offset = first.lineno, first.col_offset  # type: ignore[attr-defined]
    region.end_lineno, region.end_col_offset = last.end_lineno, last.end_col_offset  # type: ignore[attr-defined]
    return region


def _awaited_loads(flow: FunctionFlow, binding: Binding, region: ast.AST) -> list[ast.Attribute]:
    """``row.awaitable_attrs.rel`` awaited in ``region`` on the loop's own ``row``."""
    found = []
    for node in ast.walk(region):
        if not isinstance(node, ast.Await) or not isinstance(node.value, ast.Attribute):
            continue
        proxy = node.value.value
        if (
            isinstance(proxy, ast.Attribute)
            and proxy.attr == "awaitable_attrs"
            and isinstance(proxy.value, ast.Name)
            and proxy.value.id == binding.name
            and flow.binding(binding.name, proxy.value) is binding
        ):
            found.append(node.value)
    return found


def _chains_on(body: ast.expr, name: str) -> list[tuple[ast.Attribute, tuple[str, ...]]]:
    """The attribute chains read on ``name`` in a lambda's body (``t.author.name`` →
    (``t.author``, ("author", "name"))), a called last step marked "()"."""
    outer: dict[int, ast.AST] = {}
    for holder in ast.walk(body):
        for child in ast.iter_child_nodes(holder):
            outer[id(child)] = holder
    chains: list[tuple[ast.Attribute, tuple[str, ...]]] = []
    for node in ast.walk(body):
        if not (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == name
        ):
            continue
        attrs = [node.attr]
        top: ast.AST = node
        parent = outer.get(id(node))
        while isinstance(parent, ast.Attribute) and len(attrs) < MAX_PATH:
            attrs.append(parent.attr)
            top = parent
            parent = outer.get(id(parent))
        if isinstance(parent, ast.Call) and parent.func is top:
            attrs[-1] += "()"
        chains.append((node, tuple(attrs)))
    return chains


# Statement methods after which a query no longer loads every row of its model.
_NARROWING = frozenset(
    {"where", "filter", "filter_by", "limit", "offset", "slice", "fetch", "join", "having"}
)


def _targets_held(
    flow: FunctionFlow, access: LazyAccess, rows: ObjectsValue, loop: ast.AST
) -> bool:
    """A many-to-one read on each row whose every target the session already holds:
    ``countries = session.scalars(select(Country)).all()`` earlier in the scope, in the
    same session and kept in a name, makes each ``city.country`` an identity-map lookup
    with no SQL."""
    rel = access.rel
    if rel.direction != "many-to-one" or rel.target is None or len(access.path) != 1:
        return False
    start = (getattr(loop, "lineno", 0), getattr(loop, "col_offset", 0))
    for bindings in flow.bindings.values():
        if len(bindings) != 1 or bindings[0].kind != "assign" or bindings[0].pos >= start:
            continue
        held = flow.binding_value(bindings[0])
        if (
            isinstance(held, ObjectsValue)
            and held.many
            and held.shape == "list"
            and held.model == rel.target
            and not held.path
            and held.stmt is not None
            and not _narrowed(held.stmt.node)
            and _same_session(flow, held, rows)
        ):
            return True
    return False


def _same_session(flow: FunctionFlow, one: ObjectsValue, other: ObjectsValue) -> bool:
    """Loaded through the same binding of the same session name (not two ``with
    Session() as session:`` blocks one after the other)."""
    if one.receiver is None or one.receiver != other.receiver:
        return False
    if one.node is None or other.node is None:
        return False
    name = one.receiver.partition(".")[0]
    return flow.binding(name, one.node) is flow.binding(name, other.node)


def _narrowed(statement: ast.expr) -> bool:
    node: ast.expr = statement
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in _NARROWING:
            return True
        node = node.func.value
    return False


def _loop_bindings(flow: FunctionFlow, loop: ast.AST, target: ast.expr) -> list[Binding]:
    names = (
        [target.id]
        if isinstance(target, ast.Name)
        else [e.id for e in getattr(target, "elts", []) if isinstance(e, ast.Name)]
    )
    found: list[Binding] = []
    for name in names:
        for binding in flow.bindings.get(name, ()):
            if binding.node is loop and binding.kind in ("for", "comp"):
                found.append(binding)
    return found


def _element(rows: ObjectsValue) -> ObjectsValue:
    from dataclasses import replace

    return replace(rows, many=False, shape="object")
