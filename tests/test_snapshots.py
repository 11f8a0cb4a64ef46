"""Parquet snapshots: exact round trip, hive layout, metadata, DuckDB and Polars, latest state."""

from __future__ import annotations

import os
import stat

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest

import mihu_frames as mf
from mihu_frames.schema import COLUMNS


@pytest.fixture
def loaded(sim, make_client):
    return make_client(sim).sessions(sim.conversation_uuids[1:6], status="all")


def test_round_trip_is_exact_dtype_for_dtype(loaded, tmp_path):
    path = mf.write_snapshot(loaded, tmp_path / "snaps")
    back = mf.read_snapshots(tmp_path / "snaps")
    pd.testing.assert_frame_equal(back, loaded, check_exact=True)
    assert path.parent.name.startswith("fetched_date=")
    assert path.parent.parent == tmp_path / "snaps" / "sessions"
    assert path.suffix == ".parquet"


def test_empty_frame_round_trip(tmp_path):
    mf.write_snapshot(mf.empty_frame(), tmp_path)
    pd.testing.assert_frame_equal(mf.read_snapshots(tmp_path), mf.empty_frame())


def test_read_of_empty_and_missing_roots(tmp_path):
    pd.testing.assert_frame_equal(mf.read_snapshots(tmp_path), mf.empty_frame())
    with pytest.raises(FileNotFoundError):
        mf.read_snapshots(tmp_path / "nowhere")


def test_files_are_owner_only_and_nothing_partial_is_left(loaded, tmp_path):
    old = os.umask(0o022)
    try:
        path = mf.write_snapshot(loaded, tmp_path / "snaps")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (path.parent, path.parent.parent, tmp_path / "snaps"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_metadata_records_the_load_and_never_the_token(sim, loaded, tmp_path):
    path = mf.write_snapshot(loaded, tmp_path, metadata={"note": "daily"})
    meta = mf.snapshot_metadata(path)
    assert meta["snapshot_id"] == path.stem
    assert meta["schema_version"] == 1 and meta["library_version"] == mf.__version__
    assert meta["base_url"] == sim.base_url
    assert meta["filters"]["status"] == ["active", "completed", "timed_out"]
    assert meta["rows"] == len(loaded) and meta["conversations"] == 5
    assert meta["note"] == "daily"
    assert sim.token.encode() not in path.read_bytes()


def test_duckdb_polars_and_pyarrow_read_the_dataset(loaded, tmp_path):
    mf.write_snapshot(loaded, tmp_path)
    mf.write_snapshot(loaded.iloc[:3], tmp_path)
    pattern = str(tmp_path / "sessions" / "**" / "*.parquet")
    con = duckdb.connect()
    count = con.execute(
        f"select count(*), count(distinct snapshot_id), min(fetched_date) "
        f"from read_parquet('{pattern}', hive_partitioning = true)"
    ).fetchone()
    assert count[0] == len(loaded) + 3 and count[1] == 2
    assert str(count[2]) == loaded["fetched_at"].max().strftime("%Y-%m-%d")
    # Parquet has no duration type: DuckDB sees the microseconds as BIGINT (documented).
    durations = con.execute(
        f"select duration from read_parquet('{pattern}') "
        "where duration is not null and snapshot_id = (select min(snapshot_id) "
        f"from read_parquet('{pattern}'))"
    ).fetchall()
    expected = loaded["duration"].dropna()
    assert sorted(d for (d,) in durations) == sorted(
        expected.dt.total_seconds().mul(1e6).round().astype(int)
    )
    frame = pl.read_parquet(pattern, hive_partitioning=True)
    assert frame.height == len(loaded) + 3
    assert frame.schema["started_at"] == pl.Datetime("us", "UTC")
    assert frame.schema["task_uuids"] == pl.List(pl.String)
    dataset = ds.dataset(tmp_path / "sessions", format="parquet", partitioning="hive")
    assert dataset.count_rows() == len(loaded) + 3


def test_latest_state_across_snapshots(sim, make_client, tmp_path):
    client = make_client(sim)
    first = client.sessions(sim.conversation_uuids[2])
    mf.write_snapshot(first, tmp_path)
    changed = first.copy()
    changed.loc[:4, "summary"] = "changed"
    changed.loc[:4, "updated_at"] = changed.loc[:4, "updated_at"] + pd.Timedelta(seconds=1)
    mf.write_snapshot(changed.iloc[:10], tmp_path)
    latest = mf.read_snapshots(tmp_path)
    assert len(latest) == len(first) and latest["uuid"].is_unique
    by_uuid = latest.set_index("uuid")
    assert (by_uuid.loc[first["uuid"][:5], "summary"] == "changed").all()
    assert (
        by_uuid.loc[first["uuid"][5:], "summary"].fillna("")
        == first["summary"][5:].fillna("").values
    ).all()
    history = mf.read_snapshots(tmp_path, latest=False)
    assert len(history) == len(first) + 10
    assert history["snapshot_id"].nunique() == 2
    assert list(history.columns) == [*COLUMNS, "snapshot_id"]


def test_read_pushes_down_conversations_and_columns(sim, make_client, tmp_path):
    df = make_client(sim).sessions(sim.conversation_uuids[1:4])
    mf.write_snapshot(df, tmp_path)
    one = mf.read_snapshots(tmp_path, conversations=sim.conversation_uuids[3])
    assert set(one["conversation_uuid"]) == {sim.conversation_uuids[3]} and len(one) == 100
    narrow = mf.read_snapshots(tmp_path, columns=["uuid", "duration"])
    assert list(narrow.columns) == ["uuid", "duration"] and len(narrow) == len(df)
    with pytest.raises(ValueError, match="unknown column"):
        mf.read_snapshots(tmp_path, columns=["nope"])


def test_write_rejects_a_frame_that_is_not_sessions(tmp_path):
    with pytest.raises(ValueError, match="missing columns"):
        mf.write_snapshot(pd.DataFrame({"a": [1]}), tmp_path)
    assert not (tmp_path / "sessions").exists()


def test_read_since_keeps_sessions_updated_at_or_after(sim, make_client, tmp_path):
    df = make_client(sim).sessions(sim.conversation_uuids[5])
    mf.write_snapshot(df, tmp_path)
    cut = df["updated_at"].sort_values().iloc[len(df) // 2]
    recent = mf.read_snapshots(tmp_path, since=cut)
    assert sorted(recent["uuid"]) == sorted(df.loc[df["updated_at"] >= cut, "uuid"])
    naive = mf.read_snapshots(tmp_path, since=cut.tz_localize(None).isoformat())
    assert len(naive) == len(recent)


def test_snapshot_of_an_older_schema_still_reads(loaded, tmp_path):
    import pyarrow.parquet as pq

    path = mf.write_snapshot(loaded, tmp_path)
    old = pq.read_table(path).drop_columns(["idle_before_end", "extra"])  # a version-0 file
    pq.write_table(old, path)
    back = mf.read_snapshots(tmp_path)
    assert list(back.columns) == list(COLUMNS) and len(back) == len(loaded)
    assert back["extra"].isna().all() and back["idle_before_end"].isna().all()
    pd.testing.assert_series_equal(back["duration"], loaded["duration"])


def test_pii_hash_replaces_contacts_with_stable_keyed_hashes(loaded, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="MIHU_PII_KEY"):
        mf.write_snapshot(loaded, tmp_path / "a", pii="hash")
    with pytest.raises(ValueError, match="pii must be"):
        mf.write_snapshot(loaded, tmp_path / "a", pii="drop")
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


def test_metadata_cannot_replace_the_record(loaded, tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        mf.write_snapshot(loaded, tmp_path, metadata={"pii": "kept", "note": 1})
    assert not (tmp_path / "sessions").exists()
