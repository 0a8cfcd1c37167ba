"""SQD503: `back_populates`/`backref` that does not name the other side correctly."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid
from sqla_doctor.static.rules.mapping._relationships import declared_relationships

_FILES = {
    "app/__init__.py": "",
    "app/db.py": """
    from sqlalchemy.orm import DeclarativeBase

    class Base(DeclarativeBase):
        pass
    """,
    "app/users.py": """
    from sqlalchemy.orm import Mapped, mapped_column, relationship
    from app.db import Base

    class User(Base):
        __tablename__ = "users"
        id: Mapped[int] = mapped_column(primary_key=True)
        email: Mapped[str]
        posts: Mapped[list["Post"]] = relationship(back_populates="author")
    """,
}


class BackPopulatesMismatch(Rule):
    """
    ## What it does
    Checks for `relationship(back_populates="x")` where the target class has no
    attribute `x`, where `x` is a column rather than a relationship, where `x` points at
    another class, or where `x` names a different relationship as its own
    `back_populates`; and for `backref="x"` when the target already defines `x`. The
    target is resolved across modules, through mixins and parents.

    ## Why is this bad?
    The mapper configuration fails on first use: `InvalidRequestError: Mapper
    'Mapper[Post(posts)]' has no property 'writer'`, `back_populates on relationship
    'User.posts' refers to attribute 'Post.author_id' that is not a relationship`,
    `ArgumentError: Error creating backref 'posts' on relationship 'User.posts':
    property of that name exists on mapper 'Post'`. A pair naming different partners
    keeps the two sides of the association out of sync in memory.

    ## Example
    ```python
    class User(Base):
        posts: Mapped[list["Post"]] = relationship(back_populates="writer")

    class Post(Base):
        author: Mapped[User] = relationship(back_populates="posts")
    ```

    Use instead:
    ```python
    class User(Base):
        posts: Mapped[list["Post"]] = relationship(back_populates="author")

    class Post(Base):
        author: Mapped[User] = relationship(back_populates="posts")
    ```

    ## References
    - [Using back_populates](https://docs.sqlalchemy.org/en/20/orm/basic_relationships.html)
    - [Using the legacy backref parameter](https://docs.sqlalchemy.org/en/20/orm/backref.html)
    """

    code = "SQD503"
    name = "back-populates-mismatch"
    pitfalls = ("P31",)
    severity = Severity.ERROR
    message = "{problem}"

    VALID = (
        Valid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import Mapped, mapped_column, relationship
            from app.db import Base

            class Post(Base):
                __tablename__ = "posts"
                id: Mapped[int] = mapped_column(primary_key=True)
                author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
                author: Mapped["User"] = relationship(back_populates="posts")
            """,
            path="app/posts.py",
            files=_FILES,
        ),
        # A backref creating an attribute the target lacks; a one-sided back_populates.
        Valid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import Mapped, mapped_column, relationship
            from app.db import Base

            class Comment(Base):
                __tablename__ = "comments"
                id: Mapped[int] = mapped_column(primary_key=True)
                user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
                user = relationship("User", backref="comments")
            """,
            path="app/comments.py",
            files=_FILES,
        ),
        # The target's attributes are not all known (an unknown base): stay silent.
        Valid(
            """
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
            from somewhere import AuditMixin

            class Base(DeclarativeBase):
                pass

            class Account(Base):
                __tablename__ = "accounts"
                id: Mapped[int] = mapped_column(primary_key=True)
                entries: Mapped[list["Entry"]] = relationship(back_populates="account")

            class Entry(AuditMixin, Base):
                __tablename__ = "entries"
                id: Mapped[int] = mapped_column(primary_key=True)
            """
        ),
        # The partner is declared on a mixin and on a parent class.
        Valid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class Owned:
                owner_id: Mapped[int] = mapped_column(ForeignKey("owners.id"))
                owner: Mapped["Owner"] = relationship(back_populates="things")

            class Owner(Base):
                __tablename__ = "owners"
                id: Mapped[int] = mapped_column(primary_key=True)
                things: Mapped[list["Thing"]] = relationship(back_populates="owner")

            class Thing(Owned, Base):
                __tablename__ = "things"
                id: Mapped[int] = mapped_column(primary_key=True)
            """
        ),
        # A relationship to a subclass whose partner points at the parent class.
        Valid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class Party(Base):
                __tablename__ = "parties"
                id: Mapped[int] = mapped_column(primary_key=True)
                kind: Mapped[str]
                notes: Mapped[list["Note"]] = relationship(back_populates="party")
                __mapper_args__ = {"polymorphic_on": "kind"}

            class Person(Party):
                __mapper_args__ = {"polymorphic_identity": "person"}

            class Note(Base):
                __tablename__ = "notes"
                id: Mapped[int] = mapped_column(primary_key=True)
                party_id: Mapped[int] = mapped_column(ForeignKey("parties.id"))
                party: Mapped[Person] = relationship(back_populates="notes")
            """
        ),
        # The other side assigned to the class after its body, to name a class below it.
        Valid(
            """
            from sqlalchemy import Column, ForeignKey, Integer
            from sqlalchemy.orm import declarative_base, relationship

            Base = declarative_base()

            class Card(Base):
                __tablename__ = "cards"
                id = Column(Integer, primary_key=True)

            class Article(Base):
                __tablename__ = "articles"
                id = Column(Integer, primary_key=True)
                card_id = Column(Integer, ForeignKey("cards.id"))
                card = relationship("Card", back_populates="articles")

            Card.articles = relationship("Article", order_by=Article.id, back_populates="card")
            """
        ),
    )
    INVALID = (
        # The same, the class body naming a partner the late side is not.
        Invalid(
            """
            from sqlalchemy import Column, ForeignKey, Integer
            from sqlalchemy.orm import declarative_base, relationship

            Base = declarative_base()

            class Card(Base):
                __tablename__ = "cards"
                id = Column(Integer, primary_key=True)

            class Article(Base):
                __tablename__ = "articles"
                id = Column(Integer, primary_key=True)
                card_id = Column(Integer, ForeignKey("cards.id"))
                card = relationship("Card", back_populates="posts")

            Card.articles = relationship("Article", back_populates="card")
            """,
            line=14,
            expected_message=(
                '`Article.card` has `back_populates="posts"` but `Card` (example.py:6) has no '
                "attribute `posts` — name the relationship on `Card` that points back here "
                "(`articles`?)"
            ),
        ),
        # The partner names an attribute that does not exist (in another module).
        Invalid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import Mapped, mapped_column, relationship
            from app.db import Base

            class Post(Base):
                __tablename__ = "posts"
                id: Mapped[int] = mapped_column(primary_key=True)
                author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
                author: Mapped["User"] = relationship(back_populates="articles")
            """,
            path="app/posts.py",
            files=_FILES,
            line=9,
            expected_message=(
                '`Post.author` has `back_populates="articles"` but `User` (app/users.py:4) has '
                "no attribute `articles` — name the relationship on `User` that points back "
                "here (`posts`?)"
            ),
        ),
        # It names a column.
        Invalid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import Mapped, mapped_column, relationship
            from app.db import Base

            class Post(Base):
                __tablename__ = "posts"
                id: Mapped[int] = mapped_column(primary_key=True)
                author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
                author: Mapped["User"] = relationship(back_populates="email")
            """,
            path="app/posts.py",
            files=_FILES,
            line=9,
        ),
        # The two sides name different partners.
        Invalid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(primary_key=True)
                posts: Mapped[list["Post"]] = relationship(back_populates="writer")

            class Post(Base):
                __tablename__ = "posts"
                id: Mapped[int] = mapped_column(primary_key=True)
                author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
                author: Mapped[User] = relationship(back_populates="posts")
            """,
            count=1,
            line=10,
        ),
        # Two relationships claim the same partner.
        Invalid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class User(Base):
                __tablename__ = "users"
                id: Mapped[int] = mapped_column(primary_key=True)
                posts: Mapped[list["Post"]] = relationship(back_populates="author")
                drafts: Mapped[list["Post"]] = relationship(back_populates="author", viewonly=True)

            class Post(Base):
                __tablename__ = "posts"
                id: Mapped[int] = mapped_column(primary_key=True)
                author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
                author: Mapped[User] = relationship(back_populates="posts")
            """,
            count=1,
            line=11,
            expected_message=(
                "`User.drafts` and `Post.author` disagree: `Post.author` names `posts` as its "
                "partner, not `drafts` — make each side's `back_populates` name the other"
            ),
        ),
        # It names a relationship to another class.
        Invalid(
            """
            from sqlalchemy import ForeignKey
            from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

            class Base(DeclarativeBase):
                pass

            class Team(Base):
                __tablename__ = "teams"
                id: Mapped[int] = mapped_column(primary_key=True)
                members: Mapped[list["Player"]] = relationship(back_populates="club")

            class Club(Base):
                __tablename__ = "clubs"
                id: Mapped[int] = mapped_column(primary_key=True)

            class Player(Base):
                __tablename__ = "players"
                id: Mapped[int] = mapped_column(primary_key=True)
                team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
                club_id: Mapped[int] = mapped_column(ForeignKey("clubs.id"))
                club: Mapped[Club] = relationship()
            """,
            line=10,
        ),
        # A backref whose name the target already uses.
        Invalid(
            """
            from sqlalchemy import Column, ForeignKey, Integer, String
            from sqlalchemy.orm import declarative_base, relationship

            Base = declarative_base()

            class Customer(Base):
                __tablename__ = "customers"
                id = Column(Integer, primary_key=True)
                orders = relationship("Order", backref="customer")

            class Order(Base):
                __tablename__ = "orders"
                id = Column(Integer, primary_key=True)
                customer_id = Column(Integer, ForeignKey("customers.id"))
                customer = Column(String)
            """,
            line=9,
        ),
    )

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        index = self.ctx.index
        for model, facts, call in declared_relationships(self.ctx, node):
            if facts.incomplete:
                continue
            rel = index.relationship(model, facts.attr)
            if rel is None or rel.target is None:
                continue
            target = index.model(rel.target)
            if target is None or not target.complete:
                continue
            here = f"{model.name}.{facts.attr}"
            where = f"`{target.name}` ({target.path}:{target.facts.line})"
            if facts.back_populates:
                problem = self._back_populates(
                    model, target, facts.attr, facts.back_populates, here, where
                )
                if problem is not None:
                    self.report(call, problem=problem)
            elif facts.backref and facts.backref in target.members:
                self.report(
                    call,
                    problem=(
                        f'`{here}` has `backref="{facts.backref}"` but {where} already defines '
                        f"`{facts.backref}` (ArgumentError when mappers configure) — rename one, "
                        "or declare both sides with `back_populates`"
                    ),
                )

    def _back_populates(
        self, model: object, target: object, attr: str, name: str, here: str, where: str
    ) -> str | None:
        from sqla_doctor.static.index import Model

        assert isinstance(model, Model)
        assert isinstance(target, Model)
        index = self.ctx.index
        partner = index.relationship(target, name)
        if partner is None:
            if name in target.members:
                return (
                    f'`{here}` has `back_populates="{name}"` but `{target.name}.{name}` is not a '
                    "relationship (InvalidRequestError when mappers configure)"
                )
            candidates = [
                r.attr
                for r in index.relationships(target)
                if r.target is not None and r.target in model.lineage
            ]
            guess = f" (`{candidates[0]}`?)" if len(candidates) == 1 else ""
            return (
                f'`{here}` has `back_populates="{name}"` but {where} has no attribute '
                f"`{name}` — name the relationship on `{target.name}` that points back here{guess}"
            )
        if partner.target is None:
            return None
        partner_target = index.model(partner.target)
        if partner_target is None:
            return None
        related = (
            partner_target.qualname in model.lineage or model.qualname in partner_target.lineage
        )
        if not related:
            return (
                f'`{here}` has `back_populates="{name}"` but `{target.name}.{name}` points at '
                f"`{partner_target.name}`, not `{model.name}` (ArgumentError when mappers "
                "configure)"
            )
        back = partner.facts.back_populates if partner.facts is not None else None
        # A partner naming a missing attribute is reported on its own line; here only a
        # partner that pairs with another existing relationship of this class.
        if back is not None and back != attr and index.relationship(model, back) is not None:
            return (
                f"`{here}` and `{target.name}.{name}` disagree: `{target.name}.{name}` names "
                f"`{back}` as its partner, not `{attr}` — make each side's `back_populates` name "
                "the other"
            )
        return None
