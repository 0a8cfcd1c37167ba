"""The pytest plugin, run from outside with ``pytester`` on real SQLAlchemy and SQLite."""

from __future__ import annotations

import textwrap

import pytest

MODELS = """
from __future__ import annotations

from sqlalchemy import ForeignKey, create_engine
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(AsyncAttrs, DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts")


def make_engine(path):
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all([User(name=f"user{i}", posts=[Post(title="p")]) for i in range(3)])
        session.commit()
    return engine
"""

CONFTEST = """
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from models import make_engine


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(tmp_path / "app.db")
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    # Closed at teardown, after the test function: not a leak.
    with Session(engine) as session:
        yield session


@pytest.fixture
async def async_session(engine):
    async_engine = create_async_engine(engine.url.set(drivername="sqlite+aiosqlite"))
    async with AsyncSession(async_engine) as session:
        yield session
    await async_engine.dispose()
"""

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""

N_PLUS_ONE = """
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from models import User


def test_n_plus_one(session):
    for user in session.scalars(select(User)).all():
        assert user.posts


def test_fixed(session):
    for user in session.scalars(select(User).options(selectinload(User.posts))).all():
        assert user.posts
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(models=MODELS, conftest=CONFTEST)
    pytester.makeini(INI)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # A process per run, as users run pytest: nothing cached from the last one.
    return pytester.runpytest_subprocess(*args)


def write_test(pytester: pytest.Pytester, source: str, name: str = "test_app") -> None:
    pytester.makepyfile(**{name: textwrap.dedent(source)})


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        (
            "[tool.sqla-doctor.runtime]\nn-plus-one-treshold = 1\n",
            "unknown key 'n-plus-one-treshold'",
        ),
        ('[tool.sqla-doctor]\nselect = ["SQD9999"]\n', "unknown rule selector 'SQD9999'"),
    ],
    ids=["misspelt-key", "unknown-selector"],
)
def test_a_broken_config_is_shown_and_the_tests_are_watched_with_the_defaults(
    project: pytest.Pytester, table: str, problem: str
) -> None:
    project.makefile(".toml", pyproject=table)
    write_test(project, N_PLUS_ONE)

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"*sqla-doctor: *{problem}*; used the default settings*"])


def test_an_n_plus_one_fails_the_test_with_the_finding_text(project: pytest.Pytester) -> None:
    write_test(project, N_PLUS_ONE)

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_n_plus_one _*",
            "sqla-doctor: 1 finding at or above 'warning' in this test:",
            "test_app.py:9: SQD251 User.posts lazy-loaded 3× from test_app.py:9 "
            "(parents loaded by the query at test_app.py:8) — add "
            ".options(selectinload(User.posts)) to that query",
            '(fix it, or allow it in this test: @pytest.mark.sqla_doctor(allow=["SQD251"]))',
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_app.py::test_n_plus_one - Failed: sqla-doctor*"])
    assert "test_fixed" not in result.stdout.str().split("short test summary")[1]


def test_the_summary_and_the_query_counts_run_under_pytest_7(project: pytest.Pytester) -> None:
    """pytest 7 has no Config.get_verbosity() (8.0 added it), and the plugin loads under any
    pytest a project pins: sqlalchemy-utils' suite (pytest==7.4.4) ran every test under
    --sqla-doctor, then died in the terminal summary with an AttributeError."""
    project.makepyfile(
        pytest7="""
        import sys

        import _pytest.config

        _real = _pytest.config.Config.get_verbosity


        def get_verbosity(self, *args, **kwargs):
            if sys._getframe(1).f_globals["__name__"].startswith("sqla_doctor"):
                raise AttributeError("'Config' object has no attribute 'get_verbosity'")
            return _real(self, *args, **kwargs)


        _pytest.config.Config.get_verbosity = get_verbosity
        """
    )
    write_test(
        project,
        N_PLUS_ONE
        + """

def test_too_many(session, sqla_assert_num_queries):
    with sqla_assert_num_queries(1):
        session.scalars(select(User)).all()
        session.scalars(select(User)).all()
""",
    )

    result = run(project, "-p", "pytest7", "--sqla-doctor", "-v")

    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [
            "Expected to perform 1 queries but 2 were done",
            "1. SELECT users.id, users.name FROM users",
            "*- sqla-doctor -*",
            "3 tests watched, * 1 finding in 1 test",
            "test_app.py::test_n_plus_one",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_without_the_option_the_plugin_costs_nothing(project: pytest.Pytester) -> None:
    project.makepyfile(conftest="")
    write_test(
        project,
        """
        import sys


        def test_nothing_was_imported():
            assert "sqla_doctor.integrations.pytest_plugin" in sys.modules
            assert "sqla_doctor.runtime" not in sys.modules
            assert "sqlalchemy" not in sys.modules
        """,
    )

    result = run(project)

    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*- sqla-doctor -*")


def test_watching_never_installs_the_doctor(project: pytest.Pytester) -> None:
    write_test(
        project,
        """
        from sqla_doctor import runtime


        def test_not_installed(session, sqla_doctor_unit):
            assert sqla_doctor_unit.unit is not None
            assert not runtime.installed()
        """,
    )

    run(project, "--sqla-doctor").assert_outcomes(passed=1)


def test_the_ini_option_watches_every_test(project: pytest.Pytester) -> None:
    project.makeini(INI + "sqla_doctor = true\n")
    write_test(project, N_PLUS_ONE)

    result = run(project)

    result.assert_outcomes(passed=1, failed=1)
    assert run(project, "--no-sqla-doctor").ret == pytest.ExitCode.OK


def test_fail_on_error_lets_warnings_pass_and_lists_them(project: pytest.Pytester) -> None:
    write_test(project, N_PLUS_ONE)

    result = run(project, "--sqla-doctor", "--sqla-doctor-fail-on=error")

    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*- sqla-doctor -*",
            "2 tests watched, 6 queries: 1 finding in 1 test",
            "     1  SQD251 n-plus-one-lazy-load",
            "",
            "test_app.py::test_n_plus_one",
            "  test_app.py:9: SQD251 User.posts lazy-loaded 3×*",
        ]
    )


def test_the_marker_allows_findings_by_code_name_or_subject(project: pytest.Pytester) -> None:
    write_test(
        project,
        """
        import pytest
        from sqlalchemy import select

        from models import User


        def load_all(session):
            for user in session.scalars(select(User)).all():
                assert user.posts


        @pytest.mark.sqla_doctor(allow=["SQD251"])
        def test_by_code(session):
            load_all(session)


        @pytest.mark.sqla_doctor(allow=["n-plus-one-lazy-load"])
        def test_by_name(session):
            load_all(session)


        @pytest.mark.sqla_doctor(allow=["User.posts"])
        def test_by_subject(session):
            load_all(session)


        @pytest.mark.sqla_doctor(allow=["SQD251:User.author"])
        def test_another_subject_is_not_allowed(session):
            load_all(session)


        @pytest.mark.sqla_doctor(allow=["n-plus-one-lazyload"])
        def test_a_typo_is_an_error(session):
            load_all(session)
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=3, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_a_typo_is_an_error*",
            "@pytest.mark.sqla_doctor: unknown rule 'n-plus-one-lazyload': "
            "not a code or name of sqla-doctor",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED *test_another_subject_is_not_allowed*"])
    result.stdout.fnmatch_lines(
        ["4 tests watched, 16 queries: 1 finding in 1 test (3 allowed by markers)"]
    )


def test_the_marker_watches_one_test_without_the_option(project: pytest.Pytester) -> None:
    write_test(
        project,
        N_PLUS_ONE
        + textwrap.dedent(
            """
            import pytest


            @pytest.mark.sqla_doctor(fail_on="warning")
            def test_marked(session):
                test_n_plus_one(session)
            """
        ),
    )

    result = run(project)

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_app.py::test_marked - Failed: sqla-doctor*"])
    result.stdout.fnmatch_lines(["1 tests watched, 4 queries: 1 finding in 1 test"])


def test_a_session_left_open_fails_at_teardown(project: pytest.Pytester) -> None:
    write_test(
        project,
        """
        from sqlalchemy import text
        from sqlalchemy.orm import Session


        def test_leaks(engine):
            session = Session(engine)
            session.execute(text("SELECT 1"))


        def test_closed_by_its_fixture(session):
            session.execute(text("SELECT 1"))
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaks*",
            "*test_app.py:7: SQD151 Session whose transaction began at *test_app.py:7 still "
            "holds its connection at the end of the unit of work*",
        ]
    )


def test_a_fixture_returning_a_connection_is_told_to_yield_it_from_a_with_block(
    project: pytest.Pytester,
) -> None:
    """`with engine.connect() as connection:` around the fixture's `return` would close
    the connection before the test runs: the fix is the `yield` inside that block."""
    write_test(
        project,
        """
        import pytest
        from sqlalchemy import text


        @pytest.fixture
        def connection(engine):
            return engine.connect()


        @pytest.fixture
        def closed_connection(engine):
            with engine.connect() as connection:
                yield connection


        def test_returned(connection):
            assert connection.execute(text("SELECT 1")).scalar() == 1


        def test_yielded(closed_connection):
            assert closed_connection.execute(text("SELECT 1")).scalar() == 1
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_returned*",
            "*test_app.py:7: SQD154 connection checked out at *test_app.py:7 is still checked "
            "out at the end of the unit of work — the pytest fixture hands it out and never "
            "closes it: `with engine.connect() as connection: yield connection` closes it at "
            "the fixture's teardown, after the test",
        ]
    )
    # The fixed twin: one error, test_returned's.
    assert "ERROR at teardown of test_yielded" not in result.stdout.str()


def test_writes_a_fixture_discards_at_teardown_are_not_a_forgotten_commit(
    project: pytest.Pytester,
) -> None:
    """The fixture's close without commit() is how a test leaves the data as it found it;
    a function of the application that closes its own session without one is still
    losing its writes, whoever calls it."""
    project.makepyfile(
        service="""
        from sqlalchemy.orm import Session

        from models import User


        def rename(engine, user_id, name):
            with Session(engine) as session:
                session.get(User, user_id).name = name
                session.flush()
        """
    )
    write_test(
        project,
        """
        import pytest
        from sqlalchemy import Connection, select, text
        from sqlalchemy.orm import Session

        from models import User
        from service import rename


        @pytest.fixture
        def connection(engine):
            with engine.connect() as connection:
                yield connection


        def test_writes_through_the_fixture(session):
            session.add(User(name="new"))
            assert session.scalars(select(User).where(User.name == "new")).one()


        def test_core_writes_through_the_fixture(connection):
            connection.execute(text("UPDATE users SET name = 'x'"))


        def test_calls_the_service(engine):
            rename(engine, 1, "renamed")
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_calls_the_service _*",
            "service.py:7: SQD152 Session closed at service.py:7 without commit(): the "
            "flushed writes (1 row(s) updated) were rolled back*",
        ]
    )


WEB_APPS = """
from fastapi import Depends, FastAPI
from flask import Flask
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from models import Base, Post, User

engine = create_engine(
    "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
)
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add_all([Post(title=f"p{i}", author=User(name=f"u{i}")) for i in range(6)])
    session.commit()

api = FastAPI()


def get_session():
    with Session(engine) as session:
        yield session


@api.get("/posts/{post_id}")
def read_post(post_id: int, session: Session = Depends(get_session)):
    post = session.get(Post, post_id)
    return {"title": post.title, "author": post.author.name}


@api.get("/posts")
def list_posts(session: Session = Depends(get_session)):
    return [{"author": post.author.name} for post in session.scalars(select(Post))]


flask_app = Flask(__name__)


@flask_app.get("/posts/<int:post_id>")
def flask_read_post(post_id):
    with Session(engine) as session:
        post = session.get(Post, post_id)
        return {"title": post.title, "author": post.author.name}
"""


def test_a_test_client_calling_an_endpoint_per_item_is_not_an_n_plus_one(
    project: pytest.Pytester,
) -> None:
    """Six requests for six posts run the endpoint's get() and lazy load six times in
    one test, each in a request of its own: no loop of the program runs them. A loop
    inside one endpoint is still an N+1."""
    project.makepyfile(web=WEB_APPS)
    write_test(
        project,
        """
        import warnings

        with warnings.catch_warnings():
            # Newer Starlette asks for httpx2, and this project's pytest.ini makes
            # warnings errors.
            warnings.simplefilter("ignore")
            from fastapi.testclient import TestClient

        from web import api, flask_app


        def test_each_post_through_fastapi():
            client = TestClient(api)
            for post_id in range(1, 7):
                assert client.get(f"/posts/{post_id}").status_code == 200


        def test_each_post_through_flask():
            client = flask_app.test_client()
            for post_id in range(1, 7):
                assert client.get(f"/posts/{post_id}").status_code == 200


        def test_the_list_endpoint():
            assert len(TestClient(api).get("/posts").json()) == 6
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ test_the_list_endpoint _*", "web.py:33: SQD251 Post.author lazy-loaded 6× *"]
    )
    assert "SQD252" not in result.stdout.str()


def test_requests_whose_helper_opens_a_session_per_call_are_not_a_loop(
    project: pytest.Pytester,
) -> None:
    """sqladmin's views load their object through _run_query(), which opens a session
    of its own: a test posting to the edit page five times failed with 'SELECT … FROM
    users ran 8× ... _run_query() runs it in a new session on each call, and the loop at
    sqladmin/models.py:924 calls _run_query() once per item', naming a line in no loop.
    The same helper called per id inside one request is still reported."""
    project.makepyfile(
        web="""
        from flask import Flask
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session
        from sqlalchemy.pool import StaticPool

        from models import Base, Post, User

        engine = create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all([Post(title=f"p{i}", author=User(name=f"u{i}")) for i in range(6)])
            session.commit()

        app = Flask(__name__)


        def title_of(post_id):
            with Session(engine) as session:
                return session.get(Post, post_id).title


        @app.get("/posts/<int:post_id>")
        def read_post(post_id):
            return {"title": title_of(post_id)}


        @app.get("/titles")
        def titles():
            return {"titles": [title_of(post_id) for post_id in range(1, 7)]}
        """
    )
    write_test(
        project,
        """
        from web import app


        def test_each_post_in_turn():
            client = app.test_client()
            assert client.get("/posts/1").status_code == 200
            assert client.get("/posts/2").status_code == 200
            assert client.get("/posts/3").status_code == 200
            assert client.get("/posts/1").status_code == 200
            assert client.get("/posts/2").status_code == 200
            assert client.get("/posts/3").status_code == 200


        def test_each_post_in_a_loop():
            client = app.test_client()
            for post_id in range(1, 7):
                assert client.get(f"/posts/{post_id}").status_code == 200


        def test_the_titles_endpoint():
            assert len(app.test_client().get("/titles").json["titles"]) == 6
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_the_titles_endpoint _*",
            "web.py:21: SQD252 SELECT … FROM posts ran 6× from web.py:21 with 6 different "
            "parameter sets — title_of() runs it in a new session on each call, and the "
            "loop at web.py:31 calls title_of() once per item*",
        ]
    )


def test_a_loop_inside_each_requests_session_is_not_a_loop_over_requests(
    project: pytest.Pytester,
) -> None:
    """sqladmin's edit view loads one object in its session and sets the form's fields
    in a loop, the relationship field's setattr() lazy-loading the old collection: three
    edits of the same user failed with 'User.addresses lazy-loaded 3× ... (each User
    loaded by its own query)', since that loop was on the stack. It runs inside the one
    session of each request; a loop that opens a session per item is still reported."""
    project.makepyfile(
        web="""
        from flask import Flask
        from sqlalchemy import create_engine
        from sqlalchemy.orm import Session
        from sqlalchemy.pool import StaticPool

        from models import Base, Post, User

        engine = create_engine(
            "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
        )
        Base.metadata.create_all(engine)
        with Session(engine) as session:
            session.add_all([User(name=f"u{i}", posts=[Post(title="p")]) for i in range(6)])
            session.commit()

        app = Flask(__name__)


        def form_of(user):
            form = {}
            for name in ("name", "posts"):
                value = getattr(user, name)
                form[name] = value if isinstance(value, str) else len(value)
            return form


        @app.get("/users/<int:user_id>/form")
        def edit_form(user_id):
            with Session(engine) as session:
                return form_of(session.get(User, user_id))


        @app.get("/forms")
        def forms():
            found = []
            for user_id in range(1, 7):
                with Session(engine) as session:
                    found.append(form_of(session.get(User, user_id)))
            return {"forms": found}
        """
    )
    write_test(
        project,
        """
        from web import app


        def test_the_same_form_three_times():
            client = app.test_client()
            assert client.get("/users/1/form").status_code == 200
            assert client.get("/users/1/form").status_code == 200
            assert client.get("/users/1/form").status_code == 200


        def test_each_users_form():
            client = app.test_client()
            for user_id in range(1, 7):
                assert client.get(f"/users/{user_id}/form").status_code == 200


        def test_every_form_at_once():
            assert len(app.test_client().get("/forms").json["forms"]) == 6
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*_ test_every_form_at_once _*", "web.py:22: SQD251 User.posts lazy-loaded 6× *"]
    )


def test_writes_a_fixture_finalizer_discards_are_not_a_forgotten_commit(
    project: pytest.Pytester,
) -> None:
    """sqlalchemy-utils' session fixture hands pytest a teardown() through
    request.addfinalizer(), which calls close_all_sessions(): a test that only add()s an
    object failed with 'closed at conftest.py without commit()'. A session the test
    function itself closes without a commit is still reported."""
    write_test(
        project,
        """
        import pytest
        from sqlalchemy.orm import Session, close_all_sessions

        from models import User


        @pytest.fixture
        def finalized_session(request, engine):
            session = Session(engine)

            def teardown():
                close_all_sessions()

            request.addfinalizer(teardown)
            return session


        def test_adds_through_the_fixture(finalized_session):
            finalized_session.add(User(name="new"))
            finalized_session.flush()


        def test_closes_its_own_session(engine):
            session = Session(engine)
            session.add(User(name="lost"))
            session.flush()
            session.close()
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_closes_its_own_session _*",
            "test_app.py:27: SQD152 Session closed at test_app.py:27 without commit(): the "
            "flushed writes (1 User inserted) were rolled back*",
        ]
    )


def test_what_a_wider_scoped_fixture_opened_is_judged_when_it_is_torn_down(
    project: pytest.Pytester,
) -> None:
    # Set up inside the first test's unit, the module's fixtures close their session and
    # connection tests later: not the first test's leaks. The one that never closes its
    # session is reported at the teardown of the module's last test, which ends it.
    write_test(
        project,
        """
        import pytest
        from sqlalchemy import select, text
        from sqlalchemy.orm import Session

        from models import User, make_engine


        @pytest.fixture(scope="module")
        def db(tmp_path_factory):
            engine = make_engine(tmp_path_factory.mktemp("db") / "app.db")
            with Session(engine) as session:
                session.add(User(name="fixture"))
                session.commit()
                yield session
            engine.dispose()


        @pytest.fixture(scope="module")
        def connection(db):
            with db.get_bind().connect() as connection:
                connection.execute(text("SELECT 1"))
                yield connection


        def test_first(db, connection):
            assert db.scalar(select(User).where(User.name == "fixture"))
            assert connection.execute(text("SELECT 2")).scalar() == 2


        def test_second(db):
            assert len(db.scalars(select(User)).all()) == 4
        """,
        name="test_closed_later",
    )
    write_test(
        project,
        """
        import pytest
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        from models import User, make_engine


        @pytest.fixture(scope="module")
        def db(tmp_path_factory):
            session = Session(make_engine(tmp_path_factory.mktemp("db") / "app.db"))
            session.add(User(name="fixture"))
            session.commit()
            return session


        def test_first(db):
            assert db.scalar(select(User).where(User.name == "fixture"))


        def test_last(db):
            assert len(db.scalars(select(User)).all()) == 4
        """,
        name="test_never_closed",
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_last*",
            "*test_never_closed.py:17: SQD151 Session whose transaction began at "
            "*test_never_closed.py:17 still holds its connection at the end of the unit*",
        ]
    )


def test_assert_num_queries(project: pytest.Pytester) -> None:
    write_test(
        project,
        """
        from sqlalchemy import select, text

        from models import User


        def test_exact(session, sqla_assert_num_queries):
            with sqla_assert_num_queries(1) as captured:
                session.scalars(select(User)).all()
            assert captured.count == 1


        def test_too_many(session, sqla_assert_num_queries):
            with sqla_assert_num_queries(1):
                for user in session.scalars(select(User)).all():
                    assert user.posts


        def test_too_few(session, sqla_assert_num_queries):
            with sqla_assert_num_queries(2):
                session.execute(text("SELECT 1"))


        def test_at_most(session, sqla_assert_max_num_queries):
            with sqla_assert_max_num_queries(2):
                session.execute(text("SELECT 1"))
            with sqla_assert_max_num_queries(1):
                session.execute(text("SELECT 2"))
                session.execute(text("SELECT 3"))


        def test_savepoints_ignored(session, sqla_assert_num_queries):
            with sqla_assert_num_queries(1, ignore=r"^(SAVEPOINT|RELEASE)") as captured:
                with session.begin_nested():
                    session.execute(text("SELECT 1"))
            assert [s.split()[0] for s in captured.ignored] == ["SAVEPOINT", "RELEASE"]
        """,
    )

    result = run(project)

    result.assert_outcomes(passed=2, failed=3)
    result.stdout.fnmatch_lines(
        [
            "*_ test_too_many _*",
            "Expected to perform 1 queries but 4 were done (add -v option to show queries)",
            "*_ test_too_few _*",
            "Expected to perform 2 queries but 1 were done (add -v option to show queries)",
            "*_ test_at_most _*",
            "Expected to perform 1 queries or less but 2 were done (add -v option to show queries)",
        ]
    )

    verbose = run(project, "-v", "-k", "too_many or at_most")

    verbose.stdout.fnmatch_lines(
        [
            "Expected to perform 1 queries but 4 were done",
            "",
            "Queries:",
            "========",
            "",
            "1. SELECT users.id, users.name FROM users",
            "2. SELECT posts.id*FROM posts WHERE ? = posts.author_id",
            "3. SELECT posts.id*",
            "4. SELECT posts.id*",
        ]
    )
    verbose.stdout.fnmatch_lines(["1. SELECT 2", "2. SELECT 3"])


def test_the_unit_fixture_and_counts_inside_a_watched_test(project: pytest.Pytester) -> None:
    write_test(
        project,
        """
        from sqlalchemy import text


        def test_unit(session, sqla_doctor_unit, sqla_assert_num_queries):
            session.execute(text("SELECT 1"))
            with sqla_assert_num_queries(2):
                session.execute(text("SELECT 2"))
                session.execute(text("SELECT 3"))
            assert sqla_doctor_unit.query_count == 3
            assert sqla_doctor_unit.statements == ["SELECT 1", "SELECT 2", "SELECT 3"]
            assert sqla_doctor_unit.findings == []
        """,
    )

    result = run(project)

    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["1 tests watched, 3 queries: no findings"])


def test_async_tests_are_units_of_work(project: pytest.Pytester) -> None:
    write_test(
        project,
        """
        from sqlalchemy import select
        from sqlalchemy.orm import selectinload

        from models import User


        async def test_async_n_plus_one(async_session):
            for user in (await async_session.scalars(select(User))).all():
                assert await user.awaitable_attrs.posts


        async def test_async_fixed(async_session, sqla_assert_num_queries):
            with sqla_assert_num_queries(2):
                query = select(User).options(selectinload(User.posts))
                for user in (await async_session.scalars(query)).all():
                    assert user.posts
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_async_n_plus_one _*",
            "*test_app.py:9: SQD251 User.posts lazy-loaded 3× from *test_app.py:9*",
        ]
    )


def test_findings_of_a_test_that_fails_anyway_are_shown_beside_its_error(
    project: pytest.Pytester,
) -> None:
    write_test(
        project,
        """
        from sqlalchemy import select

        from models import User


        def test_fails_anyway(session):
            posts = [len(user.posts) for user in session.scalars(select(User)).all()]
            assert posts == []
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*AssertionError*", "*- Captured sqla-doctor call -*", "*SQD251 User.posts*"]
    )


def test_xdist_workers_report_and_the_summary_is_combined(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    write_test(project, N_PLUS_ONE)
    write_test(project, N_PLUS_ONE, name="test_other")

    result = run(project, "-p", "xdist", "-n", "2", "--sqla-doctor")

    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*- sqla-doctor -*",
            "4 tests watched, 12 queries: 2 findings in 2 tests",
            "     2  SQD251 n-plus-one-lazy-load",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED test_app.py::test_n_plus_one*"])
    result.stdout.fnmatch_lines(["FAILED test_other.py::test_n_plus_one*"])


def test_an_unknown_threshold_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makeini(INI + "sqla_doctor_fail_on = warn\n")
    write_test(project, N_PLUS_ONE)

    result = run(project)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*sqla_doctor_fail_on must be one of info, warning, error*"])


def test_an_async_fixture_closing_its_session_discards_the_tests_writes_on_purpose(
    project: pytest.Pytester,
) -> None:
    """pytest-asyncio tears an async ``yield`` fixture down by awaiting its generator's
    ``__anext__()``: the ``async with`` closing the session is found through it, as a
    sync fixture's ``with`` is on the stack. A test's own ``async with`` is reported."""
    write_test(
        project,
        """
        from sqlalchemy.ext.asyncio import AsyncSession

        from models import User


        async def test_adds_through_the_async_fixture(async_session):
            async_session.add(User(name="new"))
            await async_session.flush()


        async def test_closes_its_own_async_session(async_session):
            async with AsyncSession(async_session.bind) as session:
                session.add(User(name="lost"))
                await session.flush()
        """,
    )

    result = run(project, "--sqla-doctor")

    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_closes_its_own_async_session _*",
            "test_app.py:12: SQD152 Session closed at test_app.py:12 without commit(): the "
            "flushed writes (1 User inserted) were rolled back*",
        ]
    )
