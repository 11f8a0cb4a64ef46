"""The one place the engines read a snapshot root: :func:`latest_dataset`.

Every statistic computed over a root reads it through :func:`latest_dataset` and nothing else:
the latest state (one row per session) as a lazy ``pyarrow.dataset.Dataset``, which DuckDB,
Polars and pyarrow scan with projection and filter pushdown, so no statistic loads a root's
sessions into memory. A root's latest state is the Delta table ``latest/`` (see
:mod:`mihu_frames.store`): its Arrow dataset, at the version committed last, so a statistic sees
one committed state whole; a root of an earlier layout is read and de-duplicated first.

Durations are never read from here: the statistics compute them from ``started_at`` and
``ended_at`` (as the frame does), so the storage unit of a duration column does not matter.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import pyarrow.dataset as ds

from mihu_frames.store import LATEST, open_root

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
        A local folder, a ``file://`` URI, or a URI ``deltalake`` takes (``s3://...``).
    storage_options : mapping, optional
        Credentials and settings of an object store, as :func:`mihu_frames.read_snapshots`
        takes them.

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
    store = open_root(root, storage_options=storage_options)
    if store.state != "delta":  # an earlier layout (versions to de-duplicate) or nothing yet
        return ds.dataset(store.read_latest())
    logger.debug("latest_dataset: %s, the Delta table %s", store.uri, LATEST)
    return store.tables.dataset(LATEST)
