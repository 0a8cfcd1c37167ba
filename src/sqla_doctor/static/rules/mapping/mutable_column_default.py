"""SQD501: a mutable literal as a column's Python-side default."""

from __future__ import annotations

import ast

from sqla_doctor.findings import Applicability, Severity
from sqla_doctor.static.alembic.ops import is_migration_module
from sqla_doctor.static.rule import Invalid, Rule, Valid, calls_to

_COLUMN_FACTORIES = frozenset({"mapped_column", "Column"})
_DEFAULT_KEYWORDS = ("default", "insert_default", "onupdate")
# Alembic operations that read a Column for its DDL only: its Python-side default never
# reaches a mapped object (nor the ALTER: SQD605's business).
_DDL_OPS = frozenset({"add_column", "create_table", "alter_column"})
_MUTABLE_CALLS = frozenset(
    {"list", "dict", "set", "bytearray", "defaultdict", "OrderedDict", "Counter", "deque"}
)


def _is_mutable(node: ast.expr) -> bool:
    if isinstance(node, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        name = (
            func.id
            if isinstance(func, ast.Name)
            else func.attr
            if isinstance(func, ast.Attribute)
            else None
        )
        return name in _MUTABLE_CALLS
    return False


class MutableColumnDefault(Rule):
    """
    ## What it does
    Checks for a list, dict or set literal (or a `list()`/`dict()`/`set()` call) passed as
    `default=`, `insert_default=` or `onupdate=` to `mapped_column()` or `Column()`.
    A column an Alembic revision hands to `op.add_column()`, `op.create_table()` or
    `op.alter_column()` is not reported: only its DDL is used, and no object gets the
    default.

    ## Why is this bad?
    The expression is evaluated once, when the class is defined. Every row inserted
    without a value gets that same object, and the ORM hands the same object to every new
    instance: appending a tag to one row's list appends it to all of them, and to the
    default itself.

    ## Example
    ```python
    class Article(Base):
        __tablename__ = "articles"
        id: Mapped[int] = mapped_column(primary_key=True)
        tags: Mapped[list[str]] = mapped_column(JSON, default=[])
    ```

    Use instead:
    ```python
    class Article(Base):
        __tablename__ = "articles"
        id: Mapped[int] = mapped_column(primary_key=True)
        tags: Mapped[list[str]] = mapped_column(JSON, default=lambda: [])
    ```

    ## Fix safety
    Safe: wrapping the literal in a `lambda` makes SQLAlchemy call it once per row, so
    each row gets its own copy with the same contents; nothing else changes.

    ## References
    - [Column INSERT/UPDATE Defaults](https://docs.sqlalchemy.org/en/20/core/defaults.html#python-executed-functions)
    """

    code = "SQD501"
    name = "mutable-column-default"
    pitfalls = ("P11",)
    severity = Severity.ERROR
    fix = Applicability.SAFE
    message = "mutable `{keyword}={value}` is shared by every row of this column"

    VALID = (
        Valid(
            """
            from sqlalchemy import JSON
            from sqlalchemy.orm import mapped_column
            tags = mapped_column(JSON, default=lambda: [])
            meta = mapped_column(JSON, default=dict)
            flags = mapped_column(JSON, server_default="[]")
            pair = mapped_column(JSON, default=(1, 2))
            """
        ),
        # Not SQLAlchemy's Column: a form library's field with the same name.
        Valid(
            """
            from wtforms import Column
            choices = Column(default=[])
            """
        ),
        # An Alembic revision's column: the default is no object's (flexmeasures, Tracim).
        Valid(
            """
            import sqlalchemy as sa
            from alembic import op

            def upgrade():
                op.add_column("data_source", sa.Column("attributes", sa.JSON(), default={}))
                op.create_table(
                    "user_configs",
                    sa.Column("user_id", sa.Integer(), primary_key=True),
                    sa.Column("fields", sa.JSON(), nullable=False, default={}),
                )
            """,
            path="migrations/versions/2ac7fb39ce0c_add_attributes.py",
        ),
        # Pydantic and SQLModel copy field defaults per instance.
        Valid(
            """
            from sqlmodel import Field, SQLModel
            class Hero(SQLModel, table=True):
                tags: list[str] = Field(default=[])
            """
        ),
    )
    INVALID = (
        # ... but a model the revision declares for its data migration makes objects.
        Invalid(
            """
            import sqlalchemy as sa
            from alembic import op
            from sqlalchemy.orm import declarative_base

            Base = declarative_base()

            class DataSource(Base):
                __tablename__ = "data_source"
                id = sa.Column(sa.Integer, primary_key=True)
                attributes = sa.Column(sa.JSON(), default={})

            def upgrade():
                op.add_column("data_source", sa.Column("attributes", sa.JSON()))
            """,
            path="migrations/versions/2ac7fb39ce0c_add_attributes.py",
            line=10,
        ),
        Invalid(
            """
            from sqlalchemy import JSON
            from sqlalchemy.orm import Mapped, mapped_column
            class Article(Base):
                tags: Mapped[list[str]] = mapped_column(JSON, default=[])
            """,
            expected_message="mutable `default=[]` is shared by every row of this column",
            line=4,
            expected_fix="""
            from sqlalchemy import JSON
            from sqlalchemy.orm import Mapped, mapped_column
            class Article(Base):
                tags: Mapped[list[str]] = mapped_column(JSON, default=lambda: [])
            """,
        ),
        Invalid(
            """
            import sqlalchemy as sa
            settings = sa.Column(sa.JSON, default={"theme": "dark"}, onupdate=set())
            """,
            count=2,
            expected_fix="""
            import sqlalchemy as sa
            settings = sa.Column(sa.JSON, default=lambda: {"theme": "dark"}, onupdate=lambda: set())
            """,
        ),
        Invalid(
            """
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            class Post(db.Model):
                tags = db.Column(db.JSON, default=list())
            """,
            expected_fix="""
            from flask_sqlalchemy import SQLAlchemy
            db = SQLAlchemy()
            class Post(db.Model):
                tags = db.Column(db.JSON, default=lambda: list())
            """,
        ),
    )

    @calls_to(named=_COLUMN_FACTORIES)
    def visit_Call(self, node: ast.Call) -> None:
        if not node.keywords:
            return
        parent = self.ctx.parent(node)
        if (
            isinstance(parent, ast.Call)
            and isinstance(parent.func, ast.Attribute)
            and parent.func.attr in _DDL_OPS
            and is_migration_module(self.ctx.tree, self.ctx.names)
        ):
            return
        for keyword in node.keywords:
            if keyword.arg in _DEFAULT_KEYWORDS and _is_mutable(keyword.value):
                value = self.ctx.text(keyword.value)
                self.report(
                    keyword,
                    keyword=keyword.arg,
                    value=value if len(value) <= 30 else value[:27] + "...",
                    fix=self.replace(
                        keyword.value, f"lambda: {value}", "wrap the default in a lambda"
                    ),
                    hint=f"use `{keyword.arg}=lambda: {value}` so that each row gets its own copy",
                )
