"""The root itself: roots of the earlier layout read and converted with nothing lost, the
manifest, writes a killed process left half done, and the writers' lock (real processes)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_matches_truth, tagged

import mihu_frames as mf
from mihu_frames import root as root_module
from mihu_frames.root import Recorded, open_root
from mihu_frames.schema import COLUMNS, from_pandas

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / "tests" / "data" / "old_root"


@pytest.fixture
def old_root(tmp_path: Path) -> Path:
    """A copy of the root the previous release wrote (see tests/data/old_root/)."""
    root = tmp_path / "old"
    shutil.copytree(OLD / "snapshots", root)
    return root


def _plain(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain Python values (lists for task_uuids, None for every missing value)."""
    rows = []
    for record in df.astype(object).to_dict("records"):
        row = {}
        for key, value in record.items():
            if isinstance(value, (list, tuple, np.ndarray)):
                row[key] = list(value)
            elif (
                value is None
                or (not isinstance(value, str) and pd.isna(value))
                or (key in ("status", "type") and value == "untagged")
            ):
                row[key] = None
            else:
                row[key] = value.isoformat() if isinstance(value, pd.Timestamp) else str(value)
        rows.append(row)
    return rows


def _expected() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    # plain pyarrow, no pandas metadata: independent of how mihu_frames builds frames
    latest = pq.read_table(OLD / "expected_latest.parquet").to_pandas(ignore_metadata=True)
    history = pq.read_table(OLD / "expected_history.parquet").to_pandas(ignore_metadata=True)
    truth = json.loads((OLD / "truth.json").read_text())
    return latest, history, truth


def _carried_tags(history: pd.DataFrame) -> dict[str, str | None]:
    """Each session's last status tag in fetch order: the tag its latest state keeps."""
    ordered = history.sort_values(["fetched_at", "updated_at", "snapshot_id"])
    tags: dict[str, str | None] = {}
    for uuid, status in zip(ordered["uuid"], ordered["status"].astype(object), strict=True):
        if not pd.isna(status):
            tags[uuid] = status
        else:
            tags.setdefault(uuid, None)
    return tags


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.rglob("*.parquet")}


def test_an_old_root_is_read_as_it_is_without_being_changed(old_root):
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in old_root.rglob("*") if p.is_file()}
    latest_expected, history_expected, truth = _expected()
    store = open_root(old_root)
    assert store.state == "legacy"
    assert store.recorded == Recorded(status=("active", "completed", "timed_out"))

    latest = mf.read_snapshots(old_root)
    assert len(latest) == len(truth["sessions"]) == len(latest_expected)
    assert_matches_truth(
        latest.sort_values("uuid", ignore_index=True),
        sorted(truth["sessions"], key=lambda s: s["uuid"]),
    )
    tags = _carried_tags(history_expected)
    status = latest["status"].astype(object).where(tagged(latest["status"]), None)
    assert dict(zip(latest["uuid"], status, strict=True)) == tags
    assert latest_expected["status"].isna().sum() == 2 and tagged(latest["status"]).all()
    content = [c for c in COLUMNS if c != "status"]
    assert _plain(latest[content].sort_values("uuid", ignore_index=True)) == _plain(
        latest_expected[content].sort_values("uuid", ignore_index=True)
    )
    history = mf.read_snapshots(old_root, latest=False)
    keys = ["snapshot_id", "uuid"]
    assert _plain(history.sort_values(keys, ignore_index=True)) == _plain(
        history_expected.sort_values(keys, ignore_index=True)
    )
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in old_root.rglob("*") if p.is_file()}
    assert after == before  # reading converts nothing


@pytest.mark.parametrize("first_write", ["write_snapshot", "compact_snapshots"])
def test_an_old_root_is_converted_on_its_first_write_with_nothing_lost(old_root, first_write):
    _, history_expected, truth = _expected()
    old_files = _files(old_root)
    leftover = next(old_root.rglob("*.tmp"))
    change = mf.read_snapshots(old_root).head(4)
    change["summary"] = "after the conversion"
    change["updated_at"] = change["updated_at"] + pd.Timedelta(seconds=5)
    change["fetched_at"] = change["fetched_at"] + pd.Timedelta(seconds=5)

    if first_write == "write_snapshot":
        path = mf.write_snapshot(change, old_root)
        report = None
    else:
        report = mf.compact_snapshots(old_root)
        assert report.converted
        path = mf.write_snapshot(change, old_root)

    assert open_root(old_root).state == "root"
    manifest = json.loads((old_root / "mihu_frames_root.json").read_text())
    assert manifest["layout_version"] == 2
    assert manifest["recorded"]["status"] == ["active", "completed", "timed_out"]
    assert not leftover.exists() and not list(old_root.rglob("*.tmp"))
    assert not list((old_root / "sessions").glob("fetched_date=*"))
    if report is None:  # every file of the earlier layout is history now, byte for byte
        moved = {p.name: p.read_bytes() for p in (old_root / "history").rglob("*.parquet")}
        assert {k: v for k, v in moved.items() if k in old_files} == old_files
    history = mf.read_snapshots(old_root, latest=False)
    versions = history[history["snapshot_id"] != path.stem]
    if report is None:
        keys = ["snapshot_id", "uuid"]
        assert _plain(versions.sort_values(keys, ignore_index=True)) == _plain(
            history_expected.sort_values(keys, ignore_index=True)
        )
    else:  # compacted: every distinct version kept, identical re-fetches collapsed
        assert report.rows_before == len(history_expected)
        assert report.rows_after == len(versions) == report.rows_before - report.versions_collapsed
        assert report.versions_collapsed == _identical_refetches(history_expected)
        assert report.versions_pruned == 0 and report.tags_filled > 0
        carried = _with_carried_tags(history_expected)
        assert (~tagged(versions["status"])).sum() == carried["status"].isna().sum() > 0
        distinct = _plain(versions.drop(columns=["snapshot_id", "fetched_at"]))
        expected = _plain(
            _with_carried_tags(history_expected).drop(columns=["snapshot_id", "fetched_at"])
        )
        assert sorted(map(json.dumps, distinct)) == sorted(set(map(json.dumps, expected)))
    assert set(history.loc[history["snapshot_id"] == path.stem, "uuid"]) == set(change["uuid"])

    latest = mf.read_snapshots(old_root).set_index("uuid")
    assert len(latest) == len(truth["sessions"])
    assert (latest.loc[change["uuid"], "summary"] == "after the conversion").all()
    rest = latest.drop(index=change["uuid"]).reset_index()
    truth_rest = [s for s in truth["sessions"] if s["uuid"] not in set(change["uuid"])]
    assert_matches_truth(
        rest.sort_values("uuid", ignore_index=True), sorted(truth_rest, key=lambda s: s["uuid"])
    )
    assert tagged(latest["status"]).all()
    pattern = str(old_root / "sessions" / "**" / "*.parquet")
    counts = duckdb.connect().execute(
        f"select count(*), count(distinct uuid) from read_parquet('{pattern}')"
    )
    assert counts.fetchone() == (len(truth["sessions"]),) * 2


def _with_carried_tags(history: pd.DataFrame) -> pd.DataFrame:
    ordered = history.sort_values(["uuid", "fetched_at", "updated_at", "snapshot_id"]).copy()
    ordered["status"] = ordered.groupby("uuid")["status"].transform(lambda s: s.ffill())
    return ordered


def _identical_refetches(history: pd.DataFrame) -> int:
    ordered = _with_carried_tags(history)
    content = [c for c in COLUMNS if c != "fetched_at"]
    rows = [json.dumps(r, sort_keys=True) for r in _plain(ordered[content])]
    uuids = list(ordered["uuid"])
    return sum(
        1 for i in range(1, len(rows)) if uuids[i] == uuids[i - 1] and rows[i] == rows[i - 1]
    )


def test_readers_never_count_twice_while_an_old_root_is_converted(old_root, monkeypatch):
    pattern = str(old_root / "sessions" / "**" / "*.parquet")
    sessions = len(json.loads((OLD / "truth.json").read_text())["sessions"])
    seen: list[str] = []
    real_rename = os.rename

    def look() -> None:
        con = duckdb.connect()
        try:
            count, distinct = con.execute(
                f"select count(*), count(distinct uuid) from read_parquet('{pattern}')"
            ).fetchone()
        except duckdb.IOException:
            seen.append("no files")
            return
        if (old_root / "mihu_frames_root.json").exists() or (old_root / "history").exists():
            assert count == distinct == sessions, (count, distinct)  # converted or converting
            seen.append("latest state")
        else:
            seen.append("earlier layout")  # before the conversion: one row per snapshot

    def rename_and_look(src: Any, dst: Any) -> None:
        look()
        real_rename(src, dst)
        look()

    monkeypatch.setattr(root_module.os, "rename", rename_and_look)
    mf.write_snapshot(mf.read_snapshots(old_root).head(1), old_root)
    look()
    assert seen[0] == "earlier layout" and seen[-1] == "latest state"
    assert "no files" in seen  # briefly (documented), between the two renames


def test_a_sync_of_an_old_root_uses_and_enforces_the_filters_it_was_fetched_under(old_root):
    with pytest.raises(ValueError, match="status='all', type=None"):
        mf.sync_snapshots(
            old_root,
            json.loads((OLD / "truth.json").read_text())["sessions"][0]["conversation_uuid"],
            status="completed",
            base_url="http://127.0.0.1:9",  # never asked: the filters are refused first
            token="t",
        )
    assert open_root(old_root).state == "legacy"  # and nothing converted


# --------------------------------------------------------------------------- the manifest


def test_the_manifest_keeps_settings_it_does_not_know_and_refuses_newer_layouts(tmp_path):
    root = tmp_path / "root"
    frame = mf.sessions_frame(
        [{"uuid": "u1", "conversation_uuid": "c1", "updated_at": "2026-01-01T00:00:00Z"}],
        status="active",
        fetched_at="2026-01-02T00:00:00Z",
    )
    mf.write_snapshot(frame, root)
    manifest_path = root / "mihu_frames_root.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["recorded"] == {"status": ["active"], "type": None, "conversations": None}
    manifest["recorded"]["from_a_newer_release"] = {"kept": True}
    manifest["note"] = "kept too"
    manifest_path.write_text(json.dumps(manifest))
    store = open_root(root)
    assert store.recorded.extra == {"from_a_newer_release": {"kept": True}}
    new = Recorded.of("all", None)
    store.commit(from_pandas(frame.assign(summary="x")), recorded=new)
    rewritten = json.loads(manifest_path.read_text())
    assert rewritten["recorded"]["from_a_newer_release"] == {"kept": True}
    assert rewritten["recorded"]["status"] == ["active", "completed", "timed_out"]
    assert rewritten["note"] == "kept too"

    rewritten["layout_version"] = 3
    manifest_path.write_text(json.dumps(rewritten))
    with pytest.raises(ValueError, match="upgrade mihu_frames"):
        mf.read_snapshots(root)
    manifest_path.write_text("{ not json")
    with pytest.raises(mf.NotASnapshotRootError, match="cannot be read"):
        mf.read_snapshots(root)


def test_recorded_filters_compare_in_any_spelling(tmp_path):
    store = open_root(tmp_path / "new", create=True)
    assert store.recorded is None
    assert store.resolve_filters("all", None)[2] == Recorded(("active", "completed", "timed_out"))
    held = Recorded.of(["timed_out", "active"], "voice")
    assert held == Recorded(("active", "timed_out"), ("voice",))
    assert held.describe() == "status=['active', 'timed_out'], type=['voice']"
    assert Recorded.of("all", "all").describe() == "status='all', type='all'"
    with pytest.raises(ValueError, match="status"):
        Recorded.of("done")


# --------------------------------------------------------------------------- crashes and the lock


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import pandas as pd
    import mihu_frames as mf
    from mihu_frames import atomic

    root, stage = sys.argv[1], sys.argv[2]
    real_publish = atomic.StagedFile.publish

    def publish_then_die(self, final):
        if stage == "after history" and final.parent.parent.name == "sessions":
            os.kill(os.getpid(), signal.SIGKILL)  # the history file is in place, not the rest
        path = real_publish(self, final)
        if stage == "after one partition" and final.parent.parent.name == "sessions":
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    atomic.StagedFile.publish = publish_then_die
    df = mf.read_snapshots(root)
    df["summary"] = "written by a process killed half way"
    df["updated_at"] = df["updated_at"] + pd.Timedelta(seconds=1)
    df["fetched_at"] = df["fetched_at"] + pd.Timedelta(seconds=1)
    mf.write_snapshot(df, root)
    """
)


@pytest.mark.parametrize("stage", ["after history", "after one partition"])
@pytest.mark.parametrize("next_run", ["write_snapshot", "compact_snapshots"])
def test_a_write_killed_half_way_is_completed_by_the_next_run(
    sim, make_client, tmp_path, stage, next_run
):
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[5:7])
    mf.write_snapshot(df, root)
    partitions = len(list((root / "sessions").glob("*/*.parquet")))
    assert partitions > 2
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(root), stage],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert (root / ".pending_commit.json").exists()
    history = mf.read_snapshots(root, latest=False)
    assert (history["summary"] == "written by a process killed half way").sum() == len(df)
    latest = mf.read_snapshots(root)
    halfway = (latest["summary"] == "written by a process killed half way").sum()
    assert halfway < len(df) and latest["uuid"].is_unique and len(latest) == len(df)
    if stage == "after history":
        pd.testing.assert_frame_equal(latest, df)  # the latest state is the one before

    if next_run == "write_snapshot":
        assert mf.write_snapshot(df.head(0), root) is None
    else:
        mf.compact_snapshots(root)
    assert not (root / ".pending_commit.json").exists()
    latest = mf.read_snapshots(root)
    assert (latest["summary"] == "written by a process killed half way").all()
    assert list(latest["uuid"]) == list(df["uuid"]) and not list(root.rglob("*.tmp"))


def test_a_month_that_fails_to_merge_leaves_the_root_as_it_was(sim, make_client, tmp_path):
    # Months are merged in parallel: one failing must publish none of the others' files.
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[5:7])
    mf.write_snapshot(df, root)

    def files() -> dict[str, bytes]:
        return {
            str(p.relative_to(root)): p.read_bytes()
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        }

    months = sorted((root / "sessions").iterdir())
    assert len(months) > 2
    (months[len(months) // 2] / "part-0.parquet").write_bytes(b"not parquet")
    before = files()
    changed = df.copy()
    changed["summary"] = "changed in every month"
    with pytest.raises(pa.ArrowInvalid):
        mf.write_snapshot(changed, root)
    assert files() == before
    assert not list(root.rglob("*.tmp")) and not (root / ".pending_commit.json").exists()


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from mihu_frames.root import open_root

    root, release = sys.argv[1], Path(sys.argv[2])
    with open_root(root).locked():
        print("locked", flush=True)
        while not release.exists():
            time.sleep(0.01)
    """
)


def test_writers_of_one_root_wait_for_each_other(sim, make_client, tmp_path):
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[4])
    mf.write_snapshot(df, root)
    release = tmp_path / "release"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(root), str(release)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        change = df.head(5).assign(summary="after the wait")
        change["fetched_at"] = change["fetched_at"] + pd.Timedelta(seconds=1)
        with pytest.raises(TimeoutError, match=rf"pid {holder.pid}\).*{root}"):
            open_root(root, lock_timeout=0.3).commit(from_pandas(change))
        finished: list[float] = []
        writer = threading.Thread(
            target=lambda: (mf.write_snapshot(change, root), finished.append(time.monotonic()))
        )
        writer.start()
        time.sleep(0.5)
        assert not finished  # still waiting for the lock
        released = time.monotonic()
        release.touch()
        writer.join(timeout=60)
        assert finished and finished[0] >= released
    finally:
        release.touch()
        holder.wait(timeout=30)
    latest = mf.read_snapshots(root).set_index("uuid")
    assert (latest.loc[change["uuid"], "summary"] == "after the wait").all()
    assert pq.read_metadata(next((root / "history").rglob("*.parquet"))).num_rows in (len(df), 5)


def test_a_snapshot_an_earlier_release_wrote_into_a_converted_root_is_adopted(
    sim, make_client, tmp_path
):
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[3])
    mf.write_snapshot(df, root)
    # An earlier release (another notebook) writes one file per snapshot into sessions/:
    stray_rows = df.head(6).assign(summary="from an older release")
    stray_rows["fetched_at"] = stray_rows["fetched_at"] + pd.Timedelta(seconds=3)
    new = mf.sessions_frame(
        [{"uuid": "e0000000-0000-4000-8000-000000000001", "conversation_uuid": df.iloc[0, 0]}],
        fetched_at="2026-11-02T00:00:00Z",
    )
    table = from_pandas(pd.concat([stray_rows, new], ignore_index=True))
    sid = mf.snapshots.new_snapshot_id()
    table = table.append_column("snapshot_id", pa.array([sid] * table.num_rows))
    stray = root / "sessions" / "fetched_date=2026-11-01" / f"{sid}.parquet"
    stray.parent.mkdir()
    pq.write_table(table, stray)
    pd.testing.assert_frame_equal(mf.read_snapshots(root), df)  # ours ignores the stray file

    assert mf.write_snapshot(df.head(0), root) is None  # the next write adopts it
    assert not stray.exists() and (root / "history" / stray.parent.name / stray.name).exists()
    assert not (root / "sessions" / "fetched_date=2026-11-01").exists()
    latest = mf.read_snapshots(root)
    assert len(latest) == len(df) + 1 and latest["uuid"].iloc[-1] == new["uuid"].iloc[0]
    assert (
        latest.set_index("uuid").loc[stray_rows["uuid"], "summary"] == "from an older release"
    ).all()
    pattern = str(root / "sessions" / "**" / "*.parquet")
    counts = duckdb.connect().execute(
        f"select count(*), count(distinct uuid) from read_parquet('{pattern}')"
    )
    assert counts.fetchone() == (len(df) + 1,) * 2
