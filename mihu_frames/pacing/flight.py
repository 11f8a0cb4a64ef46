"""The requests in flight: their numbers and sending times, and how many may be (slow start).

Every request the pacer lets go gets the next number (a ticket); it is in flight until it is
answered or fails. Before any answer, :data:`START_IN_FLIGHT` may be in flight (the default
``max_workers``); every success allows half a request more: half as many again each round
trip, so that a limit is met by a small wave of requests rather than by all of
``max_workers`` at once. ``max_workers`` stays the ceiling either way.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Requests in flight before any answer; every success allows ``_GROWTH`` more.
START_IN_FLIGHT = 8
_GROWTH = 0.5


class InFlight:
    """The requests sent and not yet answered, numbered in sending order, and their cap.

    Examples
    --------
    >>> flight = InFlight()
    >>> [flight.send(now=0.0) for _ in range(8)][-1]
    8
    >>> flight.full()
    True
    >>> flight.answer(1, now=0.1), flight.full()
    (0.0, False)
    """

    def __init__(self) -> None:
        self._latest = 0  # number of the latest request sent
        self._sent: dict[int, float] = {}  # request number -> when it was sent
        self._cap = float(START_IN_FLIGHT)

    def __len__(self) -> int:
        return len(self._sent)

    def __repr__(self) -> str:
        return f"InFlight({len(self._sent)} of {self._cap:g}, latest={self._latest})"

    @property
    def latest(self) -> int:
        """The number of the latest request sent (0: none yet)."""
        return self._latest

    @property
    def sent_at(self) -> Mapping[int, float]:
        """The requests in flight: number to when it was sent (read it, do not keep it)."""
        return self._sent

    def full(self) -> bool:
        """Whether the slow start lets no further request go before an answer."""
        return len(self._sent) >= self._cap

    def send(self, now: float) -> int:
        """A request goes at ``now``; return its number."""
        self._latest += 1
        self._sent[self._latest] = now
        return self._latest

    def answer(self, ticket: int, now: float) -> float:
        """Request ``ticket`` was answered or failed at ``now``; return when it was sent."""
        return self._sent.pop(ticket, now)

    def succeeded(self) -> None:
        """A success: one more may be in flight, every two."""
        self._cap += _GROWTH

    def clear(self) -> None:
        """Nothing is in flight any more (a forked child's pacer: the parent's requests)."""
        self._sent.clear()
