"""Compaction: one latest-state file per partition, the same latest state before, during and
after, owner-only files, and syncs that carry on as before."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import assert_matches_truth

import mihu_frames as mf
from mihu_frames import compaction
from mihu_frames.compaction import compact_snapshots, latest_rows
from mihu_frames.simulator import Simulator
from mihu_frames.snapshots import new_snapshot_id, snapshot_files
from mihu_frames.sync import sync_snapshots

SIZES = (3, 120, 300)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=31, sizes=SIZES, retry_after=0) as server:
        yield server


@pytest.fixture
def history(sim, make_client, tmp_path) -> Path:
    """A root with three syncs in one partition, two older partitions (one of them written in
    an older schema without the ``extra`` column) and a partition of a single file."""
    root = tmp_path / "snapshots"
    client = make_client(sim)
    convs = sim.conversation_uuids
    sync_snapshots(root, convs, client=client, progress=False)
    sim.touch_sessions(convs[2], 6)
    sim.add_sessions(convs[1], 2)
    sync_snapshots(root, convs, client=client, progress=False)
    sim.touch_sessions(convs[2], 4)
    sim.touch_sessions(convs[0], 1)
    sync_snapshots(root, convs, client=client, progress=False)

    old = mf.read_snapshots(root, conversations=convs[1]).head(20)
    old["fetched_at"] = old["fetched_at"] - pd.Timedelta(days=2)
    mf.write_snapshot(old, root)  # loses to the newer fetches of the same rows
    edited = old.head(8).copy()
    edited["summary"] = "edited"
    edited["fetched_at"] = edited["fetched_at"] + pd.Timedelta(seconds=1)
    path = mf.write_snapshot(edited, root)
    table = pq.read_table(path).drop_columns(["extra"])  # as an older schema wrote it
    path.unlink()
    pq.write_table(table, path.with_name(f"{new_snapshot_id()}.parquet"))
    lone = old.tail(5).copy()
    lone["fetched_at"] = lone["fetched_at"] - pd.Timedelta(days=3)
    mf.write_snapshot(lone, root)
    return root


def _partitions(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for path in snapshot_files(root):
        out.setdefault(path.parent.name, []).append(path)
    return out


def _latest(root: Path) -> pd.DataFrame:
    return mf.read_snapshots(root).sort_values("uuid", ignore_index=True)


def test_one_file_per_partition_and_the_same_latest_state(history):
    before = _latest(history)
    history_before = mf.read_snapshots(history, latest=False)
    partitions = _partitions(history)
    assert sorted(len(files) for files in partitions.values()) == [1, 2, 3]
    lone = next(files[0] for files in partitions.values() if len(files) == 1)
    lone_bytes = lone.read_bytes()

    written = compact_snapshots(history)

    assert len(written) == 2
    after_partitions = _partitions(history)
    assert set(after_partitions) == set(partitions)
    assert all(len(files) == 1 for files in after_partitions.values())
    assert lone.read_bytes() == lone_bytes  # a partition of one file is left alone
    pd.testing.assert_frame_equal(_latest(history), before)
    history_after = mf.read_snapshots(history, latest=False)
    assert len(history_after) < len(history_before)
    # Each partition now holds one row per session: its newest there.
    for files in after_partitions.values():
        uuids = pq.read_table(files[0], columns=["uuid"]).column("uuid").to_pylist()
        assert len(uuids) == len(set(uuids))
    assert compact_snapshots(history) == []  # nothing left to do


def test_rows_keep_their_snapshot_ids_and_the_file_records_its_sources(history):
    partitions = _partitions(history)
    ids_before = set(mf.read_snapshots(history, latest=False)["snapshot_id"])
    written = compact_snapshots(history)
    ids_after = set(mf.read_snapshots(history, latest=False)["snapshot_id"])
    assert ids_after <= ids_before and len(ids_after) > len(written)
    for path in written:
        meta = mf.snapshot_metadata(path)
        sources = partitions[path.parent.name]
        assert meta["compacted_from"] == [p.stem for p in sources]
        assert meta["snapshot_id"] == path.stem and path.stem not in ids_before
        assert meta["rows"] == pq.read_metadata(path).num_rows < meta["rows_before"]
        assert meta["schema_version"] == 1 and meta["library_version"] == mf.__version__
        assert all(not p.exists() for p in sources)


def test_compacted_files_are_owner_only(history):
    old = os.umask(0o022)
    try:
        written = compact_snapshots(history)
    finally:
        os.umask(old)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in history.rglob(".*") if p.is_file()]  # no temporary file left


def test_readers_get_the_same_answer_while_old_and_new_files_coexist(history, monkeypatch):
    before = _latest(history)
    seen: list[int] = []
    remove = compaction._remove

    def read_then_remove(files: list[Path]) -> None:
        # The compacted file is in place and the old ones are not yet removed.
        assert all(p.exists() for p in files)
        pd.testing.assert_frame_equal(_latest(history), before)
        seen.append(len(snapshot_files(history)))
        remove(files)
        pd.testing.assert_frame_equal(_latest(history), before)

    monkeypatch.setattr(compaction, "_remove", read_then_remove)
    compact_snapshots(history)
    assert seen == [7, 6]  # 6 files + the new one, then 3 + 1 + 1 + the new one


def test_syncs_carry_on_after_compaction(sim, make_client, history):
    compact_snapshots(history)
    client = make_client(sim)
    sim.reset_requests()
    same = sync_snapshots(history, sim.conversation_uuids, client=client, progress=False)
    assert sim.request_count == len(SIZES)  # still incremental
    assert same.attrs["mihu_frames"]["snapshot"] is None  # the edits lost to newer fetches
    touched = sim.touch_sessions(sim.conversation_uuids[2], 3)
    df = sync_snapshots(history, sim.conversation_uuids, client=client, progress=False)
    assert df.attrs["mihu_frames"]["rows_changed"] == len(touched)
    truth = sorted(sim.ground_truth(), key=lambda s: s["uuid"])
    assert_matches_truth(df.sort_values("uuid", ignore_index=True), truth)


def test_ties_are_all_kept(sim, make_client, tmp_path):
    root = tmp_path / "ties"
    df = make_client(sim).sessions(sim.conversation_uuids[1], progress=False)
    mf.write_snapshot(df, root)
    twin = df.head(4).copy()
    twin["summary"] = "same time, other text"
    mf.write_snapshot(twin, root)  # same updated_at and fetched_at: a tie
    before = _latest(root)
    compact_snapshots(root)
    pd.testing.assert_frame_equal(_latest(root), before)
    (path,) = snapshot_files(root)
    assert pq.read_metadata(path).num_rows == len(df) + 4
    assert latest_rows(pq.read_table(path)).num_rows == len(df) + 4


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError):
        compact_snapshots(tmp_path / "nowhere")
    assert compact_snapshots(tmp_path) == []
