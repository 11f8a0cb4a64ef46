"""The :class:`Pacer`: one lock over the parts that decide when a request may go.

The pacer owns the lock and the clock, and consults its parts in this order for each request:

1. :class:`~mihu_frames.pacing.holds.Holds`: a ``Retry-After`` being honoured holds everyone;
2. :class:`~mihu_frames.pacing.flight.InFlight`: the slow start caps the requests in flight;
3. :class:`~mihu_frames.pacing.window.HeaderWindow`: a spent window holds everyone until it
   is surely over (the header regime);
4. :class:`~mihu_frames.pacing.rate.SendRate`: the send rate spaces requests (the rate regime).

It tells them what happened to each request, and counts it
(:class:`~mihu_frames.pacing.accounting.Tally`). Who waits after a 429 is decided in
:meth:`Pacer.release`:

- a 429 without rate-limit headers whose ``Retry-After`` is at most a second (or missing) is a
  bucket's: the rate is cut; only the refused request waits its ``Retry-After`` (others go on at
  the cut rate: a bucket refills continuously);
- any other 429 holds the whole client until its end
  (:func:`~mihu_frames.pacing.signals.refusal_end`); with rate-limit headers it also bounds the
  window's length. A 429 with rate-limit headers while answers carry none (a throttle-like
  refusal from a noisy upstream) cuts no rate, as such refusals do not depend on how fast the
  client sends.

``Pacer(pace=False)`` holds nothing back and makes only the refused request wait its
``Retry-After``: what a fixed pool of threads with urllib3's ``Retry`` does (the benchmarks
compare the two).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping

from mihu_frames._forking import renew_after_fork
from mihu_frames.pacing.accounting import PacerStats, Tally
from mihu_frames.pacing.clock import Clock, SystemClock
from mihu_frames.pacing.flight import InFlight
from mihu_frames.pacing.holds import Holds
from mihu_frames.pacing.rate import SendRate
from mihu_frames.pacing.signals import int_header, refusal_end, retry_after
from mihu_frames.pacing.window import HeaderWindow

#: A bare 429's Retry-After up to this is a bucket's "soon": only the refused request waits.
_BUCKET_RETRY_AFTER = 1.0
#: Longest single wait on the condition (a safety net; releases and holds wake waiters).
_MAX_NAP = 1.0


class Pacer:
    """Holds requests back as the server's signals say; shared by all threads of a client.

    See :mod:`mihu_frames.pacing` for the rules.

    Parameters
    ----------
    pace : bool
        False: hold nothing back; a refused request waits its own ``Retry-After`` and nothing
        else does (a fixed pool, for comparison). Counting goes on either way.
    clock : Clock, optional
        Where the time comes from and how to wait (default: the real clock). Every instant
        the pacer takes or returns is on this clock.

    Examples
    --------
    >>> pacer = Pacer()
    >>> ticket = pacer.acquire()
    >>> pacer.release(ticket, 200, {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "59"})
    >>> pacer.stats().attempts
    1
    """

    def __init__(self, *, pace: bool = True, clock: Clock | None = None) -> None:
        self.pace = pace
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._cond = threading.Condition()
        self._flight = InFlight()
        self._holds = Holds()
        self._window = HeaderWindow()  # on once a successful answer carried the headers
        self._rate = SendRate()  # on once a bare 429 arrived
        self._tally = Tally()
        renew_after_fork(self)

    def _after_fork(self) -> None:
        # The child has only the forking thread: nothing of the parent's is in flight here, and
        # the condition may have been held by a thread that no longer exists.
        self._cond = threading.Condition()
        self._flight.clear()
        self._window.forget_probe()
        self._tally.forget_waiters()

    def __repr__(self) -> str:
        with self._cond:
            parts = [f"pace={self.pace}"]
            limit = self._window.limit
            if limit is not None:
                parts.append(f"limit={limit}, budget={self._window.budget(len(self._flight))}")
                shortest, longest = self._window.bounds
                if longest is not None:
                    parts.append(f"window {shortest:.3f}-{longest:.3f}s")
            if self._rate.rate is not None:
                parts.append(f"rate={self._rate.rate:.2f}/s")
            return f"Pacer({', '.join(parts)})"

    # ------------------------------------------------------------------ what a load sees

    def stats(self) -> PacerStats:
        """A copy of the counters (attempts, 429s, seconds some request waited for the pacer)."""
        with self._cond:
            return self._tally.stats(self._clock.now())

    def waiting(self) -> float:
        """Seconds until requests may go again, when the whole client is held back now; else 0.

        A ``Retry-After`` being honoured, or a spent window whose end is known.
        """
        with self._cond:
            until = self._holds.until
            if self.pace:
                at = self._window.held_until(len(self._flight))
                if at is not None:
                    until = max(until, at)
            return max(0.0, until - self._clock.now())

    @property
    def rate(self) -> float | None:
        """The send rate (requests per second) when 429s without headers set one; else None."""
        with self._cond:
            return self._rate.rate

    @property
    def window(self) -> tuple[int, float, float | None] | None:
        """What the rate-limit headers taught: the limit, and the window's length at least and
        at most (None: not known yet); None when no answer carried the headers."""
        with self._cond:
            limit = self._window.limit
            return None if limit is None else (limit, *self._window.bounds)

    # ------------------------------------------------------------------ the transport's side

    def acquire(self, deadline: float | None = None, not_before: float = 0.0) -> int:
        """Wait until a request may be sent; return its number (for :meth:`release`).

        Parameters
        ----------
        deadline : float, optional
            An instant of the pacer's clock (``time.monotonic()``): return then even if the
            request should still wait (the caller checks its deadline).
        not_before : float
            An instant before which this request must not go (what :meth:`hold` returned for
            its previous attempt).
        """
        with self._cond:
            now = self._await_turn(deadline, not_before)
            ticket = self._flight.send(now)
            self._rate.sending(now)
            if self.pace:
                self._window.sending(ticket, len(self._flight))
            return ticket

    def release(self, ticket: int, status: int | None, headers: Mapping[str, str]) -> None:
        """Record how request ``ticket`` went: its status (None: no response) and headers.

        A 429 is acted on here (a hold for everyone, or a cut of the rate), before another
        request can be let go.
        """
        with self._cond:
            now = self._clock.now()
            sent = self._flight.answer(ticket, now)
            self._window.settled(ticket)
            self._tally.attempt(refused=status == 429)
            limit = int_header(headers, "X-RateLimit-Limit")
            remaining = int_header(headers, "X-RateLimit-Remaining")
            if status == 429:
                if self.pace:
                    self._refused(ticket, sent, now, headers, limit is not None)
            elif status is not None and status < 400:
                self._flight.succeeded()
                self._rate.succeeded(ticket, sent, now, self._flight.latest)
                if limit is not None and remaining is not None:
                    self._window.answered(sent, now, limit, remaining)
            if remaining is not None:
                self._window.counted(remaining, now)
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
            The instant before which the refused request must not be sent again (pass it to
            :meth:`acquire`): the end of the hold :meth:`release` put on every request, or
            ``seconds`` from now for this request alone.
        """
        with self._cond:
            until = self._clock.now() + max(float(seconds), 0.0)
            held = self._holds.take(ticket) if ticket is not None else None
            if held is not None:
                return held
            if ticket is None and self.pace and self._holds.everyone(until):
                self._cond.notify_all()
            return until

    # ------------------------------------------------------------------ decisions

    def _await_turn(self, deadline: float | None, not_before: float) -> float:
        """Wait (the lock held) until a request may go, or the deadline; return the time."""
        while True:
            now = self._clock.now()
            wait, limited = self._wait_needed(now, not_before)
            if wait <= 0 or (deadline is not None and now >= deadline):
                return now
            if deadline is not None:
                wait = min(wait, deadline - now)
            if not limited:  # the slow start: not a wait for the server's limit
                self._clock.wait(self._cond, min(wait, _MAX_NAP))
                continue
            self._tally.begin_wait(now)
            try:
                self._clock.wait(self._cond, min(wait, _MAX_NAP))
            finally:
                self._tally.end_wait(self._clock.now())

    def _wait_needed(self, now: float, not_before: float) -> tuple[float, bool]:
        """Seconds this request must still wait (math.inf: until an answer arrives), and
        whether that is a wait for the server's limit."""
        if not self.pace:
            return not_before - now, True
        wait = max(self._holds.until, not_before) - now
        if wait > 0:
            return wait, True
        if self._flight.full():
            return math.inf, False
        window = self._window.wait(now, len(self._flight))
        if window is not None:
            return window, True
        return self._rate.wait(now), True

    def _refused(
        self, ticket: int, sent: float, now: float, headers: Mapping[str, str], throttle: bool
    ) -> None:
        """A 429: hold everyone until the window ends, or (a bucket's) cut the rate."""
        wall = self._clock.wall()
        seconds = retry_after(headers.get("Retry-After"), wall)
        if not throttle and (seconds is None or seconds <= _BUCKET_RETRY_AFTER):
            self._rate.refused(ticket, sent, now, self._flight.sent_at, self._flight.latest)
            return
        reset = int_header(headers, "X-RateLimit-Reset")
        reset_at = None if reset is None else reset - wall + now
        until, earliest = refusal_end(sent, now, seconds, reset_at)
        self._holds.refused(ticket, until, now)
        if throttle:
            self._window.refused(sent, earliest, until)
