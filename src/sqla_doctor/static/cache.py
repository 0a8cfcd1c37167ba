"""A per-project cache of facts and findings, keyed on file content and the tool itself.

A file whose bytes are unchanged is not parsed again for the index; its findings are
reused when, in addition, the rules run and every file's facts are the same as last time
(a rule may read the whole project index). Anything unreadable is a cache miss.
"""

from __future__ import annotations

import copy
import hashlib
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqla_doctor import __version__
from sqla_doctor.findings import Finding
from sqla_doctor.static.index import FileFacts
from sqla_doctor.suppression import Suppressions

if TYPE_CHECKING:
    from sqla_doctor.static.engine import SourceFile

CACHE_DIR_NAME = ".sqla-doctor-cache"
_FORMAT = 1


@cache
def tool_fingerprint() -> str:
    """The version plus the size and mtime of every module of the tool, so that a
    development checkout never reuses findings of an older rule."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{_FORMAT}:{__version__}:{sys.version_info[:2]}".encode())
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


@dataclass
class Entry:
    digest: str
    facts: FileFacts | None
    suppressions: Suppressions | None
    error: Finding | None
    findings_key: str = ""
    findings: list[Finding] = field(default_factory=list)


class FileCache:
    def __init__(self, path: Path, entries: dict[str, Entry]) -> None:
        self.path = path
        self.entries = entries
        self.fresh: dict[str, Entry] = {}
        # Whether this run learnt anything the file does not hold: a run that changed
        # nothing does not write it again (pickling it costs a tenth of a cold run).
        self.changed = False

    @classmethod
    def load(cls, directory: Path) -> FileCache:
        path = directory / f"{tool_fingerprint()}.pickle"
        entries: dict[str, Entry] = {}
        try:
            with path.open("rb") as handle:
                loaded = pickle.load(handle)
            if isinstance(loaded, dict):
                entries = loaded
        except Exception:  # a missing, stale or corrupt cache is a cold run
            entries = {}
        return cls(path, entries)

    def prepared(self, path: Path, display: str, digest: str) -> SourceFile | None:
        from sqla_doctor.static.engine import SourceFile

        entry = self.entries.get(display)
        if entry is None or entry.digest != digest:
            return None
        return SourceFile(
            path=path,
            display=display,
            facts=entry.facts,
            error=entry.error,
            digest=digest,
            # Suppressions record which directives were used; never share the cached one.
            suppressions=copy.deepcopy(entry.suppressions),
        )

    def findings(self, item: SourceFile, key: str) -> list[Finding] | None:
        entry = self.entries.get(item.display)
        if entry is None or entry.digest != item.digest or entry.findings_key != key:
            return None
        return list(entry.findings)

    def store_findings(self, item: SourceFile, key: str, findings: list[Finding]) -> None:
        entry = self.entries.get(item.display)
        if entry is None or entry.digest != item.digest:
            entry = Entry(item.digest, item.facts, None, item.error)
            self.entries[item.display] = entry
        entry.findings_key, entry.findings = key, list(findings)
        self.changed = True

    def save(self, sources: list[SourceFile]) -> None:
        """Keep the entries of the files seen in this run; write atomically."""
        kept: dict[str, Entry] = {}
        changed = self.changed
        for item in sources:
            if not item.digest:
                continue
            entry = self.entries.get(item.display)
            if entry is None or entry.digest != item.digest:
                entry = Entry(item.digest, item.facts, None, item.error)
                changed = True
            if entry.facts is not item.facts or entry.error is not item.error:
                entry.facts = item.facts
                entry.error = item.error
                changed = True
            if item.suppressions is not None and entry.suppressions is None:
                entry.suppressions = _pristine(item.suppressions)
                changed = True
            kept[item.display] = entry
        if not changed and kept.keys() == self.entries.keys():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            gitignore = self.path.parent / ".gitignore"
            if not gitignore.exists():
                gitignore.write_text("# created by sqla-doctor\n*\n", encoding="utf-8")
            for stale in self.path.parent.glob("*.pickle"):
                if stale != self.path:
                    stale.unlink(missing_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                pickle.dump(kept, out, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(temporary, self.path)
        except OSError:
            # A read-only checkout still gets its report; only the next run is slower.
            pass


def _pristine(suppressions: Suppressions) -> Suppressions:
    fresh = copy.deepcopy(suppressions)
    for directive in [*fresh.lines.values(), *fresh.file_wide]:
        directive.used.clear()
    return fresh
