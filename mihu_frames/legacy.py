"""Roots of the two earlier layouts (hive Parquet on a local disk), read as they are.

- **Layout 1** (before issue 10): ``sessions/fetched_date=YYYY-MM-DD/<snapshot_id>.parquet``, one
  file per write; the latest state is computed from them (:func:`versions.latest_versions`).
- **Layout 2** (issues 10-18): ``mihu_frames_root.json`` (the recorded filters),
  ``sessions/created_month=YYYY-MM/part-0.parquet`` (the latest state) and
  ``history/fetched_date=YYYY-MM-DD/<snapshot_id>.parquet`` (every version; a compacted file
  names the files it replaces in ``compacted_from``).

Nothing here writes: :mod:`mihu_frames.store` converts such a root to Delta Lake tables on its
first write (every version kept), then removes these files with :func:`remove`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mihu_frames.schema import SESSIONS_SCHEMA
from mihu_frames.versions import ORDER, SNAPSHOT_ID, latest_versions

__all__ = ["FILE_SCHEMA", "MANIFEST", "file_metadata", "history", "latest", "layout", "remove"]

MANIFEST = "mihu_frames_root.json"
#: Every file of a root: the sessions frame, the write that recorded the row, and its order.
FILE_SCHEMA = SESSIONS_SCHEMA.append(pa.field(SNAPSHOT_ID, pa.string())).append(
    pa.field(ORDER, pa.int64())
)
#: What these layouts left in a root (removed once converted).
_LEFT = (MANIFEST, ".mihu_frames.lock", ".pending_commit.json", ".staging", "sessions", "history")


def layout(base: Path) -> int | None:
    """2 for a root of layout 2, 1 for layout 1, None for anything else."""
    if (base / MANIFEST).is_file():
        return 2
    if any((base / "sessions").glob("fetched_date=*/")):
        return 1
    return None


def recorded(base: Path) -> dict[str, Any]:
    """The recorded settings: the manifest's (layout 2), else inferred from the files' metadata
    (layout 1: per filter, the last value any file recorded that was not None)."""
    if layout(base) == 2:
        data = json.loads((base / MANIFEST).read_text(encoding="utf-8"))
        version = data.get("layout_version")
        if not isinstance(data, dict) or not isinstance(version, int) or version > 2:
            raise ValueError(f"{base / MANIFEST} is not a manifest this mihu_frames knows")
        return dict(data.get("recorded") or {})
    found: dict[str, Any] = {"status": None, "type": None}
    for path in _history_files(base):
        filters = _metadata_or_empty(path).get("filters")
        if isinstance(filters, dict):
            for name in ("status", "type"):
                if filters.get(name) is not None:
                    found[name] = filters[name]
    return found


def history(base: Path, columns: list[str] | None = None, where: Any = None) -> pa.Table:
    """Every version (:data:`FILE_SCHEMA`), the order of first writes filled in for layout 1."""
    files = [str(p) for p in _history_files(base)]
    table = ds.dataset(files, schema=FILE_SCHEMA, format="parquet").to_table(filter=where)
    table = _first_seen_order(table)
    return table if columns is None else table.select(columns)


def latest(base: Path) -> pa.Table:
    """The latest state (:data:`FILE_SCHEMA`): layout 2's ``sessions/``, or computed (layout 1)."""
    if layout(base) == 2:
        files = sorted(str(p) for p in base.glob("sessions/created_month=*/part-0.parquet"))
        return ds.dataset(files, schema=FILE_SCHEMA, format="parquet").to_table()
    return latest_versions(history(base))


def remove(base: Path) -> None:
    """Remove what the earlier layouts left (after their versions are in the Delta tables)."""
    for name in _LEFT:
        path = base / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink(missing_ok=True)


def file_metadata(path: str | Path) -> dict[str, Any]:
    """The ``mihu_frames.*`` key-value metadata of one Parquet file of such a root, decoded."""
    meta = pq.read_schema(path).metadata or {}
    prefix = b"mihu_frames."
    return {
        k[len(prefix) :].decode(): json.loads(v) for k, v in meta.items() if k.startswith(prefix)
    }


def _metadata_or_empty(path: Path) -> dict[str, Any]:
    try:
        return file_metadata(path)
    except (OSError, ValueError, pa.ArrowInvalid):
        return {}


def _history_files(base: Path) -> list[Path]:
    """Complete history files, oldest first; files a compacted file replaces left out."""
    found = [
        p
        for folder in ("sessions", "history")
        for p in (base / folder).glob("fetched_date=*/*.parquet")
        if not p.name.startswith(".")
    ]
    replaced: set[str] = set()
    for path in found:
        sources = _metadata_or_empty(path).get("compacted_from") or []
        replaced.update(s for s in sources if s != path.stem)
    return sorted((p for p in found if p.stem not in replaced), key=lambda p: p.stem)


def _first_seen_order(table: pa.Table) -> pa.Table:
    """Rows of layout 1 (no :data:`ORDER`) get the position of their session's first version."""
    if table.num_rows == 0 or table.column(ORDER).null_count == 0:
        return table
    codes = table.column("uuid").combine_chunks().dictionary_encode().indices.to_numpy()
    unique, first = np.unique(codes, return_index=True)
    first_of = np.empty(codes.max() + 1, dtype=np.int64)
    first_of[unique] = first
    filled = pc.coalesce(table.column(ORDER).combine_chunks(), pa.array(first_of[codes]))
    return table.set_column(table.schema.get_field_index(ORDER), ORDER, filled)
