"""The line that created an engine: where a pool or connection setting goes.

SQLAlchemy has no event for the creation of an engine. Asked only when a finding about
a pool or its connections is made (rare): the engine is looked for among the globals of
the program's own modules (``engine = create_engine(...)`` at module level, the usual
case), by identity, and the module's source gives the ``create_engine(`` (or
``create_async_engine(``) line assigned to that name. An engine made elsewhere (in a
function, by a framework extension) gives None. Module dictionaries are read directly:
no attribute of the program's objects is read.
"""

from __future__ import annotations

import linecache
import re
import sys
from types import ModuleType
from typing import Any

from sqla_doctor.runtime.callsite import USER, CallSite, classify, module_file

_MAX_MODULES = 5_000
_CREATE = r"\s*(?::[^=]*)?=\s*(?:[\w.]+\.)?create_(?:async_)?engine\s*\("


def engine_factory(engine: Any) -> str:
    """The function that made ``engine``: an AsyncEngine's sync engine (the one events and
    errors see) has an async dialect (asyncpg, aiosqlite), and the program called
    create_async_engine()."""
    is_async = getattr(getattr(engine, "dialect", None), "is_async", False) is True
    return "create_async_engine" if is_async else "create_engine"


def engine_created_at(engine: Any = None, pool: Any = None) -> CallSite | None:
    """Where the program's module-level engine ``engine`` (or the one whose pool is
    ``pool``) was created, or None."""
    try:
        return _find(engine, pool)
    except Exception:
        return None


def _find(engine: Any, pool: Any) -> CallSite | None:
    from sqlalchemy.engine import Engine

    async_engine: Any = None
    if "sqlalchemy.ext.asyncio" in sys.modules:
        from sqlalchemy.ext.asyncio import AsyncEngine

        async_engine = AsyncEngine
    for module in list(sys.modules.values())[:_MAX_MODULES]:
        if not issubclass(type(module), ModuleType):
            continue
        filename = module_file(module)
        if filename is None or classify(filename) != USER:
            continue
        namespace = module.__dict__
        for name, value in list(namespace.items()):
            kind = type(value)
            if async_engine is not None and issubclass(kind, async_engine):
                value = value.sync_engine
                kind = type(value)
            if not issubclass(kind, Engine):
                continue
            if value is not engine and (pool is None or value.pool is not pool):
                continue
            site = _assignment(filename, name, module.__name__)
            if site is not None:
                return site
    return None


def _assignment(filename: str, name: str, module: str) -> CallSite | None:
    pattern = re.compile(rf"^\s*{re.escape(name)}{_CREATE}")
    for number, line in enumerate(linecache.getlines(filename), start=1):
        if pattern.match(line):
            return CallSite(filename, number, "<module>", module)
    return None
