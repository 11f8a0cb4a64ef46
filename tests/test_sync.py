"""Incremental sync against the simulator: requests follow what changed, the latest state is the
ground truth row for row, drift and failures lose nothing, caching never hides a change."""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import assert_matches_truth, recorded, writes
from conftest import tagged as is_tagged

import mihu_frames as mf
from mihu_frames.simulator import Simulator
from mihu_frames.sync import sync_snapshots, sync_summary

SIZES = (0, 1, 250, 1200)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """A simulator each test may change: conversations of 0, 1, 250 and 1,200 sessions."""
    with Simulator(seed=23, sizes=SIZES, retry_after=0) as server:
        yield server


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


def _sync(root: Path, sim: Simulator, client: mf.MihuClient, **options: Any) -> pd.DataFrame:
    options.setdefault("progress", False)
    conversations = options.pop("conversations", sim.conversation_uuids)
    return sync_snapshots(root, conversations, client=client, **options)


def _truth(sim: Simulator, conversations: list[str] | None = None) -> list[dict[str, Any]]:
    wanted = conversations or sim.conversation_uuids
    return sorted((s for c in wanted for s in sim.ground_truth(c)), key=lambda s: s["uuid"])


def _by_uuid(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("uuid", ignore_index=True)


def _change(sim: Simulator) -> tuple[set[str], set[str]]:
    """Touch about 1% of every conversation's sessions (at least one) and add a few."""
    touched: set[str] = set()
    added: set[str] = set()
    for conversation, size in zip(sim.conversation_uuids, SIZES, strict=True):
        if size:
            touched.update(sim.touch_sessions(conversation, max(1, round(size / 100))))
    added.update(sim.add_sessions(sim.conversation_uuids[3], 3))
    added.update(sim.add_sessions(sim.conversation_uuids[2], 2))
    return touched, added


def _files(root: Path) -> dict[Path, bytes]:
    """Every Parquet file of the root (history and latest state) and its content."""
    return {path: path.read_bytes() for path in sorted(root.rglob("*.parquet"))}


def _months(sessions: list[dict[str, Any]]) -> set[str]:
    return {f"{pd.Timestamp(s['created_at']).tz_convert('UTC'):%Y-%m}" for s in sessions}


def test_second_sync_costs_what_changed_and_matches_truth(sim, make_client, root):
    client = make_client(sim)
    first = _sync(root, sim, client)
    assert_matches_truth(_by_uuid(first), _truth(sim))
    assert first.attrs["mihu_frames"]["conversations_full"] == 4
    assert first.attrs["mihu_frames"]["rows_new"] == sum(SIZES)

    touched, added = _change(sim)
    sim.reset_requests()
    second = _sync(root, sim, client)

    attrs = second.attrs["mihu_frames"]
    changes = len(touched) + len(added)
    assert sim.request_count <= 2 * len(SIZES) + math.ceil(changes / 100)
    assert attrs["requests"] == sim.request_count
    assert attrs["rows_changed"] == len(touched) and attrs["rows_new"] == len(added)
    assert attrs["conversations_incremental"] == 3  # the empty one has nothing held
    assert_matches_truth(_by_uuid(second), _truth(sim))
    known = set(sim.conversation_uuids[1:])
    for request in sim.requests:
        if request.conversation in known:
            assert request.params["sort_by"] == "updated_at"
            assert request.params["sort_dir"] == "desc"
    # The write's versions are exactly the changed and new rows, with a record in the commit
    # of the latest state (owner-only); only the partitions (months) of those sessions got files.
    path = Path(attrs["snapshot"])
    meta = mf.snapshot_metadata(path)
    history = mf.read_snapshots(root, latest=False)
    mine = history[history["snapshot_id"] == meta["snapshot_id"]]
    assert set(mine["uuid"]) == touched | added
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert meta["version"] == attrs["version"] == int(path.stem)
    assert meta["rows_changed"] == len(touched) and meta["rows_new"] == len(added)
    assert meta["sync"]["requests"] == sim.request_count and meta["sync"]["full"] is False
    assert len(writes(root)) == 2
    changed = [s for s in _truth(sim) if s["uuid"] in touched | added]
    latest_files = [p for p in attrs["files_written"] if "/latest/" in p]
    rewritten = {Path(p).parent.name.split("=")[1] for p in latest_files}
    assert rewritten == _months(changed)
    assert attrs["bytes_written"] == sum(Path(p).stat().st_size for p in attrs["files_written"])
    assert attrs["rows_unchanged"] <= attrs["rows_unchanged_seen"]
    # The frame a sync returns (the partitions it rewrote taken from memory) is what a reader
    # of the root gets, row for row and in order.
    pd.testing.assert_frame_equal(second, mf.read_snapshots(root))
    subset = sim.conversation_uuids[2:]
    _change(sim)
    picked = _sync(root, sim, client, conversations=subset)
    pd.testing.assert_frame_equal(picked, mf.read_snapshots(root, conversations=subset))


def test_nothing_changed_writes_nothing_and_costs_a_request_per_conversation(
    sim, make_client, root
):
    client = make_client(sim)
    _sync(root, sim, client)
    before = _files(root)
    sim.reset_requests()
    again = _sync(root, sim, client)
    attrs = again.attrs["mihu_frames"]
    assert sim.request_count == len(SIZES)
    assert attrs["snapshot"] is None and _files(root) == before
    assert attrs["rows_changed"] == 0 and attrs["rows_new"] == 0
    assert attrs["rows_unchanged_seen"] > 0 and attrs["rows_unchanged"] > 0
    assert attrs["files_written"] == [] and attrs["bytes_written"] == 0
    assert_matches_truth(_by_uuid(again), _truth(sim))
    summary = sync_summary(again)
    assert re.search(r"4 requests, 0 rows changed, 0 new", summary), summary
    assert "no change" in summary


def test_a_conversation_never_seen_gets_a_full_load(sim, make_client, root):
    client = make_client(sim)
    known, unseen = sim.conversation_uuids[2], sim.conversation_uuids[3]
    _sync(root, sim, client, conversations=[known])
    sim.reset_requests()
    df = _sync(root, sim, client, conversations=[known, unseen])
    attrs = df.attrs["mihu_frames"]
    assert attrs["conversations_full"] == 1 and attrs["conversations_incremental"] == 1
    full = [r for r in sim.requests if r.conversation == unseen]
    assert sorted(r.page for r in full) == list(range(1, 13))
    assert all(r.params["sort_by"] == "created_at" for r in full)
    assert len([r for r in sim.requests if r.conversation == known]) == 1
    assert attrs["rows_new"] == 1200
    assert_matches_truth(_by_uuid(df), _truth(sim, [known, unseen]))


def test_full_reports_deletions_and_keeps_them_in_history(sim, make_client, root, tmp_path):
    client = make_client(sim)
    _sync(root, sim, client)
    deleted = sim.delete_sessions(sim.conversation_uuids[3], 3)
    deleted += sim.delete_sessions(sim.conversation_uuids[2], 2)

    incremental = _sync(root, sim, client)
    assert incremental.attrs["mihu_frames"]["rows_deleted"] is None  # it cannot see them
    sim.reset_requests()
    full = _sync(root, sim, client, full=True)
    attrs = full.attrs["mihu_frames"]
    assert attrs["rows_deleted"] == 5 and attrs["deleted_uuids"] == sorted(deleted)
    assert attrs["conversations_full"] == 4 and attrs["snapshot"] is None
    assert sim.request_count == 1 + 1 + 3 + 12  # every page, fresh
    assert set(deleted) <= set(full["uuid"])  # history is never erased by a sync
    assert_matches_truth(_by_uuid(full[~full["uuid"].isin(deleted)]), _truth(sim))
    assert "5 deleted upstream" in sync_summary(full)
    narrowed = _sync(tmp_path / "other", sim, client, full=True, status="completed")
    assert narrowed.attrs["mihu_frames"]["rows_deleted"] is None  # a filter hides sessions


def test_drift_during_a_sync_loses_nothing(sim, make_client, root):
    client = make_client(sim)
    existing = {s["uuid"]: pd.Timestamp(s["updated_at"]) for s in _truth(sim)}
    sim.drift = 2
    first = _sync(root, sim, client)
    sim.drift = 0
    _assert_holds_at_least(first, existing)

    _change(sim)
    existing = {s["uuid"]: pd.Timestamp(s["updated_at"]) for s in _truth(sim)}
    sim.drift = 2
    second = _sync(root, sim, client)
    sim.drift = 0
    _assert_holds_at_least(second, existing)

    third = _sync(root, sim, client)
    assert_matches_truth(_by_uuid(third), _truth(sim))


def _assert_holds_at_least(df: pd.DataFrame, existing: dict[str, pd.Timestamp]) -> None:
    """Every session that existed before the sync is held, in that state or a later one."""
    held = dict(zip(df["uuid"], df["updated_at"], strict=True))
    assert set(existing) <= set(held)
    stale = [u for u, t in existing.items() if held[u] < t]
    assert not stale


def test_an_exception_half_way_leaves_earlier_snapshots_and_the_next_sync_completes(
    sim, make_client, root
):
    client = make_client(sim, retries=0)
    _sync(root, sim, client)
    before_files = _files(root)
    before = mf.read_snapshots(root)
    touched, added = _change(sim)
    newcomer = sim.add_conversation(450)

    # The incremental reads succeed, then the newcomer's full load fails on its third page.
    sim.fail_next("500", conversation=newcomer, page=3)
    everything = [*sim.conversation_uuids]
    with pytest.raises(mf.ServerError, match="page 3"):
        _sync(root, sim, client, conversations=everything)
    assert _files(root) == before_files
    pd.testing.assert_frame_equal(mf.read_snapshots(root), before)
    assert not list(root.rglob("*.tmp"))  # no temporary file left behind

    # Now an incremental read fails half way through the conversations.
    sim.fail_next("500", conversation=sim.conversation_uuids[3])
    with pytest.raises(mf.ServerError):
        _sync(root, sim, client, conversations=everything)
    assert _files(root) == before_files

    done = _sync(root, sim, client, conversations=everything)
    attrs = done.attrs["mihu_frames"]
    assert attrs["rows_changed"] == len(touched) and attrs["rows_new"] == len(added) + 450
    assert_matches_truth(_by_uuid(done), _truth(sim, everything))


def test_on_error_warn_syncs_the_others_and_keeps_the_failed_ones_state(sim, make_client, root):
    client = make_client(sim, retries=0)
    _sync(root, sim, client)
    failing, fine = sim.conversation_uuids[3], sim.conversation_uuids[2]
    held_before = _by_uuid(mf.read_snapshots(root, conversations=failing))
    sim.touch_sessions(failing, 5)
    changed = sim.touch_sessions(fine, 4)
    sim.fail_next("500", conversation=failing)
    with pytest.warns(RuntimeWarning, match="did not sync"):
        df = _sync(root, sim, client, on_error="warn")
    attrs = df.attrs["mihu_frames"]
    assert [e["conversation"] for e in attrs["errors"]] == [failing]
    assert attrs["rows_changed"] == len(changed)
    pd.testing.assert_frame_equal(_by_uuid(df[df["conversation_uuid"] == failing]), held_before)
    assert_matches_truth(_by_uuid(df[df["conversation_uuid"] == fine]), _truth(sim, [fine]))
    assert "1 failed" in sync_summary(df)
    after = _sync(root, sim, client, on_error="skip")
    assert after.attrs["mihu_frames"]["rows_changed"] == 5
    assert_matches_truth(_by_uuid(after), _truth(sim))


def test_pages_a_sync_reads_are_fresh_even_with_a_warm_cache(sim, make_client, root):
    client = make_client(sim, expire_after=None)  # cached pages never expire
    client.sessions(sim.conversation_uuids, progress=False)  # the cache now holds every page
    sim.touch_sessions(sim.conversation_uuids[3], 7)
    first = _sync(root, sim, client)  # full loads, of pages the cache holds
    assert_matches_truth(_by_uuid(first), _truth(sim))
    assert first.attrs["mihu_frames"]["requests"] == 1 + 1 + 3 + 12
    # Cache the very pages an incremental read asks for, then change what they show.
    client.sessions(sim.conversation_uuids, sort_by="updated_at", sort_dir="desc", progress=False)
    touched = sim.touch_sessions(sim.conversation_uuids[2], 3)
    touched += sim.touch_sessions(sim.conversation_uuids[3], 2)
    sim.reset_requests()
    second = _sync(root, sim, client)
    assert sim.request_count == len(SIZES)
    assert second.attrs["mihu_frames"]["rows_changed"] == len(touched)
    assert_matches_truth(_by_uuid(second), _truth(sim))


def test_a_conversation_failing_on_a_later_page_keeps_its_state_whole(sim, make_client, root):
    client = make_client(sim, retries=0)
    _sync(root, sim, client)
    big = sim.conversation_uuids[3]
    held_before = _by_uuid(mf.read_snapshots(root, conversations=big))
    sim.touch_sessions(big, 150)  # two pages of changes
    other = sim.touch_sessions(sim.conversation_uuids[2], 2)
    sim.fail_next("500", conversation=big, page=2)  # after page 1 was read
    df = _sync(root, sim, client, on_error="skip")
    assert [e["page"] for e in df.attrs["mihu_frames"]["errors"]] == [2]
    assert df.attrs["mihu_frames"]["rows_changed"] == len(other)
    pd.testing.assert_frame_equal(_by_uuid(df[df["conversation_uuid"] == big]), held_before)


def test_overlap_decides_how_far_back_an_incremental_read_goes(sim, make_client, root):
    client = make_client(sim)
    _sync(root, sim, client)
    sim.reset_requests()
    wide = _sync(root, sim, client, overlap=timedelta(days=400))
    assert sim.request_count == 1 + 1 + 3 + 12  # the window reaches back past every session
    assert wide.attrs["mihu_frames"]["snapshot"] is None
    touched = sim.touch_sessions(sim.conversation_uuids[3], 2)
    sim.reset_requests()
    narrow = _sync(root, sim, client, overlap=0)
    assert sim.request_count == len(SIZES)
    assert narrow.attrs["mihu_frames"]["rows_changed"] == len(touched)


def test_hashed_snapshots_stay_hashed_and_unchanged_rows_are_not_rewritten(
    sim, make_client, root, monkeypatch
):
    monkeypatch.setenv("MIHU_PII_KEY", "test-key")
    client = make_client(sim)
    first = _sync(root, sim, client, pii="hash")
    names = {s["contact"]["name"] for s in _truth(sim) if s.get("contact")}
    assert names.isdisjoint(set(first["contact_name"].dropna()))
    again = _sync(root, sim, client, pii="hash")
    assert again.attrs["mihu_frames"]["rows_changed"] == 0
    assert again.attrs["mihu_frames"]["snapshot"] is None
    sim.touch_sessions(sim.conversation_uuids[3], 2)
    third = _sync(root, sim, client, pii="hash")
    assert third.attrs["mihu_frames"]["rows_changed"] == 2
    assert mf.snapshot_metadata(third.attrs["mihu_frames"]["snapshot"])["pii"] == "hash"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overlap": -1}, "overlap"),
        ({"overlap": timedelta(minutes=-1)}, "overlap"),
        ({"overlap": "5 minutes"}, "overlap"),
        ({"overlap": float("nan")}, "overlap"),
        ({"per_page": 500}, "per_page"),
        ({"status": "done"}, "status"),
        ({"full": "yes"}, "full"),
        ({"refetch": 1}, "refetch"),
        ({"on_error": "ignore"}, "on_error"),
        ({"progress": "bar"}, "progress"),
        ({"pii": "clear"}, "pii"),
        ({"conversations": ["not-a-uuid"]}, "UUID"),
    ],
)
def test_bad_arguments_fail_before_any_request(sim, make_client, root, options, message):
    client = make_client(sim)
    sim.reset_requests()
    with pytest.raises(ValueError, match=message):
        _sync(root, sim, client, **options)
    assert sim.request_count == 0 and not root.exists()


def test_hashing_without_a_key_fails_before_any_request(sim, make_client, root, monkeypatch):
    monkeypatch.delenv("MIHU_PII_KEY", raising=False)
    client = make_client(sim)
    sim.reset_requests()
    with pytest.raises(ValueError, match="MIHU_PII_KEY"):
        _sync(root, sim, client, pii="hash")
    assert sim.request_count == 0 and not root.exists()


def test_client_options_build_a_client_and_mixing_both_is_refused(sim, make_client, root):
    with pytest.raises(TypeError, match="not both"):
        _sync(root, sim, make_client(sim), base_url=sim.base_url)
    with pytest.raises(ValueError, match="folder"):
        root.parent.mkdir(parents=True, exist_ok=True)
        root.write_text("")
        sync_snapshots(root, sim.conversation_uuids, base_url=sim.base_url, token=sim.token)
    root.unlink()
    df = sync_snapshots(
        root, sim.conversation_uuids[2], base_url=sim.base_url, token=sim.token, cache=None
    )
    assert_matches_truth(_by_uuid(df), _truth(sim, [sim.conversation_uuids[2]]))
    assert sim.token not in repr(df.attrs) and sim.token.encode() not in b"".join(
        _files(root).values()
    )
    assert oct(os.stat(root).st_mode & 0o777) == oct(0o700)


def test_changes_spilling_over_several_pages_are_all_read(sim, make_client, root):
    client = make_client(sim)
    _sync(root, sim, client)
    big = sim.conversation_uuids[3]
    touched = sim.touch_sessions(big, 230)  # pages 1-2 all changed, page 3 reaches the window
    sim.reset_requests()
    df = _sync(root, sim, client)
    assert sorted(r.page for r in sim.requests if r.conversation == big) == [1, 2, 3]
    assert sim.request_count <= 2 * len(SIZES) + math.ceil(len(touched) / 100)
    assert df.attrs["mihu_frames"]["rows_changed"] == len(touched)
    assert_matches_truth(_by_uuid(df), _truth(sim))


def test_a_held_row_that_differs_with_the_same_updated_at_is_repaired(sim, make_client, root):
    client = make_client(sim)
    _sync(root, sim, client)
    touched = sim.touch_sessions(sim.conversation_uuids[3], 3)  # held next, inside the window
    second = _sync(root, sim, client)
    held = second.set_index("uuid").loc[touched].reset_index()[second.columns]
    # A later write with other content under the same updated_at and fetch time: it wins.
    held["summary"] = "edited by hand"
    mf.write_snapshot(held, root)
    tampered = mf.read_snapshots(root).set_index("uuid").loc[touched, "summary"]
    assert (tampered == "edited by hand").all()
    df = _sync(root, sim, client)
    assert df.attrs["mihu_frames"]["rows_changed"] == 3 and df.attrs["mihu_frames"]["rows_new"] == 0
    assert_matches_truth(_by_uuid(df), _truth(sim))


def test_a_conversation_failing_in_one_filter_query_is_left_out_whole(sim, make_client, root):
    client = make_client(sim, retries=0)
    first = _sync(root, sim, client, status="all")
    assert set(first["status"].dropna()) == {"active", "completed", "timed_out"}
    failing = sim.conversation_uuids[3]
    held_before = _by_uuid(mf.read_snapshots(root, conversations=failing))
    sim.touch_sessions(failing, 40)  # changes under every status
    sim.fail_next("500", conversation=failing)  # one of its three queries fails
    with pytest.warns(RuntimeWarning) as caught:
        df = _sync(root, sim, client, status="all", on_error="warn")
    assert caught[0].filename == __file__  # the warning points at the caller
    assert [e["conversation"] for e in df.attrs["mihu_frames"]["errors"]] == [failing]
    assert df.attrs["mihu_frames"]["rows_changed"] == 0
    pd.testing.assert_frame_equal(_by_uuid(df[df["conversation_uuid"] == failing]), held_before)
    after = _sync(root, sim, client, status="all")
    assert after.attrs["mihu_frames"]["rows_changed"] == 40
    assert_matches_truth(_by_uuid(after), _truth(sim))
    tags = sim.tags()
    assert all(tags[u][0] == s for u, s in zip(after["uuid"], after["status"], strict=True))


# --------------------------------------------------------------------------- filters and tags


def _tags_match(df: pd.DataFrame, sim: Simulator, *, status: bool = True, kind: bool = False):
    tags = sim.tags()
    for uuid, got_status, got_type in zip(df["uuid"], df["status"], df["type"], strict=True):
        if status:
            assert got_status == tags[uuid][0], uuid
        if kind:
            assert got_type == tags[uuid][1], uuid


def test_a_sync_without_filters_uses_the_ones_the_root_recorded(sim, make_client, root):
    client = make_client(sim)
    first = _sync(root, sim, client, status="all")
    _tags_match(first, sim)
    touched = sim.touch_sessions(sim.conversation_uuids[3], 7)
    sim.reset_requests()
    df = _sync(root, sim, client)  # as the README shows: no filters named again
    attrs = df.attrs["mihu_frames"]
    assert {r.params.get("status") for r in sim.requests} == {"active", "completed", "timed_out"}
    assert attrs["filters"]["status"] == ["active", "completed", "timed_out"]
    assert attrs["rows_changed"] == len(touched) and attrs["rows_new"] == 0
    assert is_tagged(df["status"]).all()
    _tags_match(df, sim)
    assert_matches_truth(_by_uuid(df), _truth(sim))
    same = _sync(root, sim, client, status=["timed_out", "completed", "active"])  # any spelling
    assert same.attrs["mihu_frames"]["rows_changed"] == 0


def test_other_filters_are_refused_before_any_request_unless_refetch(sim, make_client, root):
    client = make_client(sim)
    _sync(root, sim, client, status="all")
    before = _files(root)
    for options in ({"status": "completed"}, {"type": "voice"}, {"status": "all", "type": "all"}):
        sim.reset_requests()
        with pytest.raises(ValueError) as caught:
            _sync(root, sim, client, **options)
        message = str(caught.value)
        assert "status='all', type=None" in message and str(root) in message
        assert "refetch=True" in message and "new root" in message
        assert sim.request_count == 0 and _files(root) == before
    with pytest.raises(ValueError, match="refetch"):
        _sync(root, sim, client, full=True, type="voice")
    assert sim.request_count == 0

    sim.reset_requests()
    df = _sync(root, sim, client, status="all", type="all", refetch=True)
    attrs = df.attrs["mihu_frames"]
    assert attrs["conversations_full"] == len(SIZES)  # every conversation read anew
    assert all(r.params["sort_by"] == "created_at" for r in sim.requests)
    assert {(r.params["status"], r.params["type"]) for r in sim.requests if r.conversation} == {
        (s, t) for s in ("active", "completed", "timed_out") for t in ("text", "voice")
    }
    assert attrs["rows_changed"] == sum(SIZES)  # each session gained its type tag
    _tags_match(df, sim, kind=True)
    assert recorded(root)["type"] == ["text", "voice"]
    assert_matches_truth(_by_uuid(df), _truth(sim))
    sim.reset_requests()
    again = _sync(root, sim, client)  # now with the new filters
    assert {r.params["type"] for r in sim.requests} == {"text", "voice"}
    assert again.attrs["mihu_frames"]["rows_changed"] == 0


def test_tags_are_kept_across_plain_and_full_syncs(sim, make_client, root):
    """A root fetched without filters, 100 sessions of it tagged later: syncs without filters
    (plain and full) never replace a tag by null."""
    client = make_client(sim)
    big = sim.conversation_uuids[3]
    _sync(root, sim, client)  # no filters: recorded as such
    tagged = client.sessions(big, status="all", type="all", refresh=True).head(100)
    assert mf.snapshot_metadata(mf.write_snapshot(tagged, root))["rows_changed"] == 100
    touched = sim.touch_sessions(big, 150)  # open sessions first: the tagged ones among them
    assert set(touched) & set(tagged["uuid"])
    plain = _sync(root, sim, client)
    assert plain.attrs["mihu_frames"]["rows_changed"] == len(touched)
    full = _sync(root, sim, client, full=True)
    assert full.attrs["mihu_frames"]["rows_changed"] == 0  # an untagged row equals a tagged one
    for df in (plain, full, mf.read_snapshots(root)):
        held = df.set_index("uuid")
        assert is_tagged(held.loc[tagged["uuid"], "status"]).all()
        assert is_tagged(held.loc[tagged["uuid"], "type"]).all()
        assert is_tagged(held["status"]).sum() == 100
        _tags_match(df[df["uuid"].isin(tagged["uuid"])], sim, kind=True)
    assert_matches_truth(_by_uuid(full), _truth(sim))


# ---------------------------------------------------------------------- timestamps at the edges


def _serve_timestamp(sim: Simulator, uuid: str, name: str, text: str) -> None:
    """Make the simulator serve ``name`` of one session as ``text`` (an instant the generator
    never produces), as a misbehaving backend would."""
    sim.set_timestamp(uuid, name, text)


def test_a_session_dated_in_the_year_9999_hides_no_later_edit(sim, make_client, root):
    client = make_client(sim)
    big = sim.conversation_uuids[3]
    future = sim.ground_truth(big)[10]["uuid"]
    _serve_timestamp(sim, future, "updated_at", "9999-12-31T23:59:59.999999Z")
    first = _sync(root, sim, client)
    assert first.set_index("uuid").loc[future, "updated_at"].year == 9999
    for _ in range(2):  # edits after it, twice
        touched = sim.touch_sessions(big, 5)
        df = _sync(root, sim, client)
        assert df.attrs["mihu_frames"]["rows_changed"] == len(touched)
        assert_matches_truth(_by_uuid(df), _truth(sim))


def test_a_session_dated_in_the_year_1_does_not_break_the_next_sync(sim, make_client, root):
    client = make_client(sim)
    one = sim.conversation_uuids[1]  # a conversation of one session
    (only,) = [s["uuid"] for s in sim.ground_truth(one)]
    _serve_timestamp(sim, only, "updated_at", "0001-01-01T00:00:00Z")
    first = _sync(root, sim, client)
    assert first.set_index("uuid").loc[only, "updated_at"] == pd.Timestamp("0001-01-01", tz="UTC")
    sim.reset_requests()
    again = _sync(root, sim, client)  # its window would start before the year 1
    assert again.attrs["mihu_frames"]["rows_changed"] == 0
    assert len([r for r in sim.requests if r.conversation == one]) == 1
    touched = sim.touch_sessions(one, 1)
    after = _sync(root, sim, client)
    assert after.attrs["mihu_frames"]["rows_changed"] == len(touched) == 1
    assert_matches_truth(_by_uuid(after), _truth(sim))
