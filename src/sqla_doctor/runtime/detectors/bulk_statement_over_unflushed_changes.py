"""SQD353: a bulk UPDATE/DELETE ran, without autoflush, over unflushed changes to its rows."""

from __future__ import annotations

from typing import Any

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.detector import OTHER, Detector, OrmExecution
from sqla_doctor.runtime.detectors.bulk_statement_skips_orm_events import (
    attribute_key,
    set_keys,
    statement_mapper,
)

_MAX_SEEN = 1_000
# Objects looked at per statement; session.dirty and session.new are what the user
# changed since the last flush, usually a handful.
_MAX_OBJECTS = 2_000
_MAX_NAMED = 4


def _changed_keys(obj: Any, keys: frozenset[str] | None) -> list[str]:
    # AttributeState.history reads what the object holds and never loads.
    from sqlalchemy import inspect

    attrs = inspect(obj).attrs
    names = keys if keys is not None else attrs.keys()
    changed: list[str] = []
    for key in names:
        attr = attrs.get(key)
        if attr is not None and attr.history.has_changes():
            changed.append(key)
    return changed


def _compared_keys(statement: Any, mapper: Any) -> frozenset[str]:
    """The attributes of ``mapper`` whose columns the statement's WHERE clause reads."""
    where = getattr(statement, "whereclause", None)
    if where is None:
        return frozenset()
    from sqlalchemy.sql import visitors

    tables = set(mapper.tables)
    keys: set[str] = set()
    for element in visitors.iterate(where):
        if element.__visit_name__ == "column" and getattr(element, "table", None) in tables:
            key = attribute_key(element, mapper)
            if key is not None:
                keys.add(key)
    return frozenset(keys)


class BulkStatementOverUnflushedChanges(Detector):
    """
    ## What it does
    Checks for a bulk ORM `update(Model)` / `delete(Model)` executed while the session
    holds changes to that class it has not flushed, in a session (or a statement) that
    does not autoflush: `Session(autoflush=False)`, `with session.no_autoflush:`, or
    `.execution_options(autoflush=False)`. Reported are only the cases that lose data:

    - an UPDATE that sets an attribute the session holds an unflushed change to: with
      `synchronize_session` `"auto"`, `"evaluate"` or `"fetch"` (and for a bulk UPDATE
      by primary key) the statement expires the object's attribute and the change is
      silently discarded; with `synchronize_session=False` the next flush writes the
      old change over the statement's value;
    - an UPDATE or DELETE while new objects of that class are pending: they are
      inserted after the statement, so the statement never sees them;
    - an UPDATE or DELETE whose `WHERE` compares an attribute the session holds an
      unflushed change to (`session.execute(delete(Token).where(Token.revoked))` after
      `token.revoked = True`): the statement picks its rows by the values the database
      still has, so it misses the row the program just changed to match (or takes one
      it changed not to).

    With autoflush on (the default), the session flushes those changes before a bulk
    statement and nothing is lost; that case is not reported.

    ## Why is this bad?
    Two writes to the same row, one in memory and one in the database, and one of them
    silently wins: an in-flight ORM change vanishes, or a "deactivate every account"
    statement misses the account created a line earlier.

    ## Known problems
    Changes to other attributes of rows a bulk DELETE removes are not reported: the row
    is gone, and a later flush of such an object fails loudly (`StaleDataError`).

    ## Example
    ```python
    with session.no_autoflush:
        account.name = "Ada"
        session.execute(update(Account).where(Account.id == account.id).values(name="Bob"))
    session.commit()  # account.name is "Bob": the change to "Ada" was discarded
    ```

    Use instead:
    ```python
    account.name = "Ada"
    session.flush()  # the change reaches the database first
    session.execute(update(Account).where(Account.id == account.id).values(name="Bob"))
    ```

    ## References
    - [ORM-Enabled UPDATE and DELETE: selecting a synchronization strategy](https://docs.sqlalchemy.org/en/20/orm/queryguide/dml.html#selecting-a-synchronization-strategy)
    - [Session basics: autoflush](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#session-flushing)
    """

    code = "SQD353"
    name = "bulk-statement-over-unflushed-changes"
    pitfalls = ("P32",)
    severity = Severity.ERROR
    execution_kinds = frozenset({OTHER})
    message = (
        "`{statement}` at {site} ran without autoflush while the session held {held}: "
        "{consequence} — call session.flush() before the statement"
    )

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self.seen: set[tuple[Any, ...]] = set()

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        state = execution.state
        site = execution.site
        if state is None or site is None or execution.in_flush:
            return
        if not (state.is_update or state.is_delete):
            return
        session = state.session
        # do_orm_execute runs before the statement's autoflush: this is what the
        # statement would flush first, unless it will not (Session.autoflush is False
        # inside no_autoflush too).
        if session.autoflush and state.execution_options.get("autoflush", True):
            return
        mapper = statement_mapper(state)
        if mapper is None:
            return
        verb = "UPDATE" if state.is_update else "DELETE"
        key = (site.filename, site.lineno, verb)
        if key in self.seen:
            return
        new = sum(1 for obj in list(session.new)[:_MAX_OBJECTS] if _of(obj, mapper))
        changed_objects = 0
        changed_keys: list[str] = []
        overwrite = ""
        dirty = [obj for obj in list(session.dirty)[:_MAX_OBJECTS] if _of(obj, mapper)]
        if verb == "UPDATE":
            keys = set_keys(state, mapper)
            for obj in dirty:
                changed = _changed_keys(obj, keys)
                if changed:
                    changed_objects += 1
                    changed_keys.extend(k for k in changed if k not in changed_keys)
            sync = state.execution_options.get("synchronize_session", "auto")
            overwrite = (
                "the next flush writes those changes over the statement's values"
                if sync is False
                else "the statement discards those changes (it expires the changed attributes)"
            )
        compared_objects = 0
        compared_keys: list[str] = []
        compared = _compared_keys(state.statement, mapper) if dirty else frozenset()
        if compared:
            for obj in dirty:
                changed = [k for k in _changed_keys(obj, compared) if k not in changed_keys]
                if changed:
                    compared_objects += 1
                    compared_keys.extend(k for k in changed if k not in compared_keys)
        if not (new or changed_objects or compared_objects):
            return
        if len(self.seen) >= _MAX_SEEN:
            return
        self.seen.add(key)
        entity = mapper.class_.__name__
        held: list[str] = []
        consequences: list[str] = []
        if changed_objects:
            named = ", ".join(f"{entity}.{k}" for k in changed_keys[:_MAX_NAMED])
            held.append(f"unflushed changes to {changed_objects} {entity} object(s) ({named})")
            consequences.append(overwrite)
        if compared_objects:
            named = ", ".join(f"{entity}.{k}" for k in compared_keys[:_MAX_NAMED])
            held.append(
                f"unflushed changes to {compared_objects} {entity} object(s) ({named}) "
                "that its WHERE compares"
            )
            consequences.append(
                "it picked its rows by the values the database still had, not by those changes"
            )
        if new:
            held.append(f"{new} new {entity} object(s)")
            consequences.append("the new rows are inserted after the statement and escape it")
        self.report(
            site,
            key=key,
            subject=entity,
            hint="session.flush() before the bulk statement",
            details={
                "entity": entity,
                "statement": verb,
                "changed_objects": changed_objects,
                "changed_attributes": changed_keys[:_MAX_NAMED],
                "compared_objects": compared_objects,
                "compared_attributes": compared_keys[:_MAX_NAMED],
                "new_objects": new,
            },
            statement=f"{verb.lower()}({entity})",
            site=self.where(site),
            held=" and ".join(held),
            consequence="; ".join(consequences),
        )


def _of(obj: Any, mapper: Any) -> bool:
    from sqlalchemy import inspect

    try:
        return bool(inspect(obj).mapper.isa(mapper))
    except Exception:
        return False
