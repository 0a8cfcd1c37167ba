"""SQD352: a bulk ORM INSERT/UPDATE/DELETE ran on a class whose ORM events or validators it
skips."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from types import FrameType
from typing import Any

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import CORE, OTHER, Detector, OrmExecution, Statement
from sqla_doctor.runtime.loading import lazy_value

_EVENTS = {
    "INSERT": ("before_insert", "after_insert"),
    "UPDATE": ("before_update", "after_update"),
    "DELETE": ("before_delete", "after_delete"),
}
_MAX_NAMED = 6
_MAX_SEEN = 1_000
# The legacy bulk methods write through the Session's connection with no ORM execution:
# their statements reach the cursor as Core, from under Session._bulk_save_mappings().
_BULK_SAVE = "_bulk_save_mappings"
_SESSION_FILE = os.path.join("sqlalchemy", "orm", "session.py")
_BULK_DEPTH = 40
_LEGACY_FIX = (
    "add the objects to the session and flush (`session.add_all(objects)`), or do the "
    "listeners' work in the mappings"
)


def statement_mapper(state: Any) -> Any:
    """The mapped class an ORM-enabled UPDATE/DELETE targets, or None (Core on a Table)."""
    if not state.is_orm_statement:
        return None
    return state.bind_mapper


def set_keys(state: Any, mapper: Any) -> frozenset[str] | None:
    """The attribute keys an UPDATE sets, None when they cannot be told.

    ``update(User).values(...)`` keeps its SET clause in ``_values`` (or ``_ordered_values``
    for ``ordered_values()``), which SQLAlchemy 2.0 and 2.1 both have but do not document;
    a bulk UPDATE by primary key (``execute(update(User), [{...}])``) passes it as the
    parameters. Read defensively: None means "all of them".
    """
    keys: set[str] = set()
    parameters = state.parameters
    rows = [parameters] if isinstance(parameters, dict) else (parameters or ())
    for row in list(rows)[:1]:
        if isinstance(row, dict):
            keys.update(str(k) for k in row)
    values: Iterable[Any] = ()
    statement = state.statement
    for attribute in ("_values", "_ordered_values"):
        found = getattr(statement, attribute, None)
        if found:
            values = found.keys() if isinstance(found, dict) else (k for k, _ in found)
            break
    for column in values:
        key = attribute_key(column, mapper)
        if key is None:
            return None
        keys.add(key)
    if not keys:
        return None
    # Primary-key values of a bulk UPDATE by primary key say which rows, not what is set.
    primary = {attribute_key(c, mapper) for c in mapper.primary_key}
    return frozenset(keys - primary) if keys - primary else frozenset(keys)


def attribute_key(column: Any, mapper: Any) -> str | None:
    if isinstance(column, str):
        return column
    try:
        return str(mapper.get_property_by_column(column).key)
    except Exception:
        key = getattr(column, "key", None)
        return key if isinstance(key, str) else None


def listener_function(fn: Any) -> Any:
    """The user's function behind a listener SQLAlchemy registered as a wrapper.

    Mapper events without ``raw=True, retval=True`` are wrapped in a closure over the
    user's function (``MapperEvents._listen``'s ``wrap``); its name is what the user
    wrote. Unwrapping only reads the closure; an unknown shape keeps the wrapper's name.
    """
    for _ in range(3):
        inner = getattr(fn, "__wrapped__", None)
        if inner is None and getattr(fn, "__module__", "").startswith("sqlalchemy."):
            code = getattr(fn, "__code__", None)
            closure = getattr(fn, "__closure__", None)
            if code is not None and closure and "fn" in code.co_freevars:
                inner = closure[code.co_freevars.index("fn")].cell_contents
        if inner is None or not callable(inner):
            break
        fn = inner
    return fn


def function_name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn))


def _user_listeners(mapper: Any, event_name: str) -> list[Any]:
    # ``Mapper.dispatch.<event>`` holds the listeners for this mapper: its own, those
    # propagated from a base class or mixin, and those registered on every mapper.
    collection = getattr(mapper.dispatch, event_name, None)
    found: list[Any] = []
    for wrapper in collection or ():
        fn = listener_function(wrapper)
        module = getattr(fn, "__module__", "") or ""
        if module.startswith("sqla_doctor") or fn in found:
            continue
        found.append(fn)
    return found


def skipped_by(mapper: Any, verb: str, keys: frozenset[str] | None) -> list[tuple[str, Any]]:
    """What a bulk ``verb`` on ``mapper`` silently skips: (description, function or None)."""
    skipped: list[tuple[str, Any]] = []
    for event_name in _EVENTS[verb]:
        for fn in _user_listeners(mapper, event_name):
            skipped.append((f"the `{event_name}` listener `{function_name(fn)}`", fn))
    entity = mapper.class_.__name__
    if verb in ("UPDATE", "INSERT"):
        for key, validator in mapper.validators.items():
            method = validator[0] if isinstance(validator, tuple) else validator
            if keys is None or key in keys:
                name = getattr(method, "__name__", str(method))
                skipped.append((f"the validator `{entity}.{name}` ({key})", method))
    else:
        for relationship in mapper.relationships:
            if relationship.cascade.delete and not relationship.passive_deletes:
                skipped.append((f"the ORM delete cascade of `{entity}.{relationship.key}`", None))
    return skipped


def cascade_loads(mapper: Any) -> list[str]:
    """``selectinload()`` options for the relationships ``session.delete()`` cascades
    through and would load one object at a time (lazy ones, ``lazy="raise"`` included)."""
    options: list[str] = []
    entity = mapper.class_.__name__
    for relationship in mapper.relationships:
        if not relationship.cascade.delete or relationship.passive_deletes:
            continue
        if lazy_value(relationship.lazy) in ("select", "raise", "raise_on_sql"):
            options.append(f"selectinload({entity}.{relationship.key})")
    return options


class BulkStatementSkipsOrmEvents(Detector):
    """
    ## What it does
    Checks for a bulk ORM `update(Model)` / `delete(Model)` executed through a Session
    (including the legacy `query.update()` / `query.delete()` and a bulk UPDATE by
    primary key, `session.execute(update(Model), [{...}, ...])`), or an ORM bulk
    `insert(Model)` (`session.execute(insert(Model), rows)`), on a class that has ORM
    event listeners for that operation (`before_insert`, `after_insert`,
    `before_update`, `after_update`, `before_delete`, `after_delete`: on the class,
    propagated from a base class or mixin, or registered on every mapper), `@validates`
    methods for the attributes the INSERT or UPDATE sets, or
    relationships whose `delete` cascade the ORM applies (no `passive_deletes`). The
    finding names each function that was skipped. It is the runtime twin of SQD305,
    which finds the same statements in the source.

    The legacy bulk methods are reported the same way: `session.bulk_save_objects()`
    (its `before_insert`/`before_update` listeners and the like never run),
    `bulk_update_mappings()` and `bulk_insert_mappings()` (validators too: the mappings
    are plain dicts).

    ## Why is this bad?
    A bulk statement goes straight to the database: no objects are loaded, so no mapper
    event fires, no validator runs and no cascade is applied, whatever
    `synchronize_session` says. The `updated_at` listener silently stops updating, an
    email is stored un-normalized, deleting users leaves their posts behind (or fails
    on the foreign key).

    ## Known problems
    Statements run with `Connection.execute()` (Core, outside a Session), and
    `session.execute()` of a statement on a `Table` rather than a mapped class, are not
    reported: they are Core by choice, and Core never runs ORM events. Session-wide
    hooks (`before_flush`, `after_flush`) are skipped too but cannot be tied to one
    class, so they are not named. A statement SQLAlchemy refuses before running it
    (`synchronize_session="evaluate"` on criteria it cannot evaluate) is not reported.
    A statement that does the listener's work itself (sets `updated_at=` in its values)
    is still reported; allow it with `# noqa: SQD352`.

    ## Example
    ```python
    @event.listens_for(User, "before_update")
    def touch(mapper, connection, user):
        user.updated_at = datetime.now()

    session.execute(update(User).where(User.id == user_id).values(email=email))
    ```

    Use instead:
    ```python
    user = session.get(User, user_id)
    user.email = email  # validators and before_update listeners run on flush

    # for a bulk delete(User): load the objects (with the collections the delete
    # cascades to) and delete each one
    inactive = select(User).where(User.active.is_(False)).options(selectinload(User.posts))
    for user in session.scalars(inactive):
        session.delete(user)  # before_delete/after_delete listeners and cascades run
    ```
    or apply the listener's logic in the statement itself.

    ## References
    - [ORM-Enabled INSERT, UPDATE, and DELETE statements](https://docs.sqlalchemy.org/en/20/orm/queryguide/dml.html)
    - [Important Notes and Caveats for ORM-Enabled Update and Delete](https://docs.sqlalchemy.org/en/20/orm/queryguide/dml.html#orm-queryguide-update-delete-caveats)
    - [Mapper events](https://docs.sqlalchemy.org/en/20/orm/events.html#mapper-events)
    """

    code = "SQD352"
    name = "bulk-statement-skips-orm-events"
    pitfalls = ("P14",)
    severity = Severity.WARNING
    # ORM DML is classified OTHER: it has no loader path; the legacy bulk methods' writes
    # reach the cursor as CORE.
    execution_kinds = frozenset({OTHER, CORE})
    message = (
        "`{statement}` at {site} ran as one {verb} statement and skipped {skipped} for "
        "these rows — {fix}"
    )

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self.seen: set[tuple[Any, ...]] = set()
        # The statement's finding, reported once it reaches the database: SQLAlchemy may
        # still refuse it (synchronize_session="evaluate" on a function, say).
        self.pending: tuple[OrmExecution, CallSite, dict[str, Any]] | None = None

    def on_before_cursor_execute(self, statement: Statement) -> None:
        if statement.orm is None:
            if not statement.in_flush:
                self._legacy_bulk(statement)
            return
        pending = self.pending
        if pending is None:
            return
        execution, site, report = pending
        if statement.orm is execution:
            self.pending = None
            if report["key"] not in self.seen and len(self.seen) < _MAX_SEEN:
                self.seen.add(report["key"])
                self.report(site, **report)

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        state = execution.state
        site = execution.site
        if state is None or site is None or execution.in_flush:
            return
        if state.is_update:
            verb = "UPDATE"
        elif state.is_delete:
            verb = "DELETE"
        elif state.is_insert:
            verb = "INSERT"  # 2.0's ORM bulk INSERT, bulk_insert_mappings()' successor
        else:
            return
        key = (site.filename, site.lineno, verb)
        self.pending = None
        if key in self.seen or len(self.seen) >= _MAX_SEEN:
            return
        mapper = statement_mapper(state)
        if mapper is None:
            return
        keys = set_keys(state, mapper) if verb != "DELETE" else None
        skipped = skipped_by(mapper, verb, keys)
        if not skipped:
            return
        entity = mapper.class_.__name__
        statement = f"{verb.lower()}({entity})"
        described = [self._described(text, fn) for text, fn in skipped]
        shown = described[:_MAX_NAMED]
        if len(skipped) > _MAX_NAMED:
            shown.append(f"{len(skipped) - _MAX_NAMED} more")
        load = "load the objects"
        if verb == "DELETE":
            change = "`session.delete()` each one"
            runs = "listeners and cascades"
            # session.delete() cascades through each collection: loaded lazily, one
            # query per object (SQD251) unless the query loads them with the objects.
            options = cascade_loads(mapper)
            if options:
                load = f"load the objects with .options({', '.join(options)})"
        elif verb == "INSERT":
            # Rows, not objects: nothing to load, the objects are made from them.
            load, change = "create the objects", "`session.add_all()` them"
            runs = "listeners and validators"
        else:
            change, runs = "change them", "listeners and validators"
        fix = f"{load} and {change}, or do the same work in the statement"
        report: dict[str, Any] = {
            "key": key,
            "subject": entity,
            "hint": f"{load} and {change} (the ORM then runs {runs}), or do "
            "the same work in the statement",
            "details": {"entity": entity, "statement": verb, "skipped": described},
            "statement": statement,
            "site": self.where(site),
            "verb": verb,
            "skipped": _join(shown),
            "fix": fix,
        }
        if state.execution_options.get("synchronize_session") == "evaluate":
            # The one strategy SQLAlchemy may still refuse (a function it cannot evaluate
            # in Python) before anything runs: reported once the statement reaches the
            # database. "auto" falls back to "fetch", whose statement runs as an ORM
            # execution of its own.
            self.pending = (execution, site, report)
        else:
            self.seen.add(key)
            self.report(site, **report)

    def _legacy_bulk(self, statement: Statement) -> None:
        """A write of ``bulk_save_objects()``/``bulk_update_mappings()``/
        ``bulk_insert_mappings()``, found by the Session method it runs under."""
        verb = statement.sql.lstrip()[:6].upper()
        site = statement.site
        if verb not in ("INSERT", "UPDATE") or site is None:
            return
        key = (site.filename, site.lineno, verb)
        if key in self.seen or len(self.seen) >= _MAX_SEEN:
            return
        frame: FrameType | None = sys._getframe(1)
        for _ in range(_BULK_DEPTH):
            if frame is None:
                return
            code = frame.f_code
            if code.co_name == _BULK_SAVE and code.co_filename.endswith(_SESSION_FILE):
                break
            frame = frame.f_back
        else:
            return
        assert frame is not None
        mapper = frame.f_locals.get("mapper")
        caller = frame.f_back
        if mapper is None or caller is None or not hasattr(mapper, "class_"):
            return
        self.seen.add(key)
        method = caller.f_code.co_name
        # Objects ran their validators when their attributes were set; mappings (plain
        # dicts) never do, whichever keys they hold.
        keys: frozenset[str] | None = frozenset() if method == "bulk_save_objects" else None
        skipped = skipped_by(mapper, verb, keys)
        if not skipped:
            return
        entity = mapper.class_.__name__
        described = [self._described(text, fn) for text, fn in skipped]
        shown = described[:_MAX_NAMED]
        if len(skipped) > _MAX_NAMED:
            shown.append(f"{len(skipped) - _MAX_NAMED} more")
        self.report(
            site,
            key=key,
            subject=entity,
            hint=_LEGACY_FIX,
            details={
                "entity": entity,
                "statement": verb,
                "method": method,
                "skipped": described,
            },
            statement=f"session.{method}()",
            site=self.where(site),
            verb=verb,
            skipped=_join(shown),
            fix=_LEGACY_FIX,
        )

    def _described(self, text: str, fn: Any) -> str:
        code = getattr(fn, "__code__", None)
        if code is None:
            return text
        where = CallSite(code.co_filename, code.co_firstlineno, code.co_name)
        return f"{text} ({self.where(where)})"


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
