"""SQD353: a bulk UPDATE/DELETE ran, without autoflush, over unflushed changes to its rows."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.sql.elements import TextClause

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import CORE, OTHER, Detector, OrmExecution, Statement
from sqla_doctor.runtime.detectors.bulk_statement_skips_orm_events import (
    attribute_key,
    set_keys,
    statement_mapper,
)
from sqla_doctor.runtime.unit_of_work import process

_MAX_SEEN = 1_000
# Objects looked at per statement; session.dirty and session.new are what the user
# changed since the last flush, usually a handful.
_MAX_OBJECTS = 2_000
_MAX_NAMED = 4


def _changed_keys(obj: Any, keys: frozenset[str] | None) -> list[str]:
    # AttributeState.history reads what the object holds and never loads.
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
    statement and nothing is lost; that case is not reported. A Core `update(table)` or
    `delete(table)` run on the session's own connection
    (`session.connection().execute(...)`) never autoflushes and expires nothing: it is
    checked the same way, against the classes that map the table, and the changes it
    would lose are written over its values by the next flush. So is an `UPDATE` or
    `DELETE` written as SQL on that connection (`text()`, `exec_driver_sql()`): its
    table and the columns its `SET` list assigns are read from the SQL (a statement they
    cannot be read from is left alone, and its `WHERE` is not read).

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
    execution_kinds = frozenset({OTHER, CORE})
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
        sync = state.execution_options.get("synchronize_session", "auto")
        overwrite = (
            "the next flush writes those changes over the statement's values"
            if sync is False
            else "the statement discards those changes (it expires the changed attributes)"
        )
        keys = set_keys(state, mapper) if verb == "UPDATE" else None
        label = f"{verb.lower()}({mapper.class_.__name__})"
        self._check(session, mapper, verb, keys, state.statement, site, label, overwrite)

    def on_before_cursor_execute(self, statement: Statement) -> None:
        """A Core UPDATE/DELETE of a mapped table run on the session's own connection
        (``session.connection().execute(update(table))``): no ORM execution, so no
        autoflush, and it expires nothing."""
        site = statement.site
        if statement.orm is not None or statement.in_flush or site is None:
            return
        clause: Any = getattr(statement.compiled, "statement", None)
        if clause is None or isinstance(clause, TextClause):
            self._check_sql(statement, site)
            return
        if not getattr(clause, "is_dml", False) or not (clause.is_update or clause.is_delete):
            return
        table = getattr(clause, "table", None)
        session = _session_of(statement.connection)
        if table is None or session is None:
            return
        verb = "UPDATE" if clause.is_update else "DELETE"
        overwrite = (
            "a Core statement on the session's connection neither flushes nor expires "
            "anything: the next flush writes those changes over the statement's values"
        )
        label = f"{verb.lower()}({getattr(table, 'name', 'table')})"
        for mapper in _mappers_of(session, table):
            keys = _core_set_keys(statement.compiled, table, mapper) if verb == "UPDATE" else None
            if self._check(session, mapper, verb, keys, clause, site, label, overwrite):
                return

    def _check_sql(self, statement: Statement, site: CallSite) -> None:
        """An UPDATE/DELETE written as SQL (``text()``, ``exec_driver_sql()``) on the
        session's own connection: its table and the columns its SET assigns are read
        from the SQL; a statement they cannot be read from is left alone."""
        found = _SQL_DML.match(statement.sql)
        if found is None:
            return
        session = _session_of(statement.connection)
        if session is None:
            return
        verb = "UPDATE" if found.group("verb") else "DELETE"
        name = found.group("table")
        schema = found.group("schema")
        overwrite = (
            "SQL run on the session's connection neither flushes nor expires anything: the "
            "next flush writes those changes over the statement's values"
        )
        for table in _tables_named(session, name, schema):
            for mapper in _mappers_of(session, table):
                keys = (
                    _sql_set_keys(found.group("rest"), table, mapper)
                    if verb == "UPDATE"
                    else None
                )
                label = f"{verb} {table.name}"
                if self._check(session, mapper, verb, keys, None, site, label, overwrite):
                    return

    def _check(
        self,
        session: Any,
        mapper: Any,
        verb: str,
        keys: frozenset[str] | None,
        statement: Any,
        site: CallSite,
        label: str,
        overwrite: str,
    ) -> bool:
        """Report the statement if the session holds what it loses; whether it did."""
        key = (site.filename, site.lineno, verb)
        if key in self.seen:
            return False
        new = sum(1 for obj in list(session.new)[:_MAX_OBJECTS] if _of(obj, mapper))
        changed_objects = 0
        changed_keys: list[str] = []
        dirty = [obj for obj in list(session.dirty)[:_MAX_OBJECTS] if _of(obj, mapper)]
        if verb == "UPDATE":
            for obj in dirty:
                changed = _changed_keys(obj, keys)
                if changed:
                    changed_objects += 1
                    changed_keys.extend(k for k in changed if k not in changed_keys)
        compared_objects = 0
        compared_keys: list[str] = []
        compared = _compared_keys(statement, mapper) if dirty else frozenset()
        if compared:
            for obj in dirty:
                changed = [k for k in _changed_keys(obj, compared) if k not in changed_keys]
                if changed:
                    compared_objects += 1
                    compared_keys.extend(k for k in changed if k not in compared_keys)
        if not (new or changed_objects or compared_objects):
            return False
        if len(self.seen) >= _MAX_SEEN:
            return False
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
            statement=label,
            site=self.where(site),
            held=" and ".join(held),
            consequence="; ".join(consequences),
        )
        return True


def _session_of(connection: Any) -> Any:
    """The Session whose transaction runs on this Connection (it checked it out), else
    None: a Connection of the program's own."""
    try:
        fairy = connection.connection
    except Exception:
        return None
    checkout = process.checkout_of(fairy)
    if checkout is None or not checkout.session_owned or checkout.session_record is None:
        return None
    record = checkout.session_record()
    return record.session if record is not None else None


def _mappers_of(session: Any, table: Any) -> list[Any]:
    """The mappers of the session's new and changed objects that map ``table``."""
    found: list[Any] = []
    for obj in [*list(session.dirty)[:_MAX_OBJECTS], *list(session.new)[:_MAX_OBJECTS]]:
        try:
            mapper = inspect(obj).mapper
        except Exception:
            continue
        if mapper not in found and table in set(mapper.tables):
            found.append(mapper)
    return found


def _core_set_keys(compiled: Any, table: Any, mapper: Any) -> frozenset[str]:
    """The attributes of ``mapper`` a Core UPDATE of ``table`` sets: its ``.values()``
    (``_values``/``_ordered_values``, as set_keys() reads them), else the parameter keys
    it was compiled for (``execute(update(table), [{...}])``) that name its columns."""
    statement = compiled.statement
    names: list[Any] = []
    for attribute in ("_values", "_ordered_values"):
        found = getattr(statement, attribute, None)
        if found:
            names = list(found.keys()) if isinstance(found, dict) else [k for k, _ in found]
            break
    if not names:
        names = list(getattr(compiled, "column_keys", None) or ())
    keys: set[str] = set()
    for name in names:
        column = table.c.get(name) if isinstance(name, str) else name
        if column is None:
            continue  # a bindparam() of the WHERE clause, not a column it sets
        key = attribute_key(column, mapper)
        if key is not None:
            keys.add(key)
    return frozenset(keys)


# `UPDATE [ONLY] [schema.]table [[AS] alias] SET ...` / `DELETE FROM [ONLY] [schema.]table`,
# names bare or double-quoted.
_NAME = r'(?:"(?:[^"]|"")+"|\w+)'
_SQL_DML = re.compile(
    rf"\s*(?:(?P<verb>UPDATE)|(?P<delete>DELETE)\s+FROM)\s+(?:ONLY\s+)?"
    rf"(?:(?P<schema>{_NAME})\s*\.\s*)?(?P<table>{_NAME})(?P<rest>.*)\Z",
    re.IGNORECASE | re.DOTALL,
)
# `col =` at the start of the SET list or after a comma, not `==`, `<=`, `>=`, `!=`.
_SET_ITEM = re.compile(rf"(?:\bSET\s+|,\s*)(?P<column>{_NAME})\s*=(?!=)", re.IGNORECASE)
_SET_END = re.compile(r"\b(?:WHERE|FROM|RETURNING)\b", re.IGNORECASE)


def _unquoted(name: str | None) -> str | None:
    if name is None or not name.startswith('"'):
        return name.lower() if name is not None else None
    return name[1:-1].replace('""', '"')


def _tables_named(session: Any, name: str, schema: str | None) -> list[Any]:
    """The tables of the session's new and changed objects' mappers that the SQL names
    (an unquoted name matches case-insensitively, as the database folds it)."""
    wanted, wanted_schema = _unquoted(name), _unquoted(schema)
    quoted = name.startswith('"')
    found: list[Any] = []
    for obj in [*list(session.dirty)[:_MAX_OBJECTS], *list(session.new)[:_MAX_OBJECTS]]:
        try:
            tables = inspect(obj).mapper.tables
        except Exception:
            continue
        for table in tables:
            table_name = table.name if quoted else table.name.lower()
            if table in found or table_name != wanted:
                continue
            if wanted_schema is not None and (table.schema or "").lower() != wanted_schema:
                continue
            found.append(table)
    return found


def _sql_set_keys(rest: str, table: Any, mapper: Any) -> frozenset[str]:
    """The attributes of ``mapper`` whose columns an UPDATE's SET list assigns, read
    from the SQL after the table name (up to WHERE/FROM/RETURNING)."""
    end = _SET_END.search(rest)
    assignments = rest[: end.start()] if end is not None else rest
    keys: set[str] = set()
    for item in _SET_ITEM.finditer(assignments):
        column_name = _unquoted(item.group("column"))
        column = next((c for c in table.c if c.name.lower() == column_name), None)
        key = attribute_key(column, mapper) if column is not None else None
        if key is not None:
            keys.add(key)
    return frozenset(keys)


def _of(obj: Any, mapper: Any) -> bool:
    try:
        return bool(inspect(obj).mapper.isa(mapper))
    except Exception:
        return False
