"""``sqla-doctor run -- COMMAND ARGS…``: run a program with the runtime doctor, report at exit.

The command runs in a child process, unchanged. A directory prepended to ``PYTHONPATH``
holds a ``sitecustomize`` module, which every Python interpreter the command starts
imports at startup (the script, ``python -m``, ``pytest``, ``uvicorn`` and its workers,
``multiprocessing`` children). It waits for SQLAlchemy to be imported, installs the
doctor in ``collect`` mode, and appends each finding to a JSON-lines file of its own as
soon as it is found, so a process that is killed still reports what it saw. Then it runs
the ``sitecustomize`` it shadows, if any. When the command exits, the parent reads every
process's file, merges the findings and renders the report.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sqla_doctor.findings import Finding, Kind, Location, Related, Severity

if TYPE_CHECKING:
    from sqla_doctor.config import Config

ENV_DIR = "SQLA_DOCTOR_RUN_DIR"
ENV_HOME = "SQLA_DOCTOR_HOME"
MAX_STATEMENTS_TABLE = 500
EXIT_FINDINGS = 1
EXIT_NOT_FOUND = 127
EXIT_USAGE = 2

# Written as ``sitecustomize.py`` into the bootstrap directory. Standard library only
# until SQLAlchemy is imported: a process that never uses SQLAlchemy pays nothing.
SITECUSTOMIZE = '''\
"""Added by `sqla-doctor run`: starts the runtime doctor once SQLAlchemy is imported."""
import os
import sys


def _sqla_doctor_bootstrap():
    import importlib.machinery
    import importlib.util

    directory = os.environ.get("SQLA_DOCTOR_RUN_DIR")
    here = os.path.dirname(os.path.abspath(__file__))

    def start():
        runtime = sys.modules.get("sqla_doctor.runtime")
        if runtime is not None and not getattr(runtime, "_ready", False):
            # sqla_doctor.runtime itself is importing SQLAlchemy: it starts the doctor
            # when it has finished initialising.
            return
        try:
            try:
                from sqla_doctor.runtime.runner import child_start
            except ImportError:
                home = os.environ.get("SQLA_DOCTOR_HOME")
                if not home or home in sys.path:
                    raise
                # Last on the path: the program's own packages always win.
                sys.path.append(home)
                from sqla_doctor.runtime.runner import child_start
            child_start()
        except Exception as error:
            sys.stderr.write("sqla-doctor: could not instrument this process: %r\\n" % (error,))

    class Loader:
        def __init__(self, loader):
            self.loader = loader

        def create_module(self, spec):
            return self.loader.create_module(spec)

        def exec_module(self, module):
            self.loader.exec_module(module)
            module.__loader__ = self.loader
            if module.__spec__ is not None:
                module.__spec__.loader = self.loader
            start()

        def __getattr__(self, name):
            return getattr(self.loader, name)

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name != "sqlalchemy":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.loader is not None:
                spec.loader = Loader(spec.loader)
            return spec

        def invalidate_caches(self):
            pass

    if directory:
        try:
            with open(os.path.join(directory, "%d.started" % os.getpid()), "w"):
                pass
        except OSError:
            pass
        if "sqlalchemy" in sys.modules:
            start()
        else:
            sys.meta_path.insert(0, Finder())

    # Run the sitecustomize this one shadows (a virtualenv's, a distribution's, coverage's).
    path = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is not None and spec.loader is not None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["sitecustomize"] = module
        spec.loader.exec_module(module)


_sqla_doctor_bootstrap()
del _sqla_doctor_bootstrap
'''


# -- the child side ----------------------------------------------------------------------


class _Writer:
    """Appends one JSON line per event to this process's file; reopens after fork."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        # Re-entrant: the SIGTERM handler may write while the main thread was writing.
        self.lock = threading.RLock()
        self.pid = -1
        self.handle: TextIO | None = None
        self.closed_in = -1

    def _file(self) -> TextIO:
        pid = os.getpid()
        if self.handle is None or pid != self.pid:
            self.pid = pid
            path = os.path.join(self.directory, f"{pid}.jsonl")
            self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        return self.handle

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, default=str)
        with self.lock:
            handle = self._file()
            handle.write(line + "\n")
            handle.flush()

    def finding(self, finding: Finding) -> None:
        self.write({"kind": "finding", "finding": finding_to_dict(finding)})

    def close(self) -> None:
        if self.closed_in == os.getpid():
            return  # a SIGTERM wrote the summary already; then exit handlers ran
        self.closed_in = os.getpid()
        from sqla_doctor import runtime
        from sqla_doctor.runtime.redact import shown_sql
        from sqla_doctor.runtime.unit_of_work import process

        runtime.shutdown()
        table = process.table or {}
        show = process.settings is not None and process.settings.runtime.show_parameters
        self.write(
            {
                "kind": "summary",
                "statements": runtime.statements_observed(),
                "queries": [
                    {
                        "sql": shown_sql(sql, show),
                        "count": row[0],
                        "callsite": row[1],
                        "duration_ms": round(row[2] * 1000, 3),
                    }
                    for sql, row in sorted(table.items(), key=lambda item: -item[1][0])
                ],
                "internal_errors": process.internal_errors,
            }
        )


_started = False


def _install(config: Config, writer: _Writer) -> None:
    from sqla_doctor import runtime

    if config.runtime.track_reads is None:
        # A diagnosis run: worth the cost of noting reads, for SQD257 and SQD258.
        config = replace(config, runtime=replace(config.runtime, track_reads=True))
    runtime.install(mode="collect", config=config, on_finding=writer.finding)


def child_start() -> None:
    """Install the doctor in this process (called by the generated sitecustomize)."""
    from sqla_doctor import runtime
    from sqla_doctor.config import Config, ConfigError
    from sqla_doctor.config import load as load_config
    from sqla_doctor.runtime.unit_of_work import process

    global _started
    directory = os.environ.get(ENV_DIR)
    if not directory or _started:
        return
    _started = True
    writer = _Writer(directory)
    if runtime.installed():
        # The program installed the doctor itself: keep its settings, add the report.
        process.on_finding.append(writer.finding)
    else:
        try:
            config = load_config()
            _install(config, writer)
        except ConfigError as error:
            # An unknown key, or a rule selector no rule matches.
            sys.stderr.write(f"sqla-doctor: {error}; using the default settings\n")
            _install(Config(), writer)
    process.table = {}
    process.table_limit = MAX_STATEMENTS_TABLE
    # A DetachedInstanceError, MissingGreenlet... that is uncaught, or caught and logged
    # (as servers do), is explained in the report and in the traceback printed.
    from sqla_doctor.runtime.errors import install_hooks

    install_hooks()
    atexit.register(writer.close)
    _report_on_sigterm(writer)


def _report_on_sigterm(writer: _Writer) -> None:
    """Write the summary when SIGTERM kills the process, then die of it all the same.

    What containers, systemd and CI timeouts send: by default it ends the process without
    running exit handlers. Only a default disposition is replaced, and only in the main
    thread; a server that installs its own handler (uvicorn) and restores this one before
    re-raising the signal comes back here.
    """

    def on_sigterm(signum: int, frame: Any) -> None:
        try:
            writer.close()
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # SQLAlchemy imported first in another thread
        pass


# -- findings to and from JSON ------------------------------------------------------------


def _location(location: Location) -> dict[str, Any]:
    return {
        "path": location.path,
        "line": location.line,
        "col": location.col,
        "end_line": location.end_line,
        "end_col": location.end_col,
    }


def finding_to_dict(finding: Finding) -> dict[str, Any]:
    return {
        "code": finding.code,
        "name": finding.name,
        "message": finding.message,
        "location": _location(finding.location),
        "severity": finding.severity.value,
        "pitfalls": list(finding.pitfalls),
        "kind": finding.kind.value,
        "fix_hint": finding.fix_hint,
        "related": [
            {"location": _location(r.location), "message": r.message} for r in finding.related
        ],
        "details": dict(finding.details),
    }


def finding_from_dict(data: Mapping[str, Any]) -> Finding:
    return Finding(
        code=data["code"],
        name=data["name"],
        message=data["message"],
        location=Location(**data["location"]),
        severity=Severity(data["severity"]),
        pitfalls=tuple(data.get("pitfalls", ())),
        kind=Kind(data.get("kind", "runtime")),
        fix_hint=data.get("fix_hint"),
        related=tuple(
            Related(Location(**r["location"]), r["message"]) for r in data.get("related", ())
        ),
        details=dict(data.get("details", {})),
    )


# -- the parent side ----------------------------------------------------------------------


class RunResult:
    """What every instrumented process of a run reported."""

    def __init__(self) -> None:
        self.processes = 0
        self.instrumented = 0
        self.statements = 0
        self.internal_errors = 0
        # Processes that ended without their exit summary (os._exit(), SIGKILL): their
        # findings are in, their statement counts are not.
        self.unsummarised = 0
        self.findings: dict[tuple[Any, ...], Finding] = {}
        self.occurrences: dict[tuple[Any, ...], int] = {}
        self.queries: dict[str, dict[str, Any]] = {}

    def add_finding(self, finding: Finding) -> None:
        key = finding.occurrence_key
        if key in self.findings:
            self.occurrences[key] += int(finding.details.get("occurrences", 1))
        else:
            self.findings[key] = finding
            self.occurrences[key] = int(finding.details.get("occurrences", 1))

    def merged(self) -> list[Finding]:
        out = []
        for key, finding in self.findings.items():
            seen = self.occurrences[key]
            if seen > 1:
                finding = replace(finding, details={**finding.details, "occurrences": seen})
            out.append(finding)
        return sorted(out, key=lambda f: f.sort_key)

    def read(self, directory: Path) -> None:
        self.processes = len(list(directory.glob("*.started")))
        for path in sorted(directory.glob("*.jsonl")):
            self.instrumented += 1
            summarised = False
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a process killed halfway through a line
                kind = record.get("kind")
                if kind == "finding":
                    self.add_finding(finding_from_dict(record["finding"]))
                elif kind == "summary":
                    summarised = True
                    self.statements += int(record.get("statements", 0))
                    self.internal_errors += int(record.get("internal_errors", 0))
                    for query in record.get("queries", ()):
                        row = self.queries.setdefault(
                            query["sql"],
                            {"sql": query["sql"], "count": 0, "callsite": None, "duration_ms": 0.0},
                        )
                        row["count"] += int(query.get("count", 0))
                        row["duration_ms"] += float(query.get("duration_ms", 0.0))
                        row["callsite"] = row["callsite"] or query.get("callsite")
            if not summarised:
                self.unsummarised += 1


def _command(argv: Sequence[str]) -> list[str] | None:
    """The command line to run: scripts and ``-m`` run with this interpreter."""
    first = argv[0]
    if first.endswith(".py") or first == "-m":
        return [sys.executable, *argv]
    if os.sep in first or (os.altsep and os.altsep in first):
        return list(argv)
    found = shutil.which(first)
    return [found, *argv[1:]] if found else None


def _package_home() -> str:
    import sqla_doctor

    return str(Path(sqla_doctor.__file__).resolve().parent.parent)


def _environment(bootstrap: Path, reports: Path) -> dict[str, str]:
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([str(bootstrap), *([existing] if existing else [])])
    env[ENV_DIR] = str(reports)
    env[ENV_HOME] = _package_home()
    return env


def _wait(command: list[str], env: Mapping[str, str]) -> int:
    child = subprocess.Popen(command, env=dict(env))

    def forward(signum: int, frame: Any) -> None:
        # Sent to `sqla-doctor run` alone (a container stopping, `timeout`): the command
        # is what must stop; the parent stays to write the report.
        with contextlib.suppress(OSError):
            child.send_signal(signum)

    # Ctrl-C reaches the child through the terminal; the parent stays to write the report.
    previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    previous_term = signal.signal(signal.SIGTERM, forward)
    try:
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
    return 128 - code if code < 0 else code


def run(argv: Sequence[str]) -> tuple[int, RunResult]:
    """Run the command instrumented; its exit code and what its processes reported."""
    command = _command(argv)
    result = RunResult()
    if command is None:
        sys.stderr.write(f"sqla-doctor: command not found: {argv[0]}\n")
        return EXIT_NOT_FOUND, result
    with tempfile.TemporaryDirectory(prefix="sqla-doctor-run-") as temporary:
        bootstrap = Path(temporary) / "bootstrap"
        reports = Path(temporary) / "reports"
        bootstrap.mkdir()
        reports.mkdir()
        (bootstrap / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        try:
            code = _wait(command, _environment(bootstrap, reports))
        except OSError as error:
            sys.stderr.write(f"sqla-doctor: cannot run {command[0]}: {error.strerror or error}\n")
            return EXIT_NOT_FOUND, result
        result.read(reports)
    return code, result


def main(argv: list[str], *, fail: bool, fmt: str, output: str | None) -> int:
    """``sqla-doctor run``: the command's exit code, or 1 with ``--fail`` and findings.

    The report goes to ``output``, else to standard error: standard output is the
    command's.
    """
    from sqla_doctor import __version__
    from sqla_doctor.report import ReportContext, render

    if output and not _writable(Path(output)):
        # Before a command that may run for an hour: its report would be lost.
        sys.stderr.write(f"sqla-doctor: error: cannot write the report to {output}\n")
        return EXIT_USAGE
    code, result = run(argv)
    if code == EXIT_NOT_FOUND and not result.processes:
        return code  # nothing ran: no report, not an "All clean"
    findings = result.merged()
    queries = sorted(result.queries.values(), key=lambda q: -int(q["count"]))
    context = ReportContext(
        tool_version=__version__,
        command="run",
        root=str(Path.cwd()),
        queries=tuple(queries),
        query_count=result.statements,
    )
    text = render(fmt, findings, context)
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        # The command's standard output is its own (`run -- python export.py > out.csv`).
        sys.stderr.write(text)
        sys.stderr.flush()
    _explain_silence(result, code)
    if code != 0:
        return code
    return EXIT_FINDINGS if fail and findings else 0


def _writable(path: Path) -> bool:
    directory = path.parent if str(path.parent) else Path.cwd()
    if path.exists():
        return path.is_file() and os.access(path, os.W_OK)
    return directory.is_dir() and os.access(directory, os.W_OK)


def _explain_silence(result: RunResult, code: int) -> None:
    """A run that observed nothing must say so, not look like a clean bill of health."""
    if code == EXIT_NOT_FOUND and not result.processes:
        return
    if not result.processes:
        sys.stderr.write(
            "sqla-doctor: no Python process of the command was instrumented (it is not "
            "Python, or runs with -I/-S, or resets PYTHONPATH)\n"
        )
    elif not result.instrumented:
        sys.stderr.write("sqla-doctor: the command never imported SQLAlchemy\n")
    elif result.unsummarised:
        plural = "es" if result.unsummarised != 1 else ""
        sys.stderr.write(
            f"sqla-doctor: {result.unsummarised} process{plural} ended without running exit "
            "handlers (os._exit(), a kill): their findings are reported, their statement "
            f"counts are not ({result.statements} statement(s) counted)\n"
        )
    elif not result.statements:
        # Statements on a DBAPI cursor (engine.raw_connection()) reach no engine event.
        sys.stderr.write(
            "sqla-doctor: SQLAlchemy was imported but no SQL statement ran through its "
            "engines (statements on a DBAPI cursor from engine.raw_connection() are not "
            "seen)\n"
        )
    else:
        plural = "es" if result.instrumented != 1 else ""
        sys.stderr.write(
            f"sqla-doctor: observed {result.statements} statement(s) in "
            f"{result.instrumented} process{plural}\n"
        )
    if result.internal_errors:
        sys.stderr.write(
            f"sqla-doctor: {result.internal_errors} internal error(s) were logged by the "
            "instrumented processes; please report them\n"
        )
