"""A snapshot root: two Delta Lake tables, written with ``deltalake`` (delta-rs).

Layout (version 3)
------------------
::

    root/                                   a folder, or a URI (s3://bucket/prefix, gs://, az://…)
    ├── latest/                             LATEST STATE: one row per session, merged by uuid
    │   ├── _delta_log/00000000000000000000.json …    the commits (each one atomic)
    │   └── created_month=2026-11/part-….parquet       (created_month=none: no created_at)
    └── versions/                           EVERY VERSION of every session, append-only
        ├── _delta_log/…
        └── fetched_month=2026-11/part-….parquet

Both tables hold the sessions frame plus ``snapshot_id`` (the write that stored the row) and
``insert_order`` (the order the session was first written in: reads return rows in it).
Durations (``duration``, ``time_to_evaluation``, ``time_to_summary``, ``idle_before_end``) are
``int64`` **microseconds** (Delta has no duration type; the table property
``mihu_frames.durations`` says so); :func:`mihu_frames.read_snapshots` restores
``timedelta64[us]``. The table properties of ``latest/`` also hold ``mihu_frames.layout`` (3)
and ``mihu_frames.recorded`` (the status/type filters the root was fetched under, JSON).

*Why ``created_month``:* a session's ``created_at`` does not change, so a session stays in one
partition for good (if it ever changes, the session keeps the partition it is held in); updates
land on recent sessions, so a daily write copies the files of the last month or two, not the
table; a time filter skips whole months. ``versions/`` is partitioned by the month of
``fetched_at``: appends land in the current month, compaction merges a month's small files.

How a write lands
-----------------
1. **Compare.** The rows are compared with the latest state (:mod:`mihu_frames.versions`): new,
   changed (tags carried, the held conversation kept), stale (an older fetch) or unchanged.
2. **Write the files**, of both tables at once, with pyarrow (:mod:`.files`): the new, changed
   and stale versions for ``versions/``; for ``latest/``, a copy of each file holding a changed
   session with its new version (copy on write: files holding no changed session are left
   alone), and the new sessions, one file per month. Nothing is visible yet.
3. **History first.** The ``versions/`` files are committed (an append), the commit metadata
   naming the write's ``snapshot_id``.
4. **Then the latest state**, in one commit (``DeltaTable.create_write_transaction``): the
   copies added, the files they replace removed, the new files added. The commit carries a
   Delta *transaction identifier* (``txn``, app id ``mihu_frames``) whose version is the
   ``versions/`` version it reflects. Every such commit conflicts with every other one
   committed since it read the table, so writers are serialized optimistically: the loser
   removes its files, reads the new state and tries again (bounded, :data:`ATTEMPTS`), and a
   session is never inserted twice. A new root's ``latest/`` is created by its first write,
   holding that write's rows (a killed first write leaves no empty state to read).

A process killed after step 3 leaves versions the latest state lacks: the next write (or
compaction) finds every ``versions/`` commit after the latest state's ``txn`` version and merges
its rows first (merging a version twice is a no-op); files written but never committed are
removed by compaction once a day old. Readers of ``latest/`` (this library, Polars
``scan_delta``, DuckDB ``delta_scan``, Spark…) only ever see committed versions of it, each the
state before or after a write. Time travel: ``read_snapshots(root, as_of=…)``.

Roots of the earlier layouts (:mod:`mihu_frames.legacy`) are read as they are and converted by
their first write or compaction: ``versions/`` is created from every version they hold, then
``latest/`` from their latest state, then their files are removed.

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
