"""Handing freed memory back to the system during a big load.

A load's page bodies are allocated by many fetching threads and freed by the decoder thread.
glibc's malloc keeps an arena per thread and rarely shrinks them, and pyarrow's allocator
purges freed pages lazily, so a big load's resident memory grows with what it has *freed*
(measured: a third more at the peak for 300,000 sessions). A :class:`GiveBack` asks for it
back every few tens of thousands of sessions the page runner decodes, and once at the end:

- **pyarrow's pool** (``pa.default_memory_pool().release_unused()``) always: it returns only
  pages pyarrow's own allocator holds free, as it would a little later anyway.
- **glibc's malloc** (``malloc_trim(0)``) only when asked, with the environment variable
  ``MIHU_MALLOC_TRIM=1`` (read at the start of each load): it walks and locks every malloc
  arena of the whole process, the host application's too, so a library does not do it
  unasked. A big load in a process of its own (a script, a job, the command line) may opt in
  to keep its peak lower. Elsewhere than glibc (macOS, musl, Windows) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Callable, Mapping

import pyarrow as pa

logger = logging.getLogger("mihu_frames")

#: The environment variable that opts in to ``malloc_trim`` ("1", "true", "yes" or "on").
MALLOC_TRIM_VARIABLE = "MIHU_MALLOC_TRIM"


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def malloc_trim_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``environ`` (default: ``os.environ``) opts in to ``malloc_trim``.

    Examples
    --------
    >>> malloc_trim_wanted({}), malloc_trim_wanted({"MIHU_MALLOC_TRIM": "1"})
    (False, True)
    """
    value = (os.environ if environ is None else environ).get(MALLOC_TRIM_VARIABLE, "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def give_back(malloc_trim: bool = False) -> None:
    """Return the memory pyarrow holds free to the system, and (``malloc_trim``) what glibc's
    malloc holds free in every arena of the process (a few milliseconds)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim() if malloc_trim else None
    if trim is not None:
        logger.debug("freed memory handed back (pyarrow pool, malloc_trim)")
        trim(0)
    else:
        logger.debug("freed memory handed back (pyarrow pool)")


class GiveBack:
    """Hands freed memory back every ``every`` rows decoded in one load, and at its end.

    Parameters
    ----------
    every : int
        Rows decoded between two hand-backs.
    malloc_trim : bool
        Also ``malloc_trim`` (see the module); default: what ``MIHU_MALLOC_TRIM`` says.
    """

    def __init__(self, every: int, malloc_trim: bool | None = None) -> None:
        self.every = every
        self.malloc_trim = malloc_trim_wanted() if malloc_trim is None else malloc_trim
        self.rows = 0
        self.next = every

    def decoded(self, rows: int) -> None:
        """Count ``rows`` decoded; hand memory back each time ``every`` more were."""
        self.rows += rows
        if self.rows >= self.next:
            self.next += self.every
            give_back(self.malloc_trim)

    def finished(self) -> None:
        """The load's table is built: hand back what its batches held (a big load only)."""
        if self.rows >= self.every:
            give_back(self.malloc_trim)
