"""Handing freed memory back to the system during a big load.

A load's page bodies are allocated by many fetching threads and freed by the decoder thread.
glibc's malloc keeps an arena per thread and rarely shrinks them, and pyarrow's mimalloc
purges freed pages lazily, so a big load's resident memory grows with what it has *freed*
(measured: a third more at the peak for 300,000 sessions). :func:`give_back` asks both to
return what is free now; the page runner calls it every few tens of thousands of sessions
decoded. Elsewhere than glibc (macOS, musl, Windows) the malloc part does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import pyarrow as pa


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


def give_back() -> None:
    """Return the memory malloc and pyarrow hold free to the system (a few milliseconds)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
