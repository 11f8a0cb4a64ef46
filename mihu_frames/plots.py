"""Quick matplotlib views of a sessions frame: durations, activity over time, weekly profile.

matplotlib is an optional dependency (``pip install mihu_frames[plot]``); it is imported inside
each function, so ``import mihu_frames`` works without it. Every function draws into the Axes
it is given (or a new figure's Axes), sets a title and axis labels in words (``per day``,
``per week (Mon–Sun)``), and returns that Axes. Counts get integer ticks.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pandas as pd
from pandas.tseries.offsets import BaseOffset

from mihu_frames.engines import activity, backend_of, compute, hourly_profile, is_frame
from mihu_frames.engines.backends import Backend
from mihu_frames.engines.boxes import MAX_FLIERS, Boxes, bounded, box_stats
from mihu_frames.schema import UUID_RE
from mihu_frames.stats import (
    ACTIVITY_COLUMNS,
    WEEKDAYS,
    By,
    _bucket_layout,
    _freq_words,
    _normalize_by,
    _sides,
    _table_buckets,
    _TableBuckets,
    _to_offset,
    check_tz,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_activity", "plot_durations", "plot_hourly"]

#: Durations spanning at least this ratio (max / min positive) get a log axis by default.
LOG_SPAN = 100.0
#: plot_activity regroups into coarser buckets above this many bars (its max_bars default).
MAX_BARS = 120
#: Bucket lengths plot_activity may regroup into, finest first.
REGROUP_FREQS: tuple[str, ...] = (
    "1min",
    "5min",
    "15min",
    "30min",
    "1h",
    "2h",
    "3h",
    "6h",
    "12h",
    "D",
    "W",
    "MS",
    "QS",
    "YS",
)
_UNITS: tuple[tuple[str, float], ...] = (("seconds", 1.0), ("minutes", 60.0), ("hours", 3600.0))
_PARTIAL_ALPHA = 0.4
_PARTIAL_STYLE: dict[str, Any] = {
    "facecolor": "0.85",
    "edgecolor": "0.55",
    "hatch": "///",
    "linewidth": 0,
    "zorder": 0,
}


def _pyplot() -> Any:
    """Import ``matplotlib.pyplot`` or explain how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "mihu_frames plots need matplotlib: pip install mihu_frames[plot]"
        ) from exc
    return plt


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _fig, new_ax = _pyplot().subplots(figsize=figsize)
    return new_ax


def _integer_ticks(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _plain_log_ticks(axis: Any) -> None:
    """Log-axis labels as plain numbers (``0.1``, ``1``, ``10``), not ``10^-1``: a duration
    axis is read in its unit."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))


def _duration_unit(seconds: np.ndarray) -> tuple[str, float]:
    """Seconds below two minutes (median), minutes below two hours, else hours."""
    if seconds.size == 0:
        return _UNITS[1]
    median = float(np.median(np.abs(seconds)))
    if median < 120:
        return _UNITS[0]
    if median < 7200:
        return _UNITS[1]
    return _UNITS[2]


def _label(key: object) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return " / ".join("(missing)" if pd.isna(part) else str(part) for part in parts)


def _short_labels(labels: Sequence[str]) -> tuple[list[str], bool]:
    """UUIDs shortened to their first 8 characters (more where two would look the same);
    other labels as they are. Returns the labels and whether any was shortened."""
    parts = [label.split(" / ") for label in labels]
    uuids = {p for label in parts for p in label if UUID_RE.fullmatch(p)}
    if not uuids:
        return list(labels), False
    length = 8
    while len({u[:length] for u in uuids}) < len(uuids):
        length += 1
    short = [
        " / ".join(p[:length] if UUID_RE.fullmatch(p) else p for p in label) for label in parts
    ]
    return short, True


def plot_durations(
    df: pd.DataFrame,
    by: By = None,
    *,
    kind: Literal["hist", "box"] = "hist",
    ax: Axes | None = None,
    log: bool | None = None,
    density: bool = False,
) -> Axes:
    """Distribution of the durations of ended sessions, overall or per group.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (column ``duration``; open sessions, whose duration is null, are left
        out).
    by : str or list of str, optional
        Column(s) to split by: one histogram outline or one box per group. UUID keys are shown
        by their first 8 characters (more if two would look the same); the legend gives each
        group's number of sessions.
    kind : {"hist", "box"}, default "hist"
        Histogram (sessions per duration bin) or box plot (duration per group).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made when omitted.
    log : bool, optional
        Log-scaled duration axis. By default it is chosen automatically: on when the positive
        durations span at least two orders of magnitude (max / min >= 100). On a log axis,
        zero and negative durations cannot be shown: they are left out, counted in the
        title ("3 sessions of zero length not shown") and in a ``UserWarning``.
    density : bool, default False
        Histogram only: draw each group's *share* of its sessions per bin (each outline sums to
        1) instead of counts, so a group of 100 sessions can be compared with one of 10,000.
        Shares, not matplotlib's ``density`` (count / bin width), because bins are
        logarithmic on a log axis and a per-width density there would mislead. The y label
        says which is drawn.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn into. Durations are shown in seconds, minutes or hours, whichever suits
        the median duration; the unit is in the axis label.

    Examples
    --------
    >>> ax = plot_durations(df, by="type", kind="box")        # doctest: +SKIP
    >>> ax = plot_durations(df, by="agent_uuid", density=True)  # doctest: +SKIP
    >>> ax.figure.savefig("durations.png")                    # doctest: +SKIP
    """
    if kind not in ("hist", "box"):
        raise ValueError(f"plot_durations: kind must be 'hist' or 'box', got {kind!r}")
    if not is_frame(df):  # drawn from counts the engine computes: no session in memory
        return _durations_elsewhere(df, by, kind=kind, ax=ax, log=log, density=density)
    keys = _normalize_by(df, by, "plot_durations")
    if "duration" not in df.columns:
        raise ValueError("plot_durations: not a sessions frame, missing column 'duration'")
    ax = _axes(ax, (8, 4.5))
    durations = _frame_durations(df, keys, log)
    if kind == "hist":
        return _durations_hist(ax, durations, density)
    return _durations_box(ax, durations)


@dataclass
class _Durations:
    """A sessions frame's durations as plot_durations draws them: per group, in ``unit``."""

    keys: list[Any] | None
    labels: list[str]  # shortened group labels
    data: list[np.ndarray]  # each group's durations in ``unit``, zeros left out on a log axis
    unit: str
    log: bool
    title: str
    group_label: str  # the axis/legend title of the groups


def _frame_durations(df: pd.DataFrame, keys: list[Any] | None, log: bool | None) -> _Durations:
    """The groups, unit, scale and title of ``df``'s ended sessions' durations; warns of the
    sessions a log axis cannot show."""
    ended = df[df["duration"].notna()]
    seconds_all = ended["duration"].dt.total_seconds().to_numpy(dtype=np.float64)
    if keys is None:
        groups = [("all sessions", seconds_all)]
    else:
        grouped = ended.groupby(keys, observed=True, dropna=False, sort=True)["duration"]
        groups = [
            (_label(key), values.dt.total_seconds().to_numpy(dtype=np.float64))
            for key, values in grouped
        ]
    positive = seconds_all[seconds_all > 0]
    if log is None:
        log = bool(positive.size) and positive.max() / positive.min() >= LOG_SPAN
    unit, scale = _duration_unit(seconds_all)
    hidden = 0
    if log:
        hidden = int((seconds_all <= 0).sum())
        groups = [(label, values[values > 0]) for label, values in groups]
    labels, shortened = _short_labels([label for label, _ in groups])
    key_names = ", ".join(map(str, keys)) if keys else ""
    title = _durations_title(keys)
    if hidden:
        note = _hidden_note(hidden, negative=bool((seconds_all < 0).any()))
        title += f"\n({note})"
        warnings.warn(f"plot_durations: {note}", UserWarning, stacklevel=3)
    return _Durations(
        keys=keys,
        labels=labels,
        data=[values / scale for _, values in groups],
        unit=unit,
        log=bool(log),
        title=title,
        group_label=key_names + (" (first characters)" if shortened else ""),
    )


def _durations_title(keys: list[Any] | None) -> str:
    return "Session durations" + (f" by {', '.join(map(str, keys))}" if keys else "")


def _hidden_note(hidden: int, *, negative: bool) -> str:
    """A log axis has no place for a zero (or negative) duration: say how many are not drawn."""
    length = "zero or negative length" if negative else "zero length"
    return f"{hidden:,} session{'s' * (hidden != 1)} of {length} not shown (log axis)"


def _no_ended_sessions(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no ended sessions", ha="center", va="center", transform=ax.transAxes)


def _durations_hist(ax: Axes, d: _Durations, density: bool) -> Axes:
    """``kind="hist"``: one histogram, or one outline per group with a legend."""
    if not any(values.size for values in d.data):
        _no_ended_sessions(ax)
    else:
        everything = np.concatenate(d.data)
        if d.log:
            bins = np.geomspace(everything.min(), everything.max() * 1.0001, 41)
        else:
            bins = np.histogram_bin_edges(everything, bins=40)
        weights = (
            [np.full(v.size, 1 / v.size) if v.size else None for v in d.data] if density else None
        )
        sized = None
        if d.keys is not None:
            sized = [
                f"{label} (n={values.size:,})"
                for label, values in zip(d.labels, d.data, strict=True)
            ]
        _draw_hist(ax, d.data, bins, weights, sized, d.group_label)
    _hist_axes(ax, d.unit, d.keys, density=density, log=d.log)
    ax.set_title(d.title)
    return ax


def _draw_hist(
    ax: Axes,
    values: list[np.ndarray],
    bins: np.ndarray,
    weights: list[Any] | None,
    sized: list[str] | None,
    group_label: str,
) -> None:
    """One filled histogram (``sized`` None), or one outline per group, legend in group order."""
    edges = cast(Any, bins)  # an array of edges, which matplotlib takes
    if sized is None:
        first = None if weights is None else weights[0]
        ax.hist(values[0], bins=edges, weights=first, color="C0", edgecolor="white", linewidth=0.5)
        return
    ax.hist(
        values,
        bins=edges,
        weights=cast(Any, weights),
        histtype="step",
        linewidth=1.5,
        label=sized,
    )
    handles, names = ax.get_legend_handles_labels()
    order = [names.index(name) for name in sized]  # group order, not drawing order
    ax.legend([handles[i] for i in order], sized, title=group_label, fontsize="small")


def _hist_axes(ax: Axes, unit: str, keys: list[Any] | None, *, density: bool, log: bool) -> None:
    """A durations histogram's axis labels and scales."""
    ax.set_xlabel(f"duration ({unit})")
    if density:
        ax.set_ylabel("share of sessions" + (" in each group" if keys else "") + " per bin")
    else:
        ax.set_ylabel("sessions")
        _integer_ticks(ax.yaxis)
    if log:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)


def _durations_box(ax: Axes, d: _Durations) -> Axes:
    """``kind="box"`` of a frame: matplotlib's box statistics of each group (``whis=1.5``),
    fliers bounded as on an engine (:func:`mihu_frames.engines.boxes.bounded`)."""
    boxes = None
    if any(values.size for values in d.data):
        from matplotlib import cbook

        stats = cbook.boxplot_stats(d.data)
        boxes = Boxes(
            stats=[bounded(box) for box in stats],
            counts=np.array([values.size for values in d.data], dtype=np.int64),
            fliers=np.array([np.size(box["fliers"]) for box in stats], dtype=np.int64),
            keys=[None] * len(stats),
        )
    return _draw_boxes(
        ax, boxes, d.labels, unit=d.unit, group_label=d.group_label, log=d.log, title=d.title
    )


def _draw_boxes(
    ax: Axes,
    boxes: Boxes | None,
    labels: list[str],
    *,
    unit: str,
    group_label: str,
    log: bool,
    title: str,
) -> Axes:
    """One box per group (``Axes.bxp`` of the computed statistics, None: no ended sessions),
    labelled with its number of sessions; the title says when fliers were thinned."""
    if boxes is None:
        _no_ended_sessions(ax)
    else:
        ax.bxp(boxes.stats, showfliers=True)
        rotate = len(labels) > 6 or max(len(label) for label in labels) > 12
        size = "small" if len(labels) > 12 else None
        sep = " " if rotate else "\n"
        sized = [f"{label}{sep}(n={n:,})" for label, n in zip(labels, boxes.counts, strict=True)]
        ax.set_xticks(range(1, len(labels) + 1), sized)
        if rotate:
            # Anchor each rotated label's end under its box.
            for tick in ax.get_xticklabels():
                tick.set(rotation=30, ha="right", rotation_mode="anchor", fontsize=size)
        if boxes.thinned:
            drawn = sum(np.size(box["fliers"]) for box in boxes.stats)
            title += (
                f"\n({drawn:,} of {int(boxes.fliers.sum()):,} outliers drawn: at most "
                f"{MAX_FLIERS:,} per side of a box, evenly spaced by rank)"
            )
    ax.set_ylabel(f"duration ({unit})")
    ax.set_xlabel(group_label)
    if log:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
    ax.set_title(title)
    return ax


def _durations_elsewhere(
    source: Any, by: By, *, kind: str, ax: Axes | None, log: bool | None, density: bool
) -> Axes:
    """:func:`plot_durations` of a root, Polars, DuckDB or Spark source: the same figure, from
    per-bin counts or per-group box statistics computed by the engine."""
    backend = backend_of(source, "plot_durations")
    summary = compute.duration_summary(backend, by)
    keys = None if by is None else ([by] if isinstance(by, str) else list(by))
    ax = _axes(ax, (8, 4.5))
    if log is None:
        log = bool(np.isfinite(summary.low_positive)) and (
            summary.high / summary.low_positive >= LOG_SPAN
        )
    median = summary.median_seconds
    unit, scale = _duration_unit(np.array([] if np.isnan(median) else [median]))
    hidden = summary.non_positive if log else 0
    title = _durations_title(keys)
    if hidden:
        note = _hidden_note(hidden, negative=bool(summary.negative))
        title += f"\n({note})"
        warnings.warn(f"plot_durations: {note}", UserWarning, stacklevel=3)
    low = summary.low_positive if log else summary.low
    empty = not summary.counts.sum() or np.isnan(low)
    if kind == "box":
        boxes = None if empty else box_stats(backend, by, scale=scale, positive=bool(log))
        labels, group_label = _group_labels(boxes, keys)
        return _draw_boxes(
            ax, boxes, labels, unit=unit, group_label=group_label, log=bool(log), title=title
        )
    if empty:
        _no_ended_sessions(ax)
    else:
        _counted_hist(ax, backend, by, summary, keys, scale=scale, log=bool(log), density=density)
    _hist_axes(ax, unit, keys, density=density, log=bool(log))
    ax.set_title(title)
    return ax


def _group_labels(boxes: Boxes | None, keys: list[Any] | None) -> tuple[list[str], str]:
    """The boxes' labels (UUIDs shortened) and the title of the group axis."""
    if keys is None:
        return ["all sessions"], ""
    labels, shortened = _short_labels([_label(k) for k in boxes.keys] if boxes else [])
    return labels, ", ".join(map(str, keys)) + (" (first characters)" if shortened else "")


def _counted_hist(
    ax: Axes,
    backend: Backend,
    by: By,
    summary: compute.DurationSummary,
    keys: list[Any] | None,
    *,
    scale: float,
    log: bool,
    density: bool,
) -> None:
    """The histogram of a source's durations, from the engine's counts per bin (each count
    drawn as the weight of its bin's left edge)."""
    low = summary.low_positive if log else summary.low
    low, high = low / scale, summary.high / scale
    if log:
        bins = np.geomspace(low, high * 1.0001, 41)
    else:
        bins = np.histogram_bin_edges(np.array([low, high]), bins=40)
    counts = compute.duration_histogram(backend, by, bins, scale, log)
    sizes = counts.sum(axis=1)
    weights = [c / n if density and n else c for c, n in zip(counts, sizes, strict=True)]
    lefts = [bins[:-1]] * len(weights)
    sized, group_label = None, ""
    if keys is not None:
        labels, shortened = _short_labels([_label(k) for k in summary.labels])
        sized = [f"{label} (n={n:,})" for label, n in zip(labels, sizes, strict=True)]
        group_label = ", ".join(map(str, keys)) + (" (first characters)" if shortened else "")
    _draw_hist(ax, lefts, bins, weights, sized, group_label)


def _is_activity(frame: Any) -> bool:
    if not isinstance(frame, pd.DataFrame):
        return False
    return all(c in frame.columns for c in ACTIVITY_COLUMNS) and "started_at" not in frame.columns


def _nominal(offset: BaseOffset) -> pd.Timedelta:
    """Rough length of a bucket, to rank bucket lengths (a month is 31 days here)."""
    origin = pd.Timestamp("2001-01-01")
    return (origin + offset) - origin


def _coarser(offset: BaseOffset) -> list[BaseOffset]:
    length = _nominal(offset)
    return [o for o in map(_to_offset, REGROUP_FREQS) if _nominal(o) > length]


def _regroup_table(
    table: pd.DataFrame, buckets: _TableBuckets, max_bars: int
) -> pd.DataFrame | None:
    """An activity table in the first coarser bucket length whose buckets are whole unions of
    the table's (so sums and maxima stay exact) and that fits ``max_bars``; None if none."""
    tz = _index_tz(table)
    lo, hi = int(buckets.start[0]), int(buckets.end[-1]) - 1
    for offset in _coarser(buckets.offset):
        closed, label = _sides(offset, None, None)
        coarse = _bucket_layout(lo, hi, offset, tz, closed, label)
        first, last = coarse.of(buckets.start), coarse.of(buckets.end - 1)
        if (first != last).any() or last[-1] - first[0] + 1 > max_bars:
            continue
        cells = first - first[0]
        runs = np.flatnonzero(np.concatenate(([True], cells[1:] != cells[:-1])))
        started = np.bincount(cells, weights=table["started"].to_numpy(), minlength=cells[-1] + 1)
        peak = np.zeros(cells[-1] + 1, dtype=np.int64)
        peak[cells[runs]] = np.maximum.reduceat(table["peak_concurrent"].to_numpy(), runs)
        labels = pd.to_datetime(coarse.labels[first[0] : last[-1] + 1], unit="us", utc=True)
        regrouped = pd.DataFrame(
            {"started": started.astype(np.int64), "peak_concurrent": peak},
            index=pd.DatetimeIndex(labels, name="bucket").tz_convert(tz),
        )
        regrouped.attrs["activity"] = {
            "freq": offset.freqstr,
            "tz": str(tz),
            "closed": closed,
            "label": label,
            "fetched_at": buckets.fetched_at,
        }
        return regrouped
    return None


def _readable(
    df: pd.DataFrame | None, table: pd.DataFrame, buckets: _TableBuckets, max_bars: int
) -> tuple[pd.DataFrame, _TableBuckets]:
    """Coarser buckets when ``table`` has more than ``max_bars`` rows: recomputed from the
    sessions frame ``df`` when there is one, else regrouped from the table."""
    if df is not None:
        coarse = table
        for offset in _coarser(buckets.offset):
            coarse = activity(df, offset, tz=_index_tz(table))
            if len(coarse) <= max_bars:
                break
        return coarse, _table_buckets(coarse)
    regrouped = _regroup_table(table, buckets, max_bars)
    if regrouped is None:
        return table, buckets
    return regrouped, _table_buckets(regrouped)


def plot_activity(
    df_or_activity: pd.DataFrame,
    freq: str | BaseOffset | None = None,
    tz: str = "UTC",
    *,
    ax: Axes | None = None,
    max_bars: int | None = MAX_BARS,
) -> Axes:
    """Sessions started per bucket (bars) and peak concurrency (steps, right-hand axis).

    Each bar covers its bucket (a ``W`` week from Monday to Sunday, whatever its label). A
    bucket that ends after the data was last fetched was only partly observed: its bar is
    hatched and lighter, with a legend entry, so a half-finished day does not read as a drop.

    Parameters
    ----------
    df_or_activity : pandas.DataFrame
        A sessions frame, or the output of :func:`mihu_frames.activity` for one group (a
        ``DatetimeIndex``; select a group of a ``by=`` result first, e.g. ``act.loc[key]``).
    freq : str or DateOffset, optional
        Bucket length for a sessions frame (default ``"1D"``; see
        :func:`mihu_frames.activity`). An activity table keeps its own, from its ``attrs``
        (else ``freq``, else inferred from its index).
    tz : str, default "UTC"
        Time zone of the buckets and of the date axis (an activity table keeps its own).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made when omitted. The concurrency line goes on a
        twin Axes sharing its x axis.
    max_bars : int or None, default 120
        With more buckets than this, bars would merge into a solid block: the plot uses the
        first coarser length in ``REGROUP_FREQS`` (hours, days, weeks, months …) that gives
        at most ``max_bars``, and says so in its title. Peaks are then per coarser bucket
        (recomputed from a sessions frame; from a table, the maximum of its buckets, done only
        where its buckets nest exactly). ``None`` always draws the buckets asked for.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes with the bars (the twin is ``ax.right_ax``).

    Examples
    --------
    >>> ax = plot_activity(df, "1h", tz="Europe/Istanbul")   # doctest: +SKIP
    >>> ax = plot_activity(activity(df, "W"))                 # doctest: +SKIP
    """
    _pyplot()
    check_tz(tz, "plot_activity")
    table, sessions, tz = _activity_table(df_or_activity, freq, tz)
    # A table that lost its attrs and is too short to infer from is read as daily, as before.
    buckets = _table_buckets(table, freq or (None if len(table) >= 3 else "1D"))
    asked, asked_rows = buckets.offset, len(table)
    if max_bars is not None and len(table) > max_bars:
        table, buckets = _readable(sessions, table, buckets, max_bars)

    ax = _axes(ax, (10, 4.5))
    twin = ax.twinx()
    ax.right_ax = twin  # type: ignore[attr-defined]
    words = _freq_words(buckets.offset, buckets.closed)
    title = f"Sessions started and peak concurrency per {words}"
    if buckets.offset != asked:
        title += (
            f"\n(regrouped from {asked_rows:,} buckets per {_freq_words(asked)}, "
            f"too many to read as bars)"
        )
    if len(table):
        _draw_activity(ax, twin, table, buckets, tz)
    else:
        ax.text(0.5, 0.5, "no sessions", ha="center", va="center", transform=ax.transAxes)
        ax.set_ylim(bottom=0)
        twin.set_ylim(bottom=0)
    _integer_ticks(ax.yaxis)
    _integer_ticks(twin.yaxis)
    ax.set_ylabel("sessions started")
    twin.set_ylabel("peak concurrent sessions")
    ax.set_xlabel(f"time ({tz})")
    ax.set_title(title)
    return ax


def _activity_table(
    df_or_activity: pd.DataFrame, freq: str | BaseOffset | None, tz: str
) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """The activity table to draw, the sessions frame it came from (None: a table was given)
    and the time zone it is in (a table keeps its own)."""
    if not _is_activity(df_or_activity):
        return activity(df_or_activity, freq or "1D", tz=tz), df_or_activity, tz
    table = df_or_activity
    if not isinstance(table.index, pd.DatetimeIndex):
        raise ValueError(
            "plot_activity: expected one group's activity with a DatetimeIndex; "
            "select a group first, e.g. act.loc[key]"
        )
    if table.index.tz is None:
        table = table.tz_localize(tz)
    return table, None, str(_index_tz(table))


def _index_tz(table: pd.DataFrame) -> tzinfo | None:
    """The time zone of an activity table's ``DatetimeIndex``."""
    index = table.index
    if not isinstance(index, pd.DatetimeIndex):
        raise TypeError(f"an activity table has a DatetimeIndex, not {type(index).__name__}")
    return index.tz


def _draw_activity(
    ax: Axes, twin: Axes, table: pd.DataFrame, buckets: _TableBuckets, tz: str
) -> None:
    """The bars (partial buckets shaded), the concurrency steps, the legend and the date axis."""
    import matplotlib.dates as mdates

    edges = np.append(buckets.start, buckets.end[-1])
    x = mdates.date2num(pd.to_datetime(edges, unit="us", utc=True).to_pydatetime())
    widths = np.diff(x)
    started = table["started"].to_numpy()
    bars = ax.bar(
        x[:-1], started, width=widths * 0.9, align="edge", color="C0", label="sessions started"
    )
    partial = buckets.partial
    # A partial bucket is shaded over its whole height (its bar may be tiny or empty) and
    # its bar drawn lighter, so it does not read as a real drop.
    for bar in np.asarray(bars.patches, dtype=object)[partial]:
        bar.set(alpha=_PARTIAL_ALPHA)
    for left, right in zip(x[:-1][partial], x[1:][partial], strict=True):
        ax.fill_between([left, right], 0, 1, transform=ax.get_xaxis_transform(), **_PARTIAL_STYLE)
    peak = table["peak_concurrent"].to_numpy()
    twin.plot(
        x[:-1] + widths / 2,
        peak,
        color="C1",
        drawstyle="steps-mid",
        marker="o" if len(table) <= 60 else None,
        markersize=3,
        label="peak concurrent",
    )
    handles = [bars, twin.get_lines()[0], *_partial_handle(buckets, tz)]
    # Head room so the legend sits above the bars and the line.
    ax.set_ylim(0, max(1, started.max()) * 1.3)
    twin.set_ylim(0, max(1, peak.max()) * 1.3)
    ax.legend(handles=handles, loc="upper left", fontsize="small", ncols=len(handles))
    locator = mdates.AutoDateLocator(tz=tz)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))


def _partial_handle(buckets: _TableBuckets, tz: str) -> list[Any]:
    """The legend entry of the partial buckets, when there are some and the fetch time is known."""
    from matplotlib.patches import Patch

    if not buckets.partial.any() or buckets.fetched_at is None:
        return []
    fetched = buckets.fetched_at.tz_convert(tz)
    return [
        Patch(**_PARTIAL_STYLE, label=f"partial bucket (data fetched {fetched:%Y-%m-%d %H:%M})")
    ]


def plot_hourly(
    df_or_profile: pd.DataFrame,
    tz: str = "UTC",
    *,
    ax: Axes | None = None,
) -> Axes:
    """Heat map of sessions started per weekday (rows) and hour of day (columns).

    Parameters
    ----------
    df_or_profile : pandas.DataFrame
        A sessions frame, or the 7 x 24 output of :func:`mihu_frames.hourly_profile`.
    tz : str, default "UTC"
        Time zone for weekday and hour when a sessions frame is given (named in the title).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made when omitted. A colorbar is added beside it.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes holding the heat map.

    Examples
    --------
    >>> ax = plot_hourly(df, tz="Europe/Istanbul")   # doctest: +SKIP
    """
    _pyplot()
    check_tz(tz, "plot_hourly")
    frame = df_or_profile
    is_profile = (
        isinstance(frame, pd.DataFrame)
        and frame.shape == (7, 24)
        and list(frame.index) == list(WEEKDAYS)
    )
    profile = frame if is_profile else hourly_profile(frame, tz=tz)
    tz = profile.attrs.get("tz", tz) if is_profile else tz
    ax = _axes(ax, (10, 4))
    image = ax.imshow(
        profile.to_numpy(dtype=np.float64),
        aspect="auto",
        cmap="viridis",
        interpolation="nearest",
        vmin=0,
    )
    colorbar = ax.figure.colorbar(image, ax=ax, label="sessions started")
    _integer_ticks(colorbar.ax.yaxis)
    ax.set_yticks(range(7), [day[:3] for day in WEEKDAYS])
    ax.set_xticks(range(24), [str(hour) for hour in range(24)], fontsize="small")
    ax.set_xlabel(f"hour of day ({tz})")
    ax.set_ylabel("weekday")
    ax.set_title(f"Sessions started by weekday and hour ({tz})")
    return ax
