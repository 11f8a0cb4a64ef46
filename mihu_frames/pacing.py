"""Pacing requests by the server's own signals: as fast as it allows, with few 429s.

One :class:`Pacer` is shared by every thread of a client (and so by every conversation of a
load). The transport asks it before each attempt (:meth:`Pacer.acquire`), tells it how the
attempt went (:meth:`Pacer.release`) and, after a 429, hands it the ``Retry-After`` it parsed
(:meth:`Pacer.hold`). ``max_workers`` stays the ceiling of requests in flight: the pacer only
ever holds requests back. What it does depends on what the server sends.

**Rate-limit headers** (``X-RateLimit-Limit`` and ``-Remaining`` on successful answers, as
Laravel's throttle sends them). A fixed window: it opens at the first request counted after the
previous one ended and lets ``Limit`` requests through.

- *Budget.* The lowest ``Remaining`` seen in the window (the server's highest count) minus the
  requests still unanswered (answers overtake each other, so any of them may be uncounted) is
  what the window surely still allows; requests go at once while it is positive (a burst, as
  the server allows) and stop at zero. A request sent after an answer and seeing at least as
  much ``Remaining`` is in a new window.
- *The window's end.* The headers do not say when the window ends, so the pacer learns it. The
  answer with ``Remaining = Limit - 1`` was the window's first request: the window opened
  between its sending and its answer. The first time the budget is spent and the window's
  length is not known, one probe goes out; the server answers it (a new window) or refuses it
  with a 429 whose ``Retry-After`` and ``X-RateLimit-Reset`` say when the window ends. From
  then on the window's length has an upper bound (the honoured end minus the opening, or the
  time between two openings), and each later window's first request is sent as soon as the
  window is sure to be over: no 429 at all after the first window while the limit stays put.
- *Whole-second rounding.* ``Retry-After`` is rounded up to whole seconds from when the 429 was
  made, ``X-RateLimit-Reset`` to a whole second of the server's clock: both are bounds of the
  same instant with independent rounding, so the hold ends at the earlier of the two, and the
  window ended after the later of (each minus a second). ``Reset`` is used only when it agrees
  with ``Retry-After`` (a server clock a second or more behind ours is ignored). A Laravel
  window lasts whole seconds (``decaySeconds``), so when the window's length is bounded from
  above and below, the largest whole number of seconds within the bounds is taken: no later
  window waits for the rounding. A window that is not whole seconds shows itself by a 429
  (honoured like any), which raises the lower bound past that guess.

**Only 429s** (no rate-limit headers: a bare token bucket, ``Retry-After: 1``). AIMD on a send
rate, started by the first 429 (before it nothing is held back):

- *Decrease.* A 429 for a request sent after the last cut sets the rate to 90% of the successes
  per second since the previous cut. A bucket is empty at every 429, so between two cuts what got
  through is exactly its refill rate. At the first cut (after a burst the server let through at
  once) the successes so far are spread over at least a second.
- *Increase.* While requests wait for the rate and nothing is refused: doubling each second
  until the rate was measured (the first estimate is rough), then +5% a second, so the rate
  keeps probing upward.
- *Latency.* A smoothed round trip above three times the fastest recent one (and 100 ms more)
  cuts the rate by 10%: a server that slows down is overloaded. The slower round trip is then
  the baseline, so a lasting slowdown cuts once, and a further one again.
- *Retry-After.* The refused request waits its ``Retry-After`` (others go on at the cut rate:
  a bucket refills continuously). A bare ``Retry-After`` longer than a second is not a bucket's:
  the whole client waits.

**A 429 with rate-limit headers but answers without them** (a throttle-like refusal from a noisy
upstream): the whole client waits its ``Retry-After``; the rate is not cut, as such refusals
do not depend on how fast the client sends.

**No signals.** Nothing is held back: a load is as fast as ``max_workers`` makes it.

``Pacer(pace=False)`` holds nothing back and makes only the refused request wait its
``Retry-After``: what a fixed pool of threads with urllib3's ``Retry`` does (the benchmarks
compare the two). Times are ``time.monotonic()``; ``X-RateLimit-Reset`` (the server's Unix
time) is converted with the local clock.
"""

from __future__ import annotations

import email.utils
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from mihu_frames._forking import renew_after_fork

logger = logging.getLogger("mihu_frames")

#: After a 429, the rate is this share of the successes per second measured.
_DECREASE = 0.9
#: A 429 too soon after a cut to measure anything cuts the rate by this factor instead.
_BLIND_DECREASE = 0.7
#: Growth of the rate per second while clean: before the rate was measured, and after.
_FAST_GROWTH = 1.0
_SLOW_GROWTH = 0.05
#: Requests in flight before any answer (the default ``max_workers``); every two successes
#: allow one more (a slow start: half as many again each round trip, so that a limit is met by
#: a small wave of requests rather than by all of ``max_workers`` at once).
_START_IN_FLIGHT = 8
#: The rate never goes below this (requests per second).
_MIN_RATE = 0.2
#: Successes are counted over a span of sending time at least this long (shorter is noise),
#: and at most ``_MEASURE_SPAN`` (an idle client is not a slow server).
_MIN_SPAN = 0.5
_MEASURE_SPAN = 10.0
#: A bare 429's Retry-After up to this is a bucket's "soon": only the refused request waits.
_BUCKET_RETRY_AFTER = 1.0
#: A smoothed round trip this many times the fastest recent one, and ``_SLOW_EXTRA`` seconds
#: more, counts as a sign of overload (rate regime only); "recent" is ``_MEASURE_SPAN``.
_SLOW_FACTOR = 3.0
_SLOW_EXTRA = 0.1
_SRTT_WEIGHT = 0.125
#: A server clock this far behind ours makes its ``X-RateLimit-Reset`` unusable (seconds).
_CLOCK_TOLERANCE = 0.25
#: Longest single wait on the condition (a safety net; releases and holds wake waiters).
_MAX_NAP = 1.0
#: Holds remembered for :meth:`Pacer.hold` (those of requests out of retries are dropped).
_HOLDS_KEPT = 256
#: The longest hold a 429 can put on the client (the transport's ``RETRY_AFTER_MAX``).
MAX_HOLD = 60.0
#: A hold longer than this shows on the progress bar.
VISIBLE_WAIT = 1.0


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


class Pacer:
    """Holds requests back as the server's signals say; shared by all threads of a client.

    See the module for the rules.

    Parameters
    ----------
    pace : bool
        False: hold nothing back; a refused request waits its own ``Retry-After`` and nothing
        else does (a fixed pool, for comparison). Counting goes on either way.

    Examples
    --------
    >>> pacer = Pacer()
    >>> ticket = pacer.acquire()
    >>> pacer.release(ticket, 200, {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59"})
    >>> pacer.stats().attempts
    1
    """

    def __init__(self, *, pace: bool = True) -> None:
        self.pace = pace
        self._cond = threading.Condition()
        self._sent = 0  # number of the latest request sent
        self._in_flight: dict[int, float] = {}  # request number -> when it was sent
        self._in_flight_cap = float(_START_IN_FLIGHT)
        self._first_sent: float | None = None
        self._hold_until = 0.0
        self._holds: dict[int, float] = {}  # refused request -> end of the hold it caused
        # Header regime (on once a successful answer carried the headers).
        self._limit: int | None = None
        self._remaining = 0  # the lowest Remaining of this window: the server's highest count
        self._lowest_at = 0.0  # when the answer that said so arrived
        self._opened: tuple[float, float] | None = None  # this window's opener: sent, answered
        self._window_max: float | None = None  # upper bound of the window's length
        self._window_min = 0.0  # and its lower bound
        self._probe_at: float | None = None  # honoured end of this window, after a 429
        self._probe: int | None = None  # the one request out while the budget is spent
        # Rate regime (on once a bare 429 arrived).
        self._rate: float | None = None
        self._measured = False  # the rate was measured between two refusals
        self._next_slot = 0.0
        self._cut_after = 0  # refusals of requests up to this number belong to the last cut
        self._mark: tuple[int, float, float] | None = None  # measured from: number, sent, unused
        self._unused = 0.0  # seconds the rate allowed a request and none went (refill unused)
        self._raised_at = 0.0
        self._rate_bound = False  # some request waited for the rate since the last raise
        self._successes: deque[tuple[int, float]] = deque()  # recent ones: number, sent
        self._min_rtt = (math.inf, 0.0)  # the fastest recent round trip, and when
        self._srtt: float | None = None
        # Stats.
        self._stats = PacerStats()
        self._waiting = 0
        self._waiting_since = 0.0
        renew_after_fork(self)

    def _after_fork(self) -> None:
        # The child has only the forking thread: nothing of the parent's is in flight here, and
        # the condition may have been held by a thread that no longer exists.
        self._cond = threading.Condition()
        self._in_flight.clear()
        self._probe = None
        self._waiting = 0

    def __repr__(self) -> str:
        with self._cond:
            parts = [f"pace={self.pace}"]
            if self._limit is not None:
                parts.append(f"limit={self._limit}, budget={self._budget()}")
                if self._window_max is not None:
                    parts.append(f"window {self._window_min:.3f}-{self._window_max:.3f}s")
            if self._rate is not None:
                parts.append(f"rate={self._rate:.2f}/s")
            return f"Pacer({', '.join(parts)})"

    # ------------------------------------------------------------------ what a load sees

    def stats(self) -> PacerStats:
        """A copy of the counters (attempts, 429s, seconds some request waited for the pacer)."""
        with self._cond:
            stats = PacerStats(**vars(self._stats))
            if self._waiting:
                stats.waited_seconds += time.monotonic() - self._waiting_since
            return stats

    def waiting(self) -> float:
        """Seconds until requests may go again, when the whole client is held back now; else 0.

        A ``Retry-After`` being honoured, or a spent window whose end is known.
        """
        with self._cond:
            now = time.monotonic()
            until = self._hold_until
            if self.pace and self._limit is not None and self._budget() <= 0:
                at = self._window_end()
                if at is not None and self._probe is None:
                    until = max(until, at)
            return max(0.0, until - now)

    @property
    def rate(self) -> float | None:
        """The send rate (requests per second) when 429s without headers set one; else None."""
        with self._cond:
            return self._rate

    # ------------------------------------------------------------------ the transport's side

    def acquire(self, deadline: float | None = None, not_before: float = 0.0) -> int:
        """Wait until a request may be sent; return its number (for :meth:`release`).

        Parameters
        ----------
        deadline : float, optional
            A ``time.monotonic()`` instant: return then even if the request should still
            wait (the caller checks its deadline).
        not_before : float
            A ``time.monotonic()`` instant before which this request must not go (what
            :meth:`hold` returned for its previous attempt).
        """
        with self._cond:
            while True:
                now = time.monotonic()
                wait, limited = self._wait_needed(now, not_before)
                if wait <= 0 or (deadline is not None and now >= deadline):
                    break
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if not limited:  # the slow start: not a wait for the server's limit
                    self._cond.wait(min(wait, _MAX_NAP))
                    continue
                self._begin_wait(now)
                try:
                    self._cond.wait(min(wait, _MAX_NAP))
                finally:
                    self._end_wait()
            self._sent += 1
            ticket = self._sent
            self._in_flight[ticket] = now
            if self._first_sent is None:
                self._first_sent = now
            if self.pace:
                if self._rate is not None:
                    self._unused += max(0.0, now - self._next_slot)
                    self._next_slot = max(self._next_slot, now) + 1.0 / self._rate
                if self._limit is not None and self._budget() <= 0 and self._probe is None:
                    self._probe = ticket
            return ticket

    def release(self, ticket: int, status: int | None, headers: Mapping[str, str]) -> None:
        """Record how request ``ticket`` went: its status (None: no response) and headers.

        A 429 is acted on here (a hold for everyone, or a cut of the rate), before another
        request can be let go.
        """
        with self._cond:
            now = time.monotonic()
            sent = self._in_flight.pop(ticket, now)
            self._stats.attempts += 1
            if ticket == self._probe:
                self._probe = None
            limit = _int_header(headers, "X-RateLimit-Limit")
            remaining = _int_header(headers, "X-RateLimit-Remaining")
            if status == 429:
                self._stats.rate_limited += 1
                if self.pace:
                    self._on_refusal(ticket, sent, now, headers, limit is not None)
            elif status is not None and status < 400:
                self._on_success(ticket, sent, now)
                if limit is not None and remaining is not None:
                    self._on_window(sent, now, limit, remaining)
            if self._limit is not None and remaining is not None and remaining < self._remaining:
                self._remaining, self._lowest_at = remaining, now
            self._cond.notify_all()

    def hold(self, seconds: float, ticket: int | None = None) -> float:
        """When a refused request may go again, given its ``Retry-After`` as the transport read it.

        Parameters
        ----------
        seconds : float
            The 429's ``Retry-After`` (or the transport's back-off when it had none).
        ticket : int, optional
            The refused request's number. Without it, the whole client waits ``seconds``.

        Returns
        -------
        float
            The ``time.monotonic()`` instant before which the refused request must not be
            sent again (pass it to :meth:`acquire`): the end of the hold :meth:`release` put
            on every request, or ``seconds`` from now for this request alone.
        """
        with self._cond:
            now = time.monotonic()
            until = now + max(float(seconds), 0.0)
            held = self._holds.pop(ticket, None) if ticket is not None else None
            if held is not None:
                return held
            if ticket is None and self.pace and until > self._hold_until:
                self._hold_until = until
                self._cond.notify_all()
            return until

    # ------------------------------------------------------------------ decisions

    def _wait_needed(self, now: float, not_before: float) -> tuple[float, bool]:
        """Seconds this request must still wait (math.inf: until an answer arrives), and
        whether that is a wait for the server's limit."""
        if not self.pace:
            return not_before - now, True
        wait = max(self._hold_until, not_before) - now
        if wait > 0:
            return wait, True
        if len(self._in_flight) >= self._in_flight_cap:
            return math.inf, False
        if self._limit is not None and self._budget() <= 0:
            # The window is spent: one request goes once it is surely over (or, not knowing
            # when, as a probe); the others wait for its answer.
            if self._probe is not None:
                return math.inf, True
            at = self._window_end()
            if at is None:
                return (math.inf if self._in_flight else 0.0), True
            return at - now, True
        if self._rate is not None and self._next_slot > now:
            self._rate_bound = True
            return self._next_slot - now, True
        return 0.0, True

    def _budget(self) -> int:
        """Requests the window still allows: the server's lowest Remaining, less every request
        still unanswered (answers overtake each other, so any of them may be uncounted)."""
        return self._remaining - len(self._in_flight)

    def _window_end(self) -> float | None:
        """When the current window is surely over, if known."""
        if self._probe_at is not None:
            return self._probe_at
        if self._opened is None or self._window_max is None:
            return None
        length = self._window_max
        whole = math.floor(length + 1e-6)
        if whole >= 1 and whole > self._window_min:
            length = whole  # Laravel's windows last whole seconds: the one the bounds allow
        return self._opened[1] + length

    def _on_window(self, sent: float, answered: float, limit: int, remaining: int) -> None:
        """A successful answer with rate-limit headers: the header regime, and window openings."""
        if limit != self._limit:
            if self._limit is not None:
                logger.debug("pacer: the server's limit changed to %d", limit)
            self._limit = limit
            self._opened = self._window_max = self._probe_at = None
            self._window_min = 0.0
            self._remaining, self._lowest_at = remaining, answered
        if remaining == limit - 1 or (sent > self._lowest_at and remaining >= self._remaining):
            # A new window: within one, a request sent after an answer is counted after it,
            # so it would see less Remaining. With Limit - 1 this request opened it.
            self._remaining, self._lowest_at = remaining, answered
            self._probe_at = None
            if remaining == limit - 1:
                if self._opened is not None and sent > self._opened[1]:
                    # Two openings are at least a window apart.
                    self._bound_window(answered - self._opened[0])
                self._opened = (sent, answered)
            else:
                self._opened = None  # opened by someone else sharing the limit: when is unknown
        elif self._opened is not None:  # counted in this window: it was still open then
            self._window_min = max(self._window_min, sent - self._opened[1])

    def _on_refusal(
        self, ticket: int, sent: float, now: float, headers: Mapping[str, str], throttle: bool
    ) -> None:
        """A 429: hold everyone until the window ends, or (a bucket's) cut the rate."""
        retry_after = _retry_after(headers.get("Retry-After"))
        reset = _int_header(headers, "X-RateLimit-Reset")
        if not throttle and (retry_after is None or retry_after <= _BUCKET_RETRY_AFTER):
            self._cut(now, ticket, sent)
            return
        until = now + (retry_after or 0.0)
        # The window ends after the 429 was made, so after sent (and sent + Retry-After - 1).
        earliest = sent + max((retry_after or 0.0) - 1.0, 0.0)
        if reset is not None:
            # Both are rounded up to whole seconds: take the earlier. A Reset before the
            # earliest end comes from a server clock behind ours.
            at = reset - time.time() + now
            if retry_after is None:
                until = max(at, now)
            elif at >= earliest - _CLOCK_TOLERANCE:
                until = min(until, max(at, now))
                earliest = max(earliest, at - 1.0)
        until = min(until, now + MAX_HOLD)
        self._holds[ticket] = until
        while len(self._holds) > _HOLDS_KEPT:  # those of requests out of retries
            del self._holds[next(iter(self._holds))]
        if until > self._hold_until:
            self._hold_until = until
            logger.debug("pacer: a 429; holding every request for %.3f s", until - now)
        if throttle and self._limit is not None:
            self._learn_window(sent, earliest, until)

    def _learn_window(self, sent: float, earliest: float, end: float) -> None:
        """A 429 for a request sent at ``sent``, in the window opened at ``self._opened``,
        which ends after ``earliest`` and by ``end``: bounds of the window's length."""
        self._probe_at = end
        if self._opened is None or sent < self._opened[0]:
            return
        shortest = earliest - self._opened[1]
        if self._window_max is not None and self._window_max <= shortest:
            self._window_max = None  # the window was still open then: the server's changed
            self._window_min = 0.0
        self._window_min = max(self._window_min, shortest)
        self._bound_window(end - self._opened[0])

    def _bound_window(self, bound: float) -> None:
        if self._window_max is None or bound < self._window_max:
            self._window_max = bound
            logger.debug("pacer: the server's window is at most %.3f s", bound)

    def _on_success(self, ticket: int, sent: float, now: float) -> None:
        """Count it and its round trip; in the rate regime, raise the rate while clean or cut it
        on a latency rise."""
        self._in_flight_cap += 0.5
        successes = self._successes
        successes.append((ticket, sent))
        while successes[0][1] < now - _MEASURE_SPAN:
            successes.popleft()
        rtt = now - sent
        if rtt <= self._min_rtt[0] or now - self._min_rtt[1] > _MEASURE_SPAN:
            self._min_rtt = (rtt, now)
        self._srtt = rtt if self._srtt is None else self._srtt + _SRTT_WEIGHT * (rtt - self._srtt)
        if self._rate is None or not self.pace:
            return
        fastest = self._min_rtt[0]
        if ticket > self._cut_after and self._srtt > max(
            _SLOW_FACTOR * fastest, fastest + _SLOW_EXTRA
        ):
            self._slowed(now, self._srtt, fastest)
            return
        elapsed = now - self._raised_at
        if ticket > self._cut_after and elapsed >= 0.1:
            if self._rate_bound:  # only a rate that holds requests back is raised
                growth = _SLOW_GROWTH if self._measured else _FAST_GROWTH
                self._rate *= (1.0 + growth) ** elapsed
            self._raised_at = now
            self._rate_bound = False

    def _slowed(self, now: float, srtt: float, fastest: float) -> None:
        """Answers slowed down: a multiplicative decrease, and their round trip is the new
        normal (only a further rise cuts again)."""
        assert self._rate is not None
        rate = max(_MIN_RATE, _DECREASE * self._rate)
        logger.debug(
            "pacer: round trips of %.0f ms (fastest %.0f ms); rate %.2f/s -> %.2f/s",
            srtt * 1000,
            fastest * 1000,
            self._rate,
            rate,
        )
        self._rate = rate
        self._cut_after = self._sent
        self._raised_at = now
        self._rate_bound = False
        self._min_rtt = (srtt, now)

    def _cut(self, now: float, ticket: int, sent: float) -> None:
        """Multiplicative decrease, to a share of the server's measured rate.

        A bucket is empty when it refuses, so the requests sent between two refusals that got
        through, per second of sending, are its refill rate (those still in flight count as
        through: refusals come back first). Before the first refusal the server let a burst
        through; it is spread over at least a second.
        """
        if ticket <= self._cut_after:
            return  # sent before the last cut: the same overshoot
        first, start, unused = self._mark or (0, self._first_sent or sent, 0.0)
        start = max(start, sent - _MEASURE_SPAN)
        # Time the rate went unused does not count: the server's allowance overflowed then.
        span = sent - start - min(self._unused - unused, sent - start)
        through = sum(1 for n, at in self._successes if first < n < ticket and at >= start)
        through += sum(1 for n, at in self._in_flight.items() if first < n < ticket and at >= start)
        old = self._rate
        if old is None:
            rate = _DECREASE * through / max(span, 1.0)
        elif span >= _MIN_SPAN:
            rate = _DECREASE * through / span
            self._measured = True
        else:
            rate = _BLIND_DECREASE * old
        if old is None or span >= _MIN_SPAN:
            self._mark = (ticket, sent, self._unused)
        rate = max(rate, _MIN_RATE)
        logger.debug(
            "pacer: a 429; %d through in %.2f s of sending; rate %s -> %.2f/s",
            through,
            span,
            "unpaced" if old is None else f"{old:.2f}/s",
            rate,
        )
        self._rate = rate
        self._cut_after = self._sent
        self._raised_at = now
        self._rate_bound = False
        # The server just refused: the next request waits a whole slot of the new rate.
        self._next_slot = max(self._next_slot, now + 1.0 / rate)
        if self._min_rtt[0] < math.inf:  # round trips are judged afresh, one sample at a time
            self._srtt = self._min_rtt[0]

    def _begin_wait(self, now: float) -> None:
        if not self._waiting:
            self._waiting_since = now
        self._waiting += 1

    def _end_wait(self) -> None:
        self._waiting -= 1
        if not self._waiting:
            self._stats.waited_seconds += time.monotonic() - self._waiting_since


def _retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` value says (a number of seconds, or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        return None
