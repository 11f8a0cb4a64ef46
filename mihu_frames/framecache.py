"""Decoded loads kept beside the HTTP cache, so an identical reload is one read, not N pages.

requests-cache keeps every page's response; reloading from it still costs a lookup, an unpickle
and a JSON decode per page. This cache keeps the *result* of a whole load (the Arrow table) in
a table of the same SQLite file, valid exactly as long as the pages it was built from:

- its expiry is the earliest expiry of those pages, so it never outlives what requests-cache
  would have served;
- ``refresh=True`` skips it (and replaces it); ``offline=True`` accepts it even when expired,
  like requests-cache's ``only_if_cached``;
- a load that fetched any page from the network drops every stored load that shares one of its
  conversations, so no stored load is older than the pages in the HTTP cache;
- only complete loads (no failed conversation) are stored.

The table is plain SQL (``sqlite3``) because expiry and invalidation are queries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from mihu_frames._version import __version__
from mihu_frames.schema import SCHEMA_VERSION

logger = logging.getLogger("mihu_frames")

_TABLE = "mihu_frames_loads"
_IPC = pa.ipc.IpcWriteOptions(compression="lz4") if pa.Codec.is_available("lz4") else None
#: Stores still being written, by cache file: any FrameCache on that file waits for them
#: before reading, so a client opened right after another closed sees its last load.
_PENDING: dict[str, threading.Thread] = {}
_PENDING_LOCK = threading.Lock()


class FrameCache:
    """Whole-load results in the requests-cache SQLite file (table ``mihu_frames_loads``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._name = str(Path(path).resolve())
        with self._connect() as db:
            db.execute(
                f"create table if not exists {_TABLE} (key text primary key, expires real, "
                "conversations text not null, meta text not null, body blob not null)"
            )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # mode=rw: a store finishing after its file was removed must not create a new one
        # (with default permissions) in its place.
        uri = Path(self.path).resolve().as_uri() + "?mode=rw"
        db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        try:
            db.execute("pragma journal_mode=wal")
            db.execute("pragma synchronous=normal")  # as requests-cache does with WAL
            yield db
        finally:
            db.close()

    def wait(self) -> None:
        """Wait until a store started by :meth:`put` (by any client on this file) is written."""
        with _PENDING_LOCK:
            writing = _PENDING.get(self._name)
        if writing is not None and writing is not threading.current_thread():
            writing.join()

    @staticmethod
    def key(base_url: str, plan: Any) -> str:
        """Identify a load: address, queries, sort, page size, library and schema versions."""
        spec = {
            "base_url": base_url,
            "queries": [(q.conversation, q.status, q.type) for q in plan.queries],
            "sort": [plan.sort_by, plan.sort_dir],
            "per_page": plan.per_page,
            "versions": [__version__, SCHEMA_VERSION],
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def get(self, key: str, *, offline: bool = False) -> tuple[pa.Table, dict[str, Any]] | None:
        """The stored table and its record, or None when absent or (unless offline) expired."""
        self.wait()
        try:
            with self._lock, self._connect() as db:
                row = db.execute(
                    f"select expires, meta, body from {_TABLE} where key = ?", (key,)
                ).fetchone()
        except sqlite3.Error as exc:  # only a cache: load the pages instead
            logger.warning("could not read stored loads in %s: %s", self.path, exc)
            return None
        if row is None:
            return None
        expires, meta, body = row
        if expires is not None and expires <= _now() and not offline:
            logger.debug("stored load %s expired", key[:12])
            return None
        try:
            return pa.ipc.open_stream(pa.py_buffer(body)).read_all(), json.loads(meta)
        except (pa.ArrowException, OSError, ValueError) as exc:
            logger.warning("dropping a damaged stored load in %s: %s", self.path, exc)
            with self._lock, self._connect() as db:
                db.execute(f"delete from {_TABLE} where key = ?", (key,))
            return None

    def put(
        self,
        key: str,
        table: pa.Table,
        *,
        expires: datetime | None,
        conversations: Iterable[str],
        fresh: Iterable[str],
        meta: dict[str, Any],
    ) -> None:
        """Store a complete load; drop stored loads sharing a freshly fetched conversation.

        The write runs on a background thread (the caller already has its frame, and closing
        the client does not wait); the next :meth:`get`, :meth:`put`, :meth:`invalidate` or
        :meth:`clear` on this file waits for it, and so does interpreter exit.
        """
        self.wait()
        writing = threading.Thread(
            target=self._write,
            args=(key, table, expires, list(conversations), list(fresh), meta),
            name="mihu-frame-cache",
        )
        with _PENDING_LOCK:
            _PENDING[self._name] = writing
        writing.start()

    def _write(
        self,
        key: str,
        table: pa.Table,
        expires: datetime | None,
        conversations: list[str],
        fresh: list[str],
        meta: dict[str, Any],
    ) -> None:
        try:
            sink = pa.BufferOutputStream()
            # One record batch: a load arrives as hundreds of page slices, which would each
            # become a separately compressed batch and make writing and reading slow.
            table = table.combine_chunks()
            with pa.ipc.new_stream(sink, table.schema, options=_IPC) as writer:
                writer.write_table(table)
            body = memoryview(sink.getvalue())
            stamp = expires.timestamp() if expires is not None else None
            with self._lock, self._connect() as db:
                db.execute("begin immediate")
                _drop(db, fresh)
                db.execute(f"delete from {_TABLE} where expires <= ?", (_now(),))
                db.execute(
                    f"insert or replace into {_TABLE} values (?, ?, ?, ?, ?)",
                    (key, stamp, ",".join(conversations), json.dumps(meta), body),
                )
                db.execute("commit")
        except (OSError, sqlite3.Error, pa.ArrowException) as exc:  # only a cache: never fatal
            logger.warning("could not store the load result in %s: %s", self.path, exc)
        finally:
            with _PENDING_LOCK:
                if _PENDING.get(self._name) is threading.current_thread():
                    del _PENDING[self._name]

    def invalidate(self, conversations: Iterable[str]) -> None:
        """Drop every stored load that holds one of ``conversations`` (fetched anew)."""
        conversations = list(conversations)
        if not conversations:
            return
        self.wait()
        try:
            with self._lock, self._connect() as db:
                _drop(db, conversations)
        except sqlite3.Error as exc:
            logger.warning("could not drop stale stored loads in %s: %s", self.path, exc)

    def clear(self) -> None:
        """Drop every stored load."""
        self.wait()
        with self._lock, self._connect() as db:
            db.execute(f"delete from {_TABLE}")


def _drop(db: sqlite3.Connection, conversations: Iterable[str]) -> None:
    for conversation in set(conversations):
        db.execute(f"delete from {_TABLE} where instr(conversations, ?) > 0", (conversation,))


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()
