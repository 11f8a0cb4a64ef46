"""Benchmark a sync's storage step against rewriting everything, at 1,000,000 sessions held.

Run ``python benchmarks/bench_snapshots.py`` (a few minutes), ``--quick`` for 100,000 sessions,
``--repeat N`` for best-of-N (default 3) and ``--json PATH`` to also write the results.

The held state is built from the simulator's ground truth (``Simulator(sizes="5000x200")``:
200 conversations x 5,000 sessions over 300 days, ``ground_truth()`` + ``mf.sessions_frame``),
not fetched: the storage step is what is measured. Then 1% of the sessions change:

- **recent**: the 1% most recently created sessions get a new ``updated_at`` and ``summary``
  (what a day of real changes looks like: sessions end, get evaluated and summarized within
  hours of starting), fetched a day later;
- **random**: ``Simulator.touch_sessions`` on 1% of every conversation (its open sessions first,
  then closed ones picked at random: changes spread over every month, the worst case for the
  month partitions).

Each measurement runs in a fresh child process (so ``ru_maxrss`` is its own peak resident
memory) on a fresh copy of the held root:

1. **storage step** (``open_root(root).commit(changes)``: the merge with the latest state,
   the comparison, the history file, the rewritten partitions; what ``sync_snapshots`` runs
   after its fetch), for each change pattern;
2. **full reload written**: the whole state after the changes committed to a new root (every
   partition written; what a sync that rewrote everything would cost);
3. **one file**: the same 1,000,000 rows written as a single Parquet file with
   ``pq.write_table`` (zstd): the floor of any rewrite of everything.

Reported: seconds (best of N), bytes written, peak RSS, and rewrite-everything / storage-step
ratios. The storage step must report exactly the changed sessions as changed, and the latest
state afterwards must hold the changed rows; otherwise the run fails.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from _common import parse, print_machine, print_rows, write_json

import mihu_frames as mf
from mihu_frames.root import open_root
from mihu_frames.schema import from_pandas
from mihu_frames.simulator import DATA_END, Simulator


@dataclass(frozen=True)
class Config:
    """Sizes of one run."""

    conversations: int
    sessions_per_conversation: int
    changed_share: float
    repeat: int

    @property
    def sessions(self) -> int:
        return self.conversations * self.sessions_per_conversation


FULL = Config(200, 5000, 0.01, 3)
QUICK = Config(40, 2500, 0.01, 2)

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import pyarrow.parquet as pq

    mode, root, source = sys.argv[1:4]
    table = pq.read_table(source)
    start = time.perf_counter()
    if mode == "one file":
        pq.write_table(table, root, compression="zstd")
        seconds = time.perf_counter() - start
        result = {"bytes": __import__("os").path.getsize(root), "files": 1}
    else:
        from mihu_frames.root import open_root
        report = open_root(root, create=True).commit(table)
        seconds = time.perf_counter() - start
        result = {
            "bytes": report.bytes_written,
            "files": len(report.files_written),
            "rows_changed": report.rows_changed,
            "rows_new": report.rows_new,
            "partitions": len(report.partitions_rewritten),
        }
    result["seconds"] = seconds
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))
    """
)


@dataclass
class Row:
    name: str
    seconds: float
    bytes: int
    peak_rss: int
    files: int
    note: str = ""


def child(mode: str, root: Path, source: Path) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(root), str(source)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if result.returncode:
        raise RuntimeError(f"{mode} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def best(cfg: Config, workdir: Path, mode: str, source: Path, held: Path | None) -> dict[str, Any]:
    """Best of ``cfg.repeat`` runs, each on a fresh copy of ``held`` (or a new root/file)."""
    runs = []
    for i in range(cfg.repeat):
        target = workdir / f"run-{mode.replace(' ', '-')}-{i}"
        if held is not None:
            shutil.copytree(held, target)
        elif mode == "one file":
            target = target.with_suffix(".parquet")
        runs.append(child(mode, target, source))
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return min(runs, key=lambda r: r["seconds"])


def build(cfg: Config, workdir: Path) -> dict[str, Any]:
    """The held state, the two change sets and the full reload, as Parquet files."""
    started = time.perf_counter()
    sim = Simulator(seed=101, sizes=[cfg.sessions_per_conversation] * cfg.conversations)
    fetched = DATA_END + timedelta(hours=1)
    frame = mf.sessions_frame(sim.ground_truth(), fetched_at=fetched)
    held = from_pandas(frame)
    pq.write_table(held, workdir / "held.parquet")
    n_changed = round(cfg.sessions * cfg.changed_share)
    later = fetched + timedelta(days=1)

    # recent: the most recently created sessions change
    recent = frame.loc[frame["created_at"].nlargest(n_changed).index].copy()
    del frame
    recent["updated_at"] = pd.Timestamp(later)
    recent["summary"] = "summarized a day later"
    recent["fetched_at"] = pd.Timestamp(later)
    pq.write_table(from_pandas(recent), workdir / "recent.parquet")

    # random: the simulator's own touches, 1% of every conversation
    per_conversation = round(cfg.sessions_per_conversation * cfg.changed_share)
    touched: set[str] = set()
    for conversation in sim.conversation_uuids:
        touched.update(sim.touch_sessions(conversation, per_conversation))
    truth = sim.ground_truth()
    random = mf.sessions_frame([s for s in truth if s["uuid"] in touched], fetched_at=later)
    pq.write_table(from_pandas(random), workdir / "random.parquet")
    reload = from_pandas(mf.sessions_frame(truth, fetched_at=later))
    pq.write_table(reload, workdir / "reload.parquet")

    root = workdir / "held-root"
    report = open_root(root, create=True).commit(held)
    return {
        "held_rows": held.num_rows,
        "changed_rows": n_changed,
        "random_rows": len(random),
        "held_bytes": sum(p.stat().st_size for p in root.rglob("*.parquet")),
        "held_partitions": len(report.partitions_rewritten),
        "build_seconds": time.perf_counter() - started,
    }


def build_and_check(cfg: Config, workdir: Path) -> dict[str, Any]:
    info = build(cfg, workdir)
    check(workdir, "recent", info["changed_rows"])
    check(workdir, "random", info["random_rows"])
    return info


def check(workdir: Path, source: str, changed: int) -> None:
    """Commit once more outside the timing and check the latest state holds the changes."""
    root = workdir / "check-root"
    shutil.copytree(workdir / "held-root", root)
    table = pq.read_table(workdir / f"{source}.parquet")
    report = open_root(root).commit(table)
    if report.rows_changed != changed or report.rows_new:
        raise AssertionError(f"{source}: {report.rows_changed} changed, {report.rows_new} new")
    latest = mf.read_snapshots(root, columns=["uuid", "updated_at"])
    if len(latest) != pq.read_metadata(workdir / "held.parquet").num_rows:
        raise AssertionError(f"{source}: {len(latest)} sessions held")
    got = latest.set_index("uuid")["updated_at"]
    want = table.column("updated_at").to_pandas()
    got = got.loc[table.column("uuid").to_pylist()].to_numpy()
    if not np.array_equal(got, want.to_numpy()):
        raise AssertionError(f"{source}: the latest state does not hold the changes")
    shutil.rmtree(root)


def main(argv: list[str] | None = None) -> int:
    cfg, args = parse(__doc__, FULL, QUICK, argv, "100,000 sessions")
    started = time.perf_counter()
    print_machine(cfg.repeat, args.quick)
    with tempfile.TemporaryDirectory(prefix="mihu-bench-snapshots-") as tmp:
        workdir = Path(tmp)
        # The data is built and checked in a child process: this one stays small, so the
        # measuring children's ru_maxrss (kept across fork + exec) is their own.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            info = pool.submit(build_and_check, cfg, workdir).result()
        print(
            f"{info['held_rows']:,} sessions held ({cfg.conversations} conversations) in "
            f"{info['held_partitions']} month partitions, {info['held_bytes'] / 1e6:.1f} MB; "
            f"{info['changed_rows']:,} changed ({cfg.changed_share:.0%}); "
            f"built in {info['build_seconds']:.1f} s",
            flush=True,
        )
        held = workdir / "held-root"
        rows = []
        for source, label in (("recent", "recent sessions"), ("random", "random sessions")):
            r = best(cfg, workdir, "commit", workdir / f"{source}.parquet", held)
            rows.append(
                Row(
                    f"storage step, 1% changed ({label})",
                    r["seconds"],
                    r["bytes"],
                    r["peak_rss"],
                    r["files"],
                    f"{r['partitions']} partitions rewritten",
                )
            )
        r = best(cfg, workdir, "commit", workdir / "reload.parquet", None)
        rows.append(
            Row(
                "full reload written (new root)",
                r["seconds"],
                r["bytes"],
                r["peak_rss"],
                r["files"],
            )
        )
        r = best(cfg, workdir, "one file", workdir / "reload.parquet", None)
        rows.append(
            Row("full reload as one Parquet file", r["seconds"], r["bytes"], r["peak_rss"], 1)
        )
    print()
    baseline = rows[2]
    header = ["measurement", "seconds", "MB written", "peak RSS MB", "files", "time saved", "note"]
    lines = [
        [
            row.name,
            f"{row.seconds:.3f}",
            f"{row.bytes / 1e6:.1f}",
            f"{row.peak_rss / 1e6:.0f}",
            str(row.files),
            f"{baseline.seconds / row.seconds:.1f}x",
            row.note,
        ]
        for row in rows
    ]
    print_rows(header, lines)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json is not None:
        write_json(
            args.json,
            asdict(cfg),
            args.quick,
            info=info,
            rows=[asdict(r) for r in rows],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
