"""Read every file once, index the project, then run every enabled rule in one traversal.

Source is parsed with :mod:`ast` and never imported or executed. A file that cannot be
read, decoded or parsed becomes a finding of its own and the run goes on.
"""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import gc
import hashlib
import io
import re
import signal
import sys
import threading
import tokenize
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqla_doctor.config import Config
from sqla_doctor.findings import Finding, Kind, Location, Severity
from sqla_doctor.registry import Check, Registry, static_registry
from sqla_doctor.static.cache import FileCache
from sqla_doctor.static.children import fields_of
from sqla_doctor.static.context import FileContext, ProjectContext
from sqla_doctor.static.declared_version import pinned_below_2
from sqla_doctor.static.files import discover, display_path, module_for
from sqla_doctor.static.flow import Scan
from sqla_doctor.static.index import FileFacts, ProjectIndex
from sqla_doctor.static.index.models import call_tail
from sqla_doctor.static.index.names import NameResolver
from sqla_doctor.static.parallel import PARALLEL_MIN_FILES, parallel_prepare, parallel_rules
from sqla_doctor.static.rule import ProjectRule, Rule
from sqla_doctor.suppression import Suppressions

UNPARSABLE = "SQD901"
UNUSED_NOQA = "SQD902"
TIMEOUT = "SQD903"


class _FileTimeout(BaseException):
    """Raised inside a rule by the per-file alarm; a BaseException so rules can't swallow it."""


def _in_finalizer(frame: types.FrameType | None) -> bool:
    """Whether ``frame`` runs inside a gc callback (hypothesis installs one) or ``__del__``."""
    callbacks = {getattr(callback, "__code__", None) for callback in gc.callbacks}
    while frame is not None:
        if frame.f_code in callbacks or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (main thread on Unix only; elsewhere no limit)."""
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def _expired(signum: int, frame: types.FrameType | None) -> None:
        if not _in_finalizer(frame):
            raise _FileTimeout

    previous = signal.signal(signal.SIGALRM, _expired)
    # Repeat every 50 ms: an alarm that lands in a gc callback or __del__ does not raise
    # there (Python would swallow it as "Exception ignored in ..."); the next one does.
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class SourceFile:
    """A file read and parsed, or the reason it could not be."""

    path: Path
    display: str
    source: str | None = None
    tree: ast.Module | None = None
    facts: FileFacts | None = None
    error: Finding | None = None
    digest: str = ""
    suppressions: Suppressions | None = None
    cached: list[Finding] | None = None  # raw findings reused from the cache
    scans: dict[int, Scan] | None = None  # pass 1's flow scans of ``tree``, while kept


@dataclass
class Result:
    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    internal_errors: list[str] = field(default_factory=list)


def read_source(path: Path, display: str, data: bytes | None = None) -> SourceFile:
    """Decode with the file's declared encoding (PEP 263), then parse; ``data`` stands
    for the file's content when given (a fix not written yet)."""
    item = SourceFile(path=path, display=display)
    try:
        data = path.read_bytes() if data is None else data
    except OSError as error:
        item.error = _unparsable(display, 1, 1, f"cannot read file: {error.strerror or error}")
        return item
    item.digest = content_digest(data)
    return _decode_and_parse(item, data)


def content_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _decode_and_parse(item: SourceFile, data: bytes) -> SourceFile:
    display = item.display
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        source = data.decode(encoding)
    except (SyntaxError, UnicodeDecodeError, LookupError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "msg", None) or str(error)
        item.error = _unparsable(
            display, 1, 1, f"cannot decode file (not UTF-8 or its declared encoding): {reason}"
        )
        return item
    if source.startswith("\ufeff"):
        source = source[1:]
    item.source = source
    try:
        item.tree = ast.parse(source, filename=display)
    except SyntaxError as error:
        # The running Python's grammar decides: name it, for code written for a newer one.
        message = f"cannot parse file with Python {_PYTHON}: {error.msg}"
        item.error = _unparsable(display, error.lineno or 1, error.offset or 1, message)
    except (ValueError, RecursionError, MemoryError) as error:
        # Null bytes raise ValueError before 3.12; absurd nesting exhausts the C stack.
        message = f"cannot parse file: {type(error).__name__}: {error}"
        item.error = _unparsable(display, 1, 1, message)
    return item


_PYTHON = "{}.{}".format(*sys.version_info[:2])
# `PRAGMA journal_mode=WAL` in any spelling: SQD405 looks for it project-wide.
_JOURNAL_MODE = re.compile("journal_mode", re.IGNORECASE)


# Young collections while the rules run: a tree freed by reference counting before the
# collector gets to it costs nothing, and every file's tree is freed once its rules ran.
_RULES_PASS_THRESHOLD = 20_000


@contextlib.contextmanager
def _collector_spares_trees() -> Iterator[Callable[[], None]]:
    """Keep the cycle collector off while trees are built, and unfreeze at the end.

    Trees are acyclic (parent links and flows live beside them), so reference counting
    frees them; letting the collector walk millions of live nodes again and again doubled
    the run time. ``resume()`` turns it back on, rarer, for the rules' pass.
    """
    enabled = gc.isenabled()
    thresholds = gc.get_threshold()
    gc.disable()

    def resume() -> None:
        if enabled:
            gc.set_threshold(max(thresholds[0], _RULES_PASS_THRESHOLD), *thresholds[1:])
            gc.enable()

    try:
        yield resume
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        if enabled:
            gc.enable()


class TreeBudget:
    """Keep parsed trees between the passes while they fit; re-parse the rest later.

    Holding every tree is fastest but makes memory grow with the project; past the budget a
    file is parsed once more when its rules run, so memory stays flat in the file count.
    """

    def __init__(self, max_source_bytes: int = 8 * 1024 * 1024) -> None:
        self.remaining = max_source_bytes

    def keep(self, size: int) -> bool:
        self.remaining -= size
        return self.remaining >= 0


def extract_facts(item: SourceFile) -> FileFacts:
    """The file's facts; the flow scans made for them stay with the tree."""
    assert item.tree is not None
    module, is_package = module_for(item.path)
    item.scans = {}
    facts = FileFacts.extract(item.display, module, is_package, item.tree, item.scans)
    if item.source is not None and _JOURNAL_MODE.search(item.source):
        facts.orm.journal_mode = True
    return facts


def prepare(
    path: Path,
    display: str,
    cache: FileCache | None = None,
    budget: TreeBudget | None = None,
    data: bytes | None = None,
) -> SourceFile:
    """Pass 1 for one file: read (unless ``data`` stands for its content), hash, then take
    its facts from the cache or parse it."""
    try:
        data = path.read_bytes() if data is None else data
    except OSError as error:
        item = SourceFile(path=path, display=display)
        item.error = _unparsable(display, 1, 1, f"cannot read file: {error.strerror or error}")
        return item
    digest = content_digest(data)
    if cache is not None:
        hit = cache.prepared(path, display, digest)
        if hit is not None:
            return hit
    item = _decode_and_parse(SourceFile(path=path, display=display, digest=digest), data)
    if item.source is not None:
        item.suppressions = Suppressions.parse(item.source)
    if item.tree is None:
        # An unparsable file's text is read by nothing after its suppressions: kept, it
        # would make memory grow with the number of broken files.
        item.source = None
    else:
        item.facts = extract_facts(item)
        if budget is not None and not budget.keep(len(data)):
            item.tree = item.source = item.scans = None
    return item


def _unparsable(path: str, line: int, col: int, reason: str) -> Finding:
    return Finding(
        code=UNPARSABLE,
        name="unparsable-file",
        message=reason,
        location=Location(path, max(line, 1), max(col, 1)),
        severity=Severity.ERROR,
        kind=Kind.STATIC,
    )


class Engine:
    """Runs a selection of rules over paths."""

    def __init__(
        self,
        config: Config,
        selected: set[str],
        checks: Registry | None = None,
        *,
        cache_dir: Path | None = None,
        jobs: int = 1,
        unsaved: Mapping[Path, bytes] | None = None,
        sqlalchemy_below_2: bool | None = None,
    ) -> None:
        self.config = config
        # Whether the project's requirements hold SQLAlchemy below 2.0 (the CLI has read
        # them already); None: read them at the config's root when checking.
        self.sqlalchemy_below_2 = sqlalchemy_below_2
        self.selected = selected
        self.cache_dir = cache_dir
        self.jobs = max(1, jobs)
        # Resolved path -> content checked instead of the file's (`fix --diff`'s passes).
        self.unsaved: Mapping[Path, bytes] = unsaved or {}
        self.registry = checks or static_registry()
        self.file_rules: list[type[Rule]] = []
        self.project_rules: list[type[ProjectRule]] = []
        for check in self.registry:
            if check.code not in selected:
                continue
            if issubclass(check, Rule):
                self.file_rules.append(check)
            elif issubclass(check, ProjectRule):
                self.project_rules.append(check)

    # Entry points --------------------------------------------------------------------
    def check_paths(self, paths: Sequence[Path], project: Path | None = None) -> Result:
        """Check the files under ``paths``; the rest of ``project``, when given, is read for
        the index only (its models, factories and engines), so a single file is checked
        the way it is when the whole project is."""
        files = list(self._discover(paths))
        context: list[Path] = []
        if project is not None:
            given = {path.resolve() for path in files}
            context = [path for path in self._discover([project]) if path.resolve() not in given]
        cache = FileCache.load(self.cache_dir) if self.cache_dir is not None else None
        with _collector_spares_trees() as resume_collector:
            sources = self._prepare(files, cache, TreeBudget())
            # Context files are read for their facts alone: no tree is kept for the rules.
            around = self._prepare(context, cache, TreeBudget(0))
            # Everything alive now (kept trees, facts) lives until the end of the run;
            # freezing it spares the collector from walking it again and again.
            gc.freeze()
            resume_collector()
            return self.check_sources(
                sources, scanned_paths=list(paths), cache=cache, context=around
            )

    def _discover(self, paths: Sequence[Path]) -> Iterator[Path]:
        return discover(
            paths,
            self.config.root,
            exclude=(*self.config.exclude, *self.config.extend_exclude),
            respect_gitignore=self.config.respect_gitignore,
        )

    def _prepare(
        self, files: list[Path], cache: FileCache | None, budget: TreeBudget
    ) -> list[SourceFile]:
        displays = [display_path(path, self.config.root) for path in files]
        if self.jobs > 1 and len(files) >= PARALLEL_MIN_FILES and not self.unsaved:
            return parallel_prepare(files, displays, cache, self.jobs)
        pairs = zip(files, displays, strict=True)
        return [prepare(p, d, cache, budget, self._unsaved(p)) for p, d in pairs]

    def _unsaved(self, path: Path) -> bytes | None:
        return self.unsaved.get(path.resolve()) if self.unsaved else None

    def check_sources(
        self,
        sources: list[SourceFile],
        scanned_paths: list[Path] | None = None,
        cache: FileCache | None = None,
        context: list[SourceFile] | None = None,
    ) -> Result:
        """Run the rules on ``sources``; ``context`` files only feed the project index."""
        result = Result(files=len(sources))
        context = context or []
        everything = [*sources, *context]
        for item in everything:
            if item.facts is None and item.tree is not None:
                item.facts = extract_facts(item)
        index = ProjectIndex.build(item.facts for item in everything if item.facts is not None)
        below_2 = self.sqlalchemy_below_2
        if below_2 is None:
            below_2 = pinned_below_2(self.config.root) is not None
        index.sqlalchemy_below_2 = below_2
        findings_key = self._findings_key(everything, index)
        raw: list[Finding] = []
        pending: list[SourceFile] = []
        for item in sources:
            if item.error is not None:
                raw.append(item.error)
            elif item.facts is None:
                continue
            elif cache is not None and (hit := cache.findings(item, findings_key)) is not None:
                raw.extend(hit)
            else:
                pending.append(item)
        if self.jobs > 1 and len(pending) >= PARALLEL_MIN_FILES:
            produced = parallel_rules(self, pending, index)
        else:
            produced = [self.run_rules(item, index) for item in pending]
        for item, (findings, errors) in zip(pending, produced, strict=True):
            raw.extend(findings)
            result.internal_errors.extend(errors)
            if cache is not None and not errors:
                cache.store_findings(item, findings_key, findings)
        project = ProjectContext(
            root=self.config.root,
            index=index,
            config=self.config,
            paths=scanned_paths or [],
            unsaved=self.unsaved,
        )
        outside = {item.display for item in context}
        for rule_class in self.project_rules:
            try:
                found = rule_class().check_project(project)
                raw.extend(f for f in found if f.location.path not in outside)
            except Exception as error:
                result.internal_errors.append(f"{rule_class.code} crashed: {error!r}")
        suppressions = {
            item.display: item.suppressions for item in sources if item.suppressions is not None
        }
        result.findings = self._filter(raw, suppressions)
        if cache is not None:
            cache.save(everything)
        return result

    def _findings_key(self, sources: list[SourceFile], index: ProjectIndex) -> str:
        """What a file's findings depend on besides its own text: the rules run, every
        file's facts (a rule may read the whole project index) and the SQLAlchemy version
        the project declares."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(",".join(sorted(c.__name__ for c in self.file_rules)).encode())
        digest.update(b"<2" if index.sqlalchemy_below_2 else b">=2")
        digest.update(repr(replace(self.config, root=Path("."), source=None)).encode())
        for item in sorted(sources, key=lambda i: i.display):
            digest.update(item.display.encode())
            digest.update(item.digest.encode() if item.facts is not None else b"-")
        return digest.hexdigest()

    def run_rules(self, item: SourceFile, index: ProjectIndex) -> tuple[list[Finding], list[str]]:
        """The raw findings of one file (re-parsing it if its tree was not kept)."""
        if item.tree is None:
            reparsed = read_source(item.path, item.display, self._unsaved(item.path))
            if reparsed.tree is None or reparsed.source is None:
                return ([reparsed.error] if reparsed.error else []), []
            item.tree, item.source = reparsed.tree, reparsed.source
        assert item.facts is not None
        assert item.source is not None
        ctx = FileContext(item.display, item.source, item.tree, item.facts, index, item.scans)
        result = Result()
        try:
            with time_limit(self.config.file_timeout):
                findings = self._run_file_rules(ctx, result)
        except _FileTimeout:
            findings = [self._timeout(item.display)]
        # The tree is not needed any more; dropping it keeps memory flat in the file count.
        ctx.close()
        item.tree = item.scans = None
        return findings, result.internal_errors

    def _timeout(self, path: str) -> Finding:
        check = self.registry.get(TIMEOUT)
        assert check is not None
        return Finding(
            code=check.code,
            name=check.name,
            message=check.message.format(seconds=self.config.file_timeout),
            location=Location(path, 1, 1),
            severity=check.severity,
        )

    # Rules ---------------------------------------------------------------------------
    def _run_file_rules(self, ctx: FileContext, result: Result) -> list[Finding]:
        rules = [rule_class(ctx) for rule_class in self.file_rules]
        visit, leave = _handlers_by_node_type(rules)
        calls = _CallHandlers.of(visit, ctx.names)
        tables: tuple[Mapping[Any, list[Handler]], ...] = (visit, leave)
        if calls is not None:
            tables = (visit, leave, calls.by_name)
        try:
            events = _link_and_order(ctx.tree, visit, leave, ctx.parents, calls)
        except RecursionError:
            return [_unparsable(ctx.path, 1, 1, "file is nested too deeply to analyse")]
        for handlers, node in events:
            for handler in handlers:
                try:
                    handler(node)
                except Exception as error:
                    rule = handler.__self__  # type: ignore[attr-defined]
                    _silence(rule, tables)
                    line = getattr(node, "lineno", 1)
                    result.internal_errors.append(
                        f"{rule.code} crashed on {ctx.path}:{line}: {type(error).__name__}: {error}"
                    )
        return [finding for rule in rules for finding in rule.findings]

    def _filter(
        self, findings: Iterable[Finding], suppressions: dict[str, Suppressions]
    ) -> list[Finding]:
        kept: list[Finding] = []
        alias = self._alias
        for finding in findings:
            if finding.code not in (UNPARSABLE, TIMEOUT) and finding.code not in self.selected:
                continue
            if self._ignored_for_file(finding):
                continue
            file_suppressions = suppressions.get(finding.location.path)
            if file_suppressions is not None and file_suppressions.suppresses(finding, alias):
                continue
            kept.append(finding)
        if UNUSED_NOQA in self.selected:
            kept.extend(self._unused_noqa(suppressions))
        # Without duplicates, in the order the checks found them where the key ties (the
        # statements of one op.execute()): a set's order would change with the hash seed.
        return sorted(dict.fromkeys(kept), key=lambda f: f.sort_key)

    def _alias(self, code_or_name: str) -> str | None:
        check = self.registry.get(code_or_name)
        return check.code if check is not None else None

    def _ignored_for_file(self, finding: Finding) -> bool:
        for glob, codes in self.config.per_file_ignores.items():
            if fnmatch.fnmatch(finding.location.path, glob) or fnmatch.fnmatch(
                finding.location.path, glob.rstrip("/") + "/*"
            ):
                try:
                    if finding.code in self.registry.expand(codes):
                        return True
                except KeyError:
                    continue
        return False

    def _unused_noqa(self, suppressions: dict[str, Suppressions]) -> Iterable[Finding]:
        check = self.registry.get(UNUSED_NOQA)
        assert check is not None
        for path, file_suppressions in suppressions.items():
            for directive, codes in file_suppressions.unused():
                # A noqa for a rule that is not selected this run may still be needed.
                relevant = [c for c in codes if (self._alias(c) or c) in self.selected]
                if codes and not relevant:
                    continue
                what = ", ".join(relevant) if codes else "all findings"
                yield Finding(
                    code=check.code,
                    name=check.name,
                    message=check.message.format(codes=what),
                    location=Location(path, directive.line, directive.col),
                    severity=check.severity,
                    kind=Kind.STATIC,
                )


Handler = Callable[[ast.AST], None]
HandlerTable = dict[type[ast.AST], list[Handler]]
# Node classes without children: linked to their parent but never pushed on the walk's
# stack, unless a rule visits them (Name and Constant are a third of all nodes).
_CHILDLESS: frozenset[type[ast.AST]] = frozenset(
    kind
    for kind in vars(ast).values()
    if isinstance(kind, type) and issubclass(kind, ast.AST) and not fields_of(kind)
)


Hook = tuple[str, type[ast.AST], bool]
_hooks: dict[type[Rule], tuple[Hook, ...]] = {}


def _hooks_of(rule_class: type[Rule]) -> tuple[Hook, ...]:
    """(method, node class, whether on entering) for a rule's ``visit_<Node>`` and
    ``leave_<Node>`` methods, in name order."""
    known = _hooks.get(rule_class)
    if known is None:
        known = _hooks[rule_class] = _find_hooks(rule_class)
    return known


def _find_hooks(rule_class: type[Rule]) -> tuple[Hook, ...]:
    hooks: list[Hook] = []
    for attr in dir(rule_class):
        prefix, _, node_name = attr.partition("_")
        if prefix not in ("visit", "leave"):
            continue
        # vars(): a deprecated alias (`Num`) would warn through the module's __getattr__.
        node_type = vars(ast).get(node_name)
        if isinstance(node_type, type) and issubclass(node_type, ast.AST):
            hooks.append((attr, node_type, prefix == "visit"))
    return tuple(hooks)


def _handlers_by_node_type(rules: Sequence[Rule]) -> tuple[HandlerTable, HandlerTable]:
    """Every rule's ``visit_<Node>`` and ``leave_<Node>`` methods, by node class."""
    visit: HandlerTable = {}
    leave: HandlerTable = {}
    for rule in rules:
        for attr, node_type, entering in _hooks_of(type(rule)):
            table = visit if entering else leave
            table.setdefault(node_type, []).append(getattr(rule, attr))
    return visit, leave


def _ignore(node: ast.AST) -> None:
    """Stands in for the handlers of a rule that crashed on this file."""


class _CallHandlers:
    """The ``visit_Call`` handlers to run for a call, by its callee's SQLAlchemy name and
    written last name: a handler marked with :func:`~sqla_doctor.static.rule.calls_to`
    would return at once for any other callee, so it is left out (the rest keep the
    rules' order)."""

    def __init__(self, handlers: list[Handler], names: NameResolver) -> None:
        self.handlers = handlers
        self.names = names
        self.by_name: dict[tuple[str | None, str | None], list[Handler]] = {}

    @classmethod
    def of(cls, visit: HandlerTable, names: NameResolver) -> _CallHandlers | None:
        handlers = visit.get(ast.Call)
        if handlers is None or not any(hasattr(h, "call_marks") for h in handlers):
            return None
        return cls(handlers, names)

    def __call__(self, node: ast.Call) -> list[Handler]:
        try:
            key = (self.names.sqla_name(node.func), call_tail(node.func))
        except Exception:
            # Every handler then runs, and a marked one crashes as it would have alone.
            return self.handlers
        found = self.by_name.get(key)
        if found is None:
            # Built from the shared list, so a handler silenced since stays silenced.
            found = self.by_name[key] = [h for h in self.handlers if _wants(h, *key)]
        return found


def _wants(handler: Handler, name: str | None, tail: str | None) -> bool:
    marks: tuple[frozenset[str], frozenset[str]] | None = getattr(handler, "call_marks", None)
    return marks is None or name in marks[0] or tail in marks[1]


def _silence(rule: Rule, tables: Iterable[Mapping[Any, list[Handler]]]) -> None:
    """Stop calling a crashed rule on this file. Handlers are replaced in place: the
    lists are shared by the pending events, and one of them may be being iterated."""
    for table in tables:
        for handlers in table.values():
            for position, handler in enumerate(handlers):
                if getattr(handler, "__self__", None) is rule:
                    handlers[position] = _ignore


def _link_and_order(
    tree: ast.AST,
    visit: HandlerTable,
    leave: HandlerTable,
    parents: dict[ast.AST, ast.AST],
    calls: _CallHandlers | None = None,
) -> list[tuple[list[Handler], ast.AST]]:
    """Record every node's parent and list (handlers, node) events in tree order.

    Parents are linked for the whole tree before any rule runs, so a rule visiting a
    node may navigate anywhere inside it.
    """
    events: list[tuple[list[Handler], ast.AST]] = []
    # A node to enter is pushed bare; a node to leave as its (handlers, node) event
    # (Any: a union would cost an isinstance per node to narrow).
    stack: list[Any] = [tree]
    pop, push, record = stack.pop, stack.append, events.append
    unvisited_leaves = _CHILDLESS.difference(visit, leave)
    ast_node, known_fields, call_node = ast.AST, _reversed, ast.Call
    while stack:
        node = pop()
        kind = type(node)
        if kind is tuple:
            record(node)
            continue
        entering = visit.get(kind)
        if entering is not None:
            if kind is call_node and calls is not None:
                entering = calls(node)
            if entering:
                record((entering, node))
        leaving = leave.get(kind)
        if leaving is not None:
            push((leaving, node))
        # child_nodes() inlined, in reverse so that the stack pops them in source order.
        fields = known_fields.get(kind)
        if fields is None:
            fields = _reversed_fields(kind)
        for field_name in fields:
            value = getattr(node, field_name, None)
            if value.__class__ is list:
                for child in reversed(value):
                    if isinstance(child, ast_node):
                        parents[child] = node
                        if child.__class__ not in unvisited_leaves:
                            push(child)
            elif isinstance(value, ast_node):
                parents[value] = node
                if value.__class__ not in unvisited_leaves:
                    push(value)
    return events


_reversed: dict[type[ast.AST], tuple[str, ...]] = {}


def _reversed_fields(kind: type[ast.AST]) -> tuple[str, ...]:
    fields = _reversed.get(kind)
    if fields is None:
        fields = _reversed[kind] = tuple(reversed(fields_of(kind)))
    return fields


def selected_codes(
    checks: Registry,
    config: Config,
    select: Sequence[str] | None,
    ignore: Sequence[str] | None,
    kinds: tuple[Kind, ...],
) -> set[str]:
    """The codes a run checks: config and CLI select/ignore, limited to ``kinds``."""
    chosen = checks.expand(select if select else config.select)
    chosen |= checks.expand(config.extend_select)
    chosen -= checks.expand(config.ignore)
    if ignore:
        chosen -= checks.expand(ignore)
    return {code for code in chosen if _kind_of(checks, code) in kinds}


def _kind_of(checks: Registry, code: str) -> Kind:
    check: type[Check] | None = checks.get(code)
    return check.kind if check is not None else Kind.STATIC


def check(paths: Sequence[Path], config: Config, selected: set[str]) -> Result:
    """Convenience: run the engine once."""
    return Engine(config, selected).check_paths(paths)
