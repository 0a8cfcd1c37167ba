"""One self-contained HTML page: findings grouped by rule and file, with code excerpts,
the runtime's query list, and filtering by rule and severity. No network assets.

Everything that comes from the checked code or the database (source lines, SQL, messages)
is escaped; nothing is embedded in a script.
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from sqla_doctor.findings import Finding, Kind, Location, Severity
from sqla_doctor.registry import DOCS_BASE_URL, find_check
from sqla_doctor.report import ReportContext

_EXCERPT_CONTEXT = 2
_MAX_QUERIES = 500

_CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --bg:#ffffff; --code:#f6f8fa;
  --error:#cf222e; --warning:#9a6700; --info:#0969da; }
* { box-sizing: border-box; }
body { font: 14px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg);
  background: var(--bg); margin: 0; }
header { padding: 16px 24px; border-bottom: 1px solid var(--line); }
header h1 { font-size: 20px; margin: 0 0 4px; }
main { padding: 16px 24px; max-width: 1200px; }
.summary span { margin-right: 16px; }
.filters { display: flex; gap: 16px; flex-wrap: wrap; align-items: center; padding: 12px 0;
  border-bottom: 1px solid var(--line); position: sticky; top: 0; background: var(--bg); }
.filters label { margin-right: 8px; }
section.rule { margin: 20px 0; }
section.rule h2 { font-size: 16px; margin: 0; }
section.rule p.summary { color: var(--muted); margin: 2px 0 8px; }
h3.file { font-size: 14px; font-family: ui-monospace, SFMono-Regular, Menlo, monospace;
  margin: 12px 0 4px; }
.finding { border: 1px solid var(--line); border-left-width: 4px; border-radius: 6px;
  padding: 8px 12px; margin: 6px 0; }
.finding.error { border-left-color: var(--error); }
.finding.warning { border-left-color: var(--warning); }
.finding.info { border-left-color: var(--info); }
.badge { font-size: 12px; font-weight: 600; text-transform: uppercase; margin-right: 6px; }
.badge.error { color: var(--error); } .badge.warning { color: var(--warning); }
.badge.info { color: var(--info); }
.loc, code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
pre.excerpt { background: var(--code); padding: 8px; border-radius: 6px; overflow-x: auto;
  margin: 6px 0; }
pre.excerpt .hit { background: #fff8c5; display: inline-block; width: 100%; }
.fix { color: #1a7f37; }
.related { color: var(--muted); }
table.queries { border-collapse: collapse; width: 100%; }
table.queries th, table.queries td { border-bottom: 1px solid var(--line); padding: 4px 8px;
  text-align: left; vertical-align: top; }
table.queries td.sql { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px; }
.empty { color: var(--muted); font-style: italic; }
[hidden] { display: none !important; }
"""

# Filtering only toggles `hidden` from data attributes; no data is read from the page into code.
_JS = """
(function () {
  const rule = document.getElementById('filter-rule');
  const severity = document.getElementById('filter-severity');
  const counter = document.getElementById('shown');
  function apply() {
    let shown = 0;
    document.querySelectorAll('.finding').forEach(function (el) {
      const ok = (rule.value === '' || el.dataset.code === rule.value) &&
                 (severity.value === '' || el.dataset.severity === severity.value);
      el.hidden = !ok;
      if (ok) { shown += 1; }
    });
    document.querySelectorAll('h3.file').forEach(function (h) {
      let el = h.nextElementSibling;
      let any = false;
      while (el && el.classList.contains('finding')) {
        if (!el.hidden) { any = true; }
        el = el.nextElementSibling;
      }
      h.hidden = !any;
    });
    document.querySelectorAll('section.rule').forEach(function (s) {
      s.hidden = Array.from(s.querySelectorAll('.finding')).every(function (el) { return el.hidden; });
    });
    counter.textContent = String(shown);
  }
  rule.addEventListener('change', apply);
  severity.addEventListener('change', apply);
  apply();
})();
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# A Python string literal on one line (prefixes kept), or the comment that ends the
# line: a runtime excerpt masks the first and leaves the second as written.
_PY_STRING = re.compile(r"""(?P<q>["'])(?:\\.|(?!(?P=q)).)*(?P=q)|(?P<comment>#.*)""")


def _mask_strings(line: str) -> str:
    return _PY_STRING.sub(
        lambda m: m.group(0) if m.group("comment") else m.group("q") + "…" + m.group("q"),
        line,
    )


def _excerpt(
    root: str, location: Location, cache: dict[str, list[str] | None], *, mask: bool = False
) -> str:
    """The lines around ``location``; with ``mask``, string literals shown as "…".

    Runtime findings mask them: a program's source near a query often holds the values
    it runs with (a URL with a password, a token), which a shared report must not show.
    """
    path = Path(location.path)
    if not path.is_absolute():
        path = Path(root) / path
    key = str(path)
    if key not in cache:
        try:
            cache[key] = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            cache[key] = None
    lines = cache[key]
    if not lines or location.line > len(lines):
        return ""
    first = max(1, location.line - _EXCERPT_CONTEXT)
    last = min(len(lines), (location.end_line or location.line) + _EXCERPT_CONTEXT)
    rows = []
    width = len(str(last))
    for number in range(first, last + 1):
        line = lines[number - 1]
        text = f"{number:>{width}} | {_mask_strings(line) if mask else line}"
        hit = location.line <= number <= (location.end_line or location.line)
        rows.append(f'<span class="hit">{_e(text)}</span>' if hit else _e(text))
    return '<pre class="excerpt">' + "\n".join(rows) + "</pre>"


def _finding(finding: Finding, root: str, cache: dict[str, list[str] | None]) -> str:
    severity = finding.severity.value
    parts = [
        f'<div class="finding {severity}" data-code="{_e(finding.code)}" '
        f'data-severity="{severity}" data-file="{_e(finding.location.path)}">',
        f'<div><span class="badge {severity}">{severity}</span>'
        f'<span class="loc">{_e(finding.location)}</span> — {_e(finding.message)}</div>',
        _excerpt(root, finding.location, cache, mask=finding.kind is Kind.RUNTIME),
    ]
    for related in finding.related:
        parts.append(
            f'<div class="related">↳ <span class="loc">{_e(related.location)}</span> '
            f"{_e(related.message)}</div>"
        )
    if finding.fix_hint:
        parts.append(f'<div class="fix">Fix: {_e(finding.fix_hint)}</div>')
    parts.append("</div>")
    return "\n".join(p for p in parts if p)


def _queries(context: ReportContext) -> str:
    if not context.queries:
        return ""
    rows = []
    for query in list(context.queries)[:_MAX_QUERIES]:
        duration = query.get("duration_ms")
        timing = f"{float(duration):.2f} ms" if isinstance(duration, (int, float)) else ""
        rows.append(
            "<tr>"
            f'<td class="sql">{_e(query.get("sql", ""))}</td>'
            f"<td>{_e(query.get('count', 1))}</td>"
            f"<td>{_e(timing)}</td>"
            f'<td class="loc">{_e(query.get("callsite", ""))}</td>'
            "</tr>"
        )
    more = len(context.queries) - _MAX_QUERIES
    tail = f'<p class="empty">… and {more} more statements</p>' if more > 0 else ""
    return (
        '<section class="queries"><h2>Statements</h2>'
        '<table class="queries"><thead><tr><th>SQL</th><th>Times</th><th>Total time</th>'
        "<th>Call site</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        + tail
        + "</section>"
    )


def render(findings: Sequence[Finding], context: ReportContext) -> str:
    cache: dict[str, list[str] | None] = {}
    by_rule: dict[str, list[Finding]] = defaultdict(list)
    for finding in findings:
        by_rule[finding.code].append(finding)
    severities = Counter(f.severity.value for f in findings)

    sections = []
    for code in sorted(by_rule):
        group = by_rule[code]
        check = find_check(code)
        summary = check.doc().summary() if check else ""
        by_file: dict[str, list[Finding]] = defaultdict(list)
        for finding in group:
            by_file[finding.location.path].append(finding)
        body = []
        for path in sorted(by_file):
            body.append(f'<h3 class="file" data-file="{_e(path)}">{_e(path)}</h3>')
            body.extend(_finding(f, context.root, cache) for f in by_file[path])
        sections.append(
            f'<section class="rule" data-code="{_e(code)}">'
            f'<h2><a href="{_e(DOCS_BASE_URL)}/{_e(code)}.md">{_e(code)}</a> '
            f"{_e(group[0].name)} <small>({len(group)})</small></h2>"
            f'<p class="summary">{_e(summary)}</p>' + "\n".join(body) + "</section>"
        )

    rule_options = "".join(
        f'<option value="{_e(code)}">{_e(code)} {_e(by_rule[code][0].name)}</option>'
        for code in sorted(by_rule)
    )
    severity_options = "".join(
        f'<option value="{s.value}">{s.value}</option>'
        for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)
    )
    queries = (
        f"<span>{context.query_count} queries</span>" if context.query_count is not None else ""
    )
    files = f"<span>{context.files} files</span>" if context.files else ""
    content = "\n".join(sections) or '<p class="empty">No findings.</p>'
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>sqla-doctor report</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>sqla-doctor {_e(context.command)} report</h1>
<div class="summary"><span><strong id="total">{len(findings)}</strong> findings</span>
<span class="badge error">{severities.get("error", 0)} error</span>
<span class="badge warning">{severities.get("warning", 0)} warning</span>
<span class="badge info">{severities.get("info", 0)} info</span>
{files}{queries}<span>sqla-doctor {_e(context.tool_version)}</span></div>
</header>
<main>
<div class="filters">
<label for="filter-rule">Rule</label>
<select id="filter-rule"><option value="">all rules</option>{rule_options}</select>
<label for="filter-severity">Severity</label>
<select id="filter-severity"><option value="">all severities</option>{severity_options}</select>
<span>showing <strong id="shown">{len(findings)}</strong></span>
</div>
{content}
{_queries(context)}
</main>
<script>{_JS}</script>
</body>
</html>
"""
