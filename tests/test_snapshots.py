"""Snapshot roots: exact round trip, the latest state and history, tags, metadata, owner-only
files, not-a-root errors, and DuckDB, Polars and pyarrow reading the Delta tables as they are."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest
from conftest import recorded, writes
from conftest import tagged as is_tagged
from deltalake import DeltaTable, write_deltalake

import mihu_frames as mf
from mihu_frames.schema import COLUMNS


@pytest.fixture
def loaded(sim, make_client):
    return make_client(sim).sessions(sim.conversation_uuids[1:6], status="all")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "snaps"  # tmp_path itself holds the client's cache: not a root


def _version_rows(root: Path, commit: Path) -> pd.DataFrame:
    """The versions one write added to history (the write ``commit`` names)."""
    history = mf.read_snapshots(root, latest=False)
    return history[history["snapshot_id"] == mf.snapshot_metadata(commit)["snapshot_id"]]


def _edit(df: pd.DataFrame, rows: slice, seconds: int = 60) -> pd.DataFrame:
    """Some rows of ``df`` as a later fetch would bring them: updated, another summary."""
    edited = df.iloc[rows].copy()
    edited["summary"] = "edited later"
    edited["updated_at"] = edited["updated_at"] + pd.Timedelta(seconds=seconds)
    edited["fetched_at"] = edited["fetched_at"] + pd.Timedelta(seconds=seconds)
    return edited


def test_round_trip_is_exact_dtype_for_dtype(loaded, root):
    path = mf.write_snapshot(loaded, root)
    back = mf.read_snapshots(root)
    pd.testing.assert_frame_equal(back, loaded, check_exact=True)
    assert path.parent == root / "latest" / "_delta_log" and path.suffix == ".json"
    history = mf.read_snapshots(root, latest=False)
    pd.testing.assert_frame_equal(history.drop(columns="snapshot_id"), loaded, check_exact=True)
    assert set(history["snapshot_id"]) == {mf.snapshot_metadata(path)["snapshot_id"]}
    # time travel: the version this write made, a new root's first (it is created holding
    # the rows, so no empty state ever stood before them); the next write's version
    assert mf.snapshot_metadata(path)["version"] == int(path.stem) == 0
    pd.testing.assert_frame_equal(mf.read_snapshots(root, as_of=0), loaded)
    mf.write_snapshot(loaded.iloc[:1].assign(summary="again"), root)
    assert mf.read_snapshots(root)["summary"].iloc[0] == "again"
    pd.testing.assert_frame_equal(mf.read_snapshots(root, as_of=0), loaded)


def test_empty_frame_round_trip_creates_a_root(tmp_path):
    assert mf.write_snapshot(mf.empty_frame(), tmp_path / "empty") is None  # nothing to write
    pd.testing.assert_frame_equal(mf.read_snapshots(tmp_path / "empty"), mf.empty_frame())
    history = mf.read_snapshots(tmp_path / "empty", latest=False)
    assert list(history.columns) == [*COLUMNS, "snapshot_id"] and history.empty
    assert DeltaTable(tmp_path / "empty" / "latest").version() >= 0
    assert DeltaTable(tmp_path / "empty" / "versions").version() >= 0


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "sessions folder", "unrelated"])
def test_a_folder_that_is_not_a_root_is_an_error_never_an_empty_frame(loaded, tmp_path, kind):
    real = tmp_path / "real"
    mf.write_snapshot(loaded, real)
    target = {
        "missing": tmp_path / "typo",
        "empty": tmp_path / "empty",
        "file": tmp_path / "notes.txt",
        "sessions folder": real / "latest",
        "unrelated": tmp_path / "cache",  # the client's cache folder
    }[kind]
    if kind == "empty":
        target.mkdir()
    if kind == "file":
        target.write_text("not a root")
    for read in (mf.read_snapshots, mf.compact_snapshots):
        with pytest.raises(mf.NotASnapshotRootError) as caught:
            read(target)
        message = str(caught.value)
        assert str(target) in message and "latest/" in message
        assert isinstance(caught.value, FileNotFoundError)
        assert isinstance(caught.value, ValueError)
    if kind == "sessions folder":
        assert f"pass the root, {real}" in message
    if kind in ("missing", "empty"):  # a write creates a root there
        assert mf.write_snapshot(loaded.head(3), target) is not None
        assert len(mf.read_snapshots(target)) == 3
    else:  # and refuses anything else, writing nothing
        before = sorted(p for p in tmp_path.rglob("*"))
        with pytest.raises(mf.NotASnapshotRootError):
            mf.write_snapshot(loaded, target)
        assert sorted(p for p in tmp_path.rglob("*")) == before


def test_files_are_owner_only_and_nothing_partial_is_left(loaded, root):
    old = os.umask(0o022)
    try:
        path = mf.write_snapshot(loaded, root)
        mf.write_snapshot(_edit(loaded, slice(0, 5)), root)
    finally:
        os.umask(old)
    files = [p for p in root.rglob("*") if p.is_file()]
    folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
    assert path in files and len([p for p in files if p.suffix == ".parquet"]) > 2
    for file in files:
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    for folder in folders:
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_metadata_records_the_write_and_never_the_token(sim, loaded, root):
    path = mf.write_snapshot(loaded, root, metadata={"note": "daily"})
    meta = mf.snapshot_metadata(path)
    assert meta["schema_version"] == 1 and meta["library_version"] == mf.__version__
    assert meta["layout_version"] == 4 and meta["version"] == int(path.stem)
    assert meta["base_url"] == sim.base_url and meta["pii"] == "kept"
    assert meta["filters"]["status"] == ["active", "completed", "timed_out"]
    assert meta["rows"] == len(loaded) and meta["conversations"] == 5
    assert meta["rows_new"] == len(loaded) and meta["rows_changed"] == 0
    assert meta["fetched_at"] == loaded["fetched_at"].max().isoformat()
    assert meta["note"] == "daily"
    assert mf.snapshot_metadata(root) == meta  # a root: its newest commit
    assert meta["history_version"] == 0  # it superseded nothing: versions/ as created
    # a write that supersedes versions: the history table's commit carries the same record
    changed = loaded.head(3).assign(summary="changed")
    changed["fetched_at"] = changed["fetched_at"] + pd.Timedelta(seconds=1)
    second = mf.snapshot_metadata(mf.write_snapshot(changed, root, metadata={"note": "again"}))
    (appended,) = [
        c for c in DeltaTable(root / "versions").history() if c.get("mihu_frames", {}).get("rows")
    ]
    assert appended["mihu_frames"]["snapshot_id"] == second["snapshot_id"]
    assert appended["mihu_frames"]["note"] == "again" and appended["mihu_frames"]["rows"] == 3
    assert second["history_version"] == appended["version"]
    for file in root.rglob("*"):
        if file.is_file():
            assert sim.token.encode() not in file.read_bytes()
    created = mf.snapshot_metadata(root / "latest" / "_delta_log" / f"{0:020d}.json")
    assert created["layout_version"] == 4 and created["table"] == "latest"
    assert created["durations"].startswith("int64 microseconds: duration, time_to_evaluation")
    assert recorded(root) == {
        "status": ["active", "completed", "timed_out"],
        "type": None,
        "conversations": None,
    }


def test_every_engine_reads_the_latest_state_one_row_per_session(sim, loaded, root):
    mf.write_snapshot(loaded, root)
    truth = loaded.set_index("uuid")
    for edited in (_edit(loaded, slice(0, 40)), _edit(loaded, slice(20, 30), seconds=120)):
        mf.write_snapshot(edited, root)
        truth.loc[edited["uuid"], "summary"] = "edited later"
        truth.loc[edited["uuid"], "updated_at"] = edited.set_index("uuid")["updated_at"]
    # DuckDB over the table's Arrow dataset (delta_scan needs its extension downloaded)
    con = duckdb.connect()
    con.register("latest", DeltaTable(root / "latest").to_pyarrow_dataset())
    rows, distinct, edits = con.execute(
        "select count(*), count(distinct uuid), count(*) filter (summary = 'edited later') "
        "from latest"
    ).fetchone()
    assert (rows, distinct, edits) == (len(loaded), len(loaded), 40)
    months = con.execute(
        "select distinct created_month = strftime(created_at, '%Y-%m') from latest"
    ).fetchall()
    assert months == [(True,)]  # the partition is the month of created_at
    # Delta has no duration type: the microseconds are BIGINT (documented).
    durations = con.execute(
        "select uuid, duration from latest where duration is not null"
    ).fetchall()
    expected = loaded.dropna(subset=["duration"])
    assert sorted(durations) == sorted(
        zip(
            expected["uuid"],
            expected["duration"].dt.total_seconds().mul(1e6).round().astype(int),
            strict=True,
        )
    )
    polars = pl.read_delta(str(root / "latest"))
    assert polars.height == len(loaded) and polars["uuid"].n_unique() == len(loaded)
    assert polars.schema["started_at"] == pl.Datetime("us", "UTC")
    assert polars.schema["task_uuids"] == pl.List(pl.String)
    assert polars.schema["created_month"] == pl.String
    assert polars.schema["duration"] == pl.Int64
    by_uuid = polars.to_pandas().set_index("uuid")
    assert (by_uuid.loc[truth.index, "updated_at"] == truth["updated_at"]).all()
    table = DeltaTable(root / "latest").to_pyarrow_dataset().to_table(columns=["uuid", "summary"])
    assert table.num_rows == len(loaded) and len(table.column("uuid").unique()) == len(loaded)
    # every version: the superseded ones in versions/, the current ones in latest/
    superseded = pl.scan_delta(str(root / "versions")).drop("fetched_month")
    current = pl.scan_delta(str(root / "latest")).drop("created_month")
    assert superseded.select(pl.len()).collect().item() == 40 + 10
    every = pl.concat([superseded, current]).unique(["uuid", "snapshot_id", "fetched_at"])
    assert every.select(pl.len()).collect().item() == len(loaded) + 40 + 10


def test_latest_state_and_history_across_writes(sim, make_client, root):
    first = make_client(sim).sessions(sim.conversation_uuids[2])
    mf.write_snapshot(first, root)
    changed = _edit(first, slice(0, 5))
    path = mf.write_snapshot(pd.concat([changed, first.iloc[5:10]]), root)  # 5 unchanged
    assert mf.snapshot_metadata(path)["rows_changed"] == 5
    assert mf.snapshot_metadata(path)["rows_unchanged"] == 5
    latest = mf.read_snapshots(root)
    assert list(latest["uuid"]) == list(first["uuid"])  # the order they were first written
    assert (latest["summary"].iloc[:5] == "edited later").all()
    pd.testing.assert_frame_equal(latest.iloc[5:], first.iloc[5:])
    history = mf.read_snapshots(root, latest=False)
    assert len(history) == len(first) + 5  # the unchanged rows are not written again
    assert history["snapshot_id"].nunique() == 2
    assert list(history.columns) == [*COLUMNS, "snapshot_id"]
    assert list(history["uuid"].iloc[-5:]) == list(first["uuid"].iloc[:5])


def test_writing_the_same_data_again_adds_nothing(sim, make_client, root):
    df = make_client(sim).sessions(sim.conversation_uuids[1:4], status="all")
    assert mf.write_snapshot(df, root) is not None
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    refetched = df.copy()
    refetched["fetched_at"] = refetched["fetched_at"] + pd.Timedelta(hours=3)  # a later demo
    assert mf.write_snapshot(refetched, root) is None
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == files
    pd.testing.assert_frame_equal(mf.read_snapshots(root), df)  # the first fetch is kept


def test_an_untagged_write_keeps_the_tags_held(sim, make_client, root):
    client = make_client(sim)
    tagged = client.sessions(sim.conversation_uuids[3], status="all", type="all")
    mf.write_snapshot(tagged, root)
    plain = client.sessions(sim.conversation_uuids[3])
    assert not is_tagged(plain["status"]).any() and not is_tagged(plain["type"]).any()
    changed = _edit(plain, slice(0, 30))
    path = mf.write_snapshot(pd.concat([changed, plain.iloc[30:]]), root)
    latest = mf.read_snapshots(root).set_index("uuid")
    tags = sim.tags()
    assert [tags[u] for u in latest.index] == list(
        zip(latest["status"].astype(str), latest["type"].astype(str), strict=True)
    )
    assert (latest.loc[changed["uuid"], "summary"] == "edited later").all()
    meta = mf.snapshot_metadata(path)
    assert (meta["rows_changed"], meta["rows_unchanged"]) == (30, len(plain) - 30)
    history = _version_rows(root, path)
    assert len(history) == 30 and is_tagged(history["status"]).all()  # as the latest state


def test_an_older_fetch_written_late_goes_to_history_only(sim, make_client, root):
    df = make_client(sim).sessions(sim.conversation_uuids[2])
    mf.write_snapshot(df, root)
    older = df.head(8).copy()
    older["summary"] = "fetched before, written after"
    older["fetched_at"] = older["fetched_at"] - pd.Timedelta(days=1)
    path = mf.write_snapshot(older, root)
    meta = mf.snapshot_metadata(path)
    assert (meta["rows_stale"], meta["rows_changed"], meta["rows_new"]) == (8, 0, 0)
    assert meta["fetched_at"] == older["fetched_at"].max().isoformat()
    assert path.parent.parent.name == meta["table"] == "versions"  # the latest state unchanged
    pd.testing.assert_frame_equal(mf.read_snapshots(root), df)
    history = mf.read_snapshots(root, latest=False)
    assert (history["summary"] == "fetched before, written after").sum() == 8


def test_a_session_stays_in_its_partition_when_created_at_changes(sim, make_client, root):
    df = make_client(sim).sessions(sim.conversation_uuids[4])
    mf.write_snapshot(df, root)
    moved = _edit(df, slice(0, 3))
    moved["created_at"] = pd.Timestamp("2031-05-05", tz="UTC")
    mf.write_snapshot(moved, root)
    assert not (root / "latest" / "created_month=2031-05").exists()
    latest = mf.read_snapshots(root)
    assert latest["uuid"].is_unique and len(latest) == len(df)
    assert (latest.set_index("uuid").loc[moved["uuid"], "created_at"].dt.year == 2031).all()


def test_read_pushes_down_conversations_and_columns(sim, make_client, root):
    df = make_client(sim).sessions(sim.conversation_uuids[1:4])
    mf.write_snapshot(df, root)
    one = mf.read_snapshots(root, conversations=sim.conversation_uuids[3])
    assert set(one["conversation_uuid"]) == {sim.conversation_uuids[3]} and len(one) == 100
    narrow = mf.read_snapshots(root, columns=["uuid", "duration"])
    assert list(narrow.columns) == ["uuid", "duration"] and len(narrow) == len(df)
    assert list(narrow["uuid"]) == list(df["uuid"])
    history = mf.read_snapshots(root, latest=False, columns=["uuid", "snapshot_id"])
    assert list(history.columns) == ["uuid", "snapshot_id"] and len(history) == len(df)
    with pytest.raises(ValueError, match="unknown column"):
        mf.read_snapshots(root, columns=["nope"])


def test_a_slice_of_a_frame_writes_and_reads_back(loaded, root):
    # pyarrow's ascii_lower broke string arrays whose offsets do not start at zero
    part = loaded.iloc[40:60]
    mf.write_snapshot(part, root)
    pd.testing.assert_frame_equal(mf.read_snapshots(root), part.reset_index(drop=True))


def test_write_rejects_a_frame_that_is_not_sessions(root):
    with pytest.raises(ValueError, match="missing columns"):
        mf.write_snapshot(pd.DataFrame({"a": [1]}), root)
    assert not root.exists()


def test_read_since_keeps_sessions_updated_at_or_after(sim, make_client, root):
    df = make_client(sim).sessions(sim.conversation_uuids[5])
    mf.write_snapshot(df, root)
    cut = df["updated_at"].sort_values().iloc[len(df) // 2]
    recent = mf.read_snapshots(root, since=cut)
    assert sorted(recent["uuid"]) == sorted(df.loc[df["updated_at"] >= cut, "uuid"])
    naive = mf.read_snapshots(root, since=cut.tz_localize(None).isoformat())
    assert len(naive) == len(recent)
    history = mf.read_snapshots(root, latest=False, since=cut)
    assert sorted(history["uuid"]) == sorted(recent["uuid"])


def test_a_table_of_an_older_schema_still_reads(loaded, root):
    mf.write_snapshot(loaded, root)
    table = DeltaTable(root / "latest")  # as a version-0 writer would have left it
    old = table.to_pyarrow_dataset().to_table().drop_columns(["idle_before_end", "extra"])
    write_deltalake(table, old, mode="overwrite", schema_mode="overwrite")
    back = mf.read_snapshots(root)
    assert list(back.columns) == list(COLUMNS) and len(back) == len(loaded)
    assert back["extra"].isna().all() and back["idle_before_end"].isna().all()
    pd.testing.assert_series_equal(back["duration"], loaded["duration"])


def test_pii_hash_replaces_contacts_with_stable_keyed_hashes(loaded, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="MIHU_PII_KEY"):
        mf.write_snapshot(loaded, tmp_path / "a", pii="hash")
    with pytest.raises(ValueError, match="pii must be"):
        mf.write_snapshot(loaded, tmp_path / "a", pii="drop")
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("MIHU_PII_KEY", "k1")
    first = mf.write_snapshot(loaded, tmp_path / "a", pii="hash")
    mf.write_snapshot(loaded, tmp_path / "b", pii="hash")
    a, b = mf.read_snapshots(tmp_path / "a"), mf.read_snapshots(tmp_path / "b")
    for column in ("contact_name", "contact_surname", "contact_phone_number", "contact_email"):
        assert a[column].equals(b[column])  # stable across snapshots: still joins
        assert a[column].isna().equals(loaded[column].isna())
        kept = loaded[column].dropna()
        assert not set(kept) & set(a[column].dropna())
        assert a[column].dropna().str.len().eq(32).all()
        # equal inputs hash equal, different inputs differ
        assert a[column].nunique() == loaded[column].nunique()
    assert mf.snapshot_metadata(first)["pii"] == "hash"
    history = mf.read_snapshots(tmp_path / "a", latest=False)
    assert history["contact_email"].dropna().isin(a["contact_email"]).all()  # history hashed too
    monkeypatch.setenv("MIHU_PII_KEY", "k2")
    other = mf.read_snapshots(tmp_path / "a").copy()
    mf.write_snapshot(loaded, tmp_path / "c", pii="hash")
    assert (
        not mf.read_snapshots(tmp_path / "c")["contact_email"]
        .dropna()
        .equals(other["contact_email"].dropna())
    )
    pd.testing.assert_frame_equal(
        a.drop(columns=list(mf.snapshots.PII_COLUMNS)),
        loaded.drop(columns=list(mf.snapshots.PII_COLUMNS)),
    )


def test_metadata_cannot_replace_the_record(loaded, root):
    with pytest.raises(ValueError, match="reserved"):
        mf.write_snapshot(loaded, root, metadata={"pii": "kept", "note": 1})
    with pytest.raises(ValueError, match="reserved"):
        mf.write_snapshot(loaded, root, metadata={"rows_new": 0})
    assert not root.exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIHU_")}
    return subprocess.run(
        [sys.executable, "-m", "mihu_frames", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_make_demo_twice_adds_no_identical_snapshot(tmp_path):
    root = tmp_path / "data" / "snapshots"
    for _ in range(2):
        result = _cli("demo", "--root", str(root), "--sizes", "0,1,150")
        assert result.returncode == 0, result.stderr
        assert "151 sessions read back" in result.stdout
    assert len(writes(root)) == 1
    con = duckdb.connect()
    con.register("latest", DeltaTable(root / "latest").to_pyarrow_dataset())
    counts = con.execute("select count(*), count(distinct uuid) from latest")
    assert counts.fetchone() == (151, 151)


def test_the_command_line_names_a_folder_that_is_not_a_root(loaded, tmp_path):
    mf.write_snapshot(loaded, tmp_path / "root")
    for folder in (tmp_path / "missing", tmp_path / "root" / "latest", tmp_path / "cache"):
        for command in ("stats", "compact"):
            result = _cli(command, str(folder))
            assert result.returncode == 2, (command, folder, result.stdout)
            assert str(folder) in result.stderr and "snapshot root" in result.stderr
            assert "Traceback" not in result.stderr
