"""Benchmark the statistics: in memory (pandas), and over a snapshot root of 1M and 10M sessions.

Run ``python benchmarks/bench_stats.py`` (``--quick`` by default: 200,000 sessions, a few
seconds of work), ``--sessions 1000000``, or ``--full`` for 1M and 10M (the 10M root takes a
few minutes to generate; it is kept in ``--data`` for the next run). Each measurement runs in a
child process, which reports its wall time and peak RSS:

- ``root``: ``mf.session_stats(root, by="agent_uuid")`` and the others on the root's files
  (DuckDB through :func:`mihu_frames.engines.latest_dataset`, never a frame);
- ``read+pandas``: what a user did before: ``mf.read_snapshots(root)`` then the pandas
  statistic (time and memory of both), on roots up to ``--pandas-limit`` sessions;
- ``polars``: the same statistic on ``pl.scan_parquet(root/sessions)`` (``--polars``).

Targets (issue 20): on 10M, each statistic over the root under 1.5 GB peak RSS and at most about
10x its time on 1M; on 1M, the root no slower than read+pandas. ``--frame`` also times the
pandas statistics on a generated in-memory frame (target: under 2 s per call for 1M).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames import schema
from mihu_frames.store import LATEST, open_root

SECOND = 1_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
TARGET_SECONDS = 2.0
RSS_LIMIT_MB = 1500
STATISTICS = {
    "session_stats(by=agent_uuid)": "session_stats",
    "activity(W, Europe/Istanbul)": "activity",
    "hourly_profile()": "hourly_profile",
}


def session_table(
    n: int,
    *,
    start: str = "2024-01-01",
    days: int = 90,
    agents: int = 50,
    conversations: int = 200,
    seed: int = 0,
    first_id: int = 0,
) -> pa.Table:
    """``n`` sessions in ``SESSIONS_SCHEMA`` started over ``days`` days from ``start``:
    log-normal durations (seconds to hours), 10 % open, 0-4 tasks each."""
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp(start, tz="UTC").value // 1000)
    started = t0 + rng.integers(0, days * DAY, size=n)
    duration = np.exp(rng.normal(np.log(5 * 60), 1.5, size=n)).astype(np.int64) * SECOND
    is_open = rng.random(n) < 0.1
    ended = started + duration
    fetched = np.where(is_open, started + rng.integers(0, 2 * HOUR, size=n), ended + HOUR)
    last_activity = started + (duration * rng.random(n)).astype(np.int64)
    evaluated = ~is_open & (rng.random(n) < 0.6)
    summarized = ~is_open & (rng.random(n) < 0.5)

    def ts(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
        return pa.array(values, type=pa.int64(), mask=mask).cast(pa.timestamp("us", tz="UTC"))

    def td(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
        return pa.array(values, type=pa.int64(), mask=mask).cast(pa.duration("us"))

    def pool(prefix: str, size: int) -> pa.Array:
        return pa.array([f"{prefix}-{i:06d}" for i in range(size)], type=pa.string())

    agent_pool = pool("agent", agents)
    conversation_pool = pool("conversation", conversations)
    task_pool = pool("task", 1000)
    task_count = rng.integers(0, 5, size=n)
    offsets = np.concatenate(([0], np.cumsum(task_count))).astype(np.int32)
    tasks = task_pool.take(pa.array(rng.integers(0, 1000, size=int(offsets[-1]))))
    nulls = pa.nulls(n, type=pa.string())
    ids = np.arange(first_id, first_id + n).astype(str).astype(object)
    columns = {
        "conversation_uuid": conversation_pool.take(
            pa.array(rng.integers(0, conversations, size=n))
        ),
        "uuid": pc.binary_join_element_wise("s-", pa.array(ids, pa.string()), ""),
        "status": pa.array(np.where(is_open, "active", "completed").astype(object)),
        "type": pa.array(np.where(rng.random(n) < 0.5, "text", "voice").astype(object)),
        "started_at": ts(started),
        "ended_at": ts(ended, is_open),
        "last_activity_at": ts(last_activity),
        "evaluated_at": ts(ended + 60 * SECOND, ~evaluated),
        "summary_generated_at": ts(ended + 90 * SECOND, ~summarized),
        "created_at": ts(started),
        "updated_at": ts(np.where(is_open, last_activity, ended)),
        "duration": td(duration, is_open),
        "time_to_evaluation": td(np.full(n, 60 * SECOND), ~evaluated),
        "time_to_summary": td(np.full(n, 90 * SECOND), ~summarized),
        "idle_before_end": td(ended - last_activity, is_open),
        "is_open": pa.array(is_open),
        "summary": nulls,
        "agent_uuid": agent_pool.take(pa.array(rng.integers(0, agents, size=n))),
        "call_uuid": nulls,
        "campaign_uuid": nulls,
        "listing_uuid": nulls,
        **{f"contact_{name}": nulls for name in schema.CONTACT_FIELDS},
        "task_uuids": pa.ListArray.from_arrays(pa.array(offsets), tasks),
        "task_count": pa.array(task_count, type=pa.int64()),
        "extra": nulls,
        "fetched_at": ts(fetched),
    }
    return pa.table(columns, schema=schema.SESSIONS_SCHEMA)


def generate_sessions(n: int, *, agents: int = 50, days: int = 90, seed: int = 0) -> pd.DataFrame:
    """A sessions frame of ``n`` rows with the exact schema (see :func:`session_table`)."""
    return schema.to_pandas(session_table(n, agents=agents, days=days, seed=seed))


def generate_root(path: Path, n: int, *, months: int = 36, seed: int = 0) -> Path:
    """A snapshot root of ``n`` sessions, written month by month by the store (one commit
    each), from 2023-01 on, 2,000 conversations, 200 agents. Kept when it already exists."""
    done = path.with_name(f"{path.name}.complete")  # beside it: a root holds only its tables
    if done.exists():
        return path
    shutil.rmtree(path, ignore_errors=True)  # a run cut short: start again
    path.parent.mkdir(parents=True, exist_ok=True)
    store = open_root(path, create=True)
    first = pd.Timestamp("2023-01-01", tz="UTC")
    written = 0
    for m in range(months):
        start = first + pd.DateOffset(months=m)
        end = first + pd.DateOffset(months=m + 1)
        count = n * (m + 1) // months - written
        table = session_table(
            count,
            start=str(start.date()),
            days=(end - start).days,
            agents=200,
            conversations=2000,
            seed=seed + m,
            first_id=written,
        )
        # the library's own storage step: a Delta root, each month one commit (new sessions
        # only: an append to both tables)
        store.commit(table)
        written += count
    done.touch()
    return path


# --------------------------------------------------------------------------- one measurement


def _call(statistic: str, source: object) -> object:
    import mihu_frames as mf

    if statistic == "session_stats":
        return mf.session_stats(source, by="agent_uuid")
    if statistic == "activity":
        return mf.activity(source, freq="W", tz="Europe/Istanbul")
    return mf.hourly_profile(source)


def child(statistic: str, engine: str, root: str) -> None:
    """Run one statistic on one engine; print seconds and peak RSS (MB) as JSON."""
    import mihu_frames as mf

    start = time.perf_counter()
    if engine == "root":
        _call(statistic, root)
    elif engine == "read+pandas":
        _call(statistic, mf.read_snapshots(root))
    elif engine == "polars":
        import polars as pl

        _call(statistic, pl.scan_delta(f"{root}/{LATEST}"))
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "rss_mb": rss}))


def measure(statistic: str, engine: str, root: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", statistic, engine, str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        return {"seconds": float("nan"), "rss_mb": float("nan"), "error": out.stderr[-300:]}
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --------------------------------------------------------------------------- in memory


def best_of(func: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def frame_benchmark(n: int, repeat: int) -> None:
    from mihu_frames.report import summary_text
    from mihu_frames.stats import activity, session_stats

    start = time.perf_counter()
    df = generate_sessions(n)
    print(f"generated a frame of {len(df):,} sessions in {time.perf_counter() - start:.1f} s")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("session_stats(df)", lambda: session_stats(df)),
        ('session_stats(df, by="agent_uuid")', lambda: session_stats(df, by="agent_uuid")),
        ('activity(df, "1D")', lambda: activity(df, "1D")),
        ('activity(df, "1h")', lambda: activity(df, "1h")),
        ('activity(df, "1D", by="agent_uuid")', lambda: activity(df, "1D", by="agent_uuid")),
        ('activity(df, "W", tz="Europe/Berlin")', lambda: activity(df, "W", tz="Europe/Berlin")),
        ("summary_text(df)", lambda: summary_text(df)),
    ]
    width = max(len(name) for name, _ in cases)
    print(f"{'call':<{width}}  {'seconds':>8}  target < {TARGET_SECONDS:g} s")
    for name, func in cases:
        seconds = best_of(func, repeat)
        verdict = "ok" if seconds < TARGET_SECONDS else "SLOW"
        print(f"{name:<{width}}  {seconds:8.3f}  {verdict}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="200,000 sessions (the default)")
    parser.add_argument("--sessions", type=int, nargs="+", default=None, help="root sizes")
    parser.add_argument("--full", action="store_true", help="1M and 10M sessions")
    parser.add_argument("--data", type=Path, default=Path("/tmp/mihu_frames_bench"))
    parser.add_argument("--pandas-limit", type=int, default=2_000_000)
    parser.add_argument("--polars", action="store_true", help="also Polars' scan_parquet")
    parser.add_argument("--frame", action="store_true", help="also the in-memory benchmark")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return
    sizes = args.sessions or ([1_000_000, 10_000_000] if args.full else [200_000])
    if args.frame:
        frame_benchmark(min(sizes), args.repeat)
    engines = ["root", "read+pandas"] + (["polars"] if args.polars else [])
    rows = []
    for n in sizes:
        start = time.perf_counter()
        root = generate_root(args.data / f"root_{n}", n)
        print(f"root of {n:,} sessions ready in {time.perf_counter() - start:.1f} s: {root}")
        for label, statistic in STATISTICS.items():
            for engine in engines:
                if engine == "read+pandas" and n > args.pandas_limit:
                    continue
                result = measure(statistic, engine, root)
                rows.append({"sessions": n, "statistic": label, "engine": engine, **result})
                print(
                    f"{n:>11,}  {label:<30} {engine:<12} {result['seconds']:8.2f} s "
                    f"{result['rss_mb']:8.0f} MB"
                    + (f"  {result.get('error')}" if "error" in result else ""),
                    flush=True,
                )
    print("\n| sessions | statistic | engine | seconds | peak RSS (MB) |")
    print("| ---: | --- | --- | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['sessions']:,} | `{row['statistic']}` | {row['engine']} | "
            f"{row['seconds']:.2f} | {row['rss_mb']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
