"""The cache file: pages, the listings they belong to, stored load results, and their writer.

One :class:`CacheFile` owns one SQLite file, the folder of stored loads beside it
(``<file>.loads/``) and one writer thread; nothing else in the library touches them.

**Pages** are kept by requests-cache, through its public API (``SQLiteCache``:
``save_response``, ``get_response``, ``delete``, ``clear``), keyed by :func:`url_key`, with
requests-cache's serialisation and expiry. A page is saved only once its whole body decoded
as the documented envelope (the decoder decides; this module never keeps anything else), and
never with a response header that repeats the token.

**Listings.** The pages of one conversation under one query that are used together must come
from one consistent listing of it: pages cached at different times disagree when sessions were
deleted or inserted in between (a deletion plus an insertion even keeps ``total``). So every
page is saved with the id of the fetch it belongs to (all pages of a query fetched in one load
share it) in an index table of the same file (``mihu_frames_pages``), and a load uses cached
pages of a query only when the index holds pages 1 to ``last_page`` of one listing, none
expired (:meth:`CacheFile.listings`); otherwise it fetches the whole query anew, and saving
that listing drops the query's older entries. A page read back whose listing is not the one
planned (another process replaced it meanwhile) makes the load fetch that query anew.

**Stored loads** keep the *result* of a whole load (an Arrow table, one uncompressed IPC file
in ``<file>.loads/``, indexed in ``mihu_frames_loads``), so an identical reload is one read:
it expires with the earliest of its pages, ``refresh`` skips it, ``offline`` accepts it
expired. A stored load is never older than the pages beside it, by two rules that meet in
SQLite's one writer at a time:

- Saving fresh pages of a conversation drops every stored load holding it, in the
  transaction that saves the pages and switches their listing (whoever fetched them: a load,
  a sync). That covers stored loads written *before* the pages.
- A load is handed to the writer with the listing id of each of its queries (the cached
  listings it read, the fresh ones it saved), and is stored only if, in the transaction that
  inserts it, the page index holds exactly those listings of those queries (rows of that
  listing and of no other). That covers a load built from listing L1 while another client
  or process saved L2 before the load was written: it is not stored (logged at DEBUG), and
  the next load reads L2's pages. Nor is a load stored when the index holds no page of one
  of its queries (their save failed, or they were dropped since).

A load that fetched a conversation anew also drops the stored loads holding it. A stored
load's file is removed only once the transaction that deleted its row committed (after a
rollback the row, and so its file, stay); files no row points to are a crash's leftovers,
removed once an hour old.

**Writes come after the frame.** Saving pages and stored loads runs on the file's writer thread
after the load has handed its frame back. A load's first reads (:meth:`CacheFile.listings`,
:meth:`CacheFile.stored_load`) wait for the writes handed to the writer before they started
(:meth:`CacheFile.flush`): writes of this object, and of any other client or process on the
same file, through an advisory lock on ``<file>.loads/.writing`` that a writer holds while it
has writes pending (a reader never waits for that lock while its own object holds it: then no
other writer has anything pending). :meth:`CacheFile.read_page` does not wait: it reads pages
of a listing :meth:`CacheFile.listings` returned, and a page that no longer belongs to it makes
the load fetch that query anew. A write killed half-way is a transaction that never happened:
the next load fetches those pages again.

**Lifetime.** ``close()`` does not wait (the frame is already in hand): pending writes still
run to the end, then the writer's lock is let go, and the interpreter's exit waits for them.
A closed object opens what it needs again when used: requests-cache's backend on the first
page read, a writer thread on the first write (requests-cache's backend costs milliseconds to
build, so a reload served whole from a stored load never builds one). A child process forked
from one gets fresh locks, writer and connections of its own (``os.register_at_fork``); what
it inherited belongs to the parent and is never used, closed or unlocked.

Damaged files are moved aside (``*.damaged-<time>``) and started anew; a file another
process keeps locked longer than the client's ``timeout`` is a
:class:`~mihu_frames.errors.CacheLockedError`. Files are 0600, folders 0700 (contacts).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pyarrow as pa

from mihu_frames._dates import served_at
from mihu_frames._files import private_dirs, private_file
from mihu_frames._forking import renew_after_fork
from mihu_frames.errors import CacheLockedError, MihuError
from mihu_frames.schema import UUID_RE

try:
    import fcntl
except ImportError:  # Windows: a reader waits for this object's own writes only
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("mihu_frames")

#: The response header that carries a page's listing id in the cache (ours, never the server's).
LISTING_HEADER = "X-Mihu-Frames-Listing"
_PAGES = "mihu_frames_pages"
_LOADS = "mihu_frames_loads"
_LOADS_COLUMNS = (
    "key text primary key, expires real, conversations text not null, meta text not null, "
    "file text not null"
)
#: Rows holding any conversation of a JSON list (one parameter, however long the list: one
#: ``or`` per conversation hits SQLite's expression-depth limit at 1,000).
_HOLDS_ANY = "exists (select 1 from json_each(?) where instr(conversations, value) > 0)"
#: A stored-load file no row points to is a crash's leftover once it is this old (younger, it
#: may be another process's store between its rename and its commit).
ORPHAN_AGE = 3600.0

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


def default_cache_path() -> Path:
    """The default cache file, in the user's cache directory (platformdirs)."""
    import platformdirs

    return platformdirs.user_cache_path("mihu_frames") / "http_cache.sqlite"


@dataclass(frozen=True)
class CachedListing:
    """Pages 1 to ``last_page`` of one query, all from one listing, as the index holds them."""

    listing: str
    last_page: int
    keys: Mapping[int, str]
    #: The earliest expiry among the pages (Unix seconds), None when they never expire.
    expires: float | None

    def expired(self) -> bool:
        return self.expires is not None and self.expires <= time.time()


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


class CacheFile:
    """One cache file and everything beside it; see the module.

    Parameters
    ----------
    path : Path
        The SQLite file (created 0600, with missing folders 0700).
    expire_after : timedelta, int or float seconds, or None
        How long saved pages (and loads built from them) stay fresh; None: forever.
    timeout : float
        Seconds to wait for another process's lock before giving up.
    """

    def __init__(self, path: Path, *, expire_after: Any, timeout: float) -> None:
        self.path = path
        self.folder = Path(f"{path}.loads")
        self.timeout = timeout
        self.expire_after = _seconds(expire_after)
        self._fresh_state()
        try:
            self._open()
        except sqlite3.OperationalError as exc:  # cannot open, read-only, disk full...
            raise MihuError(f"cannot use the cache file {path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # "file is not a database", malformed
            aside = _move_aside(path)
            logger.warning(
                "the cache file %s is damaged (%s); moved it to %s and started a new one",
                path,
                exc,
                aside,
            )
            self._open()

    def _open(self) -> None:
        private_file(self.path)
        private_dirs(self.folder)
        for suffix in ("-wal", "-shm"):
            sidecar = Path(f"{self.path}{suffix}")
            if sidecar.exists():
                os.chmod(sidecar, 0o600)
        _check_not_locked(self.path, self.timeout)
        with self._connect() as db:
            columns = [row[1] for row in db.execute(f"pragma table_info({_LOADS})")]
            if columns and "file" not in columns:  # stored by an older version: start over
                db.execute(f"drop table {_LOADS}")
            db.execute(f"create table if not exists {_LOADS} ({_LOADS_COLUMNS})")
            db.execute(
                f"create table if not exists {_PAGES} (key text primary key, query text not "
                "null, page integer not null, listing text not null, last_page integer not "
                "null, expires real)"
            )
            db.execute(f"create index if not exists {_PAGES}_query on {_PAGES}(query)")
        renew_after_fork(self)

    def _fresh_state(self) -> None:
        """This process's locks, writer and connections: none open yet (at first, after a fork)."""
        #: Guards the stored-load index (held through a page save's transaction: never take
        #: it where waiting for a write would hurt).
        self._lock = threading.Lock()
        #: Guards opening and closing ``_pages`` (held for nothing else).
        self._opening = threading.Lock()
        #: Guards the writer's state below; notified whenever a write finishes.
        self._state = threading.Condition(threading.Lock())
        self._writer: ThreadPoolExecutor | None = None  # started by the first write
        self._handed = 0  # writes handed to the writer so far
        self._finished = 0  # of which finished (one writer thread: in the order handed)
        self._writing_fd: int | None = None  # the writers' lock, held while writes are pending
        self._pages: Any = None  # requests-cache's backend for reads, opened when first needed
        self._saver: Any = None  # the writer thread's own backend, open while it writes

    @property
    def _pending(self) -> int:
        """Writes handed to the writer and not finished yet."""
        return self._handed - self._finished

    def _new_pages(self) -> Any:
        """A requests-cache SQLite backend on the file (each has its own connection).

        requests-cache waits without end for a write lock, so a file another process keeps
        locked is asked about first, with the client's deadline.
        """
        from requests_cache import SQLiteCache

        _check_not_locked(self.path, self.timeout)
        return SQLiteCache(self.path, wal=True, busy_timeout=int(self.timeout * 1000))

    def _backend(self) -> Any:
        """requests-cache's backend for reading and dropping pages, opened on first use."""
        pages = self._pages
        if pages is None:
            with self._opening:
                if self._pages is None:
                    self._pages = self._new_pages()
                pages = self._pages
        return pages

    def __repr__(self) -> str:
        return f"CacheFile({str(self.path)!r})"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # mode=rw: a write finishing after the file was removed must not create a new one
        # (with default permissions) in its place.
        uri = self.path.resolve().as_uri() + "?mode=rw"
        db = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        try:
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=normal")  # as requests-cache does with WAL
            yield db
        finally:
            db.close()

    # ------------------------------------------------------------------ the writer

    def _submit(self, job: Any, *args: Any) -> None:
        """Run ``job(*args)`` on the writer thread, after the jobs handed to it before."""
        with self._state:
            if self._writer is None:  # the first write, or the first since close()
                # A closed writer may still run writes handed before close(): this one comes
                # after them (a load's first reads waited for them already, so this is rare).
                self._state.wait_for(lambda: self._pending == 0)
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="mihu-cache-writer")
            if self._pending == 0 and not self._announce_writing():
                logger.warning("not saving to %s: another writer holds it too long", self.path)
                return
            self._handed += 1
            try:
                self._writer.submit(self._run, job, args)
            except BaseException:  # the interpreter is shutting down: never keep the lock
                self._handed -= 1
                if self._pending == 0:
                    self._done_writing()
                raise

    def _run(self, job: Any, args: tuple[Any, ...]) -> None:
        try:
            job(*args)
        except Exception:  # nobody waits on the result: say it here, never lose it silently
            logger.exception("a background write to %s failed", self.path)
        finally:
            with self._state:
                self._finished += 1
                if self._pending == 0:
                    # Connections live only while writing: none is open when nothing is
                    # pending (a fork then finds no SQLite state of ours in flight).
                    self._close_saver()
                    self._done_writing()
                self._state.notify_all()

    def _lock_path(self) -> Path:
        return self.folder / ".writing"

    def _announce_writing(self) -> bool:
        """Take the writers' lock (exclusive) while this object has writes pending."""
        if fcntl is None:
            return True
        fd = os.open(self._lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
        if not _flock(fd, fcntl.LOCK_EX, self.timeout):
            os.close(fd)
            return False
        self._writing_fd = fd
        return True

    def _done_writing(self) -> None:
        fd, self._writing_fd = self._writing_fd, None
        if fd is not None and fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _after_fork(self) -> None:
        """In a forked child: this object's locks, writer and connections are the parent's.

        Only the thread that forked runs in the child, so any lock another thread held stays
        held forever: every lock is new. The inherited descriptor of the writers' lock is
        closed, never unlocked (the lock is the parent's writer's, held through its own
        descriptor too); the inherited requests-cache backends are kept, never used.
        """
        if self._writing_fd is not None:
            os.close(self._writing_fd)
        _INHERITED.extend(b for b in (self._pages, self._saver) if b is not None)
        self._fresh_state()

    def flush(self) -> None:
        """Wait until every write handed over so far to this file is done: this object's, and
        those another client or process has pending (where the platform has ``flock``)."""
        with self._state:
            handed = self._handed
            self._state.wait_for(lambda: self._finished >= handed)
        if fcntl is None:
            return
        try:
            fd = os.open(self._lock_path(), os.O_RDWR)
        except FileNotFoundError:  # no writer ever announced itself here
            return
        try:
            # While this object holds the (exclusive) writers' lock for writes handed after
            # this flush began, no other writer has anything pending: nothing to wait for.
            if not _flock(fd, fcntl.LOCK_SH, self.timeout, self._holds_writing_lock):
                raise CacheLockedError(
                    f"another process kept writing to the cache file {self.path} for longer "
                    f"than {self.timeout:g} s; close it there, or use another cache= path"
                )
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _holds_writing_lock(self) -> bool:
        return self._writing_fd is not None  # one read: no lock (_submit holds it for long)

    def close(self) -> None:
        """Let go of the file: pending writes still finish (on the writer thread), then the
        writers' lock and their connection; the interpreter's exit waits for them. Using the
        object again opens what it needs anew."""
        with self._state:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=False)  # runs what it holds, then its thread ends
        with self._opening:
            pages, self._pages = self._pages, None
        if pages is not None:
            pages.close()

    def _close_saver(self) -> None:
        if self._saver is not None:
            self._saver.close()
            self._saver = None

    # ------------------------------------------------------------------ pages

    def listings(self, queries: Iterable[str]) -> dict[str, CachedListing]:
        """The complete, consistent cached listing of each query that has one (expired too)."""
        self.flush()
        wanted = json.dumps(sorted(set(queries)))
        try:
            with self._connect() as db:
                rows = db.execute(
                    f"select query, page, key, listing, last_page, expires from {_PAGES} "
                    "where query in (select value from json_each(?))",
                    (wanted,),
                ).fetchall()
        except sqlite3.Error as exc:  # only a cache: fetch everything instead
            logger.warning("could not read the page index of %s: %s", self.path, exc)
            return {}
        found: dict[str, dict[str, list[tuple[int, str, int, float | None]]]] = {}
        for query, page, key, listing, last_page, expires in rows:
            found.setdefault(query, {}).setdefault(listing, []).append(
                (page, key, last_page, expires)
            )
        complete: dict[str, CachedListing] = {}
        for query, by_listing in found.items():
            for listing, pages in by_listing.items():
                last_pages = {p[2] for p in pages}
                numbers = {p[0] for p in pages}
                if len(last_pages) != 1:
                    continue
                (last_page,) = last_pages
                if numbers != set(range(1, last_page + 1)):
                    continue
                stamps = [p[3] for p in pages if p[3] is not None]
                complete[query] = CachedListing(
                    listing,
                    last_page,
                    {p[0]: p[1] for p in pages},
                    min(stamps) if len(stamps) == len(pages) else None,
                )
        return complete

    def read_page(self, key: str) -> CachedPage | None:
        """A cached page by key (expired or not); None when it is gone or unreadable.

        Does not wait for writes (see the module): the caller checks the page's listing.
        """
        pages = self._backend()
        try:
            response = pages.get_response(key)
        except Exception as exc:  # a damaged row requests-cache cannot unpickle: drop it
            logger.warning("dropping an unreadable cache entry %s: %r", key, exc)
            self.forget([key])
            return None
        if response is None:
            return None
        headers = response.headers
        created = getattr(response, "created_at", None)
        return CachedPage(
            body=response.content,
            served_at=served_at(headers.get("Date"), created),
            listing=headers.get(LISTING_HEADER),
            expires=getattr(response, "expires", None),
        )

    def save_pages(self, pages: Sequence[PageToSave], request_headers: Mapping[str, str]) -> None:
        """Save decoded, valid pages (on the writer thread); each query's older entries go."""
        if pages:
            expires = self._expiry()
            self._submit(self._write_pages, list(pages), dict(request_headers), expires)

    def _expiry(self) -> datetime | None:
        if self.expire_after is None:
            return None
        return datetime.now(timezone.utc) + timedelta(seconds=self.expire_after)

    def _write_pages(
        self, pages: list[PageToSave], request_headers: dict[str, str], expires: datetime | None
    ) -> None:
        import requests
        import urllib3
        from requests.adapters import HTTPAdapter

        if not self.path.exists():  # removed since the load: never re-create it
            logger.info("not saving %d pages: %s no longer exists", len(pages), self.path)
            return
        adapter = HTTPAdapter()
        failed: list[sqlite3.Error] = []
        dropped: list[str] = []
        committed = False
        try:
            if self._saver is None:
                self._saver = self._new_pages()
            saver = self._saver
            # One transaction, under the stored-load index's lock: the pages, their listing's
            # index rows and the stored loads they make stale. It is committed here, so that
            # whether it was is known (requests-cache rolls it back on an OperationalError,
            # which it does not raise; its own commit then finds nothing to commit).
            with self._lock, saver.responses.bulk_commit():
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
                        dropped = self._index_pages(db, pages, expires)
                        db.execute("commit")
                    except sqlite3.Error as exc:
                        failed.append(exc)
                        raise sqlite3.OperationalError(str(exc)) from exc  # rolls it all back
                committed = True
            if not committed:
                raise failed[0] if failed else sqlite3.OperationalError("the save was rolled back")
            self._unlink_loads(dropped)  # only now: a rollback would have kept their rows
        except (sqlite3.Error, OSError, CacheLockedError) as exc:  # only a cache: never fatal
            gone = not self.path.exists()  # removed meanwhile: nothing lost worth a warning
            (logger.info if gone else logger.warning)(
                "could not save %d pages to %s: %s", len(pages), self.path, exc
            )
        else:
            logger.debug("saved %d pages to %s", len(pages), self.path)
        finally:
            adapter.close()

    def _index_pages(
        self, db: sqlite3.Connection, pages: list[PageToSave], expires: datetime | None
    ) -> list[str]:
        """Index saved pages under their listing (in the caller's transaction); drop the
        query's older listings and the stored loads holding their conversations, and return
        those loads' files (for the caller to remove once it committed)."""
        stamp = expires.timestamp() if expires is not None else None
        listings = sorted({(page.query, page.listing) for page in pages})
        # A query's older listings go: only one listing of a query is ever whole.
        db.executemany(f"delete from {_PAGES} where query = ? and listing != ?", listings)
        db.executemany(
            f"insert or replace into {_PAGES} values (?, ?, ?, ?, ?, ?)",
            [(p.key, p.query, p.page, p.listing, p.last_page, stamp) for p in pages],
        )
        conversations = sorted({c for page in pages for c in _conversations_in(page.url)})
        if not conversations:
            return []
        dropped = self._delete_loads(db, _HOLDS_ANY, (json.dumps(conversations),))
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
            self._backend().delete(*keys, vacuum=False)
            with self._connect() as db:
                db.execute(
                    f"delete from {_PAGES} where key in (select value from json_each(?))",
                    (json.dumps(keys),),
                )
        except sqlite3.Error as exc:
            logger.warning("could not drop %d cache entries: %s", len(keys), exc)
            return
        logger.debug("dropped %d cache entries", len(keys))

    def clear(self) -> None:
        """Empty the file: every page, the page index and every stored load."""
        self.flush()
        self._backend().clear()
        with self._connect() as db:
            db.execute("begin immediate")
            db.execute(f"delete from {_PAGES}")
            dropped = self._delete_loads(db, "1", ())
            db.execute("commit")
        self._unlink_loads(dropped)

    # ------------------------------------------------------------------ stored loads

    def stored_load(
        self, key: str, *, offline: bool = False
    ) -> tuple[pa.Table, dict[str, Any]] | None:
        """The stored table and its record, or None when absent or (unless offline) expired."""
        self.flush()
        try:
            with self._lock, self._connect() as db:
                row = db.execute(
                    f"select expires, meta, file from {_LOADS} where key = ?", (key,)
                ).fetchone()
        except sqlite3.Error as exc:  # only a cache: load the pages instead
            logger.warning("could not read stored loads in %s: %s", self.path, exc)
            return None
        if row is None:
            return None
        expires, meta, name = row
        if expires is not None and expires <= time.time() and not offline:
            logger.debug("stored load %s: expired", key[:12])
            return None
        try:
            # Read into memory, not memory-mapped: a frame must not depend on a cache file
            # that another process may remove or a user may truncate.
            with pa.OSFile(str(self.folder / _plain_name(name))) as source:
                table = pa.ipc.open_file(source).read_all()
            return table, json.loads(meta)
        except (pa.ArrowException, OSError, ValueError) as exc:
            logger.warning("dropping a damaged stored load in %s: %s", self.path, exc)
            try:
                self._drop_loads("key = ? and file = ?", (key, name))  # not one stored since
            except sqlite3.Error as error:
                logger.warning("could not drop it: %s", error)
            return None

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
            exactly those listings of those queries when it is written (see the module).
        meta : dict
            Its record: ``pages``, and ``expires``, the earliest expiry of the cached pages
            it used (Unix seconds, or None).

        Its expiry is the earliest of its pages': those saved by this load expire after
        ``expire_after`` from now, and the cached ones it used are in ``meta["expires"]``.
        """
        expires = self._expiry()
        cached = meta.get("expires")
        stamps = [s for s in (expires.timestamp() if expires else None, cached) if s is not None]
        stamp = min(stamps) if stamps else None
        self._submit(
            self._write_load,
            key,
            table,
            stamp,
            list(conversations),
            list(fresh),
            dict(listings),
            meta,
        )

    def _write_load(
        self,
        key: str,
        table: pa.Table,
        expires: float | None,
        conversations: list[str],
        fresh: list[str],
        listings: dict[str, str],
        meta: dict[str, Any],
    ) -> None:
        if not self.path.exists():  # removed since the load: nothing to index it in
            return
        name = f"{key}-{secrets.token_hex(4)}.arrow"
        dropped: list[str] = []
        try:
            self._write_load_file(name, table)
            with self._lock, self._connect() as db:
                db.execute("begin immediate")
                changed = _listings_changed(db, listings)
                if changed is not None:  # pages of another listing beside it: never stored
                    db.execute("rollback")
                    logger.debug("not storing the load %s: %s", key[:12], changed)
                    (self.folder / name).unlink(missing_ok=True)
                    return
                # Stored loads sharing a conversation fetched anew are stale; the same load
                # stored before is replaced.
                dropped += self._delete_loads(
                    db, _HOLDS_ANY + " or key = ?", (json.dumps(fresh), key)
                )
                dropped += self._delete_loads(db, "expires <= ?", (time.time(),))
                db.execute(
                    f"insert into {_LOADS} values (?, ?, ?, ?, ?)",
                    (key, expires, ",".join(conversations), json.dumps(meta), name),
                )
                db.execute("commit")
            self._unlink_loads(dropped)  # only now: a rollback would have kept their rows
            self._remove_orphans()
        except (OSError, sqlite3.Error, pa.ArrowException) as exc:  # only a cache: never fatal
            logger.warning("could not store the load result in %s: %s", self.path, exc)
            (self.folder / name).unlink(missing_ok=True)

    def _write_load_file(self, name: str, table: pa.Table) -> None:
        """Write ``table`` as ``name`` in the folder: owner-only, temporary name, then renamed."""
        private_dirs(self.folder)
        temporary = self.folder / f".{name}.tmp"
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            # pyarrow's own file (it keeps the mode): buffers go to the file without passing
            # through Python bytes objects, so a big load is not copied once more on the way.
            with pa.OSFile(str(temporary), "wb") as sink:
                table = table.combine_chunks()  # one record batch (usually one chunk already)
                with pa.ipc.new_file(sink, table.schema) as writer:
                    writer.write_table(table)
            os.replace(temporary, self.folder / name)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise

    def _delete_loads(self, db: sqlite3.Connection, where: str, params: Iterable[Any]) -> list[str]:
        """Delete the index rows of the stored loads matching ``where`` (in the caller's
        transaction) and return their files, which the caller removes with
        :meth:`_unlink_loads` once that transaction committed: after a rollback the rows are
        back, and so must their files be."""
        params = tuple(params)
        names = [r[0] for r in db.execute(f"select file from {_LOADS} where {where}", params)]
        db.execute(f"delete from {_LOADS} where {where}", params)
        return names

    def _drop_loads(self, where: str, params: Iterable[Any]) -> None:
        """Delete the stored loads matching ``where`` in a transaction of their own, then
        (once it committed) their files."""
        with self._lock, self._connect() as db:
            db.execute("begin immediate")
            names = self._delete_loads(db, where, params)
            db.execute("commit")
        self._unlink_loads(names)

    def _unlink_loads(self, names: Iterable[str]) -> None:
        """Remove stored-load files whose rows a committed transaction deleted."""
        for name in names:
            try:
                (self.folder / _plain_name(name)).unlink(missing_ok=True)
            except (OSError, ValueError) as exc:
                logger.warning("could not remove a stored load %r: %s", name, exc)

    def _remove_orphans(self) -> None:
        """Remove stored-load files no row points to (a crash's leftovers), once old enough."""
        with self._lock, self._connect() as db:
            known = {r[0] for r in db.execute(f"select file from {_LOADS}")}
        cutoff = time.time() - ORPHAN_AGE
        for entry in os.scandir(self.folder):
            orphan = entry.name.endswith((".arrow", ".arrow.tmp")) and entry.name not in known
            try:
                if orphan and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    logger.info("removed a stored load no index row points to: %s", entry.path)
            except OSError as exc:
                logger.warning("could not remove %s: %s", entry.path, exc)

    def invalidate(self, conversations: Iterable[str]) -> None:
        """Drop every stored load that holds one of ``conversations`` (fetched anew)."""
        conversations = list(conversations)
        if not conversations:
            return
        self.flush()
        try:
            self._drop_loads(_HOLDS_ANY, (json.dumps(conversations),))
        except sqlite3.Error as exc:
            logger.warning("could not drop stale stored loads in %s: %s", self.path, exc)

    def stored_load_files(self) -> list[Path]:
        """The stored-load files in the folder (for tests and housekeeping)."""
        return sorted(self.folder.glob("*.arrow"))


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


def _listings_changed(db: sqlite3.Connection, listings: Mapping[str, str]) -> str | None:
    """Why the page index no longer holds exactly ``listings`` (per query key, one listing
    id), or None when it does: every query has rows, all of that listing (in the caller's
    transaction)."""
    if not listings:
        return None
    held: dict[str, tuple[str, str]] = {
        query: (first, last)
        for query, first, last in db.execute(
            f"select query, min(listing), max(listing) from {_PAGES} "
            "where query in (select key from json_each(?)) group by query",
            (json.dumps(listings),),
        )
    }
    for query, listing in listings.items():
        if query not in held:
            return f"the pages of query {query[:12]} are gone from the page index"
        if held[query] != (listing, listing):
            return (
                f"the page index holds another listing of query {query[:12]} "
                f"than the {listing} it was built from"
            )
    return None


def _conversations_in(url: str) -> list[str]:
    """The conversation UUIDs in a page URL's path (canonical, lower case): a sessions page
    names its conversation there, a page of the conversations listing none."""
    return [m.group().lower() for m in UUID_RE.finditer(unquote(urlsplit(url).path))]


def _seconds(expire_after: Any) -> float | None:
    if expire_after is None:
        return None
    if isinstance(expire_after, timedelta):
        return expire_after.total_seconds()
    return float(expire_after)


def _plain_name(name: object) -> str:
    """A stored-load file name from the index, refused if it could point outside the folder."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name[0] == ".":
        raise ValueError(f"not a stored-load file name: {name!r:.80}")
    return name


def _check_not_locked(path: Path, timeout: float) -> None:
    """Fail clearly when another process holds the SQLite write lock for ``timeout`` s.

    requests-cache retries a locked write without end; asking once, with a deadline, turns a
    hang into an error that names the file.
    """
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        db.execute("begin immediate")
        db.execute("rollback")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise CacheLockedError(
            f"the cache file {path} is locked by another process (waited {timeout:g} s); "
            "close it there, or use another cache= path"
        ) from None
    finally:
        db.close()


def _move_aside(path: Path) -> Path:
    """Rename a damaged cache file (and its -wal/-shm) out of the way; return the new name."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.rename(Path(f"{aside}{suffix}"))
    return aside
