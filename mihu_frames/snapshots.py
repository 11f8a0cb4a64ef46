"""Parquet snapshots: a hive-partitioned dataset any Parquet reader takes unchanged.

Layout: ``root/sessions/fetched_date=YYYY-MM-DD/<snapshot_id>.parquet``. Each file is one
snapshot: the sessions frame plus a ``snapshot_id`` column, zstd-compressed, with key-value
metadata (library and schema version, snapshot id, fetch time, base URL, filters, counts; never
the token). Files are written under a hidden temporary name, flushed, then renamed, so a reader
never sees a partial file; files are ``0600`` and folders ``0700`` (contacts are personal data).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

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
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            pq.write_table(table, handle, compression="zstd", use_dictionary=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
