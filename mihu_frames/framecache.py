"""Decoded loads kept beside the HTTP cache, so an identical reload is one read, not N pages.

requests-cache keeps every page's response; reloading from it still costs a lookup, an unpickle
and a JSON decode per page. This cache keeps the *result* of a whole load (the Arrow table),
valid exactly as long as the pages it was built from:

- its expiry is the earliest expiry of those pages, so it never outlives what requests-cache
  would have served;
- ``refresh=True`` skips it (and replaces it); ``offline=True`` accepts it even when expired,
  like requests-cache's ``only_if_cached``;
- a load that fetched any page from the network drops every stored load that shares one of its
  conversations, so no stored load is older than the pages in the HTTP cache;
- only complete loads (no failed conversation) are stored.

The index is a table of the requests-cache SQLite file (``mihu_frames_loads``: plain SQL,
because expiry and invalidation are queries); each table is an uncompressed Arrow IPC file in
the folder ``<cache file>.loads/`` (owner-only), read back in one sequential read with no
decoding. A file is written under a temporary name and renamed, then indexed; a file whose
row is gone is deleted with it, or (left by a crash) by a later store once it is an hour old.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

from mihu_frames import background
from mihu_frames._version import __version__
from mihu_frames.schema import SCHEMA_VERSION

logger = logging.getLogger("mihu_frames")

_TABLE = "mihu_frames_loads"
_COLUMNS = "key text primary key, expires real, conversations text not null, meta text not null"
#: Rows holding any conversation of a JSON list (one parameter, however long the list: one
#: ``or`` per conversation hits SQLite's expression-depth limit at 1,000).
_HOLDS_ANY = "exists (select 1 from json_each(?) where instr(conversations, value) > 0)"
#: A stored-load file no row points to is a crash's leftover once it is this old (younger, it
#: may be another process's store between its rename and its commit).
ORPHAN_AGE = 3600.0


class FrameCache:
    """Whole-load results beside the requests-cache SQLite file: an index table in it, one
    Arrow file per load in ``<cache file>.loads/``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.folder = Path(f"{path}.loads")
        self._lock = threading.Lock()
        with self._connect() as db:
            columns = [row[1] for row in db.execute(f"pragma table_info({_TABLE})")]
            if columns and "file" not in columns:  # stored by an older version: start over
                db.execute(f"drop table {_TABLE}")
            db.execute(f"create table if not exists {_TABLE} ({_COLUMNS}, file text not null)")

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
        """Wait until every store :meth:`put` started on this file (by any client) is written."""
        background.flush(self.path)

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
                    f"select expires, meta, file from {_TABLE} where key = ?", (key,)
                ).fetchone()
        except sqlite3.Error as exc:  # only a cache: load the pages instead
            logger.warning("could not read stored loads in %s: %s", self.path, exc)
            return None
        if row is None:
            return None
        expires, meta, name = row
        if expires is not None and expires <= _now() and not offline:
            logger.debug("stored load %s expired", key[:12])
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
                with self._lock, self._connect() as db:  # not a row stored meanwhile
                    self._delete(db, "key = ? and file = ?", (key, name))
            except sqlite3.Error as error:
                logger.warning("could not drop it: %s", error)
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

        The write runs on the file's background writer (:mod:`mihu_frames.background`): the
        caller already has its frame, and closing the client does not wait. The next
        :meth:`get`, :meth:`invalidate` or :meth:`clear` on this file waits for it, and so does
        interpreter exit.
        """
        background.submit(
            self.path,
            self._write,
            key,
            table,
            expires,
            list(conversations),
            list(fresh),
            meta,
        )

    def _write(
        self,
        key: str,
        table: pa.Table,
        expires: datetime | None,
        conversations: list[str],
        fresh: list[str],
        meta: dict[str, Any],
    ) -> None:
        if not Path(self.path).exists():  # removed since the load: nothing to index it in
            return
        name = f"{key}-{secrets.token_hex(4)}.arrow"
        try:
            self._write_file(name, table)
            stamp = expires.timestamp() if expires is not None else None
            with self._lock, self._connect() as db:
                db.execute("begin immediate")
                # Stored loads sharing a conversation fetched anew are stale; the same load
                # stored before is replaced.
                self._delete(db, _HOLDS_ANY + " or key = ?", (json.dumps(fresh), key))
                self._delete(db, "expires <= ?", (_now(),))
                db.execute(
                    f"insert into {_TABLE} values (?, ?, ?, ?, ?)",
                    (key, stamp, ",".join(conversations), json.dumps(meta), name),
                )
                db.execute("commit")
            self._remove_orphans()
        except (OSError, sqlite3.Error, pa.ArrowException) as exc:  # only a cache: never fatal
            logger.warning("could not store the load result in %s: %s", self.path, exc)
            (self.folder / name).unlink(missing_ok=True)

    def _write_file(self, name: str, table: pa.Table) -> None:
        """Write ``table`` as ``name`` in the folder: owner-only, temporary name, then renamed."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
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

    def _delete(self, db: sqlite3.Connection, where: str, params: Iterable[Any]) -> None:
        """Delete the rows matching ``where`` and their files (inside the caller's work)."""
        params = tuple(params)
        names = [r[0] for r in db.execute(f"select file from {_TABLE} where {where}", params)]
        db.execute(f"delete from {_TABLE} where {where}", params)
        for name in names:
            try:
                (self.folder / _plain_name(name)).unlink(missing_ok=True)
            except (OSError, ValueError) as exc:
                logger.warning("could not remove a stored load %r: %s", name, exc)

    def _remove_orphans(self) -> None:
        """Remove stored-load files no row points to (a crash's leftovers), once old enough."""
        with self._lock, self._connect() as db:
            known = {r[0] for r in db.execute(f"select file from {_TABLE}")}
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
        self.wait()
        try:
            with self._lock, self._connect() as db:
                self._delete(db, _HOLDS_ANY, (json.dumps(conversations),))
        except sqlite3.Error as exc:
            logger.warning("could not drop stale stored loads in %s: %s", self.path, exc)

    def clear(self) -> None:
        """Drop every stored load."""
        self.wait()
        with self._lock, self._connect() as db:
            self._delete(db, "1", ())


def _plain_name(name: object) -> str:
    """A stored-load file name from the index, refused if it could point outside the folder."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name[0] == ".":
        raise ValueError(f"not a stored-load file name: {name!r:.80}")
    return name


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()
