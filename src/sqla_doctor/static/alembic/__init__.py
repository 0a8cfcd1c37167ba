"""Alembic projects read statically: discovery, revision graphs, env.py, migration operations.

The migration rules (``sqla_doctor.static.rules.alembic``) share one
:class:`~sqla_doctor.static.alembic.project.AlembicAnalysis` per run, from :func:`analysis`.
Rules elsewhere can ask :func:`revision_in_scope` whether ``--since`` leaves a file in; the
CLI can ask :func:`since_unknown` which ``--since`` revisions no project declares.
"""

from __future__ import annotations

from sqla_doctor.static.alembic.ops import Operation
from sqla_doctor.static.alembic.project import (
    AlembicAnalysis,
    AlembicProject,
    MigrationFile,
    analysis,
    revision_in_scope,
    since_unknown,
)
from sqla_doctor.static.alembic.revisions import Revision, RevisionGraph

__all__ = [
    "AlembicAnalysis",
    "AlembicProject",
    "MigrationFile",
    "Operation",
    "Revision",
    "RevisionGraph",
    "analysis",
    "revision_in_scope",
    "since_unknown",
]
