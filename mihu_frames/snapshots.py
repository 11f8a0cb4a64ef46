"""Parquet snapshots: a root that any Parquet reader takes unchanged, for months.

A snapshot root (layout and rules in :mod:`mihu_frames.root`) holds:

- ``root/sessions/created_month=YYYY-MM/part-0.parquet``: the **latest state**, exactly one row
  per session, plain hive-partitioned Parquet. DuckDB
  (``read_parquet('root/sessions/**/*.parquet', hive_partitioning=true)``), Polars, pyarrow and
  Spark read it with no de-duplication of their own, also while a write or compaction runs.
- ``root/history/fetched_date=YYYY-MM-DD/<snapshot_id>.parquet``: **every version** ever written,
  one file per write, with a ``snapshot_id`` column (``read_snapshots(root, latest=False)``).
- ``root/mihu_frames_root.json``: the manifest: the layout version and the ``status``/``type``
  filters the root's sessions were fetched under (later syncs reuse them).

Rules a write follows (:func:`write_snapshot`, and the storage step of a sync):

- **What changes.** Rows are compared with the latest state (:mod:`mihu_frames.versions`): a
  row identical to the version held (``fetched_at`` aside) is not written again, so writing the
  same data twice adds nothing; an untagged row keeps the ``status``/``type`` held.
- **Cost.** One history file with the new and changed rows, and a rewrite of the latest-state
  partitions that hold them (usually the current month's): proportional to what changed.
- **Atomic, owner-only.** Every file is written under a hidden temporary name in
  ``root/.staging/``, fsynced and renamed (``os.replace``) into place; writers of one root are
  serialized by a lock file; files are ``0600`` and folders ``0700`` (contacts are personal
  data). Temporary files that killed writers leave are removed by the next write or compaction,
  never one a live writer still holds: the ``flock`` rule is in :mod:`mihu_frames.atomic`.
- **Metadata.** Parquet key-value metadata (``mihu_frames.*``) records the library, schema and
  layout versions, snapshot id, fetch and write times, base URL (never the token), filters and
  counts.
- **Roots of earlier releases** (``sessions/fetched_date=…/``, one file per snapshot) are read
  as they are and converted on their first write or compaction, nothing dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from typing_extensions import Unpack

from mihu_frames.errors import NotASnapshotRootError
from mihu_frames.option_types import OutputKwargs
from mihu_frames.options import ALL, OutputOptions, conversation_ids, instant, split_options, takes
from mihu_frames.root import (
    FILE_SCHEMA,
    ORDER,
    CommitReport,
    file_metadata,
    new_snapshot_id,
    open_root,
    recorded_from_rows,
)
from mihu_frames.schema import COLUMNS, from_pandas, to_pandas, to_polars, types_mapper
from mihu_frames.versions import SNAPSHOT_ID

__all__ = [
    "PII_COLUMNS",
    "RESERVED_METADATA",
    "SNAPSHOT_ID",
    "hash_pii",
    "new_snapshot_id",
    "read_snapshots",
    "snapshot_files",
    "snapshot_metadata",
    "write_snapshot",
]

#: Keys of the record every snapshot carries; ``metadata=`` cannot replace them.
RESERVED_METADATA = frozenset(
    {
        "library_version",
        "schema_version",
        "layout_version",
        "dataset",
        "snapshot_id",
        "fetched_at",
        "written_at",
        "base_url",
        "filters",
        "rows",
        "conversations",
        "requests",
        "pii",
        "rows_new",
        "rows_changed",
        "rows_unchanged",
        "rows_stale",
        "compacted_from",
    }
)
PII_COLUMNS = ("contact_name", "contact_surname", "contact_phone_number", "contact_email")


def write_snapshot(
    df: pd.DataFrame,
    root: str | os.PathLike[str] = "data/snapshots",
    *,
    metadata: Mapping[str, Any] | None = None,
    pii: str | None = None,
) -> Path | None:
    """Write a sessions frame to a snapshot root: its changes to history, the latest state updated.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (from :func:`load_sessions`, :func:`sessions_frame` or a read).
    root : str or Path
        The snapshot root; created in a missing or empty folder (owner-only). A root of an
        earlier release is converted first (see :mod:`mihu_frames.root`).
    metadata : mapping, optional
        Extra key-value metadata for the history file (JSON-serialisable values).
    pii : {None, "hash"}
        ``"hash"`` replaces contact name, surname, phone number and e-mail with keyed hashes
        (HMAC-SHA256 with the key in ``MIHU_PII_KEY``), stable across snapshots so they still
        join, for datasets that leave the analyst's machine. ``summary`` is free text and may
        mention names: drop it yourself if that matters.

    Returns
    -------
    pathlib.Path or None
        The history file written (``root/history/fetched_date=YYYY-MM-DD/<snapshot_id>.parquet``,
        the UTC date of the newest ``fetched_at``), holding the rows that were new or changed.
        ``None`` when every row is already held as it is: nothing was written (writing the same
        data twice adds no snapshot). Its metadata records ``rows_new``, ``rows_changed``,
        ``rows_unchanged`` and ``rows_stale``; the files and bytes written are logged at INFO.

    Raises
    ------
    NotASnapshotRootError
        ``root`` is a file, or a non-empty folder that is not a snapshot root.
    ValueError
        ``df`` is not a sessions frame (a column missing, or one it does not know: a snapshot
        would drop it), a timestamp column is time-zone-naive or finer than microseconds (the
        message names the column and the fix), ``pii`` is unknown or has no key, or
        ``metadata`` uses a reserved key; nothing is written.

    Notes
    -----
    Rows are compared with the latest state held (:mod:`mihu_frames.versions`): new sessions
    are added; a session held with other content is replaced when this row was fetched at or
    after the one held, else the row is kept in history only (an older fetch written late);
    an identical row is not written again. A row without a ``status``/``type`` tag keeps the
    one held, and a session served under two conversations keeps the conversation it is held
    under (:mod:`mihu_frames.versions`). Ids are stored lower case. A frame loaded with
    ``"all"`` makes the root remember it (later syncs may leave the conversations out). The
    latest state is rewritten only in the partitions (months of ``created_at``)
    that hold a new or changed session. A new root records the ``status``/``type`` filters the
    frame was fetched under (``df.attrs["mihu_frames"]["filters"]``, else its tags).

    Files are written under hidden temporary names in ``root/.staging/`` and renamed, so readers
    (this library, DuckDB, Polars, pyarrow, Spark) never see a partial file, also when the writer
    is killed; see :mod:`mihu_frames.atomic` for the lock, the clean-up of temporary files that
    killed writers leave, and :mod:`mihu_frames.root` for the crash recovery.

    Examples
    --------
    >>> path = mf.write_snapshot(df, root="data/snapshots")          # doctest: +SKIP
    >>> mf.read_snapshots("data/snapshots").equals(df)               # a new root  # doctest: +SKIP
    True
    >>> mf.write_snapshot(df, root="data/snapshots") is None         # doctest: +SKIP
    True
    """
    return _write(df, root, metadata=metadata, pii=pii).history_file


def _write(
    df: pd.DataFrame,
    root: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    pii: str | None = None,
) -> CommitReport:
    if pii not in (None, "hash"):
        raise ValueError(f"pii must be None or 'hash', got {pii!r}")
    clash = set(metadata or {}) & RESERVED_METADATA
    if clash:
        raise ValueError(f"metadata keys {sorted(clash)} are reserved for the snapshot's record")
    table = from_pandas(df)
    unknown = [c for c in df.columns if c not in COLUMNS and c != SNAPSHOT_ID]
    if unknown:
        raise ValueError(
            f"column(s) {[str(c) for c in unknown]} are not sessions columns and a snapshot "
            "would drop them: drop them first (df.drop(columns=[...])), or keep them beside "
            "the root (e.g. a Parquet file joined on 'uuid')"
        )
    if pii == "hash":
        table = hash_pii(table)
    store = open_root(root, create=True)
    attrs = df.attrs.get("mihu_frames", {}) if isinstance(df.attrs, dict) else {}
    record = {
        "base_url": attrs.get("base_url"),
        "filters": attrs.get("filters"),
        "requests": attrs.get("requests"),
        "pii": pii or "kept",
        **(metadata or {}),
    }
    # A load of "all" makes a root of every conversation: later syncs may leave them out.
    recorded = None
    if attrs.get("listed") == ALL:
        held = store.recorded or recorded_from_rows(table, record)
        recorded = replace(held, conversations=ALL)
    return store.commit(table, metadata=record, recorded=recorded)


def hash_pii(table: pa.Table, key: bytes | None = None) -> pa.Table:
    """Replace the contact columns with keyed hashes (``MIHU_PII_KEY`` unless ``key`` is given).

    Each distinct value is hashed once: HMAC-SHA256, hex, first 32 characters. Nulls stay null.

    Examples
    --------
    >>> hashed = hash_pii(table, key=b"secret")                      # doctest: +SKIP
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


def snapshot_files(root: str | os.PathLike[str]) -> list[Path]:
    """Every history file under ``root``, oldest snapshot first (empty for a new root).

    Examples
    --------
    >>> [p.name for p in mf.snapshots.snapshot_files("data/snapshots")]  # doctest: +SKIP
    ['20261125T183000123456Z-1a2b3c4d.parquet']
    """
    return open_root(root).history_files()


@takes((OutputOptions, None))
def read_snapshots(
    root: str | os.PathLike[str] = "data/snapshots",
    latest: bool = True,
    *,
    conversations: str | Iterable[str] | None = None,
    columns: Iterable[str] | None = None,
    since: datetime | str | pd.Timestamp | None = None,
    **output: Unpack[OutputKwargs],
) -> pd.DataFrame:
    """Read a snapshot root back as a sessions frame.

    Parameters
    ----------
    root : str or Path
        The snapshot root given to :func:`write_snapshot` or :func:`sync_snapshots`.
    latest : bool
        ``True``: the latest state, one row per session (``root/sessions/``). ``False``: every
        version in history, with its ``snapshot_id``.
    conversations : str, uuid.UUID, an iterable of them, a Series or DataFrame, optional
        Read only these conversations (pushed down to the Parquet scan). Each is a canonical
        UUID, either case, or a :class:`uuid.UUID`, as :func:`load_sessions` takes them.
    columns : iterable of str, optional
        Read only these columns.
    since : datetime or str, optional
        Only sessions updated at or after this instant (``updated_at >= since``; a naive
        value is taken as UTC). Pushed down to the Parquet scan. With ``latest`` it applies to
        each session's latest version.
    <options>

    Returns
    -------
    pandas.DataFrame
        The sessions frame, dtype for dtype as written, rows in the order they were first
        written to the root (a frame written to a new root reads back row for row; history:
        by ``snapshot_id``, then that order); empty with every column when nothing matches.

    Raises
    ------
    NotASnapshotRootError
        ``root`` is not a snapshot root (missing, empty, a file, a root's ``sessions/``
        folder, any other folder): never an empty frame for a wrong path.
    ValueError
        An unknown column, a conversation that is not a UUID, a ``since`` that is not a date.

    Examples
    --------
    >>> df = mf.read_snapshots("data/snapshots")                     # doctest: +SKIP
    >>> week = mf.read_snapshots("data/snapshots", since="2026-11-01",
    ...                          columns=["uuid", "duration"])       # doctest: +SKIP
    """
    (chosen,) = split_options(output, OutputOptions)
    to = OutputOptions(**chosen).to
    wanted = list(columns) if columns is not None else None
    if wanted is not None:
        known = [*COLUMNS, SNAPSHOT_ID]
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; columns are {known}")
    ids = None if conversations is None else list(conversation_ids(conversations))
    bound = instant("since", since)
    order = [ORDER, "uuid"] if latest else [SNAPSHOT_ID, ORDER]
    read = None
    if wanted is not None:
        read = [c for c in FILE_SCHEMA.names if c in wanted or c in order]
    for attempt in range(3):  # a root being converted changes under a reader once
        store = open_root(root)
        try:
            if latest:
                table = store.read_latest(read, conversations=ids, since=bound)
            else:
                table = store.read_history(read, _history_filter(ids, bound))
            break
        except NotASnapshotRootError:
            raise
        except FileNotFoundError:
            if attempt == 2:
                raise
    return frame_of(table, latest=latest, columns=wanted, to=to)


def frame_of(
    table: pa.Table,
    *,
    latest: bool = True,
    columns: Sequence[str] | None = None,
    to: str = "pandas",
) -> Any:
    """The sessions frame of rows read from a root (:func:`read_snapshots`' order and dtypes)."""
    order = [ORDER, "uuid"] if latest else [SNAPSHOT_ID, ORDER]
    if table.num_rows > 1:
        table = table.take(pc.sort_indices(table, [(c, "ascending") for c in order]))
    names = [c for c in COLUMNS if columns is None or c in columns]
    if to == "polars":  # from the Arrow table, not through pandas
        frame: Any = to_polars(table, columns=names)
        if not latest and (columns is None or SNAPSHOT_ID in columns):
            frame = frame.with_columns(frame.__class__(table.select([SNAPSHOT_ID]))[SNAPSHOT_ID])
        return frame
    df = to_pandas(table, columns=names)
    if not latest and (columns is None or SNAPSHOT_ID in columns):
        df[SNAPSHOT_ID] = table.column(SNAPSHOT_ID).to_pandas(types_mapper=types_mapper)
    return df


def _history_filter(ids: list[str] | None, bound: datetime | None) -> Any:
    where = None if ids is None else pc.field("conversation_uuid").isin(ids)
    if bound is not None:
        recent = pc.field("updated_at") >= pa.scalar(bound, FILE_SCHEMA.field("updated_at").type)
        where = recent if where is None else where & recent
    return where


def snapshot_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``mihu_frames.*`` key-value metadata of one file of a root, decoded.

    Examples
    --------
    >>> mf.snapshot_metadata(path)["rows_new"]                       # doctest: +SKIP
    250
    """
    return file_metadata(path)
