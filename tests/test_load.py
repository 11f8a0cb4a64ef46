"""Loading sessions from the simulator: row for row, one request per page, tags, dtypes."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from conftest import SIZES, assert_matches_truth

import mihu_frames as mf
from mihu_frames.schema import COLUMNS, from_pandas, pandas_dtypes, to_pandas


def _pages(n: int, per_page: int = 100) -> int:
    return max(1, math.ceil(n / per_page))


@pytest.mark.parametrize("index", range(len(SIZES)))
def test_each_size_matches_ground_truth_row_for_row(sim, make_client, index):
    conversation = sim.conversation_uuids[index]
    client = make_client(sim)
    sim.reset_requests()
    df = client.sessions(conversation)
    assert_matches_truth(df, sim.ground_truth(conversation))
    assert len(df) == SIZES[index]
    assert sim.request_count == _pages(SIZES[index])
    assert df.attrs["mihu_frames"]["requests"] == _pages(SIZES[index])


def test_many_conversations_in_one_frame_one_request_per_page(sim, make_client):
    client = make_client(sim, max_workers=4)
    sim.reset_requests()
    df = client.sessions(sim.conversation_uuids, progress=False)
    truth = [s for c in sim.conversation_uuids for s in sim.ground_truth(c)]
    assert_matches_truth(df, truth)
    assert sim.request_count == sum(_pages(n) for n in SIZES)
    assert df["uuid"].is_unique
    pages = sorted((r.conversation, r.page) for r in sim.requests)
    assert len(pages) == len(set(pages))  # no page asked twice
    assert all(r.params["per_page"] == "100" for r in sim.requests)
    assert all(
        r.params["sort_by"] == "created_at" and r.params["sort_dir"] == "asc" for r in sim.requests
    )


def test_per_page_99_and_101_boundaries(sim, make_client):
    client = make_client(sim, cache=None)
    conversation = sim.conversation_uuids[SIZES.index(101)]
    for per_page in (1, 50, 99, 100):
        sim.reset_requests()
        df = client.sessions(conversation, per_page=per_page)
        assert_matches_truth(df, sim.ground_truth(conversation))
        assert sim.request_count == _pages(101, per_page)


def test_dtypes_are_the_schema_and_empty_has_them_too(sim, make_client):
    client = make_client(sim)
    df = client.sessions(sim.conversation_uuids[-1])
    empty = client.sessions(sim.conversation_uuids[0])
    assert list(df.columns) == list(COLUMNS) == list(empty.columns)
    assert len(empty) == 0
    for frame in (df, empty, mf.empty_frame()):
        assert {c: str(t) for c, t in frame.dtypes.items()} == {
            c: str(t) for c, t in pandas_dtypes().items()
        }
    assert str(df["started_at"].dtype) == "datetime64[us, UTC]"
    assert str(df["duration"].dtype) == "timedelta64[us]"


def test_derived_columns(sim, make_client):
    df = make_client(sim).sessions(sim.conversation_uuids[-1])
    ended = df[df["ended_at"].notna()]
    assert (ended["duration"] == ended["ended_at"] - ended["started_at"]).all()
    assert df.loc[df["is_open"], "duration"].isna().all()
    evaluated = df[df["evaluated_at"].notna()]
    assert (
        evaluated["time_to_evaluation"] == evaluated["evaluated_at"] - evaluated["ended_at"]
    ).all()
    summarized = df[df["summary_generated_at"].notna()]
    assert (
        summarized["time_to_summary"] == summarized["summary_generated_at"] - summarized["ended_at"]
    ).all()
    assert (ended["idle_before_end"] == ended["ended_at"] - ended["last_activity_at"]).all()
    assert (df["task_count"] == df["task_uuids"].list.len()).all()
    assert (df["is_open"] == df["ended_at"].isna()).all()
    # the data set really has the awkward cases
    assert df["is_open"].any() and df["contact_uuid"].isna().any() and df["extra"].notna().any()
    assert (df["task_count"] == 0).any() and (df["task_count"] > 1).any()
    assert (df["duration"] == pd.Timedelta(0)).any()
    assert df["fetched_at"].notna().all()


def test_status_all_tags_every_row(sim, make_client):
    conversation = sim.conversation_uuids[-1]
    client = make_client(sim)
    sim.reset_requests()
    df = client.sessions(conversation, status="all")
    tags = sim.tags()
    assert sorted(df["uuid"]) == sorted(s["uuid"] for s in sim.ground_truth(conversation))
    assert all(df["status"].astype(str) == [tags[u][0] for u in df["uuid"]])
    assert {r.params["status"] for r in sim.requests} == {"active", "completed", "timed_out"}
    both = client.sessions(conversation, status=["completed", "active"], type="all")
    assert set(both["status"].astype(str)) == {"completed", "active"}
    assert all(both["type"].astype(str) == [tags[u][1] for u in both["uuid"]])
    assert list(both["status"].cat.categories) == ["active", "completed", "timed_out", "untagged"]
    untagged = client.sessions(conversation)
    # without the filter a row's status is unknown: it says so, and is never read as a count
    # of 0 per status; in Arrow (and snapshots) it is null
    assert (untagged["status"] == "untagged").all() and (untagged["type"] == "untagged").all()
    counts = untagged["status"].value_counts()
    assert counts["untagged"] == len(untagged) and counts.drop("untagged").eq(0).all()
    assert from_pandas(untagged).column("status").null_count == len(untagged)
    pd.testing.assert_frame_equal(to_pandas(from_pandas(untagged)), untagged)


def test_second_identical_load_sends_no_request(sim, make_client):
    client = make_client(sim)
    first = client.sessions(sim.conversation_uuids[2:5])
    sim.reset_requests()
    second = client.sessions(sim.conversation_uuids[2:5])
    assert sim.request_count == 0
    assert second.attrs["mihu_frames"]["requests"] == 0
    assert second.attrs["mihu_frames"]["cache_hits"] == first.attrs["mihu_frames"]["pages"]
    pd.testing.assert_frame_equal(first, second)


def test_refresh_bypasses_and_offline_serves_cache(sim, make_client):
    client = make_client(sim)
    conversation = sim.conversation_uuids[4]
    client.sessions(conversation)
    sim.reset_requests()
    client.sessions(conversation, refresh=True)
    assert sim.request_count == 2
    sim.reset_requests()
    offline = client.sessions(conversation, offline=True)
    assert sim.request_count == 0 and len(offline) == 101
    with pytest.raises(mf.CacheMissError, match=sim.conversation_uuids[5]):
        client.sessions(sim.conversation_uuids[5], offline=True)
    assert sim.request_count == 0


def test_load_sessions_one_call(sim, tmp_path):
    df = mf.load_sessions(
        sim.conversation_uuids[1:3],
        base_url=sim.base_url,
        token=sim.token,
        cache=tmp_path / "c.sqlite",
        status="completed",
    )
    assert set(df["status"].astype(str)) == {"completed"}
    with pytest.raises(TypeError, match="unknown option"):
        mf.load_sessions(sim.conversation_uuids[1], base_url=sim.base_url, pages=3)


def test_environment_configuration(sim, monkeypatch, tmp_path):
    monkeypatch.setenv("MIHU_BASE_URL", sim.base_url)
    monkeypatch.setenv("MIHU_API_TOKEN", sim.token)
    df = mf.load_sessions(sim.conversation_uuids[1], cache=None)
    assert len(df) == 1
    monkeypatch.delenv("MIHU_BASE_URL")
    monkeypatch.setenv("MIHU_SUBDOMAIN", "acme")
    assert mf.MihuClient(cache=None).base_url == "https://acme.mihu.ai"


def test_sessions_frame_from_dicts_equals_load(sim, make_client):
    conversation = sim.conversation_uuids[-2]
    loaded = make_client(sim).sessions(conversation)
    built = mf.sessions_frame(sim.ground_truth(conversation))
    pd.testing.assert_frame_equal(
        loaded.drop(columns=["fetched_at"]), built.drop(columns=["fetched_at"])
    )
    assert built["fetched_at"].isna().all()
    empty = mf.sessions_frame([])
    assert list(empty.dtypes) == list(mf.empty_frame().dtypes)
