"""Which attributes of loaded objects the program read: the opt-in read tracker.

SQLAlchemy has no event for reading an attribute that is already loaded, and two
detectors need exactly that: SQD257 (an eager load nobody read) and SQD258 (columns
fetched and never read). With ``track-reads = true`` (off by default: then only the
two cases below switch anything), the column and relationship descriptors of the
mapped classes those detectors watch are made observable: each is an
``InstrumentedAttribute``, found through the public ``Mapper.all_orm_descriptors``,
and its ``__class__`` is switched to ``ReadTracked``, a subclass without state of its
own (``__slots__ = ()``) whose ``__get__`` notes the read when it is an instance's and
then does exactly what ``InstrumentedAttribute.__get__`` does. Class-level access
(``User.name == "x"``, ``select(User.name)``, ``User.posts.any()``) returns the
descriptor itself, as before. ``disable()`` (run by ``uninstall()``) switches every
descriptor back. ``install()`` with ``track-reads`` on switches every mapped class
(``listeners.track_every_read``): a read that fails with ``DetachedInstanceError`` is
then explained while raised, before the program can swallow it.

Only objects a detector asked about are tracked (``watch()``, from the ``load`` event
of a query it watches): a read of any other object costs one dict lookup. Each
tracked object has a ``Watch``: a weak reference to it (never keeping it alive), the
keys read so far, and its entry in ``_watched`` (by id of the object), which the
reference's callback removes when the object dies, so that a new object at the same
address is not mistaken for it. The detector keeps its ``Watch`` objects, so what was
read stays known after the object is gone. Each detector caps what it tracks per unit
of work.

A ``Watch`` may also carry ``on_read``, called at each read of its object: SQD351
watches a new object whose constructor set its primary key to None that way, from
``session.add()`` until its flush (``watch_reads()``). For that, with ``track-reads``
not set, only the primary-key descriptors of that object's class are switched
(``cover_keys()``); ``track-reads = false`` switches none. Likewise, inside a
``track()`` block, the classes whose objects leave their session are covered as they
do (``cover_detachable()``): a DetachedInstanceError is then explained as it is raised.

Descriptors that are not exactly ``InstrumentedAttribute`` are left alone: hybrids,
synonyms and composites (their reads go through the column descriptors they read),
association proxies, and descriptors of other libraries' subclasses. Any failure of
the tracker restores every descriptor, is logged once, and makes ``healthy()`` false
until ``uninstall()``: the detectors then report nothing, rather than report reads
they could not see as missing.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.orm.attributes import InstrumentedAttribute
from sqlalchemy.orm.exc import DetachedInstanceError

logger = logging.getLogger("sqla_doctor")

# Objects whose reads are noted, by id of the object (not of its InstanceState: the
# descriptor is handed the object, and ``id()`` of it costs nothing).
_watched: dict[int, Watch] = {}
# Every descriptor switched to ReadTracked, by id, to switch back.
_swapped: dict[int, InstrumentedAttribute[Any]] = {}
# Mapper -> how many properties it had when its descriptors were switched: a backref
# added by a mapper configured later adds a descriptor to look at.
_covered: dict[Any, int] = {}
# Re-entrant: a failure while switching restores under the same lock.
_lock = threading.RLock()
MAX_WATCHED = 200_000


class _State:
    enabled = False
    failed = False
    # Whole mappers covered (track-reads, SQD257/SQD258), not only primary keys: mappers
    # configured later are covered too.
    full = False
    # Bumped whenever tracking starts: a detector compares it with the one it began
    # with, so that reads missed while tracking was off are not taken for no reads.
    generation = 0


_state = _State()


class Watch(weakref.ref[Any]):
    """One tracked object: a weak reference to it, the keys of its attributes read, and
    ``on_read``, called with the key and the object at each read while set (a new
    object's primary key that holds None until its flush: ``watch_reads()``)."""

    __slots__ = ("keys", "oid", "on_read")

    keys: set[str]
    oid: int
    on_read: Callable[[str, Any], None] | None

    def __new__(cls, obj: object, oid: int) -> Watch:
        self = super().__new__(cls, obj, _forget)
        self.keys = set()
        self.oid = oid
        self.on_read = None
        return self

    def __init__(self, obj: object, oid: int) -> None:
        # weakref.ref's own __init__ takes the callback (stdlib's KeyedRef does the same).
        super().__init__(obj, _forget)  # type: ignore[call-arg]


def _forget(ref: Any) -> None:
    # The object died: its address may be reused by another one.
    oid = ref.oid
    if _watched.get(oid) is ref:
        _watched.pop(oid, None)


_instrumented_get = InstrumentedAttribute.__get__


class ReadTracked(InstrumentedAttribute[Any]):
    __slots__ = ()
    # The cache key of an attribute includes its class; without this SQLAlchemy would
    # warn and stop caching statements that contain one.
    inherit_cache = True

    def __get__(
        self,
        instance: object | None,
        owner: Any,
        # Bound once: every read of a tracked class comes through here.
        _lookup: Any = _watched.get,
        _id: Any = id,
        _get: Any = _instrumented_get,
    ) -> Any:
        if instance is not None:
            try:
                watch = _lookup(_id(instance))
                if watch is not None:
                    watch.keys.add(self.key)
            except Exception:
                _fail("attribute read")
                watch = None
            # Outside the guard: the callback guards itself, and in raise mode its
            # PitfallError must reach the line that read.
            if watch is not None and watch.on_read is not None:
                watch.on_read(self.key, instance)
        try:
            return _get(self, instance, owner)
        except DetachedInstanceError as error:
            _read_failed(error)
            raise


def _read_failed(error: DetachedInstanceError) -> None:
    """Explain the error now: pydantic's ``from_attributes``, a template or an ``except
    Exception: print(...)`` may swallow it before it reaches a unit's end or the log."""
    from sqla_doctor.runtime import errors  # here: errors imports what imports this module

    # 0: this function, 1: ReadTracked.__get__, 2: whoever read the attribute.
    errors.explain_raised(error, sys._getframe(2))


# A class body without a docstring gets ``__doc__ = None``, which would hide
# InstrumentedAttribute's own ``__doc__`` property (the ``doc=`` of a mapped column).
setattr(ReadTracked, "__doc__", InstrumentedAttribute.__dict__["__doc__"])  # noqa: B010 - not a str


def healthy() -> bool:
    return _state.enabled and not _state.failed


def generation() -> int:
    return _state.generation


def enable(*, full: bool = True) -> bool:
    """Start tracking (idempotent); False if it failed before and is off for good.

    ``full``: whole mappers will be covered, and mappers configured from now on too;
    without it only ``cover_keys()`` follows.
    """
    if full:
        _state.full = True
    if _state.enabled:
        return not _state.failed
    with _lock:
        if _state.failed:
            return False
        if not _state.enabled:
            _state.generation += 1
            _state.enabled = True
    return True


def cover(mapper: Any) -> bool:
    """Make reads of ``mapper``'s objects (and its subclasses') observable.

    Called by a detector before it watches a query of ``mapper``, when the mappers are
    configured; cheap once done. False if tracking is off or failed.
    """
    if not _state.enabled or _state.failed:
        return False
    try:
        for each in mapper.self_and_descendants:
            size = len(each.attrs)
            if _covered.get(each) != size:
                _switch(each)
                _covered[each] = size
    except Exception:
        _fail("cover")
        return False
    return not _state.failed


def mapper_configured(mapper: Any) -> None:
    """A mapper was configured while tracking: switch its descriptors, and those of the
    mappers it relates to (a backref adds a descriptor to the other side)."""
    if not _state.enabled or _state.failed or not _state.full:
        return
    try:
        for target in {mapper, *(r.mapper for r in mapper.relationships)}:
            _covered.pop(target, None)
            _switch(target)
    except Exception:
        _fail("mapper_configured")


def _switch(mapper: Any) -> None:
    with _lock:
        if not _state.enabled or _state.failed:
            return
        for descriptor in mapper.all_orm_descriptors.values():
            _switch_descriptor(descriptor)


def _switch_descriptor(descriptor: Any) -> None:
    """Make one attribute's reads observable (the caller holds ``_lock``)."""
    # Exactly InstrumentedAttribute: a subclass (another library's, or a proxy for a
    # synonym or a composite) may have a layout or a __get__ of its own.
    if type(descriptor) is not InstrumentedAttribute:
        return
    # Its event dispatcher is made for its class on first use: make it now, for
    # InstrumentedAttribute, so that listeners keep finding it.
    descriptor.dispatch  # noqa: B018 - the attribute access is the point
    descriptor.__class__ = ReadTracked
    _swapped[id(descriptor)] = descriptor


def tracked_keys(mapper: Any) -> frozenset[str]:
    """The attributes of ``mapper``'s objects whose reads are seen (their descriptor is
    switched): a detector judges no others."""
    try:
        return frozenset(
            key
            for key, descriptor in mapper.all_orm_descriptors.items()
            if type(descriptor) is ReadTracked
        )
    except Exception:
        _fail("tracked_keys")
        return frozenset()


def watch(obj: object) -> Watch | None:
    """Note the reads of ``obj`` from now on; its Watch (shared by every detector)."""
    if not _state.enabled or _state.failed:
        return None
    oid = id(obj)
    found = _watched.get(oid)
    if found is not None and found() is obj:
        return found
    if len(_watched) >= MAX_WATCHED:
        return None
    try:
        made = Watch(obj, oid)
    except TypeError:  # pragma: no cover - mapped classes are weakly referenceable
        return None
    _watched[oid] = made
    return made


def read_whole(obj: object, keys: Iterable[str]) -> None:
    """Count ``keys`` of ``obj`` as read, if its reads are watched: they were copied out
    around the attributes (its state pickled for a cache, or deep-copied)."""
    found = _watched.get(id(obj))
    if found is not None and found() is obj:
        found.keys.update(keys)


def cover_keys(mapper: Any, keys: frozenset[str]) -> bool:
    """Make reads of ``keys`` of ``mapper``'s objects observable, and only those: SQD351
    needs the primary key's without ``track-reads``. False if tracking failed."""
    if not enable(full=False):
        return False
    try:
        with _lock:
            descriptors = mapper.all_orm_descriptors
            for key in keys:
                _switch_descriptor(descriptors.get(key))
    except Exception:
        _fail("cover_keys")
        return False
    return not _state.failed


def covers(mapper: Any) -> bool:
    """Whether ``mapper``'s descriptors are switched (one dictionary lookup)."""
    return mapper in _covered


def cover_detachable(mapper: Any) -> None:
    """Make reads of ``mapper``'s objects observable after they left their session, so
    that a failed read is explained while raised (``track()`` without ``track-reads``)."""
    if enable(full=False):
        cover(mapper)


def watch_reads(
    obj: object, mapper: Any, keys: frozenset[str], on_read: Callable[[str, Any], None] | None
) -> bool:
    """Call ``on_read(key, obj)`` at each read of ``obj``'s attributes that is seen, those
    of ``keys`` at least (None: stop).

    Turns tracking on and covers ``keys`` first; False when tracking failed, or too many
    objects are watched.
    """
    if on_read is None:
        found = _watched.get(id(obj))
        if found is not None and found() is obj:
            found.on_read = None
        return True
    if not cover_keys(mapper, keys):
        return False
    watched = watch(obj)
    if watched is None:
        return False
    watched.on_read = on_read
    return True


def disable() -> None:
    """Stop tracking: every descriptor gets its own class back (``uninstall()``)."""
    with _lock:
        _restore()
        _state.enabled = False
        _state.failed = False
        _state.full = False


def _restore() -> None:
    errors = 0
    for descriptor in list(_swapped.values()):
        try:
            descriptor.__class__ = InstrumentedAttribute
        except Exception:  # pragma: no cover - the same layout as when it was switched
            errors += 1
    _swapped.clear()
    _covered.clear()
    _watched.clear()
    if errors:  # pragma: no cover
        logger.warning("sqla-doctor: %d attribute descriptors could not be restored", errors)


def _fail(where: str) -> None:
    """Never raise into the program: switch everything back, log once, stay off."""
    first = not _state.failed
    _state.failed = True
    try:
        from sqla_doctor.runtime.unit_of_work import process

        process.internal_errors += 1
        if _lock.acquire(timeout=1):
            try:
                _restore()
            finally:
                _lock.release()
        if first:
            logger.warning(
                "sqla-doctor: the read tracker failed in %s and is off until uninstall(); "
                "the program is unaffected, but please report this with the traceback below",
                where,
                exc_info=True,
            )
    except Exception:  # pragma: no cover - logging itself failed
        pass
