"""The queries a read-tracking detector follows, and the objects each one loaded.

SQD257 (unused eager load) and SQD258 (over-fetched columns) judge a line's query by
what the program read on the objects it loaded, over the whole unit of work: both follow
a query from ``do_orm_execute`` to the ``load`` event of each object it builds, watch
those objects' reads (runtime/reads.py), and judge a line once its objects are gone or
the unit ends. This is that shared part; each detector keeps its own group type.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqla_doctor.runtime import loading, reads
from sqla_doctor.runtime.callsite import CallSite
from sqla_doctor.runtime.detector import Loaded

MAX_GROUPS = 256
# Statements whose objects may still be loading (an iterated result loads lazily).
MAX_OPEN = 64
# Objects each detector watches per unit of work: memory stays bounded, and what was
# read on the first ones decides.
MAX_TRACKED = 5_000


class QueryGroup:
    """The objects one line's query loaded (every run of it), over the unit of work."""

    __slots__ = ("depth", "generation", "joined", "mapper", "seen", "site", "watches")

    def __init__(self, site: CallSite, mapper: Any) -> None:
        self.site = site
        self.mapper = mapper
        # The length of the load path of the objects it follows: 1 for the query's own
        # rows, 3 for the objects a selectin batch loads one relationship down, ...
        self.depth = 1
        # Root objects loaded, watched or not.
        self.seen = 0
        self.watches: list[reads.Watch] = []
        # Read tracking restarted since (track-reads switched off and on): what the
        # watches saw is incomplete.
        self.generation = reads.generation()
        # Relationship -> the group that follows the objects loaded through it in this
        # group's own rows (a joinedload() with options chained below it), if any.
        self.joined: dict[Any, Any] = {}

    def judgeable(self) -> bool:
        """Whether the reads seen on its objects can be trusted to be all of them."""
        return bool(self.watches) and reads.healthy() and reads.generation() == self.generation


G = TypeVar("G", bound=QueryGroup)


class FollowedQueries(Generic[G]):
    """A detector's followed queries: one group per line and mapper, bounded."""

    def __init__(self, new_group: Callable[[CallSite, Any], G]) -> None:
        self._new_group = new_group
        self.groups: dict[tuple[Any, ...], G] = {}
        # id(statement) -> (a weak reference to it, its group): the QueryContext of each
        # loaded object names the statement it runs.
        self.open: dict[int, tuple[weakref.ref[Any], G]] = {}
        # id(statement._raw_columns) -> (that list, the statement's options, the group):
        # a do_orm_execute listener of the program's that runs after ours (the
        # soft-delete recipe adding with_loader_criteria()) replaces the statement by a
        # copy, which shares the list and starts with the same options, and the
        # statement itself may be gone by the time its rows load.
        self.open_columns: dict[int, tuple[Any, tuple[Any, ...], G]] = {}
        self.tracked = 0

    def follow(self, statement: Any, site: CallSite, mapper: Any) -> G | None:
        """Follow this run of the line's query; its group, or None when out of room."""
        if self.tracked >= MAX_TRACKED or not reads.enable() or not reads.cover(mapper):
            return None
        key = (site.filename, site.lineno, mapper)
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                return None
            group = self.groups[key] = self._new_group(site, mapper)
        from sqla_doctor.runtime import listeners

        listeners.watch_loads(mapper)
        if len(self.open) >= MAX_OPEN:
            del self.open[next(iter(self.open))]
        if len(self.open_columns) >= MAX_OPEN:
            del self.open_columns[next(iter(self.open_columns))]
        self.open[id(statement)] = (weakref.ref(statement), group)
        columns = getattr(statement, "_raw_columns", None)
        if columns is not None:
            options = tuple(getattr(statement, "_with_options", ()))
            self.open_columns[id(columns)] = (columns, options, group)
        return group

    def group_of(self, loaded: Loaded) -> G | None:
        """The group of a followed query's root object (not one of its eager loads)."""
        query = getattr(loaded.context, "query", None)
        entry = self.open.get(id(query))
        group = entry[1] if entry is not None and entry[0]() is query else self._copied_from(query)
        if group is None or self.tracked >= MAX_TRACKED:
            return None
        if not loading.loaded_at_depth(loaded.state, group.depth):
            group = _joined_below(group, loaded.state)
            if group is None:
                return None
        group.seen += 1
        return group

    def follow_joined(self, root: G, loader_path: tuple[Any, ...]) -> G | None:
        """Follow the objects ``root``'s query loads in its own rows along
        ``loader_path`` (``(Blog, Blog.posts, Post)``, a ``joinedload()``), in a group of
        their own; None when out of room."""
        mapper = loader_path[-1]
        if not reads.cover(mapper):
            return None
        site = root.site
        key = (site.filename, site.lineno, mapper, loader_path[-2])
        group = self.groups.get(key)
        if group is None:
            if len(self.groups) >= MAX_GROUPS:
                return None
            group = self.groups[key] = self._new_group(site, mapper)
            group.depth = len(loader_path)
        from sqla_doctor.runtime import listeners

        listeners.watch_loads(mapper)
        root.joined[loader_path[-2]] = group
        return group

    def _copied_from(self, query: Any) -> G | None:
        """The group of the followed statement ``query`` is a copy of with more options
        (``.options()`` copies a statement, sharing its columns), if any. Another
        statement built from the same ``select(User)`` shares them too, but not the
        followed one's options."""
        columns = getattr(query, "_raw_columns", None)
        entry = self.open_columns.get(id(columns)) if columns is not None else None
        if entry is None or entry[0] is not columns:
            return None
        followed, options = entry[1], tuple(getattr(query, "_with_options", ()))
        if len(options) <= len(followed):
            return None
        if any(a is not b for a, b in zip(options[: len(followed)], followed, strict=True)):
            return None
        return entry[2]

    def watch(self, group: G, state: Any) -> reads.Watch | None:
        """Watch the reads of a loaded object; None when it cannot be watched."""
        obj = state.obj()
        watch = reads.watch(obj) if obj is not None else None
        if watch is not None:
            self.tracked += 1
            group.watches.append(watch)
        return watch

    def settle(
        self, *, final: bool, judge: Callable[[G], None], returned: frozenset[int] = frozenset()
    ) -> None:
        """Judge the groups that are done: all of them at the end of an explicit unit.

        A session's implicit unit checkpoints at each transaction's end, and its objects
        may still be read after that (returned, serialized): a group waits until they
        are all gone. A group with an object among ``returned`` (ids of what a
        track()-decorated function returned) is dropped unjudged: its caller reads it
        after the unit has ended.
        """
        for key, group in list(self.groups.items()):
            if not final and any(watch() is not None for watch in group.watches):
                continue
            del self.groups[key]
            if returned and any(
                watch.oid in returned and watch() is not None for watch in group.watches
            ):
                continue
            judge(group)
        if final:
            self.open = {}
            self.open_columns = {}


def _joined_below(group: QueryGroup, state: Any) -> Any:
    """The group following the object ``state`` if a joinedload() of ``group``'s query
    loaded it (one relationship below ``group``'s objects), else None."""
    if not group.joined:
        return None
    path = getattr(getattr(state, "load_path", None), "path", None)
    if path is None or len(path) != group.depth + 2:
        return None
    return group.joined.get(path[-2])
