"""The statistics of :mod:`mihu_frames.stats`, defined once as SQL for every engine.

Each statistic is one or two SQL queries over ``{src}`` (written with the few spellings of
:class:`~mihu_frames.engines.backends.Dialect` that differ between DuckDB and Spark) that
reduce the sessions to small tables: one row per group, per (group, bucket), or per
quarter-hour. Python then finishes them into exactly the frames the pandas path returns,
with the same helpers (:mod:`mihu_frames.stats`): the same bucket layout (pandas' resample
bins, laid out by pandas in the bucket time zone, so DST is pandas'), labels, group order and
dtypes. No engine converts a time zone or interpolates a quantile of its own:

- instants are read as int64 microseconds (``epoch_us``/``unix_micros``); durations are
  ``ended_at - started_at`` (as the frame defines ``duration``), whatever a store keeps;
- buckets: fixed lengths by integer arithmetic from the first edge; calendar buckets by an
  equi-join on ``(t - e0) // w`` with a small table of cells of width ``w`` (the shortest
  bucket), each holding at most one edge;
- ``peak_concurrent``: a running sum of +1/-1 events per (group, bucket) in time order (a
  ``RANGE`` window, so all events of one instant count together), plus the level at each
  bucket's start, summed from the buckets before it;
- hourly profile: starts counted per UTC quarter-hour (per minute in a zone whose offsets are
  not whole quarter-hours), each quarter-hour placed on the local weekday and hour by pandas;
- quantiles: the engine's linear interpolation (``quantile_cont``/``percentile``, the same
  formula as numpy's default) rounded half to even to the microsecond, as the pandas path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.tseries.offsets import BaseOffset

from mihu_frames.engines.backends import Backend, Dialect
from mihu_frames.schema import CATEGORIES, SESSIONS_SCHEMA, UNTAGGED, types_mapper
from mihu_frames.stats import (
    WEEKDAYS,
    By,
    SessionStats,
    Side,
    _activity_frame,
    _activity_index,
    _bucket_layout,
    _Buckets,
    _empty_activity,
    _group_codes,
    _is_fixed,
    _round_div,
    _sides,
    _timestamps,
    _to_offset,
    check_tz,
)

__all__ = ["activity", "hourly_profile", "overview", "session_stats"]

logger = logging.getLogger("mihu_frames")

_NAT = np.iinfo(np.int64).min
_TD_DTYPE = np.dtype("timedelta64[us]")
_QUANTILES = (0.5, 0.9)
#: Added to instants before a quarter-hour division so that it never meets a negative value.
_QUARTER = 15 * 60 * 1_000_000
_SHIFT = _QUARTER * 100_000_000


# --------------------------------------------------------------------------- shared parts


def _check(backend: Backend, needed: Sequence[str], by: By, func: str) -> list[str] | None:
    """The ``by`` keys as a list (None: no grouping), after checking the source's columns."""
    columns = backend.columns()
    keys: list[str] | None = None
    if by is not None:
        keys = [by] if isinstance(by, str) else list(by)
        if not keys:
            raise ValueError(f"{func}: by= is an empty list; pass None for no grouping")
        missing = [k for k in keys if k not in columns]
        if missing:
            raise ValueError(
                f"{func}: by= column(s) {missing} not in {backend.described}; columns are {columns}"
            )
    missing = [c for c in needed if c not in columns]
    if missing:
        raise ValueError(
            f"{func}: {backend.described} is not a sessions frame, missing columns {missing}"
        )
    return keys


def _key_sql(d: Dialect, keys: list[str] | None) -> tuple[list[str], list[str]]:
    """(select items ``"agent_uuid" AS g0``, bare names ``g0``) of the group keys."""
    if not keys:
        return [], []
    names = [f"g{i}" for i in range(len(keys))]
    return [f"{d.quote(k)} AS {n}" for k, n in zip(keys, names, strict=True)], names


def _key_column(name: str, values: pa.ChunkedArray | pa.Array) -> pd.Series:
    """A group key as the pandas frame holds it: schema dtypes, tags as their categories."""
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    if name in CATEGORIES and (pa.types.is_string(values.type) or values.null_count == len(values)):
        categories = CATEGORIES[name]
        codes = pc.index_in(values.cast(pa.string()), value_set=pa.array(categories))
        untagged = pc.equal(values.cast(pa.string()), pa.scalar(UNTAGGED))
        unknown = pc.and_(pc.is_null(codes), pc.is_valid(values))
        if not pc.any(pc.and_(unknown, pc.invert(untagged))).as_py():
            filled = pc.fill_null(codes, pa.scalar(categories.index(UNTAGGED), codes.type))
            return pd.Series(
                pd.Categorical.from_codes(
                    np.asarray(filled, dtype=np.int32),  # index_in's codes are int32
                    categories=pd.Index(list(categories)),
                )
            )
    if name in SESSIONS_SCHEMA.names:
        with contextlib.suppress(pa.ArrowInvalid, pa.ArrowNotImplementedError):
            values = values.cast(SESSIONS_SCHEMA.field(name).type)
    return pd.Series(values.to_pandas(types_mapper=types_mapper, coerce_temporal_nanoseconds=False))


def _groups(
    table: pa.Table, keys: list[str] | None
) -> tuple[np.ndarray, pd.Index, list[Hashable] | None]:
    """Each result row's group position and the groups' index, as ``groupby`` orders them."""
    if keys is None:
        return np.zeros(table.num_rows, dtype=np.int64), pd.RangeIndex(1), None
    frame = pd.DataFrame(
        {key: _key_column(key, table.column(f"g{i}")) for i, key in enumerate(keys)}
    )
    names: list[Hashable] = list(keys)
    codes, index = _group_codes(frame, names)
    return codes, index, names


def _ints(table: pa.Table, name: str, fill: int = 0) -> np.ndarray:
    column = table.column(name).cast(pa.int64())
    return np.asarray(pc.fill_null(column, pa.scalar(fill, pa.int64())), dtype=np.int64)


# --------------------------------------------------------------------------- session_stats

_STATS_NEEDED = (
    "started_at",
    "ended_at",
    "is_open",
    "last_activity_at",
    "task_count",
    "evaluated_at",
    "summary_generated_at",
)


def _stats_sql(d: Dialect, keys: list[str] | None) -> str:
    selected, names = _key_sql(d, keys)
    st, en = d.micros("started_at"), d.micros("ended_at")
    inner = ", ".join(
        [
            *selected,
            f"CASE WHEN {d.quote('is_open')} THEN 1 ELSE 0 END AS op",
            f"{en} - {st} AS dur",
            f"{st} AS st",
            f"{d.micros('last_activity_at')} AS la",
            f"CAST({d.quote('task_count')} AS BIGINT) AS tc",
            f"{d.quote('evaluated_at')} IS NOT NULL AS ev",
            f"{d.quote('summary_generated_at')} IS NOT NULL AS su",
        ]
    )
    outer = ", ".join(
        [
            *names,
            "COUNT(*) AS sessions",
            "SUM(op) AS open_sessions",
            "COUNT(dur) AS ended",
            "CAST(SUM(dur) AS BIGINT) AS total",
            "MAX(dur) AS maximum",
            f"{d.quantile_list('dur', _QUANTILES)} AS q",
            "MIN(st) AS first_started",
            "MAX(la) AS last_activity",
            "CAST(SUM(tc) AS BIGINT) AS task_sum",
            "COUNT(tc) AS task_n",
            "SUM(CASE WHEN ev THEN 1 ELSE 0 END) AS evaluated",
            "SUM(CASE WHEN su THEN 1 ELSE 0 END) AS summarized",
        ]
    )
    group = f" GROUP BY {', '.join(names)}" if names else ""
    return f"SELECT {outer} FROM (SELECT {inner} FROM {{src}}) AS s{group}"


def _rint(values: np.ndarray) -> np.ndarray:
    return np.rint(values).astype(np.int64)


def session_stats(backend: Backend, by: By = None) -> SessionStats:
    """:func:`mihu_frames.stats.session_stats` computed by ``backend``."""
    keys = _check(backend, _STATS_NEEDED, by, "session_stats")
    table = backend.run(_stats_sql(backend.dialect, keys))
    if keys is None and (table.num_rows == 0 or _ints(table, "sessions")[0] == 0):
        table = table.slice(0, 0)
    codes, index, _ = _groups(table, keys)
    if keys is None:
        index = pd.RangeIndex(table.num_rows)
    n = len(index)
    order = np.empty(n, dtype=np.int64)
    order[codes] = np.arange(n)

    def col(name: str, fill: int = _NAT) -> np.ndarray:
        return _ints(table, name, fill)[order]

    sessions = col("sessions", 0)
    ended = col("ended", 0)
    some = ended > 0
    total = np.where(some, col("total", 0), _NAT)
    mean = np.full(n, _NAT, dtype=np.int64)
    mean[some] = _round_div(total[some], ended[some])
    quantiles = table.column("q")
    median = np.full(n, _NAT, dtype=np.int64)
    p90 = median.copy()
    if n:
        counts = pc.list_value_length(quantiles)
        lengths = np.asarray(pc.fill_null(counts, pa.scalar(0, counts.type)), dtype=np.int64)
        flat = pc.list_flatten(quantiles).cast(pa.float64())
        values = np.asarray(pc.fill_null(flat, pa.scalar(np.nan, pa.float64())), dtype=np.float64)
        starts = (np.cumsum(lengths) - lengths)[order]
        median[some] = _rint(values[starts[some]])
        p90[some] = _rint(values[starts[some] + 1])
    task_sum = col("task_sum", 0).astype(np.float64)
    task_n = col("task_n", 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        tasks_per_session = task_sum / task_n
        evaluated_share = col("evaluated", 0) / sessions
        summarized_share = col("summarized", 0) / sessions
    return SessionStats(
        {
            "sessions": sessions,
            "open_sessions": col("open_sessions", 0),
            "total_duration": total.view(_TD_DTYPE),
            "mean_duration": mean.view(_TD_DTYPE),
            "median_duration": median.view(_TD_DTYPE),
            "p90_duration": p90.view(_TD_DTYPE),
            "max_duration": np.where(some, col("maximum"), _NAT).view(_TD_DTYPE),
            "first_started_at": _timestamps(col("first_started")),
            "last_activity_at": _timestamps(col("last_activity")),
            "tasks_per_session": tasks_per_session.astype(np.float64),
            "evaluated_share": evaluated_share.astype(np.float64),
            "summarized_share": summarized_share.astype(np.float64),
        },
        index=index,
    )


# --------------------------------------------------------------------------- activity

_ACTIVITY_NEEDED = ("started_at", "ended_at", "fetched_at")


def _sessions_sql(d: Dialect, selected: list[str]) -> str:
    """One row per session with a start: keys, ``st``, ``en``, ``e`` (its end), ``occ``
    (occupies time), ``lo``/``hi`` (its first and last instant that must land in a bucket)."""
    st, en, fe = d.micros("started_at"), d.micros("ended_at"), d.micros("fetched_at")
    base = ", ".join([*selected, f"{st} AS st", f"{en} AS en", f"{fe} AS fe"])
    return (
        "SELECT *, CASE WHEN e IS NOT NULL AND e > st THEN 1 ELSE 0 END AS occ, "
        "CASE WHEN en IS NOT NULL AND en < st THEN en ELSE st END AS lo, "
        "CASE WHEN e IS NOT NULL AND e > st AND e - 1 > hi0 THEN e - 1 ELSE hi0 END AS hi "
        "FROM (SELECT *, CASE WHEN en IS NOT NULL THEN en ELSE fe END AS e, "
        "CASE WHEN en IS NOT NULL AND en > st THEN en ELSE st END AS hi0 "
        f"FROM (SELECT {base} FROM {{src}} WHERE {d.quote('started_at')} IS NOT NULL) AS a) AS b"
    )


def _range_sql(d: Dialect, keys: list[str] | None) -> str:
    """Per group: sessions with a start, their first and last instant, the last fetch."""
    selected, names = _key_sql(d, keys)
    st, en, fe = d.micros("started_at"), d.micros("ended_at"), d.micros("fetched_at")
    inner = ", ".join([*selected, f"{st} AS st", f"{en} AS en", f"{fe} AS fe"])
    e = "CASE WHEN en IS NOT NULL THEN en ELSE fe END"
    lo = "CASE WHEN en IS NOT NULL AND en < st THEN en ELSE st END"
    hi0 = "CASE WHEN en IS NOT NULL AND en > st THEN en ELSE st END"
    hi = (
        f"CASE WHEN ({e}) IS NOT NULL AND ({e}) > st AND ({e}) - 1 > {hi0} "
        f"THEN ({e}) - 1 ELSE {hi0} END"
    )
    outer = ", ".join(
        [
            *names,
            "COUNT(st) AS started",
            f"MIN(CASE WHEN st IS NOT NULL THEN {lo} END) AS lo",
            f"MAX(CASE WHEN st IS NOT NULL THEN {hi} END) AS hi",
            "MAX(fe) AS fetched",
        ]
    )
    group = f" GROUP BY {', '.join(names)}" if names else ""
    return f"SELECT {outer} FROM (SELECT {inner} FROM {{src}}) AS s{group}"


@dataclass(frozen=True)
class _Lookup:
    """How SQL finds the bucket of an instant: arithmetic for fixed lengths, else a join."""

    d: Dialect
    buckets: _Buckets
    step: int | None  # fixed bucket length in µs, or None for calendar buckets
    width: int  # calendar: the cells' width (the shortest bucket)
    cells: str  # calendar: the cells' VALUES table

    @classmethod
    def of(cls, d: Dialect, buckets: _Buckets, offset: BaseOffset) -> _Lookup:
        edges = buckets.edges
        if _is_fixed(offset):
            return cls(d, buckets, int(edges[1] - edges[0]), 0, "")
        distinct = np.unique(edges)
        width = int(np.diff(distinct).min()) if distinct.size > 1 else 1
        ncells = int((edges[-1] - edges[0]) // width) + 1
        start = edges[0] + np.arange(ncells, dtype=np.int64) * width
        b0 = buckets.of(start)
        b1 = buckets.of(start + width - 1)
        split = np.where(b1 != b0, edges[np.minimum(b1, edges.size - 1)], start + width)
        nb = edges.size - 1
        hi_edge = np.append(edges, edges[-1])  # the edge after bucket nb (never used)

        def bounds(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return edges[np.clip(b, 0, nb)], hi_edge[np.clip(b + 1, 0, nb + 1)]

        lo0, hi0 = bounds(b0)
        lo1, hi1 = bounds(b1)
        rows = np.column_stack([np.arange(ncells), split, b0, lo0, hi0, b1, lo1, hi1]).astype(
            np.int64
        )
        values = ", ".join("(" + ", ".join(map(str, row)) + ")" for row in rows.tolist())
        table = f"(SELECT * FROM (VALUES {values}) AS v(c, sp, b0, l0, h0, b1, l1, h1))"
        return cls(d, buckets, None, width, table)

    def join(self, alias: str, instant: str) -> tuple[str, str, str, str]:
        """(join clause, bucket, bucket start, bucket end) for the instant expression."""
        e0 = int(self.buckets.edges[0])
        nb = int(self.buckets.edges.size - 1)
        if self.step is not None:
            b = self.d.div(f"{instant} - {e0}", str(self.step))
            return "", b, f"({e0} + {b} * {self.step})", f"({e0} + ({b} + 1) * {self.step})"
        clause = (
            f" LEFT JOIN {self.cells} AS {alias} ON {alias}.c = "
            f"{self.d.div(f'{instant} - {e0}', str(self.width))}"
        )
        ge = f"{instant} >= {alias}.sp"
        pick = lambda a, b: f"(CASE WHEN {ge} THEN {alias}.{b} ELSE {alias}.{a} END)"  # noqa: E731
        bucket = f"COALESCE({pick('b0', 'b1')}, {nb})"
        return clause, bucket, pick("l0", "l1"), pick("h0", "h1")


def _activity_sql(d: Dialect, keys: list[str] | None, lookup: _Lookup) -> str:
    selected, names = _key_sql(d, keys)
    g = [f"{n}" for n in names]
    j_st, b_st, lo_st, hi_st = lookup.join("cs", "s.st")
    j_last, b_last, lo_last, _ = lookup.join("cl", "(s.e - 1)")
    j_e, b_e, _, _ = lookup.join("ce", "s.e")
    keys_s = [f"s.{n}" for n in names]
    located = ", ".join(
        [
            *keys_s,
            "s.st",
            "s.en",
            "s.e",
            "s.occ",
            f"{b_st} AS fb",
            f"{lo_st} AS flo",
            f"{hi_st} AS fhi",
            f"CASE WHEN s.occ = 1 THEN {b_last} END AS lb",
            f"CASE WHEN s.occ = 1 THEN {lo_last} END AS llo",
            f"CASE WHEN s.e IS NOT NULL THEN {b_e} END AS eb",
        ]
    )
    sessions = _sessions_sql(d, selected)
    head = ", ".join(g)
    sep = ", " if g else ""
    group = lambda col: f" GROUP BY {head}{sep}{col}"  # noqa: E731
    parts = [
        # 0: started per bucket
        f"SELECT {head}{sep}0 AS kind, fb AS b, COUNT(*) AS a, 0 AS x, 0 AS y, 0 AS z "
        f"FROM located{group('fb')}",
        # 1: ended per bucket (ended_at lands in the bucket of the end)
        f"SELECT {head}{sep}1 AS kind, eb AS b, COUNT(*) AS a, 0 AS x, 0 AS y, 0 AS z "
        f"FROM located WHERE en IS NOT NULL{group('eb')}",
        # 2: occupying sessions by first bucket: count, time in it, starting at its edge, multi
        f"SELECT {head}{sep}2 AS kind, fb AS b, COUNT(*) AS a, "
        "SUM(CASE WHEN lb = fb THEN e - st ELSE fhi - st END) AS x, "
        "SUM(CASE WHEN st = flo THEN 1 ELSE 0 END) AS y, "
        "SUM(CASE WHEN lb > fb THEN 1 ELSE 0 END) AS z "
        f"FROM located WHERE occ = 1{group('fb')}",
        # 3: occupying sessions by last bucket: count, time in it (multi only), multi
        f"SELECT {head}{sep}3 AS kind, lb AS b, COUNT(*) AS a, "
        "SUM(CASE WHEN lb > fb THEN e - llo ELSE 0 END) AS x, 0 AS y, "
        "SUM(CASE WHEN lb > fb THEN 1 ELSE 0 END) AS z "
        f"FROM located WHERE occ = 1{group('lb')}",
        # 4: end events of occupying sessions by the bucket of their end instant
        f"SELECT {head}{sep}4 AS kind, eb AS b, COUNT(*) AS a, 0 AS x, 0 AS y, 0 AS z "
        f"FROM located WHERE occ = 1{group('eb')}",
        # 5: the running level inside each bucket, from its first event on
        f"SELECT {head}{sep}5 AS kind, b, MAX(run) AS a, 0 AS x, 0 AS y, 0 AS z FROM ("
        f"SELECT {head}{sep}b, SUM(delta) OVER (PARTITION BY {head}{sep}b ORDER BY t) AS run "
        f"FROM (SELECT {head}{sep}fb AS b, st AS t, 1 AS delta FROM located WHERE occ = 1 "
        f"UNION ALL SELECT {head}{sep}eb AS b, e AS t, -1 AS delta FROM located WHERE occ = 1"
        f") AS ev) AS lv{group('b')}",
    ]
    body = " UNION ALL ".join(parts)
    return f"WITH located AS (SELECT {located} FROM ({sessions}) AS s{j_st}{j_last}{j_e}) {body}"


def activity(
    backend: Backend,
    freq: str | BaseOffset | pd.Timedelta = "1D",
    tz: str | object = "UTC",
    by: By = None,
    *,
    closed: Side | None = None,
    label: Side | None = None,
) -> Any:
    """:func:`mihu_frames.stats.activity` computed by ``backend``."""
    offset = _to_offset(freq)
    closed, label = _sides(offset, closed, label)
    tz = check_tz(tz, "activity")
    keys = _check(backend, _ACTIVITY_NEEDED, by, "activity")
    d = backend.dialect
    ranges = backend.run(_range_sql(d, keys))
    codes, index, _ = _groups(ranges, keys)
    if keys is None:
        index = pd.RangeIndex(1 if ranges.num_rows else 0)
    order = np.empty(len(index), dtype=np.int64)
    order[codes] = np.arange(ranges.num_rows)
    meta = _activity_meta(ranges, offset, tz, closed, label)
    key_index = index if keys is not None else None
    started_n = _ints(ranges, "started", 0)
    if ranges.num_rows == 0 or not started_n.any():
        return _empty_activity(key_index, tz, meta)
    group_lo = _ints(ranges, "lo", _NAT)[order]
    group_hi = _ints(ranges, "hi", _NAT)[order]
    present = group_hi != _NAT
    buckets = _bucket_layout(
        int(group_lo[present].min()), int(group_hi[present].max()), offset, tz, closed, label
    )
    table = backend.run(_activity_sql(d, keys, _Lookup.of(d, buckets, offset)))
    cells = _Cells.of(buckets, group_lo, group_hi, present)
    columns = _activity_columns(table, cells.rows(table, ranges, keys), cells, buckets)
    logger.debug(
        "activity on %s: %d groups, %d buckets of %s in %s",
        backend.described,
        int(present.sum()),
        cells.ncells,
        offset.freqstr,
        tz,
    )
    labels = buckets.labels[cells.cell_bucket]
    result_index = _activity_index(key_index, labels, cells.lengths, tz)
    return _activity_frame(columns, result_index, meta)


def _activity_meta(
    ranges: pa.Table, offset: BaseOffset, tz: object, closed: Side, label: Side
) -> dict[str, object]:
    """The ``attrs["activity"]`` of the result: its buckets and when the data was fetched."""
    fetched = _ints(ranges, "fetched", _NAT)
    fetched = fetched[fetched != _NAT]
    return {
        "freq": offset.freqstr,
        "tz": str(tz),
        "closed": closed,
        "label": label,
        "fetched_at": pd.Timestamp(int(fetched.max()), unit="us", tz="UTC")
        if fetched.size
        else None,
    }


@dataclass(frozen=True)
class _Cells:
    """The result's rows: for each group (in the ranges' order) its buckets from the first it
    touches to the last, one cell each, the groups one after another."""

    first: np.ndarray  # each group's first bucket
    last: np.ndarray  # each group's last bucket (-1: no bucket)
    lengths: np.ndarray  # each group's number of cells
    offsets: np.ndarray  # each group's first cell
    ncells: int
    base: np.ndarray  # cell of bucket b of group g: base[g] + b
    cell_bucket: np.ndarray  # the bucket of each cell

    @classmethod
    def of(
        cls, buckets: _Buckets, group_lo: np.ndarray, group_hi: np.ndarray, present: np.ndarray
    ) -> _Cells:
        first = np.where(present, buckets.of(np.where(present, group_lo, 0)), 0)
        last = np.where(present, buckets.of(np.where(present, group_hi, 0)), -1)
        lengths = np.where(present, last - first + 1, 0)
        offsets = np.cumsum(lengths) - lengths
        ncells = int(lengths.sum())
        cell_bucket = np.repeat(first - offsets, lengths) + np.arange(ncells)
        return cls(first, last, lengths, offsets, ncells, offsets - first, cell_bucket)

    def rows(self, table: pa.Table, ranges: pa.Table, keys: list[str] | None) -> _Rows:
        """Where each row of the activity query's result goes."""
        row_group = np.zeros(table.num_rows, dtype=np.int64)
        if keys is not None:  # group positions of the result rows, in the ranges' groups
            names = [f"g{i}" for i in range(len(keys))]
            both = pa.concat_tables(
                [
                    ranges.select(names),
                    table.select(names).cast(ranges.select(names).schema),
                ]
            )
            row_group = _groups(both, keys)[0][ranges.num_rows :]
        bucket = _ints(table, "b", -1)
        inside = (bucket >= self.first[row_group]) & (bucket <= self.last[row_group])
        cell = np.where(inside, self.base[row_group] + bucket, 0)
        return _Rows(_ints(table, "kind"), cell, inside)


@dataclass(frozen=True)
class _Rows:
    """The activity query's rows: their part (``kind``), their cell, whether it is one."""

    kind: np.ndarray
    cell: np.ndarray
    inside: np.ndarray

    def per_cell(self, table: pa.Table, k: int, column: str, ncells: int, shift: int = 0) -> Any:
        """``column`` of the rows of part ``k`` summed per cell (``ncells + 1`` long)."""
        mask = (self.kind == k) & self.inside
        out = np.zeros(ncells + 1, dtype=np.int64)
        np.add.at(out, self.cell[mask] + shift, _ints(table, column)[mask])
        return out


def _activity_columns(
    table: pa.Table, rows: _Rows, cells: _Cells, buckets: _Buckets
) -> dict[str, np.ndarray]:
    """The five activity columns per cell, from the six parts of the query's result."""
    ncells = cells.ncells

    def per_cell(k: int, column: str, shift: int = 0) -> np.ndarray:
        return rows.per_cell(table, k, column, ncells, shift)

    first_n = per_cell(2, "a")
    last_n = per_cell(3, "a")
    active = np.cumsum(first_n - np.concatenate(([0], last_n[:-1])))[:ncells]
    cover = per_cell(2, "z", 1) - per_cell(3, "z")
    width = buckets.edges[cells.cell_bucket + 1] - buckets.edges[cells.cell_bucket]
    busy = per_cell(2, "x")[:ncells] + per_cell(3, "x")[:ncells]
    busy = busy + np.cumsum(cover)[:ncells] * width
    starts_at_b0 = per_cell(2, "y")[:ncells]
    peak = active - first_n[:ncells] + starts_at_b0
    # level entering each cell: starts minus end events of the cells before, within a group
    flow = first_n[:ncells] - per_cell(4, "a")[:ncells]
    running = np.concatenate(([0], np.cumsum(flow)))
    level_in = running[:-1] - running[np.repeat(cells.offsets, cells.lengths)]
    has_events = np.zeros(ncells, dtype=bool)
    run_max = np.zeros(ncells, dtype=np.int64)
    mask = (rows.kind == 5) & rows.inside
    run_max[rows.cell[mask]] = _ints(table, "a")[mask]
    has_events[rows.cell[mask]] = True
    return {
        "started": per_cell(0, "a")[:ncells],
        "ended": per_cell(1, "a")[:ncells],
        "active_sessions": active,
        "peak_concurrent": np.where(has_events, np.maximum(peak, level_in + run_max), peak),
        "busy_time": busy,
    }


# --------------------------------------------------------------------------- hourly_profile


def _quarters_sql(d: Dialect, step: int) -> str:
    st = d.micros("started_at")
    q = d.div(f"{st} + {_SHIFT}", str(step))
    return (
        f"SELECT {q} AS q, COUNT(*) AS n FROM {{src}} "
        f"WHERE {d.quote('started_at')} IS NOT NULL GROUP BY {q}"
    )


def hourly_profile(backend: Backend, tz: str | object = "UTC") -> pd.DataFrame:
    """:func:`mihu_frames.stats.hourly_profile` computed by ``backend``."""
    tz = check_tz(tz, "hourly_profile")
    _check(backend, ("started_at",), None, "hourly_profile")
    counts = np.zeros(7 * 24, dtype=np.int64)
    for step in (_QUARTER, 60 * 1_000_000):
        table = backend.run(_quarters_sql(backend.dialect, step))
        starts = _ints(table, "q") * step - _SHIFT
        local = pd.DatetimeIndex(_timestamps(starts)).tz_convert(tz)
        offsets = np.asarray(
            (local.tz_localize(None) - pd.DatetimeIndex(_timestamps(starts)).tz_localize(None))
            // pd.Timedelta(microseconds=1)
        )
        if step != _QUARTER or not (offsets % step).any():
            break  # every local hour starts on one of these steps: each step is in one hour
    cells = np.asarray(local.day_of_week, dtype=np.int64) * 24 + np.asarray(local.hour)
    np.add.at(counts, cells, _ints(table, "n"))
    profile = pd.DataFrame(
        counts.reshape(7, 24),
        index=pd.Index(list(WEEKDAYS), name="weekday"),
        columns=pd.RangeIndex(24, name="hour"),
    )
    profile.attrs["tz"] = str(tz)
    return profile


# --------------------------------------------------------------------------- overview


def overview(backend: Backend) -> dict[str, Any]:
    """Counts and bounds the summary text needs: rows, conversations, starts, fetch, ended."""
    d = backend.dialect
    columns = backend.columns()
    conv = (
        f"COUNT(DISTINCT {d.quote('conversation_uuid')})" if "conversation_uuid" in columns else "0"
    )
    _check(backend, ("started_at", "ended_at", "fetched_at"), None, "summary_text")
    st = d.micros("started_at")
    sql = (
        f"SELECT COUNT(*) AS n, {conv} AS conversations, MIN({st}) AS first, MAX({st}) AS last, "
        f"COUNT({st}) AS started, MAX({d.micros('fetched_at')}) AS fetched, "
        f"SUM(CASE WHEN {d.quote('ended_at')} IS NOT NULL AND {st} IS NOT NULL "
        "THEN 1 ELSE 0 END) AS ended FROM {src}"
    )
    row = backend.run(sql).to_pylist()[0]
    return {k: (0 if v is None and k in ("n", "started", "ended") else v) for k, v in row.items()}


# --------------------------------------------------------------------------- durations


@dataclass(frozen=True)
class DurationSummary:
    """What a duration plot needs of the ended sessions, per group (in group order)."""

    labels: list[Any]  # group keys (None: one group)
    counts: np.ndarray  # ended sessions per group
    low: float  # smallest duration (seconds), nan when none
    high: float
    low_positive: float
    non_positive: int  # durations <= 0
    negative: bool
    median_seconds: float  # over every ended session (picks the unit)


def duration_summary(backend: Backend, by: By = None) -> DurationSummary:
    """Counts and bounds of ``ended_at - started_at`` in seconds, per group."""
    keys = _check(backend, ("started_at", "ended_at"), by, "plot_durations")
    d = backend.dialect
    selected, names = _key_sql(d, keys)
    dur = f"({d.micros('ended_at')} - {d.micros('started_at')}) / 1000000.0"
    inner = ", ".join([*selected, f"{dur} AS x"])
    group = f" GROUP BY {', '.join(names)}" if names else ""
    sql = (
        f"SELECT {', '.join([*names, 'COUNT(x) AS n', 'MIN(x) AS lo', 'MAX(x) AS hi'])}, "
        "MIN(CASE WHEN x > 0 THEN x END) AS lop, SUM(CASE WHEN x <= 0 THEN 1 ELSE 0 END) AS np_, "
        "SUM(CASE WHEN x < 0 THEN 1 ELSE 0 END) AS neg "
        f"FROM (SELECT {inner} FROM {{src}}) AS s WHERE x IS NOT NULL{group}"
    )
    table = backend.run(sql)
    median = (
        backend.run(
            f"SELECT {d.quantile_list('x', (0.5,))} AS q FROM (SELECT {dur} AS x FROM {{src}}) AS s"
        )
        .column("q")[0]
        .as_py()
    )
    codes, index, _ = _groups(table, keys)
    order = np.empty(len(index) if keys else table.num_rows, dtype=np.int64)
    order[codes] = np.arange(table.num_rows)

    def floats(name: str) -> np.ndarray:
        values = table.column(name).cast(pa.float64())
        return np.asarray(pc.fill_null(values, pa.scalar(np.nan, pa.float64())))

    lo, hi, lop = floats("lo"), floats("hi"), floats("lop")
    labels = list(index) if keys else [None] * table.num_rows
    return DurationSummary(
        labels=labels,
        counts=_ints(table, "n")[order],
        low=float(np.nanmin(lo)) if np.isfinite(lo).any() else np.nan,
        high=float(np.nanmax(hi)) if np.isfinite(hi).any() else np.nan,
        low_positive=float(np.nanmin(lop)) if np.isfinite(lop).any() else np.nan,
        non_positive=int(_ints(table, "np_").sum()),
        negative=bool(_ints(table, "neg").sum()),
        median_seconds=float(median[0]) if median and median[0] is not None else np.nan,
    )


def duration_histogram(
    backend: Backend, by: By, edges: np.ndarray, scale: float, positive: bool
) -> np.ndarray:
    """Ended sessions per (group, bin) of durations in seconds / ``scale``, binned as
    ``numpy.histogram`` bins (half-open, the last closed); shape (groups, bins)."""
    keys = _check(backend, ("started_at", "ended_at"), by, "plot_durations")
    d = backend.dialect
    selected, names = _key_sql(d, keys)
    x = f"(({d.micros('ended_at')} - {d.micros('started_at')}) / 1000000.0 / {scale!r})"
    nbins = edges.size - 1
    cases = " ".join(f"WHEN x < {float(e)!r} THEN {i}" for i, e in enumerate(edges[1:-1]))
    low = f"x <= 0 OR x < {float(edges[0])!r}" if positive else f"x < {float(edges[0])!r}"
    bin_sql = f"CASE WHEN {low} OR x > {float(edges[-1])!r} THEN -1 {cases} ELSE {nbins - 1} END"
    binned = ", ".join([*names, f"{bin_sql} AS bin"])
    values = ", ".join([*selected, f"{x} AS x"])
    sql = (
        f"SELECT {', '.join([*names, 'bin', 'COUNT(*) AS n'])} FROM (SELECT {binned} "
        f"FROM (SELECT {values} FROM {{src}}) AS a WHERE x IS NOT NULL) AS b "
        f"GROUP BY {', '.join([*names, 'bin'])}"
    )
    table = backend.run(sql)
    codes, index, _ = _groups(table, keys)
    bins = _ints(table, "bin")
    out = np.zeros((len(index) if keys else 1, nbins), dtype=np.int64)
    ok = bins >= 0
    np.add.at(out, (codes[ok], bins[ok]), _ints(table, "n")[ok])
    return out
