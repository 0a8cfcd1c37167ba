"""``sqla-doctor run``: any Python command, instrumented with no code change."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sqla_doctor.runtime import runner

MODELS = """
from sqlalchemy import ForeignKey, create_engine, select
from sqlalchemy.orm import (
    DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload,
)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    posts: Mapped[list["Post"]] = relationship()


class Post(Base):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))


def make_engine():
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(User(name=f"u{i}", posts=[Post()]) for i in range(4))
        session.commit()
    return engine
"""

BAD = """
from models import User, Session, make_engine, select

engine = make_engine()
with Session(engine) as session:
    for user in session.scalars(select(User)).all():
        print(user.name, len(user.posts))
"""

FIXED = """
from models import User, Session, make_engine, select, selectinload

engine = make_engine()
with Session(engine) as session:
    for user in session.scalars(select(User).options(selectinload(User.posts))).all():
        print(user.name, len(user.posts))
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "bad.py").write_text(BAD)
    (tmp_path / "fixed.py").write_text(FIXED)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def report(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


def test_a_script_is_run_instrumented_and_reported(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = project / "report.json"
    code = runner.main(["bad.py"], fail=True, fmt="json", output=str(out))
    assert code == 1
    data = report(out)
    [finding] = data["findings"]
    assert finding["code"] == "SQD251"
    assert finding["location"]["path"] == "bad.py"
    assert finding["location"]["line"] == 7
    assert "parents loaded by the query at bad.py:6" in finding["message"]
    # Creating the schema and seeding it count too: 5 are the listing itself.
    assert data["summary"]["queries"] > 5
    assert f"observed {data['summary']['queries']} statement(s) in 1 process" in (
        capsys.readouterr().err
    )


def test_the_fixed_script_is_clean_and_exits_zero(project: Path) -> None:
    out = project / "report.json"
    assert runner.main(["fixed.py"], fail=True, fmt="json", output=str(out)) == 0
    assert report(out)["findings"] == []


def test_without_fail_findings_do_not_change_the_exit_code(project: Path) -> None:
    assert runner.main(["bad.py"], fail=False, fmt="text", output=str(project / "r.txt")) == 0
    assert "SQD251 User.posts lazy-loaded 4×" in (project / "r.txt").read_text()


def test_python_dash_m_and_the_programs_exit_code(project: Path) -> None:
    (project / "failing.py").write_text(BAD + "\nraise SystemExit(3)\n")
    out = project / "report.json"
    assert runner.main(["-m", "failing"], fail=True, fmt="json", output=str(out)) == 3
    assert [f["code"] for f in report(out)["findings"]] == ["SQD251"]


def test_a_pytest_run_is_instrumented(project: Path) -> None:
    (project / "test_app.py").write_text(
        textwrap.dedent(
            """
            from models import User, Session, make_engine, select

            def test_listing():
                with Session(make_engine()) as session:
                    users = session.scalars(select(User)).all()
                    assert [len(u.posts) for u in users] == [1, 1, 1, 1]
            """
        )
    )
    out = project / "report.json"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_app.py"]
    assert runner.main(argv, fail=True, fmt="json", output=str(out)) == 1
    [finding] = report(out)["findings"]
    assert (finding["location"]["path"], finding["location"]["line"]) == ("test_app.py", 7)


def test_child_processes_are_instrumented_too(project: Path) -> None:
    (project / "parent.py").write_text(
        "import subprocess, sys\nsys.exit(subprocess.call([sys.executable, 'bad.py']))\n"
    )
    out = project / "report.json"
    assert runner.main(["parent.py"], fail=True, fmt="json", output=str(out)) == 1
    assert [f["code"] for f in report(out)["findings"]] == ["SQD251"]


def test_a_program_without_sqlalchemy_says_so(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "plain.py").write_text("print('hello')\n")
    assert runner.main(["plain.py"], fail=True, fmt="text", output=None) == 0
    captured = capsys.readouterr()
    assert "All clean" in captured.err
    assert "never imported SQLAlchemy" in captured.err


def test_a_program_running_sql_on_a_raw_cursor_only_is_not_called_statement_free(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "raw.py").write_text(
        "import contextlib\n"
        "from sqlalchemy import create_engine\n"
        "with contextlib.closing(create_engine('sqlite://').raw_connection()) as raw:\n"
        "    raw.cursor().execute('SELECT 1')\n"
    )
    assert runner.main(["raw.py"], fail=True, fmt="text", output=None) == 0
    err = capsys.readouterr().err
    assert "All clean" in err
    assert (
        "no SQL statement ran through its engines (statements on a DBAPI cursor from "
        "engine.raw_connection() are not seen)"
    ) in err


def test_without_output_the_report_leaves_the_commands_stdout_alone(project: Path) -> None:
    # `sqla-doctor run -- python export.py > rows.csv`, `... --format json -- prog | jq`.
    (project / "export.py").write_text(BAD + "\nprint('id,name')\n")
    argv = [sys.executable, "-m", "sqla_doctor", "run", "--format", "json", "--"]
    done = subprocess.run(
        [*argv, sys.executable, "export.py"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "SQD251" not in done.stdout
    assert done.stdout.splitlines()[-1] == "id,name"
    assert '"code": "SQD251"' in done.stderr


def test_an_unknown_command_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    code = runner.main(["no-such-command-xyz"], fail=False, fmt="text", output=None)
    assert code == runner.EXIT_NOT_FOUND
    err = capsys.readouterr().err
    assert "command not found: no-such-command-xyz" in err
    assert "All clean" not in err, "nothing ran: no report"


def test_an_unwritable_report_path_is_refused_before_the_command_runs(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "side_effect.py").write_text("open('ran', 'w').close()\n")
    out = project / "no-such-dir" / "report.json"
    assert runner.main(["side_effect.py"], fail=True, fmt="json", output=str(out)) == 2
    assert "cannot write the report to" in capsys.readouterr().err
    assert not (project / "ran").exists(), "the command did not run"


def test_the_sitecustomize_it_shadows_still_runs(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site_dir = project / "site"
    site_dir.mkdir()
    (site_dir / "sitecustomize.py").write_text(
        "import pathlib\npathlib.Path('ran-original-sitecustomize').touch()\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(site_dir))
    out = project / "report.json"
    assert runner.main(["bad.py"], fail=True, fmt="json", output=str(out)) == 1
    assert (project / "ran-original-sitecustomize").exists()
    assert report(out)["findings"]


def test_findings_round_trip_through_json() -> None:
    from sqla_doctor.findings import Finding, Kind, Location, Related, Severity

    finding = Finding(
        code="SQD251",
        name="n-plus-one-lazy-load",
        message="m",
        location=Location("a.py", 3),
        severity=Severity.WARNING,
        pitfalls=("P01",),
        kind=Kind.RUNTIME,
        fix_hint="h",
        related=(Related(Location("a.py", 1), "r"),),
        details={"loads": 3},
    )
    assert runner.finding_from_dict(runner.finding_to_dict(finding)) == finding


def test_a_process_killed_by_a_signal_still_reports_what_it_found(project: Path) -> None:
    """Findings are written as they are found, not only at exit."""
    (project / "killed.py").write_text(
        BAD + "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = project / "report.json"
    code = runner.main(["killed.py"], fail=True, fmt="json", output=str(out))
    assert code == 128 + 9
    assert [f["code"] for f in report(out)["findings"]] == ["SQD251"]


def test_a_program_that_installs_the_doctor_itself_is_still_reported(project: Path) -> None:
    (project / "own.py").write_text(
        "import sqla_doctor\nsqla_doctor.install(mode='collect')\n" + BAD
    )
    out = project / "report.json"
    assert runner.main(["own.py"], fail=True, fmt="json", output=str(out)) == 1
    assert [f["code"] for f in report(out)["findings"]] == ["SQD251"]


def test_html_report_lists_statements_with_call_sites_and_timings(project: Path) -> None:
    out = project / "report.html"
    assert runner.main(["bad.py"], fail=False, fmt="html", output=str(out)) == 0
    page = out.read_text()
    rows = re.findall(
        r'<tr><td class="sql">(.*?)</td><td>(\d+)</td><td>([\d.]+ ms)</td>'
        r'<td class="loc">(.*?)</td></tr>',
        page,
        re.DOTALL,
    )
    assert rows, "no statements table"
    lazy = [row for row in rows if "FROM posts" in row[0] and row[1] == "4"]
    assert lazy, rows
    assert lazy[0][3] == "bad.py:7"
    assert all(float(row[2].split()[0]) >= 0 for row in rows)


def test_an_unknown_selector_in_the_config_runs_with_the_defaults(
    project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (project / "pyproject.toml").write_text('[tool.sqla-doctor]\nselect = ["SQD9999"]\n')
    out = project / "report.json"
    assert runner.main(["bad.py"], fail=True, fmt="json", output=str(out)) == 1
    assert [f["code"] for f in report(out)["findings"]] == ["SQD251"]
    err = capfd.readouterr().err
    assert "sqla-doctor: unknown rule selector 'SQD9999' in [tool.sqla-doctor]" in err
    assert "; using the default settings" in err
    assert "could not instrument" not in err


def test_a_session_still_open_at_exit_with_uncommitted_writes_is_reported(
    project: Path,
) -> None:
    """A script that flushes and exits without commit() loses its writes: nothing was
    garbage-collected before the end, so the report comes from the exit itself."""
    (project / "forgot.py").write_text(
        "from models import User, Session, make_engine\n"
        "\n"
        "engine = make_engine()\n"
        "session = Session(engine)\n"
        "session.add(User(name='lost'))\n"
        "session.flush()\n"
    )
    out = project / "report.json"
    assert runner.main(["forgot.py"], fail=True, fmt="json", output=str(out)) == 1
    findings = {f["code"]: f for f in report(out)["findings"]}
    assert set(findings) == {"SQD151", "SQD152"}
    assert findings["SQD152"]["location"] == {**findings["SQD152"]["location"], "line": 6}
    assert "still open at exit without commit()" in findings["SQD152"]["message"]
    assert "(1 User inserted) were rolled back" in findings["SQD152"]["message"]
    assert "was still open at exit while holding a connection" in findings["SQD151"]["message"]


def test_a_session_closed_before_exit_is_not_reported_at_exit(project: Path) -> None:
    (project / "tidy.py").write_text(
        "from models import User, Session, make_engine\n"
        "\n"
        "engine = make_engine()\n"
        "session = Session(engine)\n"
        "session.add(User(name='kept'))\n"
        "session.commit()\n"
        "session.close()\n"
        "idle = Session(engine)  # never used: holds nothing\n"
    )
    out = project / "report.json"
    assert runner.main(["tidy.py"], fail=True, fmt="json", output=str(out)) == 0
    assert report(out)["findings"] == []


CRASHING_IMPORT = """
from sqlalchemy.orm import scoped_session, sessionmaker
from models import User, make_engine

db = scoped_session(sessionmaker(make_engine()))


def save(name):
    db.add(User(name=name))
    db.flush()
    if name == "bad":
        raise ValueError("bad row")

{leak}
for name in ["a", "b", "bad"]:
    save(name)
try:
    db.commit()
finally:
    db.remove()
"""

REAL_LEAK = """
AUDITS = []


def open_audit():
    audit = db.session_factory()
    audit.add(User(name="audit"))
    audit.flush()  # line 21: never committed, never closed
    AUDITS.append(audit)


open_audit()
"""


def test_a_crash_that_skips_close_and_commit_is_not_reported_as_a_leak(project: Path) -> None:
    """The program dies of an uncaught error before its commit() and remove() (P04, P18):
    the session the crashed frames hold is the crash's consequence, not a leak, and
    "never closed ... call commit()" would blame code that does both."""
    (project / "crash.py").write_text(CRASHING_IMPORT.format(leak=""))
    out = project / "report.json"
    assert runner.main(["crash.py"], fail=True, fmt="json", output=str(out)) == 1
    assert report(out)["findings"] == []


def test_a_real_leak_in_a_program_that_crashes_is_still_reported(project: Path) -> None:
    """The near miss: a session nothing on the crash's path holds or closes."""
    (project / "crash.py").write_text(CRASHING_IMPORT.format(leak=REAL_LEAK))
    out = project / "report.json"
    assert runner.main(["crash.py"], fail=True, fmt="json", output=str(out)) == 1
    findings = report(out)["findings"]
    assert sorted(f["code"] for f in findings) == ["SQD151", "SQD152"]
    assert {f["location"]["line"] for f in findings} == {21}


@pytest.mark.parametrize(
    ("body", "reported"),
    [
        # A local of the crashed function, closed after the line that raised.
        (
            "    session = Session(engine)\n    work(session)\n    session.commit()\n"
            "    session.close()\n",
            False,
        ),
        # An attribute of the crashed method's object.
        ("    job = Job(Session(engine))\n    job.run()\n", False),
        # A function that never closes it: a leak, crash or not.
        ("    session = Session(engine)\n    work(session)\n", True),
    ],
    ids=["local", "attribute", "never-closed"],
)
def test_a_session_held_by_a_crashed_frame_is_judged_by_that_frames_code(
    project: Path, body: str, reported: bool
) -> None:
    (project / "crash.py").write_text(
        "from models import Session, User, make_engine\n"
        "\n"
        "engine = make_engine()\n"
        "\n"
        "def work(session):\n"
        "    session.add(User(name='x'))\n"
        "    session.flush()\n"
        "    raise ValueError('failed')\n"
        "\n"
        "class Job:\n"
        "    def __init__(self, session):\n"
        "        self.session = session\n"
        "    def run(self):\n"
        "        work(self.session)\n"
        "        self.session.commit()\n"
        "        self.session.close()\n"
        "\n"
        "def main():\n" + body + "\n"
        "main()\n"
    )
    out = project / "report.json"
    assert runner.main(["crash.py"], fail=True, fmt="json", output=str(out)) == 1
    codes = sorted(f["code"] for f in report(out)["findings"])
    assert codes == (["SQD151", "SQD152"] if reported else [])


def test_a_connection_still_checked_out_at_exit_is_reported(project: Path) -> None:
    (project / "conn.py").write_text(
        "from models import make_engine, select, User\n"
        "\n"
        "engine = make_engine()\n"
        "connection = engine.connect()\n"
        "print(connection.execute(select(User.name)).all())\n"
    )
    out = project / "report.json"
    assert runner.main(["conn.py"], fail=True, fmt="json", output=str(out)) == 1
    [finding] = report(out)["findings"]
    assert finding["code"] == "SQD154"
    assert finding["location"]["line"] == 4
    assert "was still checked out at exit (never closed)" in finding["message"]


def test_a_leaky_dependency_of_an_app_run_as_a_script_is_named(project: Path) -> None:
    """CPython deletes ``__main__.__file__`` when the script returns, before the exit
    report: the endpoint and its dependency are still found in the script's module."""
    pytest.importorskip("fastapi")
    (project / "app.py").write_text(
        textwrap.dedent(
            """
            import warnings
            warnings.simplefilter("ignore")
            from fastapi import Depends, FastAPI
            from fastapi.testclient import TestClient
            from sqlalchemy.orm import sessionmaker
            from models import Session, User, make_engine

            SessionLocal = sessionmaker(make_engine())

            def get_db():
                db = SessionLocal()
                yield db
                db.close()

            app = FastAPI()

            @app.get("/users/{user_id}")
            def read_user(user_id: int, db: Session = Depends(get_db)):
                db.get(User, user_id)
                raise RuntimeError("failed after the query")

            if __name__ == "__main__":
                client = TestClient(app, raise_server_exceptions=False)
                print(client.get("/users/1").status_code)
            """
        )
    )
    out = project / "report.json"
    assert runner.main(["app.py"], fail=True, fmt="json", output=str(out)) == 1
    [finding] = [f for f in report(out)["findings"] if f["code"] == "SQD151"]
    assert finding["location"]["line"] == 20
    assert "the session comes from get_db() (app.py:11)" in finding["message"]


def test_an_error_the_program_catches_and_logs_is_explained(
    project: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A server logs what a request raised instead of letting it reach the excepthook:
    the log's traceback carries the explanation, and the report has the finding."""
    (project / "served.py").write_text(
        "import logging\n"
        "from models import User, Session, make_engine, select\n"
        "\n"
        "logging.basicConfig()\n"
        "engine = make_engine()\n"
        "\n"
        "def handle_request():\n"
        "    with Session(engine) as session:\n"
        "        user = session.scalars(select(User)).first()\n"
        "    return len(user.posts)\n"
        "\n"
        "try:\n"
        "    handle_request()\n"
        "except Exception:\n"
        "    logging.getLogger('server').exception('Exception in ASGI application')\n"
        "try:\n"
        "    1 / 0\n"
        "except Exception:\n"
        "    logging.getLogger('server').exception('not a database error')\n"
    )
    out = project / "report.json"
    assert runner.main(["served.py"], fail=True, fmt="json", output=str(out)) == 1
    [finding] = report(out)["findings"]
    assert finding["code"] == "SQD254"
    assert (finding["location"]["path"], finding["location"]["line"]) == ("served.py", 10)
    assert "its session was closed at served.py:8" in finding["message"]
    logged = capfd.readouterr().err
    assert f"sqla-doctor: SQD254 {finding['message']}" in logged
    assert logged.count("sqla-doctor: SQD") == 1


def test_an_error_the_program_catches_and_prints_is_explained(project: Path) -> None:
    """A CLI that prints the error and goes on: no excepthook, no log record."""
    (project / "cli.py").write_text(
        "from models import User, Session, make_engine, select\n"
        "\n"
        "engine = make_engine()\n"
        "with Session(engine) as session:\n"
        "    users = session.scalars(select(User)).all()\n"
        "for user in users:\n"
        "    try:\n"
        "        print(user.name, len(user.posts))\n"
        "    except Exception as error:\n"
        "        print('failed:', type(error).__name__)\n"
    )
    out = project / "report.json"
    assert runner.main(["cli.py"], fail=True, fmt="json", output=str(out)) == 1
    [finding] = report(out)["findings"]
    assert finding["code"] == "SQD254"
    assert (finding["location"]["path"], finding["location"]["line"]) == ("cli.py", 8)
    assert "its session was closed at cli.py:4" in finding["message"]



REPLACED_HOOK = """
import sys
from sqlalchemy.exc import IntegrityError
from models import User, Session, make_engine

def pretty(kind, value, tb):  # a CLI framework's own printer (typer with rich)
    print("Error:", kind.__name__, file=sys.stderr)

engine = make_engine()
sys.excepthook = pretty
with Session(engine) as session:
    for user_id in (1, 9):
        session.add(User(id=user_id, name="again"))
        try:
            session.commit()  # line 15
        except IntegrityError:
            {handler}
"""


def test_a_fatal_error_is_explained_when_a_framework_replaced_the_excepthook(
    project: Path,
) -> None:
    """typer (with rich installed) sets its own sys.excepthook when the app runs, and it
    does not chain to the one before: the PendingRollbackError the program dies of is
    explained at exit instead, into the report."""
    (project / "cli.py").write_text(REPLACED_HOOK.format(handler="print('duplicate')"))
    out = project / "report.json"
    assert runner.main(["cli.py"], fail=False, fmt="json", output=str(out)) == 1
    [finding] = report(out)["findings"]
    assert finding["code"] == "SQD155"
    assert (finding["location"]["path"], finding["location"]["line"]) == ("cli.py", 15)


def test_an_unrelated_fatal_error_under_a_replaced_excepthook_is_silent(project: Path) -> None:
    (project / "cli.py").write_text(
        REPLACED_HOOK.format(handler="session.rollback()") + "raise ValueError('bad input')\n"
    )
    out = project / "report.json"
    assert runner.main(["cli.py"], fail=False, fmt="json", output=str(out)) == 1
    assert report(out)["findings"] == []


WIDE = (
    """
from sqlalchemy import create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
"""
    + "".join(f"    note{i}: Mapped[str] = mapped_column(default='')\n" for i in range(12))
    + """

engine = create_engine("sqlite://")
Base.metadata.create_all(engine)
with Session(engine) as session:
    session.add_all(Customer(name=f"c{i}") for i in range(20))
    session.commit()
with Session(engine) as session:
    print([c.name for c in session.scalars(select(Customer))])
"""
)


def test_reads_are_tracked_under_run_unless_the_config_says_no(project: Path) -> None:
    (project / "wide.py").write_text(WIDE)
    out = project / "report.json"
    assert runner.main(["wide.py"], fail=True, fmt="json", output=str(out)) == 1
    assert [f["code"] for f in report(out)["findings"]] == ["SQD258"]
    (project / "pyproject.toml").write_text("[tool.sqla-doctor.runtime]\ntrack-reads = false\n")
    assert runner.main(["wide.py"], fail=True, fmt="json", output=str(out)) == 0


def test_a_pool_timeout_is_reported_next_to_the_saturation_at_the_same_line(
    project: Path,
) -> None:
    # Two threads fill the pool from one line; a third times out on that same line:
    # two findings of one code, subject and line, each with its own message.
    (project / "pool.py").write_text(
        textwrap.dedent(
            """
            import threading, time
            from sqlalchemy import create_engine, text
            from sqlalchemy.orm import Session

            engine = create_engine(
                "sqlite:///pool.db", pool_size=2, max_overflow=0, pool_timeout=0.3
            )
            started = threading.Barrier(2)

            def handle(wait):
                with Session(engine) as session:
                    session.execute(text("select 1"))  # line 13
                    if wait:
                        started.wait()
                    time.sleep(wait)

            holders = [threading.Thread(target=handle, args=(1.5,)) for _ in range(2)]
            for holder in holders:
                holder.start()
            late = threading.Thread(target=handle, args=(0,))
            time.sleep(0.2)
            late.start()
            for thread in (*holders, late):
                thread.join()
            """
        )
    )
    out = project / "report.json"
    runner.main(["pool.py"], fail=True, fmt="json", output=str(out))
    pool = [f for f in report(out)["findings"] if f["code"] == "SQD451"]
    assert {f["location"]["line"] for f in pool} == {13}
    messages = sorted(f["message"] for f in pool)
    assert len(messages) == 2, messages
    assert "timed out: QueuePool limit of size 2 overflow 0 reached" in messages[0]
    assert "pool.py:13 in handle" in messages[0]
    assert "timed out" not in messages[1]


def test_an_uncaught_async_pool_timeout_names_who_held_the_pool(project: Path) -> None:
    # By the time the excepthook sees the TimeoutError, asyncio.run() has cancelled the
    # holders and their connections are back: they are named from when the pool filled.
    (project / "tasks.py").write_text(
        textwrap.dedent(
            """
            import asyncio
            from sqlalchemy import text
            from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

            engine = create_async_engine(
                "sqlite+aiosqlite:///tasks.db", pool_size=2, max_overflow=0, pool_timeout=0.3
            )

            async def handle(wait):
                async with AsyncSession(engine) as session:
                    await session.execute(text("select 1"))  # line 12
                    await asyncio.sleep(wait)

            async def main():
                await asyncio.gather(handle(1.0), handle(1.0), handle(0))

            asyncio.run(main())
            """
        )
    )
    out = project / "report.json"
    assert runner.main(["tasks.py"], fail=True, fmt="json", output=str(out)) == 1
    [timeout] = [f for f in report(out)["findings"] if "timed out" in f["message"]]
    assert "held by: tasks.py:12 in handle (Session, held" in timeout["message"]
    assert "nobody" not in timeout["message"]


LEAK_THEN = """
import os, signal, time
from models import User, Session, make_engine, select

engine = make_engine()
session = Session(engine)
session.scalars(select(User)).all()  # line 7
{then}
"""


def test_a_program_killed_by_sigterm_still_reports(project: Path) -> None:
    # What a container stop or a CI timeout sends: by default no exit handler runs.
    killed = LEAK_THEN.format(then="os.kill(os.getpid(), signal.SIGTERM)")
    (project / "killed.py").write_text(killed)
    out = project / "report.json"
    code = runner.main(["killed.py"], fail=True, fmt="json", output=str(out))
    assert code == 128 + signal.SIGTERM, "it still dies of the signal"
    data = report(out)
    assert data["summary"]["queries"] > 0
    [leak] = [f for f in data["findings"] if f["code"] == "SQD151"]
    assert leak["location"]["line"] == 7
    assert "still open at exit" in leak["message"]


def test_sigterm_to_the_runner_stops_the_command_and_writes_the_report(project: Path) -> None:
    (project / "serving.py").write_text(
        LEAK_THEN.format(then="print('ready', flush=True)\ntime.sleep(60)")
    )
    out = project / "report.json"
    argv = [sys.executable, "-m", "sqla_doctor", "run", "--format", "json", "-o", str(out)]
    with subprocess.Popen(
        [*argv, "--", sys.executable, "serving.py"], stdout=subprocess.PIPE, text=True
    ) as started:
        assert started.stdout is not None
        assert started.stdout.readline().strip() == "ready"
        started.send_signal(signal.SIGTERM)
        assert started.wait(timeout=30) == 128 + signal.SIGTERM
    [leak] = [f for f in report(out)["findings"] if f["code"] == "SQD151"]
    assert leak["location"]["line"] == 7


def test_a_process_ended_by_os_exit_reports_its_findings_not_a_silent_run(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "abrupt.py").write_text(BAD + "\nimport os\nos._exit(5)\n")
    out = project / "report.json"
    assert runner.main(["abrupt.py"], fail=True, fmt="json", output=str(out)) == 5
    assert [f["code"] for f in report(out)["findings"]] == ["SQD251"]
    err = capsys.readouterr().err
    assert "1 process ended without running exit handlers" in err
    assert "no SQL statement ran" not in err
