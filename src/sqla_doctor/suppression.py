"""``# noqa: SQD201`` (or the rule's name) on a line; ``# sqla-doctor: noqa`` for a file.

Static and runtime findings share this: a runtime finding is suppressed by a ``noqa`` on
the user's call site it points at. Suppressions that silence nothing are reported.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sqla_doctor.findings import Finding

_NOQA = re.compile(
    r"#\s*(?P<file>sqla-doctor:\s*)?noqa(?::\s*(?P<codes>[\w-]+(?:[\s,]+[\w-]+)*))?",
    re.IGNORECASE,
)
_MENTIONS_NOQA = re.compile("noqa", re.IGNORECASE)
ALL = "*"


@dataclass
class Directive:
    line: int
    col: int
    codes: frozenset[str]  # upper-cased codes or lower-cased names; {"*"} for a bare noqa
    used: set[str] = field(default_factory=set)
    file_wide: bool = False


@dataclass
class Suppressions:
    """The noqa directives of one file."""

    lines: dict[int, Directive] = field(default_factory=dict)
    file_wide: list[Directive] = field(default_factory=list)

    @classmethod
    def parse(cls, source: str) -> Suppressions:
        result = cls()
        if not _MENTIONS_NOQA.search(source):
            return result
        for line, col, comment in _comments(source):
            match = _NOQA.search(comment)
            if not match:
                continue
            raw = match.group("codes")
            codes = frozenset(_normalise(c) for c in re.split(r"[\s,]+", raw) if c) if raw else None
            directive = Directive(
                line=line,
                col=col + match.start() + 1,
                codes=codes or frozenset({ALL}),
                file_wide=bool(match.group("file")),
            )
            if match.group("file"):
                result.file_wide.append(directive)
            else:
                result.lines[line] = directive
        return result

    def suppresses(self, finding: Finding, alias: Callable[[str], str | None]) -> bool:
        """Whether a directive covers this finding; marks the directive used."""
        keys = {finding.code.upper(), finding.name.lower()}
        for directive in self.file_wide:
            if self._matches(directive, keys, alias):
                return True
        # A multi-line construct may carry its noqa on its first or its last line.
        lines = {finding.location.line, finding.location.end_line or finding.location.line}
        for line in sorted(lines):
            found = self.lines.get(line)
            if found is not None and self._matches(found, keys, alias):
                return True
        return False

    @staticmethod
    def _matches(directive: Directive, keys: set[str], alias: Callable[[str], str | None]) -> bool:
        if ALL in directive.codes:
            directive.used.add(ALL)
            return True
        for code in directive.codes:
            canonical = alias(code) or code
            if canonical in keys or code in keys:
                directive.used.add(code)
                return True
        return False

    def unused(self) -> Iterable[tuple[Directive, list[str]]]:
        """Directives (or some of their codes) that suppressed nothing."""
        for directive in [*self.lines.values(), *self.file_wide]:
            if ALL in directive.codes:
                # A bare line-level noqa may be meant for another linter; ours is file-wide.
                if directive.file_wide and not directive.used:
                    yield directive, []
                continue
            unused = sorted(directive.codes - directive.used)
            if unused:
                yield directive, unused


def _normalise(code: str) -> str:
    return code.upper() if re.match(r"^[A-Za-z]+\d+$", code) else code.lower()


_NOQA_COMMENT = re.compile(r"#[^\n]*?noqa[^\n]*", re.IGNORECASE)


def _comments(source: str) -> Iterable[tuple[int, int, str]]:
    """(line, 0-based col, text) of each comment that mentions noqa.

    A regex over the text rather than the tokenizer: tokenizing every file cost as much as
    parsing it. A `#` inside a string literal that also says noqa is the rare price.
    """
    line_starts: list[int] | None = None
    for match in _NOQA_COMMENT.finditer(source):
        if line_starts is None:
            line_starts = [0, *(m.end() for m in re.finditer("\n", source))]
        start = match.start()
        line = bisect.bisect_right(line_starts, start)
        yield line, start - line_starts[line - 1], match.group()


def line_has_noqa(line_text: str, code: str, name: str) -> bool:
    """For runtime findings: does this source line carry a noqa for the check?"""
    index = line_text.find("#")
    if index < 0:
        return False
    match = _NOQA.search(line_text[index:])
    if not match:
        return False
    raw = match.group("codes")
    if not raw:
        return True
    codes = {_normalise(c) for c in re.split(r"[\s,]+", raw) if c}
    return code.upper() in codes or name.lower() in codes
