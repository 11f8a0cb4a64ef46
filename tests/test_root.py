"""The root itself: roots of the two earlier layouts read and converted with nothing lost, the
recorded settings, writes a killed process left half done, and writers in conflict."""

from __future__ import annotations

import json
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
from conftest import assert_matches_truth, recorded, tagged
from deltalake import CommitProperties, DeltaTable, write_deltalake

import mihu_frames as mf
from mihu_frames.schema import COLUMNS, from_pandas
from mihu_frames.store import COMPLETE_BEFORE, LAYOUT_VERSION, Recorded, open_root, writing

REPO = Path(__file__).resolve().parents[1]
OLD = REPO / "tests" / "data" / "old_root"
LAYOUT2 = REPO / "tests" / "data" / "layout2_root"
LAYOUT3 = REPO / "tests" / "data" / "layout3_root"


@pytest.fixture
def old_root(tmp_path: Path) -> Path:
    """A copy of the root of layout 1 an earlier release wrote (see tests/data/old_root/)."""
    root = tmp_path / "old"
    shutil.copytree(OLD / "snapshots", root)
    return root


@pytest.fixture
def layout2_root(tmp_path: Path) -> Path:
    """A copy of a root of layout 2, as b1dae31 wrote it (see tests/data/layout2_root/)."""
    root = tmp_path / "layout2"
    shutil.copytree(LAYOUT2 / "snapshots", root)
    return root


@pytest.fixture
def layout3_root(tmp_path: Path) -> Path:
    """A copy of a root of layout 3, as 306fc84 wrote it (see tests/data/layout3_root/):
    ``versions/`` holds every version, the current ones too."""
    root = tmp_path / "layout3"
    shutil.copytree(LAYOUT3 / "snapshots", root)
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

    assert open_root(old_root).state == "delta"
    assert recorded(old_root)["status"] == ["active", "completed", "timed_out"]
    assert old_files and not leftover.exists() and not list(old_root.rglob("*.tmp"))
    assert sorted(p.name for p in old_root.iterdir()) == ["latest", "versions"]
    written = mf.snapshot_metadata(path)["snapshot_id"]
    history = mf.read_snapshots(old_root, latest=False)
    versions = history[history["snapshot_id"] != written]
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
    assert set(history.loc[history["snapshot_id"] == written, "uuid"]) == set(change["uuid"])

    latest = mf.read_snapshots(old_root).set_index("uuid")
    assert len(latest) == len(truth["sessions"])
    assert (latest.loc[change["uuid"], "summary"] == "after the conversion").all()
    rest = latest.drop(index=change["uuid"]).reset_index()
    truth_rest = [s for s in truth["sessions"] if s["uuid"] not in set(change["uuid"])]
    assert_matches_truth(
        rest.sort_values("uuid", ignore_index=True), sorted(truth_rest, key=lambda s: s["uuid"])
    )
    assert tagged(latest["status"]).all()
    con = duckdb.connect()
    con.register("latest", DeltaTable(old_root / "latest").to_pyarrow_dataset())
    counts = con.execute("select count(*), count(distinct uuid) from latest")
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


def _layout2_expected() -> tuple[pd.DataFrame, pd.DataFrame]:
    def read(name: str) -> pd.DataFrame:
        table = pq.read_table(LAYOUT2 / f"{name}.parquet")
        return table.to_pandas(ignore_metadata=True)

    return read("expected_latest"), read("expected_history")


def _same_frames(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Equal row for row, in order, value for value (tags as plain values)."""
    assert list(actual.columns) == list(expected.columns)
    assert _plain(actual) == _plain(expected)


def test_a_layout2_root_is_read_as_it_is_without_being_changed(layout2_root):
    before = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in layout2_root.rglob("*") if p.is_file()
    }
    latest_expected, history_expected = _layout2_expected()
    store = open_root(layout2_root)
    assert store.state == "legacy"
    assert store.recorded == Recorded(status=("active", "completed", "timed_out"))
    latest = mf.read_snapshots(layout2_root)
    _same_frames(latest, latest_expected)
    assert list(latest.dtypes) == list(mf.empty_frame().dtypes)
    _same_frames(mf.read_snapshots(layout2_root, latest=False), history_expected)
    after = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for p in layout2_root.rglob("*") if p.is_file()
    }
    assert after == before  # reading converts nothing


@pytest.mark.parametrize("first_write", ["write_snapshot", "compact_snapshots"])
def test_a_layout2_root_is_converted_on_its_first_write_with_nothing_lost(
    layout2_root, first_write
):
    latest_expected, history_expected = _layout2_expected()
    if first_write == "write_snapshot":
        assert mf.write_snapshot(mf.read_snapshots(layout2_root), layout2_root) is None
    else:
        report = mf.compact_snapshots(layout2_root)
        assert report.converted and report.rows_before == len(history_expected)
        assert report.versions_collapsed == report.versions_pruned == 0
    assert open_root(layout2_root).state == "delta"
    assert sorted(p.name for p in layout2_root.iterdir()) == ["latest", "versions"]
    assert recorded(layout2_root)["status"] == ["active", "completed", "timed_out"]
    # every version and the latest state, in their order, dtype for dtype: nothing lost
    latest = mf.read_snapshots(layout2_root)
    _same_frames(latest, latest_expected)
    pd.testing.assert_frame_equal(latest, mf.read_snapshots(layout2_root, as_of=0))
    history = mf.read_snapshots(layout2_root, latest=False)
    _same_frames(history, history_expected)
    # the next write lands on the converted root
    change = latest.head(3).copy()
    change["summary"] = "after the conversion"
    change["fetched_at"] = change["fetched_at"] + pd.Timedelta(seconds=5)
    mf.write_snapshot(change, layout2_root)
    after = mf.read_snapshots(layout2_root)
    assert list(after["uuid"]) == list(latest["uuid"])
    assert (after["summary"].iloc[:3] == "after the conversion").all()
    assert len(mf.read_snapshots(layout2_root, latest=False)) == len(history_expected) + 3


def test_readers_see_the_old_or_the_new_layout_whole_while_a_root_is_converted(layout2_root):
    latest_expected, _ = _layout2_expected()
    expected = sorted(latest_expected["uuid"])
    seen: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                df = mf.read_snapshots(layout2_root, columns=["uuid"])
            except (FileNotFoundError, OSError):
                continue  # a file of the old layout removed between listing and reading
            assert sorted(df["uuid"]) == expected
            seen.append(len(df))

    reader = threading.Thread(target=poll)
    reader.start()
    try:
        mf.write_snapshot(latest_expected.head(0), layout2_root)
        time.sleep(0.2)
    finally:
        stop.set()
        reader.join(timeout=60)
    assert seen and open_root(layout2_root).state == "delta"


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


def _rows_on_disk(root: Path, name: str) -> int:
    return DeltaTable(root / name).to_pyarrow_dataset().count_rows()


def _changed(df: pd.DataFrame, summary: str, seconds: int) -> pd.DataFrame:
    changed = df.assign(summary=summary)
    changed["fetched_at"] = changed["fetched_at"] + pd.Timedelta(seconds=seconds)
    return changed


def test_a_layout3_root_reads_and_writes_each_version_once(layout3_root):
    """The release before kept every version in versions/, the current ones too: read, each is
    one version; written, the versions it holds are not copied there again; compacted, none is
    lost; the versions this release writes are copied when they are replaced."""
    root = layout3_root
    latest_expected = pq.read_table(LAYOUT3 / "expected_latest.parquet").to_pandas()
    history_expected = pq.read_table(LAYOUT3 / "expected_history.parquet").to_pandas()
    assert _rows_on_disk(root, "versions") == len(history_expected)  # the copies are there
    _same_frames(mf.read_snapshots(root), latest_expected)
    _same_frames(mf.read_snapshots(root, latest=False), history_expected)

    first = _changed(mf.read_snapshots(root).head(4), "changed by this release", 5)
    mf.write_snapshot(first, root)
    assert COMPLETE_BEFORE in recorded(root)  # what versions/ held when it was converted
    assert _rows_on_disk(root, "versions") == len(history_expected)  # nothing copied again
    history = mf.read_snapshots(root, latest=False)
    assert len(history) == len(history_expected) + 4
    assert not history.duplicated(["uuid", "snapshot_id", "fetched_at"]).any()

    report = mf.compact_snapshots(root)
    assert report.rows_before == report.rows_after == len(history)
    assert report.versions_collapsed == report.versions_pruned == 0
    _same_frames(mf.read_snapshots(root, latest=False), history)

    second = _changed(first, "changed again", 10)
    mf.write_snapshot(second, root)  # the versions this release wrote: copied now
    assert _rows_on_disk(root, "versions") == len(history_expected) + 4
    # another writer of this release, upgrading the root now, would record the same
    again = open_root(root)._completed(Recorded(), earlier=True).extra[COMPLETE_BEFORE]
    assert again == recorded(root)[COMPLETE_BEFORE]
    again = mf.read_snapshots(root, latest=False)
    assert len(again) == len(history) + 4
    assert not again.duplicated(["uuid", "snapshot_id", "fetched_at"]).any()
    per_session = again[again["uuid"].isin(first["uuid"])].groupby("uuid")["summary"].last()
    assert set(per_session) == {"changed again"}
    latest = mf.read_snapshots(root).set_index("uuid")
    assert list(latest.loc[list(first["uuid"]), "summary"]) == ["changed again"] * 4
    assert len(latest) == len(latest_expected)


# --------------------------------------------------------------------------- recorded settings


def test_the_recorded_settings_keep_what_they_do_not_know_and_newer_layouts_are_refused(
    tmp_path,
):
    root = tmp_path / "root"
    frame = mf.sessions_frame(
        [{"uuid": "u1", "conversation_uuid": "c1", "updated_at": "2026-01-01T00:00:00Z"}],
        status="active",
        fetched_at="2026-01-02T00:00:00Z",
    )
    mf.write_snapshot(frame, root)
    assert recorded(root) == {"status": ["active"], "type": None, "conversations": None}
    settings = {**recorded(root), "from_a_newer_release": {"kept": True}}
    _commit_nothing(root, {"layout_version": LAYOUT_VERSION, "recorded": settings})
    store = open_root(root)
    assert store.recorded is not None
    assert store.recorded.extra == {"from_a_newer_release": {"kept": True}}
    store.commit(from_pandas(frame.assign(summary="x")), recorded=Recorded.of("all", None))
    rewritten = recorded(root)
    assert rewritten["from_a_newer_release"] == {"kept": True}
    assert rewritten["status"] == ["active", "completed", "timed_out"]

    newer = {"layout_version": LAYOUT_VERSION + 1, "recorded": rewritten}
    _commit_nothing(root, newer)  # a newer release
    with pytest.raises(ValueError, match="upgrade mihu_frames"):
        mf.read_snapshots(root)


def _commit_nothing(root: Path, record: dict[str, Any]) -> None:
    """A commit of the latest state that changes no row, with ``record`` as its metadata."""
    table = DeltaTable(root / "latest")
    empty = table.to_pyarrow_dataset().schema.empty_table()
    write_deltalake(
        table,
        empty,
        mode="append",
        commit_properties=CommitProperties(custom_metadata={"mihu_frames": record}),
    )


def test_a_delta_table_that_is_not_ours_is_refused_naming_it(tmp_path):
    root = tmp_path / "other"
    write_deltalake(root / "latest", pa.table({"id": [1, 2], "name": ["a", "b"]}))
    for call in (mf.read_snapshots, mf.compact_snapshots):
        with pytest.raises(mf.NotASnapshotRootError, match="not a mihu_frames") as caught:
            call(root)
        assert str(root) in str(caught.value) and "'id'" in str(caught.value)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(mf.NotASnapshotRootError):
        mf.write_snapshot(mf.empty_frame(), root)
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    table = tmp_path / "table"  # a Delta table itself, where a root is expected
    write_deltalake(table, pa.table({"id": [1]}))
    with pytest.raises(mf.NotASnapshotRootError, match="Delta table of its own"):
        mf.read_snapshots(table)


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


# --------------------------------------------------------------------------- crashes, conflicts


_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import pandas as pd
    import mihu_frames as mf
    from mihu_frames.store import writing

    root = sys.argv[1]

    def die_before_the_latest_state(self, *args):
        # the versions it supersedes are in versions/, the latest state not committed yet
        os.kill(os.getpid(), signal.SIGKILL)

    writing.Writer.commit_latest = die_before_the_latest_state
    df = mf.read_snapshots(root)
    df["summary"] = "written by a process killed half way"
    df["updated_at"] = df["updated_at"] + pd.Timedelta(seconds=1)
    df["fetched_at"] = df["fetched_at"] + pd.Timedelta(seconds=1)
    mf.write_snapshot(df, root)
    """
)


@pytest.mark.parametrize("next_run", ["write_snapshot", "compact_snapshots", "sync"])
def test_a_write_killed_between_history_and_latest_state_leaves_the_state_before(
    sim, make_client, tmp_path, next_run
):
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[5:7])
    mf.write_snapshot(df, root)
    version = DeltaTable(root / "latest").version()
    history_version = DeltaTable(root / "versions").version()
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    # it copied the versions it was replacing to versions/, then died: read, each is one version
    assert DeltaTable(root / "versions").version() == history_version + 1
    assert DeltaTable(root / "versions").to_pyarrow_dataset().count_rows() == len(df)
    assert DeltaTable(root / "latest").version() == version
    pd.testing.assert_frame_equal(mf.read_snapshots(root), df)  # the state before, whole
    history = mf.read_snapshots(root, latest=False)
    pd.testing.assert_frame_equal(history.drop(columns="snapshot_id"), df)

    if next_run == "write_snapshot":
        changed = df.head(3).copy()
        changed["summary"] = "the next write"
        changed["fetched_at"] = changed["fetched_at"] + pd.Timedelta(seconds=2)
        mf.write_snapshot(changed, root)
        expected = pd.concat([df, changed], ignore_index=True)
    elif next_run == "compact_snapshots":
        report = mf.compact_snapshots(root)
        assert (report.rows_before, report.rows_after) == (len(df), len(df))
        # the copies stand for the current versions: a writer may be about to replace them
        assert DeltaTable(root / "versions").to_pyarrow_dataset().count_rows() == len(df)
        expected = df
    else:
        client = make_client(sim)
        mf.sync_snapshots(root, sim.conversation_uuids[5:7], client=client)
        expected = df
    latest = mf.read_snapshots(root)
    assert not (latest["summary"] == "written by a process killed half way").any()
    assert list(latest["uuid"]) == list(df["uuid"])
    history = mf.read_snapshots(root, latest=False)
    assert len(history) == len(expected)  # each version once
    assert set(history["summary"]) == set(expected["summary"])
    assert mf.write_snapshot(df.head(0), root) is None


def test_a_write_that_cannot_read_the_latest_state_writes_nothing(sim, make_client, tmp_path):
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[5:7])
    mf.write_snapshot(df, root)

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    damaged = sorted(DeltaTable(root / "latest").file_uris())[0]
    Path(damaged).write_bytes(b"not parquet")
    before = files()
    changed = df.copy()
    changed["summary"] = "changed in every month"
    with pytest.raises(OSError):
        mf.write_snapshot(changed, root)
    assert files() == before


def test_a_commit_in_conflict_is_tried_again_on_the_new_state(
    sim, make_client, tmp_path, monkeypatch
):
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[4])
    mf.write_snapshot(df.iloc[:50], root)
    real_to_delta = writing._to_delta
    calls: list[int] = []

    def another_writer_commits_first(table, partition):  # type: ignore[no-untyped-def]
        if partition == writing.PARTITION and not calls:  # our versions are in history
            calls.append(1)
            other = df.iloc[40:60].assign(summary="the other writer")
            other["fetched_at"] = other["fetched_at"] + pd.Timedelta(seconds=1)
            with monkeypatch.context() as inner:
                inner.setattr(writing, "_to_delta", real_to_delta)
                mf.write_snapshot(other, root)
        return real_to_delta(table, partition)

    monkeypatch.setattr(writing, "_to_delta", another_writer_commits_first)
    mine = df.iloc[55:80].assign(summary="mine")
    mine["fetched_at"] = mine["fetched_at"] + pd.Timedelta(seconds=2)
    report = open_root(root).commit(from_pandas(mine))
    # our commit conflicted with the other writer's; the retry compared our rows with its
    # state: five of ours are now changes of its sessions, fetched later than its versions
    assert calls == [1]
    latest = mf.read_snapshots(root).set_index("uuid")
    assert latest.index.is_unique and len(latest) == 80
    assert (latest.loc[df["uuid"].iloc[40:55], "summary"] == "the other writer").all()
    assert (latest.loc[df["uuid"].iloc[55:80], "summary"] == "mine").all()  # fetched later
    assert report.rows_new == 20 and report.rows_changed == 5
    assert report.version == DeltaTable(root / "latest").version()
    history = mf.read_snapshots(root, latest=False)
    assert not history.duplicated(["uuid", "snapshot_id"]).any()
    assert len(history) == 80 + 10 + 5  # 40-49 and 55-59 superseded, each version once


@pytest.mark.parametrize("conflicts", [2, 3])
def test_conflicts_are_retried_and_one_that_never_ends_is_a_clear_error(
    sim, make_client, tmp_path, monkeypatch, conflicts
):
    root = tmp_path / "root"
    df = make_client(sim).sessions(sim.conversation_uuids[4])
    mf.write_snapshot(df.iloc[:10], root)
    monkeypatch.setattr(writing, "ATTEMPTS", 3)
    monkeypatch.setattr(writing, "_pause", lambda attempt: None)
    real_to_delta = writing._to_delta

    tries: list[int] = []

    def someone_commits_first(table, partition):  # type: ignore[no-untyped-def]
        if partition == writing.PARTITION and len(tries) < conflicts:
            tries.append(1)
            _commit_nothing(root, {"another writer": len(tries)})
        return real_to_delta(table, partition)

    monkeypatch.setattr(writing, "_to_delta", someone_commits_first)
    if conflicts < 3:  # the third attempt finds no one in its way
        mf.write_snapshot(df.iloc[10:20], root)
        assert len(tries) == conflicts
        pd.testing.assert_frame_equal(mf.read_snapshots(root), df.iloc[:20].reset_index(drop=True))
        return
    with pytest.raises(mf.SnapshotStoreError, match=r"conflict.*3 attempts") as caught:
        mf.write_snapshot(df.iloc[10:20], root)
    assert str(root) in str(caught.value)
    assert len(mf.read_snapshots(root)) == 10  # the state before
    assert len(mf.read_snapshots(root, latest=False)) == 10  # nothing of it in history either
    monkeypatch.setattr(writing, "_to_delta", real_to_delta)
    mf.write_snapshot(df.iloc[10:20], root)  # written again, it lands
    pd.testing.assert_frame_equal(mf.read_snapshots(root), df.iloc[:20].reset_index(drop=True))
