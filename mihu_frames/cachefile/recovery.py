"""Opening the cache file, and starting anew when it is damaged.

The cache is only a cache: a file SQLite calls damaged ("file is not a database", malformed) is
moved aside (``<file>.damaged-<time>``, with its ``-wal`` and ``-shm``) and a new one started,
with a warning that names both. A file that cannot be opened at all (a folder in its place,
read-only, disk full) is a :class:`~mihu_frames.errors.MihuError` that names it; it is never
moved (it is not a damaged database).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from mihu_frames.errors import MihuError

logger = logging.getLogger("mihu_frames")


def open_or_start_anew(path: Path, open_file: Callable[[], None]) -> None:
    """Run ``open_file()``; if SQLite finds ``path`` damaged, move it aside and run it again.

    Raises
    ------
    MihuError
        When the file cannot be used (not when it is damaged: then it is started anew).
    """
    try:
        open_file()
    except sqlite3.OperationalError as exc:  # cannot open, read-only, disk full...
        raise MihuError(f"cannot use the cache file {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", malformed
        aside = move_aside(path)
        logger.warning(
            "the cache file %s is damaged (%s); moved it to %s and started a new one",
            path,
            exc,
            aside,
        )
        open_file()


def move_aside(path: Path) -> Path:
    """Rename a damaged cache file (and its -wal/-shm) out of the way; return the new name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{aside}{suffix}"))
    return aside
