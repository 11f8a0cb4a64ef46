"""The layout of a snapshot root, and the helpers every part of the store shares.

The names of its two tables and their partition columns, their Arrow schemas (durations as int64
microseconds), the table properties, the commit metadata key; and the conversions between rows
of :data:`FILE_SCHEMA` and the rows the Delta tables hold, scans with filters pushed down, the
storage's errors as :class:`~mihu_frames.errors.SnapshotStoreError`, the back-off between
attempts. The layout itself is documented in :mod:`mihu_frames.store`.
"""

from __future__ import annotations

import errno
import os
import random
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable

from mihu_frames import legacy
from mihu_frames._version import __version__
from mihu_frames.errors import SnapshotStoreError
from mihu_frames.schema import SCHEMA_VERSION, SESSIONS_SCHEMA, TIMESTAMP_TYPE

#: 4: ``versions/`` holds the superseded versions, ``latest/`` the current ones (3: both held
#: every version; such a root is read and written as it is, see :data:`COMPLETE_BEFORE`).
LAYOUT_VERSION = 4
LATEST = "latest"
HISTORY = "versions"
PARTITION = "created_month"
HISTORY_PARTITION = "fetched_month"
NO_MONTH = "none"
#: The Delta transaction identifier every commit of the latest state carries: two such commits
#: made from one version conflict (writers are serialized optimistically).
APP_ID = "mihu_frames"
#: Recorded with a root converted from an earlier layout (or from layout 3): ``versions/``
#: holds every version whose ``snapshot_id`` sorts at or before this one, the current ones too,
#: so a write does not copy those again when it supersedes them. Snapshot ids begin with the
#: writer's clock: a writer whose clock runs behind by more than the root's age since then
#: would take its own new versions for such ones (and not copy them when replacing them).
COMPLETE_BEFORE = "versions_complete_before"
#: Commits of the latest state tried before a conflict is an error.
ATTEMPTS = 30
FILE_SCHEMA = legacy.FILE_SCHEMA
DURATIONS = tuple(f.name for f in SESSIONS_SCHEMA if pa.types.is_duration(f.type))
_KEY = "mihu_frames"  # commit metadata: one JSON object under this key
_DURATIONS_NOTE = "int64 microseconds: " + ", ".join(DURATIONS)
_CONFIG = {  # time travel stays possible until prune_before says otherwise
    "delta.logRetentionDuration": "interval 36500 days",
    "delta.enableExpiredLogCleanup": "false",
    "delta.dataSkippingStatsColumns": (
        "conversation_uuid,uuid,created_at,updated_at,fetched_at,snapshot_id,insert_order"
    ),
}


def _delta_schema(partition: str) -> pa.Schema:
    fields = [pa.field(f.name, pa.int64()) if f.name in DURATIONS else f for f in FILE_SCHEMA]
    return pa.schema([*fields, pa.field(partition, pa.string())])


LATEST_SCHEMA = _delta_schema(PARTITION)
HISTORY_SCHEMA = _delta_schema(HISTORY_PARTITION)


def new_snapshot_id(now: datetime | None = None) -> str:
    """A snapshot id that sorts by creation time: ``20261125T183000123456Z-1a2b3c4d``."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)


def _chmod(path: str, mode: int) -> None:
    try:
        if os.stat(path).st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except FileNotFoundError:  # a file a concurrent writer replaced
        pass


def _pause(attempt: int) -> None:
    time.sleep(min(2.0, 0.02 * 2 ** min(attempt, 7)) * (0.5 + random.random()))


def _files(table: DeltaTable) -> dict[str, int]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return dict(
        zip(
            [str(p) for p in actions.column("path").to_pylist()],
            [int(n or 0) for n in actions.column("size_bytes").to_pylist()],
            strict=True,
        )
    )


def _versions() -> dict[str, Any]:
    return {
        "library_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "layout_version": LAYOUT_VERSION,
    }


def _scan(dataset: ds.Dataset, columns: Sequence[str] | None, where: Any) -> pa.Table:
    """``dataset`` read with ``where`` pushed down. Files that delta-rs's MERGE wrote may hold
    ``string_view`` statistics that pyarrow cannot compare with the table's ``string``: then the
    columns are read and filtered in memory (same rows)."""
    present = set(dataset.schema.names)
    names = None if columns is None else [c for c in columns if c in present]
    try:
        return dataset.to_table(columns=names, filter=where)
    except pa.ArrowNotImplementedError:
        table = dataset.to_table()
        return ds.dataset(table).to_table(columns=names, filter=where)


def _where(conversations: Sequence[str] | None, since: datetime | None) -> Any:
    where = None
    if conversations is not None:
        where = pc.field("conversation_uuid").isin(list(conversations))
    if since is not None:
        recent = pc.field("updated_at") >= pa.scalar(since, TIMESTAMP_TYPE)
        where = recent if where is None else where & recent
    return where


def _months(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``YYYY-MM`` of each instant (UTC), ``none`` where null: a partition value (each distinct
    month formatted once)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    stamps = cast(pa.TimestampArray, values)  # timestamps (the stubs type them apart)
    month = pc.add(pc.multiply(pc.year(stamps), 100), pc.month(stamps))
    keys = np.asarray(pc.fill_null(month, pa.scalar(-1, pa.int64())))
    distinct, inverse = np.unique(keys, return_inverse=True)
    names = [NO_MONTH if k < 0 else f"{k // 100:04d}-{k % 100:02d}" for k in distinct.tolist()]
    return pa.array(names, pa.string()).take(pa.array(inverse.astype(np.int64), pa.int64()))


def _to_delta(table: pa.Table, partition: str) -> pa.Table:
    """Rows of :data:`FILE_SCHEMA` as the Delta tables hold them: durations as int64
    microseconds, and the partition column (kept where the rows have one)."""
    if partition not in table.column_names:
        source = "created_at" if partition == PARTITION else "fetched_at"
        table = table.append_column(partition, _months(table.column(source)))
    schema = LATEST_SCHEMA if partition == PARTITION else HISTORY_SCHEMA
    return table.select(schema.names).cast(schema)


def _from_delta(
    table: pa.Table, keep: str | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """Rows read from a Delta table in :data:`FILE_SCHEMA` (durations restored; ``columns``, or
    all, a column a table of an older schema lacks being null); ``keep`` a partition column."""
    for name in columns if columns is not None else FILE_SCHEMA.names:
        if name not in table.column_names:
            table = table.append_column(
                name, pa.nulls(table.num_rows, FILE_SCHEMA.field(name).type)
            )
    fields = [f for f in FILE_SCHEMA if f.name in table.column_names]
    if keep is not None:
        fields.append(pa.field(keep, pa.string()))
    return table.select([f.name for f in fields]).cast(pa.schema(fields))


def _is_uri(path: str | os.PathLike[str]) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def _store_error(uri: str, error: BaseException, options: Mapping[str, str]) -> SnapshotStoreError:
    """``error`` of the storage as a :class:`SnapshotStoreError` naming the root and, where it
    can tell, the cause; every credential (of ``options`` or the usual variables) masked."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).replace("\u21b3", "->")
    text = " ".join(text.split()) or type(error).__name__
    secret = ("SECRET", "TOKEN", "KEY", "PASSWORD", "SAS", "CREDENTIAL")
    values = [v for k, v in options.items() if any(s in k.upper() for s in secret)]
    values += [
        v
        for k, v in os.environ.items()
        if k.startswith(("AWS_", "AZURE_", "GOOGLE_")) and any(s in k.upper() for s in secret)
    ]
    for value in values:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    hints = []
    if "NoSuchBucket" in text or "ContainerNotFound" in text:
        hints.append("the bucket does not exist")
    if "169.254.169.254" in text or "credential" in text.lower():
        hints.append(
            "no credentials were found: set them in the environment (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or your cloud's variables) or pass storage_options="
        )
    if "No space left" in text or "ENOSPC" in text:
        hints.append("the disk is full")
    hint = f" ({'; '.join(hints)})" if hints else ""
    wrapped = SnapshotStoreError(f"the snapshot root {uri} could not be used{hint}: {text[:500]}")
    if isinstance(error, OSError) and error.errno is not None:
        wrapped.errno = error.errno
    elif "No space left" in text:
        wrapped.errno = errno.ENOSPC
    return wrapped
