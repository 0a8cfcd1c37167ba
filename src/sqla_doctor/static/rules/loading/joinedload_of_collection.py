"""SQD203: a collection joined-eager-loaded without `.unique()`, or several at once."""

from __future__ import annotations

import ast
from dataclasses import dataclass

from sqla_doctor.findings import Applicability, Edit, Fix, Severity
from sqla_doctor.static.flow import FunctionFlow, ObjectsValue, StatementValue, flow_for
from sqla_doctor.static.index import ProjectIndex
from sqla_doctor.static.loaders import Options
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to

# Result methods that fetch rows: with a joined collection they raise unless uniqued
# (`first()` and `scalar()` stop after one row and do not).
_FETCHING = frozenset(
    {
        "all",
        "fetchall",
        "fetchmany",
        "one",
        "one_or_none",
        "scalar_one",
        "scalar_one_or_none",
        "partitions",
    }
)
_MAX_DEPTH = 3

_MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    posts: Mapped[list["Post"]] = relationship(back_populates="author")
    comments: Mapped[list["Comment"]] = relationship(back_populates="user")

class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")
    attachments: Mapped[list["Attachment"]] = relationship(lazy="joined")

class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
    user: Mapped[User] = relationship(back_populates="comments")
    post: Mapped[Post] = relationship()

class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id"))
"""
_FILES = {"app/__init__.py": "", "app/models.py": _MODELS}


@dataclass(frozen=True)
class JoinedCollection:
    path: tuple[tuple[str, str], ...]
    rel_name: str
    by_option: bool  # named by the statement's options (else the mapping's lazy="joined")
    where: str  # "`joinedload(User.posts)`" or "`lazy=\"joined\"` at app/models.py:12"


def joined_collections(
    index: ProjectIndex,
    model: str,
    options: Options,
    path: tuple[tuple[str, str], ...] = (),
    alias: str | None = None,
) -> list[JoinedCollection] | None:
    """Collections a statement on ``model`` loads by JOIN in its own rows (options and
    mapping-level ``lazy="joined"``); None when the options cannot be read. A collection
    of the statement's entity is named through ``alias``, the ``aliased()`` entity the
    statement selects, as its option must be written (``joinedload(ua.posts)``)."""
    if options.opaque:
        return None
    found: list[JoinedCollection] = []
    owner = index.model(model)
    if owner is None or len(path) >= _MAX_DEPTH:
        return found
    for rel in index.relationships(owner):
        step = (*path, (owner.qualname, rel.attr))
        strategy = options.strategy_for(step)
        by_option = strategy is not None
        effective = strategy if strategy is not None else rel.lazy
        if effective not in ("joined", "contains_eager") or rel.target is None:
            continue
        if rel.collection:
            rel_name = f"{alias}.{rel.attr}" if alias and not path else rel.name
            if by_option:
                where = (
                    f"`{'joinedload' if effective == 'joined' else 'contains_eager'}({rel_name})`"
                )
            else:
                where = f'`lazy="joined"` at {rel.path}:{rel.line}'
            found.append(JoinedCollection(step, rel_name, by_option, where))
        deeper = joined_collections(index, rel.target, options, step)
        if deeper is None:
            return None
        found.extend(deeper)
    return found


def _root_alias(stmt: StatementValue) -> str | None:
    """The ``aliased()`` entity a statement selects first (``ua`` of ``select(ua)``)."""
    return stmt.aliases[0] if stmt.aliases else None


class JoinedloadOfCollection(Rule):
    """
    ## What it does
    Checks for a collection loaded by JOIN (`joinedload()`, `contains_eager()`, or
    `lazy="joined"` on the relationship) in a 2.0-style statement whose result is read
    without `.unique()`; and for a statement that joins two or more collections side by
    side, however its rows are read (`.first()` too: the ORM reads every row of the
    object it returns).

    ## Why is this bad?
    A joined collection repeats the parent row once per child. SQLAlchemy 2.0 refuses to
    guess: `.all()`, `.one()` or iterating such a result raises `InvalidRequestError: The
    unique() method must be invoked on this Result, as it contains results that include
    joined eager loads against collections`. Joining two collections at once returns
    the product of their sizes (a user with 50 posts and 40 comments is 2,000 rows).

    ## Known problems
    The legacy `Query` API de-duplicates by itself, so only the row explosion is
    reported there.

    ## Example
    ```python
    users = session.scalars(select(User).options(joinedload(User.posts))).all()
    ```

    Use instead:
    ```python
    users = session.scalars(select(User).options(joinedload(User.posts))).unique().all()
    # or, usually better for collections:
    users = session.scalars(select(User).options(selectinload(User.posts))).all()
    ```

    ## Fix safety
    Safe: `.unique()` is what SQLAlchemy requires before it returns these rows at all,
    so adding it only turns an exception into the intended result.

    ## References
    - [Joined eager loading and unique()](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#joined-eager-loading)
    - [The Zen of Joined Eager Loading](https://docs.sqlalchemy.org/en/20/orm/queryguide/relationships.html#the-zen-of-joined-eager-loading)
    """

    code = "SQD203"
    name = "joinedload-of-collection"
    pitfalls = ("P29",)
    severity = Severity.ERROR
    fix = Applicability.SAFE
    message = "{problem}"

    VALID = (
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload, selectinload
            from app.models import Comment, Post, User

            def load(session):
                a = session.scalars(select(User).options(joinedload(User.posts))).unique().all()
                stmt = select(User).options(joinedload(User.posts))
                b = session.execute(stmt).unique().scalars().all()
                c = session.scalars(select(Comment).options(joinedload(Comment.user))).all()
                d = session.scalars(select(Post).options(selectinload(Post.attachments))).all()
                return a, b, c, d
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # first()/scalar() stop after one row; get() and the legacy Query de-duplicate.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload
            from app.models import User

            def load(session, user_id):
                first = session.scalars(select(User).options(joinedload(User.posts))).first()
                one = session.get(User, user_id, options=[joinedload(User.posts)])
                legacy = session.query(User).options(joinedload(User.posts)).all()
                return first, one, legacy
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # A result uniqued after being stored in a variable.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload
            from app.models import User

            async def load(session):
                result = await session.execute(select(User).options(joinedload(User.posts)))
                return result.unique().scalars().all()
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Options that cannot be read, and a mapping-level joined collection overridden.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import lazyload
            from app.models import Post

            def load(session, opts):
                a = session.scalars(select(Post).options(*opts)).all()
                b = session.scalars(select(Post).options(lazyload(Post.attachments))).all()
                return a, b
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # first() of one joined collection, the other loaded by a second SELECT.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload, selectinload
            from app.models import User

            def load(session, user_id):
                stmt = (
                    select(User)
                    .options(joinedload(User.posts), selectinload(User.comments))
                    .where(User.id == user_id)
                )
                return session.scalars(stmt).unique().first()
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Nested, not side by side: posts, then each post's author (a scalar).
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload
            from app.models import Post, User

            def load(session):
                stmt = select(User).options(joinedload(User.posts).joinedload(Post.author))
                return session.scalars(stmt).unique().all()
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # One collection joined, the other loaded by a second SELECT, in a loop.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload, selectinload
            from app.models import User

            def export(session):
                stmt = select(User).options(joinedload(User.posts), selectinload(User.comments))
                for user in session.scalars(stmt).unique():
                    print(user.id, len(user.posts), len(user.comments))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # The aliased() entity's joined collection, uniqued.
        Valid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import aliased, joinedload
            from app.models import User

            def load(session):
                author = aliased(User)
                stmt = select(author).options(joinedload(author.posts))
                return session.scalars(stmt).unique().all()
            """,
            path="app/views.py",
            files=_FILES,
        ),
    )
    INVALID = (
        # Two collections side by side, read by a loop with no fetching call.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload
            from app.models import User

            def export(session):
                stmt = select(User).options(joinedload(User.posts), joinedload(User.comments))
                for user in session.scalars(stmt).unique():
                    print(user.id, len(user.posts), len(user.comments))
            """,
            path="app/views.py",
            files=_FILES,
            line=7,
        ),
        # Fetched with `.all()` and then looped over: reported once, at the fetch.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload
            from app.models import User

            def export(session):
                stmt = select(User).options(joinedload(User.posts), joinedload(User.comments))
                users = session.scalars(stmt).unique().all()
                return [(u.id, len(u.posts)) for u in users]
            """,
            path="app/views.py",
            files=_FILES,
            line=7,
            count=1,
        ),
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import Session, joinedload
            from app.models import User

            def load(session: Session):
                return session.scalars(select(User).options(joinedload(User.posts))).all()
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`User.posts` is a collection joined-eager-loaded by `joinedload(User.posts)`: "
                "`.all()` raises InvalidRequestError unless the result is de-duplicated — "
                "call `.unique()` first (or use `selectinload()`)"
            ),
            expected_fix="""
            from sqlalchemy import select
            from sqlalchemy.orm import Session, joinedload
            from app.models import User

            def load(session: Session):
                return session.scalars(select(User).options(joinedload(User.posts))).unique().all()
            """,
        ),
        # The mapping's lazy="joined" makes every plain select of User need unique().
        Invalid(
            """
            import sqlalchemy as sa
            from app.models import Post

            async def load(session):
                result = await session.execute(sa.select(Post).where(Post.id > 3))
                for post in result.scalars():
                    print(post.id)
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
            expected_fix="""
            import sqlalchemy as sa
            from app.models import Post

            async def load(session):
                result = await session.execute(sa.select(Post).where(Post.id > 3))
                for post in result.scalars().unique():
                    print(post.id)
            """,
        ),
        # A joined many-to-one whose target joins a collection by its mapping.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload
            from app.models import Comment

            def load(session):
                stmt = select(Comment).options(joinedload(Comment.post))
                return session.execute(stmt).scalars().one_or_none()
            """,
            path="app/views.py",
            files=_FILES,
            line=7,
        ),
        # Two collections joined side by side: users × posts × comments rows.
        Invalid(
            """
            from sqlalchemy.orm import joinedload
            from app.models import User

            def load(session):
                query = session.query(User)
                return query.options(joinedload(User.posts), joinedload(User.comments)).all()
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`User.posts`, `User.comments` are collections joined "
                "side by side: each user comes back once per combination of their rows — "
                "use `selectinload()` for all but one"
            ),
        ),
        # first() needs no unique(), but still reads the customer's orders × addresses.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import joinedload
            from app.models import User

            class UserRepository:
                def __init__(self, session):
                    self.session = session

                def with_activity(self, user_id):
                    stmt = (
                        select(User)
                        .options(joinedload(User.posts), joinedload(User.comments))
                        .where(User.id == user_id)
                    )
                    return self.session.scalars(stmt).unique().first()
            """,
            path="app/repository.py",
            files=_FILES,
            line=15,
        ),
        # An aliased() entity's collection, named as the option wrote it.
        Invalid(
            """
            from sqlalchemy import select
            from sqlalchemy.orm import aliased, joinedload
            from app.models import User

            def load(session):
                author = aliased(User)
                return session.scalars(select(author).options(joinedload(author.posts))).all()
            """,
            path="app/views.py",
            files=_FILES,
            line=7,
            expected_message=(
                "`author.posts` is a collection joined-eager-loaded by "
                "`joinedload(author.posts)`: `.all()` raises InvalidRequestError unless the "
                "result is de-duplicated — call `.unique()` first (or use `selectinload()`)"
            ),
        ),
        # SQLModel's exec() returns a ScalarResult that needs unique() too.
        Invalid(
            """
            from sqlmodel import Field, Relationship, Session, SQLModel, select
            from sqlalchemy.orm import joinedload

            class Team(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                heroes: list["Hero"] = Relationship(back_populates="team")

            class Hero(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                team_id: int | None = Field(default=None, foreign_key="team.id")
                team: Team | None = Relationship(back_populates="heroes")

            def teams(session: Session):
                return session.exec(select(Team).options(joinedload(Team.heroes))).all()
            """,
            line=14,
        ),
    )

    @calls_to(ending=(*_FETCHING, "list", "tuple", "sorted"))
    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if not isinstance(func, ast.Attribute) or func.attr not in _FETCHING:
            if isinstance(func, ast.Name) and func.id in ("list", "tuple", "sorted") and node.args:
                self._fetch(node, node.args[0], f"`{func.id}()`")
                self._explosion_when_read_whole(node, node.args[0])
            return
        self._fetch(node, func.value, f"`.{func.attr}()`")
        self._explosion(node, func.value)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        # first()/scalar() need no unique(), but the ORM still reads every row of the
        # parent it returns: two joined collections are still their product.
        parent = self.ctx.parent(node)
        if (
            node.attr in ("first", "scalar")
            and isinstance(parent, ast.Call)
            and parent.func is node
        ):
            self._explosion(parent, node.value)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self._fetch(node, node.iter, "iterating it")
        self._explosion_when_read_whole(node.iter, node.iter)

    visit_AsyncFor = visit_For

    def visit_ListComp(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> None:
        iterated = node.generators[0].iter
        self._fetch(node, iterated, "iterating it")
        self._explosion_when_read_whole(iterated, iterated)

    visit_SetComp = visit_ListComp
    visit_GeneratorExp = visit_ListComp
    visit_DictComp = visit_ListComp

    def _fetch(self, node: ast.AST, result_expr: ast.expr, how: str) -> None:
        if not isinstance(result_expr, (ast.Name, ast.Call, ast.Attribute, ast.Await)):
            return
        flow = flow_for(self.ctx, node)
        result = flow.value(result_expr)
        if (
            not isinstance(result, ObjectsValue)
            or result.unique
            or result.shape not in ("scalars", "result")
            or result.stmt is None
            or result.stmt.kind != "select"
        ):
            return
        joined = joined_collections(
            self.ctx.index, result.stmt.model, result.stmt.options, alias=_root_alias(result.stmt)
        )
        if not joined:
            return
        first = joined[0]
        target = result_expr
        _, _, end_line, end_col = self.ctx.span(target)
        fix = Fix(
            description="call `.unique()` on the result",
            edits=(Edit(end_line, end_col, end_line, end_col, ".unique()"),),
            applicability=Applicability.SAFE,
        )
        problem = (
            f"`{first.rel_name}` is a collection joined-eager-loaded by {first.where}: "
            f"{how} raises InvalidRequestError unless the result is de-duplicated — call "
            "`.unique()` first (or use `selectinload()`)"
        )
        self.report(
            node if isinstance(node, ast.Call) else result_expr,
            fix=fix,
            hint="collections are usually better loaded with `selectinload()`",
            problem=problem,
        )

    def _explosion_when_read_whole(self, node: ast.AST, result_expr: ast.expr) -> None:
        """The explosion, for a result read whole without a fetching call (`for product in
        session.scalars(stmt).unique():`, `list(session.scalars(stmt))`): a fetching call
        (`.all()`) is checked where it is made, and a name is checked where it was bound."""
        inner = result_expr.value if isinstance(result_expr, ast.Await) else result_expr
        if not isinstance(inner, ast.Call):
            return
        func = inner.func
        if isinstance(func, ast.Attribute) and func.attr in _FETCHING:
            return
        self._explosion(node, result_expr)

    def _explosion(self, node: ast.AST, result_expr: ast.expr) -> None:
        """Several collections joined side by side in one statement (reported once, at
        the call that fetches its rows, or the result a loop reads)."""
        flow: FunctionFlow = flow_for(self.ctx, node)
        value = flow.value(result_expr)
        stmt: StatementValue | None = None
        if isinstance(value, StatementValue) and value.kind == "query":
            stmt = value
        elif isinstance(value, ObjectsValue) and value.stmt is not None:
            stmt = value.stmt
        if stmt is None or stmt.kind not in ("select", "query"):
            return
        joined = joined_collections(
            self.ctx.index, stmt.model, stmt.options, alias=_root_alias(stmt)
        )
        if not joined or not any(j.by_option for j in joined):
            return
        independent = [
            j
            for j in joined
            if not any(
                other is not j and j.path[: len(other.path)] == other.path for other in joined
            )
        ]
        side_by_side = [
            j
            for j in independent
            if any(o is not j and o.path[:-1] == j.path[:-1] for o in independent)
        ]
        if len(side_by_side) < 2:
            return
        names = ", ".join(f"`{j.rel_name}`" for j in side_by_side)
        owner = side_by_side[0].path[-1][0].rpartition(".")[2].lower()
        self.report(
            node,
            hint="keep at most one collection in `joinedload()`; `selectinload()` the others",
            problem=(
                f"{names} are collections joined side by side: each {owner} comes back once "
                "per combination of their rows — use `selectinload()` for all but one"
            ),
        )
