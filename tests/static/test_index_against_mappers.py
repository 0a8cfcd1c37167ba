"""The index's relationship shapes against the mappers SQLAlchemy builds from the same source.

Whatever the index says about a relationship (a collection or not, its direction) must be
what SQLAlchemy decides; "unknown" (None) is allowed, a wrong answer is not: rules advise
`selectinload` or `joinedload`, and claim missing foreign keys, from these facts.
"""

from __future__ import annotations

import ast
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest

from sqla_doctor.static.files import display_path, module_for
from sqla_doctor.static.index import FileFacts, ProjectIndex

CASES: dict[str, str] = {}
CASES["basic"] = """
class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    posts: Mapped[list["Post"]] = relationship(back_populates="author")
    profile: Mapped["Profile"] = relationship(back_populates="user")
class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")
class Profile(Base):
    __tablename__ = "profiles"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    user: Mapped[User] = relationship(back_populates="profile")
"""
CASES["untyped"] = """
class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    posts = relationship("Post", backref="author")
    settings = relationship("Setting", uselist=False, backref=backref("owner", uselist=False))
class Post(Base):
    __tablename__ = "posts"
    id = Column(Integer, primary_key=True)
    user_id = Column(Integer, ForeignKey("users.id"))
class Setting(Base):
    __tablename__ = "settings"
    id = Column(Integer, primary_key=True)
    user_id = Column(ForeignKey("users.id"))
"""
CASES["m2m"] = """
post_tags = Table(
    "post_tags",
    Base.metadata,
    Column("post_id", ForeignKey("posts.id")),
    Column("tag_id", ForeignKey("tags.id")),
)
class Post(Base):
    __tablename__ = "posts"
    id = Column(Integer, primary_key=True)
    tags = relationship("Tag", secondary=post_tags, back_populates="posts")
    first_tag = relationship("Tag", secondary=post_tags, uselist=False, viewonly=True)
class Tag(Base):
    __tablename__ = "tags"
    id = Column(Integer, primary_key=True)
    posts = relationship("Post", secondary="post_tags", back_populates="tags")
"""
CASES["two_fks"] = """
class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
class Message(Base):
    __tablename__ = "messages"
    id = Column(Integer, primary_key=True)
    sender_id = Column(ForeignKey("users.id"))
    recipient_id = Column(ForeignKey("users.id"))
    sender = relationship("User", foreign_keys=[sender_id], backref="sent")
    recipient = relationship(
        User, foreign_keys="Message.recipient_id", backref=backref("received", lazy="dynamic")
    )
"""
CASES["selfref"] = """
class Node(Base):
    __tablename__ = "nodes"
    id = Column(Integer, primary_key=True)
    parent_id = Column(ForeignKey("nodes.id"))
    children = relationship("Node", back_populates="parent")
    parent = relationship("Node", back_populates="children", remote_side=[id])
class Cat(Base):
    __tablename__ = "cats"
    id = Column(Integer, primary_key=True)
    parent_id = Column(ForeignKey("cats.id"))
    kids = relationship("Cat", backref=backref("mom", remote_side="Cat.id"))
    mom2 = relationship("Cat", remote_side=lambda: Cat.id, viewonly=True)
    kids2 = relationship("Cat", primaryjoin="Cat.id == foreign(Cat.parent_id)", viewonly=True)
"""
CASES["joined_inh"] = """
class Employee(Base):
    __tablename__ = "employees"
    id = Column(Integer, primary_key=True)
    type = Column(String)
    manager_id = Column(ForeignKey("managers.id"))
    boss = relationship("Manager", foreign_keys=[manager_id], back_populates="reports")
    __mapper_args__ = {"polymorphic_on": type, "polymorphic_identity": "employee"}
class Manager(Employee):
    __tablename__ = "managers"
    id = Column(ForeignKey("employees.id"), primary_key=True)
    assistant_id = Column(ForeignKey("employees.id"))
    reports = relationship("Employee", foreign_keys=[Employee.manager_id], back_populates="boss")
    assistant = relationship("Employee", foreign_keys=[assistant_id])
    __mapper_args__ = {"polymorphic_identity": "manager", "inherit_condition": id == Employee.id}
"""
CASES["single_inh"] = """
class Item(Base):
    __tablename__ = "items"
    id = Column(Integer, primary_key=True)
    type = Column(String)
    owner_id = Column(ForeignKey("owners.id"))
    owner = relationship("Owner", back_populates="items")
    __mapper_args__ = {"polymorphic_on": type, "polymorphic_identity": "item"}
class Book(Item):
    __mapper_args__ = {"polymorphic_identity": "book"}
class Owner(Base):
    __tablename__ = "owners"
    id = Column(Integer, primary_key=True)
    items = relationship(Item, back_populates="owner")
    books = relationship(Book, viewonly=True)
"""
CASES["mixin"] = """
class OwnedMixin:
    owner_id = Column(ForeignKey("owners.id"))
    @declared_attr
    def owner(cls):
        return relationship("Owner")
class Owner(Base):
    __tablename__ = "owners"
    id = Column(Integer, primary_key=True)
class Doc(OwnedMixin, Base):
    __tablename__ = "docs"
    id = Column(Integer, primary_key=True)
class Pic(OwnedMixin, Base):
    __tablename__ = "pics"
    id = Column(Integer, primary_key=True)
"""
CASES["o2o_mapped"] = """
class Parent(Base):
    __tablename__ = "parents"
    id: Mapped[int] = mapped_column(primary_key=True)
    child: Mapped["Child"] = relationship(back_populates="parent")
    maybe: Mapped[Optional["Child"]] = relationship(viewonly=True)
    many: Mapped[List["Child"]] = relationship(viewonly=True)
    dyn: DynamicMapped["Child"] = relationship(viewonly=True)
    wo: WriteOnlyMapped["Child"] = relationship(viewonly=True)
class Child(Base):
    __tablename__ = "children"
    id: Mapped[int] = mapped_column(primary_key=True)
    parent_id: Mapped[int] = mapped_column(ForeignKey("parents.id"))
    parent: Mapped["Parent"] = relationship(back_populates="child")
"""
CASES["assoc"] = """
class Order(Base):
    __tablename__ = "orders"
    id = Column(Integer, primary_key=True)
    lines = relationship(
        "OrderLine", back_populates="order", cascade="all, delete-orphan", collection_class=set
    )
class Product(Base):
    __tablename__ = "products"
    id = Column(Integer, primary_key=True)
class OrderLine(Base):
    __tablename__ = "order_lines"
    order_id = Column(ForeignKey("orders.id"), primary_key=True)
    product_id = Column(ForeignKey("products.id"), primary_key=True)
    order = relationship("Order", back_populates="lines")
    product = relationship(Product, lazy="joined")
"""
CASES["composite"] = """
class A(Base):
    __tablename__ = "a"
    x = Column(Integer, primary_key=True)
    y = Column(Integer, primary_key=True)
    bs = relationship("B", back_populates="a")
class B(Base):
    __tablename__ = "b"
    id = Column(Integer, primary_key=True)
    ax = Column(Integer)
    ay = Column(Integer)
    __table_args__ = (ForeignKeyConstraint(["ax", "ay"], ["a.x", "a.y"]),)
    a = relationship("A", back_populates="bs")
"""
CASES["primaryjoin"] = """
class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    active_posts = relationship(
        "Post", primaryjoin="and_(User.id == Post.user_id, Post.active == True)", viewonly=True
    )
    latest = relationship(
        "Post",
        primaryjoin="User.id == foreign(Post.user_id)",
        uselist=False,
        viewonly=True,
        order_by="Post.id.desc()",
    )
class Post(Base):
    __tablename__ = "posts"
    id = Column(Integer, primary_key=True)
    user_id = Column(ForeignKey("users.id"))
    active = Column(Boolean)
    user = relationship("User", primaryjoin="foreign(Post.user_id) == User.id")
"""
CASES["optional"] = """
class Team(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(primary_key=True)
    heroes: Mapped[List["Hero"]] = relationship(back_populates="team", lazy="selectin")
class Hero(Base):
    __tablename__ = "heroes"
    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[Optional[int]] = mapped_column(ForeignKey("teams.id"))
    team: Mapped[Optional[Team]] = relationship(back_populates="heroes")
    mentor_id: Mapped[Optional[int]] = mapped_column(ForeignKey("heroes.id"))
    mentor: Mapped[Optional["Hero"]] = relationship(remote_side=[id])
    mentees: Mapped[List["Hero"]] = relationship(viewonly=True)
"""
CASES["dynamic"] = """
class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    posts = relationship("Post", lazy="dynamic", backref="user")
    drafts = relationship("Post", lazy="raise", viewonly=True)
class Post(Base):
    __tablename__ = "posts"
    id = Column(Integer, primary_key=True)
    user_id = Column(Integer, ForeignKey("users.id"))
"""
CASES["tablename_rule"] = """
import re
class Lowered:
    @declared_attr.directive
    def __tablename__(cls) -> str:
        return cls.__name__.lower()
class Named:
    @declared_attr
    def __tablename__(cls):
        return cls.__name__
class Snake:
    @declared_attr.directive
    def __tablename__(cls) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
class Customer(Lowered, Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    orders: Mapped[list["PurchaseOrder"]] = relationship(back_populates="customer")
class PurchaseOrder(Named, Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customer.id"))
    customer: Mapped[Customer] = relationship(back_populates="orders")
class OrderNote(Snake, Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("PurchaseOrder.id"))
    order: Mapped[PurchaseOrder] = relationship()
"""
HEAD = """
from __future__ import annotations
from typing import List, Optional
from sqlalchemy import Boolean, Column, ForeignKey, ForeignKeyConstraint, Integer, String, Table
from sqlalchemy.orm import (
    DeclarativeBase, DynamicMapped, Mapped, WriteOnlyMapped, backref, declared_attr,
    mapped_column, relationship,
)
class Base(DeclarativeBase):
    pass
"""


# Relationships whose shape the index must know, not only not contradict.
KNOWN = {
    "basic": {"User.posts", "User.profile", "Post.author", "Profile.user"},
    "untyped": {"User.posts", "Post.author", "User.settings", "Setting.owner"},
    "m2m": {"Post.tags", "Tag.posts"},
    "two_fks": {"Message.sender", "Message.recipient", "User.sent", "User.received"},
    "selfref": {"Node.children", "Node.parent", "Cat.kids", "Cat.mom"},
    "assoc": {"Order.lines", "OrderLine.order", "OrderLine.product"},
    "optional": {"Team.heroes", "Hero.team", "Hero.mentor", "Hero.mentees"},
    "dynamic": {"User.posts", "Post.user"},
    "tablename_rule": {"Customer.orders", "PurchaseOrder.customer", "OrderNote.order"},
}
# Models whose table name the index must know.
KNOWN_TABLES = {"tablename_rule": {"Customer", "PurchaseOrder"}}


def _index(tmp_path: Path, source: str) -> ProjectIndex:
    (tmp_path / "app").mkdir()
    (tmp_path / "app/__init__.py").write_text("")
    (tmp_path / "app/models.py").write_text(source)
    facts = []
    for path in sorted(tmp_path.rglob("*.py")):
        module, is_package = module_for(path)
        tree = ast.parse(path.read_text())
        facts.append(FileFacts.extract(display_path(path, tmp_path), module, is_package, tree))
    return ProjectIndex.build(facts)


def _mapped(name: str, source: str) -> Any:
    module = types.ModuleType(f"sqla_doctor_mapper_case_{name}")
    # SQLAlchemy resolves string annotations in the module's namespace.
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, f"{name}.py", "exec"), module.__dict__)
        module.Base.registry.configure()
    finally:
        del sys.modules[module.__name__]
    return module.Base.registry


@pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_index_never_contradicts_the_mappers(tmp_path: Path, name: str) -> None:
    source = HEAD + textwrap.dedent(CASES[name])
    index = _index(tmp_path, source)
    known = set()
    tables = set()
    for mapper in _mapped(name, source).mappers:
        model = index.model(f"app.models.{mapper.class_.__name__}")
        assert model is not None, mapper.class_.__name__
        if model.table is not None:
            assert model.table == mapper.local_table.name, mapper.class_.__name__
            tables.add(mapper.class_.__name__)
        for prop in mapper.relationships:
            where = f"{mapper.class_.__name__}.{prop.key}"
            rel = index.relationship(f"app.models.{mapper.class_.__name__}", prop.key)
            assert rel is not None, where
            direction = prop.direction.name.lower().replace("to", "-to-")
            if rel.collection is not None:
                assert rel.collection == prop.uselist, where
            if rel.direction is not None:
                one_to_one = rel.direction == "one-to-one" and not prop.uselist
                assert rel.direction == direction or one_to_one, where
            if rel.collection is not None and rel.direction is not None:
                known.add(where)
    assert KNOWN.get(name, set()) <= known
    assert KNOWN_TABLES.get(name, set()) <= tables
