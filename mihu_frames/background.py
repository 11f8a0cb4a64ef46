"""Cache writes a caller does not wait for: one writer thread per cache file, in order.

A load hands its frame back as soon as it is built; saving its pages into requests-cache and
its result into :class:`~mihu_frames.framecache.FrameCache` happen here, afterwards (or, for a
load too big to hold its pages until the end, in chunks while it runs). Everything that reads
the file first calls :func:`flush`, so no reader in this process sees the file without what
was handed to it; interpreter exit waits for the writes. A write killed half-way is one SQLite
transaction that never happened: the next load fetches those pages again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

logger = logging.getLogger("mihu_frames")

_WRITERS: dict[str, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()
_IN_WRITER = threading.local()


def _forget_writers_after_fork() -> None:
    # A forked child inherits the table but not the threads: it starts with writers of its own.
    global _LOCK
    _WRITERS.clear()
    _LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_writers_after_fork)


def _name(path: str | Path) -> str:
    return str(Path(path).resolve())


def submit(path: str | Path, job: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``job(*args)`` on the writer thread of the cache file ``path``, after earlier jobs."""
    name = _name(path)
    with _LOCK:
        writer = _WRITERS.get(name)
        if writer is None:
            writer = _WRITERS[name] = ThreadPoolExecutor(1, thread_name_prefix="mihu-cache-writer")
    return writer.submit(_run, job, args)


def _run(job: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    _IN_WRITER.active = True
    try:
        return job(*args)
    except Exception:  # nobody waits on the result: say it here, never lose it silently
        logger.exception("a background cache write failed")
        raise
    finally:
        _IN_WRITER.active = False


def flush(path: str | Path) -> None:
    """Wait until every write submitted so far for the cache file ``path`` is done."""
    if getattr(_IN_WRITER, "active", False):
        return  # a job reading its own file: everything before it is done already
    with _LOCK:
        writer = _WRITERS.get(_name(path))
    if writer is not None:
        writer.submit(lambda: None).result()


def flush_all() -> None:
    """Wait until every write submitted so far, to any cache file, is done."""
    with _LOCK:
        names = list(_WRITERS)
    for name in names:
        flush(name)
