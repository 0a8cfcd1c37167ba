"""How long a pool has stayed full while its connections passed from holder to holder.

No holder of a pool of two may keep its connection a whole second, and yet the pool can
stay full for seconds: six requests that each hold a connection for 0.6 s take turns, and
four of them wait up to 1.2 s for one. What shows it is the pool filling again at once
after a connection came back: a checkout was waiting for it (QueuePool hands a returned
connection to the oldest waiter). A ``Fill`` is one such stretch of a pool: full, then
refilled within ``_HANDOFF_SECONDS`` of each return.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqla_doctor.runtime.callsite import CallSite

# A waiting checkout wakes as soon as the returning thread lets go of the GIL (a switch
# interval, 5 ms) and may revalidate its connection first; a pool refilled later than
# this had room to spare in between.
_HANDOFF_SECONDS = 0.05
_MAX_POOLS = 64


class Fill:
    """One pool's current stretch of being full."""

    __slots__ = ("handoffs", "label", "last_site", "pool", "reported", "returned_at", "since")

    def __init__(self, pool: weakref.ref[Any], now: float) -> None:
        self.pool = pool
        # The engine's URL (no password), pool_size and max_overflow, for the message of
        # a report made when a connection comes back, where no checkout says them.
        self.label: tuple[str, int, int] | None = None
        self.last_site: CallSite | None = None  # the checkout that last filled the pool
        self.since = now
        self.handoffs = 0  # checkouts that took a connection just returned to the full pool
        self.returned_at = 0.0  # when the full pool last got a connection back, 0.0: full
        self.reported = False


_fills: dict[int, Fill] = {}
_lock = threading.Lock()


def filled(pool: Any, now: float) -> Fill:
    """A checkout left ``pool`` full: the stretch it starts or carries on."""
    with _lock:
        fill = _fills.get(id(pool))
        if fill is None or fill.pool() is not pool:
            if len(_fills) >= _MAX_POOLS:
                _forget_dead()
            fill = _fills[id(pool)] = Fill(weakref.ref(pool), now)
        elif fill.returned_at:
            if now - fill.returned_at <= _HANDOFF_SECONDS:
                fill.handoffs += 1
            else:
                fill.since, fill.handoffs, fill.reported = now, 0, False
        fill.returned_at = 0.0
        return fill


def claim(fill: Fill) -> bool:
    """Whether the caller is the first to report this stretch."""
    with _lock:
        if fill.reported:
            return False
        fill.reported = True
        return True


def returned(pool: Any, now: float) -> Fill | None:
    """A connection of ``pool`` came back: the pool has room until the next checkout.

    The stretch that is over, when this is the second return in a row: nobody took the
    connection returned before it (QueuePool hands it to a waiting checkout at once), so
    nobody waits any more. None for a return a waiting checkout may still take."""
    fill = _fills.get(id(pool))
    if fill is None or fill.pool() is not pool:
        return None
    if not fill.returned_at:
        fill.returned_at = now
        return None
    return fill


def _forget_dead() -> None:
    for key, fill in list(_fills.items()):
        if fill.pool() is None:
            del _fills[key]
    while len(_fills) >= _MAX_POOLS:
        del _fills[next(iter(_fills))]
