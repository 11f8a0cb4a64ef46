"""Where writes, reads and compaction meet on one root (found by a review of layout 4): every
version is kept, and every read is a committed state."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake

import mihu_frames as mf
from mihu_frames.schema import from_pandas
from mihu_frames.store import (
    HISTORY_PARTITION,
    _from_delta,
    _to_delta,
    new_snapshot_id,
    reading,
    writing,
)

REPO = Path(__file__).resolve().parents[1]
LAYOUT3 = REPO / "tests" / "data" / "layout3_root" / "snapshots"
IDS = [str(uuid.UUID(int=i + 1)) for i in range(10)]
CONVERSATION = "aaaaaaaa-0000-4000-8000-000000000001"


def frame(pairs: list[tuple[int, str]], fetched: str) -> pd.DataFrame:
    """Sessions ``IDS[i]`` with these summaries, updated and fetched at ``fetched``."""
    records = [
        {
            "uuid": IDS[i],
            "conversation_uuid": CONVERSATION,
            "created_at": "2026-03-01T10:00:00Z",
            "updated_at": fetched,
            "summary": summary,
        }
        for i, summary in pairs
    ]
    return mf.sessions_frame(records, fetched_at=fetched)


def versions(root: Path) -> list[tuple[int, str]]:
    df = mf.read_snapshots(root, latest=False)
    return sorted((IDS.index(u), s) for u, s in zip(df["uuid"], df["summary"], strict=True))


def test_writes_after_a_compaction_keep_every_version(tmp_path):
    root = tmp_path / "root"
    mf.write_snapshot(frame([(0, "a1"), (1, "b1")], "2026-03-02T00:00:00Z"), root)
    mf.write_snapshot(frame([(0, "a2")], "2026-03-03T00:00:00Z"), root)
    mf.write_snapshot(frame([(2, "c1")], "2026-03-04T00:00:00Z"), root)
    mf.compact_snapshots(root)
    mf.write_snapshot(frame([(1, "b2")], "2026-03-05T00:00:00Z"), root)
    assert versions(root) == [(0, "a1"), (0, "a2"), (1, "b1"), (1, "b2"), (2, "c1")]
    assert mf.compact_snapshots(root).rows_after == 5
    assert versions(root) == [(0, "a1"), (0, "a2"), (1, "b1"), (1, "b2"), (2, "c1")]


def test_a_history_read_while_a_write_commits_is_a_committed_state(tmp_path, monkeypatch):
    root = tmp_path / "root"
    mf.write_snapshot(frame([(0, "a1"), (1, "b1")], "2026-03-02T00:00:00Z"), root)
    real = reading.Reader.snapshot
    reads: list[str] = []

    def a_write_between_the_two_tables(self: Any, name: str, as_of: Any) -> Any:
        if len(reads) == 1:  # another process commits both tables now
            with monkeypatch.context() as inner:
                inner.setattr(reading.Reader, "snapshot", real)
                mf.write_snapshot(frame([(0, "a2")], "2026-03-03T00:00:00Z"), root)
        reads.append(name)
        return real(self, name, as_of)

    monkeypatch.setattr(reading.Reader, "snapshot", a_write_between_the_two_tables)
    during = mf.read_snapshots(root, latest=False)
    monkeypatch.setattr(reading.Reader, "snapshot", real)
    assert len(reads) == 2
    seen = sorted(during["summary"])
    assert seen in (["a1", "b1"], ["a1", "a2", "b1"])  # before or after, never a2 without a1
    assert versions(root) == [(0, "a1"), (0, "a2"), (1, "b1")]


def test_a_writer_beaten_by_a_compaction_keeps_the_version_it_replaces(tmp_path, monkeypatch):
    root = tmp_path / "root"
    mf.write_snapshot(frame([(0, "a1"), (1, "b1")], "2026-03-02T00:00:00Z"), root)
    mf.write_snapshot(frame([(2, "c1")], "2026-03-02T00:00:00Z"), root)  # a month of 2 files
    real = writing.Writer.commit_latest
    compactions: list[mf.CompactionReport] = []

    def a_compaction_first(self: Any, *args: Any) -> Any:
        if not compactions:  # between this write's versions/ commit and its latest/ commit
            compactions.append(mf.compact_snapshots(root))
        return real(self, *args)

    monkeypatch.setattr(writing.Writer, "commit_latest", a_compaction_first)
    mf.write_snapshot(frame([(0, "a2")], "2026-03-03T00:00:00Z"), root)
    assert compactions and compactions[0].latest_files_after < compactions[0].latest_files_before
    assert versions(root) == [(0, "a1"), (0, "a2"), (1, "b1"), (2, "c1")]


def test_a_layout3_write_left_half_done_is_completed_by_the_next_write(tmp_path):
    """Layout 3 appended a write to versions/ first; killed before its latest/ commit, the
    next write of that layout merged it. The first write of this release does."""
    root = tmp_path / "layout3"
    shutil.copytree(LAYOUT3, root)
    before = mf.read_snapshots(root)
    changed = before.head(3).assign(summary="written by a layout-3 writer, then killed")
    changed["fetched_at"] = changed["fetched_at"] + pd.Timedelta(hours=1)
    killed = new_snapshot_id()
    held = _from_delta(DeltaTable(root / "latest").to_pyarrow_dataset().to_table())
    table = from_pandas(changed)
    at = pc.index_in(table.column("uuid"), value_set=held.column("uuid"))
    table = table.append_column("snapshot_id", pa.array([killed] * len(changed), pa.string()))
    table = table.append_column("insert_order", held.column("insert_order").take(at))
    record = {"snapshot_id": killed, "layout_version": 3, "rows": 3}
    write_deltalake(
        DeltaTable(root / "versions"),
        _to_delta(table, HISTORY_PARTITION),
        mode="append",
        commit_properties=CommitProperties(custom_metadata={"mihu_frames": record}),
    )
    assert mf.read_snapshots(root)["summary"].head(3).tolist() == before["summary"].head(3).tolist()

    other = before.tail(1).assign(summary="the next write")
    other["fetched_at"] = other["fetched_at"] + pd.Timedelta(hours=2)
    mf.write_snapshot(other, root)

    latest = mf.read_snapshots(root).set_index("uuid")
    assert (latest.loc[changed["uuid"], "summary"] == changed["summary"].to_numpy()).all()
    assert latest.loc[other["uuid"].iloc[0], "summary"] == "the next write"
    history = mf.read_snapshots(root, latest=False)
    assert not history.duplicated(["uuid", "snapshot_id", "fetched_at"]).any()
    assert (history["snapshot_id"] == killed).sum() == 3  # once each, with their write's id
