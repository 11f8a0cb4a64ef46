"""What pacing did, counted: attempts, 429s, and the seconds some request was held back.

A load takes the difference of two :class:`PacerStats` (:meth:`PacerStats.since`) for its
``df.attrs``. Seconds of waiting are counted once however many requests waited at the same
time, and only for waits for the server's limit (a ``Retry-After``, a spent window, the send
rate), not for the slow start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass
class PacerStats:
    """What pacing did, since the pacer was made (a load takes the difference).

    Attributes
    ----------
    attempts : int
        Requests answered or failed (every attempt, retries included).
    rate_limited : int
        Attempts answered 429.
    waited_seconds : float
        Seconds during which at least one request was held back by the pacer (a
        ``Retry-After``, a spent window, or the send rate), counted once however many waited.
    """

    attempts: int = 0
    rate_limited: int = 0
    waited_seconds: float = 0.0

    def since(self, earlier: PacerStats) -> PacerStats:
        """The counts between ``earlier`` and these."""
        return PacerStats(
            self.attempts - earlier.attempts,
            self.rate_limited - earlier.rate_limited,
            round(self.waited_seconds - earlier.waited_seconds, 6),
        )


class Tally:
    """The running counts behind :class:`PacerStats`; told the time by its owner.

    Examples
    --------
    >>> tally = Tally()
    >>> tally.begin_wait(1.0); tally.begin_wait(1.5); tally.end_wait(2.0); tally.end_wait(3.0)
    >>> tally.attempt(refused=True)
    >>> tally.stats(now=9.0)
    PacerStats(attempts=1, rate_limited=1, waited_seconds=2.0)
    """

    def __init__(self) -> None:
        self._stats = PacerStats()
        self._waiting = 0  # requests waiting for the server's limit now
        self._waiting_since = 0.0  # since when at least one has been

    def attempt(self, refused: bool) -> None:
        """An attempt was answered or failed; ``refused``: answered 429."""
        self._stats.attempts += 1
        if refused:
            self._stats.rate_limited += 1

    def begin_wait(self, now: float) -> None:
        """A request starts waiting for the server's limit."""
        if not self._waiting:
            self._waiting_since = now
        self._waiting += 1

    def end_wait(self, now: float) -> None:
        """A request stops waiting."""
        self._waiting -= 1
        if not self._waiting:
            self._stats.waited_seconds += now - self._waiting_since

    def forget_waiters(self) -> None:
        """Nobody waits any more (a forked child's pacer: the parent's threads are gone)."""
        self._waiting = 0

    def stats(self, now: float) -> PacerStats:
        """A copy of the counts, a wait going on now included up to ``now``."""
        stats = replace(self._stats)
        if self._waiting:
            stats.waited_seconds += now - self._waiting_since
        return stats
