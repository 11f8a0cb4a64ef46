"""Session statistics on a sessions frame: durations, activity over time, weekly profile, tasks.

Everything here works on any pandas frame with the sessions columns it names (see
:mod:`mihu_frames.schema`); it knows nothing of HTTP or the API. The functions are vectorised:
timestamps are read as int64 microseconds since the epoch (UTC) and reduced with numpy (sorts,
``searchsorted``, ``bincount``, cumulative sums), so a million sessions take well under a second
per call and no Python loop runs per session or per row.

Time model used by :func:`activity`: a session occupies the half-open interval
``[started_at, end)`` where ``end`` is ``ended_at`` or, for a session still open, its row's
``fetched_at`` (the last instant it was known to be running). One session ending at the instant
another starts does not overlap it.

Buckets of :func:`activity` are the bins of pandas' ``resample`` on the same instants: the same
edges, labels and closed side for every offset (``W`` is Monday to Sunday labelled by its
Sunday, ``ME`` a month labelled by its last day, ``MS`` by its first, ``h`` counts from the
local midnight …), laid out in the bucket time zone. Internally every bucket is a half-open
``[b0, b1)`` of microseconds; a bucket pandas closes on the right, ``(b0, b1]``, is
``[b0 + 1 µs, b1 + 1 µs)``, so the time model above applies to both.

Grouping (``by=``) follows ``DataFrame.groupby(by, observed=True, dropna=False, sort=True)``:
categorical columns produce only the groups that occur, and missing keys form their own group
(so the per-group counts always add up to the frame's length).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset, Day, Tick, Week

__all__ = [
    "ActivityTable",
    "RoundedFrame",
    "SessionStats",
    "activity",
    "check_freq",
    "check_tz",
    "explode_tasks",
    "format_duration",
    "format_stats",
    "hourly_profile",
    "session_stats",
]

logger = logging.getLogger("mihu_frames")

_NAT = np.iinfo(np.int64).min
_INT64_MAX = np.iinfo(np.int64).max
_TS_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
_TD_DTYPE = np.dtype("timedelta64[us]")
_STRING_DTYPE = pd.StringDtype("pyarrow")
#: Sort keys combining a group code and a time must stay below this to fit in int64.
_KEY_LIMIT = 2**62

#: Columns of :func:`session_stats`, in order.
STATS_COLUMNS: tuple[str, ...] = (
    "sessions",
    "open_sessions",
    "total_duration",
    "mean_duration",
    "median_duration",
    "p90_duration",
    "max_duration",
    "first_started_at",
    "last_activity_at",
    "tasks_per_session",
    "evaluated_share",
    "summarized_share",
)
#: Columns of :func:`activity`, in order.
ACTIVITY_COLUMNS: tuple[str, ...] = (
    "started",
    "ended",
    "active_sessions",
    "peak_concurrent",
    "busy_time",
)
WEEKDAYS: tuple[str, ...] = (
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
)

By = str | Sequence[str] | None


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------


def _require_columns(df: pd.DataFrame, columns: Sequence[str], func: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{func}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{func}: not a sessions frame, missing columns {missing}")


def _normalize_by(df: pd.DataFrame, by: By, func: str) -> list[Hashable] | None:
    """Return ``by`` as a list of column names (None: no grouping), checked against ``df``."""
    if by is None:
        return None
    keys: list[Hashable] = [by] if isinstance(by, str) else list(by)
    if not keys:
        raise ValueError(f"{func}: by= is an empty list; pass None for no grouping")
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise ValueError(
            f"{func}: by= column(s) {missing} not in the frame; columns are {list(df.columns)}"
        )
    return keys


def _group_codes(df: pd.DataFrame, keys: list[Hashable] | None) -> tuple[np.ndarray, pd.Index]:
    """Return (int64 group code per row, index of group keys in code order).

    Without keys every row is group 0 and the index is a ``RangeIndex`` (length 1, or 0 for an
    empty frame).
    """
    if keys is None:
        return np.zeros(len(df), dtype=np.int64), pd.RangeIndex(1 if len(df) else 0)
    grouped = df.groupby(keys, observed=True, dropna=False, sort=True)
    codes = grouped.ngroup().to_numpy(dtype=np.int64)
    return codes, grouped.size().index


def _as_us(series: pd.Series, *, kind: str) -> np.ndarray:
    """Return a datetime (``kind="M"``) or timedelta (``kind="m"``) column as int64 microseconds.

    Missing values become ``_NAT`` (the int64 minimum, as in numpy's NaT). Timestamps are
    absolute instants (UTC); a naive column is read as UTC.
    """
    if kind == "M":
        if not isinstance(series.dtype, pd.DatetimeTZDtype):
            try:
                series = series.astype(_TS_DTYPE)
            except (TypeError, ValueError):
                series = pd.to_datetime(series, utc=True)
        values = series.array.as_unit("us")
    else:
        if not (isinstance(series.dtype, np.dtype) and series.dtype.kind == "m"):
            series = series.astype(_TD_DTYPE)
        values = series.array.as_unit("us")
    return np.asarray(values.asi8, dtype=np.int64)


def _group_reduce(values: np.ndarray, codes: np.ndarray, ngroups: int, *, how: str) -> np.ndarray:
    """Group-wise min or max of int64 ``values``; empty groups get ``_NAT``."""
    if how == "min":
        out = np.full(ngroups, _INT64_MAX, dtype=np.int64)
        np.minimum.at(out, codes, values)
        out[out == _INT64_MAX] = _NAT
    else:
        out = np.full(ngroups, _NAT, dtype=np.int64)
        np.maximum.at(out, codes, values)
    return out


def _sort_within_groups(values: np.ndarray, codes: np.ndarray, ngroups: int) -> np.ndarray:
    """Return ``values`` sorted by (group code, value): one ``np.sort`` on a combined key when
    it fits in int64, else a lexsort."""
    if values.size == 0:
        return values
    if ngroups <= 1:
        return np.sort(values)
    vmin = int(values.min())
    span = int(values.max()) - vmin + 1
    if ngroups * span < _KEY_LIMIT:
        key = codes * np.int64(span) + (values - np.int64(vmin))
        key.sort()
        return key % np.int64(span) + np.int64(vmin)
    return values[np.lexsort((values, codes))]


def _lerp_quantile(
    sorted_values: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float
) -> np.ndarray:
    """Quantile ``q`` of each segment ``sorted_values[starts : starts + counts]``.

    Same arithmetic as ``numpy.quantile(..., method="linear")``, rounded to the nearest integer
    (half to even). Segments must be non-empty.
    """
    virtual = (counts - 1) * q
    previous = np.floor(virtual)
    gamma = virtual - previous
    previous = previous.astype(np.int64)
    following = np.minimum(previous + 1, counts - 1)
    a = sorted_values[starts + previous]
    b = sorted_values[starts + following]
    diff = b - a
    result = a + diff * gamma
    high = gamma >= 0.5
    result[high] = (b - diff * (1 - gamma))[high]
    return np.rint(result).astype(np.int64)


def _round_div(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Exact integer ``total / count`` rounded half to even (``count`` > 0)."""
    quotient, remainder = np.divmod(total, count)
    twice = 2 * remainder
    up = (twice > count) | ((twice == count) & (quotient % 2 == 1))
    return quotient + up


def _timestamps(values: np.ndarray) -> pd.arrays.DatetimeArray:
    return pd.array(values.view("datetime64[us]")).tz_localize("UTC")


def check_tz(tz: object, func: str) -> dt.tzinfo:
    """``tz`` as a tzinfo, else a ``ValueError`` naming the value (and a likely name).

    The one check of a time zone argument, used by every function that takes ``tz``
    (statistics, report texts, plots) and by the command line's ``--tz``: an IANA name
    (``"Europe/Berlin"``, ``"UTC"``) or a tzinfo.

    Parameters
    ----------
    tz : str or tzinfo
        The time zone given.
    func : str
        The function it was given to, named in the message.

    Returns
    -------
    tzinfo

    Examples
    --------
    >>> check_tz("Europe/Berlin", "activity")
    zoneinfo.ZoneInfo(key='Europe/Berlin')
    """
    found = None
    if isinstance(tz, (str, dt.tzinfo)):  # not a number: pandas would read seconds east
        try:
            found = pd.Timestamp(0, tz="UTC").tz_convert(tz).tz
        except Exception:  # ZoneInfoNotFoundError, pytz's UnknownTimeZoneError, TypeError ...
            found = None
    if found is None:
        hint = _zone_hint(tz)
        raise ValueError(
            f"{func}: unknown time zone {tz!r}: give an IANA time zone name such as "
            f"'Europe/Berlin' or 'UTC', or a tzinfo{hint}"
        ) from None
    return found


def _zone_hint(tz: object) -> str:
    """``"; did you mean 'Europe/Berlin'?"`` for a misspelled or partial zone name, or ""."""
    if not isinstance(tz, str) or not tz.strip():
        return ""
    import difflib
    import zoneinfo

    try:
        names = sorted(zoneinfo.available_timezones())
    except Exception:  # no time zone database to look in
        return ""
    wanted = tz.strip().lower()
    by_lower = {name.lower(): name for name in names}
    # "Istanbul" -> "Europe/Istanbul"; "europe/berlin" -> "Europe/Berlin"
    exact = [name for name in names if name.lower().rsplit("/", 1)[-1] == wanted]
    if wanted in by_lower:
        exact = [by_lower[wanted]]
    close = exact or [
        by_lower[m] for m in difflib.get_close_matches(wanted, list(by_lower), n=1, cutoff=0.8)
    ]
    return f"; did you mean {' or '.join(map(repr, close[:3]))}?" if close else ""


# --------------------------------------------------------------------------------------------
# Display: short, rounded text for people; the frames keep exact values
# --------------------------------------------------------------------------------------------

_US_PER_SECOND = 1_000_000
_US_PER_MINUTE = 60 * _US_PER_SECOND
_US_PER_HOUR = 60 * _US_PER_MINUTE


def format_duration(
    value: pd.Timedelta | dt.timedelta | np.timedelta64 | None, na: str = "NaT"
) -> str:
    """A duration in a short form for reading, rounded to its last unit shown.

    Below a minute: seconds (``"42s"``); below an hour: minutes and seconds (``"12m 14s"``);
    below a day: hours and minutes (``"1h 02m"``); else days and hours (``"2d 3h"``). Rounding
    is half up on the magnitude, so ``59m 59.6s`` reads ``"1h 00m"``; a non-zero duration
    that rounds to zero reads ``"<1s"``, a negative one gets a ``-``.

    Parameters
    ----------
    value : Timedelta, datetime.timedelta, numpy.timedelta64 or None
        The duration; ``None`` and ``NaT`` give ``na``.
    na : str, default ``"NaT"``
        Text for a missing duration.

    Returns
    -------
    str

    Examples
    --------
    >>> format_duration(pd.Timedelta("0 days 00:12:14.333817"))
    '12m 14s'
    >>> format_duration(pd.Timedelta(hours=1, minutes=2, seconds=29)), format_duration(pd.NaT)
    ('1h 02m', 'NaT')
    """
    if value is None or pd.isna(value):
        return na
    micros = pd.Timedelta(value) // pd.Timedelta(microseconds=1)
    sign, micros = ("-" if micros < 0 else ""), abs(micros)
    seconds = (micros + _US_PER_SECOND // 2) // _US_PER_SECOND
    if seconds < 60:
        return f"{sign}{seconds}s" if seconds or not micros else f"{sign}<1s"
    if seconds < 3600:
        return f"{sign}{seconds // 60}m {seconds % 60:02d}s"
    minutes = (micros + _US_PER_MINUTE // 2) // _US_PER_MINUTE
    if minutes < 24 * 60:
        return f"{sign}{minutes // 60}h {minutes % 60:02d}m"
    hours = (micros + _US_PER_HOUR // 2) // _US_PER_HOUR
    return f"{sign}{hours // 24}d {hours % 24}h"


def _is_datetime(values: pd.Series) -> bool:
    return isinstance(values.dtype, pd.DatetimeTZDtype) or values.dtype.kind == "M"


def _timestamp_format(stats: pd.DataFrame) -> str:
    """Dates when the frame's timestamps span two days or more (a summary reads them as
    dates), else dates and minutes."""
    stamps = [stats[c].dropna() for c in stats.columns if _is_datetime(stats[c])]
    stamps = [s for s in stamps if len(s)]
    if stamps and max(s.max() for s in stamps) - min(s.min() for s in stamps) >= pd.Timedelta(
        days=2
    ):
        return "%Y-%m-%d"
    return "%Y-%m-%d %H:%M"


def _formatter(name: Hashable, dtype: object, na: str, stamp_format: str) -> Callable[[Any], str]:
    """The text of one value of column ``name``, by its name (``*_share``) or dtype."""
    kind = getattr(dtype, "kind", "O")
    if isinstance(name, str) and name.endswith("_share"):
        return lambda v: na if pd.isna(v) else f"{v:.1%}"
    # Values with a space inside ("12m 14s") get one in front too: two between columns.
    if kind == "m":
        return lambda v: " " + format_duration(v, na)
    if isinstance(dtype, pd.DatetimeTZDtype) or kind == "M":
        return lambda v: na if pd.isna(v) else " " + v.strftime(stamp_format)
    if kind in "iu":
        return lambda v: f"{v:,}"
    if kind == "f":
        return lambda v: na if np.isnan(v) else f"{v:,.2f}"
    return lambda v: na if v is None or v is pd.NA else str(v)


def _formatters(stats: pd.DataFrame, na: str) -> dict[Hashable, Callable[[Any], str]]:
    stamp_format = _timestamp_format(stats)
    return {name: _formatter(name, stats[name].dtype, na, stamp_format) for name in stats.columns}


def format_stats(stats: pd.DataFrame, na: str = "NaT") -> pd.DataFrame:
    """The display of a statistics frame: rounded, short text for reading, same labels.

    Durations as :func:`format_duration` (``"12m 14s"``), ``*_share`` columns as percentages
    (``"76.3%"``), timestamps in their own time zone as dates when they span two days or
    more and to the minute otherwise, counts with thousands separators, other numbers to two
    decimals. Columns keep their names (``median_duration``, ``busy_time``), so what a
    display shows is what the frame can be indexed and sorted by. Works on any frame and is
    ``.pipe``-able; the result holds strings, for display only.

    Parameters
    ----------
    stats : pandas.DataFrame
        Usually the output of :func:`session_stats` or :func:`activity`.
    na : str, default ``"NaT"``
        Text for missing values.

    Returns
    -------
    pandas.DataFrame
        A plain frame of strings with the same index and the same columns as ``stats``.

    Examples
    --------
    >>> session_stats(df, by="agent_uuid").pipe(format_stats)   # doctest: +SKIP
    >>> activity(df, "W").pipe(format_stats).tail()              # doctest: +SKIP
    """
    formatters = _formatters(stats, na)
    columns = {name: [formatters[name](v).lstrip() for v in stats[name]] for name in stats.columns}
    return pd.DataFrame(columns, index=stats.index, columns=stats.columns, dtype=object)


class RoundedFrame(pd.DataFrame):
    """A statistics frame: exact values, a short rounded display.

    A ``pandas.DataFrame`` in every respect (indexing, arithmetic, ``equals``, ``to_parquet``,
    ``to_string``, ``to_csv`` all see the exact microseconds) except its repr and its Jupyter
    HTML, which show the values as :func:`format_stats` writes them: ``12m 14s`` instead of
    ``0 days 00:12:14.333817``, ``76.3%`` instead of ``0.762701``, under the real column
    names (``median_duration``: what ``stats["median_duration"]`` and ``sort_values`` take).

    Why a display and not rounded values: the statistics are exact and code relies on that
    (differences, ratios, comparisons with another period must not inherit rounding), while
    a person reading a duration needs its leading units only. pandas already works this way
    for floats (``display.precision``); this does the same for durations and shares. For
    pandas' own display use ``pd.DataFrame(stats)`` (the same data as a plain frame, also
    what ``pd.testing.assert_frame_equal`` wants on the left when the right one is plain).
    :func:`session_stats` returns a :class:`SessionStats`, :func:`activity` an
    :class:`ActivityTable`.
    """

    @property
    def _constructor(self) -> type[RoundedFrame]:
        return type(self)

    def _shown(self) -> tuple[pd.DataFrame, dict[Hashable, Callable[[Any], str]]] | None:
        """A plain frame and its formatters, which pandas applies only to the rows it shows
        (so a repr of a million groups stays fast); None when this frame no longer has one
        column per label."""
        if self.columns.nlevels != 1 or self.columns.has_duplicates:
            return None
        return pd.DataFrame(self), _formatters(self, "NaT")

    def __repr__(self) -> str:
        shown = self._shown()
        if shown is None:
            return super().__repr__()
        frame, formatters = shown
        # pandas' own repr settings: a private helper, so not in pandas-stubs
        from pandas.io.formats.format import get_dataframe_repr_params  # type: ignore[attr-defined]

        # pandas-stubs take formatters keyed by str or int only; pandas takes any label
        shown_formatters = cast(Mapping[str, Callable[[Any], str]], formatters)
        return frame.to_string(buf=None, formatters=shown_formatters, **get_dataframe_repr_params())

    def _repr_html_(self) -> str | None:
        shown = self._shown()
        if shown is None or not pd.get_option("display.notebook_repr_html"):
            return super()._repr_html_()  # type: ignore[misc]  # private: not in pandas-stubs
        frame, formatters = shown
        max_rows = pd.get_option("display.max_rows")
        if max_rows is not None and len(frame) > max_rows:
            max_rows = pd.get_option("display.min_rows") or max_rows  # as pandas truncates
        return frame.to_html(
            formatters=formatters,
            max_rows=max_rows,
            max_cols=pd.get_option("display.max_columns"),
            show_dimensions=pd.get_option("display.show_dimensions"),
            notebook=True,
        )


class SessionStats(RoundedFrame):
    """The frame :func:`session_stats` returns: exact values, a short rounded display.

    See :class:`RoundedFrame`. The display keeps the column names of the frame.

    Examples
    --------
    >>> stats = session_stats(df)                             # doctest: +SKIP
    >>> stats                                                 # doctest: +SKIP
      sessions  open_sessions total_duration mean_duration median_duration p90_duration ...
    0    3,051              3         26d 2h       12m 19s          6m 02s      26m 15s ...
    >>> stats.loc[0, "median_duration"]                       # doctest: +SKIP
    Timedelta('0 days 00:06:01.540596')
    >>> pd.DataFrame(stats)                                   # doctest: +SKIP
    """


class ActivityTable(RoundedFrame):
    """The frame :func:`activity` returns: exact counts and ``busy_time``, shown rounded
    (``1h 10m``) as :class:`SessionStats` is. See :class:`RoundedFrame`."""


# --------------------------------------------------------------------------------------------
# session_stats
# --------------------------------------------------------------------------------------------

_STATS_INPUT = (
    "duration",
    "is_open",
    "started_at",
    "last_activity_at",
    "task_count",
    "evaluated_at",
    "summary_generated_at",
)


def session_stats(df: pd.DataFrame, by: By = None) -> SessionStats:
    """Session counts and duration statistics, overall or per group.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (any frame with the columns ``duration``, ``is_open``, ``started_at``,
        ``last_activity_at``, ``task_count``, ``evaluated_at``, ``summary_generated_at`` and
        those named in ``by``).
    by : str or list of str, optional
        Column(s) to group by. Groups follow ``df.groupby(by, observed=True, dropna=False,
        sort=True)``: only observed categories, missing keys as their own group, sorted keys.

    Returns
    -------
    SessionStats
        A ``pandas.DataFrame`` of exact values that *displays* rounded (``12m 14s``,
        ``76.3%``) under its column names (see :class:`RoundedFrame` for why);
        ``pd.DataFrame(stats)`` displays it as pandas does. Without ``by``: one row with a
        ``RangeIndex`` (``0``). With ``by``: one row per group,
        indexed by the group keys (an ``Index`` named after the column, or a ``MultiIndex`` for
        several columns), like ``groupby().agg()``. An empty frame gives zero rows with the same
        columns and dtypes. Columns, in order:

        - ``sessions``, ``open_sessions`` (int64): rows, and rows with ``is_open``.
        - ``total_duration``, ``mean_duration``, ``median_duration``, ``p90_duration``,
          ``max_duration`` (timedelta64[us]): over *ended* sessions only (``duration`` not
          null); ``NaT`` for a group with no ended session. Quantiles use linear interpolation
          between order statistics (numpy's default ``method="linear"``); mean and quantiles
          are rounded to the nearest microsecond.
        - ``first_started_at`` (min ``started_at``), ``last_activity_at`` (max
          ``last_activity_at``), datetime64[us, UTC]; ``NaT`` when the group has none.
        - ``tasks_per_session`` (float64): mean ``task_count``.
        - ``evaluated_share``, ``summarized_share`` (float64, 0..1): share of sessions with
          ``evaluated_at`` / ``summary_generated_at`` set.

    Raises
    ------
    ValueError
        If a ``by`` column, or a column the statistics need, is not in the frame.

    Examples
    --------
    >>> stats = session_stats(df)                        # doctest: +SKIP
    >>> stats                                            # doctest: +SKIP
      sessions open   total     mean  median      p90     max first start last activity ...
    0    3,051    3  26d 2h  12m 19s  6m 02s  26m 15s  5h 00m  2026-01-05    2026-10-31 ...
    >>> stats.loc[0, "median_duration"]                  # doctest: +SKIP
    Timedelta('0 days 00:06:01.540596')
    >>> session_stats(df, by=["agent_uuid", "type"])     # doctest: +SKIP
    """
    keys = _normalize_by(df, by, "session_stats")
    _require_columns(df, _STATS_INPUT, "session_stats")
    codes, index = _group_codes(df, keys)
    ngroups = len(index)

    sessions = np.bincount(codes, minlength=ngroups).astype(np.int64)
    is_open = df["is_open"].to_numpy(dtype=bool, na_value=False)
    open_sessions = np.bincount(codes[is_open], minlength=ngroups).astype(np.int64)

    # Durations of ended sessions, sorted within each group.
    duration = _as_us(df["duration"], kind="m")
    ended = duration != _NAT
    ended_codes = codes[ended]
    counts = np.bincount(ended_codes, minlength=ngroups).astype(np.int64)
    sorted_durations = _sort_within_groups(duration[ended], ended_codes, ngroups)
    ends = np.cumsum(counts)
    starts = ends - counts
    some = counts > 0
    cumulative = np.concatenate(([0], np.cumsum(sorted_durations, dtype=np.int64)))

    total = np.full(ngroups, _NAT, dtype=np.int64)
    mean = total.copy()
    median = total.copy()
    p90 = total.copy()
    maximum = total.copy()
    total[some] = cumulative[ends[some]] - cumulative[starts[some]]
    mean[some] = _round_div(total[some], counts[some])
    median[some] = _lerp_quantile(sorted_durations, starts[some], counts[some], 0.5)
    p90[some] = _lerp_quantile(sorted_durations, starts[some], counts[some], 0.9)
    maximum[some] = sorted_durations[ends[some] - 1]

    started_at = _as_us(df["started_at"], kind="M")
    has_start = started_at != _NAT
    first_started = _group_reduce(started_at[has_start], codes[has_start], ngroups, how="min")
    last_activity_at = _as_us(df["last_activity_at"], kind="M")
    has_activity = last_activity_at != _NAT
    last_activity = _group_reduce(
        last_activity_at[has_activity], codes[has_activity], ngroups, how="max"
    )

    task_count = df["task_count"].to_numpy(dtype=np.float64, na_value=np.nan)
    has_tasks = ~np.isnan(task_count)
    task_sum = np.bincount(codes[has_tasks], weights=task_count[has_tasks], minlength=ngroups)
    task_n = np.bincount(codes[has_tasks], minlength=ngroups)
    with np.errstate(invalid="ignore", divide="ignore"):
        tasks_per_session = task_sum / task_n
        evaluated = _as_us(df["evaluated_at"], kind="M") != _NAT
        summarized = _as_us(df["summary_generated_at"], kind="M") != _NAT
        evaluated_share = np.bincount(codes[evaluated], minlength=ngroups) / sessions
        summarized_share = np.bincount(codes[summarized], minlength=ngroups) / sessions

    return SessionStats(
        {
            "sessions": sessions,
            "open_sessions": open_sessions,
            "total_duration": total.view(_TD_DTYPE),
            "mean_duration": mean.view(_TD_DTYPE),
            "median_duration": median.view(_TD_DTYPE),
            "p90_duration": p90.view(_TD_DTYPE),
            "max_duration": maximum.view(_TD_DTYPE),
            "first_started_at": _timestamps(first_started),
            "last_activity_at": _timestamps(last_activity),
            "tasks_per_session": tasks_per_session.astype(np.float64),
            "evaluated_share": evaluated_share.astype(np.float64),
            "summarized_share": summarized_share.astype(np.float64),
        },
        index=index,
    )


# --------------------------------------------------------------------------------------------
# activity: bucket layout (pandas' resample bins)
# --------------------------------------------------------------------------------------------

Side = Literal["left", "right"]

#: Offsets whose buckets pandas closes on the right and labels by their end (resample defaults).
_END_ANCHORED = frozenset({"W", "ME", "QE", "YE", "BME", "BQE", "BYE"})


def _to_offset(freq: str | BaseOffset | pd.Timedelta, func: str = "activity") -> BaseOffset:
    try:
        offset = to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{func}: invalid frequency {freq!r}: give a pandas offset such as '1D', '1h', "
            "'15min', 'W' or 'MS'"
        ) from exc
    if offset is None or offset.n <= 0:
        raise ValueError(f"{func}: frequency must be positive, got {freq!r}")
    if _is_fixed(offset) and offset.nanos % 1000:
        raise ValueError(f"{func}: frequency {offset.freqstr!r} is below one microsecond")
    return offset


def check_freq(freq: str | BaseOffset | pd.Timedelta, func: str) -> BaseOffset:
    """``freq`` as the pandas offset :func:`activity` buckets by, else a ``ValueError``
    naming the value (the same check :func:`activity` makes, for callers that must validate
    before they compute anything).

    Examples
    --------
    >>> check_freq("W", "activity")
    <Week: weekday=6>
    """
    return _to_offset(freq, func)


def _is_fixed(offset: BaseOffset) -> bool:
    """Constant-length buckets (hours, minutes …). ``Day`` is a calendar day (23 to 25 hours
    in a DST zone) even on pandas versions where it derives from ``Tick``."""
    return isinstance(offset, Tick) and not isinstance(offset, Day)


def _is_end_anchored(offset: BaseOffset) -> bool:
    return offset.rule_code.split("-")[0] in _END_ANCHORED


def _sides(
    offset: BaseOffset, closed: Side | None, label: Side | None, func: str = "activity"
) -> tuple[Side, Side]:
    """pandas' ``resample`` defaults: ``right``/``right`` for period-end offsets (``W``,
    ``ME``, ``QE``, ``YE`` and their business and anchored forms), else ``left``/``left``."""
    default: Side = "right" if _is_end_anchored(offset) else "left"
    for name, value in (("closed", closed), ("label", label)):
        if value not in (None, "left", "right"):
            raise ValueError(f"{func}: {name} must be 'left', 'right' or None, got {value!r}")
    return closed or default, label or default


_WEEKDAY_ABBR = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_TICK_UNITS = {
    "h": "hour",
    "min": "minute",
    "s": "second",
    "ms": "millisecond",
    "us": "microsecond",
}
_CALENDAR_UNITS = {
    "D": "day",
    "B": "business day",
    "MS": "month",
    "ME": "month",
    "QS-JAN": "quarter",
    "QE-DEC": "quarter",
    "YS-JAN": "year",
    "YE-DEC": "year",
}


def _freq_words(offset: BaseOffset, closed: Side | None = None) -> str:
    """A bucket length in words: ``"day"``, ``"15 minutes"``, ``"week (Mon–Sun)"``.

    Weeks name their days: a ``W-SUN`` week closed on the right (pandas' default) runs Monday
    to Sunday, closed on the left Sunday to Saturday. Offsets without a plain name keep their
    pandas code (``"SME-15"``).
    """
    n = offset.n
    rule = offset.rule_code
    # pandas-stubs' Week lacks its (documented) weekday attribute
    weekday: int | None = cast(Any, offset).weekday if isinstance(offset, Week) else None
    if weekday is not None:
        closed = closed or _sides(offset, None, None)[0]
        first = (weekday + (1 if closed == "right" else 0)) % 7
        days = f"{_WEEKDAY_ABBR[first]}–{_WEEKDAY_ABBR[(first + 6) % 7]}"
        return f"week ({days})" if n == 1 else f"{n} weeks ({days})"
    unit = _TICK_UNITS.get(rule) if _is_fixed(offset) else _CALENDAR_UNITS.get(rule)
    if unit is None:
        return offset.freqstr
    return unit if n == 1 else f"{n} {unit}s"


def _localize(walls: pd.DatetimeIndex, tz: dt.tzinfo | None) -> np.ndarray:
    """Naive local wall times to int64 µs UTC, as pandas lays out its bins: an ambiguous time
    is its first (DST) instant, a non-existent one moves forward to the end of the gap."""
    local = walls.tz_localize(
        tz, ambiguous=np.ones(len(walls), dtype=bool), nonexistent="shift_forward"
    )
    return np.asarray(local.as_unit("us").asi8, dtype=np.int64)


def _walls(values: np.ndarray, tz: dt.tzinfo | None) -> pd.DatetimeIndex:
    """int64 µs UTC to naive local wall times in ``tz``."""
    return pd.DatetimeIndex(_timestamps(values)).tz_convert(tz).tz_localize(None)


def _lattice(
    lo: int, hi: int, offset: BaseOffset, tz: dt.tzinfo | None, closed: Side
) -> np.ndarray:
    """pandas' bin boundaries before adjustment (its ``binner``), int64 µs UTC, for data
    spanning ``[lo, hi]``: the same first and last point as ``_get_timestamp_range_edges``.

    Fixed frequencies step in absolute time from the local midnight of the first instant's day
    (``origin="start_day"``). Calendar offsets step in local wall time from the first
    instant's date, rolled back onto the offset (one step further back when closed on the
    right).
    """
    if _is_fixed(offset):
        step = offset.nanos // 1000
        origin = int(_localize(_walls(np.array([lo]), tz).normalize(), tz)[0])
        first_offset = (lo - origin) % step
        last_offset = (hi - origin) % step
        if closed == "right":
            first = lo - first_offset if first_offset else lo - step
            last = hi + (step - last_offset) if last_offset else hi
        else:
            first = lo - first_offset
            last = hi + (step - last_offset) if last_offset else hi + step
        return np.arange(first, last + 1, step, dtype=np.int64)
    first_day, last_day = _walls(np.array([lo, hi]), tz).normalize()
    start = offset.rollback(first_day) if closed == "left" else first_day - offset
    walls = pd.date_range(start=start, end=last_day + offset, freq=offset, unit="us")
    return _localize(walls, tz)


def _edges(
    lattice: np.ndarray, offset: BaseOffset, tz: dt.tzinfo | None, closed: Side
) -> np.ndarray:
    """Half-open ``[edges[k], edges[k + 1])`` µs boundaries of pandas' bins over ``lattice``.

    pandas closes period-end bins (``W``, ``ME`` …) on the right at the *last instant* of the
    lattice day, so a week labelled Sunday holds all of that Sunday. A bin closed on the right,
    ``(a, b]``, holds the same microseconds as ``[a + 1 µs, b + 1 µs)``.
    """
    if closed == "left":
        return lattice
    if _is_end_anchored(offset):
        day_ends = _walls(lattice, tz) + pd.Timedelta(days=1) - pd.Timedelta(microseconds=1)
        lattice = _localize(day_ends, tz)
    return lattice + 1


@dataclass(frozen=True)
class _Buckets:
    """Bucket ``k`` is ``[edges[k], edges[k + 1])`` (int64 µs UTC), shown as ``labels[k]``."""

    edges: np.ndarray
    labels: np.ndarray

    def of(self, t: np.ndarray) -> np.ndarray:
        """Bucket number of each instant."""
        return np.searchsorted(self.edges, t, side="right") - 1


def _bucket_layout(
    lo: int, hi: int, offset: BaseOffset, tz: dt.tzinfo | None, closed: Side, label: Side
) -> _Buckets:
    """Buckets covering every instant of ``[lo, hi]``, exactly as ``resample`` bins them."""
    lattice = _lattice(lo, hi, offset, tz, closed)
    edges = _edges(lattice, offset, tz, closed)
    if not (edges[0] <= lo and hi < edges[-1] and (np.diff(edges) >= 0).all()):
        raise ValueError(
            f"activity: cannot lay out {offset.freqstr!r} buckets in {tz} over "
            f"{_timestamps(np.array([lo, hi]))}"
        )
    return _Buckets(edges, lattice[:-1] if label == "left" else lattice[1:])


def _bucket_bounds(
    labels: pd.DatetimeIndex, offset: BaseOffset, closed: Side, label: Side
) -> tuple[np.ndarray, np.ndarray]:
    """Each labelled bucket's ``[start, end)`` (int64 µs UTC), from its label alone.

    A label is a lattice point; the bucket runs to the next one (``label="left"``) or from the
    previous one (``"right"``). Used to draw and to mark buckets of a table already computed.
    """
    tz = labels.tz
    values = np.asarray(labels.as_unit("us").asi8, dtype=np.int64)
    if _is_fixed(offset):
        step = offset.nanos // 1000
        neighbour = values + step if label == "left" else values - step
    else:
        # Calendar lattice points are local midnights (or the end of a DST gap at midnight).
        walls = _walls(values, tz).normalize()
        neighbour = _localize(walls + offset if label == "left" else walls - offset, tz)
    lower, upper = (values, neighbour) if label == "left" else (neighbour, values)
    return _edges(lower, offset, tz, closed), _edges(upper, offset, tz, closed)


@dataclass(frozen=True)
class _TableBuckets:
    """What an activity table says about its buckets: offset, sides, each row's ``[start,
    end)`` in int64 µs UTC and the frame's last fetch (None when unknown)."""

    offset: BaseOffset
    closed: Side
    label: Side
    start: np.ndarray
    end: np.ndarray
    fetched_at: pd.Timestamp | None

    @property
    def partial(self) -> np.ndarray:
        """Buckets that end after the last fetch: only partly observed."""
        if self.fetched_at is None:
            return np.zeros(self.start.size, dtype=bool)
        return self.end > self.fetched_at.value // 1000  # .value is in nanoseconds


def _table_buckets(
    table: pd.DataFrame, freq: str | BaseOffset | pd.Timedelta | None = None
) -> _TableBuckets:
    """The buckets of one group's activity table (a tz-aware ``DatetimeIndex``).

    From ``attrs["activity"]`` when the table has them; otherwise ``freq``, else the
    frequency pandas infers from the index, with pandas' default sides for it.
    """
    index = table.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError("expected an activity table of one group (a tz-aware DatetimeIndex)")
    meta = table.attrs.get("activity") or {}
    freq = meta.get("freq", freq)
    if freq is None:
        freq = pd.infer_freq(index) if len(index) >= 3 else None
        if freq is None:
            raise ValueError(
                "cannot tell the bucket length of this activity table (its attrs were lost); "
                "pass freq="
            )
    offset = _to_offset(freq)
    closed, label = _sides(offset, meta.get("closed"), meta.get("label"))
    start, end = _bucket_bounds(index, offset, closed, label)
    return _TableBuckets(offset, closed, label, start, end, meta.get("fetched_at"))


# --------------------------------------------------------------------------------------------
# activity: events and per-bucket reductions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sessions:
    """The sessions with a start, as int64 µs arrays; ``end`` is ``ended_at`` or, while open,
    ``fetched_at``; ``occupies`` marks those with a non-empty ``[start, end)``."""

    start: np.ndarray
    ended_at: np.ndarray
    has_end: np.ndarray
    end: np.ndarray
    occupies: np.ndarray
    group: np.ndarray
    #: First and last instant of each session that must land in a bucket.
    lo: np.ndarray
    hi: np.ndarray


def _sessions(df: pd.DataFrame, codes: np.ndarray) -> _Sessions | None:
    started_at = _as_us(df["started_at"], kind="M")
    keep = started_at != _NAT
    if not keep.any():
        return None
    start = started_at[keep]
    ended_at = _as_us(df["ended_at"], kind="M")[keep]
    fetched_at = _as_us(df["fetched_at"], kind="M")[keep]
    has_end = ended_at != _NAT
    end = np.where(has_end, ended_at, fetched_at)
    occupies = (end != _NAT) & (end > start)
    lo = np.where(has_end, np.minimum(start, ended_at), start)
    hi = np.where(has_end, np.maximum(start, ended_at), start)
    hi = np.where(occupies, np.maximum(hi, end - 1), hi)
    return _Sessions(start, ended_at, has_end, end, occupies, codes[keep], lo, hi)


@dataclass(frozen=True)
class _Cells:
    """The output rows: one cell per (group, bucket) from each group's first to last bucket,
    groups in key order. Cell of bucket ``b`` in group ``g``: ``base[g] + b``."""

    base: np.ndarray
    first: np.ndarray
    last: np.ndarray
    present: np.ndarray
    lengths: np.ndarray
    bucket: np.ndarray

    @property
    def n(self) -> int:
        return self.bucket.size


def _cell_layout(sessions: _Sessions, buckets: _Buckets, ngroups: int) -> _Cells:
    if ngroups == 1:
        group_lo = np.array([sessions.lo.min()], dtype=np.int64)
        group_hi = np.array([sessions.hi.max()], dtype=np.int64)
    else:
        group_lo = _group_reduce(sessions.lo, sessions.group, ngroups, how="min")
        group_hi = _group_reduce(sessions.hi, sessions.group, ngroups, how="max")
    present = group_hi != _NAT
    first = buckets.of(group_lo)
    last = buckets.of(group_hi)
    lengths = np.where(present, last - first + 1, 0)
    offsets = np.cumsum(lengths) - lengths
    ncells = int(lengths.sum())
    bucket = np.repeat(first - offsets, lengths) + np.arange(ncells)
    return _Cells(offsets - first, first, last, present, lengths, bucket)


def _count_events(
    sessions: _Sessions, buckets: _Buckets, cells: _Cells
) -> tuple[np.ndarray, np.ndarray]:
    """Sessions started and ended per cell."""
    started = np.bincount(
        cells.base[sessions.group] + buckets.of(sessions.start), minlength=cells.n
    )
    has_end = sessions.has_end
    ended = np.bincount(
        cells.base[sessions.group[has_end]] + buckets.of(sessions.ended_at[has_end]),
        minlength=cells.n,
    )
    return started, ended


@dataclass(frozen=True)
class _Occupancy:
    """The occupying sessions' intervals and the first and last bucket (and cell) they touch."""

    start: np.ndarray
    end: np.ndarray
    group: np.ndarray
    first_bucket: np.ndarray
    last_bucket: np.ndarray
    first_cell: np.ndarray
    last_cell: np.ndarray


def _occupancy(sessions: _Sessions, buckets: _Buckets, cells: _Cells) -> _Occupancy:
    occupies = sessions.occupies
    start, end, group = sessions.start[occupies], sessions.end[occupies], sessions.group[occupies]
    first_bucket = buckets.of(start)
    last_bucket = buckets.of(end - 1)
    return _Occupancy(
        start,
        end,
        group,
        first_bucket,
        last_bucket,
        cells.base[group] + first_bucket,
        cells.base[group] + last_bucket,
    )


def _active_sessions(occ: _Occupancy, ncells: int) -> np.ndarray:
    """Sessions overlapping each cell: +1 at the first cell, -1 after the last, summed."""
    boundary = np.bincount(occ.first_cell, minlength=ncells + 1) - np.bincount(
        occ.last_cell + 1, minlength=ncells + 1
    )
    return np.cumsum(boundary)[:ncells]


def _busy_time(occ: _Occupancy, buckets: _Buckets, cells: _Cells) -> np.ndarray:
    """Session time inside each cell: partial first and last buckets plus whole ones between."""
    edges = buckets.edges
    busy = np.zeros(cells.n, dtype=np.int64)
    single = occ.first_cell == occ.last_cell
    np.add.at(busy, occ.first_cell[single], (occ.end - occ.start)[single])
    multi = ~single
    np.add.at(busy, occ.first_cell[multi], edges[occ.first_bucket[multi] + 1] - occ.start[multi])
    np.add.at(busy, occ.last_cell[multi], occ.end[multi] - edges[occ.last_bucket[multi]])
    cover = np.bincount(occ.first_cell[multi] + 1, minlength=cells.n + 1) - np.bincount(
        occ.last_cell[multi], minlength=cells.n + 1
    )
    width = edges[cells.bucket + 1] - edges[cells.bucket]
    return busy + np.cumsum(cover)[: cells.n] * width


def _peak_concurrent(
    occ: _Occupancy, active: np.ndarray, buckets: _Buckets, cells: _Cells, ngroups: int
) -> np.ndarray:
    """The running level at each bucket start, then at every event instant inside it."""
    starts_in_cell = np.bincount(occ.first_cell, minlength=cells.n)
    at_start = occ.start == buckets.edges[occ.first_bucket]
    starts_at_b0 = np.bincount(occ.first_cell[at_start], minlength=cells.n)
    peak = active - starts_in_cell + starts_at_b0
    if occ.start.size:
        level, times, groups = _event_levels(occ.start, occ.end, occ.group, ngroups)
        bucket = buckets.of(times)
        valid = bucket <= cells.last[groups]
        cell = cells.base[groups[valid]] + bucket[valid]
        levels = level[valid]
        # cell is non-decreasing: reduce each run of equal cells.
        run_starts = np.flatnonzero(np.concatenate(([True], cell[1:] != cell[:-1])))
        run_max = np.maximum.reduceat(levels, run_starts)
        run_cells = cell[run_starts]
        peak[run_cells] = np.maximum(peak[run_cells], run_max)
    return peak


def _event_levels(
    starts: np.ndarray, ends: np.ndarray, groups: np.ndarray, ngroups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Running concurrency after all events at each distinct (group, instant).

    Events are sorted by group, time, and ends before starts at the same instant (half-open
    intervals), encoded into one int64 key ``group * span2 + 2 * (t - t0) + is_start`` when
    that fits, so one ``np.sort`` does it. Returns (level, time, group) per distinct instant.
    """
    t0 = int(starts.min())
    span2 = 2 * (int(ends.max()) - t0 + 1)
    times = np.concatenate((starts, ends)) - np.int64(t0)
    bits = np.concatenate((np.ones(starts.size, np.int64), np.zeros(ends.size, np.int64)))
    group = np.concatenate((groups, groups))
    if ngroups * span2 < _KEY_LIMIT:
        key = group * np.int64(span2) + 2 * times + bits
        key.sort()
        instant = key >> 1  # identifies (group, time)
        level = np.cumsum((key & 1) * 2 - 1)
        last = np.flatnonzero(np.concatenate((instant[1:] != instant[:-1], [True])))
        sel = key[last]
        return level[last], (sel % span2) // 2 + t0, sel // span2
    order = np.lexsort((bits, times, group))
    times, bits, group = times[order], bits[order], group[order]
    level = np.cumsum(bits * 2 - 1)
    change = (times[1:] != times[:-1]) | (group[1:] != group[:-1])
    last = np.flatnonzero(np.concatenate((change, [True])))
    return level[last], times[last] + t0, group[last]


# --------------------------------------------------------------------------------------------
# activity
# --------------------------------------------------------------------------------------------


def _activity_frame(
    columns: dict[str, np.ndarray], index: pd.Index, meta: dict[str, object]
) -> ActivityTable:
    frame = ActivityTable(
        {
            "started": columns["started"].astype(np.int64),
            "ended": columns["ended"].astype(np.int64),
            "active_sessions": columns["active_sessions"].astype(np.int64),
            "peak_concurrent": columns["peak_concurrent"].astype(np.int64),
            "busy_time": columns["busy_time"].astype(np.int64).view(_TD_DTYPE),
        },
        index=index,
    )
    frame.attrs["activity"] = meta
    return frame


def _activity_index(
    key_index: pd.Index | None, labels: np.ndarray, lengths: np.ndarray, tz: dt.tzinfo | None
) -> pd.Index:
    buckets = pd.DatetimeIndex(_timestamps(labels).tz_convert(tz), name="bucket")
    if key_index is None:
        return buckets
    levels = [key_index.get_level_values(i).repeat(lengths) for i in range(key_index.nlevels)]
    return pd.MultiIndex.from_arrays([*levels, buckets], names=[*key_index.names, "bucket"])


def activity(
    df: pd.DataFrame,
    freq: str | BaseOffset | pd.Timedelta = "1D",
    tz: str | object = "UTC",
    by: By = None,
    *,
    closed: Side | None = None,
    label: Side | None = None,
) -> ActivityTable:
    """Sessions started, ended, active and running concurrently per time bucket.

    Buckets are pandas' own: the same bins, labels and closed side as
    ``Series.resample(freq, closed=closed, label=label)`` on the same instants in ``tz``, so
    ``activity(df, "W")["started"]`` equals
    ``df.set_index("started_at")["uuid"].tz_convert(tz).resample("W").count()`` (over the same
    range of buckets). With the defaults that means:

    - ``"W"`` (``"W-SUN"``): Monday to Sunday, labelled by the closing Sunday; ``"W-MON"``:
      Tuesday to Monday, labelled by the closing Monday. ``"ME"``, ``"QE"``, ``"YE"``: the
      calendar month, quarter or year labelled by its last day. Each holds the whole of its
      last day (pandas closes these bins on the right at the day's last instant).
    - ``"D"``, ``"MS"``, ``"QS"``, ``"YS"``: the calendar day, month, quarter or year in
      ``tz`` labelled by its first day; a day on a DST change lasts 23 or 25 hours.
    - ``"h"``, ``"15min"`` and other fixed lengths: constant-length buckets counted from the
      local midnight of the first event's day (pandas' ``origin="start_day"``), labelled by
      their start.
    - Multiples that do not tile evenly (``"2D"``, ``"2W"``, ``"7h"``) start from the first
      event, as pandas' do. With ``by=``, every group uses the buckets of the whole frame (so
      groups line up), where ``groupby(...).resample(...)`` would start each group at its own
      first event.

    A session occupies the half-open interval ``[started_at, end)``: ``end`` is ``ended_at``,
    or ``fetched_at`` for a session still open (``ended_at`` null). Sessions without
    ``started_at`` are ignored. A zero-length session (``end == started_at``) occupies no time:
    it counts in ``started``/``ended`` but not in ``active_sessions``, ``peak_concurrent`` or
    ``busy_time``; so does a session whose end precedes its start, or an open session without
    ``fetched_at`` (its end is unknown). A bucket closed on the right, ``(b0, b1]``, holds the
    same microseconds as ``[b0 + 1 µs, b1 + 1 µs)``, so this model applies unchanged.

    Everything is computed exactly by one sweep over start/end events (sorts, ``searchsorted``
    and cumulative sums; O(n log n), no per-session Python loop).

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (columns ``started_at``, ``ended_at``, ``fetched_at`` and those in
        ``by``).
    freq : str, DateOffset or Timedelta, default ``"1D"``
        Bucket length as a pandas offset (``"1D"``, ``"W"``, ``"W-MON"``, ``"MS"``, ``"ME"``,
        ``"QS"``, ``"h"``, ``"15min"`` …).
    tz : str or tzinfo, default ``"UTC"``
        Time zone of the buckets.
    by : str or list of str, optional
        Column(s) to group by (as in :func:`session_stats`); each group is computed on its own,
        over its own range of buckets.
    closed, label : {"left", "right"}, optional
        Which side of a bucket is closed and which edge labels it, as in
        ``DataFrame.resample``; by default pandas' choice for ``freq`` (``"right"`` for
        ``W``, ``ME``, ``QE``, ``YE``, else ``"left"``).

    Returns
    -------
    ActivityTable
        A ``pandas.DataFrame`` of exact values that *displays* rounded (``busy_time`` as
        ``1h 10m``, counts with thousands separators; see :class:`RoundedFrame`), one row
        per bucket from the first bucket with an event to the last one (empty buckets
        in between are present, with zeros). Index: a tz-aware ``DatetimeIndex`` of bucket
        labels in ``tz``, named ``bucket``; with ``by``, a ``MultiIndex`` (group keys …,
        ``bucket``). Columns:

        - ``started``, ``ended`` (int64): sessions whose ``started_at`` / ``ended_at`` falls in
          the bucket.
        - ``active_sessions`` (int64): sessions whose interval overlaps the bucket.
        - ``peak_concurrent`` (int64): the most sessions running at one instant of the bucket,
          counting those already running at its start.
        - ``busy_time`` (timedelta64[us]): total session time inside the bucket.

        ``attrs["activity"]`` records ``freq``, ``tz``, ``closed``, ``label`` and
        ``fetched_at`` (the frame's last fetch time: a bucket ending after it was only partly
        observed), which :func:`mihu_frames.plot_activity` uses. An empty frame gives zero
        rows with the same columns and dtypes.

    Examples
    --------
    >>> weekly = activity(df, "W", tz="Europe/Berlin")  # Mon-Sun, by Sunday  # doctest: +SKIP
    >>> weekly[["started", "peak_concurrent", "busy_time"]].tail()  # doctest: +SKIP
    >>> activity(df, "1h", by="agent_uuid").loc["agent-1"]          # doctest: +SKIP
    >>> activity(df, "W", closed="left", label="left")  # Sun-Sun, by its first  # doctest: +SKIP
    """
    offset = _to_offset(freq)
    closed, label = _sides(offset, closed, label)
    tz = check_tz(tz, "activity")
    keys = _normalize_by(df, by, "activity")
    _require_columns(df, ("started_at", "ended_at", "fetched_at"), "activity")
    codes, index = _group_codes(df, keys)
    key_index = index if keys is not None else None
    ngroups = len(index)
    fetched = _as_us(df["fetched_at"], kind="M")
    fetched = fetched[fetched != _NAT]
    meta: dict[str, object] = {
        "freq": offset.freqstr,
        "tz": str(tz),
        "closed": closed,
        "label": label,
        "fetched_at": pd.Timestamp(int(fetched.max()), unit="us", tz="UTC")
        if fetched.size
        else None,
    }

    sessions = _sessions(df, codes)
    if sessions is None:
        return _empty_activity(key_index, tz, meta)
    buckets = _bucket_layout(
        int(sessions.lo.min()), int(sessions.hi.max()), offset, tz, closed, label
    )
    cells = _cell_layout(sessions, buckets, ngroups)
    started, ended = _count_events(sessions, buckets, cells)
    occupancy = _occupancy(sessions, buckets, cells)
    active = _active_sessions(occupancy, cells.n)
    columns = {
        "started": started,
        "ended": ended,
        "active_sessions": active,
        "peak_concurrent": _peak_concurrent(occupancy, active, buckets, cells, ngroups),
        "busy_time": _busy_time(occupancy, buckets, cells),
    }
    logger.debug(
        "activity: %d sessions, %d groups, %d buckets of %s (closed %s, label %s) in %s",
        sessions.start.size,
        int(cells.present.sum()),
        cells.n,
        offset.freqstr,
        closed,
        label,
        tz,
    )
    result_index = _activity_index(key_index, buckets.labels[cells.bucket], cells.lengths, tz)
    return _activity_frame(columns, result_index, meta)


def _empty_activity(
    index: pd.Index | None, tz: dt.tzinfo | None, meta: dict[str, object]
) -> ActivityTable:
    zeros = np.zeros(0, dtype=np.int64)
    lengths = np.zeros(0 if index is None else len(index), dtype=np.int64)
    columns = dict.fromkeys(ACTIVITY_COLUMNS, zeros)
    return _activity_frame(columns, _activity_index(index, zeros, lengths, tz), meta)


# --------------------------------------------------------------------------------------------
# hourly_profile, explode_tasks
# --------------------------------------------------------------------------------------------


def hourly_profile(df: pd.DataFrame, tz: str | object = "UTC") -> pd.DataFrame:
    """Sessions started per weekday and hour of day, in local time.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (column ``started_at``; rows without it are ignored).
    tz : str or tzinfo, default ``"UTC"``
        Time zone whose wall clock defines weekday and hour.

    Returns
    -------
    pandas.DataFrame
        Always 7 x 24 int64 counts: index ``weekday`` (``"Monday"`` … ``"Sunday"``), columns
        ``hour`` (0 … 23), zeros where nothing started.

    Examples
    --------
    >>> profile = hourly_profile(df, tz="Europe/Istanbul")   # doctest: +SKIP
    >>> profile.loc["Monday", 9]                            # doctest: +SKIP
    42
    """
    tz = check_tz(tz, "hourly_profile")
    _require_columns(df, ("started_at",), "hourly_profile")
    started = _as_us(df["started_at"], kind="M")
    started = started[started != _NAT]
    local = pd.DatetimeIndex(_timestamps(started)).tz_convert(tz)
    cells = np.asarray(local.day_of_week, dtype=np.int64) * 24 + np.asarray(
        local.hour, dtype=np.int64
    )
    counts = np.bincount(cells, minlength=7 * 24).astype(np.int64).reshape(7, 24)
    profile = pd.DataFrame(
        counts,
        index=pd.Index(list(WEEKDAYS), name="weekday"),
        columns=pd.RangeIndex(24, name="hour"),
    )
    profile.attrs["tz"] = str(tz)  # so a plot of the profile can name its time zone
    return profile


def explode_tasks(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (session, task): the long form of ``task_uuids``.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame (columns ``conversation_uuid``, ``uuid``, ``task_uuids``).

    Returns
    -------
    pandas.DataFrame
        Columns ``conversation_uuid``, ``uuid``, ``task_uuid`` (``string[pyarrow]``) with a
        ``RangeIndex``, in frame order then list order. Sessions without tasks produce no row;
        null entries inside a list are dropped. Built with Arrow (``list_flatten``,
        ``list_parent_indices``), not a Python loop.

    Examples
    --------
    >>> explode_tasks(df).groupby("task_uuid").size()   # doctest: +SKIP
    """
    _require_columns(df, ("conversation_uuid", "uuid", "task_uuids"), "explode_tasks")
    lists = pa.array(df["task_uuids"], from_pandas=True)
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    if not pa.types.is_list(lists.type) and not pa.types.is_large_list(lists.type):
        if len(lists) == 0:
            lists = pa.array([], type=pa.list_(pa.string()))
        else:
            raise ValueError("explode_tasks: task_uuids must hold lists of strings")
    tasks = pc.list_flatten(lists)
    parents = pc.list_parent_indices(lists)
    if tasks.null_count:
        valid = pc.is_valid(tasks)
        tasks = tasks.filter(valid)
        parents = parents.filter(valid)

    def take(column: str) -> pa.Array:
        values = pa.array(df[column], type=pa.string(), from_pandas=True)
        return values.take(parents)

    table = pa.table(
        {
            "conversation_uuid": take("conversation_uuid"),
            "uuid": take("uuid"),
            "task_uuid": tasks.cast(pa.string()),
        }
    )
    return table.to_pandas(types_mapper=lambda _t: _STRING_DTYPE)
