"""The header regime: Laravel's fixed window, learned from ``X-RateLimit-Limit``/``-Remaining``.

On once a successful answer carried both headers (as Laravel's throttle sends them). A fixed
window opens at the first request counted after the previous one ended and lets ``Limit``
requests through.

- *Budget.* The lowest ``Remaining`` seen in the window (the server's highest count) minus the
  requests still unanswered (answers overtake each other, so any of them may be uncounted) is
  what the window surely still allows; requests go at once while it is positive (a burst, as
  the server allows) and stop at zero. A request sent after an answer and seeing at least as
  much ``Remaining`` is in a new window.
- *The window's end.* The headers do not say when the window ends, so it is learned. The
  answer with ``Remaining = Limit - 1`` was the window's first request: the window opened
  between its sending and its answer. The first time the budget is spent and the window's
  length is not known, one probe goes out; the server answers it (a new window) or refuses it
  with a 429 whose ``Retry-After`` and ``X-RateLimit-Reset`` say when the window ends
  (:func:`~mihu_frames.pacing.signals.refusal_end`). From then on the window's length has an
  upper bound (the honoured end minus the opening, or the time between two openings), and each
  later window's first request is sent as soon as the window is sure to be over: no 429 at all
  after the first window while the limit stays put.
- *Whole seconds.* A Laravel window lasts whole seconds (``decaySeconds``), so when the
  window's length is bounded from above and below, the largest whole number of seconds within
  the bounds is taken: no later window waits for the rounding. A window that is not whole
  seconds shows itself by a 429 (honoured like any), which raises the lower bound past that
  guess.

:class:`HeaderWindow` reads no clock and takes no lock: it is told the time, and its owner
(the pacer) holds the lock.
"""

from __future__ import annotations

import logging
import math

logger = logging.getLogger("mihu_frames")


class HeaderWindow:
    """What the rate-limit headers said of the server's window, and what it allows now.

    Examples
    --------
    >>> window = HeaderWindow()
    >>> window.answered(sent=0.0, answered=0.1, limit=3, remaining=2)  # the window's opener
    >>> window.budget(in_flight=0)
    2
    >>> window.wait(now=0.2, in_flight=2)  # spent, its end unknown: wait for an answer
    inf
    """

    def __init__(self) -> None:
        self._limit: int | None = None  # None: the regime is off
        self._remaining = 0  # the lowest Remaining of this window: the server's highest count
        self._lowest_at = 0.0  # when the answer that said so arrived
        self._opened: tuple[float, float] | None = None  # this window's opener: sent, answered
        self._longest: float | None = None  # upper bound of the window's length
        self._shortest = 0.0  # and its lower bound
        self._ends_at: float | None = None  # honoured end of this window, after a 429
        self._probe: int | None = None  # the one request out while the budget is spent

    def __repr__(self) -> str:
        if self._limit is None:
            return "HeaderWindow(off)"
        if self._longest is None:
            return f"HeaderWindow(limit={self._limit})"
        return f"HeaderWindow(limit={self._limit}, {self._shortest:.3f}-{self._longest:.3f}s)"

    @property
    def limit(self) -> int | None:
        """The server's ``X-RateLimit-Limit``; None until an answer carried it."""
        return self._limit

    @property
    def bounds(self) -> tuple[float, float | None]:
        """The window's length as learned: at least the first, at most the second (if known)."""
        return self._shortest, self._longest

    def budget(self, in_flight: int) -> int:
        """Requests the window still surely allows, with ``in_flight`` requests unanswered."""
        return self._remaining - in_flight

    def end(self) -> float | None:
        """When the current window is surely over, if known."""
        if self._ends_at is not None:
            return self._ends_at
        if self._opened is None or self._longest is None:
            return None
        length = self._longest
        whole = math.floor(length + 1e-6)
        if whole >= 1 and whole > self._shortest:
            length = whole  # Laravel's windows last whole seconds: the one the bounds allow
        return self._opened[1] + length

    # ------------------------------------------------------------------ decisions

    def wait(self, now: float, in_flight: int) -> float | None:
        """Seconds the next request must wait for the window (``math.inf``: until an answer
        arrives; 0: it goes, as the probe), or None when the window does not hold it back."""
        if self._limit is None or self.budget(in_flight) > 0:
            return None
        # The window is spent: one request goes once it is surely over (or, not knowing
        # when, as a probe); the others wait for its answer.
        if self._probe is not None:
            return math.inf
        at = self.end()
        if at is None:
            return math.inf if in_flight else 0.0
        return at - now

    def held_until(self, in_flight: int) -> float | None:
        """When the whole client may send again, if the window is spent and its end known."""
        if self._limit is None or self.budget(in_flight) > 0 or self._probe is not None:
            return None
        return self.end()

    # ------------------------------------------------------------------ what happened

    def sending(self, ticket: int, in_flight: int) -> None:
        """Request ``ticket`` goes, making ``in_flight``: the probe, if the window is spent."""
        if self._limit is not None and self.budget(in_flight) <= 0 and self._probe is None:
            self._probe = ticket

    def settled(self, ticket: int) -> None:
        """Request ``ticket`` was answered, or failed: no longer a probe out."""
        if ticket == self._probe:
            self._probe = None

    def forget_probe(self) -> None:
        """No request is out any more (a forked child's pacer)."""
        self._probe = None

    def counted(self, remaining: int, now: float) -> None:
        """Any answer's ``Remaining``: the lowest of the window is the server's highest count."""
        if self._limit is not None and remaining < self._remaining:
            self._remaining, self._lowest_at = remaining, now

    def answered(self, sent: float, answered: float, limit: int, remaining: int) -> None:
        """A successful answer with rate-limit headers: the regime on, window openings, and
        its ``Remaining`` :meth:`counted`."""
        if limit != self._limit:
            if self._limit is not None:
                logger.debug("pacer: the server's limit changed to %d", limit)
            self._limit = limit
            self._opened = self._longest = self._ends_at = None
            self._shortest = 0.0
            self._remaining, self._lowest_at = remaining, answered
        if remaining == limit - 1 or (sent > self._lowest_at and remaining >= self._remaining):
            # A new window: within one, a request sent after an answer is counted after it,
            # so it would see less Remaining. With Limit - 1 this request opened it.
            self._remaining, self._lowest_at = remaining, answered
            self._ends_at = None
            if remaining == limit - 1:
                if self._opened is not None and sent > self._opened[1]:
                    # Two openings are at least a window apart.
                    self._bound(answered - self._opened[0])
                self._opened = (sent, answered)
            else:
                self._opened = None  # opened by someone else sharing the limit: when is unknown
        elif self._opened is not None:  # counted in this window: it was still open then
            self._shortest = max(self._shortest, sent - self._opened[1])
        self.counted(remaining, answered)

    def refused(self, sent: float, earliest: float, end: float) -> None:
        """A throttle's 429 for a request sent at ``sent``: the window ends after ``earliest``
        and by ``end`` (:func:`~mihu_frames.pacing.signals.refusal_end`); bounds of its length."""
        if self._limit is None:
            return
        self._ends_at = end
        if self._opened is None or sent < self._opened[0]:
            return
        shortest = earliest - self._opened[1]
        if self._longest is not None and self._longest <= shortest:
            self._longest = None  # the window was still open then: the server's changed
            self._shortest = 0.0
        self._shortest = max(self._shortest, shortest)
        self._bound(end - self._opened[0])

    def _bound(self, bound: float) -> None:
        if self._longest is None or bound < self._longest:
            self._longest = bound
            logger.debug("pacer: the server's window is at most %.3f s", bound)
