"""Rows a transaction locked (``SELECT ... FOR UPDATE``): other transactions wait on
them until it ends, which is what a slow call inside that transaction costs them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from sqla_doctor.runtime.callsite import CallSite

# A SELECT's row lock, rendered last by PostgreSQL and MySQL (SQLite renders none).
_ROW_LOCK: Final = re.compile(r"\bFOR\s+(NO\s+KEY\s+UPDATE|KEY\s+SHARE|UPDATE|SHARE)\b")


def row_lock(statement: str) -> str | None:
    """The row lock a statement takes until its transaction ends (``FOR UPDATE``, ``FOR
    SHARE``...), else None. One substring test for the statements that take none."""
    if "FOR " not in statement:
        return None
    found = _ROW_LOCK.search(statement)
    return " ".join(f"FOR {found[1]}".split()) if found is not None else None


def held_rows(
    locked: tuple[CallSite | None, str], where: Callable[[CallSite], str], until: str
) -> str:
    """What the rows ``locked`` (where, and the lock clause) cost other transactions:
    "the rows the query at app.py:12 locked (FOR UPDATE) stay locked meanwhile, so ..."."""
    site, lock = locked
    query = f"the query at {where(site)}" if site is not None else "a query"
    # FOR SHARE lets others read and share the lock; only their writes wait.
    waits = "update or delete" if "SHARE" in lock else "update, delete or lock"
    return (
        f"the rows {query} locked ({lock}) stay locked {until}, so every other transaction "
        f"that tries to {waits} them waits as long"
    )
