"""The facade: one :class:`CacheFile` per cache file, composing its parts.

It opens the file (0600, its folder of stored loads 0700, starting anew when damaged: see
:mod:`.recovery`), and puts the parts together where a rule spans them: a page save is one
transaction of the page store with the listing index and the stored loads it makes stale,
handed to the writer; a stored load is written only while the listing index still holds the
listings it was built from; the first reads of a load wait for the writes handed before them.
"""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from mihu_frames._files import private_dirs, private_file
from mihu_frames.cachefile.database import Database
from mihu_frames.cachefile.listings import CachedListing, ListingIndex
from mihu_frames.cachefile.loads import LoadStore
from mihu_frames.cachefile.pages import CachedPage, PageStore, PageToSave
from mihu_frames.cachefile.recovery import open_or_start_anew
from mihu_frames.cachefile.writer import Writer
from mihu_frames.errors import CacheLockedError

logger = logging.getLogger("mihu_frames")


def default_cache_path() -> Path:
    """The default cache file, in the user's cache directory (platformdirs)."""
    import platformdirs

    return platformdirs.user_cache_path("mihu_frames") / "http_cache.sqlite"


class CacheFile:
    """One cache file and everything beside it; see :mod:`mihu_frames.cachefile`.

    Parameters
    ----------
    path : Path
        The SQLite file (created 0600, with missing folders 0700).
    expire_after : timedelta, int or float seconds, or None
        How long saved pages (and loads built from them) stay fresh; None: forever.
    timeout : float
        Seconds to wait for another process's lock before giving up.

    Attributes
    ----------
    pages : PageStore
        The page bodies (requests-cache).
    index : ListingIndex
        Which pages belong to one listing of a query.
    loads : LoadStore
        Stored load results.
    writer : Writer
        The background writer and the writers' lock.
    """

    def __init__(self, path: Path, *, expire_after: Any, timeout: float) -> None:
        self.path = path
        self.folder = Path(f"{path}.loads")
        self.timeout = timeout
        self.expire_after = _seconds(expire_after)
        self.database = Database(path, timeout)
        self.pages = PageStore(self.database)
        self.index = ListingIndex(self.database)
        self.loads = LoadStore(self.database, self.folder)
        self.writer = Writer(
            path, self.folder / ".writing", timeout=timeout, idle=self.pages.close_saver
        )
        open_or_start_anew(path, self._open)

    def _open(self) -> None:
        private_file(self.path)
        private_dirs(self.folder)
        for suffix in ("-wal", "-shm"):
            sidecar = Path(f"{self.path}{suffix}")
            if sidecar.exists():
                os.chmod(sidecar, 0o600)
        self.database.check_not_locked()
        with self.database.connect() as db:
            LoadStore.create(db)
            ListingIndex.create(db)

    def __repr__(self) -> str:
        return f"CacheFile({str(self.path)!r})"

    # ------------------------------------------------------------------ pages

    def listings(self, queries: Iterable[str]) -> dict[str, CachedListing]:
        """The complete, consistent cached listing of each query that has one (expired too),
        once the writes handed before are done."""
        self.flush()
        return self.index.complete(queries)

    def read_page(self, key: str) -> CachedPage | None:
        """A cached page by key (expired or not); None when it is gone or unreadable.

        Does not wait for writes: the caller checks the page's listing.
        """
        try:
            return self.pages.read(key)
        except Exception as exc:  # a damaged row requests-cache cannot unpickle: drop it
            logger.warning("dropping an unreadable cache entry %s: %r", key, exc)
            self.forget([key])
            return None

    def save_pages(self, pages: Sequence[PageToSave], request_headers: Mapping[str, str]) -> None:
        """Save decoded, valid pages (on the writer thread); each query's older entries go."""
        if pages:
            expires = self._expiry()
            self.writer.submit(self._save_pages, list(pages), dict(request_headers), expires)

    def _save_pages(
        self, pages: list[PageToSave], request_headers: dict[str, str], expires: datetime | None
    ) -> None:
        if not self.path.exists():  # removed since the load: never re-create it
            logger.info("not saving %d pages: %s no longer exists", len(pages), self.path)
            return
        stamp = expires.timestamp() if expires is not None else None
        try:
            # One transaction, under the stored-load index's lock: the pages, their listing's
            # index rows and the stored loads they make stale.
            dropped = self.pages.save(
                pages,
                request_headers,
                expires,
                holding=self.loads.held(),
                also=functools.partial(self._index_pages, pages, stamp),
            )
            self.loads.unlink(dropped)  # only now: a rollback would have kept their rows
        except (sqlite3.Error, OSError, CacheLockedError) as exc:  # only a cache: never fatal
            gone = not self.path.exists()  # removed meanwhile: nothing lost worth a warning
            (logger.info if gone else logger.warning)(
                "could not save %d pages to %s: %s", len(pages), self.path, exc
            )
        else:
            logger.debug("saved %d pages to %s", len(pages), self.path)

    def _index_pages(
        self, pages: list[PageToSave], expires: float | None, db: sqlite3.Connection
    ) -> list[str]:
        """Index saved pages and drop the stored loads holding their conversations (in the
        page save's transaction); return those loads' files, to remove once it committed."""
        self.index.add(db, pages, expires)
        conversations = sorted({c for page in pages for c in page.conversations()})
        if not conversations:
            return []
        dropped = self.loads.delete_holding(db, conversations)
        if dropped:
            logger.debug(
                "dropped %d stored loads holding conversations whose pages were saved anew",
                len(dropped),
            )
        return dropped

    def forget(self, keys: Iterable[str]) -> None:
        """Drop pages (a damaged or invalid one) and their index rows."""
        keys = list(keys)
        if not keys:
            return
        self.flush()
        try:
            self.pages.delete(keys)
            self.index.remove(keys)
        except sqlite3.Error as exc:
            logger.warning("could not drop %d cache entries: %s", len(keys), exc)
            return
        logger.debug("dropped %d cache entries", len(keys))

    def clear(self) -> None:
        """Empty the file: every page, the page index and every stored load."""
        self.flush()
        self.pages.clear()
        with self.database.connect() as db:
            db.execute("begin immediate")
            ListingIndex.clear(db)
            dropped = self.loads.delete_all(db)
            db.execute("commit")
        self.loads.unlink(dropped)

    # ------------------------------------------------------------------ stored loads

    def stored_load(
        self, key: str, *, offline: bool = False
    ) -> tuple[pa.Table, dict[str, Any]] | None:
        """The stored table and its record, or None when absent or (unless offline) expired,
        once the writes handed before are done."""
        self.flush()
        return self.loads.read(key, offline=offline)

    def store_load(
        self,
        key: str,
        table: pa.Table,
        *,
        conversations: Iterable[str],
        fresh: Iterable[str],
        listings: Mapping[str, str],
        meta: dict[str, Any],
    ) -> None:
        """Store a complete load (on the writer thread, after the pages it was built from).

        Parameters
        ----------
        key : str
            What identifies the load (the client's ``load_key``).
        table : pyarrow.Table
            Its result.
        conversations : iterable of str
            The conversations it holds.
        fresh : iterable of str
            Those it fetched from the network: stored loads holding them are stale.
        listings : mapping of str to str
            Per query key, the listing id its pages came from: the cached listings it read
            and the fresh ones it saved. It is stored only if the page index still holds
            exactly those listings of those queries when it is written (see
            :mod:`mihu_frames.cachefile.loads`).
        meta : dict
            Its record: ``pages``, and ``expires``, the earliest expiry of the cached pages
            it used (Unix seconds, or None).

        Its expiry is the earliest of its pages': those saved by this load expire after
        ``expire_after`` from now, and the cached ones it used are in ``meta["expires"]``.
        """
        expires = self._expiry()
        cached = meta.get("expires")
        stamps = [s for s in (expires.timestamp() if expires else None, cached) if s is not None]
        write = functools.partial(
            self.loads.write,
            key,
            table,
            expires=min(stamps) if stamps else None,
            conversations=list(conversations),
            fresh=list(fresh),
            meta=meta,
            refuse=functools.partial(ListingIndex.changed, listings=dict(listings)),
        )
        self.writer.submit(write)

    def invalidate(self, conversations: Iterable[str]) -> None:
        """Drop every stored load that holds one of ``conversations`` (fetched anew)."""
        conversations = list(conversations)
        if not conversations:
            return
        self.flush()
        try:
            self.loads.invalidate(conversations)
        except sqlite3.Error as exc:
            logger.warning("could not drop stale stored loads in %s: %s", self.path, exc)

    def stored_load_files(self) -> list[Path]:
        """The stored-load files in the folder (for tests and housekeeping)."""
        return self.loads.files()

    # ------------------------------------------------------------------ lifetime

    def flush(self) -> None:
        """Wait until every write handed over so far to this file is done: this object's, and
        those another client or process has pending (where the platform has ``flock``)."""
        self.writer.flush()

    def close(self) -> None:
        """Let go of the file: pending writes still finish (on the writer thread), then the
        writers' lock and their connection; the interpreter's exit waits for them. Using the
        object again opens what it needs anew."""
        self.writer.close()
        self.pages.close()

    def _expiry(self) -> datetime | None:
        if self.expire_after is None:
            return None
        return datetime.now(timezone.utc) + timedelta(seconds=self.expire_after)


def _seconds(expire_after: Any) -> float | None:
    if expire_after is None:
        return None
    if isinstance(expire_after, timedelta):
        return expire_after.total_seconds()
    return float(expire_after)
