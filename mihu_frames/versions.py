"""Versions of a session: what counts as a change, and which version is the latest.

A snapshot root keeps every *version* of every session it was given (``root/history/``) and the
latest one of each (``root/sessions/``). The rules, in one place:

- **Content.** A version is a session's content: every column but ``fetched_at`` (and the
  ``snapshot_id`` of the write that recorded it). Two rows with the same content are the same
  version, however often it was fetched; the first fetch is the one kept.
- **Order.** The versions of one session are ordered by ``fetched_at`` (when the server sent
  it), then ``updated_at``, then ``snapshot_id`` (the later write), nulls first. The latest
  version is the last one. The server's newest answer wins, whatever its ``updated_at`` says: a
  session once sent with ``updated_at`` in the year 9999 and later corrected is held corrected.
- **Tags.** ``status`` and ``type`` are not in the API's session: they are the filter a row was
  fetched under. A version without a tag (fetched without that filter) keeps the tag of the
  version before it: a tag is never replaced by null, only by another tag.
- **One conversation.** A session is one row, whatever listings serve it. When the server
  serves one session ``uuid`` under two conversations, the session keeps the conversation it
  was first stored under: a later version fetched under the other conversation takes the held
  ``conversation_uuid`` before it is compared, so syncing the two conversations in turn, with
  nothing changed, writes nothing (the conversation would otherwise flip on every sync).

:func:`latest_versions` applies the order and the tag rule to any set of versions (a history,
or the rows of one write), :func:`same_content` compares aligned rows, :func:`content_hashes`
gives a 64-bit hash of each row's content (compaction compares consecutive versions with it,
then confirms equal hashes with :func:`same_content`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.schema import COLUMNS

__all__ = [
    "CONTENT",
    "HELD_CONVERSATION",
    "ORDER",
    "SNAPSHOT_ID",
    "TAGS",
    "content_hashes",
    "equal",
    "fill_tags",
    "latest_versions",
    "same_content",
    "version_order",
]

SNAPSHOT_ID = "snapshot_id"
#: The order a session was first written in (per root, increasing; gaps allowed): reads return
#: the latest state in this order, so a frame written to a new root reads back row for row.
ORDER = "insert_order"
#: A session's content: every column but when it was fetched.
CONTENT: tuple[str, ...] = tuple(name for name in COLUMNS if name != "fetched_at")
#: The column a session keeps from its first stored version (see "One conversation" above).
HELD_CONVERSATION = "conversation_uuid"
#: The columns a fetch without filters leaves null, and which then keep their earlier value.
TAGS: tuple[str, ...] = ("status", "type")
_NULL_FIRST = np.iinfo(np.int64).min


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


def _joined(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Each list's items joined by a unit separator: lists compared and hashed as strings."""
    # the stubs type the result as scalar or array whatever the input: an array gives an array
    return cast("pa.Array | pa.ChunkedArray", pc.binary_join(values, "\x1f"))


def equal(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Element-wise equality where null equals null (lists compared by their items).

    Examples
    --------
    >>> equal(pa.array(["a", None, "b"]), pa.array(["a", None, "c"])).tolist()
    [True, True, False]
    """
    if pa.types.is_list(a.type):
        a, b = _joined(a), _joined(b)
    # pc.equal is null where either side is: there the answer is whether both are
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return _mask(pc.fill_null(pc.equal(a, b), both_null))


def same_content(a: pa.Table, b: pa.Table) -> np.ndarray:
    """For two tables of aligned rows: is row *i* of ``a`` the same version as row *i* of ``b``?

    Examples
    --------
    >>> same_content(table, table).all()                             # doctest: +SKIP
    True
    """
    same = np.ones(a.num_rows, dtype=bool)
    for name in CONTENT:
        same &= equal(a.column(name), b.column(name))
    return same


def _ints(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Timestamps as int64 microseconds with nulls first in an ascending sort."""
    return np.asarray(
        pc.fill_null(_array(values).cast(pa.int64()), pa.scalar(_NULL_FIRST, pa.int64()))
    )


def _ranks(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Each string's rank among the distinct values (nulls first): sortable integers."""
    encoded = _array(values).dictionary_encode()
    dictionary = encoded.dictionary.to_numpy(zero_copy_only=False).astype(str)
    rank_of = np.empty(len(dictionary) + 1, dtype=np.int64)
    rank_of[np.argsort(dictionary, kind="stable")] = np.arange(1, len(dictionary) + 1)
    rank_of[-1] = 0
    indices = encoded.indices
    codes = np.asarray(pc.fill_null(indices, pa.scalar(len(dictionary), indices.type)))
    return rank_of[codes]


def version_order(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Row indices grouping each ``uuid``'s versions oldest first, and where each group starts.

    Returns ``(order, starts)``: ``table.take(order)`` lists every session's versions together,
    in version order (see the module docstring); ``starts[i]`` is True where a session's first
    version is. Rows without a ``snapshot_id`` column order as if they had the same one.
    """
    uuids = _array(table.column("uuid")).dictionary_encode().indices.to_numpy()
    keys = []
    if SNAPSHOT_ID in table.column_names:
        keys.append(_ranks(table.column(SNAPSHOT_ID)))
    keys += [_ints(table.column("updated_at")), _ints(table.column("fetched_at")), uuids]
    order = np.lexsort(keys)  # the last key sorts first
    grouped = uuids[order]
    starts = np.r_[True, grouped[1:] != grouped[:-1]] if len(order) else np.zeros(0, bool)
    return order, starts


def fill_tags(ordered: pa.Table, starts: np.ndarray) -> pa.Table:
    """In a table of versions in :func:`version_order`, give each untagged version the tag of the
    last tagged version before it of the same session (see the module docstring)."""
    n = ordered.num_rows
    if n == 0:
        return ordered
    positions = np.arange(n)
    group_start = np.maximum.accumulate(np.where(starts, positions, 0))
    for name in TAGS:
        values = _array(ordered.column(name))
        if values.null_count in (0, n):
            continue
        valid = ~_mask(pc.is_null(values))
        last = np.maximum.accumulate(np.where(valid, positions, -1))
        found = last >= group_start
        source = np.where(found, last, positions)
        filled = values.take(pa.array(source, pa.int64()))
        index = ordered.schema.get_field_index(name)
        ordered = ordered.set_column(index, ordered.schema.field(index), filled)
    return ordered


def latest_versions(table: pa.Table) -> pa.Table:
    """The latest version of every session in ``table``, tags carried forward.

    One row per ``uuid`` (in no particular order). See the module docstring for what "latest"
    means and how tags are carried.

    Examples
    --------
    >>> latest_versions(history).num_rows == len(set(history["uuid"]))  # doctest: +SKIP
    True
    """
    if table.num_rows == 0:
        return table
    order, starts = version_order(table)
    ordered = fill_tags(table.take(pa.array(order)), starts)
    ends = np.r_[starts[1:], True]
    return ordered.filter(pa.array(ends))


def content_hashes(table: pa.Table, columns: Sequence[str] = CONTENT) -> np.ndarray:
    """A 64-bit hash of each row's ``columns`` (its content): equal content, equal hash.

    Examples
    --------
    >>> h = content_hashes(table)                                     # doctest: +SKIP
    """
    combined = np.zeros(table.num_rows, dtype=np.uint64)
    for name in columns:
        column = _array(table.column(name))
        if pa.types.is_list(column.type):
            column = _array(_joined(column))
        if pa.types.is_timestamp(column.type) or pa.types.is_duration(column.type):
            column = column.cast(pa.int64())
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            hashed = pd.util.hash_array(column.to_numpy(zero_copy_only=False), categorize=True)
        else:  # integers and booleans; nulls get a value of their own
            zero = pa.scalar(0 if pa.types.is_integer(column.type) else False, column.type)
            hashed = pd.util.hash_array(pc.fill_null(column, zero).to_numpy(zero_copy_only=False))
            hashed[_mask(pc.is_null(column))] = np.uint64(0x9E3779B97F4A7C15)
        combined = combined * np.uint64(1_000_003) ^ hashed
    return combined
