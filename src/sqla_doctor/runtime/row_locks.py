"""Rows a transaction locked (``SELECT ... FOR UPDATE``): other transactions wait on
them until it ends, which is what a slow call inside that transaction costs them."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from sqla_doctor.runtime.callsite import CallSite

# A SELECT's row lock, rendered last (SQLite renders none): the lock, then
# with_for_update()'s NOWAIT or SKIP LOCKED.
LOCK_CLAUSE: Final = re.compile(
    r"\bFOR\s+(NO\s+KEY\s+UPDATE|UPDATE|KEY\s+SHARE|SHARE)\b(?:\s+OF\s+[^;]*?)?"
    r"(\s+NOWAIT|\s+SKIP\s+LOCKED)?\s*$",
    re.IGNORECASE,
)


def row_lock(statement: str) -> str | None:
    """The row lock a statement takes until its transaction ends (``FOR UPDATE``, ``FOR
    SHARE``...), else None. One substring test for the statements that take none."""
    if "FOR " not in statement and "for " not in statement:
        return None
    found = LOCK_CLAUSE.search(statement)
    return f"FOR {' '.join(found[1].upper().split())}" if found is not None else None


# PostgreSQL's session-level advisory locks, held until unlocked or the connection closes
# (not pg_advisory_xact_lock(), which its transaction's end releases).
_TAKE_ADVISORY: Final = re.compile(r"\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(", re.IGNORECASE)
_RELEASE_ADVISORY: Final = re.compile(r"\bpg_advisory_unlock(?:_shared)?\s*\(", re.IGNORECASE)
_RELEASE_ALL_ADVISORY: Final = re.compile(r"\bpg_advisory_unlock_all\s*\(", re.IGNORECASE)


def advisory_locks(statement: str, held: int) -> int:
    """How many session-level advisory locks a connection holding ``held`` holds after
    ``statement`` (a ``pg_try_advisory_lock()`` counts as taken). The statement
    listener calls it only for statements that say "advisory": most say nothing of it."""
    if _RELEASE_ALL_ADVISORY.search(statement):
        return 0
    taken = len(_TAKE_ADVISORY.findall(statement))
    released = len(_RELEASE_ADVISORY.findall(statement))
    return max(held + taken - released, 0)


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
