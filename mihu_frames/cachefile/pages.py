"""The page store: page bodies kept by requests-cache, through its public API.

Pages are kept by requests-cache's ``SQLiteCache`` (``save_response``, ``get_response``,
``delete``, ``clear``), keyed by :func:`url_key`, with requests-cache's serialisation and
expiry, so a ``CachedSession`` with :func:`page_key` as its ``key_fn`` finds them. A page is
saved only once its whole body decoded as the documented envelope (the decoder decides; the
cache file never keeps anything else), and never with a response header that repeats the
token. Each saved page carries the id of the listing it belongs to in a header of ours
(:data:`LISTING_HEADER`), so a page read back says which listing it came from.

A save is one transaction with whatever the caller adds to it (the listing index rows, the
stored loads the pages make stale): committed here, so that whether it was is known.

requests-cache's backend costs milliseconds to build: the one for reading is built on the
first read (a reload served whole from a stored load never builds one), the writer's own is
built by a save and closed by :meth:`PageStore.close_saver` when the writer is idle. A forked
child builds its own; those it inherited belong to the parent and are never used or closed.
"""

from __future__ import annotations

import hashlib
import io
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from mihu_frames._dates import served_at
from mihu_frames._forking import renew_after_fork
from mihu_frames.cachefile.database import Database
from mihu_frames.schema import UUID_RE

T = TypeVar("T")

#: The response header that carries a page's listing id in the cache (ours, never the server's).
LISTING_HEADER = "X-Mihu-Frames-Listing"

#: requests-cache backends a forked child inherited: the parent's, so never used, closed or
#: collected here (closing one may wait on a lock a parent thread held at the fork).
_INHERITED: list[Any] = []


def url_key(url: str, method: str = "GET") -> str:
    """The cache key of a request for ``url``: its method and URL (which holds every parameter).

    Headers never vary a page, and URLs are built by the library in a fixed order.
    """
    return hashlib.sha256(f"{method} {url}".encode()).hexdigest()[:32]


def page_key(request: Any, **_: Any) -> str:
    """The same key as a requests-cache ``key_fn``, for a ``CachedSession`` on this file."""
    return url_key(request.url or "", request.method or "GET")


@dataclass(frozen=True)
class CachedPage:
    """A page read back from the cache."""

    body: bytes
    served_at: datetime
    listing: str | None
    expires: datetime | None


@dataclass(frozen=True)
class PageToSave:
    """A decoded, valid page handed to the writer."""

    key: str
    query: str
    page: int
    last_page: int
    listing: str
    url: str
    reason: str
    headers: Mapping[str, str]
    body: bytes

    def conversations(self) -> list[str]:
        """The conversation UUIDs in the page URL's path (canonical, lower case): a sessions
        page names its conversation there, a page of the conversations listing none."""
        return [m.group().lower() for m in UUID_RE.finditer(unquote(urlsplit(self.url).path))]


class PageStore:
    """Pages in requests-cache's SQLite backend on the cache file; see the module.

    Parameters
    ----------
    database : Database
        The cache file (its path and timeout; the tables are requests-cache's).
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._fresh_state()
        renew_after_fork(self)

    def _fresh_state(self) -> None:
        """This process's backends: none open yet (at first, after a fork)."""
        #: Guards opening and closing ``_reader`` (held for nothing else).
        self._opening = threading.Lock()
        self._reader: Any = None  # for reads and deletions, opened when first needed
        self._saver: Any = None  # the writer thread's own, open while it writes

    def __repr__(self) -> str:
        return f"PageStore({str(self.database.path)!r})"

    def _new_backend(self) -> Any:
        """A requests-cache SQLite backend on the file (each has its own connection).

        requests-cache waits without end for a write lock, so a file another process keeps
        locked is asked about first, with the client's deadline.
        """
        from requests_cache import SQLiteCache

        self.database.check_not_locked()
        timeout = self.database.timeout
        return SQLiteCache(self.database.path, wal=True, busy_timeout=int(timeout * 1000))

    def _backend(self) -> Any:
        reader = self._reader
        if reader is None:
            with self._opening:
                if self._reader is None:
                    self._reader = self._new_backend()
                reader = self._reader
        return reader

    def read(self, key: str) -> CachedPage | None:
        """A page by key (expired or not), or None when there is none.

        Raises
        ------
        Exception
            Whatever requests-cache raises for an entry it cannot read back (a damaged row).
        """
        response = self._backend().get_response(key)
        if response is None:
            return None
        headers = response.headers
        return CachedPage(
            body=response.content,
            served_at=served_at(headers.get("Date"), getattr(response, "created_at", None)),
            listing=headers.get(LISTING_HEADER),
            expires=getattr(response, "expires", None),
        )

    def save(
        self,
        pages: Sequence[PageToSave],
        request_headers: Mapping[str, str],
        expires: datetime | None,
        *,
        holding: AbstractContextManager[Any],
        also: Callable[[sqlite3.Connection], T],
    ) -> T:
        """Save ``pages`` and run ``also(connection)`` in the same transaction, committed here.

        Parameters
        ----------
        pages : sequence of PageToSave
            Decoded, valid pages, each saved with its listing id in :data:`LISTING_HEADER`.
        request_headers : mapping
            The headers of the requests they answered (without the token).
        expires : datetime or None
            When they expire.
        holding : context manager
            Held around the transaction (the stored-load index's lock).
        also : callable
            Given the transaction's ``sqlite3.Connection``; its result is returned.

        Raises
        ------
        sqlite3.Error, OSError, CacheLockedError
            When the transaction was not committed (then nothing of it was).
        """
        import requests
        import urllib3
        from requests.adapters import HTTPAdapter

        if self._saver is None:
            self._saver = self._new_backend()
        saver = self._saver
        adapter = HTTPAdapter()
        failed: list[sqlite3.Error] = []
        done: list[T] = []
        try:
            # requests-cache rolls the transaction back on an OperationalError, which it does
            # not raise (its own commit then finds nothing to commit): it is committed here.
            with holding, saver.responses.bulk_commit():
                for page in pages:
                    request = requests.Request("GET", page.url, headers=request_headers).prepare()
                    raw = urllib3.HTTPResponse(
                        body=io.BytesIO(page.body),
                        headers={**page.headers, LISTING_HEADER: page.listing},
                        status=200,
                        reason=page.reason,
                        preload_content=False,
                        decode_content=False,
                    )
                    response = adapter.build_response(request, raw)
                    saver.save_response(response, cache_key=page.key, expires=expires)
                with saver.responses.connection() as db:  # the same transaction
                    try:
                        result = also(db)
                        db.execute("commit")
                    except sqlite3.Error as exc:
                        failed.append(exc)
                        raise sqlite3.OperationalError(str(exc)) from exc  # rolls it all back
                done.append(result)
        finally:
            adapter.close()
        if not done:
            raise failed[0] if failed else sqlite3.OperationalError("the save was rolled back")
        return done[0]

    def delete(self, keys: Sequence[str]) -> None:
        """Drop pages by key."""
        self._backend().delete(*keys, vacuum=False)

    def clear(self) -> None:
        """Drop every page."""
        self._backend().clear()

    def close_saver(self) -> None:
        """Close the writer's backend (the writer is idle: no save runs)."""
        if self._saver is not None:
            self._saver.close()
            self._saver = None

    def close(self) -> None:
        """Close the backend for reading; the next read opens a new one."""
        with self._opening:
            reader, self._reader = self._reader, None
        if reader is not None:
            reader.close()

    def _after_fork(self) -> None:
        """In a forked child: the backends and their lock are the parent's (kept, never used)."""
        _INHERITED.extend(b for b in (self._reader, self._saver) if b is not None)
        self._fresh_state()
