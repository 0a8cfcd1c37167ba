"""Session factories built and returned by a function (app factories, ``get_sessionmaker()``)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from sqla_doctor.config import Config
from sqla_doctor.findings import Kind
from sqla_doctor.registry import registry
from sqla_doctor.static.engine import Engine, selected_codes
from sqla_doctor.static.index.names import ModuleNames, NameResolver
from sqla_doctor.static.index.sessions import FactoryFacts, returned_factories

ALL_CODES = selected_codes(registry(), Config(), None, None, (Kind.STATIC,))


def _factory(source: str, function: str) -> FactoryFacts | None:
    tree = ast.parse(textwrap.dedent(source))
    resolver = NameResolver(ModuleNames.collect(tree, "app.db", False))
    node = next(
        n
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function
    )
    return returned_factories(resolver, "app.db.Session", node)[0]


def test_a_returned_sessionmaker_is_a_factory_named_after_the_module_level_name() -> None:
    facts = _factory(
        """
        from sqlalchemy import create_engine
        from sqlalchemy.orm import sessionmaker
        engine = create_engine("sqlite://")
        def get_sessionmaker():
            return sessionmaker(bind=engine, expire_on_commit=False)
        """,
        "get_sessionmaker",
    )
    assert facts is not None
    assert (facts.qualname, facts.kind, facts.is_async) == ("app.db.Session", "sessionmaker", False)
    assert facts.options == {"bind": "engine", "expire_on_commit": "False"}
    assert facts.bind == "app.db.engine"


def test_a_factory_assigned_then_returned_with_a_local_engine_has_no_module_bind() -> None:
    facts = _factory(
        """
        from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
        engine = None
        async def create_app(url):
            engine = create_async_engine(url)
            factory = async_sessionmaker(engine)
            return factory
        """,
        "create_app",
    )
    assert facts is not None
    assert (facts.kind, facts.is_async, facts.bind) == ("async_sessionmaker", True, None)
    assert "expire_on_commit" not in facts.options


def test_a_scoped_session_around_a_sessionmaker_is_scoped() -> None:
    facts = _factory(
        """
        from sqlalchemy.orm import scoped_session, sessionmaker
        def make_session():
            return scoped_session(sessionmaker(bind=engine))
        """,
        "make_session",
    )
    assert facts is not None
    assert (facts.kind, facts.scoped) == ("scoped_session", True)


def test_functions_that_return_something_else_or_choose_among_factories_are_not() -> None:
    source = """
        from sqlalchemy.orm import sessionmaker
        def get_session():
            return sessionmaker(bind=engine)()
        def choose(readonly):
            if readonly:
                return sessionmaker(bind=replica)
            return sessionmaker(bind=primary)
        def rebound():
            factory = sessionmaker(bind=primary)
            factory = wrap(factory)
            return factory
        def helper():
            def inner():
                return sessionmaker()
            return inner
        def other():
            return make_thing(bind=engine)
        """
    for name in ("get_session", "choose", "rebound", "helper", "other"):
        assert _factory(source, name) is None, name


def _check(tmp_path: Path, files: dict[str, str]) -> list[tuple[str, str, int]]:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source), encoding="utf-8")
    result = Engine(Config(root=tmp_path), ALL_CODES).check_paths([tmp_path])
    return sorted((f.code, f.location.path, f.location.line) for f in result.findings)


_APP_FACTORY = {
    "app/__init__.py": "",
    "app/db.py": """
        from sqlalchemy import create_engine
        from sqlalchemy.orm import sessionmaker

        def get_sessionmaker(url):
            engine = create_engine(url, pool_pre_ping=True)
            return sessionmaker(bind=engine)

        SessionLocal = get_sessionmaker("sqlite://")
        """,
}


def test_a_module_level_name_bound_to_a_returned_factory_is_a_session_factory(
    tmp_path: Path,
) -> None:
    found = _check(
        tmp_path,
        {
            **_APP_FACTORY,
            "app/jobs.py": """
                from app.db import SessionLocal

                def leak(item):
                    session = SessionLocal()
                    session.add(item)
                    session.commit()

                def forget(item):
                    with SessionLocal() as session:
                        session.add(item)
                """,
        },
    )
    assert ("SQD102", "app/jobs.py", 5) in found  # never closed
    assert ("SQD104", "app/jobs.py", 11) in found  # written, never committed


def test_sessions_of_a_returned_factory_used_correctly_stay_silent(tmp_path: Path) -> None:
    found = _check(
        tmp_path,
        {
            **_APP_FACTORY,
            "app/jobs.py": """
                from app.db import SessionLocal

                def save(item):
                    with SessionLocal() as session:
                        session.add(item)
                        session.commit()

                def save_in_block(item):
                    with SessionLocal.begin() as session:
                        session.add(item)
                """,
        },
    )
    assert [f for f in found if f[1] == "app/jobs.py"] == []


def test_expire_on_commit_is_unknown_unless_a_literal_or_absent_decides_it() -> None:
    from sqla_doctor.static.index.sessions import expire_on_commit

    def decided(call: str, default: bool | None = True) -> bool | None:
        node = ast.parse(call, mode="eval").body
        assert isinstance(node, ast.Call)
        return expire_on_commit(node, default)

    assert decided("sessionmaker(engine)") is True
    assert decided("sessionmaker(engine, expire_on_commit=False)") is False
    assert decided("sessionmaker(engine, expire_on_commit=settings.EXPIRE)") is None
    assert decided("sessionmaker(engine, **opts)") is None
    # Named explicitly, the literal wins: `**opts` repeating it would be a TypeError.
    assert decided("sessionmaker(engine, **opts, expire_on_commit=True)") is True
    # A factory's call: its own default unless the call overrides it.
    assert decided("SessionLocal()", default=None) is None
    assert decided("SessionLocal(expire_on_commit=False)", default=True) is False


def test_a_factory_records_expire_on_commit_as_unknown_from_settings_or_options() -> None:
    source = """
        from sqlalchemy import create_engine
        from sqlalchemy.orm import sessionmaker
        engine = create_engine("sqlite://")
        def from_settings():
            return sessionmaker(engine, expire_on_commit=settings.EXPIRE)
        def from_options():
            return sessionmaker(engine, **opts)
        def by_default():
            return sessionmaker(engine)
        """
    names = ("from_settings", "from_options", "by_default")
    found = {name: _factory(source, name) for name in names}
    assert {name: f.expire_on_commit for name, f in found.items() if f is not None} == {
        "from_settings": None,
        "from_options": None,
        "by_default": True,
    }
