"""Statistics wherever the sessions are: a pandas frame, a snapshot root, Polars, DuckDB, Spark.

:func:`session_stats`, :func:`activity` and :func:`hourly_profile` here take a pandas
DataFrame (computed by :mod:`mihu_frames.stats`, as before) or

- a snapshot root (a path or URI): DuckDB scans its files (:func:`source.latest_dataset`,
  the one place a root is read), bounded in memory and spilling to disk, so a root larger
  than memory never becomes a frame;
- a Polars DataFrame or LazyFrame, or a DuckDB relation: computed by DuckDB;
- a PySpark DataFrame: computed by its Spark session, only the small result collected.

Every engine runs the same SQL (:mod:`mihu_frames.engines.compute`) and returns the frame the
pandas path returns on the same sessions: rows, labels, dtypes and order.

Modules: ``source`` (reading a root), ``backends`` (DuckDB and Spark, the SQL spellings that
differ), ``compute`` (the statistics as SQL, and the Python that finishes them).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pandas.tseries.offsets import BaseOffset

from mihu_frames import stats as _pandas
from mihu_frames.engines import compute
from mihu_frames.engines.backends import Backend, backend_of
from mihu_frames.engines.source import latest_dataset
from mihu_frames.stats import ActivityTable, By, SessionStats, Side

__all__ = [
    "Backend",
    "activity",
    "backend_of",
    "hourly_profile",
    "is_frame",
    "latest_dataset",
    "overview",
    "session_stats",
]

#: What the statistics take: a pandas DataFrame, a root path or URI, a Polars DataFrame or
#: LazyFrame, a DuckDB relation or a PySpark DataFrame.
Sessions = Any


def is_frame(obj: object) -> bool:
    """Whether ``obj`` is a pandas DataFrame (computed in pandas) rather than another source."""
    return isinstance(obj, pd.DataFrame)


def session_stats(df: Sessions, by: By = None) -> SessionStats:
    """Session counts and duration statistics, overall or per group, on any source.

    The same result as :func:`mihu_frames.stats.session_stats` (see it for every column),
    computed where the sessions are.

    Parameters
    ----------
    df : pandas.DataFrame, root path or URI, Polars, DuckDB or PySpark frame
        The sessions: a frame, or a snapshot root (path or URI) computed over its files.
        Other engines need the columns ``started_at``, ``ended_at``, ``is_open``,
        ``last_activity_at``, ``task_count``, ``evaluated_at``, ``summary_generated_at``
        (durations are ``ended_at - started_at``, as the frame defines ``duration``).
    by : str or list of str, optional
        Column(s) to group by, as ``df.groupby(by, observed=True, dropna=False, sort=True)``.

    Returns
    -------
    SessionStats

    Raises
    ------
    TypeError
        An object none of the engines takes (the message names its type).
    ValueError
        A missing column, or a Spark DataFrame without a running session.
    ImportError
        The engine's extra is not installed (the message says which ``pip install``).

    Examples
    --------
    >>> import mihu_frames as mf
    >>> mf.session_stats("data/snapshots", by="agent_uuid")        # doctest: +SKIP
    >>> mf.session_stats(spark.read.parquet("s3://bucket/root/sessions"))  # doctest: +SKIP
    """
    if is_frame(df):
        return _pandas.session_stats(df, by=by)
    return compute.session_stats(backend_of(df, "session_stats"), by=by)


def activity(
    df: Sessions,
    freq: str | BaseOffset | pd.Timedelta = "1D",
    tz: str | object = "UTC",
    by: By = None,
    *,
    closed: Side | None = None,
    label: Side | None = None,
) -> ActivityTable:
    """Sessions started, ended, active and running concurrently per bucket, on any source.

    The same result as :func:`mihu_frames.stats.activity` (pandas' resample buckets, the
    half-open time model, time zones and DST: see it), computed where the sessions are.

    Parameters
    ----------
    df : pandas.DataFrame, root path or URI, Polars, DuckDB or PySpark frame
        The sessions (columns ``started_at``, ``ended_at``, ``fetched_at`` and those in
        ``by``), or a snapshot root.
    freq : str, DateOffset or Timedelta, default ``"1D"``
        Bucket length as a pandas offset.
    tz : str or tzinfo, default ``"UTC"``
        Time zone of the buckets.
    by : str or list of str, optional
        Column(s) to group by.
    closed, label : {"left", "right"}, optional
        As in ``DataFrame.resample``.

    Returns
    -------
    ActivityTable

    Examples
    --------
    >>> mf.activity("data/snapshots", freq="W", tz="Europe/Istanbul")   # doctest: +SKIP
    """
    if is_frame(df):
        return _pandas.activity(df, freq, tz, by, closed=closed, label=label)
    backend = backend_of(df, "activity")
    result: ActivityTable = compute.activity(backend, freq, tz, by, closed=closed, label=label)
    return result


def hourly_profile(df: Sessions, tz: str | object = "UTC") -> pd.DataFrame:
    """Sessions started per weekday and hour of day, in local time, on any source.

    The same result as :func:`mihu_frames.stats.hourly_profile`.

    Parameters
    ----------
    df : pandas.DataFrame, root path or URI, Polars, DuckDB or PySpark frame
        The sessions (column ``started_at``), or a snapshot root.
    tz : str or tzinfo, default ``"UTC"``
        Time zone whose wall clock defines weekday and hour.

    Returns
    -------
    pandas.DataFrame
        7 x 24 int64 counts, ``weekday`` by ``hour``.

    Examples
    --------
    >>> mf.hourly_profile("data/snapshots", tz="Europe/Istanbul")   # doctest: +SKIP
    """
    if is_frame(df):
        return _pandas.hourly_profile(df, tz=tz)
    return compute.hourly_profile(backend_of(df, "hourly_profile"), tz=tz)


def overview(df: Sessions) -> dict[str, Any]:
    """Rows, conversations, first and last start, last fetch and ended sessions of a source
    that is not a pandas frame (what :func:`mihu_frames.summary_text` says besides the
    statistics)."""
    return compute.overview(backend_of(df, "summary_text"))
