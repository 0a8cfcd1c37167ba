"""SQD351: a new object's primary key read before the flush that assigns it."""

from __future__ import annotations

import linecache
import re

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import AttributeRead, Detector
from sqla_doctor.runtime.detectors.session_leak import is_async_session, scoped_proxy

# ``session.add(order)``, ``self.session.add_all(rows)``: the session as the line names it.
_ADDED_BY = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.add(?:_all)?\(")
# What a session is called; a set collection's add() (``post.tags.add(tag)``, cascading
# the tag into the session) is not one.
_SESSION_NAME = re.compile(r"(?i)(?:session|sess|^db|^s)$")


def _session_name(site: CallSite | None) -> str:
    """How the program spells the session it added the object to (read when reporting)."""
    if site is not None:
        added = _ADDED_BY.search(linecache.getline(site.filename, site.lineno))
        if added is not None and _SESSION_NAME.search(added.group(1).rpartition(".")[2]):
            return added.group(1)
    return "session"


class PendingPrimaryKeyRead(Detector):
    """
    ## What it does
    Checks for code that reads the primary key of an object added to a session
    (`session.add(user)`) before any flush: `user.id` is `None` until the INSERT runs.

    It watches SQLAlchemy's `init_scalar` attribute event, which fires exactly when an
    attribute that has no value yet is read. A constructor that sets the key to `None`
    itself (SQLModel's `Field(default=None, primary_key=True)`, a dataclass mapped with
    `map_imperatively`, `User(id=None)`) leaves nothing for that event: such an
    object's reads are watched from `session.add()` until its flush, through the read
    tracker switched on for its class's primary key (not with `track-reads = false`).
    Reads during the flush itself, and inside a `__repr__`/`__str__` (a dataclass's
    generated one included), are ignored.

    ## Why is this bad?
    The code silently gets `None`: it builds a URL `/users/None`, returns `{"id": null}`
    from an API, stores `None` as a foreign key in another system, or uses it as a cache
    key. Nothing fails until someone notices the data.

    ## Example
    ```python
    user = User(name="ada")
    session.add(user)
    return {"id": user.id}  # None
    ```

    Use instead:
    ```python
    user = User(name="ada")
    session.add(user)
    session.flush()  # INSERT now; the database assigns the id
    return {"id": user.id}
    ```

    The static rule SQD304 (`primary-key-read-before-flush`) finds the same mistake in
    source when `add()` and the read sit in one function; this detector also sees it
    across functions, in serializers and in templates.

    ## References
    - [Session basics: flushing](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#flushing)
    - [AttributeEvents.init_scalar](https://docs.sqlalchemy.org/en/20/orm/events.html#sqlalchemy.orm.AttributeEvents.init_scalar)
    """

    code = "SQD351"
    name = "pending-primary-key-read"
    pitfalls = ("P10",)
    severity = Severity.ERROR
    # The value is wrong in the user's hands right now: in raise mode, fail at the read.
    raise_immediately = True
    message = (
        "{entity}.{attribute} read on a pending {entity} before any flush — it is None until "
        "the INSERT; {fix}"
    )

    def on_init_scalar(self, read: AttributeRead) -> None:
        entity = read.state.class_.__name__
        added = read.record.pending.get(id(read.state)) if read.record is not None else None
        related: list[tuple[CallSite | None, str]] = []
        if added is not None and added.site is not None and added.site != read.site:
            related.append((added.site, f"{entity} added to the session here"))
        name = _session_name(added.site if added is not None else None)
        if read.record is None:
            hint = f"{name}.flush()"
            fix = f"call {name}.flush() (await {name}.flush() with AsyncSession) before reading it"
        else:
            # An AsyncSession's flush is awaited: its fix says so.
            hint = f"{'await ' if is_async_session(read.record) else ''}{name}.flush()"
            fix = f"call {hint} before reading it"
        # Flask-SQLAlchemy's db.session.add(...): the fix names db.session.
        proxy = scoped_proxy(added.site if added is not None else None)
        if proxy is not None:
            hint = f"{'await ' if proxy.awaited else ''}{proxy.name}.flush()"
            fix = f"call {hint} before reading it"
        self.report(
            read.site,
            key=(entity, read.key, read.site.key),
            subject=f"{entity}.{read.key}",
            related=related,
            hint=hint,
            details={"entity": entity, "attribute": read.key},
            entity=entity,
            attribute=read.key,
            fix=fix,
        )
