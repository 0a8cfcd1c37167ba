"""The two sides of an ``AsyncSession``, for code that meets either.

Events see the sync ``Session`` an ``AsyncSession`` wraps; a program's locals hold the
``AsyncSession``. Both lookups go through SQLAlchemy's public API (``sync_session``,
``async_session()``) and cost nothing in a process that never imported
``sqlalchemy.ext.asyncio``: nothing there can have made an AsyncSession.
"""

from __future__ import annotations

import sys
from typing import Any


def sync_session(value: Any) -> Any:
    """The Session behind an AsyncSession, else None."""
    if "sqlalchemy.ext.asyncio" not in sys.modules:
        return None
    from sqlalchemy.ext.asyncio import AsyncSession

    # By type(), never isinstance(): that reads ``__class__``, which a proxy (Flask's
    # current_app) resolves by running its code.
    if issubclass(type(value), AsyncSession):
        return value.sync_session
    return None


def async_owner(session: Any) -> Any:
    """The AsyncSession that wraps this Session, else None (also once it was collected)."""
    if "sqlalchemy.ext.asyncio" not in sys.modules:
        return None
    from sqlalchemy.ext.asyncio import async_session

    try:
        return async_session(session)
    except Exception:  # pragma: no cover - an unusual SQLAlchemy build
        return None
