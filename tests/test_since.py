"""Loads of a window of start times (``since``/``until``): rows, request counts, validation,
tags, cache interplay, failures, drift and the command line, against the simulator."""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import pytest
from conftest import SIZES, assert_matches_truth

import mihu_frames as mf
from mihu_frames.schema import COLUMNS, pandas_dtypes
from mihu_frames.simulator import DATA_END

BIG = SIZES.index(2500)
WEEK = DATA_END - timedelta(days=7)


def _start(session: dict[str, Any]) -> pd.Timestamp | None:
    text = session.get("started_at")
    return None if text is None else pd.Timestamp(text).tz_convert("UTC")


def _bound(value: Any) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _window(truth: list[dict[str, Any]], since: Any, until: Any) -> list[dict[str, Any]]:
    """Ground truth cut to [since, until), oldest start first (a stable sort: equal starts
    keep the simulator's order, as the API serves them)."""
    low, high = _bound(since), _bound(until)
    kept = [
        s
        for s in truth
        if (t := _start(s)) is not None and (low is None or t >= low) and (high is None or t < high)
    ]
    return sorted(kept, key=lambda s: _start(s))


def _pages_read(truth: list[dict[str, Any]], since: Any, per_page: int) -> int:
    """Pages a newest-first read of one query costs: down to the page holding the first
    session started before ``since`` (that page included), or to the last page."""
    last = max(1, math.ceil(len(truth) / per_page))
    low = _bound(since)
    if low is None:
        return last
    newer = sum(1 for s in truth if (t := _start(s)) is None or t >= low)
    return min(last, newer // per_page + 1)


def _holding(truth: list[dict[str, Any]], since: Any, per_page: int) -> int:
    """Pages from the top down to the last one holding a session started at or after since."""
    low = _bound(since)
    newer = sum(1 for s in truth if (t := _start(s)) is None or low is None or t >= low)
    return math.ceil(newer / per_page)


WINDOWS = [
    pytest.param(WEEK, None, id="last-week"),
    pytest.param("2026-06-01", "2026-06-15", id="two-weeks-in-june"),
    pytest.param("2026-10-01T08:00:00+03:00", None, id="since-with-offset"),
    pytest.param(None, "2026-01-20", id="until-alone"),
]


@pytest.mark.parametrize("per_page", [100, 10])
@pytest.mark.parametrize(("since", "until"), WINDOWS)
def test_rows_are_ground_truth_in_the_window_at_the_cost_of_the_window(
    sim, make_client, since, until, per_page
):
    conversation = sim.conversation_uuids[BIG]
    truth = sim.ground_truth(conversation)
    client = make_client(sim, cache=None)
    sim.reset_requests()
    df = client.sessions(conversation, since=since, until=until, per_page=per_page)
    expected = _window(truth, since, until)
    assert len(expected) > 0
    assert_matches_truth(df, expected)
    pages = _pages_read(truth, since, per_page)
    assert sim.request_count == df.attrs["mihu_frames"]["requests"] == pages
    # pages 1..k of one newest-first listing, each once, one after the other
    assert [r.page for r in sim.requests] == list(range(1, pages + 1))
    assert all(
        (r.params["sort_by"], r.params["sort_dir"]) == ("started_at", "desc") for r in sim.requests
    )
    if since is not None:
        assert pages <= _holding(truth, since, per_page) + 1
    if since is not None and until is None:  # a window reaching now: far less than the history
        assert pages < math.ceil(len(truth) / per_page) / 4
    filters = df.attrs["mihu_frames"]["filters"]
    assert filters["since"] == (None if since is None else _bound(since).isoformat())
    assert filters["until"] == (None if until is None else _bound(until).isoformat())


def test_many_conversations_come_in_the_order_asked_each_oldest_first(sim, make_client):
    asked = [sim.conversation_uuids[i] for i in (BIG, 2, 0, 5, 4)]
    client = make_client(sim, cache=None, max_workers=3)
    since, until = "2026-03-01", "2026-09-01"
    sim.reset_requests()
    df = client.sessions(asked, since=since, until=until, per_page=20)
    expected = [s for c in asked for s in _window(sim.ground_truth(c), since, until)]
    assert_matches_truth(df, expected)
    assert sim.request_count == sum(_pages_read(sim.ground_truth(c), since, 20) for c in asked)


def test_an_empty_window_is_the_typed_empty_frame(sim, make_client):
    client = make_client(sim, cache=None)
    conversations = sim.conversation_uuids[BIG - 1 :]
    for since, until in [("2027-01-01", None), (WEEK, WEEK), ("2026-02-01", "2026-02-01T00:00:01")]:
        sim.reset_requests()
        df = client.sessions(conversations, since=since, until=until)
        assert len(df) == 0
        assert list(df.columns) == list(COLUMNS)
        assert {c: str(t) for c, t in df.dtypes.items()} == {
            c: str(t) for c, t in pandas_dtypes().items()
        }
        if since != "2026-02-01":  # the window reaches the newest page: one request each
            assert sim.request_count == len(conversations)


def test_instants_in_every_form_naive_ones_as_utc(sim, make_client):
    conversation = sim.conversation_uuids[BIG]
    client = make_client(sim, cache=None)
    forms = [
        "2026-10-25",
        "2026-10-25T00:00:00Z",
        datetime(2026, 10, 25),
        datetime(2026, 10, 25, 3, tzinfo=timezone(timedelta(hours=3))),
        date(2026, 10, 25),
        pd.Timestamp("2026-10-25 03:00", tz="Europe/Istanbul"),
        pd.Timestamp("2026-10-24 23:59:59.999999001", tz="UTC"),  # rounds up to the next µs
    ]
    expected = [s["uuid"] for s in _window(sim.ground_truth(conversation), "2026-10-25", None)]
    for form in forms:
        df = client.sessions(conversation, since=form)
        assert list(df["uuid"]) == expected, form
        assert df.attrs["mihu_frames"]["filters"]["since"] == "2026-10-25T00:00:00+00:00"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"since": "last week"}, "since must be an instant"),
        ({"until": "2026-13-45"}, "until must be an instant"),
        ({"since": 1761350400}, "since must be an instant"),
        ({"since": "now"}, "since must be an instant"),
        ({"since": pd.NaT}, "since must be an instant"),
        ({"since": "2026-10-02", "until": "2026-10-01"}, r"since \(.*\) is after until"),
        ({"since": WEEK, "sort_by": "created_at"}, "sort_by='created_at' contradicts"),
        ({"until": WEEK, "sort_dir": "asc"}, "sort_dir='asc' contradicts"),
        ({"since": WEEK, "offline": True}, "offline=True"),
    ],
)
def test_bad_windows_are_value_errors_before_any_request(sim, make_client, options, match):
    client = make_client(sim)
    sim.reset_requests()
    with pytest.raises(ValueError, match=match):
        client.sessions(sim.conversation_uuids[BIG], **options)
    with pytest.raises(ValueError, match=match):
        mf.load_sessions("all", base_url=sim.base_url, token=sim.token, cache=None, **options)
    assert sim.request_count == 0


def test_the_window_order_may_be_spelled_out(sim, make_client):
    conversation = sim.conversation_uuids[BIG]
    client = make_client(sim, cache=None)
    df = client.sessions(conversation, since=WEEK, sort_by="started_at", sort_dir="desc")
    assert list(df["uuid"]) == [
        s["uuid"] for s in _window(sim.ground_truth(conversation), WEEK, None)
    ]


def test_status_all_tags_each_row_and_stops_each_query_on_its_own(sim, make_client):
    conversation = sim.conversation_uuids[BIG]
    client = make_client(sim, cache=None)
    since, until = "2026-08-01", "2026-10-01"
    sim.reset_requests()
    df = client.sessions(conversation, since=since, until=until, status="all", per_page=25)
    tags = sim.tags()
    expected = _window(sim.ground_truth(conversation), since, until)
    assert sorted(df["uuid"]) == sorted(s["uuid"] for s in expected)
    assert list(df["status"].astype(str)) == [tags[u][0] for u in df["uuid"]]
    assert set(df["status"].astype(str)) == {"completed", "timed_out"}
    # one conversation, oldest first, whatever status a row was fetched under
    assert df["started_at"].is_monotonic_increasing
    per_status = {
        s: _pages_read(sim.ground_truth(conversation, status=s), since, 25)
        for s in ("active", "completed", "timed_out")
    }
    for status, pages in per_status.items():
        asked = [r.page for r in sim.requests if r.params["status"] == status]
        assert sorted(asked) == list(range(1, pages + 1)), status
    assert sim.request_count == sum(per_status.values())
    # the same rows as a full load under the same tags, cut to the window
    full = client.sessions(conversation, status="all")
    low, high = _bound(since), _bound(until)
    cut = full[(full["started_at"] >= low) & (full["started_at"] < high)]
    pd.testing.assert_frame_equal(
        df.drop(columns="fetched_at").set_index("uuid").sort_index(),
        cut.drop(columns="fetched_at").set_index("uuid").sort_index(),
    )


def test_a_windowed_load_neither_uses_nor_disturbs_the_cache(sim, make_client, tmp_path):
    conversation = sim.conversation_uuids[BIG]
    truth = sim.ground_truth(conversation)
    week = _window(truth, WEEK, None)

    # A full load cached, then a window: fresh pages, and the full load still served whole.
    client = make_client(sim)
    full = client.sessions(conversation)
    client.flush_cache()
    sim.reset_requests()
    df = client.sessions(conversation, since=WEEK)
    assert_matches_truth(df, week)
    assert sim.request_count == 1 and df.attrs["mihu_frames"]["cache_hits"] == 0
    client.flush_cache()
    sim.reset_requests()
    again = client.sessions(conversation)
    assert sim.request_count == 0
    pd.testing.assert_frame_equal(again, full)

    # A window first, on a new cache file: a later full load under the very same order
    # (started_at desc: the same cache key) is not served from the window's partial read.
    other = make_client(sim, cache=tmp_path / "other.sqlite")
    other.sessions(conversation, since=WEEK)
    other.flush_cache()
    sim.reset_requests()
    desc = other.sessions(conversation, sort_by="started_at", sort_dir="desc")
    assert sim.request_count == math.ceil(len(truth) / 100)
    assert_matches_truth(desc, sorted(truth, key=lambda s: _start(s), reverse=True))
    other.flush_cache()
    sim.reset_requests()
    assert_matches_truth(other.sessions(conversation), truth)
    assert sim.request_count == math.ceil(len(truth) / 100)
    other.flush_cache()
    sim.reset_requests()
    assert_matches_truth(other.sessions(conversation, since=WEEK), week)
    assert sim.request_count == 1  # fresh again
    other.flush_cache()
    sim.reset_requests()
    pd.testing.assert_frame_equal(
        other.sessions(conversation, sort_by="started_at", sort_dir="desc"), desc
    )
    assert sim.request_count == 0  # the complete listing cached is still whole


def test_on_error_leaves_a_failing_conversation_out_whole(sim, make_client):
    client = make_client(sim, cache=None, retries=0)
    failing, fine = sim.conversation_uuids[BIG], sim.conversation_uuids[5]
    since = "2026-05-01"
    sim.fail_next("500", conversation=failing, page=2)  # after page 1 was read
    with pytest.raises(mf.ServerError):
        client.sessions([failing, fine], since=since, per_page=50)
    sim.fail_next("500", conversation=failing, page=2)
    with pytest.warns(RuntimeWarning, match="left out"):
        df = client.sessions([failing, fine], since=since, per_page=50, on_error="warn")
    assert_matches_truth(df, _window(sim.ground_truth(fine), since, None))
    [error] = df.attrs["mihu_frames"]["errors"]
    assert error["conversation"] == failing and error["page"] == 2


def test_all_conversations_in_a_window(sim, make_client):
    client = make_client(sim, cache=None)
    sim.reset_requests()
    df = client.sessions("all", since=WEEK)
    listed = [c["uuid"] for c in sim.conversations_truth(sort_dir="asc")]
    expected = [s for c in listed for s in _window(sim.ground_truth(c), WEEK, None)]
    assert_matches_truth(df, expected)
    assert df.attrs["mihu_frames"]["listed"] == "all"
    sessions = [r for r in sim.requests if r.endpoint == "sessions"]
    assert len(sessions) == len(listed)  # a week: one page per conversation
    assert sim.request_count == len(sessions) + 1 == df.attrs["mihu_frames"]["requests"]


def test_sessions_arriving_while_a_window_is_read_hide_no_row(fresh_sim, make_client):
    conversation = fresh_sim.conversation_uuids[-1]
    since = DATA_END - timedelta(days=60)
    before = {s["uuid"] for s in _window(fresh_sim.ground_truth(conversation), since, None)}
    assert len(before) > 30
    client = make_client(fresh_sim, cache=None, max_workers=4)
    fresh_sim.drift = 3  # every request: 3 new sessions on top, 3 touched
    df = client.sessions(conversation, since=since, per_page=10)
    fresh_sim.drift = 0
    assert before <= set(df["uuid"])
    assert df["uuid"].is_unique
    assert (df["started_at"] >= since).all() and df["started_at"].is_monotonic_increasing


def test_sessions_without_a_start_are_in_no_window(server_factory):
    conversation = "3c90c3cc-0d44-4b50-8888-8dd25736052a"
    sessions = [
        {"uuid": "00000001-0c0c-4000-8000-000000000000", "started_at": None},
        {"uuid": "00000002-0c0c-4000-8000-000000000000", "started_at": "2026-10-30T10:00:00Z"},
        {"uuid": "00000003-0c0c-4000-8000-000000000000", "started_at": "2026-09-01T10:00:00Z"},
        {"uuid": "00000004-0c0c-4000-8000-000000000000", "started_at": "2026-08-01T10:00:00Z"},
    ]

    def answer(path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        page = int(path.split("page=")[1].split("&")[0])
        rows = [{**s, "conversation_uuid": conversation} for s in sessions[3 * page - 3 : 3 * page]]
        body = {
            "success": True,
            "message": "ok",
            "data": {"current_page": page, "total": 4, "last_page": 2, "per_page": 3, "data": rows},
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()

    server = server_factory(answer)
    options = {
        "base_url": server.base_url,
        "token": "t0ken-for-tests",
        "cache": None,
        "per_page": 3,
    }
    df = mf.load_sessions(conversation, since="2026-10-01", **options)
    assert list(df["uuid"]) == [sessions[1]["uuid"]]
    assert len(server.paths) == 1  # page 1 holds a session older than the window: stop there
    df = mf.load_sessions(conversation, until="2026-12-01", **options)
    assert list(df["uuid"]) == [s["uuid"] for s in reversed(sessions[1:])]
    assert len(mf.load_sessions(conversation, **options)) == 4  # no window: every session


def test_signatures_docstrings_and_flags_show_the_window():
    for func in (mf.load_sessions, mf.MihuClient.sessions):
        parameters = inspect.signature(func).parameters
        assert parameters["since"].default is None and parameters["until"].default is None
        assert "since : str, datetime, date or pandas.Timestamp, optional" in func.__doc__
    assert "since" not in inspect.signature(mf.sync_snapshots).parameters
    assert "since" not in inspect.signature(mf.list_conversations).parameters


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mihu_frames", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )


def test_fetch_since_until_writes_the_window(sim, tmp_path):
    env = {"MIHU_API_TOKEN": sim.token, "MIHU_BASE_URL": sim.base_url}
    helped = _cli("fetch", "--help", env=env)
    assert "--since WHEN" in helped.stdout and "--until WHEN" in helped.stdout
    conversation = sim.conversation_uuids[BIG]
    sim.reset_requests()
    bad = _cli("fetch", conversation, "--since", "last week", "--no-cache", env=env)
    assert bad.returncode == 2 and "since must be an instant" in bad.stderr
    assert "Traceback" not in bad.stderr and sim.request_count == 0
    root = tmp_path / "snaps"
    args = ("--since", "2026-10-01", "--until", "2026-10-15", "--root", str(root), "--no-cache")
    done = _cli("fetch", conversation, *args, env=env)
    assert done.returncode == 0, done.stderr
    expected = _window(sim.ground_truth(conversation), "2026-10-01", "2026-10-15")
    assert f"{len(expected)} sessions" in done.stdout
    assert sorted(mf.read_snapshots(root)["uuid"]) == sorted(s["uuid"] for s in expected)
