"""SQD604: a down_revision (or depends_on) that names no revision, a duplicate id, a cycle."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from sqla_doctor.findings import Finding, Related, Severity
from sqla_doctor.static.alembic.project import AlembicAnalysis, AlembicProject
from sqla_doctor.static.alembic.rule import MigrationRule
from sqla_doctor.static.rule import Invalid, Valid

_INI = {
    "alembic.ini": "[alembic]\nscript_location = %(here)s/migrations\n",
    "migrations/env.py": "",
}


def _python2_revision(rev: str, down: str) -> str:
    """A revision file of a Python 2 project: Python 3 cannot parse it (SQD901)."""
    return (
        f"from alembic import op\n\nrevision = {rev!r}\ndown_revision = {down!r}\n\n"
        "def upgrade():\n    print 'Backfilling thread ids...'\n"
    )


def _revision(rev: str, down: object, extra: str = "") -> str:
    return (
        f"from alembic import op\n\nrevision = {rev!r}\ndown_revision = {down!r}\n{extra}\n"
        "def upgrade():\n    pass\n"
    )


class BrokenRevisionChain(MigrationRule):
    """
    ## What it does
    Checks an Alembic revision graph for links that break it: a `down_revision` (or a
    `depends_on`) naming a revision that no file declares, two files declaring the same
    `revision`, and a cycle of `down_revision`s.

    ## Why is this bad?
    Alembic loads every revision file before it does anything: a `down_revision` that
    names nothing stops every command (`KeyError` after "Revision abc123 referenced from
    def456 is not present"), including `alembic current` in the deploy. It happens when a
    migration is deleted or squashed, when a branch is rebased and a revision file
    regenerated with a new id, or when an id is hand-edited. Two files with the same id
    are worse: Alembic warns and silently keeps one of them, so the other migration never
    runs.

    ## Example
    ```python
    # versions/c3_add_users_phone.py
    revision = "c3"
    down_revision = "b2f1"  # b2f1 was regenerated as b2f7 on rebase
    ```

    Use instead:
    ```python
    # versions/c3_add_users_phone.py
    revision = "c3"
    down_revision = "b2f7"
    ```

    ## References
    - [Alembic: The migration environment, revision identifiers](https://alembic.sqlalchemy.org/en/latest/tutorial.html#create-a-migration-script)
    """

    code = "SQD604"
    name = "broken-revision-chain"
    pitfalls = ("P26",)
    severity = Severity.ERROR
    message = "{what}"
    postgresql_only = False

    VALID = (
        Valid(
            _revision("a1", None),
            path="migrations/versions/a1.py",
            files={
                **_INI,
                "migrations/versions/b2.py": _revision("b2", "a1"),
                "migrations/versions/c3.py": _revision("c3", "a1", "depends_on = 'shop'"),
                "migrations/versions/d4.py": _revision("d4", ("b2", "c3"), "branch_labels = None"),
                "migrations/versions/s1.py": _revision("s1", None, "branch_labels = ('shop',)"),
            },
        ),
        # Revisions spread over two version locations.
        Valid(
            _revision("a1", None),
            path="migrations/versions/a1.py",
            files={
                "alembic.ini": (
                    "[alembic]\nscript_location = migrations\npath_separator = space\n"
                    "version_locations = %(here)s/migrations/versions %(here)s/plugins/versions\n"
                ),
                "migrations/env.py": "",
                "plugins/versions/p1.py": _revision("p1", "a1"),
            },
        ),
        # b2 is declared by a file this Python cannot parse: Alembic, on the project's
        # Python, loads it.
        Valid(
            _revision("c3", "b2"),
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _revision("a1", None),
                "migrations/versions/b2.py": _python2_revision("b2", "a1"),
            },
        ),
    )
    INVALID = (
        # ... but the unparsable file declares another revision.
        Invalid(
            _revision("c3", "b2"),
            path="migrations/versions/c3.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _revision("a1", None),
                "migrations/versions/b1.py": _python2_revision("b1", "a1"),
            },
            line=4,
        ),
        Invalid(
            _revision("c3", "b2f1"),
            path="migrations/versions/c3_add_phone.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _revision("a1", None),
                "migrations/versions/b2f7.py": _revision("b2f7", "a1"),
            },
            line=4,
            expected_message=(
                "down_revision 'b2f1' of revision c3 names no revision in migrations (did you "
                "mean b2f7?): every Alembic command fails with KeyError — point it at the "
                "revision it follows"
            ),
        ),
        Invalid(
            _revision("b2", "a1"),
            path="migrations/versions/b2_copy.py",
            files={
                **_INI,
                "migrations/versions/a1.py": _revision("a1", None),
                "migrations/versions/b2.py": _revision("b2", "a1"),
            },
            line=3,
        ),
        Invalid(
            _revision("a1", "c3"),
            path="migrations/versions/a1.py",
            files={
                **_INI,
                "migrations/versions/b2.py": _revision("b2", "a1"),
                "migrations/versions/c3.py": _revision("c3", "b2"),
            },
        ),
    )

    def check_alembic_project(
        self, project: AlembicProject, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        graph = project.graph
        where = shared.context.display(project.location.directory)
        known = sorted(graph.revisions)
        for revision, missing in graph.missing_down_revisions():
            migration = project.file_of(revision)
            candidates = [
                r
                for r in known
                if r != revision.revision and r not in graph.descendants(revision.revision)
            ]
            close = difflib.get_close_matches(missing, candidates, n=1, cutoff=0.6)
            guess = f" (did you mean {close[0]}?)" if close else ""
            yield self.at(
                migration.file,
                migration.statement_at(revision.down_line),
                what=(
                    f"down_revision {missing!r} of revision {revision.revision} names no "
                    f"revision in {where}{guess}: every Alembic command fails with KeyError — "
                    "point it at the revision it follows"
                ),
            )
        for revision, missing in graph.missing_dependencies():
            migration = project.file_of(revision)
            yield self.at(
                migration.file,
                migration.statement_at(revision.depends_line),
                what=(
                    f"depends_on {missing!r} of revision {revision.revision} names no revision "
                    f"or branch label in {where}: every Alembic command fails"
                ),
            )
        for first, second in graph.duplicates:
            duplicate = next(m for m in project.files if m.revision is second)
            original = project.file_of(first)
            yield self.at(
                duplicate.file,
                duplicate.statement_at(second.line),
                what=(
                    f"revision {second.revision} is also declared by {first.display}: Alembic "
                    "keeps only one of the two files and the other migration never runs — give "
                    "this one a new id"
                ),
                related=(
                    Related(
                        original.file.ctx.location(original.statement_at(first.line)),
                        "the other declaration",
                    ),
                ),
            )
        for revision in graph.cycles():
            migration = project.file_of(revision)
            yield self.at(
                migration.file,
                migration.statement_at(revision.down_line),
                what=(
                    f"revision {revision.revision} is its own ancestor through down_revision: "
                    "Alembic stops with CycleDetected — break the cycle"
                ),
            )
