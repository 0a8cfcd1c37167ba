"""SQD603: the revision graph has more than one head."""

from __future__ import annotations

from collections.abc import Iterable

from sqla_doctor.findings import Finding, Related, Severity
from sqla_doctor.static.alembic.project import AlembicAnalysis, AlembicProject
from sqla_doctor.static.alembic.revisions import Revision, RevisionGraph
from sqla_doctor.static.alembic.rule import MigrationRule
from sqla_doctor.static.rule import Invalid, Valid

_INI = {
    "alembic.ini": "[alembic]\nscript_location = %(here)s/migrations\n",
    "migrations/env.py": "",
}


def _revision(rev: str, down: str | tuple[str, ...] | None, extra: str = "") -> str:
    return (
        f"from alembic import op\n\nrevision = {rev!r}\ndown_revision = {down!r}\n{extra}\n"
        "def upgrade():\n    pass\n\ndef downgrade():\n    pass\n"
    )


class MultipleHeads(MigrationRule):
    """
    ## What it does
    Checks an Alembic revision graph (from every revision file's `revision` and
    `down_revision`, merge revisions included) for more than one head: two revisions that
    both build on the same parent and were never merged, or a second revision with
    `down_revision = None`. Heads on separately labelled branches (`branch_labels`) are
    intended and not reported.

    ## Why is this bad?
    `alembic upgrade head` stops with `MultipleHeads: Multiple head revisions are present
    for given argument 'head'`, usually in the deploy pipeline, after two pull requests
    that each added a migration were merged. `alembic revision --autogenerate` refuses to
    run too. Which order the two migrations should apply in is a decision for a person.

    ## Example
    ```python
    # versions/b2_add_orders_note.py
    revision = "b2"
    down_revision = "a1"

    # versions/c3_add_users_phone.py   (another branch, also on a1)
    revision = "c3"
    down_revision = "a1"
    ```

    Use instead:
    ```python
    # alembic merge -m "merge b2 and c3" b2 c3  →  versions/d4_merge_b2_and_c3.py
    revision = "d4"
    down_revision = ("b2", "c3")
    ```
    Or, when the two do not depend on each other's order, re-point one of them
    (`down_revision = "b2"` in c3) before either reaches a shared database.

    ## References
    - [Alembic: Working with branches](https://alembic.sqlalchemy.org/en/latest/branches.html)
    - [Alembic: `alembic merge`](https://alembic.sqlalchemy.org/en/latest/api/commands.html#alembic.command.merge)
    """

    code = "SQD603"
    name = "multiple-heads"
    pitfalls = ("P26",)
    severity = Severity.ERROR
    message = (
        "{count} heads in {where}: {heads}{fork} — `alembic upgrade head` fails with "
        'MultipleHeads; merge them with `alembic merge -m "merge heads" {ids}`'
    )
    postgresql_only = False

    VALID = (
        Valid(
            _revision("a1", None),
            path="migrations/versions/a1.py",
            files={
                **_INI,
                "migrations/versions/b2.py": _revision("b2", "a1"),
                "migrations/versions/c3.py": _revision("c3", "a1"),
                "migrations/versions/d4.py": _revision("d4", ("b2", "c3")),
            },
        ),
        # Independent, labelled branches are intended (`alembic upgrade heads`).
        Valid(
            _revision("a1", None, 'branch_labels = ("shop",)'),
            path="migrations/versions/a1.py",
            files={
                **_INI,
                "migrations/versions/b2.py": _revision("b2", "a1"),
                "migrations/versions/x1.py": _revision("x1", None, 'branch_labels = ("audit",)'),
            },
        ),
        # Expand and contract branches labelled by a constant of the project (glance's
        # `branch_labels = migration.EXPAND_BRANCH`).
        Valid(
            _revision("a1", None),
            path="migrations/versions/a1.py",
            files={
                **_INI,
                "migrations/versions/e1.py": _revision(
                    "e1", "a1", "branch_labels = migration.EXPAND_BRANCH"
                ),
                "migrations/versions/c1.py": _revision(
                    "c1", "a1", 'branch_labels = ("ocata01", migration.CONTRACT_BRANCH)'
                ),
            },
        ),
        # A branch labelled where it forks.
        Valid(
            _revision("a1", None),
            path="migrations/versions/a1.py",
            files={
                **_INI,
                "migrations/versions/b2.py": _revision("b2", "a1"),
                "migrations/versions/f1.py": _revision("f1", "a1", 'branch_labels = ("feature",)'),
            },
        ),
    )
    INVALID = (
        Invalid(
            _revision("a1", None),
            path="migrations/versions/a1.py",
            files={
                **_INI,
                "migrations/versions/b2_add_note.py": _revision("b2", "a1"),
                "migrations/versions/c3_add_phone.py": _revision("c3", "a1"),
            },
            count=1,
            expected_message=(
                "2 heads in migrations: b2 (migrations/versions/b2_add_note.py), c3 "
                "(migrations/versions/c3_add_phone.py), both built on a1 — `alembic upgrade "
                'head` fails with MultipleHeads; merge them with `alembic merge -m "merge '
                'heads" b2 c3`'
            ),
        ),
        # A second base revision.
        Invalid(
            _revision("a1", None),
            path="migrations/versions/a1.py",
            files={
                **_INI,
                "migrations/versions/b2.py": _revision("b2", "a1"),
                "migrations/versions/z9.py": _revision("z9", None),
            },
            count=1,
        ),
    )

    def check_alembic_project(
        self, project: AlembicProject, shared: AlembicAnalysis
    ) -> Iterable[Finding]:
        graph = project.graph
        broken = graph.broken()  # reported by SQD604
        heads = sorted(
            (h for h in graph.heads() if h.revision not in broken), key=lambda r: r.display
        )
        if len(heads) < 2:
            return
        for group in _conflicting_groups(graph, heads):
            last = project.file_of(group[-1])
            fork = _common_parents(graph, group)
            both = "both" if len(group) == 2 else "all"
            yield self.at(
                last.file,
                last.statement_at(group[-1].line),
                count=len(group),
                where=shared.context.display(project.location.directory),
                heads=", ".join(f"{r.revision} ({r.display})" for r in group),
                fork=f", {both} built on {', '.join(fork)}" if fork else "",
                ids=" ".join(r.revision for r in group),
                related=tuple(
                    Related(
                        project.file_of(r).file.ctx.location(
                            project.file_of(r).statement_at(r.line)
                        ),
                        f"head {r.revision}",
                    )
                    for r in group[:-1]
                ),
            )


def _conflicting_groups(graph: RevisionGraph, heads: list[Revision]) -> list[list[Revision]]:
    """Heads that `upgrade head` cannot choose between: neither has a branch label of its
    own on its line."""
    parent = {h.revision: h.revision for h in heads}

    def find(x: str) -> str:
        while parent[x] != x:
            x = parent[x]
        return x

    for i, first in enumerate(heads):
        for second in heads[i + 1 :]:
            if not graph.exclusive_labels(first.revision, second.revision) and not (
                graph.exclusive_labels(second.revision, first.revision)
            ):
                parent[find(first.revision)] = find(second.revision)
    groups: dict[str, list[Revision]] = {}
    for head in heads:
        groups.setdefault(find(head.revision), []).append(head)
    return [group for group in groups.values() if len(group) > 1]


def _common_parents(graph: RevisionGraph, group: list[Revision]) -> list[str]:
    """The newest revisions every head of the group builds on."""
    common: set[str] | None = None
    for head in group:
        line = graph.ancestors(head.revision)
        common = line if common is None else common & line
    if not common:
        return []
    newest = {r for r in common if not (graph.descendants(r) & common)}
    return sorted(newest)
