"""A snapshot root: two Delta Lake tables, written with ``deltalake`` (delta-rs).

Layout (version 4)
------------------
::

    root/                                   a folder, or a URI (s3://bucket/prefix, gs://, az://…)
    ├── latest/                             LATEST STATE: one row per session, merged by uuid
    │   ├── _delta_log/00000000000000000000.json …    the commits (each one atomic)
    │   └── created_month=2026-11/part-….parquet       (created_month=none: no created_at)
    └── versions/                           THE VERSIONS latest/ REPLACED, append-only
        ├── _delta_log/…
        └── fetched_month=2026-11/part-….parquet

Both tables hold the sessions frame plus ``snapshot_id`` (the write that stored the row) and
``insert_order`` (the order the session was first written in: reads return rows in it). Every
version is in one of them, written once: the current one in ``latest/``, the ones it replaced
(and stale ones) in ``versions/``; the history is the two, each version once (a version is
``uuid``, ``snapshot_id`` and ``fetched_at``: a copy in both is read once).
Durations (``duration``, ``time_to_evaluation``, ``time_to_summary``, ``idle_before_end``) are
``int64`` **microseconds** (Delta has no duration type; each commit's record says so under
``durations``); :func:`mihu_frames.read_snapshots` restores ``timedelta64[us]``. The commit
records of ``latest/`` also hold the layout version and ``recorded`` (the status/type filters
the root was fetched under; delta-rs refuses table properties of its own).

*Why ``created_month``:* a session's ``created_at`` does not change, so a session stays in one
partition for good (if it ever changes, the session keeps the partition it is held in); updates
land on recent sessions, so a daily write copies the files of the last month or two, not the
table; a time filter skips whole months. ``versions/`` is partitioned by the month of
``fetched_at``: appends land in the current month, compaction merges a month's small files.

How a write lands
-----------------
1. **Compare.** The rows are compared with the latest state (:mod:`mihu_frames.versions`): new,
   changed (tags carried, the held conversation kept), stale (an older fetch) or unchanged.
2. **Write the files**, of both tables at once, with pyarrow (:mod:`.files`): for
   ``versions/``, the held versions the changed sessions replace and the stale versions; for
   ``latest/``, the rows of the files holding a changed session with their new versions and
   the new sessions, one file per month (copy on write: files holding no changed session are
   left alone). Nothing is visible yet.
3. **Replaced versions first.** The ``versions/`` files are committed (a blind append), the
   commit metadata naming the write's ``snapshot_id``. New sessions alone skip it.
4. **Then the latest state**, in one commit (``DeltaTable.create_write_transaction``): the
   copies added, the files they replace removed, the new files added. The commit carries a
   Delta *transaction identifier* (``txn``, app id ``mihu_frames``): every such commit
   conflicts with every other one committed since it read the table, so writers are serialized
   optimistically: the loser removes its files, compares with the new state and tries again
   from step 1 (bounded, :data:`ATTEMPTS`), and a session is never inserted twice. A new root's
   ``latest/`` is created by its first write, holding that write's rows (a killed first write
   leaves no empty state to read).

A process killed before step 4 leaves the state before: at most copies in ``versions/`` of
versions the latest state still holds (read once; compaction keeps one) and files no commit
references (removed by compaction once a day old). Readers of ``latest/`` (this library, Polars
``scan_delta``, DuckDB ``delta_scan``, Spark…) only ever see committed versions of it, each the
state before or after a write. Time travel: ``read_snapshots(root, as_of=…)``; the history as
of an instant is both tables as of it (a version leaves ``latest/`` only once in ``versions/``).

Roots of the earlier layouts (:mod:`mihu_frames.legacy`) are read as they are and converted by
their first write or compaction: ``versions/`` is created from every version they hold, then
``latest/`` from their latest state, then their files are removed. Such roots, and roots of
layout 3 (whose ``versions/`` held every version), record the newest version ``versions/``
held (:data:`COMPLETE_BEFORE`): those are not copied there again when they are replaced.

Where it lives
--------------
:mod:`.layout` (the names, schemas and shared helpers), :mod:`.recorded` (the recorded
settings), :mod:`.opening` (what a path holds), :mod:`.files` (data files written by pyarrow
and the Delta actions committing them), :mod:`.tables` (the two tables and their metadata),
:mod:`.reading` (latest state, history, time travel), :mod:`.merging` (comparing a write with
the latest state), :mod:`.writing` (the write path, :class:`CommitReport`) and :mod:`.root`
(:func:`open_root`, :class:`SnapshotRoot`, which puts them together).
"""

from __future__ import annotations

from mihu_frames.store.layout import (
    APP_ID,
    ATTEMPTS,
    COMPLETE_BEFORE,
    DURATIONS,
    FILE_SCHEMA,
    HISTORY,
    HISTORY_PARTITION,
    HISTORY_SCHEMA,
    LATEST,
    LATEST_SCHEMA,
    LAYOUT_VERSION,
    NO_MONTH,
    PARTITION,
    _files,
    _from_delta,
    _months,
    _pause,
    _scan,
    _to_delta,
    new_snapshot_id,
)
from mihu_frames.store.recorded import Recorded, recorded_from_rows
from mihu_frames.store.root import SnapshotRoot, open_root
from mihu_frames.store.writing import CommitReport

__all__ = [
    "APP_ID",
    "ATTEMPTS",
    "COMPLETE_BEFORE",
    "DURATIONS",
    "FILE_SCHEMA",
    "HISTORY",
    "HISTORY_PARTITION",
    "HISTORY_SCHEMA",
    "LATEST",
    "LATEST_SCHEMA",
    "LAYOUT_VERSION",
    "NO_MONTH",
    "PARTITION",
    "CommitReport",
    "Recorded",
    "SnapshotRoot",
    "_files",
    "_from_delta",
    "_months",
    "_pause",
    "_scan",
    "_to_delta",
    "new_snapshot_id",
    "open_root",
    "recorded_from_rows",
]
