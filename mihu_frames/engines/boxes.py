"""Box-plot statistics of session durations, computed where the sessions are (one SQL query).

What ``plot_durations(source, kind="box")`` draws, per group, as
:func:`matplotlib.cbook.boxplot_stats` computes it on a pandas frame (``whis=1.5``):

- quartiles and median: numpy's default (linear) percentile. The query ranks each group's
  durations (``ROW_NUMBER``), picks the two order statistics around ``q * (n - 1)`` and
  interpolates them with numpy's own formula (``a + (b - a) * t``, or ``b - (b - a) * (1 - t)``
  for ``t >= 0.5``): IEEE double arithmetic, so the same value to the last bit;
- whiskers: the most extreme durations within ``1.5 * IQR`` of the box (the box edge when
  there is none); fliers: the durations outside the whiskers;
- fliers are bounded: each side of a box (below, above) keeps at most :data:`MAX_FLIERS`, the
  ones at evenly spaced ranks (:func:`spaced`, the same rule in SQL and in numpy), so the
  smallest and the largest are always drawn and the cloud keeps its shape. Only those rows
  leave the engine: a plot of 10M sessions collects a few numbers per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.engines.backends import Backend, Dialect
from mihu_frames.engines.compute import _check, _groups, _ints, _key_sql
from mihu_frames.stats import By

__all__ = ["MAX_FLIERS", "WHIS", "Boxes", "bounded", "box_stats", "spaced"]

#: Fliers drawn at most per side of a box; more are thinned to evenly spaced ranks.
MAX_FLIERS = 1000
#: Whisker reach in IQRs (matplotlib's default ``whis``).
WHIS = 1.5
_QUARTERS = (1, 2, 3)  # q1, median, q3 as quarters


@dataclass(frozen=True)
class Boxes:
    """Box statistics per group, in group order, ready for :meth:`matplotlib.axes.Axes.bxp`.

    ``stats`` holds one dict per group with the keys of :func:`matplotlib.cbook.boxplot_stats`
    that ``bxp`` draws (``med``, ``q1``, ``q3``, ``iqr``, ``whislo``, ``whishi``, ``cilo``,
    ``cihi``, ``fliers``; not ``mean``); ``fliers`` there is at most :data:`MAX_FLIERS` per side.
    """

    stats: list[dict[str, Any]]
    counts: np.ndarray  # durations per group
    fliers: np.ndarray  # fliers per group, all of them (drawn: see ``stats``)
    keys: list[Any]  # each group's key, as ``groupby`` gives it (one group: [None])

    @property
    def thinned(self) -> bool:
        """Whether some box draws fewer fliers than it has."""
        drawn = np.array([np.size(s["fliers"]) for s in self.stats], dtype=np.int64)
        return bool((drawn < self.fliers).any())


def spaced(values: np.ndarray, limit: int = MAX_FLIERS) -> np.ndarray:
    """``values`` (sorted) if at most ``limit``, else ``limit`` of them at evenly spaced ranks:
    rank ``f`` of ``m`` is kept where ``f * (limit - 1) // (m - 1)`` first reaches a new value,
    so the first and the last are kept."""
    m = values.size
    if m <= limit:
        return values
    step = np.arange(m, dtype=np.int64) * (limit - 1) // (m - 1)
    return values[np.concatenate(([True], step[1:] > step[:-1]))]


def _lerp(d: Dialect, quarter: int) -> str:
    """numpy's linear percentile at ``quarter / 4`` of ranks ``rk`` among ``n`` values."""
    lo = d.div(f"{quarter} * (n - 1)", "4")
    t = f"(CAST(({quarter} * (n - 1)) % 4 AS DOUBLE) / CAST(4 AS DOUBLE))"
    a = f"MAX(CASE WHEN k = 1 AND rk = {lo} THEN x END) OVER w"
    b = f"MAX(CASE WHEN k = 1 AND rk = LEAST({lo} + 1, n - 1) THEN x END) OVER w"
    return (
        f"CASE WHEN {t} >= 0.5 THEN ({b}) - (({b}) - ({a})) * (1 - {t}) "
        f"ELSE ({a}) + (({b}) - ({a})) * {t} END"
    )


def _boxes_sql(d: Dialect, keys: list[str] | None, scale: float, positive: bool) -> str:
    """Per group one row (``kind`` 0: n, quartiles, whiskers), then its drawn fliers
    (``kind`` 1: ``x``, its ``side``, ``fm`` fliers on that side)."""
    selected, names = _key_sql(d, keys)
    part = f"PARTITION BY {', '.join(names)}" if names else ""
    head = "".join(f"{n}, " for n in names)
    # pandas' total_seconds: whole seconds (floored) plus the residual's fraction, then / scale
    us = f"({d.micros('ended_at')} - {d.micros('started_at')})"
    whole = (
        f"(CASE WHEN {us} >= 0 THEN {d.div(us, '1000000')} "
        f"ELSE -{d.div(f'999999 - {us}', '1000000')} END)"
    )
    x = (
        f"(CAST({whole} AS DOUBLE) + CAST({us} - {whole} * 1000000 AS DOUBLE) "
        f"/ CAST(1000000 AS DOUBLE)) / CAST({float(scale)!r} AS DOUBLE)"
    )
    keep = "CASE WHEN x > 0 THEN 1 ELSE 0 END" if positive else "1"
    whis = f"CAST({WHIS!r} AS DOUBLE)"
    limit = MAX_FLIERS - 1
    fm1 = "(fm - 1)"
    window = f" WINDOW w AS ({part})"
    ctes = [
        f"v AS (SELECT {head}x, {keep} AS k FROM (SELECT {', '.join([*selected, f'{x} AS x'])} "
        "FROM {src}) AS a WHERE x IS NOT NULL)",
        f"r AS (SELECT {head}x, k, ROW_NUMBER() OVER ({part} ORDER BY x) AS r0, "
        f"COUNT(*) OVER w AS m, SUM(k) OVER w AS n FROM v{window})",
        f"p AS (SELECT {head}x, k, r0, n, "
        + ", ".join(f"{_lerp(d, q)} AS q{q}" for q in _QUARTERS)
        + f" FROM (SELECT *, r0 - 1 - (m - n) AS rk FROM r) AS rr{window})",
        f"e AS (SELECT *, MAX(CASE WHEN k = 1 AND x <= q3 + {whis} * (q3 - q1) THEN x END) "
        f"OVER w AS wh, MIN(CASE WHEN k = 1 AND x >= q1 - {whis} * (q3 - q1) THEN x END) "
        f"OVER w AS wl FROM p{window})",
        "f AS (SELECT *, CASE WHEN wh IS NULL OR wh < q3 THEN q3 ELSE wh END AS whishi, "
        "CASE WHEN wl IS NULL OR wl > q1 THEN q1 ELSE wl END AS whislo FROM e)",
        f"o AS (SELECT {head}x, CASE WHEN x < whislo THEN 0 ELSE 1 END AS side FROM f "
        "WHERE k = 1 AND (x < whislo OR x > whishi))",
        f"t AS (SELECT {head}x, side, "
        f"ROW_NUMBER() OVER (PARTITION BY {head}side ORDER BY x) - 1 AS fr, "
        f"COUNT(*) OVER (PARTITION BY {head}side) AS fm FROM o)",
    ]
    sample = (
        f"fm <= {MAX_FLIERS} OR fr = 0 OR "
        f"{d.div(f'fr * {limit}', fm1)} > {d.div(f'(fr - 1) * {limit}', fm1)}"
    )
    stats = "n, q1, q2, q3, whislo, whishi"
    nulls = "0, NULL, NULL, NULL, NULL, NULL"
    return (
        f"WITH {', '.join(ctes)} "
        f"SELECT 0 AS kind, {head}{stats}, CAST(NULL AS DOUBLE) AS x, 0 AS side, 0 AS fm "
        f"FROM f WHERE r0 = 1 UNION ALL "
        f"SELECT 1 AS kind, {head}{nulls}, x, side, fm FROM t WHERE {sample}"
    )


def _floats(table: pa.Table, name: str) -> np.ndarray:
    values = table.column(name).cast(pa.float64())
    return np.asarray(pc.fill_null(values, pa.scalar(np.nan, pa.float64())))


def _box(row: dict[str, float], n: int, fliers: np.ndarray) -> dict[str, Any]:
    """One group's stats as ``boxplot_stats`` gives them (an empty group: all NaN)."""
    if n == 0:
        nan = np.nan
        names = ("med", "q1", "q3", "iqr", "cilo", "cihi", "whislo", "whishi")
        return {"fliers": np.array([]), **dict.fromkeys(names, nan)}
    med, q1, q3 = row["q2"], row["q1"], row["q3"]
    iqr = q3 - q1
    return {
        "med": med,
        "q1": q1,
        "q3": q3,
        "iqr": iqr,
        "cilo": med - 1.57 * iqr / np.sqrt(n),
        "cihi": med + 1.57 * iqr / np.sqrt(n),
        "whislo": row["whislo"],
        "whishi": row["whishi"],
        "fliers": fliers,
    }


def box_stats(backend: Backend, by: By, *, scale: float, positive: bool) -> Boxes:
    """Box statistics of ``ended_at - started_at`` in seconds / ``scale`` per group (only the
    durations above zero when ``positive``: a log axis), computed by ``backend``."""
    keys = _check(backend, ("started_at", "ended_at"), by, "plot_durations")
    table = backend.run(_boxes_sql(backend.dialect, keys, scale, positive))
    codes, index, _ = _groups(table, keys)
    ngroups = len(index)
    kind = _ints(table, "kind")
    counts = np.zeros(ngroups, dtype=np.int64)
    counts[codes[kind == 0]] = _ints(table, "n")[kind == 0]
    columns = {name: _floats(table, name) for name in ("q1", "q2", "q3", "whislo", "whishi")}
    xs, fm = _floats(table, "x"), _ints(table, "fm")
    rows: dict[int, dict[str, float]] = {}
    for i in np.flatnonzero(kind == 0):
        rows[int(codes[i])] = {name: float(values[i]) for name, values in columns.items()}
    totals = np.zeros(ngroups, dtype=np.int64)
    side = _ints(table, "side")
    stats = []
    for g in range(ngroups):
        mine = (kind == 1) & (codes == g)
        for s in (0, 1):  # each side's total is on every drawn flier of that side
            on_side = mine & (side == s)
            totals[g] += int(fm[on_side].max()) if on_side.any() else 0
        stats.append(_box(rows.get(g, {}), int(counts[g]), np.sort(xs[mine])))
    labels = list(index) if keys is not None else [None] * ngroups
    return Boxes(stats=stats, counts=counts, fliers=totals, keys=labels)


def bounded(stats: dict[str, Any], limit: int = MAX_FLIERS) -> dict[str, Any]:
    """``boxplot_stats`` output with each side's fliers thinned by :func:`spaced` (sorted) when
    it has more than ``limit``; as it was (fliers in their order) otherwise."""
    fliers = np.asarray(stats["fliers"])
    low, high = fliers[fliers < stats["whislo"]], fliers[fliers > stats["whishi"]]
    if low.size <= limit and high.size <= limit:
        return stats
    thinned = [spaced(np.sort(side), limit) for side in (low, high)]
    return {**stats, "fliers": np.concatenate(thinned)}
