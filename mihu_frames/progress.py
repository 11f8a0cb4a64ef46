"""The progress bar of a load: pages done, a total that only moves forward, waits shown.

A tqdm text bar: on a terminal it goes to stderr; in Jupyter to the cell's output (as text, not
a widget, so a saved notebook shows the finished bar, not a frozen first state). Its total is
unknown until every query's page count is (each first page says how many pages follow); until
then the bar
counts pages without a percentage, so it never runs backwards. When the server's rate limit
holds requests back for more than a second, the bar says so at once ("waiting for the rate
limit, 23 s") and counts down. Written to something that is not a terminal (a log file, CI), it
refreshes at most every few seconds instead of many times a second (a wait's start and end are
always shown).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from mihu_frames.pacing import VISIBLE_WAIT, Pacer

#: Seconds between refreshes when the output is not a terminal.
QUIET_INTERVAL = 5.0


class Progress:
    """A page counter for one run; does nothing when ``enabled`` is False.

    Parameters
    ----------
    enabled : bool or None
        None: shown on a terminal or in Jupyter.
    label : str
        The bar's description.
    pacer : Pacer
        Asked whether requests are being held back, to say so.
    """

    def __init__(self, enabled: bool | None, label: str, pacer: Pacer) -> None:
        if enabled is None:
            enabled = interactive()
        self._bar: Any = None
        self._pacer = pacer
        self._wait_text = ""
        self._shown_at = 0.0
        self._interval = QUIET_INTERVAL
        # An exception already being handled where the bar starts is not this run's: see close.
        self._outer = sys.exc_info()[1]
        if enabled:
            from tqdm.std import tqdm

            jupyter = _in_jupyter()
            terminal = bool(getattr(sys.stderr, "isatty", lambda: False)())
            self._interval = 0.1 if terminal or jupyter else QUIET_INTERVAL
            self._bar = tqdm(
                total=None,
                unit="page",
                desc=label,
                leave=True,
                file=sys.stdout if jupyter else sys.stderr,
                mininterval=self._interval,
            )

    def advance(self, pages: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(pages)
            self.tick()

    def set_total(self, total: int) -> None:
        """Set the total, once known; it never goes down, and never below what is done."""
        bar = self._bar
        if bar is not None:
            total = max(total, bar.n)
            if bar.total is None or total > bar.total:
                bar.total = total
                bar.refresh()

    def tick(self) -> None:
        """Show, count down or clear a wait for the rate limit."""
        if self._bar is None:
            return
        wait = self._pacer.waiting()
        text = f"waiting for the rate limit, {wait:.0f} s" if wait > VISIBLE_WAIT else ""
        if text == self._wait_text:
            return
        started_or_ended = not text or not self._wait_text
        self._wait_text = text
        self._bar.set_postfix_str(text, refresh=False)
        now = time.monotonic()
        if started_or_ended or now - self._shown_at >= self._interval:
            self._bar.refresh()
            self._shown_at = now

    @property
    def wait_text(self) -> str:
        """What the bar says about waiting now ("" when nothing waits, or without a bar)."""
        return self._wait_text

    def close(self) -> None:
        """End the bar. A run that finished shows its last count as the whole (pages left out
        by ``on_error`` are not coming); a run stopped by an exception on its way out (Ctrl-C,
        an error raised) keeps the count and total where it stopped, and says so."""
        if self._bar is None:
            return
        stopped = sys.exc_info()[1]
        if stopped is self._outer:
            stopped = None
        postfix = ""
        if isinstance(stopped, KeyboardInterrupt):
            postfix = "interrupted"
        elif stopped is not None:
            postfix = f"stopped: {type(stopped).__name__}"
        elif self._bar.total is not None and self._bar.n < self._bar.total:
            self._bar.total = self._bar.n  # pages left out (failed) are not coming
        if postfix or self._wait_text:
            self._wait_text = ""
            self._bar.set_postfix_str(postfix, refresh=False)
        self._bar.close()


def interactive() -> bool:
    """Whether a progress bar has someone to show it to: Jupyter, or a terminal."""
    return _in_jupyter() or bool(getattr(sys.stderr, "isatty", lambda: False)())


def _in_jupyter() -> bool:
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:
        return False
