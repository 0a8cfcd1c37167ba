"""The data-flow helpers rules build on: reaching bindings, string building, SQLAlchemy objects."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from typing import ClassVar

import pytest

from sqla_doctor.config import Config
from sqla_doctor.registry import Registry
from sqla_doctor.static.context import FileContext
from sqla_doctor.static.dataflow import DataFlow
from sqla_doctor.static.engine import Engine
from sqla_doctor.static.objects import ObjectKind, SqlaObjects
from sqla_doctor.static.rule import Rule
from sqla_doctor.static.strings import StringFlow, ValueState
from sqla_doctor.static.syntax import source_segment


class _Capture(Rule):
    """
    ## What it does
    Keeps the file context of every file it sees, for these tests.

    ## Why is this bad?
    It is not; it is a test probe.

    ## Example
    ```python
    x = 1
    ```
    """

    code = "SQD998"
    name = "capture-context"
    pitfalls = ("P28",)
    message = "unused"
    seen: ClassVar[dict[str, FileContext]] = {}

    def visit_Module(self, node: ast.Module) -> None:
        _Capture.seen[self.ctx.path] = self.ctx


def analyse(tmp_path: Path, source: str, files: dict[str, str] | None = None) -> FileContext:
    """Run the engine over ``source`` (as ``app/main.py``) and its sibling files."""
    all_files = {"app/__init__.py": "", "app/main.py": source, **(files or {})}
    for relative, text in all_files.items():
        target = tmp_path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")
    _Capture.seen.clear()
    engine = Engine(Config(root=tmp_path), {"SQD998"}, checks=Registry([_Capture]))
    result = engine.check_paths([tmp_path])
    assert not result.internal_errors
    return _Capture.seen["app/main.py"]


def calls_to(ctx: FileContext, name: str) -> list[ast.Call]:
    found = [
        node
        for node in ast.walk(ctx.tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name
    ]
    return sorted(found, key=lambda n: n.lineno)


def reaching(ctx: FileContext, flow: DataFlow, call: ast.Call) -> list[str]:
    argument = call.args[0]
    assert isinstance(argument, ast.Name)
    return [
        source_segment(ctx, b.value) if b.value is not None else b.kind.value
        for b in flow.bindings(argument)
    ]


def test_reaching_bindings_follow_branches_loops_and_handlers(tmp_path: Path) -> None:
    ctx = analyse(
        tmp_path,
        """
        def f(flag, items):
            x = "start"
            for item in items:
                if item:
                    x = "found"
                    break
            else:
                x = "exhausted"
            use(x)
            while True:
                x = "again"
                if flag:
                    break
            use(x)
            try:
                x = "tried"
                risky()
            except ValueError:
                use(x)
                x = "handled"
            use(x)
            x = "last"
            use(x)
        """,
    )
    flow = DataFlow(ctx)
    uses = [reaching(ctx, flow, call) for call in calls_to(ctx, "use")]
    assert uses == [
        ['"found"', '"exhausted"'],
        ['"again"'],
        ['"again"', '"tried"'],
        ['"tried"', '"handled"'],
        ['"last"'],
    ]


def test_reaching_bindings_respect_python_scopes(tmp_path: Path) -> None:
    ctx = analyse(
        tmp_path,
        """
        x = "module"
        def outer(x):
            def inner():
                return use(x)
            x = "rebound"
            return inner
        def reads_module():
            return use(x)
        def declares_global():
            global x
            x = "global"
            return use(x)
        def comprehension(rows):
            return [use(x) for x in rows]
        """,
    )
    flow = DataFlow(ctx)
    uses = [reaching(ctx, flow, call) for call in calls_to(ctx, "use")]
    assert uses == [
        ["parameter", '"rebound"'],  # a closure sees every binding of the enclosing function
        ['"module"'],
        ['"global"'],
        ["rows"],  # one element of `rows`
    ]


@pytest.mark.parametrize(
    ("expression", "state", "values"),
    [
        ('"SELECT 1"', ValueState.STATIC, []),
        ('f"SELECT * FROM {TABLE} LIMIT {int(n)}"', ValueState.STATIC, []),
        ('f"SELECT * FROM t WHERE name = \'{name}\'"', ValueState.DYNAMIC, ["name"]),
        ('"SELECT * FROM " + name', ValueState.DYNAMIC, ["name"]),
        ('"WHERE a = %s AND b = %s" % (n, name)', ValueState.DYNAMIC, ["n", "name"]),
        ('"WHERE id IN ({})".format(", ".join(marks))', ValueState.STATIC, []),
        ('" AND ".join(clauses)', ValueState.DYNAMIC, ["name"]),
        ('ORDER[name]', ValueState.STATIC, []),
        ('"DESC" if n else "ASC"', ValueState.STATIC, []),
        ("name", ValueState.OPAQUE, []),
    ],
)
def test_string_flow_tells_constants_from_interpolated_values(
    tmp_path: Path, expression: str, state: ValueState, values: list[str]
) -> None:
    ctx = analyse(
        tmp_path,
        f"""
        TABLE = "users"
        ORDER = {{"name": "users.name", "new": "users.id DESC"}}
        def f(name, n, ids):
            marks = [f":id{{i}}" for i in range(len(ids))]
            clauses = ["active"]
            clauses.append(f"name = '{{name}}'")
            probe({expression})
        """,
    )
    value = StringFlow(DataFlow(ctx)).value(calls_to(ctx, "probe")[0].args[0])
    assert value.state is state
    assert [source_segment(ctx, i.value) for i in value.interpolations] == values


def test_string_flow_prefixes_find_literal_url_schemes(tmp_path: Path) -> None:
    ctx = analyse(
        tmp_path,
        """
        import os
        from sqlalchemy import URL
        BASE = "postgresql+psycopg2://app@db/app"
        def f(user, host):
            probe(BASE)
            probe(f"mysql+pymysql://{user}@{host}/shop")
            probe(URL.create("sqlite", database="x.db"))
            probe(BASE.replace("postgresql+psycopg2://", "postgresql+asyncpg://"))
            probe(os.environ["DATABASE_URL"])
        """,
    )
    strings = StringFlow(DataFlow(ctx))
    found = [[p.text for p in strings.prefixes(c.args[0])] for c in calls_to(ctx, "probe")]
    assert found == [
        ["postgresql+psycopg2://app@db/app"],
        ["mysql+pymysql://"],
        ["sqlite://"],
        ["postgresql+asyncpg://"],
        [],
    ]


def test_sqla_objects_know_sessions_engines_and_connections(tmp_path: Path) -> None:
    ctx = analyse(
        tmp_path,
        """
        from typing import Annotated
        import requests
        from fastapi import Depends
        from sqlalchemy.ext.asyncio import AsyncSession
        from sqlalchemy.orm import Session
        from app.db import SessionLocal, engine

        def get_db():
            db = SessionLocal()
            try:
                yield db
            finally:
                db.close()

        DbDep = Annotated[Session, Depends(get_db)]

        class Repo:
            def __init__(self, session: Session):
                self.session = session
            def run(self):
                probe(self.session)

        def views(a: DbDep, b=Depends(get_db), c: AsyncSession | None = None):
            probe(a)
            probe(b)
            probe(c)
            with SessionLocal.begin() as d:
                probe(d)
            with engine.connect() as e:
                probe(e)
            probe(requests.Session())

        async def legacy(session: AsyncSession):
            await session.run_sync(lambda sync: probe(sync))
        """,
        files={
            "app/db.py": """
                from sqlalchemy import create_engine
                from sqlalchemy.orm import sessionmaker
                engine = create_engine("sqlite://")
                SessionLocal = sessionmaker(engine)
            """,
        },
    )
    objects = SqlaObjects(ctx, DataFlow(ctx))
    kinds = [objects.kind_of(c.args[0]) for c in calls_to(ctx, "probe")]
    assert kinds == [
        ObjectKind.SESSION,  # self.session assigned from an annotated parameter
        ObjectKind.SESSION,  # Annotated alias
        ObjectKind.SESSION,  # Depends() on a generator of this file
        ObjectKind.ASYNC_SESSION,
        ObjectKind.SESSION,  # sessionmaker.begin() from another module
        ObjectKind.CONNECTION,
        None,  # requests.Session() is not SQLAlchemy's
        ObjectKind.SESSION,  # run_sync's sync session
    ]


def test_sqla_objects_know_flask_sqlalchemy(tmp_path: Path) -> None:
    ctx = analyse(
        tmp_path,
        """
        from app.ext import db
        class Post(db.Model):
            id = db.Column(db.Integer, primary_key=True)
        class Plain:
            pass
        probe(db.session)
        probe(db.engine)
        models = [Post, Plain]
        """,
        files={"app/ext.py": "from flask_sqlalchemy import SQLAlchemy\ndb = SQLAlchemy()\n"},
    )
    objects = SqlaObjects(ctx, DataFlow(ctx))
    probes = calls_to(ctx, "probe")
    assert [objects.kind_of(c.args[0]) for c in probes] == [
        ObjectKind.SCOPED_SESSION,
        ObjectKind.ENGINE,
    ]
    listed = next(n.value for n in ctx.tree.body if isinstance(n, ast.Assign))
    assert isinstance(listed, ast.List)
    post, plain = listed.elts
    assert objects.flask_model(post)
    assert not objects.flask_model(plain)


def test_file_context_text_is_the_source_segment_ast_gives(tmp_path: Path) -> None:
    """FileContext.text() splits the file once, where the parser counts lines (CRLF, a
    lone CR; not a form feed, which str.splitlines() would split at) and gives what
    ast.get_source_segment() gives for every node."""
    source = (
        "import sqlalchemy as sa\r\n"
        "\x0cdef f(engine):\r\n"
        "    name = 'naïve — é'\r"
        "    with engine.connect() as c:\n"
        "        return c.execute(\n"
        "            sa.text('SELECT 1'), {'n': name}\n"
        "        ).scalar()\n"
    )
    ctx = analyse(tmp_path, source)
    nodes = [n for n in ast.walk(ctx.tree) if hasattr(n, "end_lineno")]
    assert len(nodes) > 20
    for node in nodes:
        assert ctx.text(node) == (ast.get_source_segment(ctx.source, node) or "")
    assert ctx.text(ctx.tree) == ""
