"""The ``Retry-After`` holds: one on the whole client, and each refused request's own.

After a 429 the pacer decides who waits. A throttle's 429 (or a bare one saying more than a
bucket's second) holds every request until its end; the refused request is then given that
same end when the transport asks (:meth:`Holds.take`). A hold for everyone can also be asked
for directly (a ``Retry-After`` without a ticket).
"""

from __future__ import annotations

import logging

logger = logging.getLogger("mihu_frames")

#: Holds remembered for :meth:`Holds.take` (those of requests out of retries are dropped).
_KEPT = 256


class Holds:
    """When the whole client may send again, and until when each refused request waits.

    Examples
    --------
    >>> holds = Holds()
    >>> holds.refused(7, until=12.0, now=10.0)
    >>> holds.until, holds.take(7), holds.take(7)
    (12.0, 12.0, None)
    """

    def __init__(self) -> None:
        self._until = 0.0
        self._by_ticket: dict[int, float] = {}  # refused request -> end of the hold it caused

    def __repr__(self) -> str:
        return f"Holds(until={self._until:.3f}, {len(self._by_ticket)} kept)"

    @property
    def until(self) -> float:
        """The instant before which no request goes (0: no hold yet)."""
        return self._until

    def refused(self, ticket: int, until: float, now: float) -> None:
        """A 429 for request ``ticket`` holds every request until ``until``."""
        self._by_ticket[ticket] = until
        while len(self._by_ticket) > _KEPT:  # those of requests out of retries
            del self._by_ticket[next(iter(self._by_ticket))]
        if until > self._until:
            self._until = until
            logger.debug("pacer: a 429; holding every request for %.3f s", until - now)

    def everyone(self, until: float) -> bool:
        """Hold every request until ``until``; whether that made the hold longer."""
        if until > self._until:
            self._until = until
            return True
        return False

    def take(self, ticket: int) -> float | None:
        """The end of the hold request ``ticket``'s 429 put on everyone, once; else None."""
        return self._by_ticket.pop(ticket, None)
