"""SQD502: a relationship whose tables share no (or more than one) foreign key path."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid
from sqla_doctor.static.rules.mapping._relationships import declared_relationships

# Tables named by a mixin's `declared_attr` from the class name: "warehouses", "managers".
_NAMED_BY_MIXIN = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class TableNameMixin:
    @declared_attr.directive
    def __tablename__(cls) -> str:
        return cls.__name__.lower() + "s"

class Warehouse(TableNameMixin, Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    manager: Mapped["Manager"] = relationship(back_populates="warehouse")

class Manager(TableNameMixin, Base):
    id: Mapped[int] = mapped_column(primary_key=True)
    {column}
    warehouse: Mapped[Warehouse] = relationship(back_populates="manager")
"""


class RelationshipWithoutForeignKey(Rule):
    """
    ## What it does
    Checks for a `relationship()` between two mapped classes whose tables have no
    foreign key linking them, or more than one, when the relationship names neither
    `primaryjoin`, `foreign_keys` nor `secondary`. A composite `ForeignKeyConstraint`
    counts once, as SQLAlchemy joins on all its columns. Foreign keys are read from both
    models, their mixins and mapped parents, `__table_args__` and SQLModel's
    `foreign_key=`, across modules.

    ## Why is this bad?
    SQLAlchemy derives the join from the foreign keys. Without one, the first query (or
    `configure_mappers()`) fails with `NoForeignKeysError: Could not determine join
    condition between parent/child tables on relationship User.posts`; with two, with
    `AmbiguousForeignKeysError`. Because mappers configure lazily, this can surface in
    production on the first request that touches either class.

    ## Known problems
    Tables reflected from the database, columns added by `declared_attr` functions we
    cannot read, and dynamic `__table_args__` make the check stay silent.

    ## Example
    ```python
    class Post(Base):
        __tablename__ = "posts"
        id: Mapped[int] = mapped_column(primary_key=True)
        author_id: Mapped[int]
        author: Mapped["User"] = relationship()
    ```

    Use instead:
    ```python
    class Post(Base):
        __tablename__ = "posts"
        id: Mapped[int] = mapped_column(primary_key=True)
        author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
        author: Mapped["User"] = relationship()
    ```

    ## References
    - [Configuring how Relationship Joins](https://docs.sqlalchemy.org/en/20/orm/join_conditions.html)
    - [Handling Multiple Join Paths](https://docs.sqlalchemy.org/en/20/orm/join_conditions.html#handling-multiple-join-paths)
    """

    code = "SQD502"
    name = "relationship-without-foreign-key"
    pitfalls = ("P31",)
    severity = Severity.ERROR
    message = "{problem}"

    VALID = (
        # The foreign key comes from an `Annotated` alias, also under `Optional[...]`.
        Valid(
            "from typing import Annotated, Optional\n"
            + _NAMED_BY_MIXIN.format(
                column="warehouse_id: Mapped[Optional[fk_warehouse]]"
            ).replace(
                "class Base(",
                'fk_warehouse = Annotated[int, mapped_column(ForeignKey("warehouses.id"))]\n\n'
                "class Base(",
            )
        ),
        Valid(
            _NAMED_BY_MIXIN.format(
                column='warehouse_id: Mapped[int] = mapped_column(ForeignKey("warehouses.id"))'
            )
        ),
        # Columns made by the project's helpers: whatever they return may hold the key.
        Valid(
            """
            from app.db import db, fk_column, primary_key

            class Org(db.Model):
                __tablename__ = "orgs"
                id = primary_key()

            class Team(db.Model):
                __tablename__ = "teams"
                id = primary_key()
                org_id = fk_column("orgs.id")
                org = db.relationship(Org)
            """,
            path="app/models.py",
            files={
                "app/__init__.py": "",
                "app/db.py": """
                from flask_sqlalchemy import SQLAlchemy
                db = SQLAlchemy()
                def primary_key():
                    return db.Column(db.Integer, primary_key=True)
                def fk_column(target):
                    return db.Column(db.Integer, db.ForeignKey(target))
                """,
            },
        ),
        Valid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(primary_key=True)
                posts: Mapped[list["Post"]] = relationship(back_populates="author")
                manager_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
                reports: Mapped[list["User"]] = relationship()

            class Post(Base):
                __tablename__ = "posts"
                id: Mapped[int] = mapped_column(primary_key=True)
                author_id: Mapped[int] = mapped_column(ForeignKey(User.id))
                author: Mapped[User] = relationship(back_populates="posts")
            """
        ),
        # Two paths, disambiguated by foreign_keys=; a many-to-many through `secondary`.
        Valid(
            """
            from sqlalchemy import Column, ForeignKey, Integer, Table
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            tags = Table("post_tags", Base.metadata, Column("post_id", ForeignKey("orders.id")))

            class Address(Base):
                __tablename__ = "addresses"
                id: Mapped[int] = mapped_column(primary_key=True)

            class Order(Base):
                __tablename__ = "orders"
                id: Mapped[int] = mapped_column(primary_key=True)
                billing_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"))
                shipping_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"))
                billing: Mapped[Address] = relationship(foreign_keys=[billing_id])
                labels = relationship("Address", secondary=tags)
            """
        ),
        # One composite foreign key is one join path, whatever the order of its columns.
        Valid(
            """
            from sqlalchemy import ForeignKeyConstraint
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class Review(Base):
                __tablename__ = "reviews"
                user_id: Mapped[int] = mapped_column(primary_key=True)
                movie_id: Mapped[int] = mapped_column(primary_key=True)
                complaints: Mapped[list["Complaint"]] = relationship(back_populates="review")

            class Complaint(Base):
                __tablename__ = "complaints"
                id: Mapped[int] = mapped_column(primary_key=True)
                review_movie_id: Mapped[int]
                review_user_id: Mapped[int]
                review: Mapped[Review] = relationship(back_populates="complaints")
                __table_args__ = (
                    ForeignKeyConstraint(
                        ["review_user_id", "review_movie_id"],
                        ["reviews.user_id", "reviews.movie_id"],
                    ),
                )
            """
        ),
        # The foreign key lives in a mixin in another module.
        Valid(
            """
            from sqlalchemy.orm import Mapped, mapped_column, relationship
            from app.base import Base, OwnedMixin

            class Invoice(OwnedMixin, Base):
                __tablename__ = "invoices"
                id: Mapped[int] = mapped_column(primary_key=True)
                owner: Mapped["app.base.Account"] = relationship()
            """,
            path="app/invoices.py",
            files={
                "app/__init__.py": "",
                "app/base.py": """
                from sqlalchemy import ForeignKey
                from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

                class Base(DeclarativeBase):
                    pass

                class Account(Base):
                    __tablename__ = "accounts"
                    id: Mapped[int] = mapped_column(primary_key=True)

                class OwnedMixin:
                    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
                """,
            },
        ),
        # A reflected table and an unknown base: the columns are not knowable.
        Valid(
            """
            from sqlalchemy import Table
            from sqlalchemy.orm import DeclarativeBase, relationship
            from third_party import TimestampedBase

            class Base(DeclarativeBase):
                pass

            class Legacy(Base):
                __table__ = Table("legacy", Base.metadata, autoload_with=None)
                items = relationship("Item")

            class Item(TimestampedBase, Base):
                __tablename__ = "items"
            """
        ),
        # An explicit primaryjoin needs no foreign key.
        Valid(
            """
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, foreign

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(primary_key=True)
                email: Mapped[str]
                events: Mapped[list["Event"]] = relationship(
                    primaryjoin="User.email == foreign(Event.email)", viewonly=True
                )

            class Event(Base):
                __tablename__ = "events"
                id: Mapped[int] = mapped_column(primary_key=True)
                email: Mapped[str]
            """
        ),
        # SQLModel: many-to-many through a link model's table.
        Valid(
            """
            from sqlmodel import Field, Relationship, SQLModel

            class Membership(SQLModel, table=True):
                project_id: int = Field(foreign_key="project.id", primary_key=True)
                member_id: int = Field(foreign_key="member.id", primary_key=True)

            class Project(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                members: list["Member"] = Relationship(
                    back_populates="projects", link_model=Membership
                )

            class Member(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                projects: list[Project] = Relationship(
                    back_populates="members", link_model=Membership
                )
            """
        ),
    )
    INVALID = (
        Invalid(
            _NAMED_BY_MIXIN.format(column='name: Mapped[str] = mapped_column(default="")'),
            line=14,
            expected_message=(
                "`Warehouse.manager` has no foreign key to join on: no column of `managers` "
                'or `warehouses` references the other — add `mapped_column(ForeignKey("'
                'managers.id"))` to `Warehouse` (NoForeignKeysError when mappers configure)'
            ),
        ),
        Invalid(
            """
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(primary_key=True)
                posts: Mapped[list["Post"]] = relationship()

            class Post(Base):
                __tablename__ = "posts"
                id: Mapped[int] = mapped_column(primary_key=True)
                user_id: Mapped[int]
            """,
            line=9,
            expected_message=(
                "`User.posts` has no foreign key to join on: no column of `posts` or `users` "
                'references the other — add `mapped_column(ForeignKey("users.id"))` to '
                "`Post` (NoForeignKeysError when mappers configure)"
            ),
        ),
        # Two foreign keys to the same table, no foreign_keys=.
        Invalid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class Address(Base):
                __tablename__ = "addresses"
                id: Mapped[int] = mapped_column(primary_key=True)

            class Order(Base):
                __tablename__ = "orders"
                id: Mapped[int] = mapped_column(primary_key=True)
                billing_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"))
                shipping_id: Mapped[int] = mapped_column(ForeignKey("addresses.id"))
                billing: Mapped[Address] = relationship()
            """,
            line=16,
            expected_message=(
                "`Order.billing` can join `orders` and `addresses` on `billing_id` or "
                "`shipping_id` — pass `foreign_keys=[billing_id]` (or the right column) "
                "(AmbiguousForeignKeysError when mappers configure)"
            ),
        ),
        # Across modules: the target is a string, the missing key is on the other side.
        Invalid(
            """
            from sqlalchemy.orm import Mapped, mapped_column, relationship
            from app.db import Base

            class Author(Base):
                __tablename__ = "authors"
                id: Mapped[int] = mapped_column(primary_key=True)
                books: Mapped[list["Book"]] = relationship(back_populates="author")
            """,
            path="app/authors.py",
            files={
                "app/__init__.py": "",
                "app/db.py": """
                from sqlalchemy.orm import declarative_base
                Base = declarative_base()
                """,
                "app/books.py": """
                from sqlalchemy import Column, Integer
                from sqlalchemy.orm import relationship
                from app.db import Base

                class Book(Base):
                    __tablename__ = "books"
                    id = Column(Integer, primary_key=True)
                    author_id = Column(Integer)
                    author = relationship("Author", back_populates="books")
                """,
            },
            line=7,
        ),
        # Flask-SQLAlchemy, names derived from the class: `user_account`.
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy

            db = SQLAlchemy()

            class UserAccount(db.Model):
                id = db.Column(db.Integer, primary_key=True)
                sessions = db.relationship("LoginSession", backref="account")

            class LoginSession(db.Model):
                id = db.Column(db.Integer, primary_key=True)
                account_id = db.Column(db.Integer, db.ForeignKey("user.id"))
            """,
            line=7,
        ),
        # SQLModel: a Relationship() with no `foreign_key=` field on either side.
        Invalid(
            """
            from sqlmodel import Field, Relationship, SQLModel

            class Team(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                heroes: list["Hero"] = Relationship(back_populates="team")

            class Hero(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                team_id: int | None = None
                team: Team | None = Relationship(back_populates="heroes")
            """,
            count=2,
        ),
    )

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        index = self.ctx.index
        for model, facts, call in declared_relationships(self.ctx, node):
            if facts.explicit_join or facts.secondary is not None or facts.incomplete:
                continue
            rel = index.relationship(model, facts.attr)
            if rel is None or rel.target is None:
                continue
            target = index.model(rel.target)
            if target is None or not model.table or not target.table:
                continue
            if not index.foreign_keys_known(model) or not index.foreign_keys_known(target):
                continue
            if model.qualname != target.qualname and (
                model.qualname in target.lineage or target.qualname in model.lineage
            ):
                continue  # inheritance: the parent's key joins them
            local = index.foreign_key_paths(model, target)
            remote = (
                index.foreign_key_paths(target, model)
                if target.qualname != model.qualname
                else set()
            )
            # One path per constraint: a composite foreign key joins on all its columns.
            paths = {", ".join(path) for path in local} | {
                ", ".join(f"{target.name}.{c}" for c in path) for path in remote
            }
            rel_name = f"{model.name}.{facts.attr}"
            if not paths:
                self.report(call, problem=self._missing(rel_name, model, target, rel.collection))
            elif len(paths) > 1:
                names = sorted(paths)
                columns = " or ".join(f"`{n}`" for n in names)
                self.report(
                    call,
                    problem=(
                        f"`{rel_name}` can join `{model.table}` and `{target.table}` on "
                        f"{columns} — pass `foreign_keys=[{names[0]}]` (or the right column) "
                        "(AmbiguousForeignKeysError when mappers configure)"
                    ),
                )

    @staticmethod
    def _missing(rel_name: str, model: object, target: object, collection: bool | None) -> str:
        from sqla_doctor.static.index import Model

        assert isinstance(model, Model)
        assert isinstance(target, Model)
        # A collection is keyed on the other side; a scalar on this one.
        holder, referenced = (target, model) if collection is not False else (model, target)
        pk = next(iter(referenced.primary_keys()), None)
        column = f"{referenced.table}.{pk.name if pk is not None else 'id'}"
        if holder.flavor == "sqlmodel":
            declaration = f'Field(foreign_key="{column}")'
        elif holder.flavor == "flask":
            declaration = f'db.Column(db.ForeignKey("{column}"))'
        else:
            declaration = f'mapped_column(ForeignKey("{column}"))'
        return (
            f"`{rel_name}` has no foreign key to join on: no column of `{target.table}` or "
            f"`{model.table}` references the other — add `{declaration}` to `{holder.name}` "
            "(NoForeignKeysError when mappers configure)"
        )
