"""``sqla-doctor demo``: the bundled bookstore app, checked statically and run under the doctor.

``bad/`` holds the pitfalls of the seed articles; ``fixed/`` is its twin with every fix
applied, and must come out clean. The runtime part runs against an embedded SQLite file.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from sqla_doctor import __version__
from sqla_doctor.config import Config
from sqla_doctor.findings import Finding, Kind
from sqla_doctor.registry import registry
from sqla_doctor.report import ReportContext, render

DEMO_ROOT = Path(__file__).resolve().parent
TWINS = ("bad", "fixed")


def static_findings(name: str) -> tuple[list[Finding], int]:
    from sqla_doctor.static.engine import Engine, selected_codes

    config = Config(root=DEMO_ROOT)
    codes = selected_codes(registry(), config, None, None, kinds=(Kind.STATIC, Kind.MIGRATION))
    result = Engine(config, codes).check_paths([DEMO_ROOT / name])
    return result.findings, result.files


def runtime_findings(name: str) -> tuple[list[Finding], int | None, list[dict[str, object]]]:
    """Run the twin's handlers under the runtime doctor: findings, query count and the
    statements table; ([], None, []) if the runtime doctor is unavailable."""
    try:
        from sqla_doctor.runtime import track
        from sqla_doctor.runtime.statements import statement_rows
    except ImportError:
        return [], None, []
    from sqla_doctor.demo import scenario

    with tempfile.TemporaryDirectory(prefix="sqla-doctor-demo-") as tmp:
        engine = scenario.make_engine(name, f"sqlite:///{tmp}/bookstore.db")
        try:
            scenario.seed(name, engine)
            # Paths in locations and messages relative to the demo, like the static ones.
            with track(mode="collect", config=Config(root=DEMO_ROOT)) as unit:
                scenario.run(name, engine)
        finally:
            engine.dispose()
    return list(unit.findings), unit.query_count, statement_rows(unit)


def _relative(findings: Sequence[Finding]) -> list[Finding]:
    """Runtime findings point at absolute paths; show them like the static ones."""
    from dataclasses import replace

    result = []
    for finding in findings:
        path = Path(finding.location.path)
        if path.is_absolute() and DEMO_ROOT in path.parents:
            location = replace(finding.location, path=path.relative_to(DEMO_ROOT).as_posix())
            finding = replace(finding, location=location)
        result.append(finding)
    return result


def main(fmt: str = "text", output: Path | None = None) -> int:
    """Exit 0 when the bad twin shows its pitfalls and the fixed twin is clean, else 2."""
    results: dict[str, tuple[list[Finding], list[Finding], int, int | None]] = {}
    statements: list[dict[str, object]] = []
    for name in TWINS:
        static, files = static_findings(name)
        runtime, queries, rows = runtime_findings(name)
        results[name] = (static, _relative(runtime), files, queries)
        if name == "bad":
            statements = rows

    bad_static, bad_runtime, files, queries = results["bad"]
    fixed_static, fixed_runtime, _, fixed_queries = results["fixed"]
    context = ReportContext(
        files=files,
        tool_version=__version__,
        command="demo",
        root=str(DEMO_ROOT),
        queries=tuple(statements),
        query_count=queries,
    )
    healthy = bool(bad_static) and not fixed_static and not fixed_runtime

    if fmt != "text":
        text = render(fmt, [*bad_static, *bad_runtime], context)
        if output is not None:
            output.write_text(text, encoding="utf-8")
            print(f"wrote {output}")
        else:
            sys.stdout.write(text)
        return 0 if healthy else 2

    out: list[str] = []
    out.append(f"sqla-doctor {__version__} demo: the bookstore app in {DEMO_ROOT}\n")
    out.append("== Static check of bad/ (source read, never imported) ==\n")
    out.append(render("text", bad_static, context))
    if queries is None:
        out.append("\n== Runtime: the runtime doctor is not available in this build ==\n")
    else:
        out.append(
            f"\n== Runtime: bad/ handlers run on SQLite under the doctor ({queries} queries) ==\n"
        )
        out.append(render("text", bad_runtime, ReportContext(tool_version=__version__)))
    out.append("\n== The fixed twin (fixed/) ==\n")
    verdict = "clean" if not fixed_static and not fixed_runtime else "NOT clean"
    out.append(
        f"static: {len(fixed_static)} findings; runtime: {len(fixed_runtime)} findings"
        + (f" ({fixed_queries} queries)" if fixed_queries is not None else "")
        + f" — {verdict}\n"
    )
    if fixed_static or fixed_runtime:
        out.append(render("text", [*fixed_static, *fixed_runtime], context))
    out.append(
        "\nNext: `sqla-doctor check PATH` on your project, "
        "`sqla-doctor run -- python app.py` to watch it run.\n"
    )
    text = "".join(out)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {output}")
    else:
        sys.stdout.write(text)
    return 0 if healthy else 2
