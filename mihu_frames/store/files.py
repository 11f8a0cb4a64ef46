"""The data files of a root's Delta tables: written by pyarrow, committed as Delta actions.

delta-rs's writer (``write_deltalake``, ``DeltaTable.merge``) encodes through DataFusion, one
partition after another, and a MERGE rewrites every file of the partitions it reads: measured
with 1,000,000 sessions, a first write took 4.3x and a MERGE of 1% changed at random 5.0x
``pyarrow.parquet.write_to_dataset`` of the same rows. The write path therefore writes its
files with pyarrow's Parquet writer, several at once (the encoder releases the GIL), copies on
write only the files that hold a changed session, and commits with delta-rs's own transaction
API (``DeltaTable.create_write_transaction``): ``add`` actions carrying the statistics Delta
readers skip files by (the columns of ``delta.dataSkippingStatsColumns``), and ``remove``
actions for the files replaced. The commit, its conflict checks and the log stay delta-rs's.

:class:`Files` is one table's file system (pyarrow's own for a local root: faster than
delta-rs's handler, whose threads can abort the interpreter at exit when a dataset outlives
it), the files holding given sessions (:meth:`Files.holding`, :func:`is_in`: a 64-bit key per
canonical uuid, read from the Arrow buffers, before any string is compared) and what is
written to it (dictionary encoding only for the string columns that repeat).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, RemoveAction

from mihu_frames.store.layout import _CONFIG

__all__ = ["STATS_COLUMNS", "WORKERS", "Files", "Holding", "Written", "groups", "is_in", "removal"]

#: The columns whose minimum, maximum and null count each ``add`` action records.
STATS_COLUMNS = tuple(_CONFIG["delta.dataSkippingStatsColumns"].split(","))
#: Files encoded at once.
WORKERS = 4
_RUNS_PER_VALUE = 64  # more runs than this per value: regroup the rows (see groups)
_MS = 1000  # microseconds in a millisecond: Delta's statistics hold timestamps in ms


@dataclass
class Holding:
    """Files found holding values (:meth:`Files.holding`): their fragments, in the dataset's
    order, each one's row count and first value (to check the order of a scan of them)."""

    fragments: list[ds.FileFragment] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    firsts: list[Any] = field(default_factory=list)
    found: list[np.ndarray] = field(default_factory=list)

    def positions(self) -> np.ndarray:
        """Where the values looked for are in the files' rows, the files one after another."""
        return np.flatnonzero(np.concatenate(self.found)) if self.found else np.zeros(0, int)

    def homes(self) -> np.ndarray:
        """For each of the files' rows (one file after another), the index of its file."""
        return np.repeat(np.arange(len(self.rows)), self.rows)


@dataclass
class Written:
    """Files a write put in a table, as the actions that commit them."""

    adds: list[AddAction] = field(default_factory=list)
    removes: list[RemoveAction] = field(default_factory=list)

    @property
    def actions(self) -> list[AddAction | RemoveAction]:
        """What one commit holds."""
        return [*self.removes, *self.adds]

    @property
    def sizes(self) -> dict[str, int]:
        """The paths added, with their sizes."""
        return {a.path: a.size for a in self.adds}

    def at(self, base: str) -> dict[str, int]:
        """The files added, as URIs under the table ``base``, with their sizes."""
        return {f"{base}/{path}": size for path, size in self.sizes.items()}


class Files:
    """The data files of the table at ``uri`` (``local``: its folder on this machine)."""

    def __init__(
        self, uri: str, local: Path | None, storage_options: dict[str, str] | None
    ) -> None:
        self.uri = uri
        self.filesystem: pafs.FileSystem = (
            pafs.SubTreeFileSystem(str(local), pafs.LocalFileSystem())
            if local is not None
            else pafs.PyFileSystem(DeltaStorageHandler(uri, storage_options or None))
        )
        self.local = local

    def dataset(self, table: DeltaTable) -> ds.Dataset:
        """``table`` (this table at some version) as an Arrow dataset read through
        :attr:`filesystem`."""
        if self.local is None:
            return table.to_pyarrow_dataset()
        return table.to_pyarrow_dataset(filesystem=self.filesystem)

    def holding(self, dataset: ds.Dataset, column: str, values: pa.ChunkedArray) -> Holding:
        """The files of ``dataset`` whose ``column`` holds one of ``values``: each file's
        column read on its own (several at once), then looked up in one pass (:func:`is_in`)."""
        fragments = list(dataset.get_fragments())
        if not fragments:
            return Holding()
        with ThreadPoolExecutor(min(WORKERS, len(fragments))) as pool:
            keys = list(
                pool.map(lambda f: _keyed(f.to_table(columns=[column]).column(column)), fragments)
            )
        found = is_in(keys, _keyed(values))
        ends = np.cumsum([len(k[0]) for k in keys])
        holding = Holding()
        for fragment, (values_read, _), end in zip(fragments, keys, ends, strict=True):
            mine = found[end - len(values_read) : end]
            if mine.any():
                holding.fragments.append(fragment)
                holding.firsts.append(values_read[0].as_py())
                holding.rows.append(len(values_read))
                holding.found.append(mine)
        return holding

    def read(self, dataset: ds.Dataset, holding: Holding, column: str) -> pa.Table:
        """Every row of the files ``holding`` names (partition column included), one file
        after another, in one scan of them (decoded by Arrow's own threads)."""
        if not holding.fragments:
            return dataset.schema.empty_table()
        fragments = cast("list[ds.Fragment]", holding.fragments)
        file_format = cast("ds.FileSystemDataset", dataset).format
        chosen = ds.FileSystemDataset(fragments, dataset.schema, file_format, self.filesystem)
        table = chosen.to_table()
        starts = np.r_[0, np.cumsum(holding.rows)[:-1]]
        if (
            table.num_rows != sum(holding.rows)
            or [table.column(column)[int(i)].as_py() for i in starts] != holding.firsts
        ):  # not in the files' order: read them one by one
            parts = [f.to_table(schema=dataset.schema) for f in holding.fragments]
            table = pa.concat_tables(parts)
        return table

    def write(self, rows: pa.Table, partition: str) -> list[AddAction]:
        """Write ``rows`` (a Delta table's columns, ``partition`` among them): one file per
        partition value, several at once. Returns their ``add`` actions."""
        if rows.num_rows == 0:
            return []
        return self.write_parts(groups(rows, partition), partition)

    def write_parts(self, parts: list[tuple[pa.Table, str]], partition: str) -> list[AddAction]:
        """One file for each of ``parts`` (rows with ``partition``, and its value), several at
        once. Files written before one fails are removed."""
        if not parts:
            return []
        with ThreadPoolExecutor(min(WORKERS, len(parts))) as pool:
            futures = [
                pool.submit(self.write_one, rows.drop_columns([partition]), partition, value)
                for rows, value in parts
            ]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            self.delete(f.result().path for f in futures if f.exception() is None)
            raise errors[0]  # type: ignore[misc]
        return [f.result() for f in futures]

    def write_one(self, rows: pa.Table, partition: str, value: str) -> AddAction:
        """One data file of partition ``partition=value`` holding ``rows`` (without the
        partition column). Rows are not sorted: a month's file is one row group, so sorting
        would buy no skipping, and it cost more than writing."""
        path = f"{partition}={value}/part-{uuid.uuid4()}.snappy.parquet"
        if self.local is not None:  # owner-only folders (personal data)
            self.local.mkdir(mode=0o700, exist_ok=True)
            (self.local / f"{partition}={value}").mkdir(mode=0o700, exist_ok=True)
        try:
            with self.filesystem.open_output_stream(path) as sink:  # closed even on failure
                encoded: Any = _dictionary(rows.schema)  # the stubs take a bool only
                bounded: Any = [n for n in rows.schema.names if n not in _NO_STATISTICS]
                pq.write_table(
                    rows,
                    sink,
                    compression="snappy",
                    use_dictionary=encoded,
                    write_statistics=bounded,
                )
                size = sink.tell()
        except BaseException:  # a full disk, an interrupt: no partial file left behind
            self.delete([path])
            raise
        return AddAction(
            path=path,
            size=int(size),
            partition_values={partition: value},
            modification_time=int(time.time() * 1000),
            data_change=True,
            stats=_stats(rows),
        )

    def delete(self, paths: Iterable[str]) -> None:
        """Remove files a commit that failed wrote (compaction removes any left over)."""
        for path in paths:
            with contextlib.suppress(OSError):
                self.filesystem.delete_file(path)


def groups(rows: pa.Table, column: str) -> list[tuple[pa.Table, str]]:
    """``rows`` split by the value of ``column`` (each part keeps the rows' order), with it.

    Rows usually come in runs of one value (a frame in time order, a sync's fetch month):
    then each part is the runs of its value, zero-copy; otherwise the rows are regrouped by
    one ``take`` (a copy of every row, costly on fresh memory).
    """
    if rows.num_rows == 0:
        return []
    values = rows.column(column).combine_chunks()
    differs = pc.not_equal(values.slice(1), values.slice(0, len(values) - 1))
    starts = np.r_[0, np.flatnonzero(differs.to_numpy(zero_copy_only=False)) + 1]
    ends = np.r_[starts[1:], len(values)]
    names = [str(v) for v in values.take(starts).to_pylist()]
    runs: dict[str, list[pa.Table]] = {}
    if len(starts) > _RUNS_PER_VALUE * (len(set(names)) + 1):  # interleaved: regroup
        encoded = cast(pa.DictionaryArray, pc.dictionary_encode(values))
        return groups(rows.take(np.argsort(encoded.indices.to_numpy(), kind="stable")), column)
    for name, start, end in zip(names, starts.tolist(), ends.tolist(), strict=True):
        runs.setdefault(name, []).append(rows.slice(start, end - start))
    return [(pa.concat_tables(parts), name) for name, parts in runs.items()]


def removal(path: str, size: int, partition_values: dict[str, str | None]) -> RemoveAction:
    """The ``remove`` action of a data file a copy on write replaced."""
    return RemoveAction(
        path=path,
        data_change=True,
        deletion_timestamp=int(time.time() * 1000),
        size=size,
        partition_values=partition_values,
    )


def _dictionary(schema: pa.Schema) -> list[str]:
    """The columns worth dictionary encoding: strings that repeat (not ``uuid`` or ``summary``,
    nearly unique, nor timestamps). Trying a dictionary on every column cost a third of the
    writing time."""
    return [
        f.name
        for f in schema
        if f.name not in _UNIQUE and (pa.types.is_string(f.type) or pa.types.is_list(f.type))
    ]


def _stats(rows: pa.Table) -> str:
    """A data file's statistics as Delta records them: rows, and for :data:`STATS_COLUMNS`
    the minimum, maximum (timestamps widened to whole milliseconds, so no row falls outside)
    and null count."""
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in STATS_COLUMNS:
        if name not in rows.schema.names:
            continue
        column = rows.column(name)
        nulls[name] = column.null_count
        if column.null_count == len(column):
            continue
        bounds = pc.min_max(column)
        least, most = bounds["min"], bounds["max"]
        if pa.types.is_timestamp(column.type):
            low[name] = _iso(least.cast(pa.int64()).as_py() // _MS)
            high[name] = _iso(-(-most.cast(pa.int64()).as_py() // _MS))
        else:
            low[name], high[name] = least.as_py(), most.as_py()
    return json.dumps(
        {"numRecords": rows.num_rows, "minValues": low, "maxValues": high, "nullCount": nulls},
        separators=(",", ":"),
    )


def _iso(ms: int) -> str:
    """Milliseconds since the epoch as Delta's statistics write an instant (ISO, UTC)."""
    seconds, millis = divmod(ms, 1000)
    moment = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{millis:03d}Z"


_Keyed = tuple[pa.ChunkedArray, "np.ndarray | None"]
_UUID_LENGTH = 36
_UNIQUE = ("uuid", "summary")
#: Columns no reader filters on by range: no Parquet statistics (their minimum and maximum of
#: long texts cost a sixth of the writing time).
_NO_STATISTICS = frozenset(
    {"summary", "extra", "task_uuids", "contact_name", "contact_surname"}
    | {"contact_phone_number", "contact_email"}
)
_BITMAP_BITS = 27
_BITMAP = 1 << _BITMAP_BITS


def _keyed(values: pa.ChunkedArray | pa.Array) -> _Keyed:
    """``values`` with a 64-bit key of each, when every value is a string of a canonical
    UUID's length (None otherwise): its bytes 0-7 and 9-16 (16 hex digits) folded, read
    straight from the Arrow buffers (no per-value Python)."""
    chunked = values if isinstance(values, pa.ChunkedArray) else pa.chunked_array([values])
    parts = []
    for chunk in chunked.chunks:
        if chunk.null_count or not pa.types.is_string(chunk.type):
            return chunked, None
        buffers = cast("list[Any]", chunk.buffers())  # a string array: validity, offsets, data
        offsets = np.frombuffer(buffers[1], dtype=np.int32)
        offsets = offsets[chunk.offset : chunk.offset + len(chunk) + 1]
        if not (np.diff(offsets) == _UUID_LENGTH).all():
            return chunked, None
        data = np.frombuffer(buffers[2], dtype=np.uint8)
        rows = data[offsets[0] : offsets[-1]].reshape(-1, _UUID_LENGTH)
        head = np.ascontiguousarray(rows[:, 0:8]).view(np.uint64).ravel()
        tail = np.ascontiguousarray(rows[:, 9:17]).view(np.uint64).ravel()
        parts.append(head ^ (tail * np.uint64(0x9E3779B97F4A7C15)))
    return chunked, np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def is_in(haystacks: list[_Keyed], needles: _Keyed) -> np.ndarray:
    """For every value of ``haystacks`` (in order): is it one of ``needles``? Keyed values
    are matched by key in a hash table of the needles' keys first, and only those whose key
    matches are compared as strings: 9,000,000 uuids against 1,000,000 in a fraction of the
    time of a hash set of strings."""
    together = pa.chunked_array(
        [c for values, _ in haystacks for c in values.chunks], type=needles[0].type
    )
    keys = [k for _, k in haystacks]
    if needles[1] is None or any(k is None for k in keys):
        return np.asarray(pc.is_in(together, value_set=needles[0]).to_numpy(), dtype=bool)
    haystack = np.concatenate(cast("list[np.ndarray]", keys))
    # a bitmap of the needles' keys first (2**27 bits: about 1% false hits for a million),
    # then a hash table for the few keys it lets through
    bitmap = np.zeros(_BITMAP >> 3, dtype=np.uint8)
    slots = needles[1] >> np.uint64(64 - _BITMAP_BITS)
    np.bitwise_or.at(
        bitmap, slots >> np.uint64(3), np.uint8(1) << (slots & np.uint64(7)).astype(np.uint8)
    )
    probes = haystack >> np.uint64(64 - _BITMAP_BITS)
    maybe = np.flatnonzero(
        (bitmap[probes >> np.uint64(3)] >> (probes & np.uint64(7)).astype(np.uint8)) & 1
    )
    at = maybe[np.asarray(pd.Index(haystack[maybe]).isin(needles[1]))]
    found = np.zeros(len(together), dtype=bool)
    if len(at):
        exact = pc.is_in(together.take(at), value_set=needles[0])
        found[at] = np.asarray(exact.to_numpy(zero_copy_only=False), dtype=bool)
    return found
