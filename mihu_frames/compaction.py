"""Compaction: fewer, larger files in both tables of a root, every distinct version kept.

Every write that changes sessions adds a file or two to ``versions/`` (the versions it
replaced) and rewrites a few in ``latest/``; hourly syncs make many small files.
:func:`compact_snapshots`:

- runs Delta's ``optimize.compact()`` on both tables: the small files of each partition are
  rewritten as one, in a commit that changes no row (readers, and time travel to earlier
  versions, are unaffected: the files replaced stay until ``prune_before`` vacuums them);
- **collapses identical re-fetches** into the first fetch: a version identical to the one
  before it of the same session (roots of earlier releases wrote them) is dropped, and of two
  copies of one version in ``versions/`` one; the latest state's versions are read beside
  ``versions/`` and never dropped, nor is a copy of one in ``versions/`` (a writer replacing
  that version relies on it);
- **carries tags**: a version without ``status``/``type`` gets the tag of the version before it,
  as the latest state holds it;
- drops nothing else unless asked: ``prune_before=`` drops the versions superseded before that
  instant (the next version of the session was fetched before it; a session's latest version
  is always kept), then vacuums the files no version after the cutoff needs: ``read_snapshots
  (as_of=…)`` before the cutoff is no longer possible, and the report says so.

The versions dropped or re-tagged are rewritten month by month (``fetched_month``) with one
Delta overwrite of those partitions each: a reader sees the history before or after. A write
that commits meanwhile makes the step conflict; it is tried again on the new state.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from mihu_frames.errors import SnapshotStoreError
from mihu_frames.options import instant
from mihu_frames.store import (
    ATTEMPTS,
    FILE_SCHEMA,
    HISTORY,
    HISTORY_PARTITION,
    LATEST,
    SnapshotRoot,
    _files,
    _pause,
    _to_delta,
    open_root,
)
from mihu_frames.store.layout import _versions
from mihu_frames.store.reading import repeated, same_versions
from mihu_frames.versions import (
    CONTENT,
    TAGS,
    content_hashes,
    fill_tags,
    same_content,
    version_order,
)

__all__ = ["CompactionReport", "compact_snapshots"]

logger = logging.getLogger("mihu_frames")

#: Data files no commit references (a killed writer's) are removed once this many hours old:
#: a live writer's files are younger.
ORPHAN_HOURS = 24


@dataclass(frozen=True)
class CompactionReport:
    """What :func:`compact_snapshots` kept, dropped and rewrote.

    Attributes
    ----------
    root : str
        The snapshot root.
    files_before, files_after : int
        Data files of ``versions/`` before and after.
    rows_before, rows_after : int
        Versions before and after.
    bytes_before, bytes_after : int
        Size of ``versions/``'s data files before and after.
    latest_files_before, latest_files_after : int
        Data files of ``latest/`` before and after.
    versions_collapsed : int
        Identical re-fetches dropped (their first fetch is kept).
    versions_pruned : int
        Versions dropped because ``prune_before`` asked for it.
    sessions_pruned : int
        Sessions that lost at least one version to ``prune_before``.
    tags_filled : int
        Versions that got the ``status``/``type`` of the version before them.
    prune_before : datetime or None
        The instant asked for (UTC): time travel reaches no earlier once pruned.
    files_vacuumed : tuple of str
        Files deleted for good: data files no version references, a day old (a killed
        writer's), and with ``prune_before`` the files of the versions pruned.
    converted : bool
        The root was in the layout of an earlier release and was converted first.
    sessions : int
        Sessions in the latest state (unchanged by compaction).
    version : int
        The version of ``latest/`` after compaction.
    """

    root: str
    files_before: int = 0
    files_after: int = 0
    rows_before: int = 0
    rows_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    latest_files_before: int = 0
    latest_files_after: int = 0
    versions_collapsed: int = 0
    versions_pruned: int = 0
    sessions_pruned: int = 0
    tags_filled: int = 0
    prune_before: datetime | None = None
    files_vacuumed: tuple[str, ...] = ()
    converted: bool = False
    sessions: int = 0
    version: int = 0

    def summary(self) -> str:
        """One line for people.

        Examples
        --------
        >>> mf.compact_snapshots("data/snapshots").summary()          # doctest: +SKIP
        'compacted 12 history files into 2 (31,002 -> 30,950 versions: 52 identical
        re-fetches collapsed, 0 pruned; 4.1 MB -> 3.6 MB); latest state: 9 files into 3,
        version 14; 30,000 sessions held'
        """
        text = (
            f"compacted {self.files_before:,} history files into {self.files_after:,} "
            f"({self.rows_before:,} -> {self.rows_after:,} versions: "
            f"{self.versions_collapsed:,} identical re-fetches collapsed, "
            f"{self.versions_pruned:,} pruned; "
            f"{self.bytes_before / 1e6:.1f} MB -> {self.bytes_after / 1e6:.1f} MB); "
            f"latest state: {self.latest_files_before:,} files into "
            f"{self.latest_files_after:,}, version {self.version}; {self.sessions:,} sessions held"
        )
        if self.prune_before is not None:
            text += (
                f"; {len(self.files_vacuumed):,} files vacuumed: as_of reaches back to "
                f"{self.prune_before.isoformat()} no further"
            )
        return text + (" (converted from an earlier layout)" if self.converted else "")


def compact_snapshots(
    root: str | os.PathLike[str],
    *,
    prune_before: date | datetime | str | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> CompactionReport:
    """Compact both tables of a root into fewer files, keeping every distinct version.

    Identical re-fetches are collapsed into their first fetch; nothing else is dropped unless
    ``prune_before`` is given. A root of an earlier release is converted first; of two copies
    of a version in ``versions/`` (writers killed or beaten) one is kept. See the module
    documentation.

    Parameters
    ----------
    root : str or Path
        The snapshot root (a folder or a URI).
    prune_before : date, datetime or str, optional
        Drop the versions superseded before this instant: those whose session has a later
        version fetched before it (a naive value, or a date, is UTC), and vacuum the files no
        later state needs. A session's latest version is always kept. Default: drop nothing.
    storage_options : mapping, optional
        For a URI, as :func:`write_snapshot` takes them.

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
    """
    cutoff = None if prune_before is None else _cutoff(prune_before)
    store = open_root(root, storage_options=storage_options)
    converted = store.prepare()
    try:
        before = _files(store.table(HISTORY))
        latest_before = len(_files(store.table(LATEST)))
        counts = _rewrite_history(store, cutoff)
        for name in (HISTORY, LATEST):
            _optimize(store, name)
        vacuumed = _vacuum(store, cutoff)
    except (DeltaError, OSError) as error:  # a full disk, the storage refusing
        raise store.tables.error(error) from None
    after = _files(store.table(HISTORY))
    latest = store.table(LATEST)
    store._private()
    report = CompactionReport(
        root=store.uri,
        files_before=len(before),
        files_after=len(after),
        rows_before=counts["rows_before"],
        rows_after=counts["rows_after"],
        bytes_before=sum(before.values()),
        bytes_after=sum(after.values()),
        latest_files_before=latest_before,
        latest_files_after=len(_files(latest)),
        versions_collapsed=counts["collapsed"],
        versions_pruned=counts["pruned"],
        sessions_pruned=counts["sessions_pruned"],
        tags_filled=counts["tags_filled"],
        prune_before=cutoff,
        files_vacuumed=tuple(vacuumed),
        converted=converted,
        sessions=latest.count(),
        version=latest.version(),
    )
    logger.info("%s: %s", store.uri, report.summary())
    return report


def _vacuum(store: SnapshotRoot, cutoff: datetime | None) -> list[str]:
    """Delete the files no version references (a killed writer's) once a day old, and with
    ``cutoff`` those only time travel before it needed. Returns them."""
    vacuumed: list[str] = []
    for name in (HISTORY, LATEST):
        table = store.table(name)
        vacuumed += table.vacuum(
            ORPHAN_HOURS,
            dry_run=False,
            enforce_retention_duration=False,
            full=True,
            keep_versions=list(range(table.version() + 1)),
        )
    if cutoff is not None:
        hours = max(0, int((datetime.now(timezone.utc) - cutoff).total_seconds() // 3600))
        vacuumed += store.table(HISTORY).vacuum(0, dry_run=False, enforce_retention_duration=False)
        vacuumed += store.table(LATEST).vacuum(
            hours, dry_run=False, enforce_retention_duration=False
        )
    return vacuumed


def _cutoff(value: date | datetime | str) -> datetime:
    cutoff = instant("prune_before", value)
    if cutoff is None:
        raise ValueError("prune_before must be a date or datetime, got None")
    return cutoff


def _optimize(store: SnapshotRoot, name: str) -> None:
    for attempt in range(ATTEMPTS):
        try:
            settings = store.recorded
            record = {
                **_versions(),
                "compaction": True,
                "recorded": settings and settings.to_json(),
            }
            store.table(name).optimize.compact(
                commit_properties=CommitProperties(custom_metadata={"mihu_frames": record})
            )
            return
        except CommitFailedError:
            _pause(attempt)
    raise SnapshotStoreError(f"{store.uri}: compaction of {name}/ stayed in conflict")


def _rewrite_history(store: SnapshotRoot, cutoff: datetime | None) -> dict[str, int]:
    """Drop identical re-fetches (and, with ``cutoff``, superseded versions), fill tags: the
    months of ``versions/`` affected rewritten in one overwrite. The latest state is read
    beside it (its versions come last, and are never dropped) and left as it is. Retried
    when a write commits meanwhile."""
    for attempt in range(ATTEMPTS):
        table = store.table(HISTORY)
        history = store._read(HISTORY).cast(FILE_SCHEMA)
        current = FILE_SCHEMA.empty_table()
        if history.num_rows:
            uuids = pc.unique(history.column("uuid"))
            current = store._read(LATEST, pc.field("uuid").isin(uuids)).cast(FILE_SCHEMA)
        # A version copied twice to versions/ (a writer killed or beaten, then another) keeps
        # one copy. A copy of a version latest/ holds stands for it and is never dropped: a
        # writer may be about to replace that version, its copy being the one it relies on.
        twice = repeated(history)
        removed = _to_delta(history.filter(pa.array(twice)), HISTORY_PARTITION)
        history = history.filter(pa.array(~twice))
        copy = same_versions(history, current)
        rest = store.table(LATEST).count() - current.num_rows  # versions the step did not read
        current = current.filter(pa.array(~same_versions(current, history.filter(pa.array(copy)))))
        both = pa.concat_tables([history, current])
        is_current = np.r_[np.zeros(history.num_rows, bool), np.ones(current.num_rows, bool)]
        fixed = is_current | np.r_[copy, np.zeros(current.num_rows, bool)]
        drop, filled, ordered, order, counts = _decide(both, cutoff, fixed, ~is_current)
        counts["rows_before"] += rest
        counts["rows_after"] += rest
        if not (drop.any() or filled.any() or twice.any()):
            return counts
        fixed_rows = both.take(pa.array(order))
        for name in TAGS:
            index = fixed_rows.schema.get_field_index(name)
            fixed_rows = fixed_rows.set_column(index, name, ordered.column(name))
        mine = ~is_current[order]
        months = _to_delta(fixed_rows, HISTORY_PARTITION).column(HISTORY_PARTITION)
        months_hit = months.filter(pa.array((drop | filled) & mine)).to_pylist()
        touched = sorted({str(m) for m in months_hit + removed[HISTORY_PARTITION].to_pylist()})
        keep = pc.and_(pa.array(~drop & mine), pc.is_in(months, value_set=pa.array(touched)))
        data = _to_delta(fixed_rows.filter(keep), HISTORY_PARTITION)
        listed = ", ".join(f"'{m}'" for m in touched)
        try:
            write_deltalake(
                table,
                data,
                mode="overwrite",
                predicate=f"{HISTORY_PARTITION} IN ({listed})",
                partition_by=[HISTORY_PARTITION],
                commit_properties=CommitProperties(
                    custom_metadata={"mihu_frames": {**_versions(), "compaction": counts}}
                ),
            )
            return counts
        except CommitFailedError:
            _pause(attempt)
    raise SnapshotStoreError(f"{store.uri}: the history rewrite stayed in conflict")


def _decide(
    history: pa.Table, cutoff: datetime | None, fixed: np.ndarray, rewritten: np.ndarray
) -> tuple[np.ndarray, np.ndarray, pa.Table, np.ndarray, dict[str, int]]:
    """Over every version, in version order: which go (identical to the one before, or
    superseded before ``cutoff``; never those ``fixed``: the latest state's) and which of
    those ``rewritten`` (``versions/``'s) get a tag carried."""
    n = history.num_rows
    order, starts = version_order(history)
    current = fixed[order]
    ordered = fill_tags(history.take(pa.array(order)), starts)
    filled = np.zeros(n, dtype=bool)
    for name in TAGS:
        was_null = pc.is_null(history.column(name).take(pa.array(order)))
        filled |= np.asarray(
            pc.and_(was_null, pc.is_valid(ordered.column(name))).to_numpy(zero_copy_only=False)
        )
    hashes = content_hashes(ordered, CONTENT)
    candidate = np.r_[False, (hashes[1:] == hashes[:-1]) & ~starts[1:]] if n else np.zeros(0, bool)
    same = np.zeros(n, dtype=bool)  # identical to the version before it
    at = np.flatnonzero(candidate)
    if len(at):
        this = ordered.take(pa.array(at, pa.int64()))
        previous = ordered.take(pa.array(at - 1, pa.int64()))
        same[at] = same_content(this, previous)
    # a run of identical versions keeps its first, or the latest state's where it holds one
    run = np.cumsum(~same) - 1
    held_run = np.zeros(int(run[-1]) + 1 if n else 0, dtype=bool)
    held_run[run[current]] = True
    collapsed = np.where(held_run[run], ~current, same) if n else same
    pruned = np.zeros(n, dtype=bool)
    if cutoff is not None and n:
        null_last = pa.scalar(np.iinfo(np.int64).max, pa.int64())
        fetched = np.asarray(pc.fill_null(ordered.column("fetched_at").cast(pa.int64()), null_last))
        bound = int(cutoff.timestamp() * 1_000_000)
        kept = np.flatnonzero(~collapsed)
        group = np.cumsum(starts)
        earlier, following = kept[:-1], kept[1:]
        superseded = (group[earlier] == group[following]) & (fetched[following] < bound)
        pruned[earlier[superseded]] = True
        pruned &= ~current
    drop = collapsed | pruned
    filled &= rewritten[order]
    counts: dict[str, Any] = {
        "rows_before": n,
        "rows_after": n - int(drop.sum()),
        "collapsed": int(collapsed.sum()),
        "pruned": int(pruned.sum()),
        "sessions_pruned": len(pc.unique(ordered.column("uuid").filter(pa.array(pruned)))),
        "tags_filled": int((filled & ~drop).sum()),
    }
    return drop, filled & ~drop, ordered, order, counts
