"""SQD162: session.merge() overwrote what the session already held for that row."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, MergeWrite, a_or_an
from sqla_doctor.runtime.detectors.session_leak import is_awaited
from sqla_doctor.runtime.errors import origin_of

if TYPE_CHECKING:
    from sqla_doctor.runtime.unit_of_work import UnitOfWork

_MAX_NAMED = 6
# Merges judged per unit of work; a batch job merging a million rows keeps a few.
_MAX_KEPT = 1_000


class _Merge:
    """The attributes one merge() call overwrote in one held object."""

    __slots__ = ("changed", "entity", "origin", "site", "stale")

    def __init__(self, write: MergeWrite, origin: CallSite | None) -> None:
        self.entity = write.state.class_.__name__
        self.site = write.site
        self.origin = origin
        self.changed: list[str] = []
        self.stale: list[str] = []


class MergeOntoHeldInstance(Detector):
    """
    ## What it does
    Checks for `session.merge(obj)` onto a row the session already holds, when the merge
    replaces what the session had:

    - an attribute the program changed in this transaction (`product.stock -= 3`,
      flushed or not: merge() autoflushes first) is overwritten by the merged object's
      value: the change is lost without a trace;
    - `obj` is a detached copy of the row (loaded earlier, by another session) whose
      value for an attribute is the one it was loaded with, and the session holds a
      different one, loaded later: merge() writes the older value back (stale data).

    It watches the attribute `set` events merge() fires while it copies each attribute
    onto the object in the identity map. A merge that only adds new values (a
    transient object built from a request's payload, merged onto a row the session
    loaded but did not change) is the intended use and is not reported, nor is a merge
    that loads the row itself.

    ## Why is this bad?
    merge() does not reconcile two versions of a row: it copies every attribute that is
    set on the object you pass onto the one the session holds, whatever that one
    contains. A local edit disappears (a sale's stock decrement, a status the code just
    set), or a value another transaction wrote since the copy was loaded is silently
    reverted when the session commits. Nothing fails; the data is wrong.

    ## Known problems
    `merge(obj, load=False)` copies without firing attribute events and is not seen.
    Objects reached through a relationship cascade are judged for the program's changes
    only (their source copy is not visible), and so are those of `merge_all()`. A
    detached copy of a row another session updated during this session's transaction is
    not called stale: that session may have written the copy's values after this one
    loaded the row. A change rolled back with its SAVEPOINT no longer counts as the
    transaction's.

    ## Example
    ```python
    product = session.get(Product, 1)
    product.stock -= 3
    session.merge(Product(id=1, name="Lamp v2", stock=10))  # stock back to 10
    session.commit()
    ```

    Use instead:
    ```python
    product = session.get(Product, 1)
    product.stock -= 3
    product.name = "Lamp v2"  # set what the incoming data owns on the held object
    session.commit()
    ```

    Or build the merged object with only the attributes it owns:
    merge() copies only the attributes set on it (`Product(id=1, name="Lamp v2")`
    leaves `stock` alone). For a detached copy, reload it (`session.refresh(obj)`)
    before changing and merging it: merged into a session that does not hold the row,
    it writes its old values over the newer row all the same (merge() loads the row,
    then copies every loaded attribute of the copy onto it).

    ## References
    - [Merging](https://docs.sqlalchemy.org/en/20/orm/session_state_management.html#merging)
    - [Merge tips](https://docs.sqlalchemy.org/en/20/orm/session_state_management.html#merge-tips)
    """

    code = "SQD162"
    name = "merge-onto-held-instance"
    pitfalls = ("P24",)
    severity = Severity.WARNING
    # No primary key values in the message: a key can be user data (an email address).
    message = "merge() onto {an_entity} this session already held: {damage} — {fix}"

    def __init__(self, uow: UnitOfWork) -> None:
        super().__init__(uow)
        self._open: dict[tuple[int, int], _Merge] = {}
        self._judged = 0

    def on_merge_write(self, write: MergeWrite) -> None:
        handle = (write.merge, id(write.state))
        merge = self._open.get(handle)
        if merge is None:
            # Another merge() call began: the previous one copied all it had to.
            self._emit()
            if self._judged >= _MAX_KEPT:
                return
            self._judged += 1
            origin = origin_of(self.uow, write.state.mapper, write.record)
            site = origin.site if origin is not None else None
            if site is not None and write.site is not None and site.key == write.site.key:
                # merge() loaded the row itself (its get() ran at the same line): the
                # session held nothing older to lose but the program's changes.
                site = None
                if not write.changed:
                    self._open[handle] = _Merge(write, None)
                    return
            merge = self._open[handle] = _Merge(write, site)
        if write.changed:
            merge.changed.append(write.key)
        elif write.stale and merge.origin is not None:
            merge.stale.append(write.key)

    def on_after_flush(self, flush: object) -> None:
        self._emit()

    def checkpoint(self) -> None:
        self._emit()

    def end(self) -> None:
        self._emit()

    def _emit(self) -> None:
        merges, self._open = self._open, {}
        for merge in merges.values():
            if merge.changed or merge.stale:
                self._report(merge)

    def _report(self, merge: _Merge) -> None:
        entity = merge.entity
        parts: list[str] = []
        if merge.changed:
            parts.append(
                f"it overwrote this transaction's change to {_named(entity, merge.changed)} "
                "with the merged object's value"
            )
        if merge.stale:
            them, values = ("it", "value") if len(merge.stale) == 1 else ("them", "values")
            parts.append(
                f"it wrote back {_named(entity, merge.stale)} as a detached copy had {them} "
                f"when it was loaded, older than the {values} this session loaded"
            )
        if merge.changed:
            fix = (
                "set the incoming values on the object the session holds, or build the "
                "merged object with only the attributes it owns (merge() copies every "
                "attribute set on it)"
            )
        else:
            fix = (
                f"reload the {entity} in this session (session.get() returns the one it "
                "holds) and apply the intended changes to it, or refresh the detached "
                "copy before changing and merging it"
            )
        related: list[tuple[CallSite | None, str]] = []
        if merge.origin is not None:
            related.append((merge.origin, f"the session loaded the {entity} here"))
        awaited = "await " if merge.site is not None and is_awaited(merge.site) else ""
        self.report(
            merge.site,
            key=(entity, merge.site.key if merge.site is not None else None),
            subject=entity,
            related=related,
            hint=f"obj = {awaited}session.get({entity}, ...); set its attributes",
            details={
                "entity": entity,
                "changed": list(merge.changed),
                "stale": list(merge.stale),
            },
            an_entity=a_or_an(entity),
            damage="; ".join(parts),
            fix=fix,
        )


def _named(entity: str, keys: list[str]) -> str:
    unique = list(dict.fromkeys(keys))
    named = ", ".join(f"{entity}.{key}" for key in unique[:_MAX_NAMED])
    if len(unique) > _MAX_NAMED:
        named += f" and {len(unique) - _MAX_NAMED} more"
    return named
