"""The ``sqla-doctor`` command: check · fix · explain · rules · run · demo.

Exit codes: 0 clean, 1 findings, 2 usage or internal error. Bad input (a missing path, a
broken config) gets one clear error line on stderr and the run goes on with what it can.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqla_doctor import __version__
from sqla_doctor.config import Config, ConfigError, load
from sqla_doctor.findings import Finding, Kind
from sqla_doctor.registry import registry
from sqla_doctor.report import FORMATS, ReportContext, render

if TYPE_CHECKING:
    from sqla_doctor.static.declared_version import DeclaredPin
    from sqla_doctor.static.engine import Result

EXIT_CLEAN, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class _Errors:
    """Collects one-line user-facing errors, each said once (`fix` analyses the project
    again after each pass); any error makes the exit code 2."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.count = 0
        self._said: set[str] = set()

    def __call__(self, message: str) -> None:
        if message in self._said:
            return
        self._said.add(message)
        self.count += 1
        print(f"sqla-doctor: error: {message}", file=self.stream)


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {number}")
    return number


def _add_performance(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="neither read nor write the cache (.sqla-doctor-cache/)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where the cache lives (default: PROJECT/.sqla-doctor-cache)",
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=_non_negative,
        default=1,
        metavar="N",
        help="worker processes (0: one per CPU; default 1)",
    )


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--select",
        type=_csv,
        action="extend",
        metavar="CODES",
        help="only these rules (codes, prefixes like SQD2, names, or ALL)",
    )
    parser.add_argument(
        "--ignore", type=_csv, action="extend", metavar="CODES", help="skip these rules"
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="pyproject.toml to read [tool.sqla-doctor] from"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqla-doctor",
        description="Catches SQLAlchemy's production pitfalls before production does.",
    )
    parser.add_argument("--version", action="version", version=f"sqla-doctor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="check source files (never imports or runs them)")
    check.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="files or folders to report on, read with the rest of their project for "
        "its models (default: the project around the current folder)",
    )
    check.add_argument("--format", choices=FORMATS, default="text")
    check.add_argument("--output", "-o", type=Path, metavar="FILE", help="write the report here")
    check.add_argument("--exit-zero", action="store_true", help="exit 0 even with findings")
    check.add_argument(
        "--since",
        metavar="REVISION",
        help="migration checks only look at Alembic revisions after this one",
    )
    check.add_argument(
        "--baseline",
        type=Path,
        metavar="FILE",
        help="report only findings not recorded in this baseline file",
    )
    check.add_argument(
        "--diff-against",
        metavar="REV",
        help="report only findings on lines changed since this git revision",
    )
    check.add_argument(
        "--write-baseline",
        type=Path,
        metavar="FILE",
        help="record today's findings in FILE (then exit 0)",
    )
    _add_selection(check)
    _add_performance(check)

    fix = commands.add_parser("fix", help="apply fixes (safe ones unless --unsafe-fixes)")
    fix.add_argument("paths", nargs="*", type=Path, metavar="PATH")
    fix.add_argument("--unsafe-fixes", action="store_true", help="also apply unsafe fixes")
    fix.add_argument("--diff", action="store_true", help="show the changes instead of writing them")
    _add_selection(fix)
    _add_performance(fix)

    explain = commands.add_parser("explain", help="print a rule's documentation")
    explain.add_argument("rule", metavar="CODE", help="a rule code (SQD301) or name")

    rules = commands.add_parser("rules", help="list every rule and runtime detector")
    rules.add_argument("--format", choices=("text", "json"), default="text")

    demo = commands.add_parser("demo", help="run sqla-doctor on the bundled example app")
    demo.add_argument("--format", choices=FORMATS, default="text")
    demo.add_argument("--output", "-o", type=Path, metavar="FILE")

    pool = commands.add_parser(
        "pool", help="check that every worker's connection pool fits in the PostgreSQL server"
    )
    pool.add_argument("url", metavar="URL", help="the app's database URL")
    pool.add_argument("--workers", type=_positive, default=1, help="processes running the app")
    pool.add_argument("--engines", type=_positive, default=1, help="engines per process")
    pool.add_argument("--pool-size", type=_non_negative, default=5)
    pool.add_argument("--max-overflow", type=_non_negative, default=10)

    run = commands.add_parser(
        "run",
        help="run a command with the runtime doctor installed: sqla-doctor run -- CMD ...",
        description=(
            "Runs COMMAND (a script, python -m, pytest, uvicorn ...) with the runtime doctor "
            "installed in every Python process it starts, and reports what they saw when it "
            "exits: with its exit code, on Ctrl-C, and when it or the command is stopped "
            "with SIGTERM (which is passed on to the command). The report goes to --output, "
            "else to standard error: standard output stays the command's."
        ),
    )
    run.add_argument("--fail", action="store_true", help="exit 1 when there are findings")
    run.add_argument("--format", choices=FORMATS, default="text")
    run.add_argument(
        "--output", "-o", type=Path, metavar="FILE", help="the report's file (default: stderr)"
    )
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    errors = _Errors(sys.stderr)
    if args.command is None:
        parser.print_help()
        return EXIT_ERROR
    try:
        if args.command == "check":
            return _check(args, errors)
        if args.command == "fix":
            return _fix(args, errors)
        if args.command == "explain":
            return _explain(args.rule, errors)
        if args.command == "rules":
            return _rules(args.format)
        if args.command == "demo":
            from sqla_doctor.demo import main as demo_main

            return demo_main(fmt=args.format, output=args.output)
        if args.command == "run":
            return _run(args, errors)
        if args.command == "pool":
            return _pool(args, errors)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as error:
        errors(f"internal error: {type(error).__name__}: {error}")
        return EXIT_ERROR
    parser.error(f"unknown command {args.command!r}")
    return EXIT_ERROR  # pragma: no cover - parser.error exits


# check / fix -----------------------------------------------------------------------------
def _load_config(args: argparse.Namespace, errors: _Errors, start: Path) -> Config:
    try:
        return load(args.config, start=start)
    except ConfigError as error:
        errors(f"{error} (using the defaults)")
        return Config(root=Path.cwd())


def _existing_paths(paths: list[Path], errors: _Errors) -> list[Path]:
    existing = []
    for path in paths:
        if path.exists():
            existing.append(path)
        else:
            errors(f"path does not exist: {path}")
    return existing


def _selection(args: argparse.Namespace, config: Config, errors: _Errors) -> set[str]:
    from sqla_doctor.registry import static_registry
    from sqla_doctor.static.engine import selected_codes

    try:
        return selected_codes(
            static_registry(), config, args.select, args.ignore, kinds=(Kind.STATIC, Kind.MIGRATION)
        )
    except KeyError as error:
        errors(f"unknown rule selector {error.args[0]!r} (see `sqla-doctor rules`)")
    # Without the command line's selectors; without the config's too if the bad one is there.
    for fallback in (config, Config(root=config.root, source=config.source)):
        try:
            return selected_codes(
                static_registry(), fallback, None, None, kinds=(Kind.STATIC, Kind.MIGRATION)
            )
        except KeyError:
            continue
    raise AssertionError("the default selection names only known rules")  # pragma: no cover


def _off_below_2(
    args: argparse.Namespace, config: Config, pin: DeclaredPin | None, selected: set[str]
) -> set[str]:
    """The selected rules about moving to SQLAlchemy 2.0 that a project pinned below it
    (by ``pin``) did not ask for by code or name; said once on stderr."""
    from sqla_doctor.registry import static_registry
    from sqla_doctor.static.rule import Rule

    if pin is None:
        return set()

    checks = static_registry()
    about_2 = {
        code
        for code in selected
        if isinstance(rule := checks.get(code), type)
        and issubclass(rule, Rule)
        and rule.requires_sqlalchemy_2
    }
    if not about_2:
        return set()
    named = {
        found.code
        for selector in (*(args.select or ()), *config.select, *config.extend_select)
        if (found := checks.get(selector.strip())) is not None
    }
    off = about_2 - named
    if not off:
        return set()
    codes = ", ".join(sorted(off))
    print(
        f"sqla-doctor: note: {pin.path}:{pin.line} pins `{pin.requirement}`: {codes} "
        f"(moving to SQLAlchemy 2.0) are off; select them by code to plan the move",
        file=sys.stderr,
    )
    return off


def _analyse(
    args: argparse.Namespace,
    errors: _Errors,
    since: str | None = None,
    unsaved: Mapping[Path, bytes] | None = None,
) -> tuple[Config, Result]:
    from sqla_doctor.static.cache import CACHE_DIR_NAME
    from sqla_doctor.static.declared_version import pinned_below_2
    from sqla_doctor.static.engine import Engine, Result
    from sqla_doctor.static.files import covers, project_root

    paths = list(args.paths) or [Path.cwd()]
    start = paths[0] if paths[0].exists() else Path.cwd()
    config = _load_config(args, errors, start=start)
    if not args.paths and config.source is not None:
        paths = [config.root]
    project = config.root if config.source is not None else project_root(start)
    if project is not None and config.source is None:
        # Paths and the cache are anchored where `check .` at the project's top puts them.
        config = config.with_overrides(root=project)
    if since:
        config = config.with_overrides(migrations_since=since)
    selected = _selection(args, config, errors)
    existing = _existing_paths(paths, errors)
    if not existing:
        return config, Result()  # nothing named exists: not the project around it either
    # Read once: it turns the 2.0 rules off here, and some rules' judgement in the engine.
    pin = pinned_below_2(project) if project is not None else None
    selected -= _off_below_2(args, config, pin, selected)
    cache_dir = None if args.no_cache else (args.cache_dir or config.root / CACHE_DIR_NAME)
    jobs = args.jobs or os.cpu_count() or 1
    engine = Engine(
        config,
        selected,
        cache_dir=cache_dir,
        jobs=jobs,
        unsaved=unsaved,
        sqlalchemy_below_2=None if project is None else pin is not None,
    )
    # Files named alone are checked against the whole project's models and factories.
    around = project
    if project is None or covers(existing, project) or not covers([project], start):
        around = None
    result = engine.check_paths(existing, project=around)
    for message in result.internal_errors:
        errors(f"internal error: {message}")
    return config, result


def _check(args: argparse.Namespace, errors: _Errors) -> int:
    config, result = _analyse(args, errors, since=args.since)
    findings: list[Finding] = result.findings
    if args.since:
        from sqla_doctor.static.alembic.project import since_unknown

        for revision in since_unknown(config, list(args.paths) or [config.root]):
            print(
                f"sqla-doctor: warning: --since {revision}: no Alembic revision has this id; "
                "nothing was left out",
                file=sys.stderr,
            )
    if args.write_baseline:
        from sqla_doctor.baseline import write_baseline

        write_baseline(args.write_baseline, findings)
        print(f"Recorded {len(findings)} findings in {args.write_baseline}.")
        return EXIT_ERROR if errors.count else EXIT_CLEAN
    if args.diff_against:
        from sqla_doctor.changed_lines import DiffError, changed_lines, only_changed

        try:
            findings = only_changed(findings, changed_lines(config.root, args.diff_against))
        except DiffError as error:
            errors(f"--diff-against {args.diff_against}: {error}")
    if args.baseline:
        from sqla_doctor.baseline import BaselineError, filter_new

        try:
            findings = filter_new(args.baseline, findings)
        except BaselineError as error:
            errors(str(error))
    context = ReportContext(
        files=result.files,
        tool_version=__version__,
        command="check",
        root=str(config.root),
        errors=errors.count,
    )
    _emit(render(args.format, findings, context), args.output, errors)
    if errors.count:
        return EXIT_ERROR
    return EXIT_FINDINGS if findings and not args.exit_zero else EXIT_CLEAN


def _emit(text: str, output: Path | None, errors: _Errors) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as error:
        errors(f"cannot write {output}: {error.strerror or error}")


def _fix(args: argparse.Namespace, errors: _Errors) -> int:
    from sqla_doctor.static.fixes import applicable, apply_fixes

    # Overlapping fixes are skipped in one pass; a few passes reach a fixed point. With
    # --diff, each pass checks the text the passes before it would have written.
    total_applied = 0
    changed_files: dict[Path, tuple[str, str]] = {}
    unsaved: dict[Path, bytes] = {}
    shown: dict[Path, str] = {}  # as findings name them
    remaining: list[Finding] = []
    config: Config | None = None
    for _ in range(5):
        config, result = _analyse(args, errors, unsaved=unsaved)
        by_file: dict[str, list[Finding]] = defaultdict(list)
        remaining = []
        for finding in result.findings:
            if applicable(finding.fix, args.unsafe_fixes):
                by_file[finding.location.path].append(finding)
            else:
                remaining.append(finding)
        applied_this_pass = 0
        for display, findings in by_file.items():
            path = _absolute(config.root, display).resolve()
            original = changed_files[path][1] if path in changed_files else path.read_text(
                encoding="utf-8"
            )
            fixed, applied = apply_fixes(original, [f.fix for f in findings if f.fix])
            if fixed == original:
                continue
            first = changed_files.get(path, (original, original))[0]
            changed_files[path] = (first, fixed)
            shown[path] = display
            applied_this_pass += applied
            if args.diff:
                unsaved[path] = fixed.encode("utf-8")
            else:
                path.write_text(fixed, encoding="utf-8")
        total_applied += applied_this_pass
        if not applied_this_pass:
            break
    if args.diff:
        for path, (before, after) in sorted(changed_files.items()):
            name = shown[path]
            sys.stdout.writelines(
                difflib.unified_diff(
                    before.splitlines(True), after.splitlines(True), f"a/{name}", f"b/{name}"
                )
            )
        print(f"Would apply {total_applied} fix(es) in {len(changed_files)} file(s).")
        if errors.count:
            return EXIT_ERROR
        return EXIT_FINDINGS if changed_files else EXIT_CLEAN
    assert config is not None
    context = ReportContext(tool_version=__version__, command="fix", root=str(config.root))
    if remaining:
        sys.stdout.write(render("text", remaining, context))
    print(
        f"Applied {total_applied} fix(es) in {len(changed_files)} file(s); "
        f"{len(remaining)} finding(s) remain."
    )
    if errors.count:
        return EXIT_ERROR
    return EXIT_FINDINGS if remaining else EXIT_CLEAN


def _absolute(root: Path, display: str) -> Path:
    path = Path(display)
    return path if path.is_absolute() else root / path


# explain / rules -------------------------------------------------------------------------
def _explain(rule: str, errors: _Errors) -> int:
    check = registry().get(rule)
    if check is None:
        errors(f"no rule {rule!r} (see `sqla-doctor rules`)")
        return EXIT_ERROR
    sys.stdout.write(check.doc().markdown(check))
    return EXIT_CLEAN


def _rules(fmt: str) -> int:
    checks = list(registry())
    if fmt == "json":
        import json

        rows = [
            {
                "code": c.code,
                "name": c.name,
                "pitfalls": list(c.pitfalls),
                "kind": c.kind.value,
                "severity": c.severity.value,
                "fix": c.fix.value,
                "summary": c.doc().summary(),
            }
            for c in checks
        ]
        print(json.dumps(rows, indent=2))
        return EXIT_CLEAN
    width = max((len(c.name) for c in checks), default=10)
    for c in checks:
        pitfalls = ",".join(c.pitfalls) or "-"
        print(f"{c.code}  {c.name:<{width}}  {c.kind.value:<9} {c.fix.value:<6} {pitfalls}")
    return EXIT_CLEAN


# pool --------------------------------------------------------------------------------------
def _pool(args: argparse.Namespace, errors: _Errors) -> int:
    from sqla_doctor.pool_check import PoolCheckError, PoolPlan, read_capacity, report

    plan = PoolPlan(args.workers, args.engines, args.pool_size, args.max_overflow)
    try:
        capacity = read_capacity(args.url)
    except PoolCheckError as error:
        errors(str(error))
        return EXIT_ERROR
    fits, text = report(args.url, capacity, plan)
    sys.stdout.write(text)
    return EXIT_CLEAN if fits else EXIT_FINDINGS


# run ---------------------------------------------------------------------------------------
def _run(args: argparse.Namespace, errors: _Errors) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        errors("nothing to run: sqla-doctor run -- COMMAND ARGS...")
        return EXIT_ERROR
    try:
        from sqla_doctor.runtime.runner import main as run_main
    except ImportError as error:
        errors(f"the runtime doctor is unavailable: {error}")
        return EXIT_ERROR
    output = str(args.output) if args.output else None
    code: int = run_main(argv, fail=args.fail, fmt=args.format, output=output)
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
