"""The sessions frame as Arrow columns: built from decoded sessions, put in order, de-duplicated.

Decoding (:mod:`mihu_frames.decoding`) turns bytes or dicts into a struct array of API sessions
with parsed timestamps; this module makes the frame's columns from them (``contact``
flattened, durations derived, every column in :data:`~mihu_frames.schema.SESSIONS_SCHEMA`), and
joins the batches of a load in fetch order with one row per ``uuid``. Nothing here parses
text or knows HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.schema import (
    CONTACT_FIELDS,
    CONTACT_TYPE,
    SESSIONS_SCHEMA,
    STRING_FIELDS,
    TIMESTAMP_FIELDS,
    canonical_ids,
)

_LIST = pa.list_(pa.string())
#: Above this many bytes, finishing a load hands freed memory back to the system as it goes.
#: (Each hand-back makes the next column's memory fault in afresh: for 100,000 sessions, 70 MB,
#: that was measured at +0.05 s, more than doubling the step; a million, 0.7 GB, needs it.)
_RELEASE_ABOVE = 256 * 1024 * 1024
#: Hidden columns that keep the frame in fetch order after concurrent fetching.
ORDER_COLUMNS = ("_query", "_page", "_row")


def with_order(table: pa.Table, query: Any, page: Any, row: Any) -> pa.Table:
    for name, values in zip(ORDER_COLUMNS, (query, page, row), strict=True):
        table = table.append_column(name, pa.array(values, type=pa.int64()))
    return table


def build_columns(
    sessions: pa.StructArray,
    *,
    times: Mapping[str, pa.Array],
    conversation: pa.Array,
    status: pa.Array,
    type_: pa.Array,
    fetched_at: pa.Array,
    extra: pa.Array | None = None,
) -> pa.Table:
    """Flatten and derive every frame column from a struct array of API sessions.

    ``times`` holds the seven timestamps, already parsed (see
    :mod:`mihu_frames.decoding.timestamps`); ``extra`` the JSON of the undocumented fields
    (see :mod:`mihu_frames.decoding.extra`), None when the sessions have none. ``conversation``
    fills in a session's missing ``conversation_uuid``. Ids come out lower case, whatever case
    they were sent in (:data:`~mihu_frames.schema.ID_COLUMNS`).
    """
    if isinstance(sessions, pa.ChunkedArray):
        sessions = sessions.combine_chunks()
    n = len(sessions)
    field_names = set(sessions.type.names) if n or sessions.type.num_fields else set()

    def field(name: str, type_: pa.DataType) -> pa.Array:
        if name not in field_names:
            # pyarrow-stubs overload nulls per concrete type, with none for DataType itself
            return pa.nulls(n, type=cast(Any, type_))
        values = sessions.field(name)
        return values if values.type == type_ else values.cast(type_)

    started, ended = times["started_at"], times["ended_at"]
    contact = field("contact", CONTACT_TYPE)
    assert isinstance(contact, pa.StructArray)  # CONTACT_TYPE is a struct type
    contact_values = _struct_children(contact, CONTACT_FIELDS)
    # pyarrow-stubs give fill_null's result the union of its argument types; it is a list array
    tasks = cast(pa.ListArray, pc.fill_null(field("task_uuids", _LIST), pa.scalar([], type=_LIST)))
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "conversation_uuid": canonical_ids(
            pc.coalesce(field("conversation_uuid", pa.string()), conversation)
        ),
        "uuid": canonical_ids(field("uuid", pa.string())),
        "status": status,
        "type": type_,
        **{name: times[name] for name in TIMESTAMP_FIELDS},
        "duration": pc.subtract(ended, started),
        "time_to_evaluation": pc.subtract(times["evaluated_at"], ended),
        "time_to_summary": pc.subtract(times["summary_generated_at"], ended),
        "idle_before_end": pc.subtract(ended, times["last_activity_at"]),
        "is_open": pc.is_null(ended),
        **{name: field(name, pa.string()) for name in STRING_FIELDS},
        **{f"contact_{name}": contact_values[name] for name in CONTACT_FIELDS},
        "task_uuids": tasks,
        "task_count": pc.list_value_length(tasks).cast(pa.int64()),
        "extra": extra if extra is not None else pa.nulls(n, pa.string()),
        "fetched_at": fetched_at,
    }
    return pa.Table.from_arrays([columns[f.name] for f in SESSIONS_SCHEMA], schema=SESSIONS_SCHEMA)


def _struct_children(struct: pa.StructArray, names: Iterable[str]) -> dict[str, pa.Array]:
    present = {struct.type.field(i).name: i for i in range(struct.type.num_fields)}
    flat = struct.flatten()  # children with the parent's nulls applied
    return {
        name: flat[present[name]].cast(pa.string())
        if name in present
        else pa.nulls(len(struct), pa.string())
        for name in names
    }


def finish(tables: list[pa.Table], empty: pa.Schema = SESSIONS_SCHEMA) -> pa.Table:
    """Concatenate batches in fetch order and keep one row per uuid (latest ``updated_at``).

    Batches arrive in completion order, but each page's rows are contiguous inside its batch,
    so ordering whole pages restores the API's order without a row sort. One ``take`` per
    column does it: the frame's columns come out in one chunk each (hundreds of page slices
    would make ``to_pandas`` and everything after it slower). ``tables`` is emptied, and each
    column of the batches is let go as soon as it is copied, so a load never holds its data
    twice over (a million sessions: 0.7 GB less at the peak).
    """
    pieces: list[tuple[int, int, int, int]] = []
    offset = 0
    for table in tables:
        query = table.column("_query").to_numpy()
        page = table.column("_page").to_numpy()
        cuts = np.flatnonzero((query[1:] != query[:-1]) | (page[1:] != page[:-1])) + 1
        bounds = [0, *cuts.tolist(), table.num_rows] if table.num_rows else []
        for start, stop in pairwise(bounds):
            pieces.append((int(query[start]), int(page[start]), offset + start, stop - start))
        offset += table.num_rows
    if not pieces:
        tables.clear()
        return empty.empty_table()
    pieces.sort()
    table = pa.concat_tables([t for t in tables if t.num_rows]).drop_columns(list(ORDER_COLUMNS))
    tables.clear()
    schema = table.schema
    starts = [np.arange(start, start + n) for _, _, start, n in pieces]
    order = pa.array(np.concatenate(starts), type=pa.int64())
    columns: list[pa.ChunkedArray] = []
    pool = pa.default_memory_pool()
    large = table.nbytes > _RELEASE_ABOVE
    for name in schema.names:
        column = table.column(name)
        table = table.drop_columns([name])
        try:
            columns.append(column.take(order))
        except pa.ArrowInvalid:  # a string column over 2 GiB cannot be one chunk: page slices
            columns.append(
                pa.chunked_array([column.slice(s, n).combine_chunks() for _, _, s, n in pieces])
            )
        del column
        if large:  # mimalloc keeps freed memory a while: give it back as each column goes
            pool.release_unused()
    return deduplicate(pa.Table.from_arrays(columns, schema=schema))


def deduplicate(table: pa.Table, tiebreak: str | None = None) -> pa.Table:
    """Keep one row per ``uuid``: the most recently updated, then the most recently fetched.

    ``tiebreak`` names one more column whose largest value wins a remaining tie (snapshots
    use their sortable ``snapshot_id``, so the later of two same-second syncs wins).
    """
    if table.num_rows == 0:
        return table
    uuids = table.column("uuid").combine_chunks()
    # pc.unique rather than pc.count_distinct: the same answer, and the aggregate's set-up
    # was measured at 5-60 ms right after a load (unique: ~2 ms for 20,000 uuids).
    if len(pc.unique(uuids)) == table.num_rows:
        return table
    keys: list[tuple[str, Literal["ascending", "descending"]]] = [
        ("updated_at", "descending"),
        ("fetched_at", "descending"),
    ]
    if tiebreak is not None:
        keys.append((tiebreak, "descending"))
    # Nulls sort last by default: a row without updated_at loses to one with it.
    order = pc.sort_indices(table, keys)
    codes = uuids.take(order).dictionary_encode().indices.to_numpy()
    _, first = np.unique(codes, return_index=True)
    keep = np.sort(order.to_numpy()[first])
    return table.take(pa.array(keep))
