"""Pacing requests by the server's own signals: as fast as it allows, with few 429s.

One :class:`Pacer` is shared by every thread of a client (and so by every conversation of a
load); the transport asks it before each attempt (:meth:`Pacer.acquire`) and tells it how the
attempt went (:meth:`Pacer.release`). ``max_workers`` stays the ceiling of requests in flight;
the pacer only ever holds requests back. Three regimes, chosen by what the server sends:

**Rate-limit headers** (``X-RateLimit-Limit`` / ``X-RateLimit-Remaining``, as Laravel's
throttle sends on every response). The latest ``Remaining`` minus the requests sent after the
one it answered is what may still be sent in the window; at zero, sending stops. The window's
end is not in the headers, so one probe goes out: the server answers it, or refuses it with a
429 whose ``Retry-After`` says when the window resets, and everyone waits until then. About one
429 per window: 1 in 61 at Laravel's stock 60 a minute.

**Only 429s** (``Retry-After``, no headers: a bare token bucket). Additive increase,
multiplicative decrease of a send rate: the first 429 sets the rate to 90% of the successes per
second measured over the last seconds (what the server let through while saturated); each
clean second adds 5%; each further 429 goes back to 90% of the measured rate. Every 429's
``Retry-After`` holds the whole client (not just the thread that got it).

**No signals.** Nothing is held back: a load is as fast as ``max_workers`` makes it.

Times are ``time.monotonic()``; the server's ``X-RateLimit-Reset`` (its clock) is used only as
a fallback when a 429 carries no ``Retry-After``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

#: Successes per second are measured over this many seconds (the rate regime).
_MEASURE_SECONDS = 2.0
#: The rate after a 429: this share of the measured successes per second.
_DECREASE = 0.9
#: Each clean second raises the rate by this share.
_INCREASE = 0.05
#: A hold longer than this shows on the progress bar.
VISIBLE_WAIT = 1.0


@dataclass
class PacerStats:
    """What pacing did, since the pacer was made (a load takes the difference)."""

    attempts: int = 0
    rate_limited: int = 0
    waited_seconds: float = 0.0

    def since(self, earlier: PacerStats) -> PacerStats:
        return PacerStats(
            self.attempts - earlier.attempts,
            self.rate_limited - earlier.rate_limited,
            round(self.waited_seconds - earlier.waited_seconds, 6),
        )


class Pacer:
    """Holds requests back as the server's signals say; shared by all threads of a client."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sent = 0  # sequence number of the latest request sent
        self._in_flight = 0
        self._hold_until = 0.0
        # Header regime: the latest (request number, Remaining) seen, and whether it is on.
        self._headers = False
        self._known_seq = 0
        self._remaining = 0
        self._probing = False
        # Rate regime.
        self._rate: float | None = None
        self._next_slot = 0.0
        self._raised_at = 0.0
        self._successes: deque[float] = deque()
        # Stats.
        self._stats = PacerStats()
        self._waiting = 0
        self._waiting_since = 0.0

    # ------------------------------------------------------------------ what a load sees

    def stats(self) -> PacerStats:
        """A copy of the counters (attempts, 429s, seconds some request waited for the pacer)."""
        with self._cond:
            stats = PacerStats(**vars(self._stats))
            if self._waiting:
                stats.waited_seconds += time.monotonic() - self._waiting_since
            return stats

    def waiting(self) -> float:
        """Seconds until requests may go again, when they are held back now; else 0."""
        with self._cond:
            return max(0.0, self._hold_until - time.monotonic())

    # ------------------------------------------------------------------ the transport's side

    def acquire(self, deadline: float | None = None) -> int:
        """Wait until a request may be sent (or ``deadline`` passes); return its number."""
        with self._cond:
            while True:
                now = time.monotonic()
                wait = self._wait_needed(now)
                if wait <= 0 or (deadline is not None and now >= deadline):
                    break
                if deadline is not None:
                    wait = min(wait, deadline - now)
                self._begin_wait(now)
                try:
                    self._cond.wait(wait)
                finally:
                    self._end_wait()
            self._sent += 1
            self._in_flight += 1
            if self._rate is not None:
                self._next_slot = max(self._next_slot, now) + 1.0 / self._rate
            if self._headers and self._budget() <= 0:
                self._probing = True
            return self._sent

    def release(self, ticket: int, status: int | None, headers: Mapping[str, str]) -> None:
        """Record how request ``ticket`` went: its status (None: no response) and headers."""
        with self._cond:
            now = time.monotonic()
            self._in_flight -= 1
            self._stats.attempts += 1
            self._read_headers(ticket, headers)
            if status == 429:
                self._stats.rate_limited += 1
                self._on_429(now, headers)
            elif status is not None and status < 400:
                self._successes.append(now)
                self._on_success(now)
            if ticket >= self._known_seq:
                self._probing = False
            self._cond.notify_all()

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (a 429's ``Retry-After``): the whole client waits."""
        with self._cond:
            self._hold_until = max(self._hold_until, time.monotonic() + max(seconds, 0.0))
            self._cond.notify_all()

    # ------------------------------------------------------------------ decisions

    def _wait_needed(self, now: float) -> float:
        if self._hold_until > now:
            return self._hold_until - now
        if self._headers and self._budget() <= 0:
            # The window is spent: one probe finds out when it resets; the rest wait for it.
            if self._probing or self._in_flight:
                return 0.05
            return 0.0
        if self._rate is not None and self._next_slot > now:
            return self._next_slot - now
        return 0.0

    def _budget(self) -> int:
        """Requests the window still allows, counting those sent since the latest answer."""
        return self._remaining - (self._sent - self._known_seq)

    def _read_headers(self, ticket: int, headers: Mapping[str, str]) -> None:
        remaining = _int_header(headers, "X-RateLimit-Remaining")
        if remaining is None or _int_header(headers, "X-RateLimit-Limit") is None:
            return
        self._headers = True
        if ticket >= self._known_seq:
            self._known_seq, self._remaining = ticket, remaining

    def _on_429(self, now: float, headers: Mapping[str, str]) -> None:
        if "Retry-After" not in headers:
            reset = _int_header(headers, "X-RateLimit-Reset")
            if reset is not None:  # the server's epoch clock: a fallback only
                self._hold_until = max(self._hold_until, now + max(0.0, reset - time.time()))
        if self._headers:
            return
        measured = self._measured(now)
        floor = 1.0 / _MEASURE_SECONDS
        self._rate = max(floor, _DECREASE * measured) if measured else floor
        self._raised_at = now

    def _on_success(self, now: float) -> None:
        if self._rate is not None and now - self._raised_at >= 1.0:
            self._rate *= 1 + _INCREASE
            self._raised_at = now

    def _measured(self, now: float) -> float:
        """Successes per second over the last seconds (or since the first one, if sooner)."""
        while self._successes and self._successes[0] < now - _MEASURE_SECONDS:
            self._successes.popleft()
        if not self._successes:
            return 0.0
        span = max(now - self._successes[0], 0.25)
        return len(self._successes) / span

    def _begin_wait(self, now: float) -> None:
        if not self._waiting:
            self._waiting_since = now
        self._waiting += 1

    def _end_wait(self) -> None:
        self._waiting -= 1
        if not self._waiting:
            self._stats.waited_seconds += time.monotonic() - self._waiting_since


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None
