"""The pacer's clock: what time it is, and waiting on a condition for a while.

The :class:`~mihu_frames.pacing.Pacer` reads the time and waits only through a :class:`Clock`,
so that its decisions can be run on a clock the caller moves (the unit tests do, in
milliseconds); :class:`SystemClock` is the real one and the default. The regimes the pacer
consults (:mod:`~mihu_frames.pacing.window`, :mod:`~mihu_frames.pacing.rate`) read no clock at
all: they are given the time.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What the pacer needs of a clock.

    Examples
    --------
    >>> clock = SystemClock()
    >>> clock.now() <= clock.now()
    True
    """

    def now(self) -> float:
        """Seconds on a monotonic clock: the instants the pacer deals in (deadlines, holds)."""
        ...

    def wall(self) -> float:
        """Unix time in seconds: to read ``X-RateLimit-Reset`` and HTTP dates."""
        ...

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        """Wait on ``condition`` (held by the caller) until notified or ``seconds`` passed."""
        ...


class SystemClock:
    """The real clock: ``time.monotonic()``, ``time.time()`` and ``Condition.wait``."""

    def now(self) -> float:
        """``time.monotonic()``."""
        return time.monotonic()

    def wall(self) -> float:
        """``time.time()``."""
        return time.time()

    def wait(self, condition: threading.Condition, seconds: float) -> None:
        """``condition.wait(seconds)``."""
        condition.wait(seconds)
