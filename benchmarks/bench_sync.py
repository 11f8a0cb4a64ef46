"""Benchmark a daily incremental sync against a full reload, in requests and seconds.

Run ``python benchmarks/bench_sync.py`` (about a minute), ``--quick`` for a small smoke run,
``--repeat N`` for best-of-N (default 3) and ``--json PATH`` to also write the results. Both sides
run in the same process, one after the other in each repetition, against the same simulator, so
the ratios hold on a busy machine even when the absolute seconds do not.

The simulator serves 200 conversations x 500 sessions (1,000 pages of 100) with 5 ms of latency
per request, from its own process (``mihu_frames.simulator.spawn``, whose control channel lets
the benchmark change its data), so the client never shares the server's GIL. Steps:

1. **first sync**: ``sync_snapshots`` into an empty root: a full load of every conversation
   and one snapshot. Reported for scale; not compared.
2. **daily sync**: 1% of every conversation's sessions are touched (``touch_sessions``: new
   ``updated_at``, some end), then ``sync_snapshots(root, conversations)`` is timed: it reads
   the held state, fetches each conversation newest change first down to the last sync,
   writes the changed rows as a snapshot and reads back the latest state of every session.
3. **full reload**: ``client.sessions(conversations, refresh=True)``: every page, fresh, no
   snapshot I/O: what a team without an incremental sync pays every day.
4. **full sync**: ``sync_snapshots(..., full=True)``, the weekly way to notice deletions: every
   page plus the comparison with the held state.

Each repetition changes 1% again before its daily sync. The cache writes a step leaves running in
the background (its pages, saved after it returned) are waited for before the next step starts,
untimed, as in ``bench_load.py``. Ratios are full reload / daily sync
(requests and seconds: higher means the sync saves more). Targets: requests at least 4x fewer
(one request per conversation instead of five), seconds at least 2x fewer. The daily sync's
latest state must equal the simulator's ground truth (uuid and ``updated_at`` of every
session), and it must report exactly the sessions touched as changed; otherwise the run fails.

5. **sync --all** (a second simulator: 1,000 conversations x 100 sessions): the root is synced
   with ``"all"``; then 1% of the sessions change and 5 new conversations of 150 sessions
   appear, and ``sync_snapshots(root)`` runs again (it lists the account anew). Its requests
   must stay within the bound: the listing's pages, plus one per existing conversation, plus
   the new conversations' pages (``ceil(1005/100) + 1000 + 5 x 2``).

The storage step at 1,000,000 sessions held (seconds, bytes written and peak RSS against
rewriting everything) is measured by ``benchmarks/bench_snapshots.py`` (``make bench`` runs
both).
"""

from __future__ import annotations

import gc
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from _common import parse, print_machine, print_rows, write_json
from deltalake import DeltaTable

import mihu_frames as mf
from mihu_frames.simulator import SpawnedSimulator, spawn
from mihu_frames.sync import sync_snapshots

PER_PAGE = 100
MAX_WORKERS = 8


@dataclass(frozen=True)
class Config:
    """Sizes of one run."""

    conversations: int
    sessions_per_conversation: int
    latency: float
    changed_share: float
    repeat: int

    @property
    def pages(self) -> int:
        return self.conversations * -(-self.sessions_per_conversation // PER_PAGE)

    @property
    def touched_per_conversation(self) -> int:
        return max(1, round(self.sessions_per_conversation * self.changed_share))


FULL = Config(200, 500, 0.005, 0.01, 3)
QUICK = Config(40, 500, 0.005, 0.01, 2)
#: The account of the "sync --all" run: conversations, sessions each, new ones, their size.
ACCOUNT = (1000, 100, 5, 150)
ACCOUNT_QUICK = (200, 100, 5, 150)


# --------------------------------------------------------------------------- measuring


@dataclass
class Measure:
    """One timed operation."""

    name: str
    requests: int
    seconds: float
    note: str = ""


def timed(
    sim: SpawnedSimulator, func: Any, client: mf.MihuClient | None = None
) -> tuple[float, int, Any]:
    """Seconds, requests the simulator received, and the result of ``func()``.

    The cache writes the previous step left running in the background (``client``'s) are
    waited for first, untimed: they would otherwise slow whichever step comes next.
    """
    if client is not None:
        client.flush_cache()
    gc.collect()
    before = sim.request_count
    started = time.perf_counter()
    result = func()
    seconds = time.perf_counter() - started
    return seconds, sim.request_count - before, result


def check_truth(df: pd.DataFrame, sim: SpawnedSimulator) -> None:
    """The latest state holds every session the simulator serves, at its ``updated_at``."""
    truth = {s["uuid"]: s["updated_at"] for s in sim.ground_truth()}
    got = dict(zip(df["uuid"], df["updated_at"], strict=True))
    if set(got) != set(truth):
        raise AssertionError("the synced latest state has other sessions than the simulator")
    wrong = [u for u, t in truth.items() if got[u] != pd.Timestamp(t)]
    if wrong:
        raise AssertionError(f"{len(wrong)} sessions not in their latest state, e.g. {wrong[0]}")


def run(cfg: Config, workdir: Path) -> tuple[list[Measure], dict[str, Any]]:
    info: dict[str, Any] = {}
    with spawn(
        seed=0, sizes=[cfg.sessions_per_conversation] * cfg.conversations, latency=cfg.latency
    ) as sim:
        conversations = sim.conversation_uuids
        root = workdir / "snapshots"
        client = mf.MihuClient(
            sim.base_url,
            token=sim.token,
            cache=workdir / "cache.sqlite",
            max_workers=MAX_WORKERS,
            retries=5,
        )
        with client:

            def sync(**options: Any) -> pd.DataFrame:
                return sync_snapshots(root, conversations, client=client, progress=False, **options)

            first_s, first_n, first = timed(sim, sync, client)
            info["rows"] = len(first)
            daily: list[tuple[float, int, float]] = []
            reload: list[tuple[float, int]] = []
            for _ in range(cfg.repeat):
                touched = [
                    u
                    for c in conversations
                    for u in sim.touch_sessions(c, cfg.touched_per_conversation)
                ]
                seconds, requests, df = timed(sim, sync, client)
                attrs = df.attrs["mihu_frames"]
                if attrs["rows_changed"] != len(set(touched)) or attrs["rows_new"]:
                    raise AssertionError(f"expected {len(set(touched))} changed rows, got {attrs}")
                daily.append((seconds, requests, attrs["fetch_seconds"]))
                info["daily_attrs"] = {
                    k: attrs[k]
                    for k in ("requests", "rows_changed", "rows_new", "rows_unchanged_seen")
                }
                del df
                seconds, requests, loaded = timed(
                    sim,
                    lambda: client.sessions(
                        conversations, refresh=True, per_page=PER_PAGE, progress=False
                    ),
                    client,
                )
                if len(loaded) != info["rows"]:
                    raise AssertionError("the full reload lost rows")
                reload.append((seconds, requests))
                del loaded
            check_truth(mf.read_snapshots(root), sim)
            full_s, full_n, full = timed(sim, lambda: sync(full=True), client)
            if full.attrs["mihu_frames"]["rows_changed"] or full.attrs["mihu_frames"]["rows_new"]:
                raise AssertionError("a full sync right after a daily sync found changes")
            info["files"] = len(DeltaTable(root / "latest").file_uris())
    best_daily = min(daily)
    best_reload = min(reload)
    measures = [
        Measure("first sync (empty root: full load + write)", first_n, first_s),
        Measure(
            f"daily sync ({cfg.changed_share:.0%} changed)",
            best_daily[1],
            best_daily[0],
            f"{best_daily[2]:.2f} s of it fetching",
        ),
        Measure("full reload (client.sessions, refresh=True)", best_reload[1], best_reload[0]),
        Measure("full sync (full=True: every page + compare)", full_n, full_s),
    ]
    return measures, info


def run_all(account: tuple[int, int, int, int], latency: float, workdir: Path) -> dict[str, Any]:
    """A daily ``sync --all``: its requests against the bound the issue sets."""
    count, size, new, new_size = account
    with spawn(seed=3, sizes=[size] * count, latency=latency) as sim:
        root = workdir / "account"
        with mf.MihuClient(
            sim.base_url, token=sim.token, cache=None, max_workers=MAX_WORKERS
        ) as client:
            first_s, first_n, _ = timed(
                sim, lambda: sync_snapshots(root, "all", client=client, progress=False)
            )
            touched = [u for c in sim.conversation_uuids for u in sim.touch_sessions(c, 1)]
            added = [sim.add_conversation(new_size) for _ in range(new)]
            seconds, requests, df = timed(
                sim, lambda: sync_snapshots(root, client=client, progress=False)
            )
        attrs = df.attrs["mihu_frames"]
        check_truth(mf.read_snapshots(root), sim)
    listing = -(-(count + new) // PER_PAGE)
    bound = listing + count + new * -(-new_size // PER_PAGE)
    if attrs["conversations_new"] != len(added) or attrs["rows_changed"] != len(set(touched)):
        raise AssertionError(f"sync --all reported {attrs}")
    return {
        "conversations": count + new,
        "first_seconds": first_s,
        "first_requests": first_n,
        "seconds": seconds,
        "requests": requests,
        "bound": bound,
        "listing_requests": attrs["listing_requests"],
        "rows_changed": attrs["rows_changed"],
        "rows_new": attrs["rows_new"],
    }


def print_table(measures: list[Measure], baseline: Measure) -> list[dict[str, Any]]:
    header = ["measurement", "requests", "seconds", "requests saved", "time saved", "note"]
    lines = []
    rows = []
    for m in measures:
        request_ratio = baseline.requests / m.requests if m.requests else None
        time_ratio = baseline.seconds / m.seconds if m.seconds else None
        lines.append(
            [
                m.name,
                f"{m.requests:,}",
                f"{m.seconds:.3f}",
                "-" if request_ratio is None else f"{request_ratio:.2f}x",
                "-" if time_ratio is None else f"{time_ratio:.2f}x",
                m.note,
            ]
        )
        rows.append({**asdict(m), "requests_ratio": request_ratio, "seconds_ratio": time_ratio})
    print_rows(header, lines)
    return rows


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(__doc__, FULL, QUICK, argv, "a small smoke run")
    started = time.perf_counter()
    print_machine(cfg.repeat, args.quick)
    print(
        f"{cfg.conversations} conversations x {cfg.sessions_per_conversation} sessions = "
        f"{cfg.pages} pages of {PER_PAGE}, {cfg.latency * 1000:.0f} ms latency, {MAX_WORKERS} "
        f"workers; {cfg.touched_per_conversation} sessions touched per conversation a day",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="mihu-bench-sync-") as tmp:
        measures, info = run(cfg, Path(tmp))
        account = run_all(ACCOUNT_QUICK if args.quick else ACCOUNT, cfg.latency, Path(tmp))
    daily, reload = measures[1], measures[2]
    print()
    rows = print_table(measures, reload)
    print()
    request_ratio = reload.requests / daily.requests
    time_ratio = reload.seconds / daily.seconds
    checks = [
        ("requests >= 4x fewer", request_ratio >= 4),
        ("seconds >= 2x fewer", time_ratio >= 2),
        ("sync --all within its request bound", account["requests"] <= account["bound"]),
    ]
    print(
        f"daily sync: {info['daily_attrs']}; {info['rows']:,} sessions held in "
        f"{info['files']} snapshot files; latest state = ground truth"
    )
    latency_floor = daily.requests * cfg.latency / MAX_WORKERS
    print(f"daily sync latency floor (requests x latency / workers): {latency_floor:.3f} s")
    print(
        f"sync --all, {account['conversations']:,} conversations (5 new, 1% of sessions "
        f"changed): {account['requests']:,} requests (bound {account['bound']:,}: listing "
        f"{account['listing_requests']} + one per existing conversation + the new ones' "
        f"pages), {account['seconds']:.2f} s; {account['rows_changed']:,} rows changed, "
        f"{account['rows_new']:,} new; first sync --all: {account['first_requests']:,} "
        f"requests, {account['first_seconds']:.2f} s"
    )
    missed = [name for name, met in checks if not met]
    total = time.perf_counter() - started
    print(f"total {total:.1f} s; " + (f"MISSED: {', '.join(missed)}" if missed else "all met"))
    if args.json is not None:
        write_json(
            args.json,
            asdict(cfg),
            args.quick,
            rows=rows,
            info=info,
            sync_all=account,
            checks=dict(checks),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
