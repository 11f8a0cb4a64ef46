"""``mihu-frames``: a thin command line over the library (nothing imports this module).

Every command is a library call plus printing: ``fetch`` is :func:`load_sessions` then
:func:`write_snapshot`; ``demo`` does the same against the built-in simulator; ``simulate``
runs the simulator for notebooks and benchmarks.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mihu_frames import background
from mihu_frames._version import __version__
from mihu_frames.errors import MihuError
from mihu_frames.load import load_sessions
from mihu_frames.schema import SORT_BY_VALUES, SORT_DIR_VALUES, STATUS_VALUES, TYPE_VALUES
from mihu_frames.snapshots import write_snapshot


def summary(df: pd.DataFrame, label: str = "loaded") -> str:
    """One line a person reads: rows, conversations, requests, cache hits, median duration."""
    attrs = df.attrs.get("mihu_frames", {})
    median = df["duration"].median() if len(df) else pd.NaT
    median_text = "n/a" if pd.isna(median) else str(pd.Timedelta(median).round("s"))
    parts = [
        f"{label}: {len(df):,} sessions",
        f"{df['conversation_uuid'].nunique():,} conversations",
        f"{attrs.get('requests', 0):,} requests",
        f"{attrs.get('cache_hits', 0):,} cache hits",
        f"{attrs.get('fetch_seconds', 0):.2f} s",
        f"median duration {median_text}",
    ]
    errors = attrs.get("errors") or []
    if errors:
        parts.append(f"{len(errors)} conversation(s) failed")
    return ", ".join(parts)


def _filter_arg(values: list[str] | None) -> str | list[str] | None:
    if not values:
        return None
    return "all" if values == ["all"] else values


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("API and cache")
    group.add_argument("--base-url", help="API base URL (default: MIHU_BASE_URL)")
    group.add_argument("--subdomain", help="instead of --base-url: https://SUBDOMAIN.mihu.ai")
    group.add_argument(
        "--cache", help="requests-cache SQLite file (default: the user cache directory)"
    )
    group.add_argument("--no-cache", action="store_true", help="do not cache responses")
    group.add_argument("--refresh", action="store_true", help="bypass the cache for this run")
    group.add_argument("--offline", action="store_true", help="serve only from the cache")
    group.add_argument("--max-workers", type=int, default=8, help="pages fetched at once")
    group.add_argument("--retries", type=int, default=5, help="retries per page")
    group.add_argument("--timeout", type=float, default=30, help="seconds per request")
    parser.epilog = "The token is read from MIHU_API_TOKEN (never from the command line)."


def _client_options(args: argparse.Namespace) -> dict[str, object]:
    options: dict[str, object] = {
        "base_url": args.base_url,
        "subdomain": args.subdomain,
        "max_workers": args.max_workers,
        "retries": args.retries,
        "timeout": args.timeout,
        "refresh": args.refresh,
        "offline": args.offline,
    }
    if args.no_cache:
        options["cache"] = None
    elif args.cache:
        options["cache"] = args.cache
    return options


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mihu-frames",
        description="Mihu AI conversation sessions as DataFrames and Parquet snapshots.",
    )
    parser.add_argument("--version", action="version", version=f"mihu_frames {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = commands.add_parser(
        "fetch",
        help="load conversations' sessions and write a snapshot",
        description="Load every session of the given conversations and write one Parquet "
        "snapshot under ROOT/sessions/fetched_date=YYYY-MM-DD/.",
    )
    fetch.add_argument("conversations", nargs="+", metavar="CONVERSATION", help="UUIDs")
    fetch.add_argument(
        "--status", nargs="+", choices=[*STATUS_VALUES, "all"], help="filter; several = each"
    )
    fetch.add_argument("--type", nargs="+", choices=[*TYPE_VALUES, "all"], help="filter")
    fetch.add_argument("--sort-by", default="created_at", choices=SORT_BY_VALUES)
    fetch.add_argument("--sort-dir", default="asc", choices=SORT_DIR_VALUES)
    fetch.add_argument("--per-page", type=int, default=100)
    fetch.add_argument("--on-error", default="raise", choices=["raise", "warn", "skip"])
    fetch.add_argument("--root", default="data/snapshots", help="snapshot root")
    fetch.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    _add_client_options(fetch)

    demo = commands.add_parser(
        "demo",
        help="the whole path against the built-in simulator (no token, no network)",
    )
    demo.add_argument("--root", default="data/snapshots", help="snapshot root")
    demo.add_argument(
        "--sizes", default="0,1,99,100,101,250,3000", help="sessions per conversation"
    )
    demo.add_argument("--latency", type=float, default=0.005, help="simulated seconds per request")

    sync = commands.add_parser(
        "sync",
        help="fetch only what changed since the snapshots under ROOT, write it as a snapshot",
        description="For each conversation, fetch the sessions changed since the newest one "
        "held under ROOT (newest change first, stopping at what is held; conversations never "
        "seen get a full load), write the changed and new rows as one snapshot and print a "
        "summary. --full re-reads everything and reports deleted sessions.",
    )
    sync.add_argument("conversations", nargs="+", metavar="CONVERSATION", help="UUIDs")
    sync.add_argument("--root", default="data/snapshots", help="snapshot root")
    sync.add_argument("--full", action="store_true", help="re-read everything (sees deletions)")
    sync.add_argument(
        "--overlap",
        type=float,
        default=300,
        metavar="SECONDS",
        help="re-read this far before the newest update held (default 300)",
    )
    sync.add_argument(
        "--status", nargs="+", choices=[*STATUS_VALUES, "all"], help="filter; several = each"
    )
    sync.add_argument("--type", nargs="+", choices=[*TYPE_VALUES, "all"], help="filter")
    sync.add_argument("--per-page", type=int, default=100)
    sync.add_argument("--on-error", default="raise", choices=["raise", "warn", "skip"])
    sync.add_argument("--pii", choices=["hash"], help="hash contact columns (MIHU_PII_KEY)")
    sync.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    _add_client_options(sync)

    compact = commands.add_parser(
        "compact",
        help="rewrite ROOT's snapshots as one latest-state file per partition",
        description="Replace the snapshot files of each fetched_date= partition under ROOT by "
        "one file holding the latest state of every session in them, atomically: readers get "
        "the same latest state before, during and after.",
    )
    compact.add_argument("root", metavar="ROOT", help="snapshot root")

    stats = commands.add_parser(
        "stats",
        help="duration and activity tables from the latest snapshot state",
        description="Read the latest state of every session under ROOT and print session "
        "statistics, activity per time bucket and the weekday x hour profile.",
    )
    stats.add_argument("root", metavar="ROOT", help="snapshot root")
    stats.add_argument("--by", nargs="+", help="group statistics by these columns")
    stats.add_argument("--freq", default="1D", help="activity bucket (pandas offset: 1D, 1h, W)")
    stats.add_argument("--tz", default="UTC", help="time zone of buckets and the hourly profile")
    stats.add_argument("--plot", metavar="PNG", help="also write the figures to this PNG file")

    commands.add_parser(
        "simulate",
        help="run the simulator (see `mihu-frames simulate --help`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mihu-frames`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:
        from mihu_frames.simulator import main as simulate

        return simulate(argv[1:], prog="mihu-frames simulate")
    args = _build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "fetch":
            return _fetch(args)
        if args.command == "demo":
            return _demo(args)
        if args.command == "stats":
            return _stats(args)
        if args.command == "sync":
            return _sync(args)
        if args.command == "compact":
            return _compact(args)
    except MihuError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1  # pragma: no cover - argparse rejects unknown commands


def _print_errors(df: pd.DataFrame) -> None:
    for error in df.attrs["mihu_frames"]["errors"]:
        print(f"  failed: {error['message']}", file=sys.stderr)


def _fetch(args: argparse.Namespace) -> int:
    df = load_sessions(
        args.conversations,
        status=_filter_arg(args.status),
        type=_filter_arg(args.type),
        sort_by=args.sort_by,
        sort_dir=args.sort_dir,
        per_page=args.per_page,
        on_error=args.on_error,
        progress=args.progress,
        **_client_options(args),
    )
    path = write_snapshot(df, args.root)
    print(summary(df))
    _print_errors(df)
    print(f"snapshot: {path}")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from mihu_frames.sync import sync_snapshots, sync_summary

    options = _client_options(args)
    if options.pop("offline"):
        raise ValueError("a sync reads the API: --offline does not apply")
    options.pop("refresh")  # a sync always reads its pages fresh
    df = sync_snapshots(
        args.root,
        args.conversations,
        full=args.full,
        overlap=args.overlap,
        status=_filter_arg(args.status),
        type=_filter_arg(args.type),
        per_page=args.per_page,
        on_error=args.on_error,
        pii=args.pii,
        progress=args.progress,
        **options,
    )
    print(sync_summary(df))
    _print_errors(df)
    return 0


def _compact(args: argparse.Namespace) -> int:
    from mihu_frames.compaction import compact_snapshots
    from mihu_frames.snapshots import snapshot_files

    if not Path(args.root).exists():
        raise ValueError(f"no snapshot root at {args.root}")
    before = len(snapshot_files(args.root))
    written = compact_snapshots(args.root)
    after = len(snapshot_files(args.root))
    print(f"compacted {before:,} snapshot files into {after:,} ({len(written)} rewritten)")
    for path in written:
        print(f"  {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mihu_frames.simulator import Simulator
    from mihu_frames.snapshots import read_snapshots

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    with Simulator(sizes=sizes, latency=args.latency) as sim, tempfile.TemporaryDirectory() as tmp:
        print(f"simulator: {sim.base_url} ({len(sizes)} conversations, {sum(sizes):,} sessions)")
        options = {
            "base_url": sim.base_url,
            "token": sim.token,
            "cache": Path(tmp) / "demo_cache.sqlite",
            "progress": False,
        }
        cold = load_sessions(sim.conversation_uuids, **options)
        print(summary(cold, "cold load"))
        warm = load_sessions(sim.conversation_uuids, **options)
        print(summary(warm, "cached reload"))
        tagged = load_sessions(sim.conversation_uuids, status="all", **options)
        print(summary(tagged, "by status"))
        counts = tagged["status"].value_counts().to_dict()
        print("  " + ", ".join(f"{k}: {v:,}" for k, v in counts.items()))
        path = write_snapshot(tagged, args.root)
        back = read_snapshots(args.root, conversations=sim.conversation_uuids)
        print(f"snapshot: {path} ({len(back):,} sessions read back)")
        background.flush(options["cache"])  # before the temporary folder goes
    return 0


def _stats(args: argparse.Namespace) -> int:
    from mihu_frames.snapshots import read_snapshots
    from mihu_frames.stats import activity, hourly_profile, session_stats

    df = read_snapshots(args.root)
    by = args.by[0] if args.by and len(args.by) == 1 else args.by
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{len(df):,} sessions in {df['conversation_uuid'].nunique():,} conversations")
        print("\nsession statistics" + (f" by {', '.join(args.by)}" if args.by else ""))
        print(session_stats(df, by=by).to_string())
        print(f"\nactivity per {args.freq} ({args.tz})")
        print(activity(df, freq=args.freq, tz=args.tz).to_string())
        print(f"\nsessions started by weekday and hour ({args.tz})")
        print(hourly_profile(df, tz=args.tz).to_string())
    if args.plot:
        _write_figures(df, args)
        print(f"\nfigures: {args.plot}")
    return 0


def _write_figures(df: pd.DataFrame, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mihu_frames.plots import plot_activity, plot_durations, plot_hourly

    fig, axes = plt.subplots(3, 1, figsize=(11, 13), constrained_layout=True)
    plot_durations(df, by=args.by[0] if args.by else None, ax=axes[0])
    plot_activity(df, freq=args.freq, tz=args.tz, ax=axes[1])
    plot_hourly(df, tz=args.tz, ax=axes[2])
    fig.savefig(args.plot, dpi=110)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
