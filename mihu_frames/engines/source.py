"""The one place the engines read a snapshot root: :func:`latest_dataset`.

Every statistic computed over a root reads it through :func:`latest_dataset` and nothing else:
the latest state (one row per session) as a lazy ``pyarrow.dataset.Dataset``, which DuckDB,
Polars and pyarrow scan with projection and filter pushdown, so no statistic loads a root's
sessions into memory. When the store changes (Delta Lake tables), only this function changes:
``deltalake.DeltaTable(uri, storage_options=...).to_pyarrow_dataset()``.

Durations are never read from here: the statistics compute them from ``started_at`` and
``ended_at`` (as the frame does), so the storage unit of a duration column does not matter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds

from mihu_frames.root import FILE_SCHEMA, LATEST, PART_FILE, PARTITION, open_root

__all__ = ["is_root", "latest_dataset"]

logger = logging.getLogger("mihu_frames")


def is_root(obj: object) -> bool:
    """Whether ``obj`` names a root (a path or a URI); says nothing of what is there."""
    return isinstance(obj, (str, os.PathLike))


def latest_dataset(
    root: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> ds.Dataset:
    """The latest state of the snapshot root ``root``, one row per session, as a dataset.

    Parameters
    ----------
    root : str or path-like
        A local folder or a ``file://`` URI.
    storage_options : mapping, optional
        Kept for stores that need credentials (object stores); unused by the local layout.

    Returns
    -------
    pyarrow.dataset.Dataset
        Columns of the sessions frame (:data:`mihu_frames.schema.SESSIONS_SCHEMA`) and the
        root's own (``insert_order`` ...); nothing read yet.

    Raises
    ------
    NotASnapshotRootError
        ``root`` is not a snapshot root (missing, empty, another folder).

    Examples
    --------
    >>> latest_dataset("data/snapshots").count_rows()      # doctest: +SKIP
    3051
    """
    del storage_options  # the local layout needs none
    text = os.fspath(root)
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    store = open_root(Path(text))
    if store.state != "root":  # an earlier layout (versions to de-duplicate) or nothing yet
        return ds.dataset(store.read_latest())
    latest = Path(text) / LATEST
    files = sorted(str(p) for p in latest.glob(f"{PARTITION}=*/{PART_FILE}"))
    logger.debug("latest_dataset: %s, %d partition files", text, len(files))
    schema = FILE_SCHEMA.append(pa.field(PARTITION, pa.string()))
    partitioning = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")
    return ds.dataset(
        files,
        schema=schema,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=str(latest),
    )
