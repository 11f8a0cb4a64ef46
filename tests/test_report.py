"""Tests for mihu_frames.report: the exact text printed for people, on frames whose
statistics are worked out by hand in the comments."""

from __future__ import annotations

import pandas as pd
import pytest
from test_stats import HOUR, MINUTE, SECOND, WINDOWS, frame_from_records, make_records, us

from mihu_frames import schema
from mihu_frames.report import activity_text, hourly_text, stats_text, summary_text

FETCHED = us("2024-10-28T10:00:00")  # 11:00 in Berlin (CET)


def session(uuid: str, conversation: str, start: str, duration: int | None) -> dict:
    started = us(start)
    return {
        "uuid": uuid,
        "conversation_uuid": conversation,
        "started_at": started,
        "ended_at": None if duration is None else started + duration,
        "duration": duration,
        "fetched_at": FETCHED,
        "last_activity_at": started,
        "evaluated_at": None if duration is None else started + duration,
        "task_uuids": ["t1"] if uuid in ("a", "c") else [],
    }


@pytest.fixture
def week() -> pd.DataFrame:
    """Five sessions over two Berlin weeks around the end of summer time (27 Oct 2024):
    durations 10m, 30m 30s, 1h 02m 29s and 15m, and one open session. Berlin start times:
    Mon 10:00, Mon 10:05, Tue 14:00, Sun 02:30 (CET), Mon 28 Oct 10:00 (open)."""
    return frame_from_records(
        [
            session("a", "c1", "2024-10-21T08:00:00", 10 * MINUTE),
            session("b", "c1", "2024-10-21T08:05:00", 30 * MINUTE + 30 * SECOND),
            session("c", "c2", "2024-10-22T12:00:00", HOUR + 2 * MINUTE + 29 * SECOND),
            session("d", "c2", "2024-10-27T01:30:00", 15 * MINUTE),
            session("e", "c1", "2024-10-28T09:00:00", None),
        ]
    )


def test_summary_text(week):
    # Durations sorted: 600, 900, 1830, 3749 s. Median (900 + 1830) / 2 = 1365 s; p90 at
    # position 2.7: 1830 + 0.7 * 1919 = 3173.3 s. a and b overlap from 08:05 to 08:10 UTC.
    assert summary_text(week, tz="Europe/Berlin").splitlines() == [
        "sessions      5 in 2 conversations (1 open)",
        "started       Mon 2024-10-21 to Mon 2024-10-28 (Europe/Berlin), fetched 2024-10-28 11:00",
        "duration      median 22m 45s, p90 52m 53s (4 ended sessions)",
        "busiest day   Mon 2024-10-21: 2 sessions started",
        "busiest hour  10:00-11:00: 3 sessions started (60.0%), most on Mondays",
        "at once       up to 2 sessions, first on Mon 2024-10-21",
    ]


def test_summary_text_in_utc_and_without_ended_sessions(week):
    utc = summary_text(week).splitlines()
    assert (
        utc[1] == "started       Mon 2024-10-21 to Mon 2024-10-28 (UTC), fetched 2024-10-28 10:00"
    )
    # In UTC a and b start at 08:00, e at 09:00: hour 08 leads with 2 of 5.
    assert utc[4] == "busiest hour  08:00-09:00: 2 sessions started (40.0%), most on Mondays"
    only_open = summary_text(week[week["is_open"]]).splitlines()
    assert only_open[0] == "sessions      1 in 1 conversation (1 open)"
    assert only_open[2] == "duration      no ended session yet"
    assert only_open[5] == "at once       up to 1 session, first on Mon 2024-10-28"


def test_summary_text_of_an_empty_frame():
    assert summary_text(schema.empty_frame()) == "sessions  0 in 0 conversations (0 open)"


def test_summary_is_short_on_a_large_frame():
    records = make_records(50, 3000, *WINDOWS["spring"])
    text = summary_text(frame_from_records(records), tz="America/New_York")
    lines = text.splitlines()
    assert len(lines) == 6
    assert max(len(line) for line in lines) < 100
    assert lines[0].startswith(f"sessions      {len(records):,} in 4 conversations (")


def test_stats_text(week):
    # Total 1h 57m 59s; mean 29m 29.75s; max 1h 02m 29s; tasks 2 of 5; evaluated 4 of 5.
    # Each column is as wide as its widest text plus pandas' padding.
    assert stats_text(week, tz="Europe/Berlin").splitlines() == [
        "session statistics (durations over ended sessions, times in Europe/Berlin)",
        " sessions open_sessions total_duration mean_duration median_duration p90_duration"
        " max_duration first_started_at last_activity_at tasks_per_session evaluated_share"
        " summarized_share",
        "        5             1         1h 58m       29m 30s         22m 45s      52m 53s"
        "       1h 02m       2024-10-21       2024-10-28              0.40           80.0%"
        "             0.0%",
    ]


def test_stats_text_by_group(week):
    lines = stats_text(week, by="conversation_uuid").splitlines()
    assert lines[0] == (
        "session statistics by conversation_uuid (durations over ended sessions, times in UTC)"
    )
    assert lines[2] == "conversation_uuid"
    # c1: a, b and the open e: 600 and 1830 s, p90 600 + 0.9 * 1230 = 1707 s, 1 task of 3.
    # c2: c and d: 3749 and 900 s, mean 2324.5 s (half up), p90 900 + 0.9 * 2849 = 3464.1 s.
    assert lines[1:] == [
        "                  sessions open_sessions total_duration mean_duration median_duration"
        " p90_duration max_duration first_started_at last_activity_at tasks_per_session"
        " evaluated_share summarized_share",
        "conversation_uuid",
        "c1                       3             1        40m 30s       20m 15s         20m 15s"
        "      28m 27s      30m 30s       2024-10-21       2024-10-28              0.33"
        "           66.7%             0.0%",
        "c2                       2             0         1h 17m       38m 45s         38m 45s"
        "      57m 44s       1h 02m       2024-10-22       2024-10-27              0.50"
        "          100.0%             0.0%",
    ]
    assert len(lines) == 5
    assert stats_text(schema.empty_frame()).splitlines()[1] == "(no sessions)"


def test_activity_text_weeks_with_the_partial_one_marked(week):
    # Week 1: a, b, c, d (busy 1h 57m 59s, a and b at once). Week 2: e, open, running from
    # 09:00 to the fetch at 10:00 UTC, which is before the week ends.
    assert activity_text(week, "W", tz="Europe/Berlin").splitlines() == [
        "activity per week (Mon–Sun), Europe/Berlin",
        "                                  started ended active_sessions peak_concurrent busy_time",
        "bucket",
        "Mon 2024-10-21 - Sun 2024-10-27         4     4               4               2    1h 58m",
        "Mon 2024-10-28 - Sun 2024-11-03 *       1     0               1               1    1h 00m",
        "* partial: the data was fetched 2024-10-28 11:00, before it ends",
    ]


def test_activity_text_last_buckets_and_plain_days(week):
    lines = activity_text(week, "D", tz="Europe/Berlin", last=2).splitlines()
    assert lines == [
        "activity per day, Europe/Berlin",
        "(6 earlier buckets not shown)",
        "                 started ended active_sessions peak_concurrent busy_time",
        "bucket",
        "Sun 2024-10-27         1     1               1               1   15m 00s",
        "Mon 2024-10-28 *       1     0               1               1    1h 00m",
        "* partial: the data was fetched 2024-10-28 11:00, before it ends",
    ]
    months = activity_text(week, "MS", tz="Europe/Berlin").splitlines()
    assert [line.split()[0] for line in months[3:]] == ["2024-10", "*"]
    assert months[3].split()[1:3] == ["*", "5"]


def test_activity_text_hours_across_the_dst_change():
    # 00:30-01:30 UTC on 27 Oct 2024: the first hour bucket runs from 02:00 CEST to 02:00 CET.
    start = us("2024-10-27T00:30:00")
    df = frame_from_records(
        [{"uuid": "x", "started_at": start, "ended_at": start + HOUR, "fetched_at": FETCHED}]
    )
    lines = activity_text(df, "h", tz="Europe/Berlin").splitlines()
    assert lines[0] == "activity per hour, Europe/Berlin"
    assert [line.split("  ")[0] for line in lines[3:]] == [
        "2024-10-27 02:00+0200-02:00+0100",
        "2024-10-27 02:00-03:00",
    ]
    assert [line.split()[-2:] for line in lines[3:]] == [["30m", "00s"]] * 2
    right = activity_text(df, "h", tz="UTC", closed="right", label="right").splitlines()
    # (00:00, 01:00] and (01:00, 02:00]: shown by their hours, not 00:00:00.000001.
    assert [line.split("  ")[0] for line in right[3:]] == [
        "2024-10-27 00:00-01:00",
        "2024-10-27 01:00-02:00",
    ]


def test_activity_text_of_an_empty_frame():
    assert (
        activity_text(schema.empty_frame(), "15min")
        == "activity per 15 minutes, UTC\n(no sessions)"
    )


def test_hourly_text(week):
    lines = hourly_text(week, tz="Europe/Berlin").splitlines()
    assert lines[0] == "sessions started by hour of day and weekday (Europe/Berlin)"
    assert lines[1].split() == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun", "total"]
    assert len(lines) == 2 + 24 + 1
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows["10-11"] == ["3", "0", "0", "0", "0", "0", "0", "3"]
    assert rows["14-15"] == ["0", "1", "0", "0", "0", "0", "0", "1"]
    assert rows["02-03"] == ["0", "0", "0", "0", "0", "0", "1", "1"]
    assert rows["23-00"] == ["0"] * 8
    assert rows["total"] == ["3", "1", "0", "0", "0", "0", "1", "5"]
    assert max(len(line) for line in lines) <= 60


@pytest.mark.parametrize("text", [summary_text, stats_text, activity_text, hourly_text])
@pytest.mark.parametrize(
    ("tz", "hint"),
    [("Istanbul", "'Europe/Istanbul'"), ("Europe/Berlinn", "did you mean 'Europe/Berlin'?")],
)
def test_a_mistyped_time_zone_is_one_value_error_naming_it(week, text, tz, hint):
    # Before: summary_text raised zoneinfo's ZoneInfoNotFoundError (a KeyError), activity a
    # ValueError: now one check, the same error from every function taking tz.
    with pytest.raises(ValueError) as caught:
        text(week, tz=tz)
    assert type(caught.value) is ValueError
    assert str(caught.value).startswith(f"{text.__name__}: unknown time zone {tz!r}: ")
    assert hint in str(caught.value)
