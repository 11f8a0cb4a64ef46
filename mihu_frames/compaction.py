"""Compaction: rewrite a root's history into fewer files, keeping every distinct version.

Every write adds one file to ``root/history/fetched_date=YYYY-MM-DD/``; hourly syncs make many
small files. :func:`compact_snapshots` rewrites each ``fetched_date=`` folder that holds more than
one file (or rows to drop) as one file. What it keeps and drops:

- **Every distinct version is kept.** A version is a session's content (every column but
  ``fetched_at`` and ``snapshot_id``); versions are ordered as in :mod:`mihu_frames.versions`.
- **Identical re-fetches are collapsed** into the first fetch: a version identical to the one
  before it of the same session (written twice by roots of earlier releases, which wrote
  whatever they were given) is dropped, the first kept. Candidates are found by a 64-bit hash
  of each row's content and confirmed column by column before anything is dropped.
- **Tags are carried** as they are in the latest state: a version without ``status``/``type``
  (roots of earlier releases synced without filters) gets the tag of the version before it.
- **Nothing else is dropped** unless asked: ``prune_before=`` drops the versions superseded
  before that instant (the next version of the session was fetched before it). A session's
  latest version is never dropped, so the latest state can always be rebuilt from history.
- The latest state (``root/sessions/``) is not touched, except that a root of an earlier
  release is converted first (see :mod:`mihu_frames.root`).

Concurrency: compaction holds the root's writers' lock, so no write interleaves. Each new file is
written whole under a temporary name and renamed into place before the files it replaces are
removed; it records their names (``compacted_from``) in its metadata, and
:func:`mihu_frames.read_snapshots` skips them while both exist. Another engine reading
``history/`` at that moment may see those versions twice; readers of ``sessions/`` are not
affected. A crash leaves the old files and perhaps the new one: still no version lost, and the
next compaction finishes the work.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.atomic import fsync_dir, stage_parquet
from mihu_frames.root import (
    FILE_SCHEMA,
    STAGING,
    _read_file,
    file_metadata,
    history_record,
    new_snapshot_id,
    open_root,
    with_record,
)
from mihu_frames.versions import (
    CONTENT,
    SNAPSHOT_ID,
    TAGS,
    content_hashes,
    fill_tags,
    same_content,
    version_order,
)

__all__ = ["CompactionReport", "compact_snapshots"]

logger = logging.getLogger("mihu_frames")

_KEYS = ("uuid", "fetched_at", "updated_at", SNAPSHOT_ID, *TAGS)
_SORT = [
    (SNAPSHOT_ID, "ascending"),
    ("conversation_uuid", "ascending"),
    ("created_at", "ascending"),
    ("uuid", "ascending"),
]


@dataclass(frozen=True)
class CompactionReport:
    """What :func:`compact_snapshots` kept and dropped.

    Iterating it yields ``files_written`` and ``len()`` counts them, like the list of files the
    function returned in earlier releases.

    Attributes
    ----------
    root : Path
        The snapshot root.
    files_before, files_after : int
        History files before and after.
    rows_before, rows_after : int
        History rows (versions) before and after.
    bytes_before, bytes_after : int
        Size of the history files before and after.
    versions_collapsed : int
        Identical re-fetches dropped (their first fetch is kept).
    versions_pruned : int
        Versions dropped because ``prune_before`` asked for it.
    sessions_pruned : int
        Sessions that lost at least one version to ``prune_before``.
    tags_filled : int
        Versions that got the ``status``/``type`` of the version before them.
    prune_before : datetime or None
        The instant asked for (UTC).
    files_written : tuple of Path
        The new history files.
    files_removed : tuple of Path
        The history files they replace (removed).
    converted : bool
        The root was in the layout of an earlier release and was converted first.
    sessions : int
        Sessions in the latest state (unchanged by compaction).
    """

    root: Path
    files_before: int = 0
    files_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    versions_collapsed: int = 0
    versions_pruned: int = 0
    sessions_pruned: int = 0
    tags_filled: int = 0
    prune_before: datetime | None = None
    files_written: tuple[Path, ...] = ()
    files_removed: tuple[Path, ...] = ()
    converted: bool = False
    sessions: int = 0

    def __iter__(self) -> Iterator[Path]:
        return iter(self.files_written)

    def __len__(self) -> int:
        return len(self.files_written)

    def summary(self) -> str:
        """One line for people.

        Examples
        --------
        >>> mf.compact_snapshots("data/snapshots").summary()          # doctest: +SKIP
        'compacted 12 history files into 2 (31,002 -> 30,950 versions: 52 identical
        re-fetches collapsed, 0 pruned; 4.1 MB -> 3.6 MB); 30,000 sessions held'
        """
        text = (
            f"compacted {self.files_before:,} history files into {self.files_after:,} "
            f"({self.rows_before:,} -> {self.rows_after:,} versions: "
            f"{self.versions_collapsed:,} identical re-fetches collapsed, "
            f"{self.versions_pruned:,} pruned; "
            f"{self.bytes_before / 1e6:.1f} MB -> {self.bytes_after / 1e6:.1f} MB); "
            f"{self.sessions:,} sessions held"
        )
        return text + (" (converted from the earlier layout)" if self.converted else "")


def compact_snapshots(
    root: str | os.PathLike[str],
    *,
    prune_before: date | datetime | str | pd.Timestamp | None = None,
) -> CompactionReport:
    """Rewrite a root's history into one file per ``fetched_date=`` folder, keeping every version.

    Identical re-fetches are collapsed into their first fetch; nothing else is dropped unless
    ``prune_before`` is given. The latest state is not touched. A root of an earlier release is
    converted first. Temporary files that killed writers left are removed first, and a write a
    killed process left half done is completed, as by :func:`write_snapshot`. See the module
    documentation for the rules and for concurrent readers.

    Parameters
    ----------
    root : str or Path
        The snapshot root.
    prune_before : date, datetime or str, optional
        Drop the versions superseded before this instant: those whose session has a later
        version fetched before it (a naive value, or a date, is UTC). A session's latest
        version is always kept. Default: drop nothing.

    Returns
    -------
    CompactionReport
        Files, rows and bytes before and after, versions collapsed and pruned.

    Raises
    ------
    NotASnapshotRootError
        ``root`` is not a snapshot root (missing, empty, a file, another folder).

    Examples
    --------
    >>> import mihu_frames as mf
    >>> report = mf.compact_snapshots("data/snapshots")               # doctest: +SKIP
    >>> report.files_before, report.files_after, report.versions_pruned  # doctest: +SKIP
    (48, 2, 0)
    >>> mf.compact_snapshots("data/snapshots", prune_before="2026-01-01").versions_pruned
    ...                                                              # doctest: +SKIP
    1204
    """
    cutoff = _instant(prune_before)
    store = open_root(root)
    if store.state == "new":  # pragma: no cover - open_root refuses an empty folder
        raise AssertionError(store)
    with store.locked():
        converted = store.prepare()
        files = store.history_files()
        report = _compact(store.path, files, cutoff)
        sessions = len(store.read_latest(["uuid"]))
    report = replace(report, converted=converted, sessions=sessions)
    logger.info("%s: %s", store.path, report.summary())
    return report


def _instant(value: date | datetime | str | pd.Timestamp | None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    try:
        stamp = pd.Timestamp(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"prune_before must be a date or datetime, got {value!r}") from error
    if pd.isna(stamp):
        raise ValueError(f"prune_before must be a date or datetime, got {value!r}")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def _compact(root: Path, files: list[Path], cutoff: datetime | None) -> CompactionReport:
    """Decide which versions go (over the whole history), then rewrite the folders affected."""
    bytes_before = sum(p.stat().st_size for p in files)
    keys, rest_hashes = _keys(files)
    n = keys.num_rows
    order, starts = version_order(keys)
    ordered = fill_tags(keys.take(pa.array(order)), starts)
    filled = np.zeros(n, dtype=bool)
    for name in TAGS:
        was_null = pc.is_null(keys.column(name).take(pa.array(order)))
        now_set = pc.is_valid(ordered.column(name))
        filled |= np.asarray(pc.and_(was_null, now_set).to_numpy(zero_copy_only=False))
    hashes = rest_hashes[order] ^ content_hashes(ordered, TAGS)
    # Identical to the version before it (same session): candidates, confirmed below.
    candidate = np.r_[False, (hashes[1:] == hashes[:-1]) & ~starts[1:]] if n else np.zeros(0, bool)
    collapsed = _confirm(files, keys, order, candidate, ordered)
    drop = np.zeros(n, dtype=bool)
    drop[collapsed] = True
    pruned = np.zeros(n, dtype=bool)
    if cutoff is not None and n:
        pruned = _superseded_before(ordered, starts, drop, cutoff)
        drop |= pruned
    # back to file order: (file, row) of every version, dropped or tag-filled
    file_of = keys.column("_file").to_numpy()[order]
    row_of = keys.column("_row").to_numpy()[order]
    by_file: dict[int, dict[str, Any]] = defaultdict(lambda: {"drop": [], "tags": {}})
    for i in np.flatnonzero(drop):
        by_file[int(file_of[i])]["drop"].append(int(row_of[i]))
    for i in np.flatnonzero(filled & ~drop):
        tags = {name: ordered.column(name)[i].as_py() for name in TAGS}
        by_file[int(file_of[i])]["tags"][int(row_of[i])] = tags
    folders: dict[Path, list[int]] = defaultdict(list)
    for index, path in enumerate(files):
        folders[path.parent].append(index)
    written: list[Path] = []
    removed: list[Path] = []
    for folder, indices in sorted(folders.items()):
        if len(indices) == 1 and indices[0] not in by_file:
            continue
        rewritten = _rewrite(
            root, folder, [files[i] for i in indices], [by_file.get(i) for i in indices]
        )
        if rewritten is not None:
            written.append(rewritten)
        removed += [files[i] for i in indices if files[i] != rewritten]
    remaining = sorted({*files, *written} - set(removed))
    pruned_rows = ordered.column("uuid").filter(pa.array(pruned))
    return CompactionReport(
        root=root,
        files_before=len(files),
        files_after=len(remaining),
        rows_before=n,
        rows_after=n - int(drop.sum()),
        bytes_before=bytes_before,
        bytes_after=sum(p.stat().st_size for p in remaining),
        versions_collapsed=int(collapsed.sum()),
        versions_pruned=int(pruned.sum()),
        sessions_pruned=len(pc.unique(pruned_rows)),
        tags_filled=int((filled & ~drop).sum()),
        prune_before=cutoff,
        files_written=tuple(written),
        files_removed=tuple(removed),
    )


def _keys(files: list[Path]) -> tuple[pa.Table, np.ndarray]:
    """One pass over the history: each version's keys and a hash of its content but the tags."""
    tables = []
    hashes = []
    others = tuple(c for c in CONTENT if c not in TAGS)
    for index, path in enumerate(files):
        table = _read_file(path)
        keys = table.select(list(_KEYS))
        keys = keys.append_column("_file", pa.array(np.full(table.num_rows, index, np.int32)))
        keys = keys.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        tables.append(keys)
        hashes.append(content_hashes(table, others))
    if not tables:
        empty = FILE_SCHEMA.empty_table().select(list(_KEYS))
        empty = empty.append_column("_file", pa.array([], pa.int32()))
        empty = empty.append_column("_row", pa.array([], pa.int64()))
        return empty, np.zeros(0, np.uint64)
    return pa.concat_tables(tables).combine_chunks(), np.concatenate(hashes)


def _confirm(
    files: list[Path], keys: pa.Table, order: np.ndarray, candidate: np.ndarray, ordered: pa.Table
) -> np.ndarray:
    """Of the versions whose hash equals the one before, those really identical to it."""
    confirmed = np.zeros(len(candidate), dtype=bool)
    positions = np.flatnonzero(candidate)
    if len(positions) == 0:
        return confirmed
    file_of = keys.column("_file").to_numpy()[order]
    row_of = keys.column("_row").to_numpy()[order]
    needed = np.unique(np.r_[positions, positions - 1])
    tables: dict[int, pa.Table] = {}
    pieces = []
    for i in needed:
        f = int(file_of[i])
        if f not in tables:
            tables[f] = _read_file(files[f])
        pieces.append(tables[f].slice(int(row_of[i]), 1))
    rows = pa.concat_tables(pieces)
    for name in TAGS:  # compare with the tags carried, as the latest state holds them
        index = rows.schema.get_field_index(name)
        rows = rows.set_column(index, rows.schema.field(index), ordered.column(name).take(needed))
    at = {int(i): k for k, i in enumerate(needed)}
    this = rows.take(pa.array([at[int(i)] for i in positions]))
    previous = rows.take(pa.array([at[int(i) - 1] for i in positions]))
    confirmed[positions] = same_content(this, previous)
    return confirmed


def _superseded_before(
    ordered: pa.Table, starts: np.ndarray, drop: np.ndarray, cutoff: datetime
) -> np.ndarray:
    """Kept versions whose next kept version of the same session was fetched before ``cutoff``."""
    n = ordered.num_rows
    fetched = ordered.column("fetched_at").cast(pa.int64())
    fetched_us = pc.fill_null(fetched, np.iinfo(np.int64).max).to_numpy()
    bound = int(pd.Timestamp(cutoff).value // 1000)
    group = np.cumsum(starts)
    kept = np.flatnonzero(~drop)
    pruned = np.zeros(n, dtype=bool)
    if len(kept) < 2:
        return pruned
    current, following = kept[:-1], kept[1:]
    same_session = group[current] == group[following]
    superseded = same_session & (fetched_us[following] < bound)
    pruned[current[superseded]] = True
    return pruned


def _rewrite(
    root: Path, folder: Path, files: list[Path], changes: list[dict[str, Any] | None]
) -> Path | None:
    """Write the kept versions of ``files`` (one ``fetched_date=`` folder) as one new file,
    then remove them. Returns the new file (None when every version went)."""
    tables = []
    for path, change in zip(files, changes, strict=True):
        table = _read_file(path)
        if change is not None:
            table = _apply_tags(table, change["tags"])
            if change["drop"]:
                keep = np.ones(table.num_rows, dtype=bool)
                keep[change["drop"]] = False
                table = table.filter(pa.array(keep))
        tables.append(table)
    table = pa.concat_tables(tables)
    sources = [file_metadata(p) for p in files]
    new_path = None
    if table.num_rows:
        table = table.take(pc.sort_indices(table, _SORT))
        snapshot_id = new_snapshot_id()
        record = history_record(table, snapshot_id)
        record.update(
            base_url=_common(s.get("base_url") for s in sources),
            filters=_common(s.get("filters") for s in sources),
            pii=_common((s.get("pii") or "kept" for s in sources), mixed="mixed"),
            compacted_from=[p.stem for p in files],
            rows_before=sum(s.get("rows") or 0 for s in sources),
        )
        table = with_record(table, record)
        new_path = stage_parquet(table, root / STAGING, f"{snapshot_id}.parquet").publish(
            folder / f"{snapshot_id}.parquet"
        )
    for path in files:
        path.unlink(missing_ok=True)
    fsync_dir(folder)
    logger.info(
        "compacted %d history files of %s into %s (%d versions)",
        len(files),
        folder.name,
        new_path.name if new_path else "none",
        table.num_rows,
    )
    return new_path


def _apply_tags(table: pa.Table, tags: dict[int, dict[str, Any]]) -> pa.Table:
    if not tags:
        return table
    rows = np.array(sorted(tags), dtype=np.int64)
    for name in TAGS:
        values = table.column(name).to_pylist()
        for row in rows:
            values[row] = tags[int(row)][name]
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), pa.array(values, pa.string()))
    return table


def _common(values: Any, mixed: str | None = None) -> Any:
    """The one value all sources agree on, else ``mixed``."""
    distinct = {json.dumps(v, sort_keys=True, default=str) for v in values}
    return json.loads(distinct.pop()) if len(distinct) == 1 else mixed
