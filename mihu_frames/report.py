"""Statistics as text for people: what ``mihu-frames stats`` prints.

Pure functions of a sessions frame that return strings, built on :mod:`mihu_frames.stats`:

- :func:`summary_text`: the short default (six lines: sessions, conversations and open ones,
  the period, median and p90 duration, the busiest day and hour, the most sessions at once);
- :func:`stats_text`: the full :func:`~mihu_frames.stats.session_stats` table, overall or by
  group;
- :func:`activity_text`: :func:`~mihu_frames.stats.activity` per bucket, each bucket written
  as the days or hours it covers, the partial last one marked;
- :func:`hourly_text`: the weekday x hour profile, one line per hour.

Numbers are rounded for reading (:func:`~mihu_frames.stats.format_duration`: ``12m 14s``,
``1h 02m``); the frames the library returns keep them exact. Dates and hours are in the time
zone asked for. Text is plain, lines end without trailing spaces, and every function takes
the same ``tz`` so the CLI can pass its ``--tz`` through.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import pandas as pd
from pandas.tseries.offsets import BaseOffset

from mihu_frames.engines import activity, hourly_profile, is_frame, overview, session_stats
from mihu_frames.stats import (
    WEEKDAYS,
    By,
    Side,
    _freq_words,
    _table_buckets,
    check_tz,
    format_duration,
    format_stats,
)

__all__ = ["activity_text", "hourly_text", "stats_text", "summary_text"]

_NA = "-"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _day(stamp: pd.Timestamp) -> str:
    return f"{stamp:%a %Y-%m-%d}"


def _busiest_day(values: pd.Series) -> pd.Timestamp:
    # pandas-stubs type idxmax as any hashable; activity's index is a DatetimeIndex
    return cast(pd.Timestamp, values.idxmax())


def _rows(labels: Sequence[str], values: Sequence[str]) -> list[str]:
    width = max(len(label) for label in labels)
    return [
        f"{label:<{width}}  {value}".rstrip() for label, value in zip(labels, values, strict=True)
    ]


def summary_text(df: pd.DataFrame, tz: str = "UTC") -> str:
    """The short summary: a few lines that say what the data holds.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame.
    tz : str, default ``"UTC"``
        Time zone of the dates and hours shown.

    Returns
    -------
    str
        At most six lines, no trailing newline: sessions (conversations, open), the period
        of session starts and when the data was fetched, median and p90 duration of ended
        sessions, the day with the most sessions started, the hour of day with the most
        starts (and its busiest weekday), and the most sessions running at once.

    Examples
    --------
    >>> print(summary_text(df, tz="Europe/Berlin"))        # doctest: +SKIP
    sessions      3,051 in 6 conversations (3 open)
    started       Mon 2026-01-05 to Sun 2026-11-01 (Europe/Berlin), fetched 2026-11-01 01:00
    duration      median 6m 02s, p90 26m 15s (3,048 ended sessions)
    busiest day   Wed 2026-07-01: 22 sessions started
    busiest hour  12:00-13:00: 287 sessions started (9.4%), most on Wednesdays
    at once       up to 4 sessions, first on Fri 2026-08-21
    """
    check_tz(tz, "summary_text")
    facts = _facts(df)
    stats = session_stats(df)
    labels = ["sessions"]
    values = [
        f"{facts['n']:,} in {_count(facts['conversations'], 'conversation')} "
        f"({int(stats['open_sessions'].sum()):,} open)"
    ]
    if not facts["started"]:
        return "\n".join(_rows(labels, values))

    first, last = (
        pd.Timestamp(facts[k], unit="us", tz="UTC").tz_convert(tz) for k in ("first", "last")
    )
    period = f"{_day(first)} to {_day(last)} ({tz})"
    if facts["fetched"] is not None:
        fetched = pd.Timestamp(facts["fetched"], unit="us", tz="UTC").tz_convert(tz)
        period += f", fetched {fetched:%Y-%m-%d %H:%M}"
    labels.append("started")
    values.append(period)

    ended = facts["ended"]
    labels.append("duration")
    if ended:
        row = stats.iloc[0]
        values.append(
            f"median {format_duration(row['median_duration'])}, "
            f"p90 {format_duration(row['p90_duration'])} ({_count(ended, 'ended session')})"
        )
    else:
        values.append("no ended session yet")

    daily = activity(df, "D", tz=tz)
    busiest = _busiest_day(daily["started"])
    labels.append("busiest day")
    values.append(f"{_day(busiest)}: {_count(int(daily['started'][busiest]), 'session')} started")

    profile = hourly_profile(df, tz=tz)
    per_hour = profile.sum(axis=0)
    hour = int(cast(int, per_hour.idxmax()))  # stubs: hashable; the columns are hours 0-23
    weekday = str(profile[hour].idxmax())
    labels.append("busiest hour")
    values.append(
        f"{hour:02d}:00-{(hour + 1) % 24:02d}:00: {_count(int(per_hour[hour]), 'session')} "
        f"started ({per_hour[hour] / facts['started']:.1%}), most on {weekday}s"
    )

    peak = int(daily["peak_concurrent"].max())
    labels.append("at once")
    values.append(
        f"up to {_count(peak, 'session')}, first on {_day(_busiest_day(daily['peak_concurrent']))}"
        if peak
        else "no session with a duration"
    )
    return "\n".join(_rows(labels, values))


def _facts(df: Any) -> dict[str, Any]:
    """Rows, conversations, first and last start (µs), last fetch (µs) and ended sessions."""
    if not is_frame(df):
        return overview(df)
    started = df["started_at"].dropna()
    fetched = df["fetched_at"].dropna()

    def micros(value: pd.Timestamp) -> int:
        return int(value.value // 1000)  # .value is in nanoseconds

    return {
        "n": len(df),
        "conversations": int(df["conversation_uuid"].nunique()) if "conversation_uuid" in df else 0,
        "first": micros(started.min()) if len(started) else None,
        "last": micros(started.max()) if len(started) else None,
        "started": len(started),
        "fetched": micros(fetched.max()) if len(fetched) else None,
        "ended": int(df["duration"].notna().sum()),
    }


def stats_text(df: pd.DataFrame, by: By = None, tz: str = "UTC") -> str:
    """The full :func:`~mihu_frames.stats.session_stats` table, rounded for reading.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame.
    by : str or list of str, optional
        Group by these columns (one row per group), as in ``session_stats``.
    tz : str, default ``"UTC"``
        Time zone of the ``first_started_at`` and ``last_activity_at`` columns.

    Returns
    -------
    str
        A title line, then the table of :func:`~mihu_frames.stats.format_stats` (the column
        names, ``12m 14s``, ``76.3%``; ``-`` where a group has no value), no trailing newline.

    Examples
    --------
    >>> print(stats_text(df, by="agent_uuid"))             # doctest: +SKIP
    """
    check_tz(tz, "stats_text")
    stats = pd.DataFrame(session_stats(df, by=by))
    for column in ("first_started_at", "last_activity_at"):
        stats[column] = stats[column].dt.tz_convert(tz)
    keys = [by] if isinstance(by, str) else list(by or [])
    title = "session statistics" + (f" by {', '.join(keys)}" if keys else "")
    title += f" (durations over ended sessions, times in {tz})"
    table = format_stats(stats, na=_NA)
    if not keys:
        table.index = [""] * len(table)
    lines = table.to_string().splitlines() if len(table) else ["(no sessions)"]
    return "\n".join([title, *(line.rstrip() for line in lines)])


def _bucket_text(start: pd.Timestamp, end: pd.Timestamp) -> str:
    """A bucket as the days or hours it covers: ``Tue 2026-03-17``, ``2026-03``,
    ``Mon 2026-03-16 - Sun 2026-03-22``, ``2026-03-17 14:00-15:00``."""
    if start == start.normalize() and end == end.normalize():
        last = end - pd.Timedelta(days=1)
        if start.day == 1 and end.day == 1 and last.month == start.month:
            return f"{start:%Y-%m}"
        if last.date() == start.date():
            return _day(start)
        return f"{_day(start)} - {_day(last)}"
    clock = "%H:%M"
    if start.utcoffset() != end.utcoffset():  # across a DST change: 02:00+0200-02:00+0100
        clock = "%H:%M%z"
    if start.date() == end.date() or end == end.normalize():
        return f"{start:%Y-%m-%d {clock}}-{end:{clock}}"
    return f"{start:%Y-%m-%d {clock}} - {end:%Y-%m-%d {clock}}"


def activity_text(
    df: pd.DataFrame,
    freq: str | BaseOffset | pd.Timedelta = "1D",
    tz: str = "UTC",
    *,
    closed: Side | None = None,
    label: Side | None = None,
    last: int | None = None,
) -> str:
    """:func:`~mihu_frames.stats.activity` per bucket, one line each, for reading.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame.
    freq, tz, closed, label
        As in :func:`~mihu_frames.stats.activity`.
    last : int, optional
        Show only the last ``last`` buckets (and say how many were left out).

    Returns
    -------
    str
        A title line (``activity per week (Mon–Sun), Europe/Berlin``), the table (``bucket``
        written as the span it covers, then ``started``, ``ended``, ``active_sessions``,
        ``peak_concurrent`` and ``busy_time``) and, when the last bucket ends after the data
        was fetched, a ``*`` on it and a note saying so. No trailing newline.

    Examples
    --------
    >>> print(activity_text(df, "W", tz="Europe/Berlin", last=8))   # doctest: +SKIP
    """
    check_tz(tz, "activity_text")
    table = activity(df, freq, tz=tz, closed=closed, label=label)
    buckets = _table_buckets(table)
    title = f"activity per {_freq_words(buckets.offset, buckets.closed)}, {tz}"
    if table.empty:
        return f"{title}\n(no sessions)"
    # A bucket closed on the right starts 1 µs after its lattice point: read edges to the
    # minute (in UTC: every zone's offset is whole minutes, and no local time is ambiguous).
    minute = 60_000_000
    starts, ends = (
        pd.DatetimeIndex(pd.to_datetime(edges - edges % minute, unit="us", utc=True)).tz_convert(tz)
        for edges in (buckets.start, buckets.end)
    )
    partial = buckets.partial
    shown = format_stats(table, na=_NA)
    shown.index = pd.Index(
        [
            _bucket_text(start, end) + (" *" if late else "")
            for start, end, late in zip(starts, ends, partial, strict=True)
        ],
        name="bucket",
    )
    skipped = 0
    if last is not None and last < len(shown):
        skipped = len(shown) - max(last, 0)
        shown = shown.iloc[skipped:]
    lines = [title]
    if skipped:
        lines.append(f"({_count(skipped, 'earlier bucket')} not shown)")
    lines += [line.rstrip() for line in shown.to_string().splitlines()]
    if partial[-1] and len(shown):
        fetched = buckets.fetched_at.tz_convert(tz) if buckets.fetched_at is not None else None
        lines.append(f"* partial: the data was fetched {fetched:%Y-%m-%d %H:%M}, before it ends")
    return "\n".join(lines)


def hourly_text(df: pd.DataFrame, tz: str = "UTC") -> str:
    """The weekday x hour profile of sessions started, one line per hour of the day.

    Parameters
    ----------
    df : pandas.DataFrame
        A sessions frame.
    tz : str, default ``"UTC"``
        Time zone whose wall clock defines weekday and hour.

    Returns
    -------
    str
        A title line, then 24 rows (``00-01`` … ``23-00``) by 7 weekday columns and a total
        column, and a total row: 27 lines, about 60 characters wide. No trailing newline.

    Examples
    --------
    >>> print(hourly_text(df, tz="Europe/Istanbul"))       # doctest: +SKIP
    """
    check_tz(tz, "hourly_text")
    profile = hourly_profile(df, tz=tz)
    hours = profile.T
    hours.columns = [day[:3] for day in WEEKDAYS]
    hours["total"] = hours.sum(axis=1)
    hours.loc["total"] = hours.sum(axis=0)
    hours.index = [f"{h:02d}-{(h + 1) % 24:02d}" for h in range(24)] + ["total"]
    body = hours.map(lambda v: f"{v:,}").to_string()
    title = f"sessions started by hour of day and weekday ({tz})"
    return "\n".join([title, *(line.rstrip() for line in body.splitlines())])
