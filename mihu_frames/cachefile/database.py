"""The SQLite file itself: connections to it, and whether another process keeps it locked.

Every part of the cache file reads and writes its own tables through :meth:`Database.connect`
(requests-cache's backend keeps connections of its own, see :mod:`.pages`). A connection
never creates the file: a write finishing after the file was removed must not put a new one
(with default permissions) in its place. Another process that keeps the file's write lock
longer than the client's ``timeout`` is a :class:`~mihu_frames.errors.CacheLockedError`, never
a hang: requests-cache retries a locked write without end, so the file is asked first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mihu_frames.errors import CacheLockedError


class Database:
    """Connections to one SQLite file, and the check that it is not locked for good.

    Parameters
    ----------
    path : Path
        The SQLite file (it must exist: see :meth:`connect`).
    timeout : float
        Seconds to wait for another connection's lock before giving up.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A new connection in autocommit mode (transactions are begun explicitly), WAL, closed
        on exit; the file is opened read-write, never created."""
        uri = self.path.resolve().as_uri() + "?mode=rw"
        db = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        try:
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=normal")  # as requests-cache does with WAL
            yield db
        finally:
            db.close()

    def check_not_locked(self) -> None:
        """Fail clearly when another process holds the SQLite write lock for ``timeout`` s.

        Raises
        ------
        CacheLockedError
            Naming the file, when the lock could not be taken in time.
        """
        db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            db.execute("begin immediate")
            db.execute("rollback")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            raise CacheLockedError(
                f"the cache file {self.path} is locked by another process (waited "
                f"{self.timeout:g} s); close it there, or use another cache= path"
            ) from None
        finally:
            db.close()
