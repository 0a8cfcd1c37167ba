"""SQD153: a query autoflushed objects that were not complete yet."""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, Flush, TransactionEnd

if TYPE_CHECKING:
    from sqla_doctor.runtime.unit_of_work import SessionRecord

_MAX_NAMED = 4
# Autoflushed objects watched per autoflush, and autoflushes awaiting their session's
# next flush (one per session): bounded whatever the program does.
_MAX_WATCHED = 200
_MAX_HELD = 64


class _Autoflush:
    """An autoflush that succeeded, held until its session's next flush or end: it is
    reported only if one of the objects it INSERTed is changed again before then."""

    __slots__ = ("changed", "count", "entities", "inserted", "related", "site", "states")

    def __init__(self, flush: Flush, site: CallSite) -> None:
        self.site = site
        self.inserted = dict(flush.inserted)
        self.count = sum(flush.inserted.values())
        self.entities = _entities(flush.inserted)
        self.related = _added_sites(flush, site)
        # The session's pending objects, which this flush INSERTs (in after_flush,
        # Session.new still shows them); weakly, to keep none alive.
        self.states: list[weakref.ref[Any]] = []
        for obj in list(flush.session.new)[:_MAX_WATCHED]:
            self.states.append(weakref.ref(_state(obj)))
        # What the program changed on them, read as the next flush begins: the columns
        # that flush's own hooks set (a before_update audit column) are not the program's.
        self.changed: list[str] | None = None

    def changes(self) -> list[str]:
        """``Entity.attribute`` of each column its objects have changed since."""
        changed: list[str] = []
        for ref in self.states:
            state = ref()
            if state is None:
                continue
            for name in _changed_columns(state):
                if name not in changed:
                    changed.append(name)
        return changed


class AutoflushInQuery(Detector):
    """
    ## What it does
    Checks for queries (including lazy loads and `session.get()` misses) that made the
    session flush pending objects before they were complete: the autoflush failed
    (`IntegrityError: NOT NULL constraint failed` raised from the query line, even if
    the program catches it), or the code went on to change an object the autoflush had
    just INSERTed, so that the next flush UPDATEs the row again.

    An autoflush of objects that are complete, and not changed again, is what the
    Session is designed to do (the classic loop that looks something up, then adds an
    object, autoflushes the previous iteration's object at each lookup) and is not
    reported.

    ## Why is this bad?
    Autoflush writes objects the moment anything queries, whether or not they are
    complete. An `IntegrityError` ("NOT NULL constraint failed") then surfaces at the
    query, far from the code that built the object; when the columns are nullable, a
    half-built row is written, then completed by a second statement, and everything
    that runs at INSERT time (column defaults, `before_insert` hooks, triggers,
    constraints checked once) saw the object unfinished.

    ## Known problems
    The change is seen at the session's next flush (the UPDATE) or at the end of the
    unit of work; a transaction that ends without flushing it (rolled back, or closed
    without commit, which SQD152 reports) discards the half-built row and is not
    reported. Only columns and many-to-one relationships count as a change (appending to
    a collection writes the children's rows), and only the first 200 objects of an
    autoflush are watched. The changes are read as that next flush begins, so columns
    its hooks set (a `before_update` listener's audit column, a `@validates` it
    triggers) are not counted; a session `before_flush` listener registered before
    sqla-doctor's runs first, and its columns are.

    ## Example
    ```python
    order = Order(customer=customer)
    session.add(order)
    total = session.scalar(select(func.sum(Item.price)))  # INSERTs the order first
    order.total = total
    ```

    Use instead:
    ```python
    total = session.scalar(select(func.sum(Item.price)))
    session.add(Order(customer=customer, total=total))
    ```

    or, when the object has to be in the session first:
    ```python
    with session.no_autoflush:
        order = Order(customer=customer)
        session.add(order)
        order.total = session.scalar(select(func.sum(Item.price)))
    session.flush()
    ```

    ## References
    - [Session basics: autoflush](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#session-flushing)
    - [Session.no_autoflush](https://docs.sqlalchemy.org/en/20/orm/session_api.html#sqlalchemy.orm.Session.no_autoflush)
    """

    code = "SQD153"
    name = "autoflush-in-query"
    pitfalls = ("P23",)
    severity = Severity.INFO
    message = (
        "query at {site} autoflushed {count} pending object(s) ({entities}) before running — {fix}"
    )

    def __init__(self, uow: Any) -> None:
        super().__init__(uow)
        # id(session) -> its last successful autoflush, until its next flush or end.
        self.held: dict[int, _Autoflush] = {}

    def on_before_flush(self, record: SessionRecord) -> None:
        held = self.held.get(record.key)
        if held is not None:
            held.changed = held.changes()

    def on_after_flush(self, flush: Flush) -> None:
        # The flush after an autoflush closes its window: an object the autoflush
        # INSERTed and this flush UPDATEs again was written half-built.
        held = self.held.pop(flush.record.key, None)
        if held is not None:
            self._settle(held, flush.site)
        execution = flush.autoflush_of
        if execution is None or not flush.inserted or execution.site is None:
            return
        if len(self.held) < _MAX_HELD:
            self.held[flush.record.key] = _Autoflush(flush, execution.site)

    def on_autoflush_failed(self, flush: Flush) -> None:
        self.held.pop(flush.record.key, None)
        execution = flush.autoflush_of
        if execution is None or not flush.inserted or execution.site is None:
            return
        error = flush.record.failed_flush
        name = error.error if error is not None and error.error else "an error"
        site = execution.site
        self._report(
            site,
            flush.inserted,
            _entities(flush.inserted),
            _added_sites(flush, site),
            f"the flush failed with {name}: those objects were not complete yet; set "
            "their values before querying, or build them inside "
            "`with session.no_autoflush:` and flush once they are",
        )

    def on_after_transaction_end(self, end: TransactionEnd) -> None:
        held = self.held.pop(end.record.key, None)
        if held is not None:
            self._settle(held, None)

    def end(self) -> None:
        held, self.held = list(self.held.values()), {}
        for autoflush in held:
            self._settle(autoflush, None)

    def _settle(self, held: _Autoflush, update_site: CallSite | None) -> None:
        """Report ``held`` if an object it INSERTed was changed again since."""
        changed = held.changed if held.changed is not None else held.changes()
        if not changed:
            return  # complete when flushed: the autoflush only wrote a little earlier
        shown = ", ".join(changed[:_MAX_NAMED]) + (", …" if len(changed) > _MAX_NAMED else "")
        then = (
            f"then changed ({shown}), an UPDATE of the rows it had just inserted"
            if update_site is not None
            else f"then changed ({shown})"
        )
        related = list(held.related)
        if update_site is not None and update_site != held.site:
            related.append((update_site, "the flush that UPDATEs them again"))
        self._report(
            held.site,
            held.inserted,
            held.entities,
            related,
            f"the objects were not complete yet: INSERTed half-built, {then}; set their "
            "values before querying, or build them inside `with session.no_autoflush:` "
            "and flush once they are",
            changed=changed,
        )

    def _report(
        self,
        site: CallSite,
        inserted: Mapping[str, int],
        entities: str,
        related: list[tuple[CallSite | None, str]],
        fix: str,
        changed: list[str] | None = None,
    ) -> None:
        details: dict[str, Any] = {"inserted": dict(inserted)}
        if changed is not None:
            details["changed_after"] = changed
        self.report(
            site,
            key=site.key,
            subject=", ".join(inserted),
            related=related,
            hint="set the values before querying, or `with session.no_autoflush:`",
            details=details,
            site=self.where(site),
            count=sum(inserted.values()),
            entities=entities,
            fix=fix,
        )


def _state(obj: object) -> Any:
    from sqlalchemy.orm.attributes import instance_state

    return instance_state(obj)


def _entities(inserted: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {name}" for name, n in list(inserted.items())[:_MAX_NAMED])


def _added_sites(flush: Flush, site: CallSite) -> list[tuple[CallSite | None, str]]:
    added_sites: list[tuple[CallSite | None, str]] = []
    for added in list(flush.record.pending.values())[:_MAX_NAMED]:
        if added.site is not None and added.site != site:
            added_sites.append((added.site, f"{added.entity} added here"))
    return added_sites


def _changed_columns(state: Any) -> list[str]:
    """``Entity.attribute`` for each column or many-to-one of a persistent object that
    changed since its last flush: what the next flush UPDATEs in its row.

    ``committed_state`` holds the attributes changed since then; each one's history is
    read without loading anything (``PASSIVE_NO_INITIALIZE``, as ``Session.is_modified``
    does), so that setting the value it already had does not count. Collections are
    left out: appending to one writes the children's rows, not this one.
    """
    from sqlalchemy.orm.base import PASSIVE_NO_INITIALIZE

    if state.key is None or state.deleted or state.detached or not state.committed_state:
        return []
    manager = state.manager
    names: list[str] = []
    for key in list(state.committed_state):
        attribute = manager.get(key)
        impl = getattr(attribute, "impl", None)
        if impl is None or impl.collection:
            continue
        if impl.get_history(state, state.dict, PASSIVE_NO_INITIALIZE).has_changes():
            names.append(f"{state.class_.__name__}.{key}")
    return names
