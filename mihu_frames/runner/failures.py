"""The ``on_error`` policy of a run: what a failure does, and which conversations failed.

- ``"raise"``: the first failure is raised (the run stops; pages in flight are abandoned).
- ``"warn"``: the conversation is left out, whole, the failure recorded in the run's errors
  and announced as a ``RuntimeWarning`` pointing at the caller's line.
- ``"skip"``: the same, silently (the log keeps a record at INFO).

Under a policy whose pages stand alone (``Paging.pages_alone``: a listing of conversations), a
page after the first that fails is recorded and left out alone; its query goes on.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any

from mihu_frames.errors import MihuError

logger = logging.getLogger("mihu_frames")


class ErrorPolicy:
    """What a run does with each failure, by ``on_error``.

    Parameters
    ----------
    on_error : str
        ``"raise"``, ``"warn"`` or ``"skip"``.
    left_out : str
        How a left-out failure is announced (``{error}``: its scrubbed message).
    pages_alone : bool
        A failed page after the first is left out alone (see the module).
    scrub : callable
        Takes secrets out of a message before it is recorded or shown.
    errors : list of dict
        Where failures are recorded (the run's ``RunStats.errors``).
    changed : callable
        Called after each recorded failure (a query stopped standing).
    """

    def __init__(
        self,
        on_error: str,
        left_out: str,
        pages_alone: bool,
        scrub: Callable[[str], str],
        errors: list[dict[str, Any]],
        changed: Callable[[], None],
    ) -> None:
        self.on_error = on_error
        self.left_out = left_out
        self.pages_alone = pages_alone
        self.scrub = scrub
        self.errors = errors
        self.changed = changed
        #: The conversations left out, with their first failure.
        self.failed: dict[str, MihuError] = {}

    def page_failed(self, error: MihuError) -> None:
        """A page could not be fetched: its query fails, or (pages alone, after page 1) the
        page is left out and the listing goes on (and is not cached: it is not whole)."""
        if self.pages_alone and (error.page or 1) > 1:
            self.record(error)
        else:
            self.fail(error.conversation or "", error)

    def fail(self, conversation: str, error: MihuError) -> None:
        """Leave ``conversation`` out, whole, for ``error`` (raise it under ``"raise"``)."""
        if self.on_error == "raise":
            raise error
        if conversation in self.failed:
            return
        self.failed[conversation] = error
        self.record(error)

    def record(self, error: MihuError) -> None:
        """Count a failure under on_error "warn" or "skip" (and warn under "warn")."""
        if self.on_error == "raise":
            raise error
        message = self.scrub(str(error))
        self.errors.append(
            {
                "conversation": error.conversation,
                "page": error.page,
                "error": type(error).__name__,
                "status_code": error.status_code,
                "message": message,
            }
        )
        text = self.left_out.format(error=message)
        if self.on_error == "warn":
            warnings.warn(text, RuntimeWarning, stacklevel=_first_frame_outside())
        else:  # "skip" is silent; the log keeps a record
            logger.info("%s", text)
        self.changed()


def _first_frame_outside() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside this package."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
