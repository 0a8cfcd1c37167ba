"""Both passes in worker processes: parse and extract facts, then run the rules.

Trees do not cross process boundaries (pickling them costs more than parsing), so a
worker parses each of its files again for the second pass; the project index is sent to
each worker once.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from sqla_doctor.findings import Finding

if TYPE_CHECKING:
    from sqla_doctor.static.cache import FileCache
    from sqla_doctor.static.engine import Engine, SourceFile
    from sqla_doctor.static.index import ProjectIndex

PARALLEL_MIN_FILES = 64
_worker_engine: Engine | None = None
_worker_index: ProjectIndex | None = None


def _prepare_one(args: tuple[Path, str]) -> SourceFile:
    from sqla_doctor.static.engine import prepare

    item = prepare(*args)
    item.tree = item.source = item.scans = None
    return item


def parallel_prepare(
    files: Sequence[Path], displays: Sequence[str], cache: FileCache | None, jobs: int
) -> list[SourceFile]:
    from sqla_doctor.static.engine import content_digest

    results: list[SourceFile | None] = [None] * len(files)
    todo: list[int] = []
    for number, (path, display) in enumerate(zip(files, displays, strict=True)):
        if cache is not None:
            try:
                hit = cache.prepared(path, display, content_digest(path.read_bytes()))
            except OSError:
                hit = None
            if hit is not None:
                results[number] = hit
                continue
        todo.append(number)
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        chunk = max(1, len(todo) // (jobs * 8))
        work = [(files[n], displays[n]) for n in todo]
        for number, item in zip(todo, pool.map(_prepare_one, work, chunksize=chunk), strict=True):
            results[number] = item
    return [item for item in results if item is not None]


def _init_rules(engine: Engine, index: ProjectIndex) -> None:
    global _worker_engine, _worker_index
    _worker_engine, _worker_index = engine, index


def _rules_one(item: SourceFile) -> tuple[list[Finding], list[str]]:
    assert _worker_engine is not None
    assert _worker_index is not None
    return _worker_engine.run_rules(item, _worker_index)


def parallel_rules(
    engine: Engine, items: Sequence[SourceFile], index: ProjectIndex
) -> list[tuple[list[Finding], list[str]]]:
    for item in items:
        item.tree = item.scans = None  # re-parsed in the worker
    with ProcessPoolExecutor(
        max_workers=engine.jobs, initializer=_init_rules, initargs=(engine, index)
    ) as pool:
        chunk = max(1, len(items) // (engine.jobs * 8))
        return list(pool.map(_rules_one, items, chunksize=chunk))
