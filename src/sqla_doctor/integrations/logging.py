"""Findings as structured log records on the ``sqla_doctor`` logger.

The runtime's ``log`` mode already writes one record per finding (``modes.log``): its
message is ``path:line: CODE message``, its level follows the finding's severity, and
``record.sqla_doctor`` holds the finding as a dict (code, name, message, severity, path,
line, fix, related, details; never bound parameter values). This module does not write
a second format: it re-exports that function and adds *context*, the fields that say in
which request, test or job a finding happened::

    with log_context(job="nightly-sync"):
        run_sync()   # under sqla_doctor.install(mode="log")

Every record the ``sqla_doctor`` logger emits inside the block gets
``record.sqla_doctor["context"] == {"job": "nightly-sync"}`` and a message prefixed with
the context's values (``nightly-sync: app/sync.py:12: SQD251 ...``). The ASGI and WSGI
middleware log each finding this way with the request's method and route.

Importing this module does not import SQLAlchemy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqla_doctor.findings import Finding

__all__ = ["LOGGER_NAME", "log_context", "log_finding", "log_findings", "logger"]

LOGGER_NAME = "sqla_doctor"
logger = logging.getLogger(LOGGER_NAME)

_context: ContextVar[Mapping[str, str] | None] = ContextVar("sqla_doctor_log_context", default=None)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Add ``fields`` to every ``sqla_doctor`` record emitted in this block (and task)."""
    outer = _context.get()
    token = _context.set({**outer, **fields} if outer else dict(fields))
    try:
        yield
    finally:
        _context.reset(token)


def log_finding(finding: Finding, context: Mapping[str, str] | None = None) -> None:
    """One record for ``finding``, as the runtime's ``log`` mode writes it, plus ``context``."""
    from sqla_doctor.runtime import modes

    if not context:
        modes.log(finding)
        return
    with log_context(**context):
        modes.log(finding)


def log_findings(findings: Iterable[Finding], context: Mapping[str, str] | None = None) -> None:
    for finding in findings:
        log_finding(finding, context)


class _AddContext(logging.Filter):
    """Puts the block's context into ``sqla_doctor`` records, once, before any handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _context.get()
        payload = getattr(record, LOGGER_NAME, None)
        if not context or not isinstance(payload, dict):
            return True
        try:
            record.sqla_doctor = {**payload, "context": dict(context)}
            # The values are the user's (routes, test ids): a '%' in them is not a format.
            prefix = " ".join(str(value) for value in context.values()).replace("%", "%%")
            record.msg = f"{prefix}: {record.msg}"
        except Exception:  # pragma: no cover - a filter must never stop a record
            pass
        return True


def _install_filter() -> None:
    if not any(isinstance(existing, _AddContext) for existing in logger.filters):
        logger.addFilter(_AddContext())


_install_filter()
