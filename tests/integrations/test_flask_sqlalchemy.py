"""A Flask-SQLAlchemy app under track(): `db.Model`, `Model.query`, `db.session` (a
scoped_session the request's teardown removes). The fixes name `db.session`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

import sqla_doctor
from sqla_doctor.findings import Finding

from .support import line_of

db = SQLAlchemy()
AUTHORS = 4
# Objects a view keeps across requests: they outlive their request's db.session.
CACHE: dict[int, Any] = {}


class Author(db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(50), unique=True, nullable=False)
    books = db.relationship("Book", back_populates="author")


class Book(db.Model):  # type: ignore[name-defined,misc]
    id = db.Column(db.Integer, primary_key=True)
    title = db.Column(db.String(50), nullable=False)
    author_id = db.Column(db.ForeignKey("author.id"))
    author = db.relationship("Author", back_populates="books")


def make_app(database: Path) -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{database}"
    db.init_app(app)

    @app.get("/authors")
    def authors() -> dict[str, Any]:
        rows = Author.query.all()  # line:model-query
        return {a.name: [b.title for b in a.books] for a in rows}  # line:books

    @app.get("/authors/fixed")
    def authors_fixed() -> dict[str, Any]:
        rows = db.session.scalars(db.select(Author).options(selectinload(Author.books)))
        return {a.name: [b.title for b in a.books] for a in rows}

    @app.post("/authors/<name>")
    def create(name: str) -> dict[str, Any]:
        author = Author(name=name)
        db.session.add(author)  # line:add
        if "-flush" in name:
            db.session.flush()
        created = {"id": author.id} if "-id" in name else {}  # line:pending-id
        if "-forgotten" not in name:
            db.session.commit()
        return created

    @app.post("/authors/<int:author_id>/rename")
    def rename(author_id: int) -> dict[str, Any]:
        author = db.session.get(Author, author_id)  # line:rename-get
        author.name = author.name.upper()
        if request.args.get("commit"):
            db.session.commit()
        return {}

    @app.post("/authors/<int:author_id>/retitle")
    def retitle(author_id: int) -> dict[str, Any]:
        author = db.get_or_404(Author, author_id)  # line:get-or-404
        author.name = f"{author.name} (retitled)"
        if request.args.get("commit"):
            db.session.commit()
        return {}

    @app.get("/authors/names")
    def names() -> list[str]:
        ids = request.args.getlist("id", type=int)
        if request.args.get("session"):
            return [db.session.get(Author, i).name for i in ids]  # line:names-get
        return [db.get_or_404(Author, i).name for i in ids]  # line:names-get-or-404

    @app.post("/books/stamp")
    def stamp() -> list[str]:
        books = db.session.scalars(db.select(Book)).all()
        for book in books:
            book.title = f"{book.title}!"
        db.session.commit()  # line:stamp-commit
        return [book.title for book in books]  # line:stamp-read

    @app.get("/cache/<int:author_id>")
    def cache(author_id: int) -> dict[str, Any]:
        CACHE[author_id] = db.session.get(Author, author_id)  # line:cached-get
        return {}

    @app.get("/cache/<int:author_id>/books")
    def cached_books(author_id: int) -> dict[str, Any]:
        return {"books": [b.title for b in CACHE[author_id].books]}  # line:cached-books

    @app.post("/authors/<name>/again")
    def create_again(name: str) -> dict[str, Any]:
        try:
            db.session.add(Author(name=name))
            db.session.commit()  # line:failed-commit
        except IntegrityError:
            if name.endswith("-rolled-back"):
                db.session.rollback()
        return {"count": db.session.query(Author).count()}  # line:reuse

    @app.cli.command("import-authors")
    @click.option("--commit", is_flag=True)
    def import_authors(commit: bool) -> None:
        for number in range(3):
            db.session.add(Author(name=f"imported{number}"))  # line:cli-add
        if commit:
            db.session.commit()

    return app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    app = make_app(tmp_path / "flask.db")
    with app.app_context():
        db.create_all()
        for i in range(AUTHORS):
            db.session.add(Author(name=f"author{i}", books=[Book(title=f"b{i}"), Book(title="x")]))
        db.session.commit()
    yield app
    with app.app_context():
        db.engine.dispose()


def findings(app: Flask, method: str, path: str) -> list[Finding]:
    with sqla_doctor.track(mode="collect") as uow:
        response = app.test_client().open(path, method=method)
    assert response.status_code in (200, 500)
    return uow.findings


def test_model_query_then_relationship_per_row_is_an_n_plus_one(app: Flask) -> None:
    (finding,) = findings(app, "GET", "/authors")
    assert finding.code == "SQD251"
    assert finding.location.line == line_of("books")
    assert f"Author.books lazy-loaded {AUTHORS}×" in finding.message
    assert finding.related[0].location.line == line_of("model-query")
    assert finding.fix_hint == ".options(selectinload(Author.books))"


def test_selectinload_through_db_select_is_the_silent_twin(app: Flask) -> None:
    assert findings(app, "GET", "/authors/fixed") == []


def test_a_forgotten_db_session_commit_names_db_session(app: Flask) -> None:
    (finding,) = findings(app, "POST", "/authors/new-forgotten")
    assert finding.code == "SQD152"
    # The teardown's remove() closed the session, in Flask-SQLAlchemy's code: the finding
    # points at the line that added the object.
    assert finding.location.line == line_of("add")
    assert finding.message.endswith(
        "call `db.session.commit()` before the request or job ends (db.session is a "
        "scoped_session: its remove() discards what was not committed)"
    )
    assert finding.fix_hint == "db.session.commit()"


def test_a_forgotten_commit_of_a_changed_object_points_at_the_view(app: Flask) -> None:
    """A changed object leaves no line of its own and the teardown closed the session:
    the finding points at the view's line where the session began its transaction."""
    (finding,) = findings(app, "POST", "/authors/1/rename")
    assert finding.code == "SQD152"
    assert finding.location.line == line_of("rename-get")
    assert "changes to 1 Author were never written" in finding.message
    teardown, began = finding.related
    assert teardown.message == (
        "where it happened: in flask_sqlalchemy, with no line of the program on the stack"
    )
    assert (began.location.line, began.message) == (
        line_of("rename-get"),
        "the session's transaction began here",
    )
    assert finding.fix_hint == "db.session.commit()"


def test_a_forgotten_commit_after_db_get_or_404_names_db_session(app: Flask) -> None:
    # The transaction began in db.get_or_404(): the line names `db`, whose session is
    # the scoped_session the fix must name.
    (finding,) = findings(app, "POST", "/authors/1/retitle")
    assert finding.code == "SQD152"
    assert finding.location.line == line_of("get-or-404")
    assert finding.fix_hint == "db.session.commit()"
    assert "call `db.session.commit()` before the request or job ends" in finding.message


def test_db_get_or_404_per_id_is_named_as_written(app: Flask) -> None:
    with app.app_context():
        db.session.add_all(Author(name=f"more{i}") for i in range(AUTHORS))
        db.session.commit()
    ids = "&".join(f"id={i}" for i in range(1, 2 * AUTHORS + 1))
    found = [f for f in findings(app, "GET", f"/authors/names?{ids}") if f.code == "SQD252"]
    assert [f.location.line for f in found] == [line_of("names-get-or-404")]
    assert "db.get_or_404() runs a SELECT for each Author" in found[0].message
    found = [
        f for f in findings(app, "GET", f"/authors/names?{ids}&session=1") if f.code == "SQD252"
    ]
    assert [f.location.line for f in found] == [line_of("names-get")]
    assert "session.get() runs a SELECT for each Author" in found[0].message


def test_a_commit_after_db_get_or_404_is_the_silent_twin(app: Flask) -> None:
    assert findings(app, "POST", "/authors/1/retitle?commit=1") == []


def test_objects_read_after_db_session_commit_are_told_the_extensions_option(
    app: Flask,
) -> None:
    # Flask-SQLAlchemy makes the sessionmaker: expire_on_commit goes to SQLAlchemy().
    (finding,) = findings(app, "POST", "/books/stamp")
    assert finding.code == "SQD253"
    assert finding.location.line == line_of("stamp-read")
    assert finding.message.endswith(
        "expired them: create the extension with SQLAlchemy(app, session_options="
        '{"expire_on_commit": False}), or read the values before committing'
    )
    assert finding.fix_hint == 'SQLAlchemy(app, session_options={"expire_on_commit": False})'


def test_a_committed_change_is_the_silent_twin(app: Flask) -> None:
    assert findings(app, "POST", "/authors/1/rename?commit=1") == []


def test_db_session_commit_is_the_silent_twin(app: Flask) -> None:
    assert findings(app, "POST", "/authors/new") == []


def test_reading_the_id_before_flush_names_db_session_flush(app: Flask) -> None:
    (finding,) = findings(app, "POST", "/authors/new-id")
    assert finding.code == "SQD351"
    assert finding.location.line == line_of("pending-id")
    assert finding.message.endswith("call db.session.flush() before reading it")


def test_flush_before_reading_the_id_is_the_silent_twin(app: Flask) -> None:
    assert findings(app, "POST", "/authors/new-flush-id") == []


def test_db_session_used_after_a_failed_commit_names_its_rollback(app: Flask) -> None:
    (finding,) = findings(app, "POST", "/authors/author0/again")
    assert finding.code == "SQD155"
    assert finding.location.line == line_of("reuse")
    assert finding.related[0].location.line == line_of("failed-commit")
    assert finding.fix_hint == "db.session.rollback()"


def test_db_session_rolled_back_after_a_failed_commit_is_the_silent_twin(app: Flask) -> None:
    with app.app_context():
        db.session.add(Author(name="author-rolled-back"))
        db.session.commit()
    assert findings(app, "POST", "/authors/author-rolled-back/again") == []


def test_an_object_kept_across_requests_is_explained_by_the_teardown(app: Flask) -> None:
    """The teardown of the request that loaded it removed db.session: no line of the
    program closed it, and the finding says so rather than pointing into the library."""
    with sqla_doctor.track(mode="collect") as uow:
        client = app.test_client()
        client.get("/cache/1")
        response = client.get("/cache/1/books")
    assert response.status_code == 500
    (finding,) = uow.findings
    assert finding.code == "SQD254"
    assert finding.location.line == line_of("cached-books")
    assert "its session, db.session, was removed when the app context of the request " in (
        finding.message
    )
    assert "flask_sqlalchemy/extension.py:" in finding.message
    assert f":{line_of('cached-get')}" in finding.message
    assert finding.message.endswith(
        "keep its key and load it again in each request (`db.session.get(Author, id)`)"
    )


@pytest.mark.parametrize("commit", [False, True], ids=["forgotten", "committed"])
def test_a_cli_command_run_by_the_test_cli_runner_points_at_the_command(
    app: Flask, commit: bool
) -> None:
    # click's CliRunner.invoke() runs the command in-process, as a test client runs a
    # view: the test's line that invokes it is not where the commit is missing.
    with sqla_doctor.track(mode="collect") as uow:
        result = app.test_cli_runner().invoke(
            args=["import-authors", *(["--commit"] if commit else [])]
        )
    assert result.exit_code == 0, result.output
    if commit:
        assert not uow.findings
        return
    (finding,) = uow.findings
    assert finding.code == "SQD152"
    assert finding.location.line == line_of("cli-add")
    assert finding.fix_hint == "db.session.commit()"
