"""The rate regime: AIMD on a send rate, for a server that sends only 429s.

A bare token bucket (429s with ``Retry-After: 1`` and no rate-limit headers) says nothing of its
rate but that it was exceeded. :class:`SendRate` is off until the first such 429 (before it
nothing is held back), then spaces requests ``1 / rate`` apart:

- *Decrease.* A 429 for a request sent after the last cut sets the rate to 90% of the successes
  per second since the previous cut. A bucket is empty at every 429, so between two cuts what got
  through is exactly its refill rate. At the first cut (after a burst the server let through at
  once) the successes so far are spread over at least a second. A 429 too soon after a cut to
  measure anything cuts the rate to 70%.
- *Increase.* While requests wait for the rate and nothing is refused: doubling each second
  until the rate was measured (the first estimate is rough), then +5% a second, so the rate
  keeps probing upward.
- *Latency.* A smoothed round trip above three times the fastest recent one (and 100 ms more)
  cuts the rate by 10%: a server that slows down is overloaded. The slower round trip is then
  the baseline, so a lasting slowdown cuts once, and a further one again.

It reads no clock and takes no lock: it is told the time, and its owner (the pacer) holds the
lock. Round trips and successes are recorded from the first answer on, so that the first cut
can measure what got through before it.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Mapping

logger = logging.getLogger("mihu_frames")

#: After a 429, the rate is this share of the successes per second measured.
_DECREASE = 0.9
#: A 429 too soon after a cut to measure anything cuts the rate by this factor instead.
_BLIND_DECREASE = 0.7
#: Growth of the rate per second while clean: before the rate was measured, and after.
_FAST_GROWTH = 1.0
_SLOW_GROWTH = 0.05
#: The rate is raised at most this often (seconds).
_RAISE_EVERY = 0.1
#: The rate never goes below this (requests per second).
_MIN_RATE = 0.2
#: Successes are counted over a span of sending time at least this long (shorter is noise),
#: and at most ``_MEASURE_SPAN`` (an idle client is not a slow server).
_MIN_SPAN = 0.5
_MEASURE_SPAN = 10.0
#: A smoothed round trip this many times the fastest recent one, and ``_SLOW_EXTRA`` seconds
#: more, counts as a sign of overload; "recent" is ``_MEASURE_SPAN``.
_SLOW_FACTOR = 3.0
_SLOW_EXTRA = 0.1
_SRTT_WEIGHT = 0.125


class SendRate:
    """The send rate a bucket's 429s set, raised while clean and cut on refusals and slowdowns.

    Requests are numbered in the order they were sent (the pacer's tickets); ``latest`` is the
    number of the latest one sent, so that refusals of requests sent before a cut count as the
    same overshoot.

    Examples
    --------
    >>> rate = SendRate()
    >>> rate.sending(0.0)
    >>> rate.succeeded(1, sent=0.0, now=0.05, latest=2)
    >>> rate.refused(2, sent=0.0, now=0.05, in_flight={}, latest=2)  # 1 through, at least 1 s
    >>> rate.rate
    0.9
    """

    def __init__(self) -> None:
        self._rate: float | None = None  # None: the regime is off
        self._measured = False  # the rate was measured between two refusals
        self._next_slot = 0.0
        self._cut_after = 0  # refusals of requests up to this number belong to the last cut
        self._mark: tuple[int, float, float] | None = None  # measured from: number, sent, unused
        self._unused = 0.0  # seconds the rate allowed a request and none went (refill unused)
        self._raised_at = 0.0
        self._bound = False  # some request waited for the rate since the last raise
        self._first_sent: float | None = None
        self._successes: deque[tuple[int, float]] = deque()  # recent ones: number, sent
        self._min_rtt = (math.inf, 0.0)  # the fastest recent round trip, and when
        self._srtt: float | None = None

    def __repr__(self) -> str:
        return "SendRate(off)" if self._rate is None else f"SendRate({self._rate:.2f}/s)"

    @property
    def rate(self) -> float | None:
        """Requests per second; None until a bare 429 set one."""
        return self._rate

    @property
    def measured(self) -> bool:
        """Whether the rate was measured between two refusals (it then grows slowly)."""
        return self._measured

    # ------------------------------------------------------------------ decisions

    def wait(self, now: float) -> float:
        """Seconds the next request must wait for its slot (0: it may go)."""
        if self._rate is not None and self._next_slot > now:
            self._bound = True
            return self._next_slot - now
        return 0.0

    # ------------------------------------------------------------------ what happened

    def sending(self, now: float) -> None:
        """A request goes at ``now``: it takes the next slot."""
        if self._first_sent is None:
            self._first_sent = now
        if self._rate is not None:
            self._unused += max(0.0, now - self._next_slot)
            self._next_slot = max(self._next_slot, now) + 1.0 / self._rate

    def succeeded(self, ticket: int, sent: float, now: float, latest: int) -> None:
        """Request ``ticket``, sent at ``sent``, was answered at ``now``: count it and its round
        trip; raise the rate while clean, or cut it on a latency rise."""
        successes = self._successes
        successes.append((ticket, sent))
        # Drop what fell out of the span: a request slower than the span is dropped too.
        while successes and successes[0][1] < now - _MEASURE_SPAN:
            successes.popleft()
        rtt = now - sent
        if rtt <= self._min_rtt[0] or now - self._min_rtt[1] > _MEASURE_SPAN:
            self._min_rtt = (rtt, now)
        self._srtt = rtt if self._srtt is None else self._srtt + _SRTT_WEIGHT * (rtt - self._srtt)
        if self._rate is None or ticket <= self._cut_after:
            return
        fastest = self._min_rtt[0]
        if self._srtt > max(_SLOW_FACTOR * fastest, fastest + _SLOW_EXTRA):
            self._slowed(now, self._srtt, fastest, latest)
            return
        elapsed = now - self._raised_at
        if elapsed >= _RAISE_EVERY:
            if self._bound:  # only a rate that holds requests back is raised
                growth = _SLOW_GROWTH if self._measured else _FAST_GROWTH
                self._rate *= (1.0 + growth) ** elapsed
            self._raised_at = now
            self._bound = False

    def refused(
        self, ticket: int, sent: float, now: float, in_flight: Mapping[int, float], latest: int
    ) -> None:
        """A bucket's 429 for request ``ticket``: a multiplicative decrease, to a share of the
        server's measured rate.

        A bucket is empty when it refuses, so the requests sent between two refusals that got
        through, per second of sending, are its refill rate (those still in flight, numbers to
        sending times, count as through: refusals come back first). Before the first refusal
        the server let a burst through; it is spread over at least a second.
        """
        if ticket <= self._cut_after:
            return  # sent before the last cut: the same overshoot
        first_sent = sent if self._first_sent is None else self._first_sent
        first, start, unused = self._mark or (0, first_sent, 0.0)
        start = max(start, sent - _MEASURE_SPAN)
        # Time the rate went unused does not count: the server's allowance overflowed then.
        span = sent - start - min(self._unused - unused, sent - start)
        through = sum(1 for n, at in self._successes if first < n < ticket and at >= start)
        through += sum(1 for n, at in in_flight.items() if first < n < ticket and at >= start)
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
        self._set(rate, now, latest)
        # The server just refused: the next request waits a whole slot of the new rate.
        self._next_slot = max(self._next_slot, now + 1.0 / rate)
        if self._min_rtt[0] < math.inf:  # round trips are judged afresh, one sample at a time
            self._srtt = self._min_rtt[0]

    def _slowed(self, now: float, srtt: float, fastest: float, latest: int) -> None:
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
        self._set(rate, now, latest)
        self._min_rtt = (srtt, now)

    def _set(self, rate: float, now: float, latest: int) -> None:
        """A cut to ``rate``: refusals of requests sent so far are its overshoot."""
        self._rate = rate
        self._cut_after = latest
        self._raised_at = now
        self._bound = False
