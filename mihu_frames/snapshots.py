"""Snapshots: a root that every Delta Lake reader takes unchanged, for years.

A snapshot root (layout and rules in :mod:`mihu_frames.store`) is a folder or a URI holding two
Delta Lake tables, written with ``deltalake`` (delta-rs):

- ``root/latest/``: the **latest state**, one row per session, partitioned by ``created_month``.
  ``read_snapshots(root)``, Polars (``pl.scan_delta("root/latest")``), DuckDB
  (``delta_scan('root/latest')``), Spark, Trino and Athena read one committed version whole.
- ``root/versions/``: the **versions the latest state replaced** (and stale ones), with
  ``snapshot_id``; every version is the two together, each once
  (``read_snapshots(root, latest=False)``).

Rules a write follows (:func:`write_snapshot`, and the storage step of a sync):

- **What changes.** Rows are compared with the latest state (:mod:`mihu_frames.versions`): a
  row identical to the version held (``fetched_at`` aside) is not written again, so writing the
  same data twice adds nothing; an untagged row keeps the ``status``/``type`` held.
- **Atomic.** The versions a write replaces are copied to ``versions/`` in one commit, then
  the latest state changes in one commit; a reader sees the state before or after, never a mix
  (a write killed between the two leaves the state before: its copies are versions the latest
  state still holds, read once).
- **Metadata.** Each commit records (``mihu_frames`` in its commit info) the library and schema
  versions, snapshot id, fetch and write times, base URL (never the token), filters and counts.
- **Owner-only** on a local disk: files ``0600``, folders ``0700`` (contacts are personal data).
- **Roots of earlier releases** (hive Parquet) are read as they are and converted on their
  first write or compaction, every version kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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

from mihu_frames.option_types import OutputKwargs
from mihu_frames.options import ALL, OutputOptions, conversation_ids, instant, split_options, takes
from mihu_frames.schema import COLUMNS, from_pandas, to_pandas, to_polars, types_mapper
from mihu_frames.store import (
    FILE_SCHEMA,
    CommitReport,
    open_root,
    recorded_from_rows,
)
from mihu_frames.versions import ORDER, SNAPSHOT_ID

__all__ = [
    "PII_COLUMNS",
    "RESERVED_METADATA",
    "SNAPSHOT_ID",
    "hash_pii",
    "read_snapshots",
    "snapshot_metadata",
    "write_snapshot",
]

#: Keys of the record every write carries; ``metadata=`` cannot replace them.
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
        "history_version",
        "months",
    }
)
PII_COLUMNS = ("contact_name", "contact_surname", "contact_phone_number", "contact_email")


def write_snapshot(
    df: pd.DataFrame,
    root: str | os.PathLike[str] = "data/snapshots",
    *,
    metadata: Mapping[str, Any] | None = None,
    pii: str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> Path | str | None:
    """Write a sessions frame to a snapshot root: its changes to history, the latest state merged.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (from :func:`load_sessions`, :func:`sessions_frame` or a read).
    root : str or Path
        The snapshot root: a folder (created owner-only when missing or empty) or a URI
        (``s3://bucket/prefix``, ``gs://…``, ``az://…``: whatever ``deltalake`` takes). A root
        of an earlier release is converted first (see :mod:`mihu_frames.store`).
    metadata : mapping, optional
        Extra key-value metadata for the write's commit (JSON-serialisable values).
    pii : {None, "hash"}
        ``"hash"`` replaces contact name, surname, phone number and e-mail with keyed hashes
        (HMAC-SHA256 with the key in ``MIHU_PII_KEY``), stable across snapshots so they still
        join, for datasets that leave the analyst's machine. ``summary`` is free text and may
        mention names: drop it yourself if that matters.
    storage_options : mapping, optional
        For a URI: credentials and settings as ``deltalake`` takes them (else the standard
        environment variables, e.g. ``AWS_ACCESS_KEY_ID``). Never stored, never printed.

    Returns
    -------
    pathlib.Path, str or None
        The commit of the latest state this write made
        (``root/latest/_delta_log/<version>.json``, a URI for a remote root: its number is the
        version ``read_snapshots(root, as_of=version)`` reads; :func:`snapshot_metadata` reads
        its record). ``None`` when every row is already held as it is: nothing was written
        (writing the same data twice adds no snapshot). The record holds ``rows_new``,
        ``rows_changed``, ``rows_unchanged`` and ``rows_stale``; files and bytes written are
        logged at INFO.

    Raises
    ------
    NotASnapshotRootError
        ``root`` is a file, or a non-empty folder that is not a snapshot root.
    SnapshotStoreError
        The storage failed or refused (credentials, a missing bucket, a full disk); the root is
        as it was (write it again).
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
    under. Ids are stored lower case. A frame loaded with ``"all"`` makes the root remember it
    (later syncs may leave the conversations out). A new root records the ``status``/``type``
    filters the frame was fetched under (``df.attrs["mihu_frames"]["filters"]``, else its tags).

    Examples
    --------
    >>> commit = mf.write_snapshot(df, root="data/snapshots")        # doctest: +SKIP
    >>> mf.read_snapshots("data/snapshots").equals(df)               # a new root  # doctest: +SKIP
    True
    >>> mf.write_snapshot(df, root="data/snapshots") is None         # doctest: +SKIP
    True
    """
    report = _write(df, root, metadata=metadata, pii=pii, storage_options=storage_options)
    return report.commit_file if report.snapshot_id is not None else None


def _write(
    df: pd.DataFrame,
    root: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    pii: str | None = None,
    storage_options: Mapping[str, str] | None = None,
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
    store = open_root(root, create=True, storage_options=storage_options)
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


@takes((OutputOptions, None))
def read_snapshots(
    root: str | os.PathLike[str] = "data/snapshots",
    latest: bool = True,
    *,
    conversations: str | Iterable[str] | None = None,
    columns: Iterable[str] | None = None,
    since: datetime | str | pd.Timestamp | None = None,
    as_of: int | datetime | str | pd.Timestamp | None = None,
    storage_options: Mapping[str, str] | None = None,
    **output: Unpack[OutputKwargs],
) -> pd.DataFrame:
    """Read a snapshot root back as a sessions frame.

    Parameters
    ----------
    root : str or Path
        The snapshot root given to :func:`write_snapshot` or :func:`sync_snapshots` (a folder
        or a URI).
    latest : bool
        ``True``: the latest state, one row per session (``root/latest/``). ``False``: every
        version in history (``root/versions/``), with its ``snapshot_id``.
    conversations : str, uuid.UUID, an iterable of them, a Series or DataFrame, optional
        Read only these conversations (pushed down to the scan). Each is a canonical UUID,
        either case, or a :class:`uuid.UUID`, as :func:`load_sessions` takes them.
    columns : iterable of str, optional
        Read only these columns.
    since : datetime or str, optional
        Only sessions updated at or after this instant (``updated_at >= since``; a naive
        value is taken as UTC). With ``latest`` it applies to each session's latest version.
    as_of : int, datetime or str, optional
        Time travel: the root as committed at that version of ``latest/`` (an int, as
        ``df.attrs["mihu_frames"]["version"]`` and the command line name it) or at that instant
        (a naive value is UTC). With ``latest=False``: the history as it was at that instant.
    storage_options : mapping, optional
        For a URI, as :func:`write_snapshot` takes them.
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
        ``root`` is not a snapshot root (missing, empty, a file, a root's ``latest/`` table,
        any other folder): never an empty frame for a wrong path.
    ValueError
        An unknown column, a conversation that is not a UUID, a ``since`` or ``as_of`` that
        is not a date (or names no version).

    Examples
    --------
    >>> df = mf.read_snapshots("data/snapshots")                     # doctest: +SKIP
    >>> week = mf.read_snapshots("data/snapshots", since="2026-11-01",
    ...                          columns=["uuid", "duration"])       # doctest: +SKIP
    >>> then = mf.read_snapshots("data/snapshots", as_of="2026-11-01")  # doctest: +SKIP
    """
    wanted = list(columns) if columns is not None else None
    if wanted is not None:
        known = [*COLUMNS, SNAPSHOT_ID]
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; columns are {known}")
    (chosen,) = split_options(output, OutputOptions)
    to = OutputOptions(**chosen).to
    ids = None if conversations is None else list(conversation_ids(conversations))
    bound = instant("since", since)
    when = _as_of(as_of, latest)
    order = [ORDER, "uuid"] if latest else [SNAPSHOT_ID, ORDER]
    read = None
    if wanted is not None:
        read = [c for c in FILE_SCHEMA.names if c in wanted or c in order]
    store = open_root(root, storage_options=storage_options)
    if latest:
        table = store.read_latest(read, conversations=ids, since=bound, as_of=when)
    else:
        where = None if ids is None else pc.field("conversation_uuid").isin(ids)
        if bound is not None:
            recent = pc.field("updated_at") >= pa.scalar(
                bound, FILE_SCHEMA.field("updated_at").type
            )
            where = recent if where is None else where & recent
        table = store.read_history(read, where, as_of=when if not isinstance(when, int) else None)
    return frame_of(table, latest=latest, columns=wanted, to=to)


def _as_of(value: Any, latest: bool) -> int | datetime | None:
    if value is None:
        return None
    if isinstance(value, (int,)) and not isinstance(value, bool):
        if not latest:
            raise ValueError("as_of for history (latest=False) is an instant, not a version")
        if value < 0:
            raise ValueError(f"as_of must be a version (0 or more) or an instant, got {value}")
        return value
    return instant("as_of", value)


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


def snapshot_metadata(
    path: str | os.PathLike[str], *, storage_options: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The record of one write: what :func:`write_snapshot` returned (a commit of the latest
    state, or of history for a write that changed only history), or a root (the newest commit
    of its latest state). Includes ``version``, ``operation`` and ``table`` (``latest`` or
    ``versions``).

    Examples
    --------
    >>> mf.snapshot_metadata(mf.write_snapshot(df, "data/snapshots"))["rows_new"]  # doctest: +SKIP
    250
    """
    text = os.fspath(path)
    if text.endswith(".json") and "_delta_log" in text and "://" not in text:
        for line in Path(text).read_text(encoding="utf-8").splitlines():
            info = json.loads(line).get("commitInfo")
            if info is not None:
                record = dict(info.get("mihu_frames") or {})
                table = Path(text).parent.parent.name
                record.update(version=int(Path(text).stem), operation=info.get("operation"))
                record.update(table=table)
                return record
        raise ValueError(f"{path} holds no commit record")
    if text.endswith(".parquet"):  # a file of a root of an earlier layout
        from mihu_frames.legacy import file_metadata

        return file_metadata(text)
    name, version = "latest", None
    if text.endswith(".json") and "_delta_log" in text:  # a commit of a remote root
        folder, file = text.rsplit("/_delta_log/", 1)
        text, name = folder.rsplit("/", 1)
        version = int(file[: -len(".json")])
    store = open_root(text, storage_options=storage_options)
    version = store.table(name).version() if version is None else version
    info = store.commit_info(name, version)
    record = dict(info.get("mihu_frames") or {})
    record.update(version=version, operation=info.get("operation"), table=name)
    return record
