"""Benchmark mihu_frames.stats on a generated frame of one million sessions.

Run ``python benchmarks/bench_stats.py [--sessions N] [--repeat R]``. Prints the best wall time
of each call over ``R`` runs, in seconds. Target: every call under 2 s for 1,000,000 sessions
(``summary_text`` is three of them: session_stats, a daily activity and the hourly profile).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from mihu_frames import schema
from mihu_frames.report import summary_text
from mihu_frames.stats import activity, session_stats

SECOND = 1_000_000
HOUR = 3600 * SECOND
DAY = 24 * HOUR
TARGET_SECONDS = 2.0


def generate_sessions(n: int, *, agents: int = 50, days: int = 90, seed: int = 0) -> pd.DataFrame:
    """A sessions frame of ``n`` rows with the exact schema: ~50 agents over ``days`` days,
    log-normal durations (seconds to hours), 10 % open sessions, 0-4 tasks per session."""
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp("2024-01-01", tz="UTC").value // 1000)
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
    conversation_pool = pool("conversation", 200)
    task_pool = pool("task", 1000)
    task_count = rng.integers(0, 5, size=n)
    offsets = np.concatenate(([0], np.cumsum(task_count))).astype(np.int32)
    tasks = task_pool.take(pa.array(rng.integers(0, 1000, size=int(offsets[-1]))))
    nulls = pa.nulls(n, type=pa.string())
    columns = {
        "conversation_uuid": conversation_pool.take(pa.array(rng.integers(0, 200, size=n))),
        "uuid": pa.array(np.char.add("s-", np.arange(n).astype(str)).astype(object)),
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
    return schema.to_pandas(pa.table(columns, schema=schema.SESSIONS_SCHEMA))


def best_of(func: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    df = generate_sessions(args.sessions)
    print(f"generated {len(df):,} sessions in {time.perf_counter() - start:.1f} s")

    cases: list[tuple[str, Callable[[], object]]] = [
        ("session_stats(df)", lambda: session_stats(df)),
        ('session_stats(df, by="agent_uuid")', lambda: session_stats(df, by="agent_uuid")),
        ('activity(df, "1D")', lambda: activity(df, "1D")),
        ('activity(df, "1h")', lambda: activity(df, "1h")),
        ('activity(df, "1D", tz="Europe/Berlin")', lambda: activity(df, "1D", tz="Europe/Berlin")),
        ('activity(df, "1D", by="agent_uuid")', lambda: activity(df, "1D", by="agent_uuid")),
        ('activity(df, "W", tz="Europe/Berlin")', lambda: activity(df, "W", tz="Europe/Berlin")),
        ('activity(df, "15min")', lambda: activity(df, "15min")),
        ("summary_text(df)", lambda: summary_text(df)),
    ]
    width = max(len(name) for name, _ in cases)
    print(f"{'call':<{width}}  {'seconds':>8}  target < {TARGET_SECONDS:g} s")
    for name, func in cases:
        seconds = best_of(func, args.repeat)
        verdict = "ok" if seconds < TARGET_SECONDS else "SLOW"
        print(f"{name:<{width}}  {seconds:8.3f}  {verdict}")


if __name__ == "__main__":
    main()
