"""Which generator handed a leaked session to the user's code: a FastAPI dependency
(``Depends(get_db)``) or a ``@contextmanager`` session scope, whose close after ``yield``
does not run when the request or the ``with`` block fails.

Asked only when SQD151 reports a leak. The functions are found in their modules' globals
(by name, else by the line the stack points at), and only their signatures and source are
read: no annotation is evaluated and nothing of the program runs.
"""

from __future__ import annotations

import ast
import gc
import inspect
import re
import sys
import textwrap
from collections.abc import Iterator
from types import CodeType, FrameType, ModuleType
from typing import Any, Final, NamedTuple

from sqla_doctor.runtime.callsite import USER, CallSite, classify, module_file
from sqla_doctor.runtime.source_blocks import SCOPES, enclosing_headers

# Endpoint -> its dependency -> a sub-dependency ...: how deep the chain is followed.
_MAX_DEPTH = 4
_MAX_MODULES_CACHED = 256
_modules_by_file: dict[str, ModuleType | None] = {}
# Generator functions already judged (by code object), at most this many.
_MAX_JUDGED = 256
_judged: dict[CodeType, GeneratorDependency | None] = {}
_AST_PARSE: Final = ast.parse.__code__
_collecting = False


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _collecting
    _collecting = phase == "start"


def watch_collections() -> None:
    """Know when the garbage collector runs (see ``parse_safely``); idempotent."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def unwatch_collections() -> None:
    global _collecting
    if _on_gc in gc.callbacks:
        gc.callbacks.remove(_on_gc)
    _collecting = False


def parse_safely(source: str, mode: str) -> ast.AST | None:
    """``ast.parse``, or None where parsing could break another parse.

    CPython 3.11 keeps one recursion counter per interpreter while it turns source into
    AST objects, and checks it when done: a parse that starts inside another (the other
    one's allocations ran the garbage collector, whose finalizers ran a listener that
    reported a leak) makes the outer parse fail with ``SystemError: AST constructor
    recursion depth mismatch``. That outer parse may be the program's own (pytest
    rewriting a test module), so nothing is parsed while a collection runs or an
    ``ast.parse`` is on the stack; the finding then goes without the generator's name.
    """
    if _collecting:
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _AST_PARSE:
            return None
        frame = frame.f_back
    try:
        return ast.parse(source, mode=mode)
    except (SyntaxError, ValueError, SystemError, RecursionError, MemoryError):
        return None


class GeneratorDependency(NamedTuple):
    name: str  # the generator function: ``get_db``
    site: CallSite  # its ``def`` line
    awaited: bool  # an async generator
    # A FastAPI dependency, or a ``@contextmanager`` the code entered with ``with``.
    context_manager: bool = False
    # It commits after the ``yield`` (a "session scope"): the fix keeps that with begin().
    commits: bool = False


def generator_dependency(sites: tuple[CallSite, ...]) -> GeneratorDependency | None:
    """The generator dependency (FastAPI's ``Depends(get_db)``) that handed the session to
    the function at one of ``sites`` (or the function that called it), directly or through
    sub-dependencies (``Depends(get_repository)`` whose own parameter depends on
    ``get_db``), when its ``yield`` is in no ``with`` and no ``try/finally``: the code
    after it does not run when the request fails.
    """
    seen: set[int] = set()
    for filename, line, name in _frames(sites[:4]):
        function = _function_at(filename, line, name)
        if function is not None:
            found = _unguarded_dependency(function, 0, seen)
            if found is not None:
                return found
        found = _entered_context_manager(filename, line, function if name != "<module>" else None)
        if found is not None:
            return found
    return None


def _entered_context_manager(filename: str, line: int, function: Any) -> GeneratorDependency | None:
    """The ``@contextmanager`` generator whose ``with`` block holds ``line`` (``with
    session_scope() as session:``), when its ``yield`` is unguarded: the code after it
    (commit, close) does not run when the block raises.

    The ``with`` lines are found by indentation, reading the file's lines upwards (no
    parse of the module: see ``parse_safely``).
    """
    if function is not None:
        names = _globals_of(function)
    else:
        module = module_of(filename)
        if module is None:
            return None
        names = vars(module)
    for called in _with_calls_around(filename, line):
        manager = _lookup_dotted(called, names)
        if not inspect.isfunction(manager):
            continue
        # @contextmanager wraps the generator function (functools.wraps).
        found = _unguarded_generator(inspect.getattr_static(manager, "__wrapped__", None))
        if found is not None:
            return found._replace(context_manager=True)
    return None


_WITH = re.compile(r"(?:async\s+)?with\s+(.*)")
_CALLED = re.compile(r"(?:^|[,(]\s*)([A-Za-z_][\w.]*)\s*\(")
# Lines read upwards from the leaking one, at most: a function's length.
_MAX_LINES_UP = 400


def _with_calls_around(filename: str, line: int) -> list[str]:
    """The names called by the ``with`` statements whose blocks hold ``line``, innermost
    first, up to the enclosing ``def``."""
    called: list[str] = []
    for _, _, header in enclosing_headers(filename, line, _MAX_LINES_UP):
        if header.startswith(SCOPES):
            break  # the function (or class) the line is in: no with above counts
        statement = _WITH.match(header)
        if statement is not None:
            called.extend(_CALLED.findall(statement.group(1)))
    return called


def _lookup_dotted(dotted: str, names: dict[str, Any]) -> Any:
    first, *rest = dotted.split(".")
    value = names.get(first)
    for attribute in rest:
        if value is None:
            return None
        value = inspect.getattr_static(value, attribute, None)
    return value


def module_of(filename: str) -> ModuleType | None:
    """The imported module whose source is ``filename`` (``__main__`` too, after the
    script returned: see ``callsite.module_file``)."""
    if filename not in _modules_by_file:
        found = None
        for module in list(sys.modules.values()):
            if module_file(module) == filename:
                found = module
                break
        if len(_modules_by_file) >= _MAX_MODULES_CACHED:
            _modules_by_file.clear()
        _modules_by_file[filename] = found
    return _modules_by_file[filename]


def _frames(sites: tuple[CallSite, ...]) -> Iterator[tuple[str, int, str | None]]:
    """Each site's frame, and the user frame that called it when the stack kept only the
    innermost site (a repository method called by the endpoint)."""
    seen: set[tuple[str, int]] = set()
    for site in sites:
        if site.key not in seen:
            seen.add(site.key)
            yield site.filename, site.lineno, site.function
        caller = site.caller
        if caller is not None and caller not in seen and classify(caller[0]) == USER:
            seen.add(caller)
            yield caller[0], caller[1], None


def _function_at(filename: str, line: int, name: str | None) -> Any:
    """The module-level function, or method of a module-level class, whose code in
    ``filename`` holds ``line``; by ``name`` first."""
    module = module_of(filename)
    if module is None:
        return None
    if name is not None:
        function = inspect.getattr_static(module, name, None)
        if _holds(function, filename, line):
            return function
    best: Any = None
    for value in list(vars(module).values()):
        candidates = [value]
        if isinstance(value, type) and getattr(value, "__module__", None) == module.__name__:
            candidates = [
                # No getattr() on the members: a descriptor's __getattr__ is the user's code.
                member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                for member in list(vars(value).values())
            ]
        for candidate in candidates:
            if _holds(candidate, filename, line) and (
                best is None or candidate.__code__.co_firstlineno > best.__code__.co_firstlineno
            ):
                best = candidate  # the innermost of nested definitions
    return best


def _holds(function: Any, filename: str, line: int) -> bool:
    if not inspect.isfunction(function):
        return False
    code = function.__code__
    if code.co_filename != filename or line < code.co_firstlineno:
        return False
    return any(end is not None and end >= line for _, _, end in code.co_lines())


def _unguarded_dependency(function: Any, depth: int, seen: set[int]) -> GeneratorDependency | None:
    if id(function) in seen or depth > _MAX_DEPTH:
        return None
    seen.add(id(function))
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return None
    names = _globals_of(function)
    for parameter in parameters:
        for dependency in _dependencies(parameter, names):
            found = _unguarded_generator(dependency)
            if found is not None:
                return found
            if not _is_generator(dependency) and callable(dependency):
                found = _unguarded_dependency(dependency, depth + 1, seen)
                if found is not None:
                    return found
    return None


def _dependencies(parameter: inspect.Parameter, names: dict[str, Any]) -> list[Any]:
    """What FastAPI calls for this parameter: ``= Depends(f)``, ``Annotated[T,
    Depends(f)]``, also spelled as a string (``from __future__ import annotations``) or
    through an alias (``DbSession = Annotated[...]``)."""
    found: list[Any] = []
    annotation = parameter.annotation
    if isinstance(annotation, str):
        annotation = _annotation_in_text(annotation, names)
        found.extend(_dependencies_in_text(parameter.annotation, names))
    else:
        found.extend(_metadata_dependencies(annotation))
    default = parameter.default
    if _is_depends(default):
        # A bare `Depends()` calls the annotated class itself.
        found.append(default.dependency or _annotated_type(annotation))
    return [dependency for dependency in found if dependency is not None]


def _is_depends(value: Any) -> bool:
    return hasattr(value, "dependency") and hasattr(value, "use_cache")


def _annotated_type(annotation: Any) -> Any:
    """``T`` of ``Annotated[T, ...]``, else the annotation itself."""
    return getattr(annotation, "__origin__", annotation) if _metadata(annotation) else annotation


def _metadata(annotation: Any) -> tuple[Any, ...]:
    metadata = getattr(annotation, "__metadata__", ())
    return metadata if isinstance(metadata, tuple) else ()


def _metadata_dependencies(annotation: Any) -> list[Any]:
    found = []
    for extra in _metadata(annotation):
        if _is_depends(extra):
            found.append(extra.dependency or _annotated_type(annotation))
    return found


def _annotation_in_text(text: str, names: dict[str, Any]) -> Any:
    """The object a string annotation names (``"Repo"``, ``"DbSession"``), when it is a
    plain or dotted name."""
    tree = parse_safely(text, "eval")
    return _lookup(tree.body, names) if isinstance(tree, ast.Expression) else None


def _dependencies_in_text(text: str, names: dict[str, Any]) -> list[Any]:
    """Dependencies in a string annotation, by reading it, not evaluating it."""
    tree = parse_safely(text, "eval")
    if not isinstance(tree, ast.Expression):
        return []
    if isinstance(tree.body, (ast.Name, ast.Attribute)):
        return _metadata_dependencies(_lookup(tree.body, names))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):
            # Annotated[Repo, Depends()]: a bare Depends() calls Repo.
            annotated, *extras = node.slice.elts
            for extra in extras:
                if _bare_depends(extra):
                    found.append(_lookup(annotated, names))
        if isinstance(node, ast.Call) and _called_name(node.func) in ("Depends", "Security"):
            argument = node.args[0] if node.args else None
            for keyword in node.keywords:
                if keyword.arg == "dependency":
                    argument = keyword.value
            dependency = _lookup(argument, names) if argument is not None else None
            if dependency is not None:
                found.append(dependency)
    return found


def _bare_depends(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Call)
        and _called_name(node.func) in ("Depends", "Security")
        and not node.args
        and not any(keyword.arg == "dependency" for keyword in node.keywords)
    )


def _called_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _lookup(node: ast.expr, names: dict[str, Any]) -> Any:
    """The object a dotted name refers to, with static attribute reads (no property of the
    user's runs)."""
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        owner = _lookup(node.value, names)
        return None if owner is None else inspect.getattr_static(owner, node.attr, None)
    return None


def _globals_of(function: Any) -> dict[str, Any]:
    names = getattr(function, "__globals__", None)
    if isinstance(names, dict):
        return names
    module = sys.modules.get(getattr(function, "__module__", None) or "")
    return vars(module) if module is not None else {}


def _is_generator(function: Any) -> bool:
    return inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)


def _unguarded_generator(function: Any) -> GeneratorDependency | None:
    if not _is_generator(function):
        return None
    code = function.__code__
    if code in _judged:
        return _judged[code]
    try:
        source = textwrap.dedent(inspect.getsource(function))
    except (OSError, TypeError):
        return None
    tree = parse_safely(source, "exec")
    if tree is None:
        return None  # not judged now; maybe later
    found = _judge_generator(function, tree)
    if len(_judged) >= _MAX_JUDGED:
        _judged.clear()
    _judged[code] = found
    return found


def _judge_generator(function: Any, tree: ast.AST) -> GeneratorDependency | None:
    if _guarded_yields(tree) or not _may_yield_a_session(tree, _globals_of(function)):
        return None
    code = function.__code__
    return GeneratorDependency(
        function.__name__,
        CallSite(code.co_filename, code.co_firstlineno, function.__name__),
        inspect.isasyncgenfunction(function),
        commits=any(
            isinstance(node, ast.Attribute) and node.attr == "commit" for node in ast.walk(tree)
        ),
    )


def _guarded_yields(tree: ast.AST) -> bool:
    """Whether every ``yield`` sits in a ``with`` block or a ``try`` with ``finally``."""
    guarded: set[int] = set()
    for node in ast.walk(tree):
        closes = isinstance(node, (ast.With, ast.AsyncWith)) or (
            isinstance(node, ast.Try) and bool(node.finalbody)
        )
        bodies: list[ast.stmt] = node.body if closes else []  # type: ignore[attr-defined]
        for statement in bodies:
            guarded.update(id(n) for n in ast.walk(statement) if isinstance(n, ast.Yield))
    yields = [n for n in ast.walk(tree) if isinstance(n, ast.Yield)]
    return bool(yields) and all(id(n) in guarded for n in yields)


def _may_yield_a_session(tree: ast.AST, names: dict[str, Any]) -> bool:
    """False when every ``yield`` gives a literal or something built by a class that is
    not a session (``yield Settings()``, ``settings = Settings(); yield settings``,
    ``yield 0.0``): such a generator did not open the leaked session. A factory the
    source does not tell counts as one."""
    bound: dict[str, ast.expr] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    bound[target.id] = node.value
    for node in ast.walk(tree):
        if not isinstance(node, ast.Yield):
            continue
        value = node.value
        if isinstance(value, ast.Name):
            value = bound.get(value.id, value)
        if value is None or isinstance(value, _LITERALS):
            continue
        if (
            not isinstance(value, ast.Call)
            or _makes_a_session(_lookup(value.func, names)) is not False
        ):
            return True
    return False


_LITERALS = (ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.JoinedStr)


def _makes_a_session(factory: Any) -> bool | None:
    """Whether calling ``factory`` gives a session: ``None`` when it cannot be told (a
    function's result)."""
    if factory is None:
        return None
    try:
        from sqlalchemy.ext.asyncio import AsyncSession, async_scoped_session, async_sessionmaker
        from sqlalchemy.orm import Session, scoped_session, sessionmaker
    except Exception:  # pragma: no cover - an unusual SQLAlchemy build
        return None
    factories = (sessionmaker, async_sessionmaker, scoped_session, async_scoped_session)
    if isinstance(factory, factories):
        return True
    if isinstance(factory, type):
        return issubclass(factory, (Session, AsyncSession))
    return None
