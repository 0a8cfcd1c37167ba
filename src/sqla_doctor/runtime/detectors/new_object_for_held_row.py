"""SQD163: a new object added with a primary key the session already holds."""

from __future__ import annotations

from sqla_doctor.findings import Severity
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Detector, DuplicateIdentity, a_or_an
from sqla_doctor.runtime.errors import origin_of


class NewObjectForHeldRow(Detector):
    """
    ## What it does
    Checks, before each flush, for a new object (`session.add(Product(id=1, ...))`, or
    one `merge()` created) whose primary key is already taken in the session: by an
    object the session loaded, or by another new object. The flush would INSERT that key
    a second time. It names the line that added the new object and where the other one
    was loaded or added.

    A primary key made of many-to-one foreign keys, as an association object's
    (`Enrollment(student=student, course=course)`), is not set until the flush copies
    it from the related objects: it is read from them (nothing is loaded), when they
    are persistent or were given their key. One whose related object is new with a key
    the database assigns is not judged.

    ## Why is this bad?
    The flush fails with a duplicate key (`IntegrityError: UNIQUE constraint failed`,
    `UniqueViolation`), often far from the line that caused it, and the session must be
    rolled back. The usual causes: building a fresh object to update a row the code
    already loaded (`add()` never updates), or merging a batch that holds the same key
    twice in a session that does not autoflush: `merge()` looks a key up in the identity
    map and the database, and a new object pending in the session is in neither.

    A `delete()` of the held object followed by `add()` of one with its key is a row
    switch SQLAlchemy turns into an UPDATE, and is not reported.

    ## Example
    ```python
    product = session.get(Product, 1)
    session.add(Product(id=1, name="Lamp v2", stock=product.stock))
    session.commit()  # IntegrityError: duplicate key
    ```

    Use instead:
    ```python
    product = session.get(Product, 1)
    product.name = "Lamp v2"
    session.commit()
    ```

    Or `session.merge(Product(id=1, name="Lamp v2"))` to copy the new values onto the
    held object. For a batch of merges without autoflush, flush after each `merge()` or
    drop the duplicates from the input first.

    ## References
    - [Adding new or existing items](https://docs.sqlalchemy.org/en/20/orm/session_basics.html#adding-new-or-existing-items)
    - [Merging](https://docs.sqlalchemy.org/en/20/orm/session_state_management.html#merging)
    """

    code = "SQD163"
    name = "new-object-for-held-row"
    pitfalls = ("P24",)
    severity = Severity.ERROR
    # No primary key values in the message: a key can be user data (an email address).
    message = "new {entity} added with the primary key of {other}: {consequence} — {fix}"

    def on_duplicate_identity(self, duplicate: DuplicateIdentity) -> None:
        record = duplicate.record
        entity = duplicate.state.class_.__name__
        added = record.pending.get(id(duplicate.state))
        site = added.site if added is not None else None
        related: list[tuple[CallSite | None, str]] = []
        other_entity = duplicate.other.class_.__name__
        if duplicate.other.key is not None:
            origin = origin_of(self.uow, duplicate.other.mapper, record)
            if origin is not None and origin.site is not None:
                related.append((origin.site, f"the session loaded the {other_entity} here"))
            other = f"{a_or_an(other_entity)} this session already holds"
            fix = (
                "change the object the session holds instead (session.get() returns it), "
                "or session.merge() the new one to copy its values onto it"
            )
        else:
            first = record.pending.get(id(duplicate.other))
            if first is not None and first.site is not None:
                related.append((first.site, f"the first new {other_entity} was added here"))
            other = f"another new {other_entity}"
            fix = (
                "drop the duplicates from the input, or flush after each merge() so that "
                "the next one finds the row (merge() does not see objects still pending)"
            )
        self.report(
            site,
            key=(entity, site.key if site is not None else None),
            subject=entity,
            related=related,
            hint=f"obj = session.get({entity}, ...); set its attributes",
            details={"entity": entity, "held": duplicate.other.key is not None},
            entity=entity,
            other=other,
            consequence="the flush will INSERT that key twice and fail with a duplicate key",
            fix=fix,
        )
