"""Pacing requests by the server's own signals: as fast as it allows, with few 429s.

One :class:`Pacer` is shared by every thread of a client (and so by every conversation of a
load). The transport asks it before each attempt (:meth:`Pacer.acquire`), tells it how the
attempt went (:meth:`Pacer.release`) and, after a 429, hands it the ``Retry-After`` it parsed
(:meth:`Pacer.hold`). ``max_workers`` stays the ceiling of requests in flight: the pacer only
ever holds requests back. What it does depends on what the server sends:

- **Rate-limit headers** (``X-RateLimit-Limit`` and ``-Remaining`` on successful answers, as
  Laravel's throttle sends them): the window is learned and its budget spent in bursts; one
  probe finds when the first window ends, later windows open without a 429
  (:mod:`~mihu_frames.pacing.window`; a 429's end: :mod:`~mihu_frames.pacing.signals`).
- **Only 429s** (no rate-limit headers: a bare token bucket, ``Retry-After: 1``): AIMD on a
  send rate, started by the first 429; before it nothing is held back
  (:mod:`~mihu_frames.pacing.rate`). A bare ``Retry-After`` longer than a second is not a
  bucket's: the whole client waits.
- **A 429 with rate-limit headers but answers without them** (a throttle-like refusal from a
  noisy upstream): the whole client waits its ``Retry-After``; the rate is not cut.
- **No signals.** Nothing is held back but by the slow start
  (:mod:`~mihu_frames.pacing.flight`): a load is as fast as ``max_workers`` makes it.

Where things live:

========================  ============================================================
``pacer.py``              :class:`Pacer`: the lock, and the order its parts are consulted
``window.py``             :class:`~.window.HeaderWindow`: the header regime (the window)
``rate.py``               :class:`~.rate.SendRate`: the rate regime (AIMD, latency)
``flight.py``             :class:`~.flight.InFlight`: requests in flight; the slow start
``holds.py``              :class:`~.holds.Holds`: ``Retry-After`` holds
``signals.py``            reading the headers; when a 429 ends
``accounting.py``         :class:`PacerStats` and the tally behind it (waited seconds)
``clock.py``              :class:`Clock`: the time and waiting, injectable for tests
========================  ============================================================

The regimes and holds read no clock: they are told the time, so every decision can be tested
in milliseconds; the pacer takes a :class:`Clock` (``time.monotonic()`` by default: its
instants, deadlines included, are on that clock). ``X-RateLimit-Reset`` (the server's Unix
time) is converted with the clock's :meth:`Clock.wall`.
"""

from __future__ import annotations

from mihu_frames.pacing.accounting import PacerStats
from mihu_frames.pacing.clock import Clock, SystemClock
from mihu_frames.pacing.pacer import Pacer
from mihu_frames.pacing.signals import MAX_HOLD

#: A hold longer than this shows on the progress bar.
VISIBLE_WAIT = 1.0

__all__ = ["MAX_HOLD", "VISIBLE_WAIT", "Clock", "Pacer", "PacerStats", "SystemClock"]
