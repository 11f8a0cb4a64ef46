"""The simulator's clock, which continues the data: what ``now`` is and what ``Date`` says.

With ``clock="simulated"`` the time is ``DATA_END`` (the end of the generated span) plus the time
elapsed since the first ``start``, measured with ``time.monotonic`` (``DATA_END`` before that),
so open sessions look minutes or hours old however long after ``DATA_END`` a demo runs; a restart
does not turn it back. ``clock="wall"`` uses the real clock instead. The ``Date`` header of
every response comes from here, as do the timestamps mutations and drift write (``Dataset``
calls ``DataClock.now_us``).
"""

from __future__ import annotations

import email.utils
import time
from datetime import datetime, timedelta

from mihu_frames.simulator.data import END_US, EPOCH_UTC

_SEC = 1_000_000


class DataClock:
    """The dataset's clock.

    Parameters
    ----------
    mode : {"simulated", "wall"}
        ``"simulated"``: ``DATA_END`` plus the time since ``start``; ``"wall"``: the real time.

    Examples
    --------
    >>> from mihu_frames.simulator import DATA_END
    >>> DataClock("simulated").now() == DATA_END
    True
    """

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._started_ns: int | None = None  # time.monotonic_ns() at the first start()

    def start(self) -> None:
        """Set the clock going, at the first call only (a restart does not turn it back)."""
        if self._started_ns is None:
            self._started_ns = time.monotonic_ns()

    def now_us(self) -> int:
        """The current time in epoch microseconds."""
        if self.mode == "wall":
            return time.time_ns() // 1000
        started = self._started_ns
        if started is None:
            return END_US
        return END_US + (time.monotonic_ns() - started) // 1000

    def now(self) -> datetime:
        """The current time as a timezone-aware UTC datetime (microsecond resolution)."""
        return EPOCH_UTC + timedelta(microseconds=self.now_us())

    def http_date(self, latest_us: int) -> str:
        """A ``Date`` header value: now, rounded up to the second and never before ``latest_us``.

        Parameters
        ----------
        latest_us : int
            The latest instant handed out (``Dataset.latest_us``), so that every timestamp a
            response can contain is at or before its ``Date``.

        Returns
        -------
        str
            An RFC 7231 date, such as ``"Sun, 01 Nov 2026 00:00:01 GMT"``.
        """
        us = max(self.now_us(), latest_us)
        seconds = -(-us // _SEC)
        return email.utils.format_datetime(EPOCH_UTC + timedelta(seconds=seconds), usegmt=True)
