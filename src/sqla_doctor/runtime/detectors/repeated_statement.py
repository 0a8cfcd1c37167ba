"""SQD252: the same statement executed again and again from one place (N+1 by hand)."""

from __future__ import annotations

import linecache
import re
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, persistence
from sqlalchemy.sql.elements import TextClause

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.batches import PLACEHOLDER_SQL, limit_of, rows_per_run
from sqla_doctor.runtime.callsite import (
    USER,
    CallSite,
    called_again_by_library,
    classify,
    not_from_the_program,
)
from sqla_doctor.runtime.core_writes import SELECT_SQL
from sqla_doctor.runtime.detector import (
    CORE,
    OTHER,
    SELECT,
    Detector,
    Flush,
    OrmExecution,
    Statement,
    a_or_an,
    calling_frame,
    inside_call,
    method_codes,
)
from sqla_doctor.runtime.detectors.session_leak import flask_sqlalchemy_name, is_awaited
from sqla_doctor.runtime.loading import (
    collection_fix,
    collection_queried,
    filtered_by,
    label,
    primary_key_attributes,
    snake_case,
)
from sqla_doctor.runtime.redact import shown_sql
from sqla_doctor.runtime.row_locks import LOCK_CLAUSE
from sqla_doctor.runtime.unit_of_work import SessionRecord, process

MAX_ENTRIES = 2_000
MAX_PARAMETER_SETS = 256
# Threads with an ORM execution on its way to the cursor, at most: one per thread, so
# only threads that ended since their last statement are ever dropped.
MAX_PENDING = 64
# Statements the session or the dialect issues on their own, not the user's queries.
_NOT_QUERIES = ("SAVEPOINT", "RELEASE", "ROLLBACK", "BEGIN", "COMMIT", "PRAGMA", "SET ", "SHOW ")
# The system catalogs that reflection and create_all() read once per table (SQLite's
# schema table, PostgreSQL's pg_catalog and the standard information_schema): the
# library's loop over the tables, not a query the program can batch.
_CATALOG = re.compile(
    r"\bFROM\s+(?:\"?main\"?\.)?(?:sqlite_(?:temp_)?(?:master|schema)\b|pg_catalog\.|"
    r"information_schema\.)",
    re.IGNORECASE,
)
# A page of a keyset walk: ``WHERE orders.id > ? ORDER BY orders.id LIMIT ?``, each page
# starting after the last key of the one before (fastcrud's get_multi_by_cursor(), the
# windowed range query that walks a large table in batches). A WHERE with an equality to
# a bound value is left counted: ``user_id = ? AND created < ?`` is a page per user.
_IDENTIFIER = r"(?:[\w\"`\[\]]+\.)?[\"`\[]?\w+[\"`\]]?"
_KEYSET = re.compile(
    rf"\bWHERE\b(?P<where>.*?)\bORDER\s+BY\s+(?P<key>{_IDENTIFIER})[^()]*?"
    r"\b(?:LIMIT|FETCH\s+(?:FIRST|NEXT))\b",
    re.IGNORECASE | re.DOTALL,
)
_EQUALS_VALUE = re.compile(rf"(?<![<>!=])=\s*{PLACEHOLDER_SQL}")
_FROM = re.compile(r"\bFROM\s+([\w.\"`\[\]]+)", re.IGNORECASE)
_TARGET = re.compile(r"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+([\w.\"`\[\]]+)", re.IGNORECASE)

# An INSERT that updates or skips the row when it exists: PostgreSQL's and SQLite's ON
# CONFLICT, MySQL's ON DUPLICATE KEY UPDATE.
_UPSERT = re.compile(r"\bON\s+(?:CONFLICT\b|DUPLICATE\s+KEY\s+UPDATE\b)", re.IGNORECASE)
# with_for_update()'s arguments for each lock of row_locks.LOCK_CLAUSE.
_LOCK_ARGUMENTS = {
    "UPDATE": [],
    "NO KEY UPDATE": ["key_share=True"],
    "SHARE": ["read=True"],
    "KEY SHARE": ["read=True", "key_share=True"],
}
# A SELECT of one aggregate (``collection.count()`` of a dynamic relationship): named
# apart from the rows' SELECT of the same table, by the function alone (no literal).
_AGGREGATE = re.compile(r"^\s*SELECT\s+(count|sum|avg|min|max)\s*\(", re.IGNORECASE)


def shape(sql: str) -> str:
    """A short name for a statement: ``SELECT … FROM users``, ``SELECT count(…) … FROM
    users``, ``UPDATE users``."""
    target = _TARGET.match(sql)
    if target:
        return (
            " ".join(target.group(0).split())
            .upper()
            .replace(target.group(1).upper(), target.group(1))
        )
    words = sql.split(None, 1)
    verb = words[0].upper() if words else "statement"
    aggregate = _AGGREGATE.match(sql)
    if aggregate:
        verb = f"SELECT {aggregate.group(1).lower()}(…)"
    return f"{verb} … FROM {source}" if (source := _outer_source(sql)) else verb


def _outer_source(sql: str) -> str | None:
    """The table the statement's own FROM names, not a scalar subquery's in its columns
    (a ``column_property`` count: ``SELECT author.id, (SELECT count(book.id) FROM book
    ...) AS anon_1 FROM author``)."""
    first = None
    for found in _FROM.finditer(sql):
        before = sql[: found.start()]
        if before.count("(") == before.count(")"):
            return found.group(1)
        first = first or found.group(1)
    return first


# Values written into the SQL itself (an f-string, literal_execute, an expanded IN list):
# one statement shape for the loop, whatever the values.
_LITERAL = re.compile(r"'(?:[^']|'')*'|(?<![\w$.:%])-?\d+(?:\.\d+)?(?![\w.])")
_PLACEHOLDER = r"(?:\?|%s|%\(\w+\)s|\$\d+|:\w+)"
_LIST = re.compile(rf"\(\s*{_PLACEHOLDER}(?:\s*,\s*{_PLACEHOLDER})+\s*\)")
_SHAPES: dict[str, str] = {}
MAX_SHAPES = 4_096


def is_keyset_page(sql: str) -> bool:
    """Whether ``sql`` fetches the page after a key: it compares its first ORDER BY
    column with a bound value by ``<`` or ``>`` and has a LIMIT, and compares no column
    with a bound value by ``=``. Asked once per statement and place."""
    found = _KEYSET.search(sql)
    if found is None:
        return False
    where = found.group("where")
    after = re.compile(rf"{re.escape(found.group('key'))}\s*[<>]=?\s*{PLACEHOLDER_SQL}")
    return after.search(where) is not None and _EQUALS_VALUE.search(where) is None


def grouping_sql(sql: str) -> str:
    """``sql`` with literal values and placeholder lists masked: what a loop repeats."""
    masked = _SHAPES.get(sql)
    if masked is None:
        masked = _LIST.sub("(?)", _LITERAL.sub("?", sql))
        if len(_SHAPES) >= MAX_SHAPES:
            _SHAPES.clear()
        _SHAPES[sql] = masked
    return masked


def _parameter_hash(parameters: Any) -> int | None:
    try:
        if isinstance(parameters, dict):
            return hash(tuple(parameters.values()))
        return hash(parameters if isinstance(parameters, tuple) else tuple(parameters))
    except TypeError:
        return None


# Writes repeated per item: the fix is one executemany (or one statement), not a query
# that fetches. Through a Session, an ORM-enabled UPDATE with its own WHERE or any ORM
# DELETE refuses a list of parameter sets: the bulk forms by primary key are named.
_WRITE_FIX = {
    ("INSERT", True): (
        "collect the rows and insert them in one executemany: "
        "`session.execute(insert(Model), [{...}, {...}])` (a text() statement: "
        "`session.execute(stmt, rows)`), instead of one INSERT per iteration"
    ),
    ("INSERT", False): (
        "collect the rows and insert them in one executemany: "
        "`connection.execute(stmt, [{...}, {...}])` with a list of parameter dicts, "
        "instead of one INSERT per iteration"
    ),
    ("UPDATE", True): (
        "collect the changes and run one ORM bulk UPDATE by primary key: "
        '`session.execute(update(Model), [{"id": 1, "name": ...}, ...])` (a text() '
        "statement: `session.execute(stmt, [{...}, {...}])`), instead of one UPDATE per "
        "iteration"
    ),
    ("UPDATE", False): (
        "collect the changes and run one executemany: "
        "`connection.execute(stmt, [{...}, {...}])` with a list of parameter dicts, "
        "instead of one UPDATE per iteration"
    ),
    ("DELETE", True): (
        "delete the rows in one statement: `delete(Model).where(Model.id.in_(ids))`, "
        "instead of one DELETE per iteration"
    ),
    ("DELETE", False): (
        "delete the rows in one statement (`.where(table.c.id.in_(ids))`) or one "
        "executemany (`connection.execute(stmt, [{...}, {...}])` with a list of "
        "parameter dicts), instead of one DELETE per iteration"
    ),
}


# merge() (and 2.1's merge_all(), which merges one object at a time) SELECTs each
# object the session does not hold by its primary key.
_MERGE = method_codes(Session, "merge", "merge_all")

# get() (and get_one()) SELECTs by primary key each object the session does not hold.
_GET = method_codes(Session, "get", "get_one")

# The legacy bulk methods write through the unit of work, not session.execute(): their
# statements reach the doctor as a Connection's, and each call takes a list already.
_BULK = method_codes(Session, "bulk_insert_mappings", "bulk_save_objects", "bulk_update_mappings")

# The flush's per-row writes (2.1 names them _save_obj, 2.0 save_obj): a mapper event
# listener (after_update, before_insert...) they call runs once per row flushed.
_FLUSH_ROWS = frozenset(
    code
    for name in ("save_obj", "delete_obj", "post_update")
    for name in (name, f"_{name}")
    if (code := getattr(getattr(persistence, name, None), "__code__", None)) is not None
)


def _values(key: str) -> str:
    """What the fix calls the values looked up by ``key``: ``ids`` for an id column
    (``id``, ``customer_id``), the column's plural otherwise (``emails``, ``skus``)."""
    if key.lower() == "id" or key.endswith(("_id", "Id")):
        return "ids"
    if key.endswith(("s", "x", "ch", "sh")):
        return f"{key}es"
    if key.endswith("y") and key[-2:-1] not in ("a", "e", "i", "o", "u"):
        return f"{key[:-1]}ies"
    return f"{key}s"


def _by_primary_key(name: str, keys: Sequence[str]) -> str:
    """The query for every object of ``name`` whose primary key is among the ones looked
    up: ``ids`` for one key column, ``keys`` (tuples) matched with tuple_(...).in_()."""
    if len(keys) == 1:
        where = f"{name}.{keys[0]}.in_({_values(keys[0])})"
    else:
        where = "tuple_(" + ", ".join(f"{name}.{key}" for key in keys) + ").in_(keys)"
    return f"session.scalars(select({name}).where({where}))"


_GET_CALL = re.compile(r"\.(get_or_404|get_one|get)\s*\(")


def _get_call(site: CallSite | None) -> str:
    """The get() the line at ``site`` calls, as the message names it: ``session.get()``,
    ``session.get_one()``, Flask-SQLAlchemy's ``db.get_or_404()`` (read when reporting)."""
    line = linecache.getline(site.filename, site.lineno) if site is not None else ""
    called = _GET_CALL.search(line)
    method = called.group(1) if called is not None else "get"
    if method == "get_or_404":
        return f"{flask_sqlalchemy_name(site) or 'db'}.get_or_404()"
    return f"session.{method}()"


def _get_fix(mapper: Any, site: CallSite | None) -> str | None:
    """What to do instead of session.get() with a SELECT per id (None: no primary key to
    name). A composite key is looked up by its tuple, matched with tuple_(...).in_()."""
    keys = primary_key_attributes(mapper)
    if not keys:
        return None
    name = mapper.class_.__name__
    one = snake_case(name)
    if len(keys) == 1:
        index, lookup = keys[0], f"{one}.{keys[0]}"
    else:
        index = "key"
        lookup = "(" + ", ".join(f"{one}.{key}" for key in keys) + ")"
    query = _by_primary_key(name, keys)
    if site is not None and is_awaited(site):
        query = f"(await {query})"
    return (
        f"{_get_call(site)} runs a SELECT for each {name} the session does not hold: load them "
        f"in one query, `by_{index} = {{{lookup}: {one} for {one} in {query}}}`, and look "
        "each one up there (while that result is kept, session.get() finds them in the "
        "session without SQL)"
    )


def _merge_fix(mapper: Any) -> str:
    """What to do instead of merge() loading each object with a SELECT of its own."""
    name = mapper.class_.__name__
    keys = primary_key_attributes(mapper)
    key = keys[0] if len(keys) == 1 else None
    where = f".where({name}.{key}.in_({_values(key)}))" if key is not None else ".where(...)"
    row = f'{{"{key}": ..., ...}}' if key is not None else "{...}"
    # The identity map holds objects weakly: a result nobody keeps is gone before the
    # merges look for it. load=False copies without history: the session writes nothing.
    return (
        f"session.merge() loads each {name} the session does not hold with a SELECT of its "
        f"own: load them first in one query and keep the result, `existing = "
        f"session.scalars(select({name}){where}).all()`, so that each merge() of an "
        "existing row finds its object in the session (new objects: session.add() them); "
        f"for rows that all exist, one ORM bulk UPDATE writes the "
        f"values, `session.execute(update({name}), [{row}, ...])`; merge(obj, load=False) "
        "skips the SELECT only for detached objects that still match their rows (from a "
        "cache), and writes none of their values"
    )


def _filtered_fix(
    mapper: Any, key: str, relationship: Any, more: bool, function: str | None
) -> str:
    """One query for every parent's rows (or aggregate), by the attribute the repeated
    SELECT compares (``Order.customer_id``), instead of one query per parent; ``more``:
    it has other conditions, which stay."""
    name = mapper.class_.__name__
    column = f"{name}.{key}"
    values = _values(key)
    others = ", ..." if more else ""
    if function is not None:
        call = "func.count()" if function == "count" else f"func.{function}(...)"
        return (
            f"compute the {function}() for all of them in one query grouped by {key}: "
            f"`select({column}, {call}).where({column}.in_({values}){others}).group_by({column})`"
        )
    # By primary key: one row each, looked up; by a foreign key: a parent's rows.
    then = (
        f"look each one up by {key}"
        if key in primary_key_attributes(mapper)
        else f"group them by {key}"
    )
    fix = (
        f"fetch the {name} rows for all of them in one query instead of one per iteration, "
        f"`select({name}).where({column}.in_({values}){others})`, and {then}"
    )
    if relationship is not None and not more:  # its collection holds every row
        parents = relationship.parent.class_.__name__
        fix += (
            f"; or add .options(selectinload({label(relationship)})) to the query that loads "
            f"the {parents} objects and read {snake_case(parents)}.{relationship.key}"
        )
    return fix


# ``WHERE customer_id = :id`` (``?``, ``%(id)s``, ``$1``): the column a Core query per
# item compares with its parameter.
_COMPARED = re.compile(
    r"\bWHERE\s+(?:[\w\"`\[\]]+\.)?[\"`\[]?(\w+)[\"`\]]?\s*=\s*(?::\w|\?|%\(|%s|\$\d)",
    re.IGNORECASE,
)


def _core_fix(sql: str) -> str:
    """One query instead of one per item, for SQL run through a Connection (text() or
    Core): no entity, so no loader option."""
    compared = _COMPARED.search(sql)
    column = compared.group(1) if compared is not None else "id"
    values = _values(column)
    return (
        "fetch the rows in one query instead of one per iteration: JOIN them into the query "
        f"the loop reads, or ask for all of them at once, `WHERE {column} IN :{values}` with "
        f'`text(...).bindparams(bindparam("{values}", expanding=True))` '
        f"(Core: `table.c.{column}.in_({values})`)"
    )


def _one_query(entry: _Entry) -> str | None:
    """The one query that fetches what a query per item fetched, when its mapper and
    the attribute it selects by are known (session.get(), a WHERE on one column)."""
    if entry.fetched is not None:
        keys = primary_key_attributes(entry.fetched)
        return _by_primary_key(entry.fetched.class_.__name__, keys) if keys else None
    if entry.filtered is not None:
        mapper, key = entry.filtered[0], entry.filtered[1]
        name = mapper.class_.__name__
        return f"session.scalars(select({name}).where({name}.{key}.in_({_values(key)})))"
    return None


def _fix_for_write(sql: str, orm: bool) -> str | None:
    """The fix for a write statement run once per item (None for a query)."""
    target = _TARGET.match(sql)
    if target is None:
        return None
    verb = target.group(0).split(None, 1)[0].upper()
    if verb == "INSERT" and _UPSERT.search(sql):
        # insert(Model) with the rows would drop the ON CONFLICT clause: the upsert
        # itself takes the list (an ORM bulk INSERT keeps it too).
        run = "session.execute(stmt, rows)" if orm else "connection.execute(stmt, rows)"
        return (
            "build the upsert once, its new values taken from `stmt.excluded` (MySQL: "
            f"`stmt.inserted`), and run it for every row in one executemany: `{run}` with "
            "a list of parameter dicts, instead of one INSERT per iteration (insert(Model) "
            "alone would drop its ON CONFLICT clause)"
        )
    return _WRITE_FIX[verb, orm]


# What 2.0's session.execute() form of each legacy bulk method is.
_BULK_EXECUTE = {
    "bulk_insert_mappings": "session.execute(insert(Model), rows)",
    "bulk_update_mappings": "session.execute(update(Model), rows)",
}


def _bulk_fix(method: str, model: str) -> str:
    """For a Session bulk method called once per row: one call with every row."""
    call = (
        "session.bulk_save_objects(objects)"
        if method == "bulk_save_objects"
        else f"session.{method}({model}, rows)"
    )
    execute = _BULK_EXECUTE.get(method)
    also = f" (or `{execute.replace('Model', model)}`)" if execute is not None else ""
    return (
        f"{method}() takes a list: collect the rows and make one call, `{call}`{also}, "
        f"instead of one {method}() per iteration"
    )


def _lock_note(sql: str) -> str:
    """For a repeated SELECT that locks its rows (``FOR UPDATE``): how the one query that
    replaces it keeps the lock; '' for one that locks nothing."""
    lock = LOCK_CLAUSE.search(sql)
    if lock is None:
        return ""
    arguments = list(_LOCK_ARGUMENTS[" ".join(lock.group(1).upper().split())])
    if lock.group(2):
        nowait = "NOWAIT" in lock.group(2).upper()
        arguments.append("nowait=True" if nowait else "skip_locked=True")
    option = f".with_for_update({', '.join(arguments)})"
    clause = " ".join(lock.group(0).split())
    return (
        f"; it locks the rows it reads ({clause}): add {option} to that one query so that "
        "it still does"
    )


class _PerTransaction:
    """How often something ran in the transaction of its latest run (weakly: a connection
    the program leaks must stay collectable), and the most in any one transaction."""

    __slots__ = ("in_transaction", "most_in_transaction", "transaction")

    def __init__(self) -> None:
        self.transaction: weakref.ref[Any] | None = None
        self.in_transaction = self.most_in_transaction = 0

    def ran_in(self, transaction: Any) -> None:
        """One more run, in ``transaction`` (None: not known, counted in the latest)."""
        if transaction is not None:
            known = self.transaction
            if known is None or known() is not transaction:
                self.transaction, self.in_transaction = weakref.ref(transaction), 0
        self.in_transaction += 1
        if self.in_transaction > self.most_in_transaction:
            self.most_in_transaction = self.in_transaction


class _Entry(_PerTransaction):
    __slots__ = (
        "batch",
        "bulk",
        "by_library",
        "collection",
        "count",
        "example",
        "fetched",
        "filtered",
        "hook",
        "merged",
        "orm",
        "parameter_sets",
        "session",
        "sessions",
        "site",
        "sql",
        "textual",
    )

    def __init__(self, statement: Statement, example: Any) -> None:
        super().__init__()
        self.sql = statement.sql
        self.site: CallSite | None = statement.site
        # Run through a Session (session.execute), not a Connection.
        self.orm = statement.orm is not None
        # A text() statement, through a Session or not: no entity, no loader option.
        self.textual = False
        self.count = 0
        self.parameter_sets: set[int] = set()
        self.example = example
        # The write_only or dynamic relationship whose collection it queries, if any.
        self.collection: Any = None
        # The mapper whose objects session.merge() loads with it, if merge() runs it.
        self.merged: Any = None
        # The mapper whose objects session.get() loads with it, if get() runs it.
        self.fetched: Any = None
        # Run by a mapper event listener the flush calls once per row.
        self.hook = False
        # The legacy bulk method of the Session that ran it (bulk_insert_mappings...),
        # and the name of the class it wrote.
        self.bulk: tuple[str, str] | None = None
        # Its mapper, the attribute its WHERE compares with a bound value, and the
        # one-to-many relationship whose foreign key that is (see loading.filtered_by).
        self.filtered: tuple[Any, str, Any, bool] | None = None
        # The session of its latest run (its record, weakly: it dies with the session),
        # and how many sessions it ran in one after the other: a helper that opens a
        # session per call runs it in a new one each time.
        self.session: weakref.ref[SessionRecord] | None = None
        self.sessions = 0
        # Run again by installed code calling the program's function anew (a thread
        # pool's worker taking the next job), with no loop of the program on the stack.
        self.by_library = False
        # The rows its second run was written to take on (an IN list, a page's LIMIT).
        self.batch = 0


class _FlushEntry(_PerTransaction):
    """session.flush() called from one place, each time writing a new object or two."""

    __slots__ = ("count", "entities", "rows", "site")

    def __init__(self, site: CallSite) -> None:
        super().__init__()
        self.site = site
        self.count = self.rows = 0
        # What the flushes inserted, by entity name (a few).
        self.entities: dict[str, None] = {}


# A flush per new object: at most this many objects inserted per flush, on average.
_ROWS_PER_FLUSH = 2
# A statement written to take on this many rows a run (ids in chunks, a page of an
# export) is one run per batch, the fix for a list too big for one query, not an N+1.
_BATCH_ROWS = 50


class RepeatedStatement(Detector):
    """
    ## What it does
    Checks for the same SQL statement executed many times from the same place in one
    unit of work: `session.get()`, `session.execute(select(...))` or a `text()` query
    inside a loop.

    Statements are keyed on their SQL and on the user's line together with its caller,
    so one helper called once from several places does not count as a loop. Values
    written into the SQL itself (an f-string, `literal_execute`, IN lists of different
    lengths) are masked in the key, so such a loop is one statement too. Lazy loads
    and attribute reloads are left to SQD251 and SQD253, which can name the relationship.
    Reads of the system catalogs (`sqlite_master`, `pg_catalog`, `information_schema`)
    are reflection's and `create_all()`'s own loop over the tables, and are not counted.
    A statement repeated with identical parameters counts only within one database
    transaction: a worker polling its queue once per transaction may see new rows each
    time. Nor does a statement count when installed code runs it again by calling the
    program's function anew, with no loop of the program on the stack: a thread pool's
    worker taking its next job on the thread's `scoped_session`, never removed between
    jobs (SQD151 says so), runs each job's one `session.get()` in the same session. The
    stack is looked at too when a statement's second run is in another session: a view
    whose helper opens a session of its own on each call (sqladmin's `_run_query()`) runs
    it again at the next request, not in a loop.
    Nor does a keyset walk, each page fetched after the last key of the one before
    (`.where(Order.id > last).order_by(Order.id).limit(1000)` in a `while` loop, the way
    to walk a large table in batches or a cursor-paginated API): a statement that
    compares its first ORDER BY column with a bound value by `<` or `>`, has a LIMIT
    above one row, and compares no column with a bound value by `=` (a page of each
    parent's rows is a query per parent, and counted; a walk one row per query too).
    Nor does a statement written to take on 50 rows or more a run, a batch rather than
    an item: ids looked up in chunks (`.where(Sku.id.in_(chunk))`, an IN list of 50
    values or more), or the pages of an export by OFFSET, a LIMIT of 50 or more. A
    LIMIT alone is a cap on each item's rows (the latest posts of each user), and is
    still counted.

    `track()` reports at its end, with how often the statement ran. A session outside
    one (`install()`, `sqla-doctor run`) reports at the end of each of its transactions,
    where a loop that commits every few items is not over yet: the message says "ran at
    least 10×".

    ## Why is this bad?
    It is the N+1 problem written by hand: one round trip per item where one query would
    fetch them all. With identical parameters it is the same result fetched again.

    ## Example
    ```python
    for user_id in user_ids:
        user = session.get(User, user_id)  # one SELECT per id
        print(user.name)
    ```

    Use instead:
    ```python
    users = session.scalars(select(User).where(User.id.in_(user_ids))).all()
    for user in users:
        print(user.name)
    ```

    `session.get()` in a loop is told to load the objects in one query into a dict by
    primary key and look each one up there: while that result is kept, `session.get()`
    finds them in the session and runs no SQL. A composite primary key is looked up by its
    tuple: `select(Stock).where(tuple_(Stock.warehouse, Stock.sku).in_(keys))`.

    A helper that opens a session of its own on each call, called once per item by a
    loop, runs its query once in each session:
    ```python
    def name_of(user_id):
        with Session(engine) as session:
            return session.get(User, user_id).name

    names = [name_of(user_id) for user_id in user_ids]  # a session and a SELECT per id
    ```
    Outside `track()` each session is a unit of work of its own (a server's requests are
    not one loop), so the sessions a helper opens are counted together only while the
    frame that calls it, the loop, stays the same running frame, and only for queries:
    not once the loop's sessions write (committing each item apart is often on purpose),
    nor across a pause of a second or more between one session and the next (a consumer
    waiting for its next message). The finding names the helper and the loop's line, and
    tells to load the items in one query in one session (a helper that takes the list),
    or at least to open one session around the loop and pass it in. The frame is marked
    through its `f_trace`, never kept; under a debugger or a tracer that sets a trace
    function, it is not marked and such loops go unseen outside `track()`.

    A SELECT of one aggregate (`select(func.count())...`) is named by it, `SELECT
    count(…) … FROM audit`, apart from the rows' SELECT of the same table, and told to
    compute it for all of them in one query with `.group_by()`.

    A query run once per parent (`select(Order).where(Order.customer_id == customer.id)`,
    `with_parent(customer, Customer.orders)`) is told the one query by the foreign key
    its WHERE compares, `select(Order).where(Order.customer_id.in_(ids))` (grouped by it
    for an aggregate), and, when that key is a one-to-many relationship's and the query
    filters on nothing else, the loader option that fills it:
    `.options(selectinload(Customer.orders))`. A query a Core `Connection` runs per item
    (`conn.execute(text("SELECT name FROM customer WHERE id = :id"), ...)`) has no
    entity to load: it is told a JOIN, or one `WHERE id IN :ids` with an expanding
    `bindparam()`.

    The collection of a `lazy="write_only"` or `lazy="dynamic"` relationship queried
    once per parent (`session.scalars(ledger.entries.select())`, `ledger.changes.all()`
    or `.count()`) is named, and told the one query for the children of all the parents,
    since no loader option loads such a relationship (`selectinload()` raises "does not
    support object population"):
    ```python
    postings = session.scalars(select(Posting).where(Posting.ledger_id.in_(ids))).all()
    counts = dict(session.execute(
        select(Change.ledger_id, func.count())
        .where(Change.ledger_id.in_(ids)).group_by(Change.ledger_id)
    ).all())
    ```
    Through a secondary table, the query joins along the relationship:
    `select(Ledger.id, Watcher).join(Ledger.watchers).where(Ledger.id.in_(ids))`.

    `session.merge(obj)` in a loop SELECTs each object the session does not hold by its
    primary key. It is told to load the existing rows first in one query and keep the
    result (the identity map holds objects weakly), so that each `merge()` finds its
    object; or, for rows that all exist, one ORM bulk UPDATE by primary key. (`merge(obj,
    load=False)` skips the SELECT only for detached objects known to match their rows, and
    writes none of their values.)
    ```python
    existing = session.scalars(select(User).where(User.id.in_(ids))).all()
    for user in incoming:
        session.merge(user)
    ```

    An INSERT, UPDATE or DELETE run once per item gets a write's fix: one executemany
    with a list of parameter dicts. An upsert (`ON CONFLICT`, `ON DUPLICATE KEY UPDATE`)
    is told to run itself that way, built once with `stmt.excluded`, since `insert(Model)`
    would drop the clause; a repeated `SELECT ... FOR UPDATE` (`session.get(...,
    with_for_update=True)` per id) is told the `.with_for_update(...)` that keeps the one
    query locking its rows.
    ```python
    for invoice in invoices:
        connection.execute(text("UPDATE invoice SET pdf = :p WHERE id = :i"),
                           {"p": render(invoice), "i": invoice.id})
    ```

    Use instead:
    ```python
    connection.execute(text("UPDATE invoice SET pdf = :p WHERE id = :i"),
                       [{"p": render(invoice), "i": invoice.id} for invoice in invoices])
    # through a Session, an ORM bulk UPDATE by primary key:
    session.execute(update(Invoice), [{"id": i.id, "pdf": render(i)} for i in invoices])
    ```

    The statements a flush writes are not counted (they write what the program added),
    but `session.flush()` called from one line once per new object, in one transaction,
    is: each flush is a unit-of-work pass and an INSERT round trip of its own, often only
    to read the new object's key.
    ```python
    for email in emails:
        contact = Contact(email=email)
        session.add(contact)
        session.flush()  # one INSERT per contact
        ids.append(contact.id)
    ```

    Use instead:
    ```python
    contacts = [Contact(email=email) for email in emails]
    session.add_all(contacts)
    session.flush()  # every key is set; PostgreSQL gets the rows in batched INSERTs
    ids = [contact.id for contact in contacts]
    ```
    An object that needs another's new key (a child's foreign key) gets it through a
    relationship, `child.parent = parent`, which one flush fills in order. Flushes by a
    commit, inside a SAVEPOINT (`with session.begin_nested():` per row, to skip the rows
    that fail) and autoflushes are not counted, nor flushes that only change loaded
    objects.

    A SELECT that a mapper event listener (`after_update`, `before_insert`...) runs
    through its connection is the program's, not the flush's: the flush calls the
    listener once per row, so a query there runs once per object flushed, and is told to
    use the values `target` holds or to query for every object at once in a
    `before_flush`/`after_flush` session listener.

    ## Options
    - `tool.sqla-doctor.runtime.repeated-statement-threshold`: executions from one place
      before it is reported (default 5).
    - `tool.sqla-doctor.runtime.show-parameters`: include one example parameter set.

    ## References
    - [ORM querying guide: SELECT statements](https://docs.sqlalchemy.org/en/20/orm/queryguide/select.html)
    - [ColumnOperators.in_()](https://docs.sqlalchemy.org/en/20/core/sqlelement.html#sqlalchemy.sql.expression.ColumnOperators.in_)
    """

    code = "SQD252"
    name = "repeated-statement"
    pitfalls = ("P01",)
    severity = Severity.WARNING
    spans_nested_units = True
    # Lazy and column loads are reported, with the relationship named, by SQD251/SQD253;
    # selectin batches are the fix, not the problem; flushes write what the user added.
    execution_kinds = frozenset({SELECT, OTHER, CORE})
    message = "{shape} ran {count}× from {site} {variants} — {fix}"

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        self.entries: dict[tuple[Any, ...], _Entry | None] = {}
        # Per thread, the ORM execution whose statement reaches the cursor next, with its
        # statement and mapper: read only when that statement repeats for the first time,
        # and dropped at the thread's next cursor event (a relationship's lazy clause keeps
        # its parent alive). Per thread: workers sharing one session run their executions
        # between each other's do_orm_execute and cursor events.
        self.pending: dict[int, tuple[OrmExecution, Any, Any]] = {}
        self.flushes: dict[tuple[Any, ...], _FlushEntry] = {}

    def on_after_flush(self, flush: Flush) -> None:
        """An explicit session.flush() that inserted: counted per place and transaction.
        A commit's flush, a SAVEPOINT's (a row per savepoint, to skip the failing ones)
        and an autoflush (SQD153's) are not a flush per row the program asked for."""
        record = flush.record
        site = flush.site
        if (
            flush.autoflush_of is not None
            or record.committing
            or record.nested_marks
            or not flush.inserted
            or site is None
        ):
            return
        key = (site.filename, site.lineno, site.caller)
        entry = self.flushes.get(key)
        if entry is None:
            if len(self.flushes) >= MAX_ENTRIES:
                return
            entry = self.flushes[key] = _FlushEntry(site)
        entry.count += 1
        entry.rows += sum(flush.inserted.values())
        for name in flush.inserted:
            if len(entry.entities) < 4:
                entry.entities[name] = None
        entry.ran_in(flush.session.get_transaction())

    def on_do_orm_execute(self, execution: OrmExecution) -> None:
        state = execution.state
        if state is not None:
            pending = self.pending
            if len(pending) >= MAX_PENDING:
                pending.clear()
            pending[threading.get_ident()] = (execution, state.statement, state.bind_mapper)

    def on_before_cursor_execute(self, statement: Statement) -> None:
        pending = self.pending.pop(threading.get_ident(), None) if self.pending else None
        site = statement.site
        if statement.executemany or site is None:
            return
        key = (grouping_sql(statement.sql), site.filename, site.lineno, site.caller)
        entry = self.entries.get(key)
        if entry is None:
            if key in self.entries or len(self.entries) >= MAX_ENTRIES:
                return  # a statement that is not a query, or no room left
            sql = statement.sql
            if (
                sql.lstrip()[:9].upper().startswith(_NOT_QUERIES)
                or _CATALOG.search(sql)
                or (is_keyset_page(sql) and limit_of(sql, statement.parameters) != 1)
            ):
                self.entries[key] = None
                return
            example = statement.parameters if self.config.show_parameters else None
            entry = self.entries[key] = _Entry(statement, example)
        entry.count += 1
        # The same query with the same values in another transaction (a worker polling
        # its queue, committing between runs) may well return new rows. A session's
        # commit ends its connection's transaction too, so this covers both.
        connection = statement.connection
        entry.ran_in(connection.get_transaction() if connection is not None else None)
        if statement.orm is not None:
            record = process.records.get(statement.orm.session_key)
            if record is not None:
                known = entry.session
                if known is None or known() is not record:
                    entry.session, entry.sessions = weakref.ref(record), entry.sessions + 1
        if entry.count == 2:
            if entry.sessions > 1:
                # A second run in another session: a request's helper opening a session
                # of its own (sqladmin's _run_query()), run again by the next request;
                # loops inside this run's session are not what ran it again.
                held = entry.session() if entry.session is not None else None
                entry.by_library = called_again_by_library(site, held.opened if held else ())
            elif not_from_the_program(site):
                # Run again in the same session (a before_flush hook's loop): any loop of
                # the program counts.
                entry.by_library = called_again_by_library(site)
            entry.batch = rows_per_run(statement.sql, statement.parameters)
        if entry.count == 2 and statement.orm is None:
            entry.hook = inside_call(_FLUSH_ROWS)
            bulk = calling_frame(_BULK, skip=1)
            if bulk is not None:
                # Its first argument: the mapped class (or a Mapper) the rows are for.
                mapped = bulk.f_locals.get("mapper")
                mapped = getattr(mapped, "class_", mapped)
                entry.bulk = (bulk.f_code.co_name, getattr(mapped, "__name__", "Model"))
        if entry.count == 2 and pending is not None and pending[0] is statement.orm:
            # Repeated: what runs it, asked once (a statement run once never is).
            entry.textual = isinstance(pending[1], TextClause)
            mapper = pending[2]
            if mapper is not None:
                entry.collection = collection_queried(pending[1], mapper)
                if inside_call(_MERGE):  # merge() calls get(): asked first
                    entry.merged = mapper
                elif inside_call(_GET):
                    entry.fetched = mapper
                elif entry.collection is None:
                    found = filtered_by(pending[1], mapper)
                    if found is not None:
                        entry.filtered = (mapper, *found)
        if len(entry.parameter_sets) < MAX_PARAMETER_SETS:
            marker = _parameter_hash(statement.parameters)
            if marker is not None:
                if statement.sql != entry.sql:
                    marker = hash((marker, statement.sql))  # other values in the SQL text
                entry.parameter_sets.add(marker)

    def checkpoint(self) -> None:
        threshold = max(self.config.repeated_statement_threshold, 2)
        for key, entry in self.entries.items():
            if (
                entry is None
                or entry.count < threshold
                # A mapper listener's runs in one transaction are the flush calling it
                # per row, whoever called the function that flushed.
                or (
                    entry.by_library and not (entry.hook and entry.most_in_transaction >= threshold)
                )
                or entry.batch >= _BATCH_ROWS
                or self.reported(key)
            ):
                continue
            if self.uow.across_sessions and (
                entry.sessions < threshold or _TARGET.match(entry.sql) is not None
            ):
                continue  # repeated within a session: that session's unit says so
            if len(entry.parameter_sets) == 1 and entry.most_in_transaction < threshold:
                continue  # polled once per transaction: each run may see other rows
            self._report(key, entry)
        for flush_key, flushes in self.flushes.items():
            if (
                flushes.most_in_transaction >= threshold
                and flushes.rows <= _ROWS_PER_FLUSH * flushes.count
                and not self.uow.across_sessions
                and not self.reported(("flush", flush_key))
            ):
                self._report_flushes(flush_key, flushes)

    def _report_flushes(self, key: Any, entry: _FlushEntry) -> None:
        names = list(entry.entities)
        one = snake_case(names[0]) if len(names) == 1 else "obj"
        each = " or ".join(a_or_an(name) for name in names)
        objects = f"the {names[0]} objects" if len(names) == 1 else "the new objects"
        fix = (
            f"add {objects} with session.add_all() and flush once, after the loop: that "
            f"flush sets every primary key ({one}.id can be read then) and can send the "
            "rows in one batched INSERT (insertmanyvalues) instead of a round trip and a "
            "unit-of-work pass per row; an object that needs another's new key gets it "
            "through a relationship (`child.parent = parent`), which the one flush fills "
            "in order (a flush per row to catch each row's IntegrityError belongs in a "
            "SAVEPOINT per row, `with session.begin_nested():`, which is not counted)"
        )
        self.report(
            entry.site,
            key=("flush", key),
            subject="session.flush()",
            hint=fix,
            details={"count": entry.count, "rows": entry.rows},
            shape="session.flush()",
            count=self.count_so_far(entry.count),
            site=self.where(entry.site),
            variants=f"in one transaction, inserting {each} each time",
            fix=fix,
        )

    def _report(self, key: Any, entry: _Entry) -> None:
        distinct = len(entry.parameter_sets)
        statement_shape = shape(entry.sql)
        write_fix = _fix_for_write(entry.sql, entry.orm)
        if write_fix is not None and entry.bulk is not None:
            write_fix = _bulk_fix(*entry.bulk)
        if distinct == 1:
            variants = "with identical parameters"
            if write_fix is not None:
                fix = "the same write with the same values: run it once, outside the loop"
            else:
                fix = "run it once and reuse the result"
        else:
            more = "+" if distinct >= MAX_PARAMETER_SETS else ""
            variants = f"with {distinct}{more} different parameter sets"
            aggregate = _AGGREGATE.match(entry.sql)
            if write_fix is not None:
                fix = write_fix
            elif entry.hook and entry.site is not None:
                fix = (
                    f"{entry.site.function}() is a mapper event listener the flush calls once "
                    "per row: use the values the row's object holds (`target`), or query "
                    "for every flushed object at once in an after_flush or before_flush "
                    "session listener (session.new, session.dirty)"
                )
            elif (
                entry.sessions >= max(self.config.repeated_statement_threshold, 2)
                and (per_call := self._session_per_call_fix(entry)) is not None
            ):
                fix = per_call
            elif entry.merged is not None:
                fix = _merge_fix(entry.merged)
            elif entry.fetched is not None and (got := _get_fix(entry.fetched, entry.site)):
                fix = got
            elif entry.collection is not None:
                function = aggregate.group(1).lower() if aggregate is not None else None
                fix = collection_fix(entry.collection, function)
            elif entry.filtered is not None:
                function = aggregate.group(1).lower() if aggregate is not None else None
                fix = _filtered_fix(*entry.filtered, function)
            elif aggregate is not None:
                function = aggregate.group(1).lower()
                fix = (
                    f"compute the {function}() for all of them in one query grouped by what "
                    f"tells them apart (`select(Model.parent_id, func.{function}(...))"
                    ".group_by(Model.parent_id)`) instead of one per iteration"
                )
            elif _FROM.search(entry.sql) is None and SELECT_SQL.match(entry.sql):
                # `SELECT :n * 2`, `SELECT nextval('ids')`: there are no rows to fetch.
                fix = (
                    "it reads no table: compute the values in Python, or all of them in one "
                    "statement, instead of one round trip per iteration"
                )
            elif not entry.orm or entry.textual:
                fix = _core_fix(entry.sql)
            else:
                fix = (
                    "fetch the rows in one query (e.g. .where(Model.id.in_(ids)) or a loader "
                    "option) instead of one per iteration"
                )
            if write_fix is None:
                fix += _lock_note(entry.sql)
        details: dict[str, Any] = {
            # Redacted before it is cut: a cut literal must not leave its value behind.
            "statement": shown_sql(entry.sql, self.config.show_parameters)[:1000],
            "count": entry.count,
            "parameter_sets": distinct,
        }
        if entry.example is not None:
            details["parameters"] = repr(entry.example)[:500]
        caller = entry.site.caller if entry.site is not None else None
        related: list[tuple[CallSite | None, str]] = []
        if caller is not None and classify(caller[0]) == USER:
            related.append((CallSite(caller[0], caller[1], "?"), "called from here"))
        self.report(
            entry.site,
            key=key,
            subject=statement_shape,
            related=related,
            hint=fix,
            details=details,
            shape=statement_shape,
            count=self.count_so_far(entry.count),
            site=self.where(entry.site),
            variants=variants,
            fix=fix,
        )

    def _session_per_call_fix(self, entry: _Entry) -> str | None:
        """The fix for a query that a helper opening a session of its own runs once per
        call, called once per item by a loop: each run is in a new session, so the
        session-level fixes (a lookup dict while the result is kept) do not apply."""
        site = entry.site
        if site is None or site.caller is None or not site.function.isidentifier():
            return None
        if classify(site.caller[0]) != USER:
            return None  # a framework calls it (a request, a job): no loop of the program
        helper = f"{site.function}()"
        loop = self.where(CallSite(site.caller[0], site.caller[1], "?"))
        query = _one_query(entry)
        if query is not None and is_awaited(site):
            query = f"(await {query})"
        load = (
            f"load them all in one query in one session instead, `{query}` (a {helper} that "
            "takes the whole list)"
            if query is not None
            else "fetch the rows for all of them in one query in one session instead (e.g. "
            ".where(Model.id.in_(ids)))"
        )
        return (
            f"{helper} runs it in a new session on each call, and the loop at {loop} calls "
            f"{helper} once per item: {load}, or at least open one session around the loop "
            f"and pass it to {helper} rather than a session and a transaction per item"
        )
