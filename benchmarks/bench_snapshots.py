"""Benchmark the storage step of the Delta Lake root beside plain ``pyarrow.parquet`` writes.

Run ``python benchmarks/bench_snapshots.py`` (1,000,000 sessions held; appending 1,000,000
into 9,000,000: about ten minutes and 6 GB of disk), ``--quick`` (100,000; 100,000 into
900,000), or ``--sizes HELD,BASE,APPEND``; ``--repeat N`` best of N, ``--json PATH``.

A synthetic sessions table (every column of the frame, 200 conversations, ``created_at`` spread
over three years, 120-character summaries) is written once to a Parquet file; each measurement
then runs in a fresh child process (``ru_maxrss`` is its own peak resident memory) and times
only the step itself (peak RSS: the child's own ``VmHWM``):

- **first write**: ``commit`` of every session to a new root (both tables), beside
  ``pq.write_to_dataset`` of the same rows partitioned by ``created_month``;
- **random 1%**: 1% of the sessions, picked at random (every month), changed and committed to a
  copy of the root holding them all, beside a plain rewrite of every row (``write_to_dataset``);
- **recent 1%**: the 1% most recently created, changed (what a day of changes looks like);
- **append**: APPEND new sessions (over three years) committed into a root holding BASE, beside
  ``write_to_dataset`` of those APPEND rows.

Limits (issue 19): random 1% <= 2x the plain rewrite, first write <= 1.5x, append <= 4x.
Reported: seconds, bytes written, peak RSS, ratio. The run fails if a step reports other
counts than the rows it was given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from _common import print_machine, print_rows

from mihu_frames.schema import SESSIONS_SCHEMA

CHILD = textwrap.dedent(
    """
    import json, os, resource, shutil, sys, time
    import pyarrow.compute as pc, pyarrow.parquet as pq
    from mihu_frames.store import open_root, _months

    kind, source, root, out = sys.argv[1:5]
    table = pq.read_table(source)
    started = time.perf_counter()
    if kind == "store":
        report = open_root(root, create=True).commit(table)
        result = {"rows_new": report.rows_new, "rows_changed": report.rows_changed,
                  "bytes": report.bytes_written}
    else:
        table = table.append_column("created_month", _months(table.column("created_at")))
        pq.write_to_dataset(table, root, partition_cols=["created_month"])
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
        result = {"bytes": size}
    result["seconds"] = time.perf_counter() - started
    # VmHWM: this process's own peak (ru_maxrss is inherited from the parent across exec)
    peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")]
    kb = int(peak[0].split()[1]) if peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["rss_mb"] = kb / 1024
    open(out, "w").write(json.dumps(result))
    """
)
THREE_YEARS_US = 3 * 365 * 86_400 * 1_000_000
START_US = 1_700_000_000 * 1_000_000


def sessions(n: int, seed: int, start: int = 0) -> pa.Table:
    """``n`` synthetic sessions in SESSIONS_SCHEMA (ids from ``start``)."""
    rng = np.random.default_rng(seed)
    created = START_US + np.sort(rng.integers(0, THREE_YEARS_US, n))
    length = rng.integers(60_000_000, 3_600_000_000, n)
    convs = np.array([f"c{c:07d}-0000-4000-8000-000000000000" for c in range(200)])
    text = rng.integers(97, 123, (n, 120), dtype=np.uint8).view("S120").ravel().astype(str)
    ts = pa.timestamp("us", "UTC")
    columns: dict[str, Any] = {
        "conversation_uuid": convs[rng.integers(0, 200, n)],
        "uuid": [
            f"{i:08x}-{r:04x}-4000-8000-{r:012x}"
            for i, r in zip(range(start, start + n), rng.integers(0, 2**16, n), strict=True)
        ],
        "status": pa.nulls(n, pa.string()),
        "type": pa.nulls(n, pa.string()),
    }
    for name in (f.name for f in SESSIONS_SCHEMA if pa.types.is_timestamp(f.type)):
        offset = {
            "ended_at": length,
            "evaluated_at": length + 60_000_000,
            "summary_generated_at": length + 90_000_000,
            "updated_at": length + 120_000_000,
            "fetched_at": length + 200_000_000,
            "last_activity_at": length - 5_000_000,
        }.get(name, 0)
        columns[name] = pa.array(created + offset, pa.int64()).cast(ts)
    for name, value in (
        ("duration", length),
        ("time_to_evaluation", 60_000_000),
        ("time_to_summary", 90_000_000),
        ("idle_before_end", 5_000_000),
    ):
        columns[name] = pa.array(np.broadcast_to(value, n).astype(np.int64)).cast(pa.duration("us"))
    columns["is_open"] = np.zeros(n, dtype=bool)
    columns["summary"] = text
    for name in (
        "agent_uuid",
        "call_uuid",
        "campaign_uuid",
        "listing_uuid",
        "contact_uuid",
        "contact_name",
        "contact_surname",
        "contact_phone_number",
        "contact_email",
    ):
        columns[name] = pa.array(rng.integers(0, 1000, n).astype(str)).cast(pa.string())
    columns["task_uuids"] = pa.array([[] for _ in range(n)], pa.list_(pa.string()))
    columns["task_count"] = np.zeros(n, dtype=np.int64)
    columns["extra"] = pa.nulls(n, pa.string())
    return pa.table({f.name: columns[f.name] for f in SESSIONS_SCHEMA}).cast(SESSIONS_SCHEMA)


def changed(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """Those rows as a later fetch brings them: a new summary, updated and fetched later."""
    part = table.take(pa.array(rows))
    later = pa.scalar(86_400_000_000, pa.duration("us"))
    for name in ("updated_at", "fetched_at"):
        part = part.set_column(
            part.schema.get_field_index(name), name, pc.add(part.column(name), later)
        )
    summary = pa.array(["changed " + s for s in part.column("summary").to_pylist()])
    return part.set_column(part.schema.get_field_index("summary"), "summary", summary)


def run(kind: str, source: Path, root: Path, work: Path) -> dict[str, Any]:
    out = work / "result.json"
    subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(source), str(root), str(out)], check=True
    )
    return json.loads(out.read_text())


def best(kind: str, source: Path, work: Path, base: Path | None, repeat: int) -> dict[str, Any]:
    """Best of ``repeat`` runs, each on a fresh copy of ``base`` (or a new root)."""
    results = []
    for _ in range(repeat):
        root = work / "target"
        shutil.rmtree(root, ignore_errors=True)
        if base is not None:
            shutil.copytree(base, root)
        os.sync()  # the copy's pages on disk before the clock starts: not the step's writes
        results.append(run(kind, source, root, work))
    return min(results, key=lambda r: r["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 held; 100,000 into 900,000")
    parser.add_argument("--sizes", default=None, help="HELD,BASE,APPEND")
    parser.add_argument("--repeat", type=int, default=None, help="best of N (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    held, base, append = (
        (100_000, 900_000, 100_000) if args.quick else (1_000_000, 9_000_000, 1_000_000)
    )
    if args.sizes:
        held, base, append = (int(x) for x in args.sizes.split(","))
    repeat = args.repeat or 2
    print_machine(repeat, args.quick)
    lines, results = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        everything = sessions(held, seed=1)
        pq.write_table(everything, work / "all.parquet")
        rng = np.random.default_rng(2)
        share = max(1, held // 100)
        pq.write_table(
            changed(everything, np.sort(rng.choice(held, share, replace=False))),
            work / "random.parquet",
        )
        pq.write_table(changed(everything, np.arange(held - share, held)), work / "recent.parquet")
        run("store", work / "all.parquet", work / "held", work)  # the root the 1% cases start from
        cases = [
            ("first write", "all", None, held, 1.5),
            ("random 1%", "random", work / "held", share, 2.0),
            ("recent 1%", "recent", work / "held", share, 2.0),
        ]
        for label, name, start, rows, limit in cases:
            store = best("store", work / f"{name}.parquet", work, start, repeat)
            plain = best("plain", work / "all.parquet", work, None, repeat)
            counted = store["rows_new"] + store["rows_changed"]
            if counted != rows:
                raise AssertionError(f"{label}: {counted} rows written, {rows} given")
            results[label] = {"store": store, "plain": plain}
            lines.append(
                (
                    label,
                    f"{rows:,}",
                    f"{store['seconds']:.2f}",
                    f"{plain['seconds']:.2f}",
                    f"{store['seconds'] / plain['seconds']:.2f}x (<= {limit}x)",
                    f"{store['bytes'] / 1e6:.1f}",
                    f"{plain['bytes'] / 1e6:.1f}",
                    f"{store['rss_mb']:.0f}",
                    f"{plain['rss_mb']:.0f}",
                )
            )
        del everything
        pq.write_table(sessions(base, seed=3), work / "base.parquet")
        run("store", work / "base.parquet", work / "base", work)
        pq.write_table(sessions(append, seed=4, start=base), work / "new.parquet")
        store = best("store", work / "new.parquet", work, work / "base", repeat)
        plain = best("plain", work / "new.parquet", work, None, repeat)
        if store["rows_new"] != append:
            raise AssertionError(f"append: {store['rows_new']} new, {append} given")
        results["append"] = {"store": store, "plain": plain}
        lines.append(
            (
                f"append into {base:,}",
                f"{append:,}",
                f"{store['seconds']:.2f}",
                f"{plain['seconds']:.2f}",
                f"{store['seconds'] / plain['seconds']:.2f}x (<= 4.0x)",
                f"{store['bytes'] / 1e6:.1f}",
                f"{plain['bytes'] / 1e6:.1f}",
                f"{store['rss_mb']:.0f}",
                f"{plain['rss_mb']:.0f}",
            )
        )
    print(f"{held:,} sessions held; plain = pq.write_to_dataset of the rows named")
    print_rows(
        (
            "step",
            "rows",
            "store s",
            "plain s",
            "ratio",
            "store MB",
            "plain MB",
            "store RSS MB",
            "plain RSS MB",
        ),
        lines,
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
