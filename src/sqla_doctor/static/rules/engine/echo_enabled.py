"""SQD401: ``echo=True`` hard-coded on an engine."""

from __future__ import annotations

import ast
import re

from sqla_doctor.findings import Applicability, Edit, Fix, Severity
from sqla_doctor.static.rule import Invalid, Rule, Valid
from sqla_doctor.static.syntax import call_keyword, is_truthy_literal, source_segment

_ENGINE_FACTORIES = frozenset({"create_engine", "create_async_engine"})
_ECHO_KEYWORDS = ("echo", "echo_pool")
_FLASK_ECHO = "SQLALCHEMY_ECHO"
# Words that show a branch or a config class is environment-specific (`if settings.DEBUG:`,
# `class DevelopmentConfig:`): echo there is configuration, not a leftover.
_ENVIRONMENT_WORDS = frozenset(
    {
        "debug", "dev", "develop", "development", "local", "test", "tests", "testing",
        "prod", "production", "env", "environ", "environment", "stage", "staging",
        "verbose", "echo",
    }
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")


def _words(text: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(text)}


class EchoEnabled(Rule):
    """
    ## What it does
    Checks for SQL echo switched on in code: `echo=True` on an engine.

    That is `echo=True` (or `echo="debug"`, `echo_pool=True`, any true literal) passed to
    `create_engine()` / `create_async_engine()` (SQLAlchemy's or SQLModel's), and
    Flask-SQLAlchemy's `SQLALCHEMY_ECHO = True` / `app.config["SQLALCHEMY_ECHO"] = True`
    and `SQLAlchemy(engine_options={"echo": True})`.

    A value read from configuration (`echo=settings.DEBUG`, `echo=os.getenv(...)`) stays
    silent, and so does a literal inside a branch or config class that is about the
    environment (`if settings.DEBUG:`, `class DevelopmentConfig:`).

    ## Why is this bad?
    `echo=True` logs every statement and its parameters at INFO level, `echo="debug"` every
    result row too, and `echo_pool` every checkout. Left in code, it ships to production:
    log volume grows with traffic, logging becomes a measurable share of request time, and
    personal data and secrets in parameters end up in log storage.

    ## Example
    ```python
    engine = create_engine(settings.database_url, echo=True)
    ```

    Use instead:
    ```python
    engine = create_engine(settings.database_url, echo=settings.sql_echo)
    ```
    or configure the `sqlalchemy.engine` logger where logging is configured.

    ## Known problems
    Test code is reported too (a test engine that echoes floods CI logs, but leaks
    nothing); add `SQD401` to `per-file-ignores` for `tests/**` if that is intended.

    ## Fix safety
    Safe: the fix removes the keyword argument (with its comma, or its line), which only
    changes what is logged; nothing the program computes depends on it. No fix is offered
    for Flask-SQLAlchemy configuration, where the setting may be read elsewhere.

    ## References
    - [`create_engine.echo`](https://docs.sqlalchemy.org/en/20/core/engines.html#sqlalchemy.create_engine.params.echo)
    - [Configuring logging](https://docs.sqlalchemy.org/en/20/core/engines.html#configuring-logging)
    - [Flask-SQLAlchemy `SQLALCHEMY_ECHO`](https://flask-sqlalchemy.readthedocs.io/en/stable/config/#flask_sqlalchemy.config.SQLALCHEMY_ECHO)
    """

    code = "SQD401"
    name = "echo-enabled"
    pitfalls = ("P27",)
    severity = Severity.WARNING
    fix = Applicability.SAFE
    message = "`{setting}` logs every SQL statement{extra} in every environment — {instead}"

    VALID = (
        Valid(
            """
            import os
            from sqlalchemy import create_engine
            from app.config import settings
            a = create_engine(settings.DATABASE_URL, echo=settings.DEBUG)
            b = create_engine(os.environ["DATABASE_URL"], echo=os.getenv("SQL_ECHO") == "1")
            c = create_engine("sqlite://", echo=False, echo_pool=False)
            d = create_engine("sqlite://", echo=None)
            """
        ),
        # Gated on the environment.
        Valid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            from app.config import settings
            if settings.ENVIRONMENT == "development":
                engine = create_async_engine(settings.url, echo=True)
            else:
                engine = create_async_engine(settings.url)
            """
        ),
        Valid(
            """
            class Config:
                SQLALCHEMY_ECHO = False
            class DevelopmentConfig(Config):
                SQLALCHEMY_ECHO = True
            """
        ),
        # Another library's create_engine, and an unrelated `echo` keyword.
        Valid(
            """
            from mylib.db import create_engine
            import click
            engine = create_engine("memory", echo=True)
            click.echo("done")
            """
        ),
        # A conditional expression is configuration.
        Valid(
            """
            from sqlmodel import create_engine
            DEBUG = False
            engine = create_engine("sqlite:///db.sqlite3", echo=True if DEBUG else False)
            """
        ),
    )
    INVALID = (
        Invalid(
            """
            from sqlalchemy import create_engine
            engine = create_engine("postgresql://localhost/app", echo=True)
            """,
            expected_message=(
                "`echo=True` logs every SQL statement in every environment — remove it, or "
                "read it from settings"
            ),
            line=2,
            expected_fix="""
            from sqlalchemy import create_engine
            engine = create_engine("postgresql://localhost/app")
            """,
        ),
        # Multi-line call: the whole line goes, comment included.
        Invalid(
            """
            import sqlalchemy as sa
            engine = sa.create_engine(
                DATABASE_URL,
                pool_size=10,
                echo=True,  # TODO remove
                pool_pre_ping=True,
            )
            """,
            line=5,
            expected_fix="""
            import sqlalchemy as sa
            engine = sa.create_engine(
                DATABASE_URL,
                pool_size=10,
                pool_pre_ping=True,
            )
            """,
        ),
        Invalid(
            """
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine(URL, echo="debug", future=True)
            """,
            expected_message=(
                '`echo="debug"` logs every SQL statement and result row in every environment '
                "— remove it, or read it from settings"
            ),
            expected_fix="""
            from sqlalchemy.ext.asyncio import create_async_engine
            engine = create_async_engine(URL, future=True)
            """,
        ),
        # SQLModel's tutorial engine; both keywords.
        Invalid(
            """
            from sqlmodel import create_engine
            engine = create_engine("sqlite:///database.db", echo=True, echo_pool=True)
            """,
            count=2,
            expected_fix="""
            from sqlmodel import create_engine
            engine = create_engine("sqlite:///database.db")
            """,
        ),
        # Last argument on its own line without a trailing comma.
        Invalid(
            """
            from sqlalchemy import create_engine
            engine = create_engine(
                "postgresql+psycopg://app@db/app",
                echo=True
            )
            """,
            expected_fix="""
            from sqlalchemy import create_engine
            engine = create_engine(
                "postgresql+psycopg://app@db/app",
            )
            """,
        ),
        # Flask-SQLAlchemy configuration.
        Invalid(
            """
            from flask import Flask
            from flask_sqlalchemy import SQLAlchemy
            app = Flask(__name__)
            app.config["SQLALCHEMY_DATABASE_URI"] = "postgresql://localhost/app"
            app.config["SQLALCHEMY_ECHO"] = True
            db = SQLAlchemy(app, engine_options={"echo": True, "pool_pre_ping": True})
            """,
            count=2,
            line=5,
        ),
        Invalid(
            """
            class Config:
                SQLALCHEMY_DATABASE_URI = "postgresql://localhost/app"
                SQLALCHEMY_ECHO = True
            """,
            line=3,
        ),
        # Inside a function (an app factory) and with an engine made in a helper.
        Invalid(
            """
            from sqlalchemy import create_engine
            def make_engine(url):
                return create_engine(url, pool_pre_ping=True, echo=1)
            """,
            expected_fix="""
            from sqlalchemy import create_engine
            def make_engine(url):
                return create_engine(url, pool_pre_ping=True)
            """,
        ),
    )

    def visit_Call(self, node: ast.Call) -> None:
        name = self.ctx.names.sqla_name(node.func)
        if name in _ENGINE_FACTORIES:
            self._engine_call(node)
        elif name is None and self._is_flask_extension(node.func):
            options = call_keyword(node, "engine_options")
            if options is not None and isinstance(options.value, ast.Dict):
                self._engine_options(options.value)
        elif isinstance(node.func, ast.Attribute) and node.func.attr in ("update", "from_mapping"):
            keyword = call_keyword(node, _FLASK_ECHO)
            if keyword is not None and self._hard_coded(keyword.value, node):
                self._report_flask(keyword, keyword.value)

    def visit_Assign(self, node: ast.Assign) -> None:
        if len(node.targets) != 1 or not is_truthy_literal(node.value):
            return
        target = node.targets[0]
        if isinstance(target, ast.Subscript):
            key = target.slice
            echo = isinstance(key, ast.Constant) and key.value == _FLASK_ECHO
        else:
            echo = isinstance(target, ast.Name) and target.id == _FLASK_ECHO
        if echo and self._hard_coded(node.value, node):
            self._report_flask(node, node.value)

    # Engines -----------------------------------------------------------------------
    def _engine_call(self, node: ast.Call) -> None:
        for keyword in node.keywords:
            if keyword.arg in _ECHO_KEYWORDS and self._hard_coded(keyword.value, node):
                self.report(
                    keyword,
                    setting=source_segment(self.ctx, keyword),
                    extra=self._extra(keyword.arg, keyword.value),
                    instead="remove it, or read it from settings",
                    fix=Fix(
                        description=f"remove `{source_segment(self.ctx, keyword)}`",
                        edits=(self._removal(node, keyword),),
                        applicability=Applicability.SAFE,
                    ),
                    hint="configure the `sqlalchemy.engine` logger instead, or pass "
                    "`echo=settings.SQL_ECHO` so that it stays off in production",
                )

    def _engine_options(self, options: ast.Dict) -> None:
        for key, value in zip(options.keys, options.values, strict=True):
            echo_key = isinstance(key, ast.Constant) and key.value in _ECHO_KEYWORDS
            if key is not None and echo_key and self._hard_coded(value, options):
                self.report(
                    value,
                    setting="engine_options={"
                    f"{source_segment(self.ctx, key)}: {source_segment(self.ctx, value)}}}",
                    extra=self._extra(str(getattr(key, "value", "")), value),
                    instead="remove it, or read it from settings",
                    hint="configure the `sqlalchemy.engine` logger instead",
                )

    def _report_flask(self, node: ast.AST, value: ast.expr) -> None:
        self.report(
            node,
            setting=f"SQLALCHEMY_ECHO = {source_segment(self.ctx, value)}",
            extra="",
            instead="set it in the development configuration only",
            hint="set `SQLALCHEMY_ECHO` from the environment, or only in a development config",
        )

    @staticmethod
    def _extra(keyword: str | None, value: ast.expr) -> str:
        if keyword == "echo_pool":
            return " and pool checkout"
        if isinstance(value, ast.Constant) and value.value == "debug":
            return " and result row"
        return ""

    def _hard_coded(self, value: ast.expr, node: ast.AST) -> bool:
        return is_truthy_literal(value) and not self._environment_specific(node)

    def _environment_specific(self, node: ast.AST) -> bool:
        """Inside `if settings.DEBUG:` (either branch) or a config class named for an
        environment (`DevelopmentConfig`, `TestingConfig`)."""
        child = node
        for ancestor in self.ctx.ancestors(node):
            if isinstance(ancestor, ast.If) and child is not ancestor.test:
                words = _words(source_segment(self.ctx, ancestor.test))
            elif isinstance(ancestor, ast.ClassDef):
                words = _words(ancestor.name)
            else:
                words = set()
            if words & _ENVIRONMENT_WORDS:
                return True
            child = ancestor
        return False

    def _is_flask_extension(self, func: ast.expr) -> bool:
        qualified = self.ctx.names.qualify(func)
        return qualified is not None and qualified.startswith("flask_sqlalchemy.")

    # Removing a keyword argument ---------------------------------------------------
    def _removal(self, call: ast.Call, keyword: ast.keyword) -> Edit:
        """The edit deleting ``keyword`` from ``call`` and one comma next to it."""
        lines = self.ctx.lines
        start_line, start_col, end_line, end_col = self.ctx.span(keyword)
        before = lines[start_line - 1][:start_col]
        after = lines[end_line - 1][end_col:]
        if not before.strip() and re.match(r"^\s*,?\s*(#.*)?$", after):
            # The argument has its line(s) to itself: delete them whole.
            return Edit(start_line, 0, end_line + 1, 0, "")
        arguments: list[ast.expr | ast.keyword] = [*call.args, *call.keywords]
        arguments.sort(key=lambda n: (n.lineno, n.col_offset))
        index = next(i for i, a in enumerate(arguments) if a is keyword)
        previous = self.ctx.span(arguments[index - 1]) if index > 0 else None
        # `, echo=True` goes with the comma before it, so that removing two neighbours
        # (`echo=True, echo_pool=True`) makes edits that touch but do not overlap.
        if previous is not None and previous[2] == start_line:
            return Edit(previous[2], previous[3], end_line, end_col, "")
        following = arguments[index + 1] if index + 1 < len(arguments) else None
        if following is not None:
            next_line, next_col, _, _ = self.ctx.span(following)
            if next_line == end_line:
                return Edit(start_line, start_col, next_line, next_col, "")
        if previous is not None:
            return Edit(previous[2], previous[3], end_line, end_col, "")
        comma = re.match(r"^\s*,\s*", after)
        extra = comma.end() if comma else 0
        return Edit(start_line, start_col, end_line, end_col + extra, "")
