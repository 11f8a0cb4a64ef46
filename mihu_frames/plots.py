"""Quick matplotlib views of a sessions frame: durations, activity over time, weekly profile.

matplotlib is an optional dependency (``pip install mihu_frames[plot]``); it is imported inside
each function, so ``import mihu_frames`` works without it. Every function draws into the Axes
it is given (or a new figure's Axes), sets a title and axis labels, and returns that Axes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from mihu_frames.stats import (
    ACTIVITY_COLUMNS,
    WEEKDAYS,
    By,
    _normalize_by,
    activity,
    hourly_profile,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_activity", "plot_durations", "plot_hourly"]

#: Durations spanning at least this ratio (max / min positive) get a log axis by default.
LOG_SPAN = 100.0
_UNITS: tuple[tuple[str, float], ...] = (("seconds", 1.0), ("minutes", 60.0), ("hours", 3600.0))


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


def plot_durations(
    df: pd.DataFrame,
    by: By = None,
    *,
    kind: Literal["hist", "box"] = "hist",
    ax: Axes | None = None,
    log: bool | None = None,
) -> Axes:
    """Distribution of the durations of ended sessions, overall or per group.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (column ``duration``; open sessions, whose duration is null, are left
        out).
    by : str or list of str, optional
        Column(s) to split by: one histogram outline or one box per group.
    kind : {"hist", "box"}, default "hist"
        Histogram (sessions per duration bin) or box plot (duration per group).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made when omitted.
    log : bool, optional
        Log-scaled duration axis. By default it is chosen automatically: on when the positive
        durations span at least two orders of magnitude (max / min >= 100). On a log axis,
        zero and negative durations cannot be shown and are left out.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn into. Durations are shown in seconds, minutes or hours, whichever suits
        the median duration; the unit is in the axis label.

    Examples
    --------
    >>> ax = plot_durations(df, by="type", kind="box")   # doctest: +SKIP
    >>> ax.figure.savefig("durations.png")              # doctest: +SKIP
    """
    if kind not in ("hist", "box"):
        raise ValueError(f"plot_durations: kind must be 'hist' or 'box', got {kind!r}")
    keys = _normalize_by(df, by, "plot_durations")
    if "duration" not in df.columns:
        raise ValueError("plot_durations: not a sessions frame, missing column 'duration'")
    ax = _axes(ax, (8, 4.5))

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
    if log:
        groups = [(label, values[values > 0]) for label, values in groups]
    groups = [(label, values / scale) for label, values in groups]
    labels = [label for label, _ in groups]
    data = [values for _, values in groups]
    title = "Session durations" + (f" by {', '.join(map(str, keys))}" if keys else "")
    axis_label = f"duration ({unit})"

    if not any(values.size for values in data):
        ax.text(0.5, 0.5, "no ended sessions", ha="center", va="center", transform=ax.transAxes)
    elif kind == "hist":
        everything = np.concatenate(data)
        if log:
            bins = np.geomspace(everything.min(), everything.max() * 1.0001, 41)
        else:
            bins = np.histogram_bin_edges(everything, bins=40)
        if keys is None:
            ax.hist(data[0], bins=bins, color="C0", edgecolor="white", linewidth=0.5)
        else:
            ax.hist(data, bins=bins, histtype="step", linewidth=1.5, label=labels)
            ax.legend(title=", ".join(map(str, keys)), fontsize="small")
    else:
        ax.boxplot(data, showfliers=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=30 if len(labels) > 4 else 0)
    if kind == "hist":
        ax.set_xlabel(axis_label)
        ax.set_ylabel("sessions")
        if log:
            ax.set_xscale("log")
    else:
        ax.set_ylabel(axis_label)
        ax.set_xlabel(", ".join(map(str, keys)) if keys else "")
        if log:
            ax.set_yscale("log")
    ax.set_title(title)
    return ax


def _is_activity(frame: pd.DataFrame) -> bool:
    return all(c in frame.columns for c in ACTIVITY_COLUMNS) and "started_at" not in frame.columns


def plot_activity(
    df_or_activity: pd.DataFrame,
    freq: str = "1D",
    tz: str = "UTC",
    *,
    ax: Axes | None = None,
) -> Axes:
    """Sessions started per bucket (bars) and peak concurrency (line, right-hand axis).

    Parameters
    ----------
    df_or_activity : pandas.DataFrame
        A sessions frame, or the output of :func:`mihu_frames.activity` for one group (a
        ``DatetimeIndex``; select a group of a ``by=`` result first, e.g. ``act.loc[key]``).
    freq : str, default "1D"
        Bucket frequency when a sessions frame is given (see :func:`mihu_frames.activity`);
        for an activity table it sets only the width of the last bar when there is one bucket.
    tz : str, default "UTC"
        Time zone of the buckets and of the date axis (an activity table keeps its own).
    ax : matplotlib.axes.Axes, optional
        Axes to draw into; a new figure is made when omitted. The concurrency line goes on a
        twin Axes sharing its x axis.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes with the bars (the twin is ``ax.right_ax``).

    Examples
    --------
    >>> ax = plot_activity(df, "1h", tz="Europe/Istanbul")   # doctest: +SKIP
    >>> ax = plot_activity(activity(df, "1D"))                # doctest: +SKIP
    """
    _pyplot()
    import matplotlib.dates as mdates

    given_activity = _is_activity(df_or_activity)
    if given_activity:
        table = df_or_activity
        if not isinstance(table.index, pd.DatetimeIndex):
            raise ValueError(
                "plot_activity: expected one group's activity with a DatetimeIndex; "
                "select a group first, e.g. act.loc[key]"
            )
        if table.index.tz is not None:
            tz = table.index.tz
    else:
        table = activity(df_or_activity, freq, tz=tz)
    ax = _axes(ax, (10, 4.5))
    twin = ax.twinx()
    ax.right_ax = twin  # type: ignore[attr-defined]

    index = table.index
    if len(index):
        if len(index) >= 2 and given_activity:
            last_edge = index[-1] + (index[-1] - index[-2])
        else:
            last_edge = index[-1] + to_offset(freq)
        edges = mdates.date2num(index.append(pd.DatetimeIndex([last_edge])).to_pydatetime())
        widths = np.diff(edges)
        ax.bar(
            edges[:-1],
            table["started"].to_numpy(),
            width=widths * 0.9,
            align="edge",
            color="C0",
            label="sessions started",
        )
        twin.plot(
            edges[:-1] + widths / 2,
            table["peak_concurrent"].to_numpy(),
            color="C1",
            marker="o",
            markersize=3,
            label="peak concurrent",
        )
        locator = mdates.AutoDateLocator(tz=tz)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    else:
        ax.text(0.5, 0.5, "no sessions", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(bottom=0)
    twin.set_ylim(bottom=0)
    ax.set_ylabel("sessions started")
    twin.set_ylabel("peak concurrent sessions")
    ax.set_xlabel(f"bucket start ({tz})")
    title = "Sessions started and peak concurrency"
    ax.set_title(title if given_activity else f"{title} per {freq}")
    handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, loc="upper left", fontsize="small")
    return ax


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
    frame = df_or_profile
    is_profile = frame.shape == (7, 24) and list(frame.index) == list(WEEKDAYS)
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
    ax.figure.colorbar(image, ax=ax, label="sessions started")
    ax.set_yticks(range(7), [day[:3] for day in WEEKDAYS])
    ax.set_xticks(range(24), [str(hour) for hour in range(24)], fontsize="small")
    ax.set_xlabel(f"hour of day ({tz})")
    ax.set_ylabel("weekday")
    ax.set_title(f"Sessions started by weekday and hour ({tz})")
    return ax
