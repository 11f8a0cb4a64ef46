"""Other engines read a root's latest state as it is: DuckDB, Polars, pyarrow.dataset (and Spark
when installed) give exactly the simulator's sessions, with no de-duplication of their own, also
while syncs and a compaction write (each session once, in its state before or after)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest

import mihu_frames as mf
from mihu_frames.simulator import Simulator

SIZES = (3, 400, 900, 1500)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(seed=61, sizes=SIZES, retry_after=0) as server:
        yield server


def _truth(sim: Simulator) -> dict[str, pd.Timestamp]:
    return {s["uuid"]: pd.Timestamp(s["updated_at"]).tz_convert("UTC") for s in sim.ground_truth()}


def _sync(root: Path, sim: Simulator, client: mf.MihuClient, **options: Any) -> pd.DataFrame:
    return mf.sync_snapshots(root, sim.conversation_uuids, client=client, progress=False, **options)


def test_every_engine_gives_the_servers_sessions(sim, make_client, tmp_path):
    root = tmp_path / "root"
    client = make_client(sim)
    _sync(root, sim, client, status="all")
    for conversation in sim.conversation_uuids[1:]:
        sim.touch_sessions(conversation, 25)
    sim.add_sessions(sim.conversation_uuids[2], 7)
    _sync(root, sim, client)
    truth = _truth(sim)
    pattern = str(root / "sessions" / "**" / "*.parquet")

    con = duckdb.connect()
    rows = con.execute(
        f"select uuid, updated_at, status from read_parquet('{pattern}', hive_partitioning=true)"
    ).fetchall()
    assert len(rows) == len(truth) and {u: t for u, t, _ in rows} == truth
    tags = sim.tags()
    assert all(status == tags[u][0] for u, _, status in rows)

    lazy = pl.scan_parquet(pattern, hive_partitioning=True).select("uuid", "updated_at")
    frame = lazy.collect()
    assert frame.height == len(truth)
    assert dict(zip(frame["uuid"], frame["updated_at"].to_pandas(), strict=True)) == truth
    directory = pl.scan_parquet(root / "sessions", hive_partitioning=True).select(pl.len())
    assert directory.collect().item() == len(truth)  # no stray file in the folder

    table = ds.dataset(root / "sessions", format="parquet", partitioning="hive").to_table(
        columns=["uuid", "updated_at"]
    )
    assert table.num_rows == len(truth)
    assert dict(zip(table["uuid"].to_pylist(), table["updated_at"].to_pandas(), strict=True)) == (
        truth
    )
    # pruning by time: whole months by folder; by conversation: row groups by statistics
    month = con.execute(
        f"select count(*) from read_parquet('{pattern}', hive_partitioning=true) "
        "where created_month = '2026-03'"
    ).fetchone()[0]
    assert month == sum(
        1 for s in sim.ground_truth() if pd.Timestamp(s["created_at"]).tz_convert("UTC").month == 3
    )
    one = sim.conversation_uuids[2]
    assert con.execute(
        f"select count(*) from read_parquet('{pattern}') where conversation_uuid = '{one}'"
    ).fetchone()[0] == len(sim.ground_truth(one))


def test_spark_reads_the_latest_state(sim, make_client, tmp_path):
    pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    root = tmp_path / "root"
    _sync(root, sim, make_client(sim))
    spark = SparkSession.builder.master("local[1]").appName("mihu").getOrCreate()
    try:
        frame = spark.read.parquet(str(root / "sessions"))
        assert frame.count() == len(_truth(sim))
        assert frame.select("uuid").distinct().count() == len(_truth(sim))
    finally:
        spark.stop()


#: How each engine says a file was replaced between its listing and its reading.
_REPLACED_UNDER_THE_READER = {
    # Thrift's errors ("TProtocolException", "invalid TType") are the footer of the new file
    # read at the old file's size.
    "duckdb": (
        "outside file",
        "Invalid data",
        "Invalid Input Error",
        "TProtocolException",
        "invalid TType",
    ),
    "polars": ("out of specification", "PanicException", "ComputeError", "panicked"),
}

POLLER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    engine, root, stop, out = sys.argv[1:5]
    pattern = f"{root}/sessions/**/*.parquet"
    polls, failures, versions = [], [], set()
    if engine == "duckdb":
        import duckdb
        con = duckdb.connect()

        def poll():
            # one query for the counts (what the issue asks), one for the versions seen
            count, distinct = con.execute(
                f"select count(*), count(distinct uuid) "
                f"from read_parquet('{pattern}', hive_partitioning=true)"
            ).fetchone()
            polls.append((count, distinct, count))
            rows = con.execute(
                f"select uuid, epoch_us(updated_at) "
                f"from read_parquet('{pattern}', hive_partitioning=true)"
            ).fetchall()
            return rows, len(rows), len({u for u, _ in rows})
    elif engine == "pyarrow":
        import pyarrow.compute as pc, pyarrow.dataset as ds

        def poll():
            dataset = ds.dataset(f"{root}/sessions", format="parquet", partitioning="hive")
            table = dataset.to_table(columns=["uuid", "updated_at"])
            us = pc.cast(table["updated_at"], "int64").to_pylist()
            rows = list(zip(table["uuid"].to_pylist(), us))
            return rows, len(rows), len(set(table["uuid"].to_pylist()))
    else:
        import polars as pl

        def poll():
            frame = pl.scan_parquet(pattern, hive_partitioning=True).select(
                "uuid", pl.col("updated_at").dt.epoch("us")
            ).collect()
            rows = list(frame.iter_rows())
            return rows, len(rows), frame["uuid"].n_unique()

    print("ready", flush=True)
    while not Path(stop).exists():
        try:
            rows, count, distinct = poll()
        except FileNotFoundError:
            failures.append("missing")  # sessions/ itself gone: never, outside a conversion
            continue
        except BaseException as error:  # polars: a file replaced between listing and reading
            failures.append(type(error).__name__ + ": " + str(error)[:200])
            continue
        polls.append((count, distinct, len(rows)))
        versions.update(map(tuple, rows))
    Path(out).write_text(json.dumps(
        {"polls": polls, "failures": failures, "versions": sorted(versions)}
    ))
    """
)


def _start_poller(engine: str, root: Path, stop: Path, out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", POLLER, engine, str(root), str(stop), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "POLARS_MAX_THREADS": "1", "RUST_BACKTRACE": "0"},
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_readers_see_each_session_once_while_syncs_and_a_compaction_write(
    sim, make_client, tmp_path
):
    root = tmp_path / "root"
    client = make_client(sim)
    _sync(root, sim, client, status="all")
    counts = {len(_truth(sim))}
    valid = {(u, int(t.value // 1000)) for u, t in _truth(sim).items()}
    stop = tmp_path / "stop"
    pollers = {
        engine: (_start_poller(engine, root, stop, tmp_path / f"{engine}.json"))
        for engine in ("duckdb", "pyarrow", "polars")
    }
    try:
        time.sleep(0.5)
        for round_ in range(6):
            for conversation in sim.conversation_uuids[1:]:
                sim.touch_sessions(conversation, 60)  # closed sessions at random: many months
            if round_ % 2:
                sim.add_sessions(sim.conversation_uuids[3], 20)  # one new month partition
            df = _sync(root, sim, client)
            assert df.attrs["mihu_frames"]["rows_changed"] >= 180
            truth = _truth(sim)
            counts.add(len(truth))
            valid |= {(u, int(t.value // 1000)) for u, t in truth.items()}
            if round_ == 3:
                report = mf.compact_snapshots(root)
                assert report.files_after == 1 and report.rows_after == report.rows_before
        time.sleep(0.5)
    finally:
        stop.touch()
        outputs = {engine: proc.communicate(timeout=60) for engine, proc in pollers.items()}
    latest = mf.read_snapshots(root)
    assert len(latest) == max(counts) and latest["uuid"].is_unique
    summary = []
    for engine in pollers:
        assert pollers[engine].returncode == 0, outputs[engine][1][-2000:]
        result = json.loads((tmp_path / f"{engine}.json").read_text())
        polls = result["polls"]
        assert len(polls) >= 10, (engine, result["failures"][:3])
        for count, distinct, rows in polls:
            assert count == distinct == rows, (engine, count, distinct, rows)
            assert count in counts, (engine, count, sorted(counts))
        seen = {tuple(v) for v in result["versions"]}
        assert seen <= valid, (engine, sorted(seen - valid)[:5])  # no state that never was
        failures = result["failures"]
        # DuckDB and Polars take a file's size when they list the files and trust it when
        # they read: a file replaced in between fails that query (never a wrong answer); a
        # re-run reads it. pyarrow reads each file through one handle: it never fails.
        allowed = _REPLACED_UNDER_THE_READER.get(engine, ())
        unexpected = [f for f in failures if not any(sign in f for sign in allowed)]
        assert unexpected == [], (engine, unexpected[:3])
        summary.append(f"{engine}: {len(polls)} reads, {len(failures)} failed")
    print("\nconcurrent readers: " + "; ".join(summary))
