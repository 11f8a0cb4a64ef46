"""Benchmark loading the last week of a long history (``since=``) against a full load.

Run ``python benchmarks/bench_since.py`` (under a minute), ``--quick`` for a small smoke run,
``--repeat N`` for best-of-N (default 3) and ``--json PATH`` to also write the results. Both loads
run in the same process, one after the other in each repetition, against the same simulator
(``mihu_frames.simulator.spawn``: its own process, 5 ms of latency per request), so the ratios
hold on a busy machine even when the absolute seconds do not.

The simulator's history spans 300 days (``BASE_INSTANT`` to ``DATA_END``). Two accounts:

- **many conversations**: 20 conversations x 2,000 sessions (400 pages of 100): a week is
  about 47 sessions per conversation, one page each;
- **few big ones**: 2 conversations x 20,000 sessions (400 pages): a week is about 470 sessions
  per conversation, five pages read one after the other (the fifth also ends the read).

For each: **full load** (``client.sessions(conversations)``, every page, fresh: no cache) and
**last week** (``client.sessions(conversations, since=DATA_END - 7 days)``: newest first, stopping
at the first page older than the week; windowed loads are never cached). Ratios are full / week
(higher: the window saves more). The week's rows must be exactly the full load's rows started in
the week, and its requests must stay within the bound (pages holding the week + one per
conversation); otherwise the run fails. Targets: requests at least 10x fewer, seconds at least
5x fewer.
"""

from __future__ import annotations

import gc
import math
import sys
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import pandas as pd
from _common import parse, print_machine, print_rows, write_json

import mihu_frames as mf
from mihu_frames.simulator import DATA_END, spawn

PER_PAGE = 100
MAX_WORKERS = 8
LATENCY = 0.005
SINCE = DATA_END - timedelta(days=7)


@dataclass(frozen=True)
class Config:
    """The accounts of one run: (name, conversations, sessions each), and the repetitions."""

    accounts: tuple[tuple[str, int, int], ...]
    repeat: int


FULL = Config((("many conversations", 20, 2000), ("few big ones", 2, 20000)), 3)
QUICK = Config((("many conversations", 10, 1000), ("few big ones", 2, 5000)), 2)


@dataclass
class Measure:
    account: str
    load: str
    requests: int
    seconds: float
    rows: int


def best(sim: Any, func: Any, repeat: int) -> tuple[float, int, pd.DataFrame]:
    """Best seconds of ``repeat`` runs, the requests of one run, and the last frame."""
    seconds, requests, df = math.inf, 0, None
    for _ in range(repeat):
        gc.collect()
        before = sim.request_count
        started = time.perf_counter()
        df = func()
        seconds = min(seconds, time.perf_counter() - started)
        requests = sim.request_count - before
    assert df is not None
    return seconds, requests, df


def check(full: pd.DataFrame, week: pd.DataFrame, requests: int, conversations: int) -> None:
    """The week is the full load cut to the week, at the bound's cost."""
    cut = full[full["started_at"] >= SINCE]
    if sorted(week["uuid"]) != sorted(cut["uuid"]) or len(week) == 0:
        raise SystemExit(f"wrong rows: {len(week)} in the week's load, {len(cut)} in the full one")
    per = cut.groupby("conversation_uuid", observed=True).size()
    holding = sum(math.ceil(n / PER_PAGE) for n in per)
    if requests > holding + conversations:
        raise SystemExit(f"{requests} requests for a week held on {holding} pages")


def run_account(name: str, count: int, size: int, repeat: int) -> list[Measure]:
    with spawn(seed=5, sizes=[size] * count, latency=LATENCY) as sim:
        sim.generate_all()
        ids = list(sim.conversation_uuids)
        client = mf.MihuClient(sim.base_url, token=sim.token, cache=None, max_workers=MAX_WORKERS)
        with client:
            client.sessions(ids[:1], progress=False)  # warm: connections, imports
            full_s, full_r, full = best(sim, lambda: client.sessions(ids, progress=False), repeat)
            week_s, week_r, week = best(
                sim, lambda: client.sessions(ids, since=SINCE, progress=False), repeat
            )
    check(full, week, week_r, count)
    return [
        Measure(name, f"full load ({count} x {size:,})", full_r, full_s, len(full)),
        Measure(name, "last week (since=)", week_r, week_s, len(week)),
    ]


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(__doc__ or "", FULL, QUICK, argv, "small accounts (a smoke run)")
    print_machine(cfg.repeat, args.quick)
    print(
        f"window: since={SINCE.isoformat()} (the last 7 of 300 days); {LATENCY * 1000:.0f} ms "
        f"per request, {MAX_WORKERS} workers, {PER_PAGE} per page"
    )
    measures: list[Measure] = []
    for name, count, size in cfg.accounts:
        measures += run_account(name, count, size, cfg.repeat)
    header = ("account", "load", "rows", "requests", "seconds", "requests ratio", "seconds ratio")
    lines, results, missed = [], [], []
    for full, week in zip(measures[::2], measures[1::2], strict=True):
        request_ratio = full.requests / week.requests
        time_ratio = full.seconds / week.seconds
        for m in (full, week):
            is_week = m is week
            lines.append(
                (
                    m.account,
                    m.load,
                    f"{m.rows:,}",
                    f"{m.requests:,}",
                    f"{m.seconds:.3f}",
                    f"{request_ratio:.1f}x" if is_week else "",
                    f"{time_ratio:.1f}x" if is_week else "",
                )
            )
        results.append(
            {
                "full": asdict(full),
                "week": asdict(week),
                "requests_ratio": request_ratio,
                "seconds_ratio": time_ratio,
            }
        )
        if request_ratio < 10:
            missed.append(f"{full.account}: requests {request_ratio:.1f}x < 10x")
        if time_ratio < 5:
            missed.append(f"{full.account}: seconds {time_ratio:.1f}x < 5x")
    print_rows(header, lines)
    for line in missed:
        print(f"MISSED {line}")
    if args.json:
        write_json(args.json, asdict(cfg), args.quick, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
