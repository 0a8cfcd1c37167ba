"""SQD201 points its related location at the query that loaded the rows."""

from __future__ import annotations

from sqla_doctor.static.rule import Invalid
from sqla_doctor.static.rules.loading.relationship_access_in_loop import (
    RelationshipAccessInLoop,
)
from sqla_doctor.static.testing import run_example

MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

class Base(DeclarativeBase):
    pass

class Package(Base):
    __tablename__ = "package"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]

class Build(Base):
    __tablename__ = "build"
    id: Mapped[int] = mapped_column(primary_key=True)
    package_builds: Mapped[list["PackageBuild"]] = relationship()

class PackageBuild(Base):
    __tablename__ = "package_build"
    id: Mapped[int] = mapped_column(primary_key=True)
    build_id: Mapped[int] = mapped_column(ForeignKey("build.id"))
    package_id: Mapped[int] = mapped_column(ForeignKey("package.id"))
    package: Mapped[Package] = relationship()
"""
FILES = {"app/__init__.py": "", "app/models.py": MODELS}


def _related_lines(code: str) -> list[int]:
    run = run_example(RelationshipAccessInLoop, Invalid(code, path="app/api.py", files=FILES))
    [finding] = [f for f in run.findings if f.code == "SQD201"]
    return [related.location.line for related in finding.related]


def test_rows_of_a_parents_collection_point_at_the_query_that_loaded_the_parent() -> None:
    # conda-store's lockfile: each package build's package, through `build.package_builds`.
    code = """
    from app.models import Build

    def lockfile(db, build_id):
        build = db.query(Build).filter(Build.id == build_id).first()
        return [
            row.package.name
            for row in build.package_builds
        ]
    """
    assert _related_lines(code) == [4]


def test_rows_a_query_loads_point_at_that_query() -> None:
    code = """
    from app.models import PackageBuild

    def names(db):
        rows = db.query(PackageBuild).all()
        return [
            row.package.name
            for row in rows
        ]
    """
    assert _related_lines(code) == [4]
