"""Stored loads: the result of a whole load, kept so that an identical reload is one read.

A stored load is an Arrow table in one uncompressed IPC file in ``<file>.loads/`` (written
owner-only under a temporary name, then renamed), indexed in the table ``mihu_frames_loads``
by the load's key, with the conversations it holds, its record and its expiry: it expires
with the earliest of its pages, ``refresh`` skips it, ``offline`` accepts it expired. A file
is read into memory (never memory-mapped: a frame must not depend on a file another process
may remove); a damaged or missing one is dropped, and the pages answer instead.

A stored load is never older than the pages beside it, by two rules that meet in SQLite's one
writer at a time:

- Saving fresh pages of a conversation drops every stored load holding it, in the
  transaction that saves the pages and switches their listing (whoever fetched them: a load,
  a sync; :meth:`LoadStore.delete_holding`, run by the page save). That covers stored loads
  written *before* the pages.
- A load is handed over with the listing id of each of its queries (the cached listings it
  read, the fresh ones it saved), and is stored only if, in the transaction that inserts it,
  the page index holds exactly those listings of those queries (rows of that listing and of
  no other: the ``refuse`` check of :meth:`LoadStore.write`). That covers a load built from
  listing L1 while another client or process saved L2 before the load was written: it is not
  stored (logged at DEBUG), and the next load reads L2's pages. Nor is a load stored when the
  index holds no page of one of its queries (their save failed, or they were dropped since).

A load that fetched a conversation anew also drops the stored loads holding it. **A stored
load's file is removed only once the transaction that deleted its row committed** (after a
rollback the row, and so its file, stay): deleting returns the files, :meth:`LoadStore.unlink`
removes them after the commit. Files no row points to are a crash's leftovers, removed once
:data:`ORPHAN_AGE` old (younger, one may be another process's store between its rename and its
commit). An index row is a file name in the folder, never a path: one that could point outside
it is refused.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from mihu_frames._files import private_dirs
from mihu_frames._forking import renew_after_fork
from mihu_frames.cachefile.database import Database

logger = logging.getLogger("mihu_frames")

TABLE = "mihu_frames_loads"
_COLUMNS = (
    "key text primary key, expires real, conversations text not null, meta text not null, "
    "file text not null"
)
#: Rows holding any conversation of a JSON list (one parameter, however long the list: one
#: ``or`` per conversation hits SQLite's expression-depth limit at 1,000).
_HOLDS_ANY = "exists (select 1 from json_each(?) where instr(conversations, value) > 0)"
#: A stored-load file no row points to is a crash's leftover once it is this old (younger, it
#: may be another process's store between its rename and its commit).
ORPHAN_AGE = 3600.0


class LoadStore:
    """Stored load results of one cache file: their index table and their folder; see the module.

    Parameters
    ----------
    database : Database
        The cache file whose ``mihu_frames_loads`` table this is.
    folder : Path
        The folder of the stored-load files (``<file>.loads``, 0700).
    """

    def __init__(self, database: Database, folder: Path) -> None:
        self.database = database
        self.folder = folder
        self._fresh_state()
        renew_after_fork(self)

    def _fresh_state(self) -> None:
        #: Guards the index (also held through a page save's transaction: never take it where
        #: waiting for a write would hurt).
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LoadStore({str(self.folder)!r})"

    @staticmethod
    def create(db: sqlite3.Connection) -> None:
        """Create the index table where missing; one stored by an older version starts over."""
        columns = [row[1] for row in db.execute(f"pragma table_info({TABLE})")]
        if columns and "file" not in columns:
            db.execute(f"drop table {TABLE}")
        db.execute(f"create table if not exists {TABLE} ({_COLUMNS})")

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the index for a transaction of another part that deletes from it (a page save:
        :meth:`delete_holding` in its transaction)."""
        with self._lock:
            yield

    def read(self, key: str, *, offline: bool = False) -> tuple[pa.Table, dict[str, Any]] | None:
        """The stored table and its record, or None when absent, damaged (then dropped) or
        (unless ``offline``) expired."""
        try:
            with self._lock, self.database.connect() as db:
                row = db.execute(
                    f"select expires, meta, file from {TABLE} where key = ?", (key,)
                ).fetchone()
        except sqlite3.Error as exc:  # only a cache: load the pages instead
            logger.warning("could not read stored loads in %s: %s", self.database.path, exc)
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
            with pa.OSFile(str(self.folder / _plain_name(name)), mode="r") as source:
                table = pa.ipc.open_file(source).read_all()
            return table, json.loads(meta)
        except (pa.ArrowException, OSError, ValueError) as exc:
            logger.warning("dropping a damaged stored load in %s: %s", self.database.path, exc)
            try:
                self._drop("key = ? and file = ?", (key, name))  # not one stored since
            except sqlite3.Error as error:
                logger.warning("could not drop it: %s", error)
            return None

    def write(
        self,
        key: str,
        table: pa.Table,
        *,
        expires: float | None,
        conversations: list[str],
        fresh: list[str],
        meta: dict[str, Any],
        refuse: Callable[[sqlite3.Connection], str | None],
    ) -> None:
        """Store a load now (the writer calls this), unless ``refuse`` says why not.

        Parameters
        ----------
        key : str
            What identifies the load; the load stored under it before is replaced.
        table : pyarrow.Table
            Its result.
        expires : float or None
            Its expiry (Unix seconds), None for never.
        conversations : list of str
            The conversations it holds.
        fresh : list of str
            Those it fetched anew: stored loads holding them are dropped.
        meta : dict
            Its record.
        refuse : callable
            Given the inserting transaction's connection: why the load must not be stored
            (logged at DEBUG), or None.

        Failures are logged, never raised: the store is only a cache.
        """
        if not self.database.path.exists():  # removed since the load: nothing to index it in
            return
        name = f"{key}-{secrets.token_hex(4)}.arrow"
        try:
            self._write_file(name, table)
            with self._lock, self.database.connect() as db:
                db.execute("begin immediate")
                refused = refuse(db)
                if refused is not None:  # pages of another listing beside it: never stored
                    db.execute("rollback")
                    logger.debug("not storing the load %s: %s", key[:12], refused)
                    (self.folder / name).unlink(missing_ok=True)
                    return
                # Stored loads sharing a conversation fetched anew are stale; the same load
                # stored before is replaced.
                dropped = self._delete(db, _HOLDS_ANY + " or key = ?", (json.dumps(fresh), key))
                dropped += self._delete(db, "expires <= ?", (time.time(),))
                db.execute(
                    f"insert into {TABLE} values (?, ?, ?, ?, ?)",
                    (key, expires, ",".join(conversations), json.dumps(meta), name),
                )
                db.execute("commit")
            self.unlink(dropped)  # only now: a rollback would have kept their rows
            self.remove_orphans()
        except (OSError, sqlite3.Error, pa.ArrowException) as exc:  # only a cache: never fatal
            logger.warning("could not store the load result in %s: %s", self.database.path, exc)
            (self.folder / name).unlink(missing_ok=True)

    def _write_file(self, name: str, table: pa.Table) -> None:
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

    def delete_holding(self, db: sqlite3.Connection, conversations: Iterable[str]) -> list[str]:
        """Delete the rows of the stored loads holding any of ``conversations``, in the caller's
        transaction (holding :meth:`held`); return their files, for :meth:`unlink` once that
        transaction committed."""
        return self._delete(db, _HOLDS_ANY, (json.dumps(list(conversations)),))

    def delete_all(self, db: sqlite3.Connection) -> list[str]:
        """Delete every row, in the caller's transaction; return their files (as above)."""
        return self._delete(db, "1", ())

    @staticmethod
    def _delete(db: sqlite3.Connection, where: str, params: Iterable[Any]) -> list[str]:
        params = tuple(params)
        names = [r[0] for r in db.execute(f"select file from {TABLE} where {where}", params)]
        db.execute(f"delete from {TABLE} where {where}", params)
        return names

    def _drop(self, where: str, params: Iterable[Any]) -> None:
        """Delete the stored loads matching ``where`` in a transaction of their own, then
        (once it committed) their files."""
        with self._lock, self.database.connect() as db:
            db.execute("begin immediate")
            names = self._delete(db, where, params)
            db.execute("commit")
        self.unlink(names)

    def invalidate(self, conversations: Iterable[str]) -> None:
        """Drop every stored load holding one of ``conversations``, in a transaction of its
        own, then their files.

        Raises
        ------
        sqlite3.Error
            When the transaction failed (then nothing was dropped).
        """
        self._drop(_HOLDS_ANY, (json.dumps(list(conversations)),))

    def unlink(self, names: Iterable[str]) -> None:
        """Remove stored-load files whose rows a committed transaction deleted."""
        for name in names:
            try:
                (self.folder / _plain_name(name)).unlink(missing_ok=True)
            except (OSError, ValueError) as exc:
                logger.warning("could not remove a stored load %r: %s", name, exc)

    def remove_orphans(self) -> None:
        """Remove stored-load files no row points to (a crash's leftovers), once old enough."""
        with self._lock, self.database.connect() as db:
            known = {r[0] for r in db.execute(f"select file from {TABLE}")}
        cutoff = time.time() - ORPHAN_AGE
        for entry in os.scandir(self.folder):
            orphan = entry.name.endswith((".arrow", ".arrow.tmp")) and entry.name not in known
            try:
                if orphan and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    logger.info("removed a stored load no index row points to: %s", entry.path)
            except OSError as exc:
                logger.warning("could not remove %s: %s", entry.path, exc)

    def files(self) -> list[Path]:
        """The stored-load files in the folder."""
        return sorted(self.folder.glob("*.arrow"))

    def _after_fork(self) -> None:
        """In a forked child: a lock another thread of the parent held stays held; a new one."""
        self._fresh_state()


def _plain_name(name: object) -> str:
    """A stored-load file name from the index, refused if it could point outside the folder."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name[0] == ".":
        raise ValueError(f"not a stored-load file name: {name!r:.80}")
    return name
