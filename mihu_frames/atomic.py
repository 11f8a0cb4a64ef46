"""Files that appear whole or not at all, owner-only, and the locks of a snapshot root.

Every file of a snapshot root is written the same way: under a hidden temporary name in the
root's staging folder (``root/.staging/.<final name>.<8 hex>.tmp``, ``0600``), flushed and
fsynced, then renamed onto its final name with :func:`os.replace` (atomic on one file system)
and the folder fsynced. A reader never sees a partial file, also when the writer is killed;
folders are created ``0700`` whatever the umask (contacts are personal data).

Abandoned temporary files
-------------------------
A writer killed mid-write (``kill -9``, power loss) leaves its temporary file behind: part of a
snapshot, contacts included. Every write and compaction first removes such leftovers, without
ever touching a file a live writer in another process is still writing. Writers to one root are
serialized by the root's lock (below), so under it a leftover normally has no writer; the rule
does not rely on that (a lock file on a network file system may not lock), and is, in
:func:`remove_abandoned_temp_files`:

- Only regular files named exactly like ours (:data:`TEMP_NAME`) directly in the folders the
  caller names (the staging folder; in roots of the earlier layout, the ``fetched_date=``
  partition folders, where that layout wrote them) are candidates; nothing else is touched.
- A writer holds an exclusive ``flock`` on its temporary file from before its first byte until
  after the rename, and the kernel drops the lock when the process dies. A candidate the cleaner
  can lock (without waiting) and that holds data has therefore lost its writer: it is removed at
  once. An empty candidate may have been created a moment ago by a writer that has not locked it
  yet: it is removed only when older than :data:`STALE_TEMP_SECONDS` (it holds no data anyway),
  and a writer that finds its new file gone after locking it starts over under a new name.
- Without ``flock`` (Windows) the age rule alone applies to every candidate; there a file still
  open by its writer cannot be removed anyway.

The root lock
-------------
:class:`RootLock` is an exclusive ``flock`` on ``root/.mihu_frames.lock``, held by a writer for
the whole of a write, a sync's storage step or a compaction (never while a sync fetches). A
second writer waits for it (up to :data:`LOCK_TIMEOUT_SECONDS`, then ``TimeoutError``); readers
never take it. The kernel drops it when its holder dies.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; the age rule alone decides (see the module docstring)
    fcntl = None  # type: ignore[assignment]

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "LOCK_TIMEOUT_SECONDS",
    "STALE_TEMP_SECONDS",
    "TEMP_NAME",
    "RootLock",
    "StagedFile",
    "fsync_dir",
    "private_dirs",
    "remove_abandoned_temp_files",
    "stage_parquet",
    "write_json_atomically",
]

logger = logging.getLogger("mihu_frames")

#: Where a temporary file's lock cannot tell, its age does: an unlocked *empty* one (its writer
#: may be between creating and locking it, a matter of microseconds) or, without ``flock``, any
#: one is taken for abandoned once its last write is this old. A write takes seconds and moves
#: the mtime as it goes, so an hour is far beyond any live write, and a leftover still goes the
#: same day.
STALE_TEMP_SECONDS = 3600.0
#: How long a writer waits for another writer of the same root before giving up.
LOCK_TIMEOUT_SECONDS = 600.0
#: The names of our temporary files: ``.<final name>.<8 hex>.tmp``, where the final name is a
#: history file (``<snapshot id>.parquet``), a latest-state file (``part-0.parquet``), the
#: root's manifest or its pending-commit record.
TEMP_NAME = re.compile(
    r"\.(?:\d{8}T\d{12}Z-[0-9a-f]{8}\.parquet|part-0\.parquet|mihu_frames_root\.json"
    r"|pending_commit\.json)\.[0-9a-f]{8}\.tmp"
)
_TEMP_ATTEMPTS = 3
#: Parquet options of every file we write: zstd, dictionaries, row groups small enough that
#: readers skip most of them by their statistics (rows are sorted by conversation).
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": True,
    "row_group_size": 32_768,
}


def private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents owner-only (the umask may not be 077)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)  # another process may race us here
        os.chmod(path, 0o700)


def fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StagedFile:
    """A complete file under its temporary name, locked, waiting to be renamed into place.

    Made by :func:`stage_parquet`; :meth:`publish` renames it onto its final name (while still
    holding its lock, so a cleaner never takes it for abandoned), :meth:`discard` removes it.
    """

    def __init__(self, tmp: Path, fd: int) -> None:
        self.tmp = tmp
        self._fd: int | None = fd
        self.size = os.fstat(fd).st_size

    def publish(self, final: Path) -> Path:
        """Rename onto ``final`` (replacing a file there atomically) and fsync its folder."""
        if self._fd is None:
            raise RuntimeError(f"{self.tmp} was already published or discarded")
        try:
            if fcntl is not None:
                os.replace(self.tmp, final)
        finally:
            os.close(self._fd)
            self._fd = None
        if fcntl is None:
            os.replace(self.tmp, final)  # Windows cannot rename a file that is still open
        fsync_dir(final.parent)
        return final

    def discard(self) -> None:
        """Remove the temporary file (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.tmp.unlink(missing_ok=True)


def stage_parquet(table: pa.Table, staging: Path, final_name: str) -> StagedFile:
    """Write ``table`` to a locked, fsynced temporary file in ``staging``: a :class:`StagedFile`."""
    private_dirs(staging)
    tmp, fd = _create_temp_file(staging, final_name)
    try:
        with open(fd, "wb", closefd=False) as handle:
            pq.write_table(table, handle, **PARQUET_OPTIONS)
            handle.flush()
            os.fsync(handle.fileno())
        return StagedFile(tmp, fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomically(data: Any, final: Path, staging: Path) -> None:
    """Write ``data`` as JSON to ``final``: temporary name, fsync, rename (``0600``)."""
    private_dirs(staging)
    tmp, fd = _create_temp_file(staging, final.name)
    try:
        with open(fd, "w", encoding="utf-8", closefd=False) as handle:
            json.dump(data, handle, indent=2, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    StagedFile(tmp, fd).publish(final)


def _create_temp_file(folder: Path, final_name: str) -> tuple[Path, int]:
    """Create a hidden temporary file for ``final_name`` in ``folder`` (``0600``), locked."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = folder / f".{final_name.lstrip('.')}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        if fcntl is None:
            return tmp, fd
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks only while a cleaner looks at the file
            except OSError:
                return tmp, fd  # a file system without locks: the age rule protects the file
            # A cleaner removes an empty unlocked file only once it is STALE_TEMP_SECONDS old,
            # so this one was not removed before we locked it, unless we stalled that long
            # between two calls or the clock jumped. Then: a new name.
            try:
                if os.path.samestat(os.stat(tmp), os.fstat(fd)):
                    return tmp, fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
    raise OSError(f"could not create a temporary file in {folder}: removed as it was made")


def remove_abandoned_temp_files(folders: Iterable[Path]) -> list[Path]:
    """Remove the temporary files killed writers left directly in ``folders``; never raises.

    See the module docstring for the rule. Returns the files removed.
    """
    removed: list[Path] = []
    candidates: list[Path] = []
    for folder in folders:
        try:
            candidates.extend(p for p in folder.glob(".*.tmp") if TEMP_NAME.fullmatch(p.name))
        except OSError as error:
            logger.warning("could not look for abandoned temporary files in %s: %s", folder, error)
    for path in sorted(candidates):
        try:
            if _remove_if_abandoned(path):
                removed.append(path)
                logger.info("removed abandoned temporary file %s (left by a killed writer)", path)
        except Exception as error:  # cleaning up must never fail the write
            logger.warning("could not remove abandoned temporary file %s: %s", path, error)
    return removed


def _remove_if_abandoned(path: Path) -> bool:
    """Remove ``path`` if its writer is gone (see the module docstring); ``True`` if removed."""
    try:
        if not stat.S_ISREG(path.lstat().st_mode):
            return False  # a folder, a symlink, a pipe: not ours
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags)
    except FileNotFoundError:
        return False  # renamed to its final name or removed meanwhile
    try:
        locked = False
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locked = True
            except BlockingIOError:
                logger.debug("kept temporary file %s: a live writer holds its lock", path)
                return False
            except OSError:
                pass  # a file system without locks: the age rule decides
        info = os.fstat(fd)
        age = time.time() - info.st_mtime
        if not stat.S_ISREG(info.st_mode):
            return False
        # Writers lock before their first byte: locked with data in it means its writer is gone.
        if (not locked or info.st_size == 0) and age < STALE_TEMP_SECONDS:
            logger.debug(
                "kept temporary file %s: %d bytes, locked by us=%s, %.0f s old",
                path,
                info.st_size,
                locked,
                age,
            )
            return False
        try:
            if not os.path.samestat(path.lstat(), info):
                return False  # the name now belongs to another file
        except FileNotFoundError:
            return False
        path.unlink()
        return True
    finally:
        os.close(fd)


class RootLock:
    """The exclusive lock of one snapshot root's writers (see the module docstring).

    Parameters
    ----------
    path : Path
        The lock file (created ``0600`` if missing; its content is the holder's pid, for people).
    timeout : float
        Seconds to wait for another writer before ``TimeoutError``.

    Examples
    --------
    >>> with RootLock(Path("data/snapshots/.mihu_frames.lock")):      # doctest: +SKIP
    ...     ...  # the only writer of this root
    """

    def __init__(self, path: Path, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = LOCK_TIMEOUT_SECONDS if timeout is None else timeout
        self._fd: int | None = None

    def __enter__(self) -> RootLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        if fcntl is None:
            self._fd = fd  # no flock: one writer at a time is the caller's business
            return self
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        holder = self._holder()
                        raise TimeoutError(
                            f"another process{holder} has been writing the snapshot root "
                            f"{self.path.parent} for over {self.timeout:.0f} s; try again once "
                            "it is done"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)
                except OSError:
                    break  # a file system without locks: nothing serializes writers there
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None
