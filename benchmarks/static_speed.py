"""Static analyzer speed against the floor: ``ast.parse`` of the same files in one process.

    python benchmarks/static_speed.py [--lines 200000] [--repeat 3]

Corpus: the installed SQLAlchemy and Alembic packages plus a generated SQLAlchemy project
(models, services with loops over query results, FastAPI-style dependencies) of at least
``--lines`` lines. Every figure is a ratio taken in this one run (machines are noisy):
cold single process / floor, warm cached / cold, cold with workers / floor, and the peak
memory of a cold run over half the corpus and over all of it (flat means the same).
"""

from __future__ import annotations

import argparse
import ast
import gc
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

MODEL = '''
class Model{n}(Base):
    __tablename__ = "model_{n}"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_{p}.id"))
    children: Mapped[list["Model{n}"]] = relationship(back_populates="parent")
    parent: Mapped["Model{n} | None"] = relationship(back_populates="children", remote_side=[id])
'''

SERVICE = '''
def list_{n}(session: Session, name: str) -> list[dict[str, object]]:
    stmt = select(Model{m}).where(Model{m}.name == name).options(selectinload(Model{m}.children))
    rows = session.scalars(stmt).all()
    result = []
    for row in rows:
        result.append({{"id": row.id, "children": [c.id for c in row.children]}})
    return result


def update_{n}(session: Session, ident: int, name: str) -> None:
    with session.begin():
        obj = session.get(Model{m}, ident)
        if obj is not None:
            obj.name = name


async def fetch_{n}(session: AsyncSession, ident: int) -> object:
    result = await session.execute(select(Model{m}).where(Model{m}.id == ident))
    return result.scalar_one_or_none()
'''

HEADER = '''
from __future__ import annotations

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, selectinload

from .base import Base
'''


def generate(root: Path, lines: int) -> None:
    package = root / "genapp"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(
        "from sqlalchemy.orm import DeclarativeBase\n\nclass Base(DeclarativeBase):\n    pass\n"
    )
    written, module = 0, 0
    while written < lines:
        body = [HEADER]
        body += [MODEL.format(n=module * 10 + i, p=module * 10) for i in range(10)]
        body += [SERVICE.format(n=i, m=module * 10 + i % 10) for i in range(30)]
        text = textwrap.dedent("\n".join(body))
        (package / f"module_{module}.py").write_text(text)
        written += text.count("\n")
        module += 1


def corpus(root: Path, lines: int) -> list[Path]:
    import alembic
    import sqlalchemy

    for package in (sqlalchemy, alembic):
        source = Path(package.__file__).resolve().parent  # type: ignore[arg-type]
        shutil.copytree(source, root / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    generate(root, lines)
    return sorted(root.rglob("*.py"))


def floor(files: list[Path]) -> float:
    start = time.perf_counter()
    for path in files:
        ast.parse(path.read_bytes())
    return time.perf_counter() - start


def run(root: Path, *args: str) -> tuple[float, int]:
    """Wall time and peak RSS (KiB) of one `sqla-doctor check` in a fresh process."""
    code = (
        "import resource, sys, time\n"
        "from sqla_doctor.cli import main\n"
        "t = time.perf_counter()\n"
        "code = main(sys.argv[1:])\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
        " file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "check", "--exit-zero", "--format", "json",
         "-o", os.devnull, *args, str(root)],
        capture_output=True, text=True, check=False,
    )
    last = proc.stderr.strip().splitlines()[-1]
    seconds, rss = last.split()
    return float(seconds), int(rss)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqla-doctor-bench-") as tmp:
        root = Path(tmp) / "corpus"
        files = corpus(root, options.lines)
        total = sum(p.read_bytes().count(b"\n") for p in files)
        half = Path(tmp) / "half"
        half.mkdir()
        for path in files[: len(files) // 2]:
            target = half / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        cache = Path(tmp) / "cache"
        rows = []
        for _ in range(options.repeat):
            gc.collect()
            base = floor(files)
            cold, rss_all = run(root, "--no-cache")
            warm_seed, _ = run(root, "--cache-dir", str(cache))
            warm, _ = run(root, "--cache-dir", str(cache))
            shutil.rmtree(cache)
            parallel, _ = run(root, "--no-cache", "--jobs", "0")
            _, rss_half = run(half, "--no-cache")
            rows.append((base, cold, warm_seed, warm, parallel, rss_half, rss_all))
        best = min(rows, key=lambda r: r[1] / r[0])
        base, cold, warm_seed, warm, parallel, rss_half, rss_all = best
        print(f"corpus: {len(files)} files, {total} lines (SQLAlchemy + Alembic + generated app)")
        print(f"floor (ast.parse, one process): {total / base:,.0f} lines/s")
        print(f"cold, one process         : {cold / base:.2f}x the floor")
        print(f"warm, cached              : {warm / cold:.3f}x the cold run")
        print(f"cold, {os.cpu_count()} worker processes: {parallel / base:.2f}x the floor")
        print(f"peak memory, half / all   : {rss_half / 1024:.0f} MiB / {rss_all / 1024:.0f} MiB")
        print("(best of", options.repeat, "rounds by cold/floor; each round runs all variants)")


if __name__ == "__main__":
    main()
