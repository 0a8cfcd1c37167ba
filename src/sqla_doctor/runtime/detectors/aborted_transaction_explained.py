"""SQD164: PostgreSQL's "current transaction is aborted", explained with the error that
aborted it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, ErrorSeen
from sqla_doctor.runtime.detectors.session_leak import is_async_session
from sqla_doctor.runtime.errors import record_of, sqlstate_of
from sqla_doctor.runtime.unit_of_work import ABORTED_BY, TransactionAbort, retry_fix


def _sqlstate(error: BaseException) -> str | None:
    return sqlstate_of(error.orig) if isinstance(error, DBAPIError) else None


def _abort_of(connection: Connection) -> TransactionAbort | None:
    """The error that aborted the connection's current transaction (or SAVEPOINT)."""
    if connection.closed or connection.invalidated:
        return None
    abort = connection.info.get(ABORTED_BY)
    if not isinstance(abort, TransactionAbort):
        return None
    current = (connection.get_nested_transaction(), connection.get_transaction())
    aborted = abort.transaction()
    return abort if aborted is not None and aborted in current else None


class AbortedTransactionExplained(Detector):
    """
    ## What it does
    Explains PostgreSQL's `current transaction is aborted, commands ignored until end of
    transaction block` (SQLSTATE 25P02, `InFailedSqlTransaction`) as it is raised: which
    earlier statement of the same transaction failed, with which error, and where — the
    error the program caught and went on from. The explanation is also added to the
    exception's notes.

    ## Why is this bad?
    When a statement fails inside a PostgreSQL transaction (a unique violation, a
    deadlock, a statement timeout), the server aborts the whole transaction: it refuses
    every later command until ROLLBACK, and whatever it wrote is lost. Code that catches
    the error (`except IntegrityError: log.warning(...)`) and carries on with the same
    session or connection fails on its next statement, far from the cause, with an error
    that does not name it. SQLite and MySQL let the transaction go on, so the code often
    worked in tests.

    ## Example
    ```python
    for row in rows:
        try:
            session.execute(insert(Customer).values(**row))
        except IntegrityError:
            log.warning("duplicate %s", row["email"])
    session.commit()  # InFailedSqlTransaction on the row after a duplicate
    ```

    Use instead:
    ```python
    for row in rows:
        try:
            with session.begin_nested():  # a SAVEPOINT per row
                session.execute(insert(Customer).values(**row))
        except IntegrityError:
            log.warning("duplicate %s", row["email"])
    session.commit()
    ```

    A failed SAVEPOINT rolls back alone and the transaction goes on; or call
    `session.rollback()` in the except block when nothing before the failure needs to be
    kept. With a `Connection`, the SAVEPOINT is `with conn.begin_nested():`; under
    `AsyncSession`, `async with session.begin_nested():`. For this one case, PostgreSQL's
    `INSERT ... ON CONFLICT DO NOTHING` (`sqlalchemy.dialects.postgresql.insert(...)
    .on_conflict_do_nothing()`) avoids the error altogether. When the error that aborted
    the transaction was a deadlock or a serialization failure, the fix named is
    `rollback()` and a retry of the whole transaction; when it was raised inside a
    `begin_nested()` block and caught there, catching it outside that block.

    ## References
    - [PostgreSQL: transactions](https://www.postgresql.org/docs/current/tutorial-transactions.html)
    - [SQLAlchemy: Using SAVEPOINT](https://docs.sqlalchemy.org/en/20/orm/session_transaction.html#using-savepoint)
    - [SQLAlchemy: INSERT…ON CONFLICT](https://docs.sqlalchemy.org/en/20/dialects/postgresql.html#insert-on-conflict-upsert)
    """

    code = "SQD164"
    name = "aborted-transaction-explained"
    pitfalls = ("P04",)
    severity = Severity.ERROR
    message = (
        "PostgreSQL refused this statement: its transaction was aborted by {cause}, which "
        "was caught, and PostgreSQL ignores every command after an error until ROLLBACK "
        "— {fix}"
    )

    def on_error(self, seen: ErrorSeen) -> None:
        if _sqlstate(seen.error) != "25P02":
            return
        abort = None
        for connection in seen.locals_of_type(Connection):
            abort = _abort_of(connection)
            break
        session = next(seen.locals_of_type(Session), None)
        record = record_of(self.uow, session) if session is not None else None
        in_async = record is not None and is_async_session(record)
        name = "session" if session is not None else "conn"
        awaited = "await " if in_async else ""
        block = "async with" if in_async else "with"
        related: list[tuple[CallSite | None, str]] = []
        if abort is not None:
            error = abort.error
            if abort.driver_error:
                error = f"{error} ({abort.driver_error})"
            cause = f"{error} at {self.where(abort.site)}"
            related.append((abort.site, "this statement failed and aborted the transaction"))
        else:
            cause = "an earlier error in the same transaction"
        fix = retry_fix(
            abort.sqlstate if abort is not None else None, f"{awaited}{name}.rollback()"
        )
        hint = f"{awaited}{name}.rollback() and retry"
        if fix is None and abort is not None and abort.in_savepoint:
            # The SAVEPOINT is there already: the error was caught inside its block.
            hint = f"catch the error outside `{block} {name}.begin_nested():`"
            fix = (
                f"the error was caught inside the `{block} {name}.begin_nested():` block, "
                "where the failed SAVEPOINT is still the transaction: catch it outside that "
                "block, which then rolls back to the SAVEPOINT and lets the transaction go on"
            )
        elif fix is None:
            hint = f"{block} {name}.begin_nested():"
            fix = (
                "put the statement that may fail in a SAVEPOINT, "
                f"`{block} {name}.begin_nested():`, and catch the error outside that block, or "
                f"call {awaited}{name}.rollback() in the except block (which also discards the "
                "transaction's earlier writes)"
            )
        finding: Any = self.report(
            seen.site,
            key=("aborted", seen.site.key if seen.site is not None else None),
            subject="PostgreSQL",
            related=related,
            hint=hint,
            details={
                "error": abort.error if abort is not None else None,
                "driver_error": abort.driver_error if abort is not None else None,
            },
            cause=cause,
            fix=fix,
        )
        seen.explain(finding)
