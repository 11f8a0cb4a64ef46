"""Compaction: rewrite a snapshot history as one latest-state file per partition.

Daily syncs leave many small files; :func:`compact_snapshots` replaces the files of each
``fetched_date=`` partition by one file holding the latest state of every session in them.

Why readers never see a wrong answer
------------------------------------
:func:`read_snapshots` with ``latest=True`` keeps, for each ``uuid``, the newest row across *all*
files. The newest row of a session overall is also the newest within its own partition, so
keeping only each partition's newest rows changes nothing for it (rows tied on both
``updated_at`` and ``fetched_at`` are all kept, whatever rule a reader breaks ties by). The
compacted file is written first (atomically: a hidden temporary name, then a rename) and the
files it replaces are removed after; in between, every row of the new file is an exact copy of
a row still in the old files, so the latest state is the same before, during and after. A crash
in between leaves duplicates only; the next compaction removes them. A crash while the compacted
file is written leaves its hidden temporary file; like :func:`write_snapshot`, every compaction
first removes temporary files that killed writers left (never one a live writer still holds).

Rows keep their ``snapshot_id`` (the snapshot they were first written in). The compacted file
gets a new snapshot id as its name and records the ids it replaced (``compacted_from``) in its
metadata. History (``read_snapshots(latest=False)``) loses the superseded versions: that is the
point. Files written concurrently into a partition while it is compacted are left alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from mihu_frames._version import __version__
from mihu_frames.schema import SCHEMA_VERSION
from mihu_frames.snapshots import (
    _FILE_SCHEMA,
    _private_dirs,
    _remove_abandoned_temp_files,
    _write_atomically,
    new_snapshot_id,
    snapshot_files,
    snapshot_metadata,
)

__all__ = ["compact_snapshots"]

logger = logging.getLogger("mihu_frames")


def compact_snapshots(root: str | os.PathLike[str]) -> list[Path]:
    """Rewrite each partition's snapshot files as one file of the latest state, atomically.

    Partitions holding a single file are left as they are. Concurrent readers get the same
    latest state before, during and after (see the module documentation). Temporary files
    that killed writers left behind are removed first, as by :func:`write_snapshot`.

    Parameters
    ----------
    root : str or Path
        The snapshot root given to :func:`write_snapshot`.

    Returns
    -------
    list of pathlib.Path
        The compacted files written, one per partition that had more than one file.

    Raises
    ------
    FileNotFoundError
        ``root`` does not exist.

    Examples
    --------
    >>> import mihu_frames as mf
    >>> before = mf.read_snapshots("data/snapshots")                 # doctest: +SKIP
    >>> mf.compact_snapshots("data/snapshots")                       # doctest: +SKIP
    [PosixPath('data/snapshots/sessions/fetched_date=2026-11-01/20261125T...parquet')]
    >>> mf.read_snapshots("data/snapshots").equals(before)           # doctest: +SKIP
    True
    """
    base = Path(root)
    if not base.exists():
        raise FileNotFoundError(f"no snapshot root at {base}")
    _remove_abandoned_temp_files(base)
    partitions: dict[Path, list[Path]] = defaultdict(list)
    for path in snapshot_files(base):
        partitions[path.parent].append(path)
    written = []
    for folder, files in sorted(partitions.items()):
        if len(files) > 1:
            written.append(_compact_partition(folder, files))
    return written


def _compact_partition(folder: Path, files: list[Path]) -> Path:
    """Write the latest state of ``files`` as one new file in ``folder``, then remove them."""
    table = ds.dataset([str(f) for f in files], schema=_FILE_SCHEMA, format="parquet").to_table()
    rows_before = table.num_rows
    table = latest_rows(table)
    sources = [snapshot_metadata(f) for f in files]
    now = datetime.now(timezone.utc)
    snapshot_id = new_snapshot_id(now)
    newest = pc.max(table.column("fetched_at")).as_py() if table.num_rows else None
    record: dict[str, Any] = {
        "library_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "snapshot_id": snapshot_id,
        "fetched_at": (newest or now).isoformat(),
        "written_at": now.isoformat(),
        "base_url": _common(s.get("base_url") for s in sources),
        "rows": table.num_rows,
        "conversations": pc.count_distinct(table.column("conversation_uuid")).as_py(),
        "pii": _common((s.get("pii") or "kept" for s in sources), mixed="mixed"),
        "compacted_from": [f.stem for f in files],
        "rows_before": rows_before,
    }
    kv = {f"mihu_frames.{k}": json.dumps(v, default=str) for k, v in record.items()}
    table = table.replace_schema_metadata({**(_FILE_SCHEMA.metadata or {}), **kv})
    _private_dirs(folder)
    final = folder / f"{snapshot_id}.parquet"
    _write_atomically(table, final)
    _remove(files)
    logger.info(
        "compacted %d files (%d rows) of %s into %s (%d rows)",
        len(files),
        rows_before,
        folder.name,
        final.name,
        table.num_rows,
    )
    return final


def latest_rows(table: pa.Table) -> pa.Table:
    """Keep each ``uuid``'s newest rows: the newest ``updated_at``, then the newest fetch.

    Like :func:`~mihu_frames.frame.deduplicate`, except that rows tied on both are all kept
    (in their order), so whichever of them a reader's rule prefers is still there.
    """
    if table.num_rows == 0:
        return table
    keys = [("uuid", "ascending"), ("updated_at", "descending"), ("fetched_at", "descending")]
    order = pc.sort_indices(table, keys).to_numpy()  # nulls last: they lose
    uuids = table.column("uuid").take(order).to_numpy(zero_copy_only=False)
    starts = np.r_[True, uuids[1:] != uuids[:-1]]
    head = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    keep = np.ones(len(order), dtype=bool)
    for name in ("updated_at", "fetched_at"):
        values = table.column(name).take(order).cast(pa.int64())
        values = pc.fill_null(values, np.iinfo(np.int64).min).to_numpy()
        keep &= values == values[head]
    return table.take(pa.array(np.sort(order[keep])))


def _remove(files: list[Path]) -> None:
    """Remove the files a compacted file replaces (after it is in place)."""
    for path in files:
        path.unlink(missing_ok=True)  # a concurrent compaction may have removed it
    dir_fd = os.open(files[0].parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _common(values: Any, mixed: str | None = None) -> Any:
    """The one value all sources agree on, else ``mixed``."""
    distinct = {json.dumps(v, sort_keys=True, default=str) for v in values}
    return json.loads(distinct.pop()) if len(distinct) == 1 else mixed
