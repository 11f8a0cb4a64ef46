"""From decoded sessions of many pages to one table in the frame's schema, in fetch order.

Both decoders (pyarrow's reader and ``json.loads``) end here with a struct array of API
sessions and the page each session came from. This step parses the seven timestamps, tags each
row with its page's conversation, filter values and fetch time, builds the frame's columns
(:func:`mihu_frames.frame.build_columns`) and adds the hidden order columns that let a load
put concurrently fetched pages back in order.

Guarantees: every session has a ``uuid`` (else :class:`FieldError`); a timestamp that is not
ISO 8601 is a :class:`FieldError` naming the field; an instant outside years 1-9999 once its
offset is applied becomes null and its text is kept in ``extra`` under the field's name, and
the rows this happened to are counted per page (:attr:`Batch.out_of_range`), so a load can
say so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mihu_frames.decoding.envelope import FieldError, PageInfo
from mihu_frames.decoding.extra import JSON
from mihu_frames.decoding.timestamps import parse_timestamps, utc
from mihu_frames.frame import build_columns, with_order
from mihu_frames.schema import TIMESTAMP_FIELDS, TIMESTAMP_TYPE


@dataclass(frozen=True)
class Batch:
    """Pages decoded together: one table (each page's rows contiguous, in page order).

    ``out_of_range`` counts, per page, the timestamps that fell outside years 1-9999.
    """

    table: pa.Table
    out_of_range: np.ndarray


def build_batch(
    sessions: pa.StructArray,
    parents: np.ndarray,
    rows: np.ndarray,
    infos: Sequence[PageInfo],
    extra: pa.Array | None = None,
) -> Batch:
    """Sessions of API types, each with the index of its page in ``infos``, to frame columns.

    Timestamps come as text (``json.loads``) or already parsed (pyarrow's reader). Text out of
    years 1-9999 becomes null with the text kept in ``extra``; a parsed instant out of range
    raises :class:`OutOfRange` instead, so that the caller decodes those pages from their text.
    """
    n = len(sessions)
    uuids = _field(sessions, "uuid", n)
    if uuids.null_count:
        row = int(np.flatnonzero(uuids.is_null().to_numpy(zero_copy_only=False))[0])
        raise FieldError("uuid", row, "a session has no uuid")
    times: dict[str, pa.Array] = {}
    lost: dict[str, np.ndarray] = {}
    for name in TIMESTAMP_FIELDS:
        text = _field(sessions, name, n)
        times[name], outside = parse_timestamps(text, name)
        if outside is not None:
            if pa.types.is_timestamp(text.type):
                raise OutOfRange
            lost[name] = outside
    out_of_range = np.zeros(len(infos), dtype=np.int64)
    if lost:
        extra = _keep_raw_text(sessions, lost, extra, n)
        hit = np.zeros(n, dtype=bool)
        for mask in lost.values():
            hit |= mask
        np.add.at(out_of_range, parents[hit], 1)
    parents_arr = pa.array(parents, type=pa.int64())

    def per_page(values: list[Any], type_: pa.DataType) -> pa.Array:
        return pa.array(values, type=type_).take(parents_arr)

    table = build_columns(
        sessions,
        times=times,
        conversation=per_page([i.conversation for i in infos], pa.string()),
        status=per_page([i.status for i in infos], pa.string()),
        type_=per_page([i.type for i in infos], pa.string()),
        fetched_at=per_page([utc(i.fetched_at) for i in infos], TIMESTAMP_TYPE),
        extra=extra,
    )
    table = with_order(
        table,
        per_page([i.query for i in infos], pa.int64()),
        per_page([i.page for i in infos], pa.int64()),
        pa.array(rows, type=pa.int64()),
    )
    return Batch(table, out_of_range)


class OutOfRange(Exception):
    """A timestamp parsed by pyarrow's reader is outside years 1-9999: decode from the text."""


def _field(sessions: pa.StructArray, name: str, n: int) -> pa.Array:
    names = sessions.type.names if n or sessions.type.num_fields else []
    return sessions.field(name) if name in names else pa.nulls(n, pa.string())


def _keep_raw_text(
    sessions: pa.StructArray, lost: dict[str, np.ndarray], extra: pa.Array | None, n: int
) -> pa.Array:
    """``extra`` with the text of each out-of-range timestamp added under its field's name."""
    values: list[str | None] = extra.to_pylist() if extra is not None else [None] * n
    for name, mask in lost.items():
        texts = sessions.field(name).to_pylist()
        for row in np.flatnonzero(mask):
            text = values[row]
            item = json.loads(text) if text is not None else {}
            item[name] = texts[row]
            values[row] = JSON.encode(item)
    return pa.array(values, type=pa.string())
