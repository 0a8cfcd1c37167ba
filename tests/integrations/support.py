"""Where a marked line of a test file is."""

from __future__ import annotations

import inspect
from pathlib import Path


def line_of(marker: str) -> int:
    """The line of the calling test file that ends with ``# line:<marker>``."""
    source_file = inspect.stack()[1].filename
    tag = f"# line:{marker}"
    for number, text in enumerate(Path(source_file).read_text().splitlines(), start=1):
        if text.rstrip().endswith(tag):
            return number
    raise AssertionError(f"no line ends with {tag!r} in {source_file}")
