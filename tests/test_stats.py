"""Tests for mihu_frames.stats: every statistic against a brute-force computation.

Frames are generated here from plain Python records (microseconds since the epoch, or None);
the brute-force references loop over those records directly, so they share nothing with the
vectorised code under test beyond the definitions in the docstrings.
"""

from __future__ import annotations

import datetime as dt
import pickle
from fractions import Fraction
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mihu_frames import schema, stats
from mihu_frames.stats import activity, explode_tasks, hourly_profile, session_stats

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

STATS_COLUMNS = [
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
]
ACTIVITY_COLUMNS = ["started", "ended", "active_sessions", "peak_concurrent", "busy_time"]


def us(text: str) -> int:
    """Microseconds since the epoch of an ISO timestamp (UTC unless it carries an offset)."""
    stamp = dt.datetime.fromisoformat(text)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return (stamp - EPOCH) // dt.timedelta(microseconds=1)


def to_datetime(value: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=value)


# --------------------------------------------------------------------------------------------
# Frame generation
# --------------------------------------------------------------------------------------------

_TS_FIELDS = set(schema.TIMESTAMP_FIELDS) | {"fetched_at"}
_TD_FIELDS = {"duration", "time_to_evaluation", "time_to_summary", "idle_before_end"}


def frame_from_records(records: list[dict]) -> pd.DataFrame:
    """Build a sessions frame (exact schema dtypes) from records of ints / strings / None."""
    columns = {}
    for field in schema.SESSIONS_SCHEMA:
        values = [record.get(field.name) for record in records]
        if field.name in _TS_FIELDS or field.name in _TD_FIELDS:
            columns[field.name] = pa.array(values, type=pa.int64()).cast(field.type)
        elif field.name == "task_uuids":
            columns[field.name] = pa.array([v or [] for v in values], type=field.type)
        elif field.name == "task_count":
            columns[field.name] = pa.array(
                [len(r.get("task_uuids") or []) for r in records], type=pa.int64()
            )
        elif field.name == "is_open":
            columns[field.name] = pa.array([r.get("ended_at") is None for r in records])
        else:
            columns[field.name] = pa.array(values, type=field.type)
    return schema.to_pandas(pa.table(columns, schema=schema.SESSIONS_SCHEMA))


def make_records(seed: int, n: int, t0: int, span: int) -> list[dict]:
    """Random sessions in [t0, t0 + span): short, long (crossing days), zero-length, open,
    back-to-back chains, reversed (end before start), without start; starts and ends often on
    whole hours so bucket edges are hit exactly."""
    rng = np.random.default_rng(seed)
    records: list[dict] = []
    previous_end: int | None = None
    for i in range(n):
        kind = rng.choice(
            ["short", "long", "zero", "open", "chain", "reversed", "nostart"],
            p=[0.5, 0.12, 0.08, 0.12, 0.12, 0.02, 0.04],
        )
        start = t0 + int(rng.integers(0, span))
        if rng.random() < 0.2:
            start -= start % HOUR
        if kind == "chain" and previous_end is not None:
            start = previous_end
        end: int | None
        if kind == "zero":
            end = start
        elif kind == "long":
            end = start + int(rng.integers(HOUR, 40 * HOUR))
        elif kind == "reversed":
            end = start - int(rng.integers(1, HOUR))
        elif kind == "open":
            end = None
        else:
            end = start + int(rng.integers(1, 3 * HOUR))
        if end is not None and kind not in ("zero", "reversed") and rng.random() < 0.15:
            end = max(end - end % HOUR, start + 1)
        record: dict = {
            "conversation_uuid": f"c{int(rng.integers(0, 3))}",
            "uuid": f"s{seed}-{i}",
            "status": ["active", "completed", None][int(rng.integers(0, 3))],
            "type": ["text", "voice", None][int(rng.integers(0, 3))],
            "agent_uuid": ["a1", "a2", "a3", None][int(rng.integers(0, 4))],
            "started_at": start,
            "ended_at": end,
        }
        if kind == "nostart":
            record["started_at"] = None
        if kind == "open":
            # Open sessions run to fetched_at (sometimes right at the start: zero length).
            fetched = start + (0 if rng.random() < 0.1 else int(rng.integers(1, 20 * HOUR)))
        else:
            fetched = (end if end is not None else start) + int(rng.integers(0, 5 * HOUR))
        record["fetched_at"] = fetched
        if record["started_at"] is not None and end is not None:
            record["duration"] = end - start
        if rng.random() < 0.9:
            record["last_activity_at"] = start + int(rng.integers(0, HOUR))
        if end is not None and rng.random() < 0.5:
            record["evaluated_at"] = end + int(rng.integers(0, HOUR))
        if end is not None and rng.random() < 0.4:
            record["summary_generated_at"] = end + int(rng.integers(0, HOUR))
        record["task_uuids"] = [
            f"t{int(k)}" for k in rng.integers(0, 10, size=int(rng.integers(0, 4)))
        ]
        if end is not None and kind != "reversed":
            previous_end = end
        records.append(record)
    # A group whose sessions are all open: NaT durations in session_stats.
    for j in range(3):
        start = t0 + int(rng.integers(0, span))
        records.append(
            {
                "conversation_uuid": "c9",
                "uuid": f"s{seed}-open-{j}",
                "agent_uuid": "only-open",
                "status": "active",
                "type": "voice",
                "started_at": start,
                "ended_at": None,
                "fetched_at": start + int(rng.integers(1, 30 * HOUR)),
                "last_activity_at": start,
                "task_uuids": ["t1"] * j,
            }
        )
    return records


# --------------------------------------------------------------------------------------------
# Brute-force references
# --------------------------------------------------------------------------------------------


def brute_session_stats(records: list[dict]) -> dict:
    durations = sorted(r["duration"] for r in records if r.get("duration") is not None)
    row: dict = {
        "sessions": len(records),
        "open_sessions": sum(r.get("ended_at") is None for r in records),
    }
    if durations:
        total = sum(durations)
        row["total_duration"] = total
        row["mean_duration"] = round(Fraction(total, len(durations)))  # half to even
        # The documented contract: numpy's linear quantile, rounded to the microsecond.
        row["median_duration"] = int(np.rint(np.quantile(np.array(durations), 0.5)))
        row["p90_duration"] = int(np.rint(np.quantile(np.array(durations), 0.9)))
        row["max_duration"] = max(durations)
    else:
        for name in STATS_COLUMNS[2:7]:
            row[name] = None
    starts = [r["started_at"] for r in records if r.get("started_at") is not None]
    row["first_started_at"] = min(starts) if starts else None
    activities = [r["last_activity_at"] for r in records if r.get("last_activity_at") is not None]
    row["last_activity_at"] = max(activities) if activities else None
    row["tasks_per_session"] = sum(len(r.get("task_uuids") or []) for r in records) / len(records)
    row["evaluated_share"] = sum(r.get("evaluated_at") is not None for r in records) / len(records)
    row["summarized_share"] = sum(r.get("summary_generated_at") is not None for r in records) / len(
        records
    )
    return row


def stats_frame(rows: list[dict], index: pd.Index) -> pd.DataFrame:
    data = {}
    for name in STATS_COLUMNS:
        values = [row[name] for row in rows]
        if name in ("sessions", "open_sessions"):
            data[name] = np.array(values, dtype=np.int64)
        elif name.endswith("_duration"):
            data[name] = pd.array(
                [pd.NaT if v is None else pd.Timedelta(microseconds=v) for v in values],
                dtype="timedelta64[us]",
            )
        elif name.endswith("_at"):
            data[name] = pd.array(
                [pd.NaT if v is None else pd.Timestamp(to_datetime(v)) for v in values],
                dtype="datetime64[us, UTC]",
            )
        else:
            data[name] = np.array(values, dtype=np.float64)
    return pd.DataFrame(data, index=index)


def interval(record: dict) -> tuple[int, int] | None:
    """The occupied half-open interval of a record, or None if it occupies nothing."""
    start = record.get("started_at")
    if start is None:
        return None
    end = record.get("ended_at")
    if end is None:
        end = record.get("fetched_at")
    if end is None or end <= start:
        return None
    return start, end


def local_midnight(day: dt.date, tz: str) -> int:
    return us(dt.datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).isoformat())


def month_start(day: dt.date, months: int = 0) -> dt.date:
    """The first of ``day``'s month, moved by ``months``."""
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def reference_buckets(freq: str, tz: str, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """(start, end, label) of consecutive buckets covering [lo, hi], from zoneinfo and the
    calendar rules pandas' resample follows (written out here, not taken from pandas):

    - fixed lengths step from the local midnight of lo's day, labelled by their start, closed
      on the left ("h", "15min"; "h/right" is closed and labelled on the right);
    - "D", "2D": local days from lo's day, labelled by their first day;
    - "W": Monday to Sunday labelled by the Sunday; "W-MON": Tuesday to Monday labelled by
      the Monday; "2W": two Monday-Sunday weeks, lo's week the second, labelled by the last
      Sunday;
    - "MS", "QS": months and quarters labelled by their first day; "ME": months labelled by
      their last day.
    """
    zone = ZoneInfo(tz)
    first = to_datetime(lo).astimezone(zone).date()
    last = to_datetime(hi).astimezone(zone).date()
    if freq in ("h", "15min", "h/right"):
        step = 15 * MINUTE if freq == "15min" else HOUR
        origin = local_midnight(first, tz)
        shift = 1 if freq == "h/right" else 0  # (b0, b1] holds the µs of [b0 + 1, b1 + 1)
        k0, k1 = (lo - shift - origin) // step, (hi - shift - origin) // step
        buckets = [(origin + k * step, origin + (k + 1) * step) for k in range(k0, k1 + 1)]
        if freq == "h/right":
            return [(a + 1, b + 1, b) for a, b in buckets]
        return [(a, b, a) for a, b in buckets]
    days = dt.timedelta(days=1)
    if freq in ("D", "2D", "W", "W-MON", "2W"):
        length, start = {
            "D": (1, first),
            "2D": (2, first),
            "W": (7, first - first.weekday() * days),
            "W-MON": (7, first - ((first.weekday() - 1) % 7) * days),
            "2W": (14, first - (first.weekday() + 7) * days),
        }[freq]
        starts = [start]
        while starts[-1] <= last:
            starts.append(starts[-1] + length * days)
        labels = starts if freq in ("D", "2D") else [s + (length - 1) * days for s in starts]
    else:
        months = 3 if freq == "QS" else 1
        start = month_start(first, -((first.month - 1) % months))
        starts = [start]
        while starts[-1] <= last:
            starts.append(month_start(starts[-1], months))
        labels = [month_start(s, 1) - days for s in starts] if freq == "ME" else starts
    return [
        (local_midnight(a, tz), local_midnight(b, tz), local_midnight(label, tz))
        for a, b, label in zip(starts, starts[1:], labels, strict=False)
    ]


def brute_activity(records: list[dict], freq: str, tz: str) -> pd.DataFrame:
    """Per bucket, by direct counting, interval intersection, and concurrency sampled at the
    bucket start and at every event instant inside the bucket; then trimmed to the first and
    last non-empty bucket. ``freq`` is a key of :func:`reference_buckets`."""
    records = [r for r in records if r.get("started_at") is not None]
    intervals = [iv for iv in map(interval, records) if iv is not None]
    instants = [r["started_at"] for r in records]
    instants += [r["ended_at"] for r in records if r.get("ended_at") is not None]
    instants += [end - 1 for _, end in intervals]
    buckets = reference_buckets(freq, tz, min(instants), max(instants))
    events = sorted({t for iv in intervals for t in iv})

    def running(t: int) -> int:
        return sum(1 for s, e in intervals if s <= t < e)

    rows = []
    for b0, b1, label in buckets:
        started = sum(1 for r in records if b0 <= r["started_at"] < b1)
        ended = sum(
            1 for r in records if r.get("ended_at") is not None and b0 <= r["ended_at"] < b1
        )
        active = sum(1 for s, e in intervals if s < b1 and e > b0)
        busy = sum(max(0, min(e, b1) - max(s, b0)) for s, e in intervals)
        peak = max(running(t) for t in [b0, *(t for t in events if b0 < t < b1)])
        rows.append((label, started, ended, active, peak, busy))
    nonzero = [i for i, row in enumerate(rows) if any(row[1:])]
    rows = rows[nonzero[0] : nonzero[-1] + 1]
    index = pd.DatetimeIndex(
        pd.array([pd.Timestamp(to_datetime(r[0])) for r in rows], dtype="datetime64[us, UTC]"),
        name="bucket",
    ).tz_convert(tz)
    return pd.DataFrame(
        {
            "started": np.array([r[1] for r in rows], dtype=np.int64),
            "ended": np.array([r[2] for r in rows], dtype=np.int64),
            "active_sessions": np.array([r[3] for r in rows], dtype=np.int64),
            "peak_concurrent": np.array([r[4] for r in rows], dtype=np.int64),
            "busy_time": np.array([r[5] for r in rows], dtype=np.int64).view("timedelta64[us]"),
        },
        index=index,
    )


def group_key(record: dict, by: list[str]) -> tuple:
    """A record's group; a session fetched without a status/type filter is "untagged"."""
    return tuple(
        "untagged"
        if column in ("status", "type") and record.get(column) is None
        else record.get(column)
        for column in by
    )


def sorted_keys(keys: set[tuple]) -> list[tuple]:
    """Sort group keys as pandas does: values ascending, missing last, column by column; the
    status/type category "untagged" comes after the known values."""
    return sorted(keys, key=lambda key: [(v is None, v == "untagged", v or "") for v in key])


# --------------------------------------------------------------------------------------------
# session_stats
# --------------------------------------------------------------------------------------------

WINDOWS = {
    "berlin-march": (us("2024-03-29T12:00:00"), 3 * DAY),
    "berlin-october": (us("2024-10-25T12:00:00"), 4 * DAY),
    "new-york-march": (us("2024-03-08T12:00:00"), 4 * DAY),
    "new-york-november": (us("2024-11-01T12:00:00"), 4 * DAY),
    "spring": (us("2024-02-20T00:00:00"), 100 * DAY),  # months, a quarter, DST in March
}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_session_stats_overall(seed):
    records = make_records(seed, 300, *WINDOWS["berlin-march"])
    result = session_stats(frame_from_records(records))
    expected = stats_frame([brute_session_stats(records)], pd.RangeIndex(1))
    pd.testing.assert_frame_equal(result, expected)
    assert list(result.columns) == STATS_COLUMNS


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("by", ["agent_uuid", ["agent_uuid", "type"], ["status"]])
def test_session_stats_by(seed, by):
    check_session_stats_by(seed, by)


def test_session_stats_by_lexsort_fallback(monkeypatch):
    monkeypatch.setattr(stats, "_KEY_LIMIT", 0)
    check_session_stats_by(5, ["type", "agent_uuid"])


def check_session_stats_by(seed, by):
    records = make_records(seed, 300, *WINDOWS["new-york-november"])
    df = frame_from_records(records)
    columns = [by] if isinstance(by, str) else by
    keys = sorted_keys({group_key(r, columns) for r in records})
    rows = [brute_session_stats([r for r in records if group_key(r, columns) == k]) for k in keys]
    result = session_stats(df, by=by)
    if len(columns) == 1:
        assert [None if pd.isna(v) else v for v in result.index] == [k[0] for k in keys]
        assert result.index.name == columns[0]
    else:
        assert isinstance(result.index, pd.MultiIndex)
        assert list(result.index.names) == columns
        assert [tuple(None if pd.isna(v) else v for v in key) for key in result.index] == keys
    expected = stats_frame(rows, result.index)
    pd.testing.assert_frame_equal(result, expected)
    assert result["sessions"].sum() == len(records)


def test_session_stats_open_only_group_has_nat_durations():
    records = make_records(7, 100, *WINDOWS["berlin-october"])
    result = session_stats(frame_from_records(records), by="agent_uuid")
    row = result.loc["only-open"]
    assert row["sessions"] == 3
    assert row["open_sessions"] == 3
    for name in STATS_COLUMNS[2:7]:
        assert pd.isna(row[name]), name
    assert result.loc["a1", "sessions"] > 0


def test_session_stats_categorical_only_observed_groups():
    records = make_records(8, 200, *WINDOWS["berlin-october"])
    result = session_stats(frame_from_records(records), by="status")
    # "timed_out" is a category of the column but no session has it; sessions fetched without
    # a status filter form the "untagged" group.
    assert list(result.index) == ["active", "completed", "untagged"]


def test_session_stats_small_exact_values():
    t = us("2024-05-01T10:00:00")
    records = [
        {"uuid": "a", "started_at": t, "ended_at": t + 10 * SECOND, "duration": 10 * SECOND},
        {
            "uuid": "b",
            "started_at": t + 1,
            "ended_at": t + 21 * SECOND,
            "duration": 21 * SECOND - 1,
        },
        {"uuid": "c", "started_at": t + 5, "ended_at": None, "evaluated_at": t},
        {
            "uuid": "d",
            "started_at": t - 3,
            "ended_at": t + 100 * SECOND,
            "duration": 100 * SECOND + 3,
        },
    ]
    row = session_stats(frame_from_records(records)).iloc[0]
    assert row["sessions"] == 4
    assert row["open_sessions"] == 1
    assert row["total_duration"] == pd.Timedelta(microseconds=131 * SECOND + 2)
    assert row["median_duration"] == pd.Timedelta(microseconds=21 * SECOND - 1)
    # p90 of [10 s, 21 s - 1 µs, 100 s + 3 µs]: position 1.8 → 21 s - 1 + 0.8 * (79 s + 4 µs)
    assert row["p90_duration"] == pd.Timedelta(microseconds=21 * SECOND - 1 + 63_200_003)
    assert row["max_duration"] == pd.Timedelta(microseconds=100 * SECOND + 3)
    assert row["first_started_at"] == pd.Timestamp(to_datetime(t - 3))
    assert row["evaluated_share"] == 0.25


def test_session_stats_unknown_by_column():
    df = frame_from_records(make_records(0, 10, *WINDOWS["berlin-march"]))
    with pytest.raises(ValueError, match="not_a_column"):
        session_stats(df, by="not_a_column")
    with pytest.raises(ValueError, match="nope"):
        session_stats(df, by=["agent_uuid", "nope"])


def test_session_stats_empty_frame():
    empty = schema.empty_frame()
    expected_dtypes = session_stats(frame_from_records(make_records(0, 5, 0, DAY))).dtypes
    result = session_stats(empty)
    assert len(result) == 0
    assert list(result.columns) == STATS_COLUMNS
    pd.testing.assert_series_equal(result.dtypes, expected_dtypes)
    grouped = session_stats(empty, by=["agent_uuid", "type"])
    assert len(grouped) == 0
    assert list(grouped.index.names) == ["agent_uuid", "type"]
    pd.testing.assert_series_equal(grouped.dtypes, expected_dtypes)


# --------------------------------------------------------------------------------------------
# Display of session_stats: rounded text, exact values
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0s"),
        (1, "<1s"),
        (499_999, "<1s"),
        (500_000, "1s"),
        (42 * SECOND + 499_999, "42s"),
        (59 * SECOND + 500_000, "1m 00s"),
        (12 * MINUTE + 14 * SECOND + 333_817, "12m 14s"),
        (59 * MINUTE + 59 * SECOND + 500_000, "1h 00m"),
        (HOUR + 2 * MINUTE + 29 * SECOND + 999_999, "1h 02m"),
        (HOUR + 2 * MINUTE + 30 * SECOND, "1h 03m"),
        (23 * HOUR + 59 * MINUTE + 30 * SECOND, "1d 0h"),
        (2 * DAY + 3 * HOUR + 29 * MINUTE, "2d 3h"),
        (2 * DAY + 3 * HOUR + 30 * MINUTE, "2d 4h"),
        (400 * DAY, "400d 0h"),
        (-(12 * MINUTE + 14 * SECOND), "-12m 14s"),
        (-1, "-<1s"),
    ],
)
def test_format_duration(micros, text):
    assert stats.format_duration(pd.Timedelta(microseconds=micros)) == text
    assert stats.format_duration(dt.timedelta(microseconds=micros)) == text
    assert stats.format_duration(np.timedelta64(micros, "us")) == text
    assert stats.format_duration(np.timedelta64(micros * 1000, "ns")) == text


def test_format_duration_missing():
    assert stats.format_duration(pd.NaT) == "NaT"
    assert stats.format_duration(None, na="–") == "–"
    assert stats.format_duration(np.timedelta64("NaT"), na="") == ""


def test_format_duration_reads_back_within_half_its_last_unit():
    units = {"d": DAY, "h": HOUR, "m": MINUTE, "s": SECOND}
    rng = np.random.default_rng(5)
    values = np.exp(rng.uniform(np.log(SECOND), np.log(90 * DAY), size=3000)).astype(np.int64)
    for value in values.tolist():
        text = stats.format_duration(pd.Timedelta(microseconds=value))
        parts = text.split(" ")
        assert 1 <= len(parts) <= 2, text
        amounts = [(int(part[:-1]), part[-1]) for part in parts]
        assert [unit for _, unit in amounts] in (["s"], ["m", "s"], ["h", "m"], ["d", "h"])
        if len(parts) == 2:  # the second unit is below one of the first: 0-59 or 0-23
            assert amounts[1][0] < units[amounts[0][1]] // units[amounts[1][1]], text
        shown = sum(amount * units[unit] for amount, unit in amounts)
        assert abs(shown - value) <= units[amounts[-1][1]] // 2, (value, text)


SMALL_STATS_RECORDS = [
    {"uuid": "a", "started_at": us("2024-05-01T10:00:00"), "duration": 10 * SECOND},
    {"uuid": "b", "started_at": us("2024-05-01T10:00:00") + 1, "duration": 21 * SECOND - 1},
    {"uuid": "c", "started_at": us("2024-05-01T10:00:00") + 5, "evaluated_at": 0},
    {"uuid": "d", "started_at": us("2024-05-01T10:00:00") - 3, "duration": 100 * SECOND + 3},
]


def small_stats() -> pd.DataFrame:
    records = [
        {**r, "ended_at": r["started_at"] + r["duration"]} if "duration" in r else r
        for r in SMALL_STATS_RECORDS
    ]
    return session_stats(frame_from_records(records))


def wide_repr(frame: pd.DataFrame) -> str:
    with pd.option_context("display.width", 250, "display.max_columns", None):
        return repr(frame)


def test_session_stats_displays_rounded_under_its_column_names():
    result = small_stats()
    assert isinstance(result, stats.SessionStats)
    # total 131 s + 2 µs, mean 43.67 s, median 21 s - 1 µs, p90 84.2 s, max 100 s + 3 µs
    assert wide_repr(result).splitlines() == [
        "  sessions open_sessions total_duration mean_duration median_duration p90_duration"
        " max_duration  first_started_at last_activity_at tasks_per_session evaluated_share"
        " summarized_share",
        "0        4             1         2m 11s           44s             21s       1m 24s"
        "       1m 40s  2024-05-01 09:59              NaT              0.00           25.0%"
        "             0.0%",
    ]
    # Every name the display shows is a column: what it shows, code can index and sort by.
    assert wide_repr(result).splitlines()[0].split() == list(result.columns) == STATS_COLUMNS
    assert result["median_duration"].iloc[0] == pd.Timedelta(microseconds=21 * SECOND - 1)
    assert result.sort_values("median_duration").index.tolist() == [0]
    html = result._repr_html_()
    assert "<th>median_duration</th>" in html and ">median<" not in html
    assert "<td>1m 24s</td>" in html and "<td>25.0%</td>" in html
    assert "00:01:24" not in html


def test_session_stats_keeps_exact_values_behind_the_display():
    result = small_stats()
    plain = pd.DataFrame(result)
    assert type(plain) is pd.DataFrame
    assert result.equals(plain) and plain.equals(result)
    assert result.loc[0, "total_duration"] == pd.Timedelta(microseconds=131 * SECOND + 2)
    doubled = result[["mean_duration", "p90_duration"]] * 2
    assert isinstance(doubled, stats.SessionStats)
    assert doubled.loc[0, "p90_duration"] == pd.Timedelta(microseconds=2 * 84_200_002)
    assert (result["max_duration"] - result["median_duration"]).iloc[0] == pd.Timedelta(
        microseconds=79 * SECOND + 4
    )
    # Data exports are exact; so is pandas' own display of the plain frame.
    assert "0 days 00:01:24.200002" in result.to_string()
    assert "0 days 00:01:24.200002" in wide_repr(plain)
    assert "0.25" in result.to_csv()
    back = pickle.loads(pickle.dumps(result))
    assert isinstance(back, stats.SessionStats) and back.equals(result)
    table = pa.Table.from_pandas(result)
    assert table.column("p90_duration").to_pylist() == [dt.timedelta(microseconds=84_200_002)]


def test_session_stats_display_survives_selection_and_falls_back():
    result = session_stats(frame_from_records(make_records(3, 300, *WINDOWS["spring"])), by="type")
    top = result.sort_values("sessions", ascending=False).head(2)
    assert isinstance(top, stats.SessionStats)
    lines = wide_repr(top).splitlines()
    assert lines[0].split() == STATS_COLUMNS
    # Timestamps spanning months read as dates.
    assert lines[2].startswith("text ") and "  2024-02-21       2024-05-29  " in lines[2]
    # Rounded values: the column names set the width, not the microseconds.
    assert max(len(line) for line in lines) <= 185
    assert max(len(line) for line in pd.DataFrame(top).to_string().splitlines()) > 250
    # A frame that is no longer one column per label shows as pandas shows it.
    doubled = pd.concat([result, result], axis=1)
    assert "0 days" in wide_repr(doubled)


def test_display_formats_only_the_rows_it_shows(monkeypatch):
    records = make_records(6, 3000, *WINDOWS["spring"])
    result = session_stats(frame_from_records(records), by="uuid")
    assert len(result) == 3003
    calls = []
    original = stats.format_duration
    monkeypatch.setattr(stats, "format_duration", lambda *a: calls.append(1) or original(*a))
    with pd.option_context("display.max_rows", 60, "display.min_rows", 10):
        text = repr(result)
        html = result._repr_html_()
    assert text.endswith("[3003 rows x 12 columns]")
    assert "3003 rows × 12 columns" in html
    # Five duration columns of the 10 rows shown, in the text and in the HTML.
    assert len(calls) == 2 * 5 * 10
    assert text.count("\n") == 10 + 4  # header, index name, 10 rows, "...", blank, footer


def test_format_stats_on_activity_and_with_missing_values():
    t = us("2024-05-01T10:00:00")
    records = [
        {"uuid": "a", "started_at": t, "ended_at": t + 90 * MINUTE},
        {"uuid": "b", "started_at": t + 20 * MINUTE, "ended_at": t + 30 * MINUTE + 400_000},
    ]
    table = activity(frame_from_records(records), "h").pipe(stats.format_stats)
    assert table.index.equals(activity(frame_from_records(records), "h").index)
    assert table.to_dict("list") == {
        "started": ["2", "0"],
        "ended": ["1", "1"],
        "active_sessions": ["2", "1"],
        "peak_concurrent": ["2", "1"],
        "busy_time": ["1h 10m", "30m 00s"],
    }
    only_open = session_stats(frame_from_records([{"uuid": "o", "started_at": t}]))
    shown = stats.format_stats(only_open, na="–")
    assert list(shown.columns) == list(only_open.columns)
    assert shown.loc[0, "median_duration"] == "–"
    assert shown.loc[0, "first_started_at"] == "2024-05-01 10:00"
    assert shown.loc[0, "sessions"] == "1" and shown.loc[0, "evaluated_share"] == "0.0%"
    assert stats.format_stats(session_stats(schema.empty_frame())).shape == (0, 12)


# --------------------------------------------------------------------------------------------
# activity
# --------------------------------------------------------------------------------------------


#: Keys of reference_buckets and the activity() arguments they stand for.
FREQS = {
    "h/right": {"freq": "h", "closed": "right", "label": "right"},
}


@pytest.mark.parametrize(
    ("window", "tz", "freq"),
    [
        ("berlin-march", "Europe/Berlin", "D"),
        ("berlin-october", "Europe/Berlin", "D"),
        ("berlin-october", "Europe/Berlin", "h"),
        ("new-york-march", "America/New_York", "D"),
        ("new-york-november", "America/New_York", "D"),
        ("new-york-november", "America/New_York", "h"),
        ("new-york-november", "America/New_York", "h/right"),
        ("new-york-november", "America/New_York", "2D"),
        ("new-york-march", "UTC", "h"),
        ("berlin-march", "Europe/Berlin", "15min"),
        ("berlin-march", "Europe/Berlin", "W-MON"),
        ("berlin-march", "Europe/Berlin", "W"),
        ("spring", "Europe/Berlin", "W"),
        ("spring", "America/New_York", "W-MON"),
        ("spring", "America/New_York", "2W"),
        ("spring", "Europe/Berlin", "MS"),
        ("spring", "America/New_York", "ME"),
        ("spring", "UTC", "QS"),
        ("spring", "Asia/Kolkata", "D"),
        ("spring", "Europe/Berlin", "2D"),  # starts on the first event's day, not the epoch's
    ],
)
@pytest.mark.parametrize("seed", [10, 11])
def test_activity_against_brute_force(window, tz, freq, seed):
    records = make_records(seed, 250, *WINDOWS[window])
    result = activity(frame_from_records(records), tz=tz, **FREQS.get(freq, {"freq": freq}))
    pd.testing.assert_frame_equal(result, brute_activity(records, freq, tz))


def event_frame(df: pd.DataFrame, tz: str) -> pd.DataFrame:
    """Every instant activity() buckets (starts, ends, and the last microsecond of each
    occupied interval), with 1 in ``started`` / ``ended`` where it is such an event."""
    has_start = df["started_at"].notna()
    start, ended_at = df["started_at"][has_start], df["ended_at"][has_start]
    end = ended_at.fillna(df["fetched_at"][has_start])
    occupied_last = (end - pd.Timedelta(microseconds=1))[end.notna() & (end > start)]
    ends = ended_at.dropna()
    index = pd.DatetimeIndex(pd.concat([start, ends, occupied_last])).tz_convert(tz)
    flags = np.zeros((len(index), 2), dtype=np.int64)
    flags[: len(start), 0] = 1
    flags[len(start) : len(start) + len(ends), 1] = 1
    return pd.DataFrame(flags, index=index, columns=["started", "ended"])


def assert_matches_resample(result: pd.Series, expected: pd.Series) -> None:
    """``result`` equals pandas' resample on every bucket both have; the buckets only one of
    them has are empty (pandas' range follows its series, activity's all events)."""
    common = result.index.intersection(expected.index)
    assert len(common) > 0
    assert result.index.is_monotonic_increasing and expected.index.is_monotonic_increasing
    np.testing.assert_array_equal(result.loc[common].to_numpy(), expected.loc[common].to_numpy())
    assert (result.drop(common) == 0).all()
    assert (expected.drop(common) == 0).all()


RESAMPLE_CASES = [
    *[(freq, {}) for freq in ("W", "W-MON", "MS", "ME", "QS", "QE", "YS", "D", "h", "2W")],
    *[(freq, {}) for freq in ("15min", "7h", "2D", "3MS", "SME", "B")],
    ("W", {"closed": "left"}),
    ("W", {"label": "left"}),
    ("ME", {"closed": "left", "label": "left"}),
    ("h", {"closed": "right"}),
    ("D", {"closed": "right", "label": "right"}),
    ("MS", {"label": "right"}),
]


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
@pytest.mark.parametrize(("freq", "sides"), RESAMPLE_CASES)
def test_activity_buckets_are_pandas_resample_buckets(freq, sides, tz):
    window = WINDOWS["berlin-october"] if freq in ("h", "15min", "7h") else WINDOWS["spring"]
    df = frame_from_records(make_records(21, 400, *window))
    result = activity(df, freq, tz=tz, **sides)
    # What an analyst would type: starts per bucket, ends per bucket (of sessions that
    # started: activity ignores the others).
    started = df[df["started_at"].notna()]
    for column in ("started", "ended"):
        stamps = started[f"{column}_at"].dropna().dt.tz_convert(tz)
        expected = pd.Series(1, index=stamps).resample(freq, **sides).count()
        assert_matches_resample(result[column], expected)
    # All events in one series: the same range of buckets, so the same index exactly (pandas
    # adds an empty leading bucket to calendar offsets closed on the right).
    expected = event_frame(df, tz).resample(freq, **sides).sum()
    if sides.get("closed") == "right" and freq in ("D", "MS"):
        assert expected.iloc[0].sum() == 0
        expected = expected.iloc[1:]
    expected.index.name = "bucket"
    pd.testing.assert_frame_equal(
        result[["started", "ended"]], expected.astype(np.int64), check_freq=False
    )
    assert result.attrs["activity"]["closed"] == (
        sides.get("closed") or ("right" if freq in ("W", "W-MON", "ME", "QE", "2W") else "left")
    )


def test_weeks_run_monday_to_sunday_labelled_by_the_sunday():
    berlin = ZoneInfo("Europe/Berlin")

    def at(text: str) -> int:
        return us(dt.datetime.fromisoformat(text).replace(tzinfo=berlin).isoformat())

    starts = [
        "2024-03-24 23:59:59.999999",  # Sunday: the week of 18-24 March
        "2024-03-25 00:00:00",  # Monday: the next week
        "2024-03-31 23:30:00",  # Sunday, after the DST change: still the week of 25-31 March
        "2024-04-01 00:00:00",  # Monday
    ]
    records = [
        {"uuid": f"s{i}", "started_at": at(text), "ended_at": at(text) + MINUTE}
        for i, text in enumerate(starts)
    ]
    df = frame_from_records(records)
    weekly = activity(df, "W", tz="Europe/Berlin")
    assert weekly.index.strftime("%Y-%m-%d %a").tolist() == [
        "2024-03-24 Sun",
        "2024-03-31 Sun",
        "2024-04-07 Sun",
    ]
    assert weekly["started"].tolist() == [1, 2, 1]
    assert weekly["ended"].tolist() == [0, 3, 1]  # the first one ends on Monday 00:00:59
    assert weekly["busy_time"].tolist() == [
        pd.Timedelta(microseconds=1),
        pd.Timedelta(minutes=3) - pd.Timedelta(microseconds=1),
        pd.Timedelta(minutes=1),
    ]
    mondays = activity(df, "W-MON", tz="Europe/Berlin")
    assert mondays.index.strftime("%Y-%m-%d %a").tolist() == ["2024-03-25 Mon", "2024-04-01 Mon"]
    assert mondays["started"].tolist() == [2, 2]
    monthly = activity(df, "ME", tz="Europe/Berlin")
    assert monthly.index.strftime("%Y-%m-%d").tolist() == ["2024-03-31", "2024-04-30"]
    assert monthly["started"].tolist() == [3, 1]
    starts_left = activity(df, "W", tz="Europe/Berlin", closed="left", label="left")
    # Sunday-to-Sunday weeks, as activity() used to make them.
    assert starts_left.index.strftime("%Y-%m-%d %a").tolist() == [
        "2024-03-24 Sun",
        "2024-03-31 Sun",
    ]
    assert starts_left["started"].tolist() == [2, 2]


@pytest.mark.parametrize(
    ("freq", "tz"),
    [
        ("W", "Europe/Berlin"),
        ("W-MON", "America/New_York"),
        ("2W", "Europe/Berlin"),
        ("ME", "America/New_York"),
        ("MS", "Europe/Berlin"),
        ("QS", "UTC"),
        ("D", "America/New_York"),
        ("2D", "Europe/Berlin"),
        ("h", "Europe/Berlin"),
        ("h/right", "America/New_York"),
        ("15min", "Asia/Kolkata"),
    ],
)
def test_bucket_bounds_from_labels(freq, tz):
    window = WINDOWS["berlin-march"] if freq in ("h", "h/right", "15min") else WINDOWS["spring"]
    records = make_records(22, 200, *window)
    arguments = FREQS.get(freq, {"freq": freq})
    result = activity(frame_from_records(records), tz=tz, **arguments)
    meta = result.attrs["activity"]
    start, end = stats._bucket_bounds(
        result.index, stats._to_offset(meta["freq"]), meta["closed"], meta["label"]
    )
    instants = [r["started_at"] for r in records if r.get("started_at") is not None]
    reference = {
        label: (b0, b1)
        for b0, b1, label in reference_buckets(
            freq, tz, min(instants) - 40 * DAY, max(instants) + 40 * DAY
        )
    }
    labels = result.index.as_unit("us").asi8.tolist()
    assert list(zip(start.tolist(), end.tolist(), strict=True)) == [reference[t] for t in labels]


def test_activity_records_its_buckets_and_last_fetch_in_attrs():
    t = us("2024-05-01T10:00:00")
    records = [
        {"uuid": "a", "started_at": t, "ended_at": t + HOUR, "fetched_at": t + 2 * HOUR},
        {"uuid": "b", "started_at": t, "ended_at": None, "fetched_at": t + 5 * HOUR},
        {"uuid": "c", "started_at": None, "ended_at": None, "fetched_at": t + 9 * HOUR},
    ]
    result = activity(frame_from_records(records), "W", tz="Asia/Kolkata")
    assert result.attrs["activity"] == {
        "freq": "W-SUN",
        "tz": "Asia/Kolkata",
        "closed": "right",
        "label": "right",
        "fetched_at": pd.Timestamp(to_datetime(t + 9 * HOUR)),
    }
    assert result.loc["2024-05-05", "started"].item() == 2  # Sunday 5 May labels 29 Apr-5 May
    assert activity(schema.empty_frame(), "h").attrs["activity"]["fetched_at"] is None


@pytest.mark.parametrize("by", ["agent_uuid", ["type", "agent_uuid"]])
@pytest.mark.parametrize("combined_sort_key", [True, False])
@pytest.mark.parametrize(("freq", "window"), [("D", "berlin-october"), ("W", "spring")])
def test_activity_by_groups_against_brute_force(by, combined_sort_key, freq, window, monkeypatch):
    if not combined_sort_key:  # force the lexsort fallback used for very long time spans
        monkeypatch.setattr(stats, "_KEY_LIMIT", 0)
    records = make_records(12, 300, *WINDOWS[window])
    columns = [by] if isinstance(by, str) else by
    result = activity(frame_from_records(records), freq, tz="Europe/Berlin", by=by)
    assert list(result.index.names) == [*columns, "bucket"]
    with_start = [r for r in records if r.get("started_at") is not None]
    keys = sorted_keys({group_key(r, columns) for r in with_start})
    flat = result.reset_index()
    seen = []
    for key in keys:
        mask = np.ones(len(flat), dtype=bool)
        for column, value in zip(columns, key, strict=True):
            column_values = flat[column].astype(object)
            mask &= np.array(
                [
                    pd.isna(v) if value is None else (not pd.isna(v) and v == value)
                    for v in column_values
                ],
                dtype=bool,
            )
        block = flat[mask].set_index("bucket")[ACTIVITY_COLUMNS]
        expected = brute_activity(
            [r for r in with_start if group_key(r, columns) == key], freq, "Europe/Berlin"
        )
        pd.testing.assert_frame_equal(block, expected, check_freq=False)
        seen.append(len(block))
    assert sum(seen) == len(result)
    # Blocks come in group-key order.
    first_rows = flat.drop_duplicates(columns)[columns].to_numpy().tolist()
    assert [tuple(None if pd.isna(v) else v for v in row) for row in first_rows] == keys


@pytest.mark.parametrize("freq", ["2D", "2W", "7h"])
def test_groups_share_the_buckets_of_the_whole_frame(freq):
    # Multiples that do not tile a day or a week start from the first event: the frame's,
    # not each group's, so the groups' rows line up with each other and with the whole.
    records = make_records(23, 300, *WINDOWS["spring"])
    df = frame_from_records(records)
    whole = activity(df, freq, tz="Europe/Berlin")
    grouped = activity(df, freq, tz="Europe/Berlin", by="agent_uuid")
    labels = grouped.index.get_level_values("bucket")
    assert labels.isin(whole.index).all()
    summed = grouped[["started", "ended", "busy_time"]].groupby(labels).sum()
    pd.testing.assert_frame_equal(
        summed, whole[["started", "ended", "busy_time"]], check_names=False, check_freq=False
    )


def test_activity_dst_day_lengths():
    records = [
        {
            "uuid": "a",
            "started_at": us("2024-03-30T12:00:00"),
            "ended_at": us("2024-04-01T12:00:00"),
        },
        {
            "uuid": "b",
            "started_at": us("2024-10-26T12:00:00"),
            "ended_at": us("2024-10-28T12:00:00"),
        },
    ]
    df = frame_from_records(records)
    daily = activity(df, "1D", tz="Europe/Berlin")
    lengths = dict(zip(daily.index.strftime("%Y-%m-%d"), daily["busy_time"], strict=True))
    assert lengths["2024-03-31"] == pd.Timedelta(hours=23)
    assert lengths["2024-10-27"] == pd.Timedelta(hours=25)
    assert lengths["2024-03-30"] == pd.Timedelta(hours=11)  # 12:00 UTC is 13:00 CET
    assert (daily.index.hour == 0).all()
    assert str(daily.index.tz) == "Europe/Berlin"
    assert daily.index.name == "bucket"
    # Empty days between the two sessions are present with zeros.
    assert len(daily) == (pd.Timestamp("2024-10-28") - pd.Timestamp("2024-03-30")).days + 1
    assert daily.loc["2024-06-01", "active_sessions"].item() == 0
    new_york = activity(
        frame_from_records(
            [
                {
                    "uuid": "c",
                    "started_at": us("2024-11-02T12:00:00"),
                    "ended_at": us("2024-11-04T12:00:00"),
                }
            ]
        ),
        "1D",
        tz="America/New_York",
    )
    assert new_york.loc["2024-11-03", "busy_time"] == pd.Timedelta(hours=25)


def test_activity_back_to_back_and_zero_length():
    t = us("2024-05-01T10:00:00")
    records = [
        {"uuid": "a", "started_at": t, "ended_at": t + HOUR},
        {"uuid": "b", "started_at": t + HOUR, "ended_at": t + 2 * HOUR},  # starts as a ends
        {"uuid": "z", "started_at": t + 30 * MINUTE, "ended_at": t + 30 * MINUTE},  # zero length
    ]
    result = activity(frame_from_records(records), "1D")
    assert len(result) == 1
    row = result.iloc[0]
    assert row["peak_concurrent"] == 1
    assert row["started"] == 3
    assert row["ended"] == 3
    assert row["active_sessions"] == 2  # the zero-length session occupies nothing
    assert row["busy_time"] == pd.Timedelta(hours=2)
    hourly = activity(frame_from_records(records), "1h")
    # b's end at t + 2h falls in a third bucket, where nothing runs.
    assert hourly["peak_concurrent"].tolist() == [1, 1, 0]
    assert hourly["active_sessions"].tolist() == [1, 1, 0]
    assert hourly["started"].tolist() == [2, 1, 0]
    assert hourly["ended"].tolist() == [1, 1, 1]
    assert hourly["busy_time"].tolist() == [pd.Timedelta(hours=1)] * 2 + [pd.Timedelta(0)]


def test_activity_open_sessions_run_to_fetched_at():
    t = us("2024-05-01T10:00:00")
    records = [
        {"uuid": "a", "started_at": t, "ended_at": None, "fetched_at": t + 3 * HOUR},
        {"uuid": "b", "started_at": t + HOUR, "ended_at": t + 2 * HOUR, "fetched_at": t + 5 * HOUR},
        {"uuid": "c", "started_at": None, "ended_at": t, "fetched_at": t},  # ignored
    ]
    result = activity(frame_from_records(records), "1h")
    assert result["active_sessions"].tolist() == [1, 2, 1]
    assert result["peak_concurrent"].tolist() == [1, 2, 1]
    assert result["ended"].tolist() == [0, 0, 1]  # at t + 2h: the third bucket
    assert result["started"].tolist() == [1, 1, 0]
    assert result["busy_time"].sum() == pd.Timedelta(hours=4)


def test_activity_hourly_buckets_follow_the_local_clock():
    # Asia/Kolkata is UTC+05:30: hourly buckets start on local whole hours.
    records = make_records(13, 50, *WINDOWS["berlin-march"])
    result = activity(frame_from_records(records), "1h", tz="Asia/Kolkata")
    assert (result.index.minute == 0).all()
    assert (np.diff(result.index.asi8) == 3600 * 10**6).all()
    assert result["started"].sum() == sum(r.get("started_at") is not None for r in records)


def test_activity_empty_frame():
    result = activity(schema.empty_frame(), "1D", tz="Europe/Berlin")
    assert len(result) == 0
    assert list(result.columns) == ACTIVITY_COLUMNS
    assert result.index.name == "bucket"
    assert str(result.index.dtype) == "datetime64[us, Europe/Berlin]"
    assert result.dtypes.astype(str).tolist() == ["int64"] * 4 + ["timedelta64[us]"]
    grouped = activity(schema.empty_frame(), by=["agent_uuid"])
    assert list(grouped.index.names) == ["agent_uuid", "bucket"]
    assert len(grouped) == 0
    assert grouped.dtypes.astype(str).tolist() == ["int64"] * 4 + ["timedelta64[us]"]


def test_activity_bad_arguments():
    df = frame_from_records(make_records(0, 10, *WINDOWS["berlin-march"]))
    with pytest.raises(ValueError, match="missing"):
        activity(df, by="missing")
    with pytest.raises(ValueError, match="frequency"):
        activity(df, "not-a-freq")
    with pytest.raises(ValueError, match="time zone"):
        activity(df, tz="Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="closed must be"):
        activity(df, "W", closed="both")
    with pytest.raises(ValueError, match="label must be"):
        activity(df, "W", label="middle")
    with pytest.raises(ValueError, match="below one microsecond"):
        activity(df, "500ns")


# --------------------------------------------------------------------------------------------
# hourly_profile, explode_tasks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["America/New_York", "Asia/Kolkata", "UTC"])
def test_hourly_profile_against_brute_force(tz):
    records = make_records(20, 400, us("2024-10-20T00:00:00"), 20 * DAY)
    expected = np.zeros((7, 24), dtype=np.int64)
    for r in records:
        if r.get("started_at") is not None:
            local = to_datetime(r["started_at"]).astimezone(ZoneInfo(tz))
            expected[local.weekday(), local.hour] += 1
    result = hourly_profile(frame_from_records(records), tz=tz)
    assert result.shape == (7, 24)
    assert result.index.tolist() == [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ]
    assert result.columns.tolist() == list(range(24))
    assert (result.dtypes == np.int64).all()
    np.testing.assert_array_equal(result.to_numpy(), expected)


def test_hourly_profile_empty_is_full_of_zeros():
    result = hourly_profile(schema.empty_frame(), tz="Europe/Berlin")
    assert result.shape == (7, 24)
    assert int(result.to_numpy().sum()) == 0


@pytest.mark.parametrize("seed", [30, 31])
def test_explode_tasks_against_loop(seed):
    records = make_records(seed, 200, *WINDOWS["berlin-march"])
    expected = [
        (r["conversation_uuid"], r["uuid"], task)
        for r in records
        for task in r.get("task_uuids") or []
    ]
    result = explode_tasks(frame_from_records(records))
    assert list(result.columns) == ["conversation_uuid", "uuid", "task_uuid"]
    assert all(isinstance(t, pd.StringDtype) for t in result.dtypes)
    assert list(result.itertuples(index=False, name=None)) == expected
    assert isinstance(result.index, pd.RangeIndex)


def test_explode_tasks_empty():
    result = explode_tasks(schema.empty_frame())
    assert len(result) == 0
    assert list(result.columns) == ["conversation_uuid", "uuid", "task_uuid"]
    assert all(isinstance(t, pd.StringDtype) for t in result.dtypes)


def test_nanosecond_and_arrow_backed_frames_give_the_same_results():
    records = make_records(40, 200, *WINDOWS["new-york-march"])
    df = frame_from_records(records)
    nanoseconds = df.copy()
    for column in ("started_at", "ended_at", "fetched_at", "last_activity_at", "evaluated_at"):
        nanoseconds[column] = nanoseconds[column].astype("datetime64[ns, UTC]")
    nanoseconds["duration"] = nanoseconds["duration"].astype("timedelta64[ns]")
    arrow = df.convert_dtypes(dtype_backend="pyarrow")
    assert str(arrow["started_at"].dtype) == "timestamp[us, tz=UTC][pyarrow]"
    for other in (nanoseconds, arrow):
        pd.testing.assert_frame_equal(
            session_stats(other, by="agent_uuid"),
            session_stats(df, by="agent_uuid"),
            check_index_type=False,
        )
        pd.testing.assert_frame_equal(
            activity(other, "1h", tz="America/New_York"), activity(df, "1h", tz="America/New_York")
        )
        pd.testing.assert_frame_equal(
            hourly_profile(other, tz="America/New_York"), hourly_profile(df, tz="America/New_York")
        )
        pd.testing.assert_frame_equal(explode_tasks(other), explode_tasks(df))


# --------------------------------------------------------------------------------------------
# issue 21: one check of a time zone; activity displayed rounded like session_stats
# --------------------------------------------------------------------------------------------


def test_activity_displays_busy_time_rounded_and_keeps_it_exact():
    t = us("2024-05-01T10:00:00")
    records = [
        {"uuid": "a", "started_at": t, "ended_at": t + 90 * MINUTE},
        {"uuid": "b", "started_at": t + 20 * MINUTE, "ended_at": t + 30 * MINUTE + 400_000},
    ]
    table = activity(frame_from_records(records), "h")
    assert isinstance(table, stats.ActivityTable)
    # Shown as session_stats is: the duration rounded, under the real column names.
    assert [line.rstrip() for line in wide_repr(table).splitlines()] == [
        "                          started ended active_sessions peak_concurrent busy_time",
        "bucket",
        "2024-05-01 10:00:00+00:00       2     1               2               2    1h 10m",
        "2024-05-01 11:00:00+00:00       0     1               1               1   30m 00s",
    ]
    html = table._repr_html_()
    assert "<td>1h 10m</td>" in html and "01:10:00.4" not in html
    # The values stay exact, and a selection or a group keeps the display.
    assert table.loc[table.index[0], "busy_time"] == pd.Timedelta(minutes=70, microseconds=400_000)
    assert "0 days 01:10:00.400000" in table.to_string()
    assert isinstance(table.tail(1), stats.ActivityTable)
    assert table.attrs["activity"]["freq"] == "h"
    grouped = activity(frame_from_records(records), "h", by="uuid")
    assert "1h 00m" in wide_repr(grouped) and "0 days" not in wide_repr(grouped)


@pytest.mark.parametrize(
    ("tz", "hint"),
    [
        ("Istanbul", "did you mean 'Asia/Istanbul' or 'Europe/Istanbul'?"),
        ("Europe/Berlinn", "did you mean 'Europe/Berlin'?"),
        ("europe/berlin", "did you mean 'Europe/Berlin'?"),
        ("Nowhere/Atall", ""),
        (None, ""),
        (3, ""),
    ],
)
def test_an_unknown_time_zone_is_one_value_error_naming_it(tz, hint):
    df = frame_from_records(make_records(3, 20, *WINDOWS["spring"]))
    for func in (activity, hourly_profile):
        with pytest.raises(ValueError) as caught:
            func(df, tz=tz)
        assert type(caught.value) is ValueError  # never zoneinfo's KeyError
        message = str(caught.value)
        assert message.startswith(f"{func.__name__}: unknown time zone {tz!r}: give an IANA")
        assert message.endswith(hint or "or a tzinfo")
    # A tzinfo and a name are both taken, and give the same zone.
    assert str(stats.check_tz(dt.timezone.utc, "x")) == "UTC"
    assert str(stats.check_tz("Europe/Berlin", "x")) == "Europe/Berlin"
