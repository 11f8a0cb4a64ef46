"""The cache file's writer: one background thread, and the writers' lock shared across processes.

**Writes come after the frame.** Saving pages and stored loads runs on a writer thread after
the load has handed its frame back, one write at a time, in the order handed. A failed write
is logged (nobody waits on its result), never raised.

**Reads wait for the writes handed before them.** :meth:`Writer.flush` waits for the writes
handed to this writer before it began, and for those of any other writer on the same file, in
this process or another, through an advisory lock on ``<file>.loads/.writing``: a writer holds
it (exclusive) while it has writes pending, a flush takes it shared for a moment. A flush never
waits for that lock while its own writer holds it: then no other writer has anything pending.
A writer that cannot take the lock within ``timeout`` drops the write (logged); a flush that
cannot is a :class:`~mihu_frames.errors.CacheLockedError`. Where the platform has no ``flock``
(Windows) a flush waits for its own writer's writes only.

**Lifetime.** The thread is started by the first write (and again by the first after
:meth:`Writer.close`); ``close()`` does not wait: pending writes still run to the end, then the
lock is let go, and the interpreter's exit waits for them. A child process forked while writes
were pending gets a writer of its own: what it inherited (lock, thread, counts, descriptor)
belongs to the parent and is never used, and the inherited descriptor is closed, never unlocked.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mihu_frames._forking import renew_after_fork
from mihu_frames.errors import CacheLockedError

try:
    import fcntl
except ImportError:  # Windows: a flush waits for its own writer's writes only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("mihu_frames")


class Writer:
    """Runs the writes to one cache file in the background, in order, under the writers' lock.

    Parameters
    ----------
    file : Path
        The cache file written to (named in logs and errors).
    lock_path : Path
        The writers' lock file (created 0600 when first needed; its folder must exist).
    timeout : float
        Seconds to wait for another writer's lock before giving up.
    idle : callable, optional
        Called on the writer thread whenever its last pending write finished, before the lock
        is let go: connections live only while writing (a fork then finds none in flight).

    Examples
    --------
    >>> writer = Writer(path, path.parent / ".writing", timeout=5)  # doctest: +SKIP
    >>> writer.submit(print, "saved")  # doctest: +SKIP
    >>> writer.flush()  # "saved" is printed by now  # doctest: +SKIP
    """

    def __init__(
        self,
        file: Path,
        lock_path: Path,
        *,
        timeout: float,
        idle: Callable[[], None] | None = None,
    ) -> None:
        self.file = file
        self.lock_path = lock_path
        self.timeout = timeout
        self._idle = idle
        self._fresh_state()
        renew_after_fork(self)

    def _fresh_state(self) -> None:
        """This process's lock, thread and counts: none started yet (at first, after a fork)."""
        #: Guards the state below; notified whenever a write finishes.
        self._state = threading.Condition(threading.Lock())
        self._thread: ThreadPoolExecutor | None = None  # started by the first write
        self._handed = 0  # writes handed over so far
        self._finished = 0  # of which finished (one thread: in the order handed)
        self._lock_fd: int | None = None  # the writers' lock, held while writes are pending

    def __repr__(self) -> str:
        return f"Writer({str(self.file)!r}, pending={self.pending})"

    @property
    def pending(self) -> int:
        """Writes handed to this writer and not finished yet."""
        return self._handed - self._finished

    def holds_lock(self) -> bool:
        """Whether this writer holds the writers' lock now (it has writes pending)."""
        return self._lock_fd is not None  # one read, no lock: submit() holds it for long

    def submit(self, job: Callable[..., Any], *args: Any) -> None:
        """Run ``job(*args)`` on the writer thread, after the jobs handed to it before.

        The first of a run of writes takes the writers' lock; if another writer keeps it
        longer than ``timeout``, the write is dropped (logged as a warning).
        """
        with self._state:
            if self._thread is None:  # the first write, or the first since close()
                # A closed writer may still run writes handed before close(): this one comes
                # after them (a load's first reads waited for them already, so this is rare).
                self._state.wait_for(lambda: self.pending == 0)
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="mihu-cache-writer")
            if self.pending == 0 and not self._take_lock():
                logger.warning("not saving to %s: another writer holds it too long", self.file)
                return
            self._handed += 1
            try:
                self._thread.submit(self._run, job, args)
            except BaseException:  # the interpreter is shutting down: never keep the lock
                self._handed -= 1
                if self.pending == 0:
                    self._let_go_of_lock()
                raise

    def _run(self, job: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            job(*args)
        except Exception:  # nobody waits on the result: say it here, never lose it silently
            logger.exception("a background write to %s failed", self.file)
        finally:
            with self._state:
                self._finished += 1
                if self.pending == 0:
                    if self._idle is not None:
                        self._idle()
                    self._let_go_of_lock()
                self._state.notify_all()

    def flush(self) -> None:
        """Wait until every write handed over so far to this file is done: this writer's, and
        those another writer (another client or process) has pending.

        Raises
        ------
        CacheLockedError
            When another process keeps writing for longer than ``timeout``.
        """
        with self._state:
            handed = self._handed
            self._state.wait_for(lambda: self._finished >= handed)
        if fcntl is None:
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:  # no writer ever announced itself here
            return
        try:
            # While this writer holds the (exclusive) lock for writes handed after this flush
            # began, no other writer has anything pending: nothing to wait for.
            if not _flock(fd, fcntl.LOCK_SH, self.timeout, self.holds_lock):
                raise CacheLockedError(
                    f"another process kept writing to the cache file {self.file} for longer "
                    f"than {self.timeout:g} s; close it there, or use another cache= path"
                )
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def close(self) -> None:
        """Stop taking writes on this thread without waiting: pending writes still run to the
        end, then the lock is let go. The next :meth:`submit` starts a new thread."""
        with self._state:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.shutdown(wait=False)  # runs what it holds, then its thread ends

    def _take_lock(self) -> bool:
        """Take the writers' lock (exclusive) for the writes about to be pending."""
        if fcntl is None:
            return True
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        if not _flock(fd, fcntl.LOCK_EX, self.timeout):
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _let_go_of_lock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _after_fork(self) -> None:
        """In a forked child: the lock, thread and counts are the parent's.

        Only the thread that forked runs in the child, so a lock another thread held stays
        held for ever: it is new. The inherited descriptor of the writers' lock is closed,
        never unlocked (the lock is the parent's writer's, held through its own descriptor).
        """
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._fresh_state()


def _flock(
    fd: int, operation: int, timeout: float, unneeded: Callable[[], bool] | None = None
) -> bool:
    """``flock`` with a timeout (polling); True when the lock was taken, or when ``unneeded()``
    says, while waiting, that it need not be."""
    assert fcntl is not None
    ends = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if unneeded is not None and unneeded():
                return True
            if time.monotonic() >= ends:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
