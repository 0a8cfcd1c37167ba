"""Reporters: each turns findings into text with ``render(findings, context) -> str``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqla_doctor.findings import Finding

FORMATS = ("text", "json", "sarif", "github", "html")


@dataclass(frozen=True)
class ReportContext:
    """What a reporter may say besides the findings themselves."""

    files: int = 0
    tool_version: str = ""
    command: str = "check"
    root: str = ""
    # Runtime runs: the statements seen (shapes and timings, never parameter values).
    queries: Sequence[dict[str, object]] = field(default_factory=tuple)
    query_count: int | None = None
    # Errors already printed (a missing path, a file that does not parse...): a run that
    # had some is no clean bill of health.
    errors: int = 0


Renderer = Callable[[Sequence[Finding], ReportContext], str]


def renderer(fmt: str) -> Renderer:
    """The render function of a format; imported lazily so unused ones cost nothing."""
    if fmt == "text":
        from sqla_doctor.report.text import render
    elif fmt == "json":
        from sqla_doctor.report.json import render
    elif fmt == "sarif":
        from sqla_doctor.report.sarif import render
    elif fmt == "github":
        from sqla_doctor.report.github import render
    elif fmt == "html":
        from sqla_doctor.report.html import render
    else:
        raise ValueError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    return render


def render(fmt: str, findings: Sequence[Finding], context: ReportContext | None = None) -> str:
    if context is None:
        from sqla_doctor import __version__

        context = ReportContext(files=0, tool_version=__version__)
    return renderer(fmt)(sorted(findings, key=lambda f: f.sort_key), context)
