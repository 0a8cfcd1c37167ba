"""SQD306: a SQL function wrapped around an indexed column in a filter."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid

_FILTERS = frozenset({"where", "filter", "having", "filter_by", "join", "outerjoin"})
# Aggregates compare a group's rows in HAVING: no index (and no index expression, which may
# not hold an aggregate) serves `count(col) == 1`.
_AGGREGATES = frozenset(
    {
        "count",
        "sum",
        "avg",
        "min",
        "max",
        "array_agg",
        "string_agg",
        "group_concat",
        "json_agg",
        "jsonb_agg",
        "json_object_agg",
        "jsonb_object_agg",
        "bool_and",
        "bool_or",
        "every",
        "bit_and",
        "bit_or",
        "stddev",
        "stddev_pop",
        "stddev_samp",
        "variance",
        "var_pop",
        "var_samp",
        "percentile_cont",
        "percentile_disc",
        "mode",
    }
)
_CONJUNCTIONS = frozenset({"and_", "or_", "not_"})
# Comparisons a B-tree index on the expression would serve. LIKE/ILIKE/contains() are left
# out: with a leading wildcard (or ILIKE's case folding) no such index helps anyway.
_COMPARATORS = frozenset({"in_", "between", "__eq__", "__lt__", "__gt__", "__le__", "__ge__"})
_INDEXABLE_OPS = (ast.Eq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In)
_MODELS = """
from sqlalchemy import DateTime, Index, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

class Base(DeclarativeBase):
    pass

class User(Base):
    __tablename__ = "users"
    __table_args__ = (Index("ix_users_username_lower", func.lower("username")),)
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    username: Mapped[str] = mapped_column(index=True)
    nickname: Mapped[str]
    created_at = mapped_column(DateTime, index=True)
"""
_FILES = {"app/__init__.py": "", "app/models.py": _MODELS}

# Classic mapping: the index is on the `Table`'s column.
_IMPERATIVE = """
from sqlalchemy import Column, Index, Integer, MetaData, String, Table, func, select
from sqlalchemy.orm import registry

metadata = MetaData()
accounts = Table(
    "accounts", metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(255), index=True),
){index}

class Account:
    pass

registry(metadata=metadata).map_imperatively(Account, accounts)

def find(session, email):
    return session.scalars(select(Account).where(func.lower(Account.email) == email)).first()
"""


class FunctionOnIndexedColumn(Rule):
    """
    ## What it does
    Checks for `func.lower(Model.column)` (or any `func.<name>()` around a column, other than
    an aggregate such as `count`, and `cast(Model.column, Date)`) in a `where()`/`filter()`
    condition, when the column has
    an index (`index=True`, `unique=True`, a primary key, `Index(...)`) but no index on that
    same expression —
    looking in `__table_args__`, module-level `Index(...)`, Alembic `op.create_index`
    and raw `CREATE INDEX` statements anywhere in the project. A cast compared to another
    table's column (a join or a correlated subquery matching columns of two types) is
    left alone: the database can use that column's index instead.

    ## Why is this bad?
    A B-tree index on `email` stores `email`, not `lower(email)`. The database cannot
    use it for `WHERE lower(email) = :x` and scans the whole table: fast in
    development, a sequential scan over millions of rows in production (`EXPLAIN`
    shows `Seq Scan on users`).

    ## Example
    ```python
    select(User).where(func.lower(User.email) == email.lower())
    ```

    Use instead:
    ```python
    class User(Base):
        __table_args__ = (Index("ix_users_email_lower", func.lower(email)),)
    ```
    (with a migration that creates it), or store the normalized value and compare the
    column directly.

    ## References
    - [Functional indexes](https://docs.sqlalchemy.org/en/20/core/constraints.html#functional-indexes)
    - [PostgreSQL: Indexes on Expressions](https://www.postgresql.org/docs/current/indexes-expressional.html)
    """

    code = "SQD306"
    name = "function-on-indexed-column"
    pitfalls = ("P16",)
    severity = Severity.WARNING
    message = (
        "`{expr}` cannot use the index on `{table}.{column}` ({why}): the filter scans the "
        'table — add `Index("ix_{table}_{column}_{function}", {indexed})` '
        "or compare the column itself"
    )

    VALID = (
        Valid(
            _IMPERATIVE.format(
                index='\nIndex("ix_accounts_email_lower", func.lower(accounts.c.email))'
            )
        ),
        Valid(
            """
            from sqlalchemy import func, select
            from app.models import User

            def find(session, username, email):
                a = session.scalars(select(User).where(func.lower(User.username) == username))
                b = session.scalars(select(User).where(User.email == email))
                c = session.scalars(select(User).where(func.lower(User.nickname) == "x"))
                return a, b, c
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # The functional index comes from a migration.
        Valid(
            """
            from sqlalchemy import func, select
            from app.models import User

            def find(session, email):
                return session.scalars(select(User).where(func.lower(User.email) == email))
            """,
            path="app/views.py",
            files={
                **_FILES,
                "migrations/versions/0002_email_lower.py": """
                import sqlalchemy as sa
                from alembic import op

                def upgrade():
                    op.create_index("ix_users_email_lower", "users", [sa.text("lower(email)")])
                """,
            },
        ),
        # A raw CREATE INDEX in a migration, and a module-level Index().
        Valid(
            """
            from sqlalchemy import Index, func, select
            from app.models import User

            Index("ix_users_created_day", func.date(User.created_at))

            def by_day(session, day):
                return session.scalars(select(User).where(func.date(User.created_at) == day))

            def find(session, email):
                return session.scalars(select(User).where(func.lower(User.email) == email))
            """,
            path="app/views.py",
            files={
                **_FILES,
                "migrations/versions/0003.py": """
                from alembic import op

                def upgrade():
                    op.execute("CREATE UNIQUE INDEX CONCURRENTLY ix_email ON users (lower(email))")
                """,
            },
        ),
        # A cast of an indexed column, with an index on that cast (in the model, a
        # migration's SQL) or on date() of it; a cast of a column without an index.
        Valid(
            """
            from sqlalchemy import Date, Index, String, cast, select
            from app.models import User

            Index("ix_users_created_day", cast(User.created_at, Date))

            def by_day(session, day, name):
                on_day = cast(User.created_at, Date) == day
                named = cast(User.nickname, String) == name
                by_id = cast(User.id, String) == name
                return session.scalars(select(User).where(on_day, named, by_id))
            """,
            path="app/views.py",
            files={
                **_FILES,
                "migrations/versions/0004.py": """
                from alembic import op

                def upgrade():
                    op.execute("CREATE INDEX ix_users_id_text ON users (CAST(id AS TEXT))")
                """,
            },
        ),
        # A cast matching another table's column of another type (a join, a correlated
        # subquery): the database can drive it from that column's index.
        Valid(
            """
            from sqlalchemy import String, cast, select
            from sqlalchemy.orm import Mapped, mapped_column
            from app.models import Base, User

            class Profile(Base):
                __tablename__ = "profiles"
                id: Mapped[int] = mapped_column(primary_key=True)
                user_ref: Mapped[str] = mapped_column(index=True)

            def profiles(session):
                on = cast(User.id, String) == Profile.user_ref
                mine = select(Profile.id).where(cast(User.email, String).in_([Profile.user_ref]))
                return session.scalars(select(User).join(Profile, on).where(mine.exists()))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # An aggregate in HAVING compares each group, not a row: no index serves it, and an
        # index expression may not hold one (pypi/warehouse's sole-owner check).
        Valid(
            """
            from sqlalchemy import func, select
            from app.models import User

            def sole_usernames(session):
                return session.scalars(
                    select(User.username)
                    .group_by(User.username)
                    .having(func.count(User.username) == 1)
                )
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # A substring search: no B-tree index serves `LIKE '%x%'`, functional or not.
        Valid(
            """
            from sqlalchemy import func, select
            from app.models import User

            def search(session, text):
                pattern = f"%{text}%"
                return session.scalars(select(User).where(func.lower(User.email).ilike(pattern)))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # A function in the select list or order_by is not a filter.
        Valid(
            """
            from sqlalchemy import func, select
            from app.models import User

            def names(session):
                lowered = func.lower(User.email)
                return session.execute(select(lowered).order_by(func.lower(User.email)))
            """,
            path="app/views.py",
            files=_FILES,
        ),
        # Not SQLAlchemy's func.
        Valid(
            """
            from app import helpers
            from sqlalchemy import select
            from app.models import User

            def find(session, email):
                return session.scalars(select(User).where(User.email == helpers.func.lower(email)))
            """,
            path="app/views.py",
            files={**_FILES, "app/helpers.py": "func = None\n"},
        ),
    )
    INVALID = (
        Invalid(
            _IMPERATIVE.format(index=""),
            line=17,
            expected_message=(
                "`func.lower(Account.email)` cannot use the index on `accounts.email` "
                '(`index=True`): the filter scans the table — add `Index("ix_accounts_email_'
                'lower", func.lower(Account.email))` or compare the column itself'
            ),
        ),
        Invalid(
            """
            from sqlalchemy import func, select
            from app.models import User

            def find(session, email):
                stmt = select(User).where(func.lower(User.email) == email.lower())
                return session.scalars(stmt).first()
            """,
            path="app/views.py",
            files=_FILES,
            line=5,
            expected_message=(
                "`func.lower(User.email)` cannot use the index on `users.email` (`unique=True`): "
                "the filter scans the table — add "
                '`Index("ix_users_email_lower", func.lower(User.email))` or compare the column '
                "itself"
            ),
        ),
        # Legacy Query, `in_()`, sa.func through an alias.
        Invalid(
            """
            import sqlalchemy as sa
            from app import models

            def search(session, prefix):
                query = session.query(models.User)
                return query.filter(sa.func.upper(models.User.username).in_(prefix)).all()
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
        ),
        # date() on an indexed timestamp inside and_().
        Invalid(
            """
            from sqlalchemy import and_, func, select
            from app.models import User

            def joined_on(session, day, active):
                return session.scalars(
                    select(User).where(and_(User.id > 0, func.date(User.created_at) == day))
                ).all()
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
        ),
        # cast() of an indexed timestamp to a date, compared to a day.
        Invalid(
            """
            import sqlalchemy as sa
            from app.models import User

            def joined_on(session, day):
                return session.scalars(
                    sa.select(User).where(sa.cast(User.created_at, sa.Date) == day)
                ).all()
            """,
            path="app/views.py",
            files=_FILES,
            line=6,
            expected_message=(
                "`sa.cast(User.created_at, sa.Date)` cannot use the index on "
                "`users.created_at` (`index=True`): the filter scans the table — add "
                '`Index("ix_users_created_at_date", cast(User.created_at, Date))` or compare '
                "the column itself"
            ),
        ),
        # Flask-SQLAlchemy's db.func, on a column with index=True.
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy

            db = SQLAlchemy()

            class Account(db.Model):
                id = db.Column(db.Integer, primary_key=True)
                email = db.Column(db.String, index=True)

            def find(email):
                return Account.query.filter(db.func.lower(Account.email) == email).first()
            """,
            line=10,
        ),
        # SQLModel: `index=True` on a Field.
        Invalid(
            """
            from sqlmodel import Field, Session, SQLModel, func, select

            class Hero(SQLModel, table=True):
                id: int | None = Field(default=None, primary_key=True)
                name: str = Field(index=True)

            def find(session: Session, name: str):
                stmt = select(Hero).where(func.lower(Hero.name) == name.lower())
                return session.exec(stmt).first()
            """,
            line=8,
        ),
    )

    def visit_Call(self, node: ast.Call) -> None:
        wrapped = self._wrapped_column(node)
        if wrapped is None:
            return
        column, function, type_name = wrapped
        index = self.ctx.index
        model = index.model_for_expr(self.ctx, column.value)
        facts = index.column(model, column.attr) if model is not None else None
        # Without the table's name, migrations' indexes cannot be matched: stay silent.
        if model is None or facts is None or not model.table:
            return
        if not self._in_filter(node):
            return
        if not index.is_indexed(model, column.attr):
            return
        if any(
            index.has_functional_index(model, name, column.attr) is not False
            # `cast(col, Date)` is served by an index on the cast or on `date(col)`.
            for name in (function, type_name.lower()) if name
        ):
            return
        why = (
            "primary key"
            if facts.primary_key
            else "`unique=True`"
            if facts.unique
            else "`index=True`"
            if facts.index
            else "an `Index`"
        )
        self.report(
            node,
            expr=self.ctx.text(node),
            table=model.table or model.name,
            column=facts.name,
            why=why,
            function=type_name.lower() if function == "cast" else function,
            indexed=f"cast({model.name}.{column.attr}, {type_name})"
            if function == "cast"
            else f"func.{function}({model.name}.{column.attr})",
        )

    def _wrapped_column(self, node: ast.Call) -> tuple[ast.Attribute, str, str] | None:
        """``func.lower(Model.col)`` → (column, "lower", ""); ``cast(Model.col, Date)`` →
        (column, "cast", "Date")."""
        func = node.func
        names = self.ctx.names
        if (
            len(node.args) == 2
            and not node.keywords
            and isinstance(func, (ast.Name, ast.Attribute))
            and names.sqla_name(func) == "cast"
            and isinstance(node.args[0], ast.Attribute)
        ):
            target = node.args[1]
            if isinstance(target, ast.Call):
                target = target.func  # `String(255)`
            type_name = target.id if isinstance(target, ast.Name) else None
            if isinstance(target, ast.Attribute):
                type_name = target.attr
            if not type_name or self._compared_to_column(node):
                return None
            return node.args[0], "cast", type_name
        # One argument: `lower(email)`; `coalesce(a, b)` or `row(a, b)` are other expressions
        # that no single-column index was meant for.
        if not isinstance(func, ast.Attribute) or len(node.args) != 1 or node.keywords:
            return None
        if names.sqla_name(func.value) != "func" or func.attr.lower() in _AGGREGATES:
            return None
        column = node.args[0]
        if not isinstance(column, ast.Attribute):
            return None
        return column, func.attr.lower(), ""

    def _compared_to_column(self, node: ast.Call) -> bool:
        """``cast(Org.id, String) == Customer.external_id``: a join or a correlated
        subquery matching two tables' columns of different types, which the database
        can drive from the other side's index (or cast the other side instead)."""
        parent = self.ctx.parent(node)
        others: list[ast.expr] = []
        if isinstance(parent, ast.Compare):
            others = [e for e in (parent.left, *parent.comparators) if e is not node]
        elif isinstance(parent, ast.Attribute):
            call = self.ctx.parent(parent)
            if isinstance(call, ast.Call) and call.func is parent:
                others = [*call.args, *(k.value for k in call.keywords)]
        index = self.ctx.index
        return any(
            isinstance(sub, ast.Attribute)
            and index.model_for_expr(self.ctx, sub.value) is not None
            for other in others
            for sub in ast.walk(other)
        )

    def _in_filter(self, node: ast.Call) -> bool:
        """Whether the call is compared inside a where()/filter() condition."""
        compared = False
        child: ast.AST = node
        for ancestor in self.ctx.ancestors(node):
            if isinstance(ancestor, ast.Compare):
                if not all(isinstance(op, _INDEXABLE_OPS) for op in ancestor.ops):
                    return False
                compared = True
            elif (
                isinstance(ancestor, ast.Attribute)
                and ancestor.value is child
                and ancestor.attr in _COMPARATORS
            ):
                compared = True
            elif isinstance(ancestor, ast.Call):
                func = ancestor.func
                if isinstance(func, ast.Attribute) and func.attr in _FILTERS and child is not func:
                    return compared
                if (
                    isinstance(func, (ast.Name, ast.Attribute))
                    and self.ctx.names.sqla_name(func) in _CONJUNCTIONS
                ):
                    child = ancestor
                    continue
                if child is func:
                    child = ancestor
                    continue
                if isinstance(func, ast.Attribute) and func.attr in (
                    "order_by",
                    "group_by",
                    "select",
                    "add_columns",
                ):
                    return False
            elif isinstance(ancestor, ast.stmt):
                return False
            child = ancestor
        return False
