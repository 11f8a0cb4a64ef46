"""Scale and memory: 1,000,000 sessions (10,000 pages) from the simulator.

Run ``python benchmarks/bench_scale.py`` (``--sessions 200000`` for a smaller run). The
simulator runs in its own process; each load runs in a fresh child process so that its peak
resident memory (``ru_maxrss``) belongs to that load alone:

- ``cold``: an empty cache; every page is fetched, decoded and stored;
- ``warm pages``: the page cache is warm, the stored whole-load result is dropped first, so
  every page is read back from requests-cache and decoded again;
- ``warm``: the cache as a second identical load finds it (the stored result).

For each: wall seconds, pages per second, peak RSS, the frame's ``memory_usage(deep=True)``
and their ratio (target: peak RSS under 3x the frame).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from mihu_frames.simulator import spawn

CHILD = textwrap.dedent(
    """
    import json, resource, sqlite3, sys, time
    from contextlib import closing
    import mihu_frames as mf

    base_url, token, cache, mode, conversations = sys.argv[1:6]
    conversations = conversations.split(",")
    if mode == "warm pages":
        with closing(sqlite3.connect(cache)) as db:
            db.execute("delete from mihu_frames_loads")
            db.commit()
    client = mf.MihuClient(base_url, token=token, cache=cache, timeout=120)
    start = time.perf_counter()
    df = client.sessions(conversations, progress=False)
    seconds = time.perf_counter() - start
    client.close()
    attrs = df.attrs["mihu_frames"]
    print(json.dumps({
        "rows": len(df), "pages": attrs["pages"], "requests": attrs["requests"],
        "cache_hits": attrs["cache_hits"], "seconds": seconds,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "frame_bytes": int(df.memory_usage(deep=True).sum()),
    }))
    """
)


def _load(base_url: str, token: str, cache: Path, mode: str, conversations: list[str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, base_url, token, str(cache), mode, ",".join(conversations)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    """Run the scale benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--per-conversation", type=int, default=10_000)
    args = parser.parse_args(argv)
    count = max(1, args.sessions // args.per_conversation)
    sizes = [args.per_conversation] * count
    print(f"{count} conversations x {args.per_conversation:,} sessions, pages of 100")
    with spawn(sizes=sizes, seed=1) as sim, tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.sqlite"
        rows = []
        for mode in ("cold", "warm pages", "warm"):
            result = _load(sim.base_url, sim.token, cache, mode, sim.conversation_uuids)
            rows.append((mode, result))
            print(f"  {mode}: done in {result['seconds']:.1f} s", flush=True)
    print()
    header = (
        f"{'load':<11} | {'sessions':>9} | {'requests':>8} | {'seconds':>7} | {'pages/s':>7} | "
        f"{'peak RSS':>8} | {'frame':>7} | {'RSS/frame':>9} | target"
    )
    print(header)
    print("-" * len(header))
    for mode, r in rows:
        ratio = r["peak_rss"] / r["frame_bytes"]
        print(
            f"{mode:<11} | {r['rows']:>9,} | {r['requests']:>8,} | {r['seconds']:>7.2f} | "
            f"{r['pages'] / r['seconds']:>7,.0f} | {r['peak_rss'] / 2**20:>6,.0f}MB | "
            f"{r['frame_bytes'] / 2**20:>5,.0f}MB | {ratio:>8.2f}x | "
            f"{'< 3x ' + ('met' if ratio < 3 else 'MISSED')}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
