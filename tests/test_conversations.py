"""Every conversation of an account: the listing, "all" in place of UUIDs, syncs that list again."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from typing import Any

import pandas as pd
import pytest
from conftest import assert_matches_truth, recorded

import mihu_frames as mf
from mihu_frames.simulator import Simulator

CONVERSATION = "3c90c3cc-0d44-4b50-8888-8dd25736052a"


@pytest.fixture
def account():
    """An account of six conversations, one of them without sessions."""
    with Simulator(seed=5, sizes=(0, 3, 120, 40, 7, 260)) as server:
        yield server


def _client(sim: Simulator, tmp_path: Any, **options: Any) -> mf.MihuClient:
    options.setdefault("cache", tmp_path / "cache.sqlite")
    return mf.MihuClient(sim.base_url, token=sim.token, **options)


def _utc(text: str | None) -> pd.Timestamp | None:
    return None if text is None else pd.Timestamp(text).tz_convert("UTC")


def test_the_listing_is_every_conversation_typed_with_nothing_lost(account, tmp_path):
    with _client(account, tmp_path) as client:
        convs = client.conversations()
    truth = {c["uuid"]: c for c in account.conversations_truth()}
    assert list(convs.columns[:2]) == ["uuid", "agent_uuid"]
    assert sorted(convs["uuid"]) == sorted(truth)
    for name in ("created_at", "updated_at", "last_message_at", "fetched_at"):
        assert str(convs[name].dtype) == "datetime64[us, UTC]"
    assert str(convs["sessions_count"].dtype) == "Int64"
    assert str(convs["channel"].dtype) == "string"
    for row in convs.to_dict("records"):
        sent = truth[row["uuid"]]
        assert row["channel"] == sent["channel"] and row["status"] == sent["status"]
        assert row["sessions_count"] == sent["sessions_count"]
        for name in ("created_at", "updated_at", "last_message_at"):
            got = None if pd.isna(row[name]) else row[name]
            assert got == _utc(sent[name]), name
        contact = sent["contact"] or {}
        assert (None if pd.isna(row["contact_name"]) else row["contact_name"]) == contact.get(
            "name"
        )
        known = {"uuid", "agent_uuid", "channel", "status", "phone", "contact"}
        known |= {"created_at", "updated_at", "last_message_at", "sessions_count"}
        undocumented = {k: v for k, v in sent.items() if k not in known}
        assert (json.loads(row["extra"]) if not pd.isna(row["extra"]) else {}) == undocumented


def test_filters_are_sent_to_the_server(account, tmp_path):
    truth = account.conversations_truth()
    channel = truth[0]["channel"]
    agent = next(c["agent_uuid"] for c in truth if c["agent_uuid"])
    with _client(account, tmp_path, cache=None) as client:
        account.reset_requests()
        by_channel = client.conversations(channel=channel)
        by_agent = client.conversations(agent_uuid=agent.upper(), status="closed")
    params = [r.params for r in account.requests]
    assert params[0]["channel"] == channel
    assert params[1]["agent_uuid"] == agent and params[1]["status"] == "closed"
    assert set(by_channel["uuid"]) == {
        c["uuid"] for c in account.conversations_truth(channel=channel)
    }
    expected = account.conversations_truth(agent_uuid=agent, status="closed")
    assert set(by_agent["uuid"]) == {c["uuid"] for c in expected}
    with pytest.raises(ValueError, match="not a conversation UUID"):
        mf.list_conversations(agent_uuid="nobody", base_url=account.base_url, token="t0ken-xyz")
    with pytest.raises(mf.ValidationError):  # the server decides which channels exist
        mf.list_conversations(
            channel="pigeon", base_url=account.base_url, token=account.token, cache=None
        )


def test_listing_pages_are_concurrent_cached_and_one_request_each(tmp_path):
    with (
        Simulator(seed=2, sizes=[0] * 10_000) as big,
        _client(big, tmp_path, max_workers=8) as client,
    ):
        big.reset_requests()
        convs = client.conversations()
        assert len(convs) == 10_000 and convs["uuid"].is_unique
        assert big.request_count == math.ceil(10_000 / 100)
        big.reset_requests()
        again = client.conversations()
        assert big.request_count == 0 and again.attrs["mihu_frames"]["cache_hits"] == 100
        pd.testing.assert_frame_equal(again, convs)


def test_all_loads_every_conversation_the_listing_returns(account, tmp_path):
    with _client(account, tmp_path) as client:
        everything = client.sessions("all")
        assert everything.attrs["mihu_frames"]["listed"] == "all"
        by_ids = client.sessions(account.conversation_uuids)
    assert_matches_truth(
        everything.sort_values("uuid", ignore_index=True),
        sorted(account.ground_truth(), key=lambda s: s["uuid"]),
    )
    pd.testing.assert_frame_equal(
        everything.sort_values("uuid", ignore_index=True),
        by_ids.sort_values("uuid", ignore_index=True),
        check_like=True,
    )
    one_call = mf.load_sessions("all", base_url=account.base_url, token=account.token, cache=None)
    assert sorted(one_call["uuid"]) == sorted(everything["uuid"])


def test_all_lists_anew_within_expire_after_and_offline_uses_the_cached_listing(account, tmp_path):
    with _client(account, tmp_path) as client:
        before = client.sessions("all")
        new = account.add_conversation(9)
        again = client.sessions("all")  # the cached pages are fresh: only the listing is new
        offline = client.sessions("all", offline=True)
    assert new not in set(before["conversation_uuid"])
    assert_matches_truth(
        again.sort_values("uuid", ignore_index=True),
        sorted(account.ground_truth(), key=lambda s: s["uuid"]),
    )
    assert (again["conversation_uuid"] == new).sum() == 9
    assert again.attrs["mihu_frames"]["cache_hits"] >= 1
    assert sorted(offline["uuid"]) == sorted(again["uuid"])


def test_a_frame_or_series_of_conversations_is_taken_where_uuids_are(account, tmp_path):
    with _client(account, tmp_path) as client:
        convs = client.conversations()
        busy = convs[convs["sessions_count"] > 50]
        from_frame = client.sessions(busy)
        from_series = client.sessions(busy["uuid"])
    wanted = set(busy["uuid"])
    expected = [s for s in account.ground_truth() if s["conversation_uuid"] in wanted]
    assert sorted(from_frame["uuid"]) == sorted(s["uuid"] for s in expected)
    pd.testing.assert_frame_equal(from_frame, from_series)
    with pytest.raises(ValueError, match="'uuid'"):
        mf.MihuClient(account.base_url, token=account.token, cache=None).sessions(
            convs.drop(columns="uuid")
        )


@pytest.mark.parametrize(
    "bad",
    [["all", CONVERSATION], "ALL", " all", ["All"], pd.Series(["all"])],
)
def test_all_mixed_or_misspelled_is_refused_before_any_request(account, tmp_path, bad):
    with _client(account, tmp_path) as client:
        account.reset_requests()
        with pytest.raises(ValueError, match="all"):
            client.sessions(bad)
        with pytest.raises(ValueError, match="all"):
            mf.sync_snapshots(tmp_path / "root", bad, client=client)
    assert account.request_count == 0


def _listing_page(entries: list[Any], page: int, last_page: int, per_page: int = 2) -> bytes:
    return json.dumps(
        {
            "success": True,
            "message": "ok",
            "data": {
                "current_page": page,
                "total": last_page * per_page,
                "last_page": last_page,
                "per_page": per_page,
                "data": entries,
            },
        }
    ).encode()


def test_an_entry_without_a_uuid_names_its_page_and_the_others_still_load(server_factory):
    good = [{"uuid": f"0000000{i}-0c0c-4000-8000-000000000000"} for i in range(5)]
    pages = {
        1: _listing_page(good[:2], 1, 3),
        2: _listing_page([good[2], {"channel": "web"}], 2, 3),  # no uuid
        3: _listing_page(good[3:5], 3, 3),
    }

    def answer(path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        page = int(path.split("page=")[1].split("&")[0])
        return 200, {"Content-Type": "application/json"}, pages[page]

    server = server_factory(answer)
    options = {"base_url": server.base_url, "token": "t0ken-for-tests", "cache": None}
    with pytest.raises(mf.ResponseFormatError) as caught:
        mf.list_conversations(per_page=2, **options)
    assert caught.value.page == 2 and "uuid" in str(caught.value)
    with pytest.warns(RuntimeWarning, match="page 2"):
        convs = mf.list_conversations(per_page=2, on_error="warn", **options)
    assert sorted(convs["uuid"]) == sorted(g["uuid"] for g in good[:2] + good[3:])
    [error] = convs.attrs["mihu_frames"]["errors"]
    assert error["page"] == 2 and error["error"] == "ResponseFormatError"


def test_a_failing_listing_page_is_left_out_alone_and_the_listing_is_not_cached(
    server_factory, tmp_path
):
    good = [{"uuid": f"0000000{i}-0c0c-4000-8000-000000000000"} for i in range(6)]
    broken = {"page": 2}

    def answer(path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        json_type = {"Content-Type": "application/json"}
        if path.startswith("/api/v1/conversations?"):
            page = int(path.split("page=")[1].split("&")[0])
            if page == broken["page"]:
                return 500, json_type, b'{"success":false,"message":"boom"}'
            return 200, json_type, _listing_page(good[2 * page - 2 : 2 * page], page, 3)
        conversation = path.split("/")[4]
        session = {"uuid": conversation.replace("0c0c", "5e55"), "conversation_uuid": conversation}
        return 200, json_type, _listing_page([session], 1, 1, per_page=100)

    server = server_factory(answer)
    options = {
        "base_url": server.base_url,
        "token": "t0ken-for-tests",
        "cache": tmp_path / "c.sqlite",
        "retries": 0,
        "per_page": 2,
    }
    with pytest.raises(mf.ServerError) as caught:
        mf.list_conversations(**options)
    assert caught.value.page == 2 and caught.value.status_code == 500
    listed = good[:2] + good[4:]
    with pytest.warns(RuntimeWarning, match="page 2"):
        convs = mf.list_conversations(on_error="warn", **options)
    assert sorted(convs["uuid"]) == sorted(g["uuid"] for g in listed)
    [error] = convs.attrs["mihu_frames"]["errors"]
    assert (error["page"], error["error"], error["status_code"]) == (2, "ServerError", 500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sessions = mf.load_sessions("all", on_error="skip", **{**options, "per_page": 100})
    assert sorted(sessions["conversation_uuid"]) == sorted(g["uuid"] for g in listed)
    # The server mends: the listing is asked for again, whole, not taken from the cache.
    broken["page"] = None
    asked = len(server.paths)
    convs = mf.list_conversations(**options)
    assert sorted(convs["uuid"]) == sorted(g["uuid"] for g in good)
    listing_requests = [p for p in server.paths[asked:] if p.startswith("/api/v1/conversations?")]
    assert len(listing_requests) == 3


def test_undocumented_and_reserved_at_fields_are_kept_and_a_bad_documented_one_is_named(
    server_factory,
):
    uuid = "00000001-0c0c-4000-8000-000000000000"
    entries = {
        "good": [
            {"uuid": uuid, "deleted_at": "never", "fetched_at": "2020-01-01T00:00:00Z"},
            {**{"uuid": uuid.replace("1-", "2-")}, "deleted_at": "2026-01-02T03:04:05+01:00"},
        ],
        "bad": [{"uuid": uuid, "created_at": "yesterday"}],
    }
    current = {"entries": entries["good"]}

    def answer(path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        body = _listing_page(current["entries"], 1, 1, per_page=100)
        return 200, {"Content-Type": "application/json"}, body

    server = server_factory(answer)
    options = {"base_url": server.base_url, "token": "t0ken-for-tests", "cache": None}
    convs = mf.list_conversations(**options)
    assert [json.loads(e) if isinstance(e, str) else None for e in convs["extra"]] == [
        {"deleted_at": "never", "fetched_at": "2020-01-01T00:00:00Z"},
        None,
    ]
    assert pd.isna(convs.loc[0, "deleted_at"])
    assert convs.loc[1, "deleted_at"] == pd.Timestamp("2026-01-02T02:04:05Z")
    assert convs["fetched_at"].min() > pd.Timestamp("2026-01-01", tz="UTC")  # ours, not theirs
    current["entries"] = entries["bad"]
    with pytest.raises(mf.ResponseFormatError) as caught:
        mf.list_conversations(**options)
    assert caught.value.page == 1 and caught.value.field == "created_at"
    assert "yesterday" in str(caught.value)


def test_an_account_without_conversations_is_an_empty_typed_frame(tmp_path):
    with Simulator(seed=1, sizes=[]) as empty, _client(empty, tmp_path) as client:
        convs = client.conversations()
        sessions = client.sessions("all")
    assert convs.empty and list(convs.columns[:1]) == ["uuid"]
    assert str(convs["created_at"].dtype) == "datetime64[us, UTC]"
    assert sessions.empty and list(sessions.dtypes) == list(mf.empty_frame().dtypes)


def test_a_root_synced_with_all_lists_again_and_loads_new_conversations(account, tmp_path):
    root = tmp_path / "root"
    with _client(account, tmp_path) as client:
        first = mf.sync_snapshots(root, "all", client=client)
        a = first.attrs["mihu_frames"]
        assert (a["conversations_listed"], a["conversations_new"]) == (6, 5)
        assert a["conversations_empty"] == 1  # listed without sessions: nothing to read
        assert recorded(root)["conversations"] == "all"
        added = [account.add_conversation(25), account.add_conversation(0)]
        touched = account.touch_sessions(account.conversation_uuids[2], 4)
        account.reset_requests()
        second = mf.sync_snapshots(root, client=client)  # "all" is the root's
    a = second.attrs["mihu_frames"]
    assert (a["conversations_listed"], a["conversations_new"], a["conversations_empty"]) == (
        8,
        1,
        2,
    )
    assert (a["conversations_full"], a["conversations_incremental"]) == (1, 5)
    assert a["rows_new"] == 25 and a["rows_changed"] == len(touched)
    listing = [r for r in account.requests if r.conversation is None]
    assert len(listing) == a["listing_requests"] == 1
    per_conversation = [r for r in account.requests if r.conversation is not None]
    assert len(per_conversation) == 5 + 1  # one incremental read each, the new one in full
    assert set(added) <= set(second["conversation_uuid"]) | {added[1]}  # 0 sessions: no row
    assert_matches_truth(
        second.sort_values("uuid", ignore_index=True),
        sorted(account.ground_truth(), key=lambda s: s["uuid"]),
    )
    assert "every conversation listed: 8, 1 new, 2 without sessions" in mf.sync_summary(second)


def test_a_sync_without_conversations_needs_a_root_synced_with_all(account, tmp_path):
    root = tmp_path / "root"
    with _client(account, tmp_path) as client:
        mf.sync_snapshots(root, account.conversation_uuids[:2], client=client)
        account.reset_requests()
        with pytest.raises(ValueError, match="name the conversations"):
            mf.sync_snapshots(root, client=client)
    assert account.request_count == 0


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "mihu_frames", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_the_command_line_lists_fetches_and_syncs_everything(account, tmp_path):
    env = {"MIHU_API_TOKEN": account.token, "MIHU_BASE_URL": account.base_url}
    table = _cli("conversations", "--no-cache", env=env)
    assert table.returncode == 0, table.stderr
    assert "6 conversations" in table.stdout
    assert all(uuid in table.stdout for uuid in account.conversation_uuids)
    channel = account.conversations_truth()[0]["channel"]
    out = tmp_path / "convs.parquet"
    written = _cli("conversations", "--channel", channel, "--out", str(out), "--no-cache", env=env)
    assert written.returncode == 0, written.stderr
    expected = {c["uuid"] for c in account.conversations_truth(channel=channel)}
    assert set(pd.read_parquet(out)["uuid"]) == expected
    csv = tmp_path / "convs.csv"
    assert _cli("conversations", "--out", str(csv), "--no-cache", env=env).returncode == 0
    assert len(pd.read_csv(csv)) == 6
    fetch = _cli("fetch", "--all", "--root", str(tmp_path / "snaps"), "--no-cache", env=env)
    assert fetch.returncode == 0, fetch.stderr
    assert len(mf.read_snapshots(tmp_path / "snaps")) == len(account.ground_truth())
    root = str(tmp_path / "synced")
    sync = _cli("sync", "--all", "--root", root, "--no-cache", env=env)
    assert sync.returncode == 0, sync.stderr
    account.add_conversation(12)
    again = _cli("sync", "--root", root, "--no-cache", env=env)
    assert again.returncode == 0, again.stderr
    assert "every conversation listed: 7, 1 new, 1 without sessions" in again.stdout
    both = _cli("fetch", "--all", account.conversation_uuids[1], "--no-cache", env=env)
    assert both.returncode == 2 and "not both" in both.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _cli("fetch", "--no-cache", env=env).returncode == 2
