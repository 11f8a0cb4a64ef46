"""Compaction: both tables in fewer files, every distinct version kept, identical re-fetches
collapsed, old versions dropped only when asked (and reported, and vacuumed), the latest state
and time travel untouched, readers seeing the state before or after, syncs carrying on."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import assert_matches_truth
from deltalake import DeltaTable, write_deltalake

import mihu_frames as mf
from mihu_frames.simulator import Simulator
from mihu_frames.store import HISTORY_PARTITION, _from_delta, _to_delta, new_snapshot_id
from mihu_frames.sync import sync_snapshots

SIZES = (3, 120, 300)
CONTENT = [c for c in mf.SESSIONS_SCHEMA.names if c != "fetched_at"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=31, sizes=SIZES, retry_after=0) as server:
        yield server


@pytest.fixture
def history(sim, make_client, tmp_path) -> Path:
    """A root with three syncs in one month, an older fetch written late (the month before) and
    a month with a single file."""
    root = tmp_path / "snapshots"
    client = make_client(sim)
    convs = sim.conversation_uuids
    sync_snapshots(root, convs, client=client, progress=False, status="all")
    sim.touch_sessions(convs[2], 6)
    sim.add_sessions(convs[1], 2)
    sync_snapshots(root, convs, client=client, progress=False)
    sim.touch_sessions(convs[2], 4)
    sim.touch_sessions(convs[0], 1)
    sync_snapshots(root, convs, client=client, progress=False)
    older = mf.read_snapshots(root, conversations=convs[1]).head(20)
    older["summary"] = "an older fetch"
    older["fetched_at"] = older["fetched_at"] - pd.Timedelta(days=2)
    mf.write_snapshot(older, root)  # a version that lost to newer fetches: history only
    lone = older.tail(5).copy()
    lone["summary"] = "older still"
    lone["fetched_at"] = lone["fetched_at"] - pd.Timedelta(days=40)  # a month of its own
    mf.write_snapshot(lone, root)
    return root


def _folders(root: Path) -> dict[str, list[str]]:
    """The data files of ``versions/``, by partition (``fetched_month``)."""
    out: dict[str, list[str]] = {}
    for path in DeltaTable(root / "versions").file_uris():
        out.setdefault(Path(path).parent.name, []).append(path)
    return out


def _versions(df: pd.DataFrame) -> pd.DataFrame:
    """History as a set of versions: sorted rows, every column (snapshot ids too)."""
    keys = ["uuid", "snapshot_id", "fetched_at"]
    return df.sort_values(keys, ignore_index=True)


def test_fewer_files_every_version_kept_and_time_travel_untouched(history):
    before = _versions(mf.read_snapshots(history, latest=False))
    latest = DeltaTable(history / "latest")
    states = {v: mf.read_snapshots(history, as_of=v) for v in range(latest.version() + 1)}
    folders = _folders(history)
    # the first sync superseded nothing: versions/ holds the two later syncs' and the late ones
    assert sorted(len(files) for files in folders.values()) == [1, 1, 2]
    (lone,) = next(files for files in folders.values() if len(files) == 1)
    bytes_before = sum(Path(p).stat().st_size for files in folders.values() for p in files)

    report = mf.compact_snapshots(history)

    after = _folders(history)
    assert set(after) == set(folders) and all(len(files) == 1 for files in after.values())
    assert lone in after[Path(lone).parent.name]  # a month of one file is left alone
    pd.testing.assert_frame_equal(_versions(mf.read_snapshots(history, latest=False)), before)
    for version, state in states.items():  # every earlier state still reads as it was
        pd.testing.assert_frame_equal(mf.read_snapshots(history, as_of=version), state)
    pd.testing.assert_frame_equal(mf.read_snapshots(history), states[max(states)])
    assert (report.files_before, report.files_after) == (4, 3)
    assert report.rows_before == report.rows_after == len(before)
    assert (report.versions_collapsed, report.versions_pruned, report.tags_filled) == (0, 0, 0)
    assert report.bytes_before == bytes_before
    assert report.bytes_after == sum(Path(p).stat().st_size for f in after.values() for p in f)
    assert report.sessions == len(mf.read_snapshots(history)) and not report.converted
    assert report.latest_files_after <= report.latest_files_before
    assert report.version == DeltaTable(history / "latest").version()
    operations = [c["operation"] for c in DeltaTable(history / "versions").history(1)]
    assert operations == ["OPTIMIZE"]
    assert "4 history files into 3" in report.summary()
    again = mf.compact_snapshots(history)  # nothing left to do
    assert again.files_before == again.files_after == 3
    assert _folders(history) == after


def test_identical_refetches_are_collapsed_into_the_first_fetch(sim, make_client, tmp_path):
    """An earlier release wrote whatever it was given: the same data twice is two snapshots."""
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[1:])
    first = mf.write_snapshot(df, root)
    changed = df.head(10).copy()
    changed["summary"] = "changed"
    changed["fetched_at"] = changed["fetched_at"] + pd.Timedelta(minutes=1)
    mf.write_snapshot(changed, root)
    # The same data again, 2 and 3 minutes later, as an earlier release would have written it
    # (a root of layout 1 keeps them, and its conversion keeps every version).
    first_id = mf.snapshot_metadata(first)["snapshot_id"]
    versions = DeltaTable(root / "versions")
    original = DeltaTable(root / "latest", version=0).to_pyarrow_dataset().to_table()
    original = _to_delta(_from_delta(original), HISTORY_PARTITION)
    for minutes in (2, 3):
        table = original
        ids = pa.array([new_snapshot_id()] * table.num_rows)
        table = table.set_column(table.schema.get_field_index("snapshot_id"), "snapshot_id", ids)
        fetched = pc.add(table.column("fetched_at"), pa.scalar(pd.Timedelta(minutes=minutes)))
        table = table.set_column(table.schema.get_field_index("fetched_at"), "fetched_at", fetched)
        write_deltalake(versions, table, mode="append")
    history = mf.read_snapshots(root, latest=False)
    assert len(history) == 3 * len(df) + 10

    report = mf.compact_snapshots(root)

    # Per session: A (first), B (changed, 10 of them), A again (a revert, kept), A (collapsed).
    assert report.versions_collapsed == len(df) + (len(df) - 10)
    assert report.rows_after == len(df) + 10 + 10
    kept = mf.read_snapshots(root, latest=False)
    assert (kept.groupby("uuid").size().value_counts().to_dict()) == {1: len(df) - 10, 3: 10}
    assert set(kept.loc[~kept["uuid"].isin(changed["uuid"]), "snapshot_id"]) == {first_id}
    reverted = kept[kept["uuid"].isin(changed["uuid"])].sort_values(["uuid", "fetched_at"])
    assert list(reverted.groupby("uuid")["summary"].nth(1).unique()) == ["changed"]


def test_prune_before_drops_only_versions_superseded_before_it(sim, make_client, tmp_path):
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[2])
    start = pd.Timestamp("2026-05-01", tz="UTC")
    for day, rows in ((0, slice(None)), (5, slice(0, 50)), (10, slice(0, 20))):
        version = df.iloc[rows].copy()
        version["summary"] = f"day {day}"
        version["updated_at"] = start + pd.Timedelta(days=day)
        version["fetched_at"] = start + pd.Timedelta(days=day, hours=1)
        mf.write_snapshot(version, root)
    latest_before = mf.read_snapshots(root)
    unchanged = mf.compact_snapshots(root, prune_before="2026-04-01")
    assert unchanged.versions_pruned == 0 and unchanged.rows_after == len(df) + 50 + 20

    report = mf.compact_snapshots(root, prune_before=pd.Timestamp("2026-05-08").date())

    # day-0 versions superseded on day 5 go (50 sessions); those superseded on day 10 stay
    assert report.versions_pruned == 50 and report.sessions_pruned == 50
    assert report.prune_before == pd.Timestamp("2026-05-08", tz="UTC").to_pydatetime()
    assert report.rows_after == len(df) + 50 + 20 - 50
    history = mf.read_snapshots(root, latest=False)
    per_session = history.groupby("uuid")["summary"].apply(list)
    assert all(per_session[u] == ["day 5", "day 10"] for u in df["uuid"][:20])
    assert all(per_session[u] == ["day 5"] for u in df["uuid"][20:50])
    assert all(per_session[u] == ["day 0"] for u in df["uuid"][50:])
    pd.testing.assert_frame_equal(mf.read_snapshots(root), latest_before)  # latest always kept
    everything = mf.compact_snapshots(root, prune_before="2030-01-01")
    assert everything.versions_pruned == 20 and everything.rows_after == len(df)
    assert set(mf.read_snapshots(root, latest=False)["uuid"]) == set(df["uuid"])
    # the pruned versions are gone from the disk too, not only from the table
    assert everything.files_vacuumed
    on_disk = sum(pq.read_metadata(p).num_rows for p in (root / "versions").rglob("*.parquet"))
    assert on_disk == 0  # every version left is a current one, in latest/
    pd.testing.assert_frame_equal(mf.read_snapshots(root), latest_before)
    with pytest.raises(ValueError, match="prune_before"):
        mf.compact_snapshots(root, prune_before="soon")


def test_a_root_with_nothing_written_yet_compacts_to_nothing(tmp_path):
    root = tmp_path / "root"
    mf.write_snapshot(mf.empty_frame(), root)
    report = mf.compact_snapshots(root)
    assert (report.files_before, report.files_after, report.rows_after, report.sessions) == (
        0,
        0,
        0,
        0,
    )
    assert report.files_vacuumed == ()


def test_compacted_files_are_owner_only(history):
    old = os.umask(0o022)
    try:
        mf.compact_snapshots(history)
    finally:
        os.umask(old)
    for path in history.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def test_readers_see_the_state_before_or_after_during_a_compaction(history):
    history_before = _versions(mf.read_snapshots(history, latest=False))
    latest_before = mf.read_snapshots(history)
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            pd.testing.assert_frame_equal(mf.read_snapshots(history), latest_before)
            versions = _versions(mf.read_snapshots(history, latest=False))
            pd.testing.assert_frame_equal(versions, history_before)
            seen.append(len(versions))

    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            poll()
        except BaseException as error:  # reported below
            failures.append(error)

    reader = threading.Thread(target=guarded)
    reader.start()
    try:
        mf.compact_snapshots(history)
    finally:
        stop.set()
        reader.join(timeout=120)
    assert not failures, failures[0]
    assert seen


def test_syncs_carry_on_after_compaction(sim, make_client, history):
    mf.compact_snapshots(history)
    client = make_client(sim)
    sim.reset_requests()
    same = sync_snapshots(history, sim.conversation_uuids, client=client, progress=False)
    assert sim.request_count == 3 * len(SIZES)  # still incremental, under the recorded filters
    assert same.attrs["mihu_frames"]["snapshot"] is None
    touched = sim.touch_sessions(sim.conversation_uuids[2], 3)
    df = sync_snapshots(history, sim.conversation_uuids, client=client, progress=False)
    assert df.attrs["mihu_frames"]["rows_changed"] == len(touched)
    truth = sorted(sim.ground_truth(), key=lambda s: s["uuid"])
    assert_matches_truth(df.sort_values("uuid", ignore_index=True), truth)
