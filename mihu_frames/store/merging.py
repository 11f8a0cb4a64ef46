"""Comparing the rows of a write with the latest state, and the metadata a write records.

:func:`_merge` tells, for the rows of a write and the rows held of those sessions, what goes to
the latest state and what to ``versions/`` (:class:`Merged`; the rules are
:mod:`mihu_frames.versions`'s); :func:`_next_order` the place of the next new session;
:func:`_record` a write's commit metadata.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from mihu_frames.store.layout import FILE_SCHEMA, PARTITION, _months, _versions
from mihu_frames.versions import HELD_CONVERSATION, ORDER, TAGS, same_content


def _record(
    versions: pa.Table, snapshot_id: str, metadata: Mapping[str, Any], counts: Mapping[str, int]
) -> dict[str, Any]:
    """The commit metadata of a write (``mihu_frames`` in both tables' commit info)."""
    fetched = pc.max(versions.column("fetched_at")).as_py()
    now = datetime.now(timezone.utc)
    record: dict[str, Any] = {
        **_versions(),
        "snapshot_id": snapshot_id,
        "fetched_at": (fetched or now).isoformat(),
        "written_at": now.isoformat(),
        "rows": versions.num_rows,
        "conversations": len(pc.unique(versions.column("conversation_uuid"))),
        "rows_new": counts["new"],
        "rows_changed": counts["changed"],
        "rows_unchanged": counts["unchanged"],
        "rows_stale": counts["stale"],
    }
    for key, value in metadata.items():
        record.setdefault(key, value)
    return json.loads(json.dumps(record, default=str))


def _next_order(latest: DeltaTable) -> int:
    """One more than the largest :data:`ORDER` held (from the files' statistics)."""
    actions = pa.table(latest.get_add_actions(flatten=True))
    name = f"max.{ORDER}"
    if actions.num_rows == 0:
        return 0
    if name in actions.column_names and actions.column(name).null_count == 0:
        largest = pc.max(actions.column(name)).as_py()
    else:
        held = latest.to_pyarrow_dataset().to_table(columns=[ORDER]).column(ORDER)
        largest = pc.max(held).as_py() if len(held) else None
    return 0 if largest is None else int(largest) + 1


@dataclass(frozen=True)
class Merged:
    """What a write does, compared with the latest state (:func:`_merge`).

    Attributes
    ----------
    upserts : pa.Table
        The rows for the latest state: new and changed sessions, with their partition (the
        held one for a held session).
    history : pa.Table
        The rows for ``versions/`` (:data:`FILE_SCHEMA`): the held versions the changed ones
        supersede, and the stale versions (an older fetch written late).
    versions : pa.Table
        The write's own versions: new, changed and stale (tags carried, the held conversation
        kept).
    counts : dict of str to int
        ``new``, ``changed``, ``unchanged``, ``stale``.
    """

    upserts: pa.Table
    history: pa.Table
    versions: pa.Table
    counts: dict[str, int]


def _merge(held: pa.Table, incoming: pa.Table, next_order: int) -> Merged:
    """Compare ``incoming`` (one row per session, :data:`FILE_SCHEMA`) with the ``held`` rows
    of those sessions (with their partition): what goes to the latest state, what to
    ``versions/``. See :mod:`mihu_frames.versions` for the rules."""
    incoming = incoming.cast(FILE_SCHEMA)
    if held.num_rows == 0:  # a first write, or only new sessions: every row is new
        return _all_new(incoming, next_order)
    found = pc.index_in(incoming.column("uuid"), value_set=held.column("uuid").combine_chunks())
    found = found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found
    is_new = np.asarray(pc.is_null(found).to_numpy(zero_copy_only=False), dtype=bool)
    matched = incoming.filter(pa.array(~is_new))
    before = held.take(found.filter(pa.array(~is_new)))
    for name in (ORDER, HELD_CONVERSATION):  # a session keeps its place and its conversation
        index = matched.schema.get_field_index(name)
        matched = matched.set_column(index, name, before.column(name))
    for name in TAGS:  # an untagged row keeps the tag held
        index = matched.schema.get_field_index(name)
        tag = pc.coalesce(
            matched.column(name).combine_chunks(), before.column(name).combine_chunks()
        )
        matched = matched.set_column(index, name, tag)
    same = same_content(matched, before)
    newer = _not_older(matched, before)
    changed_mask = pa.array(~same & newer)
    stale = matched.filter(pa.array(~same & ~newer))
    changed = matched.filter(changed_mask)
    new = incoming.filter(pa.array(is_new))
    order = pa.array(np.arange(next_order, next_order + new.num_rows, dtype=np.int64))
    filled = pc.coalesce(new.column(ORDER).combine_chunks(), order)
    new = new.set_column(new.schema.get_field_index(ORDER), ORDER, filled)
    upserts = pa.concat_tables(
        [
            changed.append_column(PARTITION, before.column(PARTITION).filter(changed_mask)),
            new.append_column(PARTITION, _months(new.column("created_at"))),
        ]
    )
    superseded = before.filter(changed_mask).select(FILE_SCHEMA.names).cast(FILE_SCHEMA)
    counts = {
        "new": new.num_rows,
        "changed": changed.num_rows,
        "unchanged": int(same.sum()),
        "stale": stale.num_rows,
    }
    return Merged(
        upserts,
        pa.concat_tables([superseded, stale]),
        pa.concat_tables([new, changed, stale]),
        counts,
    )


def _all_new(incoming: pa.Table, next_order: int) -> Merged:
    """:func:`_merge` of rows none of which is held."""
    order = pa.array(np.arange(next_order, next_order + incoming.num_rows, dtype=np.int64))
    filled = pc.coalesce(incoming.column(ORDER).combine_chunks(), order)
    new = incoming.set_column(incoming.schema.get_field_index(ORDER), ORDER, filled)
    counts = {"new": new.num_rows, "changed": 0, "unchanged": 0, "stale": 0}
    upserts = new.append_column(PARTITION, _months(new.column("created_at")))
    return Merged(upserts, FILE_SCHEMA.empty_table(), new, counts)


def _not_older(a: pa.Table, b: pa.Table) -> np.ndarray:
    """Row-wise: is version ``a`` at or after version ``b`` (``fetched_at``, then ``updated_at``;
    nulls first; a tie goes to ``a``, the later write)?"""
    low = np.iinfo(np.int64).min

    def ints(table: pa.Table, name: str) -> np.ndarray:
        column = table.column(name).combine_chunks().cast(pa.int64())
        return np.asarray(pc.fill_null(column, pa.scalar(low, pa.int64())))

    fa, fb = ints(a, "fetched_at"), ints(b, "fetched_at")
    ua, ub = ints(a, "updated_at"), ints(b, "updated_at")
    return (fa > fb) | ((fa == fb) & (ua >= ub))
