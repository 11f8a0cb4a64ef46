"""Where two features meet: each defect the model-based test (tests/test_model.py) stands guard
over, pinned by a test of its own that failed on the code before its fix (issue 18, and the
store-side items of issue 21)."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import mihu_frames as mf
from mihu_frames.simulator import Simulator

A = "3C90C3CC-0D44-4B50-8888-8DD25736052A"
B = "5d2a6b1e-7c3f-4e8a-9b0d-1f2e3a4b5c6d"
SHARED = "9e8d7c6b-5a49-4382-a1b0-c9d8e7f6a5b4"


def _session(conversation: str, session: str, summary: str = "hello") -> dict[str, Any]:
    return {
        "uuid": session,
        "conversation_uuid": conversation,
        "started_at": "2026-11-02T09:00:00Z",
        "ended_at": "2026-11-02T09:05:00Z",
        "last_activity_at": "2026-11-02T09:04:00Z",
        "evaluated_at": None,
        "summary_generated_at": None,
        "created_at": "2026-11-02T09:00:00Z",
        "updated_at": "2026-11-02T09:05:00Z",
        "summary": summary,
        "agent_uuid": None,
        "contact": None,
        "call_uuid": None,
        "campaign_uuid": None,
        "listing_uuid": None,
        "task_uuids": [],
    }


def _page(sessions: list[dict[str, Any]]) -> bytes:
    data = {"current_page": 1, "total": len(sessions), "last_page": 1, "per_page": 100}
    envelope = {"success": True, "message": "ok", "data": {**data, "data": sessions}}
    return json.dumps(envelope).encode()


# --------------------------------------------------------------------------- 1. restart filters


def test_a_filtered_listing_fetched_anew_keeps_its_filters(tmp_path):
    """A cached page of a filtered listing gone from the cache file: the listing is fetched
    anew, with its filters (it came back unfiltered: every channel)."""
    cache = tmp_path / "cache.sqlite"
    with (
        Simulator(seed=2, sizes=[0] * 400) as sim,
        mf.MihuClient(sim.base_url, token=sim.token, cache=cache) as client,
    ):
        wanted = {c["uuid"] for c in sim.conversations_truth(channel="whatsapp")}
        assert 100 < len(wanted) < 400  # two pages or more, and not every conversation
        first = client.conversations(channel="whatsapp")
        assert set(first["uuid"]) == wanted
        client.cache.flush()
        with sqlite3.connect(cache) as db:  # page 2's row goes; its index entry stays
            (key,) = db.execute("select key from mihu_frames_pages where page = 2").fetchone()
            assert db.execute("delete from responses where key = ?", (key,)).rowcount == 1
        sim.reset_requests()
        again = client.conversations(channel="whatsapp")
    assert sim.request_count >= 1
    assert all(r.params.get("channel") == "whatsapp" for r in sim.requests)
    assert set(again["uuid"]) == wanted
    assert again.attrs["mihu_frames"]["filters"] == {"channel": "whatsapp"}


# --------------------------------------------------------------------------- 3. naive times


@pytest.fixture
def frame() -> pd.DataFrame:
    return mf.sessions_frame([_session(B, SHARED)])


def test_a_naive_timestamp_column_is_refused_naming_the_column_and_the_fix(frame, tmp_path):
    naive = frame.assign(started_at=frame["started_at"].dt.tz_localize(None))
    with pytest.raises(ValueError, match=r"'started_at'.*naive.*tz_localize"):
        mf.write_snapshot(naive, tmp_path / "root")
    assert not (tmp_path / "root").exists()  # nothing written, not even a root
    as_objects = frame.assign(ended_at=[pd.Timestamp("2026-11-02 14:25").to_pydatetime()])
    with pytest.raises(ValueError, match=r"'ended_at'.*naive"):
        mf.write_snapshot(as_objects, tmp_path / "root")


def test_a_time_with_a_zone_is_stored_as_that_instant(frame, tmp_path):
    """14:25 in Berlin is 13:25Z in November (it was stored as 14:25Z when naive)."""
    berlin = pd.Series([pd.Timestamp("2026-11-02 14:25")]).dt.tz_localize("Europe/Berlin")
    mf.write_snapshot(frame.assign(ended_at=berlin), tmp_path / "root")
    back = mf.read_snapshots(tmp_path / "root")
    assert back["ended_at"].iloc[0] == pd.Timestamp("2026-11-02 13:25", tz="UTC")
    assert str(back["ended_at"].dtype) == "datetime64[us, UTC]"


def test_nanoseconds_are_refused_naming_the_column_and_how_to_round(frame, tmp_path):
    finer = frame["updated_at"].astype("datetime64[ns, UTC]") + pd.Timedelta(nanoseconds=7)
    with pytest.raises(ValueError, match=r"'updated_at'.*floor\('us'\)"):
        mf.write_snapshot(frame.assign(updated_at=finer), tmp_path / "root")
    whole = frame["updated_at"].astype("datetime64[ns, UTC]")  # ns unit, whole microseconds
    mf.write_snapshot(frame.assign(updated_at=whole), tmp_path / "root")
    assert len(mf.read_snapshots(tmp_path / "root")) == 1


# --------------------------------------------------------------------------- 4. id case


def test_ids_are_lower_case_in_frames_stores_and_lookups(tmp_path):
    upper = [_session(A, str(uuid.uuid4()).upper()) for _ in range(3)]
    df = mf.sessions_frame(upper)
    assert set(df["conversation_uuid"]) == {A.lower()}
    assert list(df["uuid"]) == [s["uuid"].lower() for s in upper]
    # a frame built by hand with ids pasted from a spreadsheet
    by_hand = df.assign(conversation_uuid=A, uuid=df["uuid"].str.upper())
    mf.write_snapshot(by_hand, tmp_path / "root")
    for spelled in (A, A.lower(), uuid.UUID(A), [A]):
        back = mf.read_snapshots(tmp_path / "root", conversations=spelled)
        assert len(back) == 3, spelled
    assert set(back["uuid"]) == set(df["uuid"])


def test_ids_the_server_sends_in_upper_case_sync_incrementally(server_factory, tmp_path):
    sessions = [_session(A, str(uuid.uuid4()).upper()) for _ in range(3)]
    server = server_factory(lambda path, headers: (200, {}, _page(sessions)))
    options: dict[str, Any] = {"base_url": server.base_url, "token": "sim-token", "cache": None}
    first = mf.sync_snapshots(tmp_path / "root", [A], **options)
    assert set(first["conversation_uuid"]) == {A.lower()}
    second = mf.sync_snapshots(tmp_path / "root", [A.lower()], **options)
    record = second.attrs["mihu_frames"]
    assert record["conversations_incremental"] == 1  # what it holds was found
    assert record["rows_new"] == 0 and record["snapshot"] is None
    assert len(second) == 3


# --------------------------------------------------------------------------- 5. shared session


def test_a_session_under_two_conversations_is_one_row_that_does_not_churn(server_factory, tmp_path):
    """Alternating syncs of two conversations that both list one session write nothing after
    the first (each wrote a snapshot, flipping the row's conversation)."""
    served = {A.lower(): [_session(A, SHARED)], B: [_session(B, SHARED)]}

    def answer(path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        conversation = path.split("/")[4].lower()
        return 200, {}, _page(served[conversation])

    server = server_factory(answer)
    options: dict[str, Any] = {"base_url": server.base_url, "token": "sim-token", "cache": None}
    root = tmp_path / "root"
    written = []
    for conversation in (A, B, A, B, A):
        df = mf.sync_snapshots(root, [conversation], **options)
        written.append(df.attrs["mihu_frames"]["snapshot"])
    assert written[0] is not None and written[1:] == [None] * 4
    latest = mf.read_snapshots(root)
    assert list(latest["uuid"]) == [SHARED]
    assert list(latest["conversation_uuid"]) == [A.lower()]  # the one it was first stored under
    # A change served under the other conversation is stored, still under the first one.
    served[B] = [{**_session(B, SHARED, "changed"), "updated_at": "2026-11-02T10:00:00Z"}]
    df = mf.sync_snapshots(root, [B], **options)
    assert df.attrs["mihu_frames"]["rows_changed"] == 1
    latest = mf.read_snapshots(root)
    assert list(latest["summary"]) == ["changed"]
    assert list(latest["conversation_uuid"]) == [A.lower()]
    history = mf.read_snapshots(root, latest=False)
    assert set(history["conversation_uuid"]) == {A.lower()}


def test_frames_written_in_turn_under_two_conversations_write_nothing_new(tmp_path):
    root = tmp_path / "root"
    under_a = mf.sessions_frame([_session(A, SHARED)])
    under_b = mf.sessions_frame([_session(B, SHARED)])
    under_b["fetched_at"] = under_a["fetched_at"] + pd.Timedelta(seconds=5)
    assert mf.write_snapshot(under_a, root) is not None
    assert mf.write_snapshot(under_b, root) is None
    assert mf.write_snapshot(under_a, root) is None


# --------------------------------------------------------------------------- issue 21's store items


def test_write_refuses_a_column_it_would_drop(frame, tmp_path):
    with pytest.raises(ValueError, match="my_flag"):
        mf.write_snapshot(frame.assign(my_flag=True), tmp_path / "root")
    assert not (tmp_path / "root").exists()
    mf.write_snapshot(frame, tmp_path / "root")
    history = mf.read_snapshots(tmp_path / "root", latest=False)  # with snapshot_id: ours
    assert mf.write_snapshot(history, tmp_path / "root") is None


@pytest.mark.parametrize(
    "bad",
    ["hello", A[:-2], "{" + A + "}", [A, "hello"], 42],
)
def test_read_checks_the_conversations_it_is_given(frame, tmp_path, bad):
    mf.write_snapshot(frame, tmp_path / "root")
    with pytest.raises(ValueError, match="UUID"):
        mf.read_snapshots(tmp_path / "root", conversations=bad)


def test_read_names_a_since_that_is_not_a_date(frame, tmp_path):
    mf.write_snapshot(frame, tmp_path / "root")
    with pytest.raises(ValueError, match=r"since must be an instant.*last week"):
        mf.read_snapshots(tmp_path / "root", since="last week")
    assert len(mf.read_snapshots(tmp_path / "root", conversations=uuid.UUID(B))) == 1


def test_a_root_written_from_all_remembers_all(tmp_path):
    with Simulator(seed=5, sizes=(3, 0, 7)) as sim:
        options: dict[str, Any] = {"base_url": sim.base_url, "token": sim.token}
        df = mf.load_sessions("all", cache=tmp_path / "cache.sqlite", **options)
        mf.write_snapshot(df, tmp_path / "root")
        synced = mf.sync_snapshots(tmp_path / "root", cache=None, **options)  # no conversations
        record = synced.attrs["mihu_frames"]
    assert record["conversations_listed"] == 3
    assert len(synced) == 10


def test_a_sync_given_a_frame_of_conversations_skips_the_empty_ones(tmp_path):
    with Simulator(seed=5, sizes=(3, 0, 7)) as sim:
        options: dict[str, Any] = {"base_url": sim.base_url, "token": sim.token, "cache": None}
        convs = mf.list_conversations(**options)
        empty = convs.loc[convs["sessions_count"] == 0, "uuid"].tolist()
        assert len(empty) == 1
        for _ in range(2):
            sim.reset_requests()
            synced = mf.sync_snapshots(tmp_path / "root", convs, **options)
            asked = {r.conversation for r in sim.requests}
            assert empty[0] not in asked
            assert synced.attrs["mihu_frames"]["conversations_empty"] == 1
        assert len(synced) == 10


def test_canonical_ids_leave_other_text_alone(tmp_path: Path):
    """Only the two id columns are canonicalised: names and summaries keep their case."""
    session = {**_session(A, SHARED, "Hello THERE"), "contact": {"name": "ÖZGE", "uuid": None}}
    df = mf.sessions_frame([session])
    assert df["summary"].iloc[0] == "Hello THERE" and df["contact_name"].iloc[0] == "ÖZGE"
