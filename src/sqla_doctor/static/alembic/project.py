"""The Alembic side of a project, computed once per run and shared by every migration rule.

:func:`analysis` finds the script locations around the checked paths, parses every
revision file (for the graph) and env.py, picks the revision files the per-migration rules
look at (inside the checked paths, not excluded, newer than ``--since``), and builds the
model index lazily for the rules that need the models.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqla_doctor.config import Config
from sqla_doctor.findings import Location
from sqla_doctor.static.alembic.discovery import ScriptLocation, find_script_locations
from sqla_doctor.static.alembic.environment import EnvFacts, analyse_env
from sqla_doctor.static.alembic.imports import ModuleMap
from sqla_doctor.static.alembic.models import MODEL_HINT, ModelIndex, ModuleModels, scan_module
from sqla_doctor.static.alembic.ops import Extractor, Operation, is_migration_module
from sqla_doctor.static.alembic.revisions import (
    Revision,
    RevisionGraph,
    identity_tree,
    parse_revision,
)
from sqla_doctor.static.context import FileContext, ProjectContext
from sqla_doctor.static.declared_version import declared_databases, declared_drivers
from sqla_doctor.static.files import discover, module_for
from sqla_doctor.static.index import FileFacts, ProjectIndex
from sqla_doctor.static.index.names import ModuleNames, NameResolver

_TEST_PARTS = frozenset({"tests", "test", "testing"})
# Folders that keep one database's revisions apart from another's (Prefect's
# versions/postgresql/ and versions/sqlite/, picked by env.py at run time): the
# revisions under one named for another database never run on PostgreSQL.
_OTHER_DIALECT_DIRS = frozenset({"sqlite", "sqlite3", "mysql", "mariadb", "mssql", "oracle"})
# ... also with a word for revisions beside the database's (bunkerweb's sqlite_versions/).
_REVISION_WORDS = frozenset({"versions", "version", "migrations", "migration", "revisions"})


def _dialect_dir(name: str) -> str | None:
    """The other database a version folder is named for (``sqlite``, ``mysql_versions``)."""
    words = [w for w in re.split(r"[_\-.]+", name.lower()) if w]
    dialects = [w for w in words if w in _OTHER_DIALECT_DIRS]
    if len(dialects) == 1 and all(w in _REVISION_WORDS for w in words if w not in dialects):
        return dialects[0]
    return None


@dataclass
class ParsedFile:
    """A file read and parsed outside the engine's pass (revision files, env.py)."""

    path: Path
    display: str
    source: str
    tree: ast.Module
    ctx: FileContext

    @classmethod
    def read(
        cls, path: Path, project: ProjectContext, revision_file: bool = False
    ) -> ParsedFile | None:
        """The file parsed; for a revision file Python cannot parse (SQD901 reports it),
        only its revision's identity (see :func:`identity_tree`)."""
        try:
            source = project.read_text(path)
        except (OSError, UnicodeError, ValueError):
            return None
        try:
            tree = ast.parse(source, filename=str(path))
        except (SyntaxError, ValueError, RecursionError):
            identity = identity_tree(source) if revision_file else None
            if identity is None:
                return None
            tree = identity
        display = project.display(path)
        module, is_package = module_for(path)
        # Names only: the rules resolve imports; the ORM facts of a migration are not needed.
        names = ModuleNames.collect(tree, module, is_package)
        facts = FileFacts(path=display, module=module, is_package=is_package, names=names)
        return cls(
            path, display, source, tree, FileContext(display, source, tree, facts, project.index)
        )


@dataclass
class MigrationFile:
    """One migration module, its revision (if it declares one) and what it does."""

    file: ParsedFile
    revision: Revision | None
    project: AlembicProject | None = None
    # False for revisions at or before `--since` (old history the user chose to accept).
    in_since_scope: bool = True
    # For a revision outside any script location: the databases the project's
    # requirement files name drivers for.
    declared_databases: frozenset[str] = frozenset()

    @property
    def display(self) -> str:
        return self.file.display

    @cached_property
    def operations(self) -> list[Operation]:
        return Extractor(self.file.tree, self.file.ctx.names, self.file.ctx.index).run()

    @cached_property
    def unrolled_calls(self) -> frozenset[Location]:
        """Where the calls are that a loop over literal names runs once per name
        (``for table in ("a", "b"): op.alter_column(table, ...)``)."""
        return frozenset(
            self.file.ctx.location(operation.node)
            for operation in self.operations
            if operation.unrolled
        )

    def upgrade_operations(self) -> list[Operation]:
        return [op for op in self.operations if op.phase == "upgrade"]

    @property
    def databases(self) -> frozenset[str]:
        """The databases the revision runs on, as far as the project says (see
        :attr:`AlembicProject.databases`); empty when unknown."""
        return self.project.databases if self.project is not None else self.declared_databases

    @property
    def postgresql_possible(self) -> bool:
        """False when the project names other databases only, or when the revision lies
        in a version folder named for another database (``versions/sqlite/``)."""
        databases = self.databases
        if databases and "postgresql" not in databases:
            return False
        return self.folder_dialect is None

    @property
    def folder_dialect(self) -> str | None:
        """The other database the revision's version folder is named for, if any."""
        path = self.file.path.resolve()
        if self.project is None:
            # A revision outside any script location Alembic's config names (one picked
            # by env.py at run time): its own folder groups it.
            return _dialect_dir(path.parent.name)
        for directory in self.project.location.version_dirs:
            root = directory.resolve()
            if root in path.parents:
                parts = (root.name, *path.parent.relative_to(root).parts)
                return next((d for d in map(_dialect_dir, parts) if d is not None), None)
        return None

    def created_tables(self, phase: str = "upgrade") -> set[str]:
        """Tables this migration creates: operations on them lock nobody."""
        return {
            op.table
            for op in self.operations
            if op.kind == "create_table" and op.phase == phase and op.table
        }

    def creates_tables(self, phase: str = "upgrade") -> bool:
        return any(op.kind == "create_table" and op.phase == phase for op in self.operations)

    def is_new_table(
        self, table: str | None, phase: str = "upgrade", at: Operation | None = None
    ) -> bool | None:
        """True if created here (or emptied before ``at`` in the same transaction: no rows
        to fail on or lock for long), False if surely existing with its rows, None if the
        name is unknown."""
        if table is None:
            return None if self.creates_tables(phase) else False
        if table in self.created_tables(phase):
            return True
        if at is not None:
            for operation in self.operations:
                if operation is at:
                    break
                if (
                    operation.all_rows
                    and operation.table == table
                    and operation.entry == at.entry
                    and not operation.in_autocommit
                ):
                    return True
        return False

    def uses_autocommit_block(self) -> bool:
        return any(op.in_autocommit for op in self.operations)

    def autocommit_block_needs_alembic_transaction(self) -> bool:
        """Whether an ``autocommit_block()`` here meets the connection still in a transaction
        Alembic does not own: not when the migration commits ``op.get_bind()`` just before
        (warehouse's way of living with an env.py that began the transaction itself)."""
        if not self.uses_autocommit_block():
            return False
        names = self.file.ctx.names
        for node in ast.walk(self.file.tree):
            body = getattr(node, "body", None)
            if not isinstance(body, list):
                continue
            binds: set[str] = set()
            committed = False
            for stmt in body:
                if not isinstance(stmt, ast.stmt):
                    break
                if isinstance(stmt, ast.Assign) and _is_get_bind(stmt.value, names):
                    binds.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
                call = stmt.value if isinstance(stmt, ast.Expr) else None
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "commit"
                    and (
                        _is_get_bind(call.func.value, names)
                        or (isinstance(call.func.value, ast.Name) and call.func.value.id in binds)
                    )
                ):
                    committed = True
                elif isinstance(stmt, (ast.With, ast.AsyncWith)) and any(
                    isinstance(item.context_expr, ast.Call)
                    and isinstance(item.context_expr.func, ast.Attribute)
                    and item.context_expr.func.attr == "autocommit_block"
                    for item in stmt.items
                ):
                    if not committed:
                        return True
                    committed = False
        return False

    def statement_at(self, line: int) -> ast.AST:
        """The module-level statement starting at ``line`` (a revision identifier)."""
        for stmt in self.file.tree.body:
            if stmt.lineno == line:
                return stmt
        return self.file.tree.body[0] if self.file.tree.body else self.file.tree


def _is_get_bind(expr: ast.expr, names: NameResolver) -> bool:
    return isinstance(expr, ast.Call) and names.qualify(expr.func) == "alembic.op.get_bind"


@dataclass
class EnvFile:
    file: ParsedFile
    facts: EnvFacts


@dataclass
class AlembicProject:
    """One script location: its revision graph and env.py."""

    location: ScriptLocation
    files: list[MigrationFile] = field(default_factory=list)
    graph: RevisionGraph = field(default_factory=RevisionGraph)
    env: EnvFile | None = None
    since_scope: set[str] | None = None  # revisions newer than --since; None = all
    # The databases the project's requirement files name drivers for (`PyMySQL`).
    declared_databases: frozenset[str] = frozenset()

    def file_of(self, revision: Revision) -> MigrationFile:
        for migration in self.files:
            if migration.revision is revision:
                return migration
        raise LookupError(revision.revision)

    @property
    def databases(self) -> frozenset[str]:
        """The databases the revisions run on, as far as the project says: the dialects
        of the configs' ``sqlalchemy.url`` and of the URLs env.py sets itself, or else
        those its requirement files name a driver for (only ``PyMySQL``: a MySQL project);
        empty when unknown."""
        configured = frozenset(self.location.dialects)
        if self.env is not None:
            configured |= self.env.facts.databases
        return configured or self.declared_databases

    @property
    def postgresql_possible(self) -> bool:
        """False when the project names only other databases (SQLite, MySQL ...)."""
        databases = self.databases
        return not databases or "postgresql" in databases

    @property
    def autocommit(self) -> bool:
        return self.env is not None and self.env.facts.autocommit

    def in_scope(self, revision: Revision | None) -> bool:
        return (
            self.since_scope is None or revision is None or (revision.revision in self.since_scope)
        )


class AlembicAnalysis:
    """Everything the migration rules share for one run."""

    def __init__(self, project: ProjectContext) -> None:
        self.context = project
        self.root = project.root
        self.checked = [p.resolve() for p in (project.paths or [project.root])]
        config = project.config
        self.exclude = (*config.exclude, *config.extend_exclude)
        self.respect_gitignore = config.respect_gitignore
        self.since = [s.strip() for s in (config.migrations_since or "").split(",") if s.strip()]
        self.since_found: set[str] = set()
        self.projects: list[AlembicProject] = []
        self.migrations: list[MigrationFile] = []
        self._reach_cache: dict[int, _Reach] = {}
        self._build()

    @cached_property
    def declared_databases(self) -> frozenset[str]:
        return declared_databases(self.root)

    @cached_property
    def declared_drivers(self) -> frozenset[str]:
        return declared_drivers(self.root)

    def drivers(self, migration: MigrationFile) -> frozenset[str]:
        """The drivers a revision runs on, as far as the project says: those its config's
        ``sqlalchemy.url`` names, or else those its requirement files name."""
        named = migration.project.location.drivers if migration.project is not None else set()
        return frozenset(named) or self.declared_drivers

    # Building ----------------------------------------------------------------------
    def _in_checked(self, path: Path) -> bool:
        resolved = path.resolve()
        return any(resolved == c or c in resolved.parents for c in self.checked)

    def _touches(self, location: ScriptLocation) -> bool:
        if any(self._in_checked(p) for p in (location.directory, *location.version_dirs)):
            return True
        if any(self._in_checked(c) for c in location.configs):
            return True
        return any(location.contains(c) for c in self.checked)

    def _build(self) -> None:
        locations = find_script_locations(
            self.checked, self.root, self.exclude, self.respect_gitignore
        )
        covered: set[Path] = set()
        for location in locations:
            if not self._touches(location):
                continue
            alembic_project = AlembicProject(
                location=location, declared_databases=self.declared_databases
            )
            linted = self._linted_files(location)
            for path in location.revision_files():
                parsed = ParsedFile.read(path, self.context, revision_file=True)
                if parsed is None:
                    continue
                revision = parse_revision(path, parsed.display, parsed.tree)
                migration = MigrationFile(parsed, revision, alembic_project)
                alembic_project.files.append(migration)
                resolved = path.resolve()
                covered.add(resolved)
                if resolved in linted:
                    self.migrations.append(migration)
            alembic_project.graph = RevisionGraph.build(
                m.revision for m in alembic_project.files if m.revision is not None
            )
            env = location.env
            if env is not None:
                parsed_env = ParsedFile.read(env, self.context)
                if parsed_env is not None:
                    facts = analyse_env(parsed_env.tree, parsed_env.ctx.names)
                    alembic_project.env = EnvFile(parsed_env, facts)
                covered.add(env.resolve())
            alembic_project.since_scope = self._since_scope(alembic_project.graph)
            for migration in alembic_project.files:
                migration.in_since_scope = alembic_project.in_scope(migration.revision)
            self.projects.append(alembic_project)
        self._loose_migrations(covered)

    def _linted_files(self, location: ScriptLocation) -> set[Path]:
        """Revision files inside the checked paths, minus excluded and git-ignored ones."""
        starts: list[Path] = []
        for version_dir in location.version_dirs:
            if self._in_checked(version_dir):
                starts.append(version_dir)
            else:
                starts += [c for c in self.checked if location.contains(c) and c.exists()]
        found = discover(
            starts, self.root, exclude=self.exclude, respect_gitignore=self.respect_gitignore
        )
        return {path.resolve() for path in found}

    def _loose_migrations(self, covered: set[Path]) -> None:
        """Migration modules outside any discovered script location (checked files only)."""
        by_directory: dict[Path, list[MigrationFile]] = {}
        for facts in self.context.index:
            names = facts.names
            if not any(
                target == "alembic" or target.startswith("alembic.op")
                for target in names.imports.values()
            ):
                continue
            path = self._disk_path(facts.path)
            if path is None or path.resolve() in covered:
                continue
            parsed = ParsedFile.read(path, self.context)
            if parsed is None or not is_migration_module(parsed.tree, parsed.ctx.names):
                continue
            revision = parse_revision(path, parsed.display, parsed.tree)
            migration = MigrationFile(
                parsed, revision, None, declared_databases=self.declared_databases
            )
            by_directory.setdefault(path.parent.resolve(), []).append(migration)
        for files in by_directory.values():
            graph = RevisionGraph.build(m.revision for m in files if m.revision is not None)
            scope = self._since_scope(graph)
            for migration in files:
                migration.in_since_scope = (
                    scope is None
                    or migration.revision is None
                    or migration.revision.revision in scope
                )
                self.migrations.append(migration)

    def _disk_path(self, display: str) -> Path | None:
        path = Path(display)
        if not path.is_absolute():
            path = self.root / path
        return path if path.is_file() else None

    def _since_scope(self, graph: RevisionGraph) -> set[str] | None:
        if not self.since:
            return None
        scope: set[str] | None = None
        for identifier in self.since:
            resolved = graph.resolve(identifier)
            if resolved is None:
                continue
            self.since_found.add(identifier)
            scope = (scope or set()) | graph.descendants(resolved)
        return scope

    # Queries -----------------------------------------------------------------------
    def linted(self) -> list[MigrationFile]:
        """Migrations the per-migration rules check: in the checked paths and after --since."""
        return [m for m in self.migrations if m.in_since_scope]

    @property
    def since_missing(self) -> list[str]:
        """``--since`` revisions found in no revision graph (a typo, or another project)."""
        return [s for s in self.since if s not in self.since_found]

    def is_test_or_migration(self, path: Path) -> bool:
        relative = Path(self.context.display(path))
        parts = set(relative.parts[:-1])
        name = relative.name
        if parts & _TEST_PARTS or name.startswith("test_") or name.endswith("_test.py"):
            return True
        if name == "conftest.py":
            return True
        return any(p.location.contains(path) for p in self.projects)

    @cached_property
    def code_script_locations(self) -> list[tuple[str, ...]]:
        """``script_location``s the project's code sets on an ``alembic.config.Config`` it
        builds (``cfg.set_main_option("script_location", "app:migrations")``), as path parts.
        Only files that import ``alembic``, ``alembic.config`` or ``alembic.command`` (not
        a migration's ``alembic.op``) are read, once, and only for a location no config names."""
        found: list[tuple[str, ...]] = []
        for facts in self.context.index:
            if not any(
                v == "alembic" or v.startswith(("alembic.config", "alembic.command"))
                for v in facts.names.imports.values()
            ):
                continue
            path = self._disk_path(facts.path)
            if path is None or path.name == "env.py" or self.is_test_or_migration(path):
                continue
            try:
                tree = ast.parse(path.read_text(encoding="utf-8-sig"))
            except (OSError, UnicodeError, SyntaxError, ValueError, RecursionError):
                continue
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("set_main_option", "set_section_option")
                    and len(node.args) >= 2
                    and any(
                        isinstance(a, ast.Constant) and a.value == "script_location"
                        for a in node.args[:-1]
                    )
                    and isinstance(node.args[-1], ast.Constant)
                    and isinstance(node.args[-1].value, str)
                ):
                    value = node.args[-1].value.replace(":", "/").replace("\\", "/")
                    parts = tuple(p for p in value.split("/") if p and p != ".")
                    if parts:
                        found.append(parts)
        return found

    def configured_in_code(self, alembic_project: AlembicProject) -> bool:
        """Alembic is configured only by the application's code (no ini or pyproject names
        this script location): env.py runs inside the application's process, after whatever
        the application imported (pyramid's ``config.scan()``, an app factory)."""
        location = alembic_project.location
        if location.configs:
            return False
        parts = location.directory.resolve().parts
        return any(parts[-len(tail) :] == tail for tail in self.code_script_locations)

    @cached_property
    def module_map(self) -> ModuleMap:
        known: dict[str, Path] = {}
        for facts in self.context.index:
            path = self._disk_path(facts.path)
            if path is not None and facts.module:
                known.setdefault(facts.module, path)
        search = [self.root, self.root / "src"]
        for alembic_project in self.projects:
            for config in alembic_project.location.configs:
                search += [config.parent, config.parent / "src"]
            search += [alembic_project.location.directory.parent]
        return ModuleMap(known, search)

    @cached_property
    def models(self) -> ModelIndex:
        """Mapped classes and tables of the checked modules (tests and migrations aside),
        plus the project modules env.py files reach."""
        scanned: list[ModuleModels] = []
        seen: set[Path] = set()
        for facts in self.context.index:
            path = self._disk_path(facts.path)
            if path is None or self.is_test_or_migration(path):
                continue
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            module = self._scan(path, facts.module, facts.is_package, facts.names)
            if module is not None:
                scanned.append(module)
        for alembic_project in self.projects:
            if alembic_project.env is None:
                continue
            for name in self.reached(alembic_project).modules:
                loaded = self.module_map.load(name)
                if loaded is None or loaded.tree is None or loaded.path.resolve() in seen:
                    continue
                seen.add(loaded.path.resolve())
                names = ModuleNames.collect(loaded.tree, name, loaded.is_package)
                resolver = NameResolver(names, self.context.index.modules)
                if MODEL_HINT.search(loaded.source):
                    scanned.append(
                        scan_module(name, self.context.display(loaded.path), loaded.tree, resolver)
                    )
        return ModelIndex(scanned)

    def target_keys(self, alembic_project: AlembicProject) -> TargetMetadata | None:
        """The metadata keys of env.py's ``target_metadata``; None when they are unknown."""
        env = alembic_project.env
        if env is None or env.facts.target_unknown or not env.facts.target_exprs:
            return None
        keys: set[str] = set()
        extra: list[str] = []
        described: list[str] = []
        for expr in env.facts.target_exprs:
            qualified = env.file.ctx.names.qualify(expr)
            if qualified is None:
                return None
            key = self.models.metadata_key(qualified)
            if key is None and qualified.endswith(".metadata"):
                base = qualified[: -len(".metadata")]
                key = f"base:{base}"
                extra.append(base)
            if key is None:
                return None
            keys.add(key)
            described.append(env.file.ctx.text(expr))
        return TargetMetadata(keys, extra, described)

    def mapped_schema(self, alembic_project: AlembicProject | None) -> dict[str, MappedTable]:
        """Tables (and their columns) that the models of this project's metadata map, by
        name, or by ``schema.name`` for a table whose class names its schema (two schemas
        may each have a ``revisions``); :func:`mapped_table` looks one up."""
        target = self.target_keys(alembic_project) if alembic_project is not None else None
        extra = target.extra_bases if target is not None else []
        tables: dict[str, MappedTable] = {}
        for mapped in self.models.mapped_classes(extra):
            if mapped.table is None or (target is not None and mapped.metadata not in target.keys):
                continue
            entry = tables.setdefault(
                f"{mapped.schema}.{mapped.table}" if mapped.schema else mapped.table,
                MappedTable(
                    mapped.table,
                    mapped.qualname,
                    mapped.path,
                    mapped.line,
                    schema=mapped.schema,
                    column_call=mapped.column_call,
                ),
            )
            for column in mapped.columns:
                entry.columns.setdefault(column, mapped.qualname)
        for table in self.models.tables():
            if target is not None and table.metadata not in target.keys:
                continue
            entry = tables.setdefault(
                table.name,
                MappedTable(
                    table.name,
                    f"Table({table.name!r})",
                    table.path,
                    table.line,
                    column_call=table.column_call,
                ),
            )
            for column in table.columns:
                entry.columns.setdefault(column, entry.owner)
        return tables

    def _scan(
        self, path: Path, module: str, is_package: bool, names: ModuleNames
    ) -> ModuleModels | None:
        try:
            source = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        if not MODEL_HINT.search(source):
            return None
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError, RecursionError):
            return None
        resolver = NameResolver(names, self.context.index.modules)
        return scan_module(module, self.context.display(path), tree, resolver)

    def reached(self, alembic_project: AlembicProject) -> _Reach:
        cached = self._reach_cache.get(id(alembic_project))
        if cached is not None:
            return cached
        env = alembic_project.env
        assert env is not None
        module, is_package = module_for(env.file.path)
        reach = self.module_map.reach(module, env.file.tree, is_package)
        result = _Reach(
            modules=dict(reach.modules),
            paths={
                path.resolve()
                for name in reach.modules
                if (path := self.module_map.locate(name)) is not None
            },
            dynamic=list(reach.dynamic),
        )
        self._reach_cache[id(alembic_project)] = result
        return result


@dataclass
class TargetMetadata:
    keys: set[str]
    extra_bases: list[str]
    described: list[str]


@dataclass
class MappedTable:
    """A table the models map: which class (or Table) maps it, and its mapped columns."""

    name: str
    owner: str  # qualified class name, or Table('name')
    path: str
    line: int
    columns: dict[str, str] = field(default_factory=dict)  # column → owning class
    schema: str | None = None  # the owning class's `__table_args__` schema, if written
    column_call: str | None = None  # how its module writes a column: `sa.Column`, ...

    @property
    def owner_name(self) -> str:
        return self.owner.rpartition(".")[2] if not self.owner.startswith("Table(") else self.owner


@dataclass
class _Reach:
    modules: dict[str, tuple[str, ...]]
    paths: set[Path]
    dynamic: list[str]


def analysis(project: ProjectContext) -> AlembicAnalysis:
    """The analysis of ``project``, computed once and shared by every migration rule."""
    cached = project.shared.get("alembic")
    if not isinstance(cached, AlembicAnalysis):
        cached = project.shared["alembic"] = AlembicAnalysis(project)
    return cached


def since_unknown(config: Config, paths: Sequence[Path]) -> list[str]:
    """The ``--since`` revisions no Alembic project around ``paths`` declares (a typo, most
    likely), for the CLI to warn about: unknown revisions filter nothing."""
    if not config.migrations_since:
        return []
    project = ProjectContext(
        root=config.root, index=ProjectIndex(), config=config, paths=list(paths)
    )
    return AlembicAnalysis(project).since_missing


def revision_in_scope(project: ProjectContext, display: str) -> bool:
    """For rules outside this package: is the file at ``display`` a migration that
    ``--since`` leaves in (or not a revision at all)?"""
    for migration in analysis(project).migrations:
        if migration.display == display:
            return migration.in_since_scope
    return True


def mapped_table(
    tables: dict[str, MappedTable], name: str | None, schema: str | None
) -> MappedTable | None:
    """The mapped table an operation on ``schema.name`` (``schema`` None: not written)
    touches, from :meth:`mapped_schema`'s tables; None when unknown or ambiguous."""
    if not name:
        return None
    if schema is not None:
        return tables.get(f"{schema}.{name}") or tables.get(name)
    found = [t for key, t in tables.items() if key == name or key.endswith(f".{name}")]
    return found[0] if len(found) == 1 else None
