"""Other engines read a root's latest state as it is: DuckDB, Polars, pyarrow (and Spark when
installed) give exactly the simulator's sessions from the Delta table, with no de-duplication of
their own, also while syncs and a compaction write: every read is one committed state whole."""

from __future__ import annotations

import hashlib
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
import pytest
from deltalake import DeltaTable

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
    latest = str(root / "latest")

    con = duckdb.connect()  # over the table's Arrow dataset (delta_scan needs an extension)
    con.register("latest", DeltaTable(latest).to_pyarrow_dataset())
    rows = con.execute("select uuid, updated_at, status from latest").fetchall()
    assert len(rows) == len(truth) and {u: t for u, t, _ in rows} == truth
    tags = sim.tags()
    assert all(status == tags[u][0] for u, _, status in rows)

    frame = pl.scan_delta(latest).select("uuid", "updated_at").collect()
    assert frame.height == len(truth)
    assert dict(zip(frame["uuid"], frame["updated_at"].to_pandas(), strict=True)) == truth

    table = DeltaTable(latest).to_pyarrow_dataset().to_table(columns=["uuid", "updated_at"])
    assert table.num_rows == len(truth)
    assert dict(zip(table["uuid"].to_pylist(), table["updated_at"].to_pandas(), strict=True)) == (
        truth
    )
    # pruning by time: whole months by partition; by conversation: filtered in the scan
    month = con.execute("select count(*) from latest where created_month = '2026-03'").fetchone()
    assert month[0] == sum(
        1 for s in sim.ground_truth() if pd.Timestamp(s["created_at"]).tz_convert("UTC").month == 3
    )
    one = sim.conversation_uuids[2]
    assert pl.scan_delta(latest).filter(pl.col("conversation_uuid") == one).select(
        pl.len()
    ).collect().item() == len(sim.ground_truth(one))


def test_spark_reads_the_latest_state(sim, make_client, tmp_path):
    pytest.importorskip("pyspark")
    delta = pytest.importorskip("delta")  # delta-spark: Delta Lake for Spark
    from pyspark.sql import SparkSession

    root = tmp_path / "root"
    _sync(root, sim, make_client(sim))
    builder = (
        SparkSession.builder.master("local[1]")
        .appName("mihu")
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config(
            "spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog"
        )
    )
    spark = delta.configure_spark_with_delta_pip(builder).getOrCreate()
    try:
        frame = spark.read.format("delta").load(str(root / "latest"))
        assert frame.count() == len(_truth(sim))
        assert frame.select("uuid").distinct().count() == len(_truth(sim))
    finally:
        spark.stop()


POLLER = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    from pathlib import Path

    engine, root, stop, out = sys.argv[1:5]
    latest = f"{root}/latest"
    polls, failures = [], []

    def state(rows):
        return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()

    if engine == "duckdb":
        import duckdb
        from deltalake import DeltaTable
        con = duckdb.connect()

        def poll():
            con.register("latest", DeltaTable(latest).to_pyarrow_dataset())
            rows = con.execute("select uuid, epoch_us(updated_at) from latest").fetchall()
            return rows, len({u for u, _ in rows})
    elif engine == "pyarrow":
        import pyarrow.compute as pc
        from deltalake import DeltaTable

        def poll():
            table = DeltaTable(latest).to_pyarrow_dataset().to_table(
                columns=["uuid", "updated_at"]
            )
            us = pc.cast(table["updated_at"], "int64").to_pylist()
            rows = list(zip(table["uuid"].to_pylist(), us))
            return rows, len(set(table["uuid"].to_pylist()))
    else:
        import polars as pl

        def poll():
            frame = pl.scan_delta(latest).select(
                "uuid", pl.col("updated_at").dt.epoch("us")
            ).collect()
            rows = [list(r) for r in frame.iter_rows()]
            return rows, frame["uuid"].n_unique()

    print("ready", flush=True)
    while not Path(stop).exists():
        try:
            rows, distinct = poll()
        except BaseException as error:  # never expected: reported by the test
            failures.append(type(error).__name__ + ": " + str(error)[:200])
            continue
        rows = [list(r) for r in rows]
        polls.append((len(rows), distinct, state(rows)))
    Path(out).write_text(json.dumps({"polls": polls, "failures": failures}))
    # what is tested is done: skip the interpreter's teardown, where a native thread pool
    # still alive can abort the process (apache/arrow#34314, seen once in CI: SIGABRT after
    # every read had passed)
    sys.stdout.flush()
    os._exit(0)
    """
)


def _start_poller(engine: str, root: Path, stop: Path, out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", POLLER, engine, str(root), str(stop), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "POLARS_MAX_THREADS": "1",
            "RUST_BACKTRACE": "0",
            "PYTHONFAULTHANDLER": "1",
        },
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
    # every state the latest table ever committed, as the pollers fingerprint a read
    states = set()
    for version in range(DeltaTable(root / "latest").version() + 1):
        state = mf.read_snapshots(root, as_of=version, columns=["uuid", "updated_at"])
        us = [None if pd.isna(t) else t.value // 1000 for t in state["updated_at"]]
        rows = [[u, t] for u, t in zip(state["uuid"], us, strict=True)]
        states.add(hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest())
    summary = []
    for engine in pollers:
        assert pollers[engine].returncode == 0, (engine, outputs[engine][1][-3000:])
        result = json.loads((tmp_path / f"{engine}.json").read_text())
        polls = result["polls"]
        assert result["failures"] == [], (engine, result["failures"][:3])
        assert len(polls) >= 10, engine
        for count, distinct, state in polls:
            assert count == distinct, (engine, count, distinct)  # each session once
            assert count in counts or count == 0, (engine, count, sorted(counts))
            assert state in states, (engine, count)  # a state that was committed, whole
        summary.append(f"{engine}: {len(polls)} reads, {len({p[2] for p in polls})} states")
    print("\nconcurrent readers: " + "; ".join(summary))
