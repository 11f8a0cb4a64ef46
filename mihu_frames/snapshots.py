"""Parquet snapshots: a hive-partitioned dataset any Parquet reader takes unchanged.

Layout: ``root/sessions/fetched_date=YYYY-MM-DD/<snapshot_id>.parquet``. Each file is one
snapshot: the sessions frame plus a ``snapshot_id`` column, zstd-compressed, with key-value
metadata (library and schema version, snapshot id, fetch time, base URL, filters, counts; never
the token). Files are written under a hidden temporary name, flushed, then renamed, so a reader
never sees a partial file; files are ``0600`` and folders ``0700`` (contacts are personal data).

Abandoned temporary files
-------------------------
A writer killed mid-write (``kill -9``, power loss) leaves its hidden temporary file behind: part
of a snapshot, contacts included. Every write (and every compaction) first removes such leftovers
from the whole snapshot tree, without ever touching a file a live writer in another process is
still writing. The rule, in :func:`_remove_abandoned_temp_files`:

- Only regular files named exactly like ours (``.<snapshot_id>.parquet.<8 hex>.tmp``) directly in
  a ``sessions/fetched_date=*/`` folder are candidates; nothing else is ever touched.
- A writer holds an exclusive ``flock`` on its temporary file from before its first byte until
  after the rename, and the kernel drops the lock when the process dies. A candidate the cleaner
  can lock (without waiting) and that holds data has therefore lost its writer: it is removed at
  once. An empty candidate may have been created a moment ago by a writer that has not locked it
  yet: it is removed only when older than :data:`STALE_TEMP_SECONDS` (it holds no data anyway),
  and a writer that finds its new file gone after locking it starts over under a new name.
- Without ``flock`` (Windows) the age rule alone applies to every candidate; there a file still
  open by its writer cannot be removed anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; the age rule alone decides (see the module docstring)
    fcntl = None  # type: ignore[assignment]

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mihu_frames._version import __version__
from mihu_frames.frame import deduplicate
from mihu_frames.schema import (
    COLUMNS,
    SCHEMA_VERSION,
    SESSIONS_SCHEMA,
    from_pandas,
    to_pandas,
    types_mapper,
)

DATASET = "sessions"
SNAPSHOT_ID = "snapshot_id"
PARTITION = "fetched_date"
_FILE_SCHEMA = SESSIONS_SCHEMA.append(pa.field(SNAPSHOT_ID, pa.string()))

#: Where a temporary file's lock cannot tell, its age does: an unlocked *empty* one (its writer
#: may be between creating and locking it, a matter of microseconds) or, without ``flock``, any
#: one is taken for abandoned once its last write is this old. A snapshot write takes seconds
#: and moves the mtime as it goes, so an hour is far beyond any live write, and a leftover
#: still goes the same day.
STALE_TEMP_SECONDS = 3600.0
_TEMP_NAME = re.compile(r"\.\d{8}T\d{12}Z-[0-9a-f]{8}\.parquet\.[0-9a-f]{8}\.tmp")
_TEMP_ATTEMPTS = 3

logger = logging.getLogger("mihu_frames")


def new_snapshot_id(now: datetime | None = None) -> str:
    """A snapshot id that sorts by creation time: ``20261125T183000123456Z-1a2b3c4d``."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)


def write_snapshot(
    df: pd.DataFrame,
    root: str | os.PathLike[str] = "data/snapshots",
    *,
    metadata: Mapping[str, Any] | None = None,
    pii: str | None = None,
) -> Path:
    """Write a sessions frame as one Parquet snapshot, atomically.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (from :func:`load_sessions`, :func:`sessions_frame` or a read).
    root : str or Path
        The snapshot root; the file lands in ``root/sessions/fetched_date=YYYY-MM-DD/``
        (the UTC date of the newest ``fetched_at``, or today for a frame without one).
    metadata : mapping, optional
        Extra key-value metadata to record (JSON-serialisable values).
    pii : {None, "hash"}
        ``"hash"`` replaces contact name, surname, phone number and e-mail with keyed hashes
        (HMAC-SHA256 with the key in ``MIHU_PII_KEY``), stable across snapshots so they still
        join, for datasets that leave the analyst's machine. ``summary`` is free text and may
        mention names: drop it yourself if that matters.

    Returns
    -------
    pathlib.Path
        The snapshot file.

    Notes
    -----
    The file is written under a hidden temporary name (``.<snapshot_id>.parquet.<hex>.tmp``,
    ``0600``), flushed and renamed, so readers never see a partial snapshot, even when the
    writer is killed. Before writing, temporary files that earlier writers abandoned (killed
    mid-write) anywhere in ``root/sessions/fetched_date=*/`` are removed, and each removal is
    logged at INFO. A temporary file that a live writer in another process is still writing is
    never removed: writers hold an exclusive ``flock`` on it until it is renamed. On platforms
    without ``flock`` (Windows) a leftover is removed once it is :data:`STALE_TEMP_SECONDS`
    old. Only files matching that exact name in a partition folder are ever touched, and a
    failure to remove one is logged at WARNING and never fails the write.

    Examples
    --------
    >>> path = mf.write_snapshot(df, root="data/snapshots")          # doctest: +SKIP
    >>> mf.read_snapshots("data/snapshots").equals(df)               # doctest: +SKIP
    True
    """
    if pii not in (None, "hash"):
        raise ValueError(f"pii must be None or 'hash', got {pii!r}")
    clash = set(metadata or {}) & RESERVED_METADATA
    if clash:
        raise ValueError(f"metadata keys {sorted(clash)} are reserved for the snapshot's record")
    table = from_pandas(df)
    if pii == "hash":
        table = hash_pii(table)
    now = datetime.now(timezone.utc)
    snapshot_id = new_snapshot_id(now)
    newest = pc.max(table.column("fetched_at")).as_py() if table.num_rows else None
    fetched_at = newest or now
    folder = Path(root) / DATASET / f"{PARTITION}={fetched_at.strftime('%Y-%m-%d')}"
    _private_dirs(folder)
    ids = pa.DictionaryArray.from_arrays(
        pa.array([0] * table.num_rows, pa.int32()), pa.array([snapshot_id])
    )
    table = table.append_column(SNAPSHOT_ID, ids.cast(pa.string()))
    attrs = df.attrs.get("mihu_frames", {}) if isinstance(df.attrs, dict) else {}
    record = {
        "library_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "snapshot_id": snapshot_id,
        "fetched_at": fetched_at.isoformat(),
        "written_at": now.isoformat(),
        "base_url": attrs.get("base_url"),
        "filters": attrs.get("filters"),
        "rows": table.num_rows,
        "conversations": pc.count_distinct(table.column("conversation_uuid")).as_py(),
        "requests": attrs.get("requests"),
        "pii": pii or "kept",
    }
    record.update(metadata or {})
    kv = {f"mihu_frames.{k}": json.dumps(v, default=str) for k, v in record.items()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **kv})
    final = folder / f"{snapshot_id}.parquet"
    _remove_abandoned_temp_files(root)
    _write_atomically(table, final)
    return final


#: Keys of the record every snapshot carries; ``metadata=`` cannot replace them.
RESERVED_METADATA = frozenset(
    {
        "library_version",
        "schema_version",
        "snapshot_id",
        "fetched_at",
        "written_at",
        "base_url",
        "filters",
        "rows",
        "conversations",
        "requests",
        "pii",
    }
)
PII_COLUMNS = ("contact_name", "contact_surname", "contact_phone_number", "contact_email")


def hash_pii(table: pa.Table, key: bytes | None = None) -> pa.Table:
    """Replace the contact columns with keyed hashes (``MIHU_PII_KEY`` unless ``key`` is given).

    Each distinct value is hashed once: HMAC-SHA256, hex, first 32 characters. Nulls stay null.
    """
    if key is None:
        secret = os.environ.get("MIHU_PII_KEY")
        if not secret:
            raise ValueError("pii='hash' needs a key: set MIHU_PII_KEY (keep it secret)")
        key = secret.encode()
    for name in PII_COLUMNS:
        encoded = table.column(name).combine_chunks().dictionary_encode()
        digests = [
            None if v is None else hmac.new(key, v.encode(), hashlib.sha256).hexdigest()[:32]
            for v in encoded.dictionary.to_pylist()
        ]
        hashed = pa.array(digests, pa.string()).take(encoded.indices)
        table = table.set_column(table.schema.get_field_index(name), name, hashed)
    return table


def _private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents owner-only (the umask may not be 077)."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)  # another process may race us here
        os.chmod(path, 0o700)


def _write_atomically(table: pa.Table, final: Path) -> None:
    tmp, fd = _create_temp_file(final)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd", use_dictionary=True)
            handle.flush()
            os.fsync(handle.fileno())
            if fcntl is not None:
                # Rename while the lock is held (closing drops it): a temporary file with data
                # in it is never unlocked while its writer lives, which the cleaner relies on.
                os.replace(tmp, final)
        if fcntl is None:
            os.replace(tmp, final)  # Windows cannot rename a file that is still open
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _create_temp_file(final: Path) -> tuple[Path, int]:
    """Create ``final``'s hidden temporary file (``0600``) and lock it; return it and its fd."""
    for _ in range(_TEMP_ATTEMPTS):
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
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
    raise OSError(f"could not create a temporary file next to {final}: removed as it was made")


def _remove_abandoned_temp_files(root: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files killed writers left under ``root``; never raises.

    See the module docstring for the rule. Returns the files removed.
    """
    removed: list[Path] = []
    try:
        candidates = sorted(
            path
            for path in (Path(root) / DATASET).glob(f"{PARTITION}=*/.*.tmp")
            if _TEMP_NAME.fullmatch(path.name)
        )
    except OSError as error:
        logger.warning("could not look for abandoned temporary files under %s: %s", root, error)
        return removed
    for path in candidates:
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


def snapshot_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every complete snapshot file under ``root``, oldest first."""
    base = Path(root) / DATASET
    return sorted(base.glob(f"{PARTITION}=*/*.parquet"), key=lambda p: p.stem)


def read_snapshots(
    root: str | os.PathLike[str] = "data/snapshots",
    latest: bool = True,
    *,
    conversations: str | Iterable[str] | None = None,
    columns: Iterable[str] | None = None,
    since: datetime | str | pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Read snapshots back as a sessions frame.

    Parameters
    ----------
    root : str or Path
        The snapshot root given to :func:`write_snapshot`.
    latest : bool
        ``True``: the latest state of every session across all snapshots (one row per
        ``uuid``: newest ``updated_at``, then newest fetch). ``False``: every row of every
        snapshot, with its ``snapshot_id``.
    conversations : str or iterable of str, optional
        Read only these conversations (pushed down to the Parquet scan).
    columns : iterable of str, optional
        Read only these columns (the keys needed for ``latest`` are read regardless).
    since : datetime or str, optional
        Only sessions updated at or after this instant (``updated_at >= since``; a naive
        value is taken as UTC). Pushed down to the Parquet scan.

    Returns
    -------
    pandas.DataFrame
        The sessions frame, dtype for dtype as written; empty with every column when the root
        holds no snapshot.

    Examples
    --------
    >>> df = mf.read_snapshots("data/snapshots")                     # doctest: +SKIP
    """
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"no snapshot root at {base}")
    wanted = list(columns) if columns is not None else None
    if wanted is not None:
        unknown = [c for c in wanted if c not in _FILE_SCHEMA.names]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; columns are {list(_FILE_SCHEMA.names)}")
    scan_filter = None
    if conversations is not None:
        ids = [conversations] if isinstance(conversations, str) else list(conversations)
        scan_filter = pc.field("conversation_uuid").isin([c.lower() for c in ids])
    if since is not None:
        bound = pd.Timestamp(since)
        bound = bound.tz_localize("UTC") if bound.tzinfo is None else bound.tz_convert("UTC")
        instant = pa.scalar(bound.to_pydatetime(), pa.timestamp("us", "UTC"))
        recent = pc.field("updated_at") >= instant
        scan_filter = recent if scan_filter is None else scan_filter & recent
    read = None
    if wanted is not None:
        keys = ["uuid", "updated_at", "fetched_at", SNAPSHOT_ID] if latest else []
        read = [c for c in _FILE_SCHEMA.names if c in wanted or c in keys]
    table = _scan(base, read, scan_filter)
    if latest:
        table = deduplicate(table, tiebreak=SNAPSHOT_ID).drop_columns([SNAPSHOT_ID])
    names = [c for c in COLUMNS if wanted is None or c in wanted]
    df = to_pandas(table, columns=names)
    if not latest and (wanted is None or SNAPSHOT_ID in wanted):
        df[SNAPSHOT_ID] = table.column(SNAPSHOT_ID).to_pandas(types_mapper=types_mapper)
    return df


def _scan(base: Path, columns: list[str] | None, scan_filter: Any) -> pa.Table:
    """Read every complete snapshot file; list again if one vanishes (a compaction ran)."""
    for attempt in range(3):
        files = snapshot_files(base)
        if not files:
            schema = (
                _FILE_SCHEMA
                if columns is None
                else pa.schema([_FILE_SCHEMA.field(c) for c in columns])
            )
            return schema.empty_table()
        try:
            dataset = ds.dataset([str(f) for f in files], schema=_FILE_SCHEMA, format="parquet")
            return dataset.to_table(columns=columns, filter=scan_filter)
        except FileNotFoundError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def snapshot_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``mihu_frames.*`` key-value metadata of one snapshot file, decoded."""
    meta = pq.read_schema(path).metadata or {}
    prefix = b"mihu_frames."
    return {
        k[len(prefix) :].decode(): json.loads(v) for k, v in meta.items() if k.startswith(prefix)
    }
