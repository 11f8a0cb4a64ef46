"""``mihu-frames``: a thin command line over the library (nothing imports this module).

Every command is a library call plus printing. Each command's flags come from the option
declarations in :mod:`mihu_frames.options`, and each command shows only the options it takes.
Failures print one line on stderr, never a traceback: exit code 2 for a usage or API error,
1 when nothing could be loaded, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mihu_frames._version import __version__
from mihu_frames.errors import MihuError
from mihu_frames.options import (
    LISTING_LOAD_OPTIONS,
    SYNC_LOAD_OPTIONS,
    ClientOptions,
    ListingFilters,
    LoadOptions,
    SyncOptions,
    option_fields,
)

#: The client options a command line offers (the token only ever comes from MIHU_API_TOKEN).
CLIENT_FLAGS = ("base_url", "subdomain", "cache", "max_workers", "timeout", "retries")
FETCH_LOAD_FLAGS = (
    "status",
    "type",
    "sort_by",
    "sort_dir",
    "per_page",
    "progress",
    "on_error",
    "refresh",
    "offline",
    "deadline",
)
SYNC_FLAGS = tuple(n for n in SYNC_LOAD_OPTIONS if n != "max_pages")
LISTING_FLAGS = tuple(n for n in LISTING_LOAD_OPTIONS if n != "max_pages")
TOKEN_NOTE = "The API token is read from MIHU_API_TOKEN, never from the command line."


class Failure(Exception):
    """A failure the command line reports in one line (with its exit code)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- flags


def add_flags(
    parser: argparse.ArgumentParser, cls: type, names: Iterable[str] | None, title: str
) -> None:
    """Add the flags of the options ``names`` of dataclass ``cls`` as one argument group."""
    group = parser.add_argument_group(title)
    for f in option_fields(cls, names):
        spec = dict(f.metadata["cli"] or {})
        flag = spec.pop("flag")
        if spec.get("action") == "bool":
            spec["action"] = argparse.BooleanOptionalAction
        spec.setdefault("default", None)
        group.add_argument(flag, dest=f.name, **spec)
        if f.name == "cache":
            group.add_argument(
                "--no-cache", action="store_true", help="do not cache responses (cache=None)"
            )


def given(args: argparse.Namespace, cls: type, names: Iterable[str] | None) -> dict[str, Any]:
    """The options of ``cls`` the user gave on the command line (the library has the defaults)."""
    out: dict[str, Any] = {}
    for f in option_fields(cls, names):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if f.name in ("status", "type"):
            value = _filter_values(value)
        out[f.name] = value
    if cls is ClientOptions and getattr(args, "no_cache", False):
        out["cache"] = None
    return out


def _filter_values(values: list[str]) -> str | list[str]:
    """``--status a --status b,c`` → ``["a", "b", "c"]``; ``all`` alone → ``"all"``."""
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return "all" if items == ["all"] else items


# --------------------------------------------------------------------------- the parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mihu-frames",
        description="Mihu AI conversation sessions as DataFrames and Parquet snapshots.",
        epilog=TOKEN_NOTE,
    )
    parser.add_argument("--version", action="version", version=f"mihu_frames {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    builders = (
        _fetch_parser,
        _sync_parser,
        _conversations_parser,
        _compact_parser,
        _stats_parser,
        _demo_parser,
    )
    for build in builders:
        build(commands)
    commands.add_parser(
        "simulate",
        help="run the built-in simulator (see `mihu-frames simulate --help`)",
        add_help=False,
    )
    return parser


def _fetch_parser(commands: Any) -> None:
    fetch = commands.add_parser(
        "fetch",
        help="load conversations' sessions and write them to a snapshot root",
        description="Load every session of the given conversations and write them to the "
        "snapshot root: ROOT/sessions/ holds the latest state of every session, "
        "ROOT/history/ every version fetched (both plain Parquet; see the README).",
    )
    fetch.epilog = TOKEN_NOTE
    fetch.add_argument("conversations", nargs="*", metavar="CONVERSATION", help="UUIDs")
    fetch.add_argument("--all", action="store_true", help="every conversation of the account")
    fetch.add_argument("--root", default="data/snapshots", help="snapshot root")
    add_flags(fetch, LoadOptions, FETCH_LOAD_FLAGS, "what to load")
    add_flags(fetch, ClientOptions, CLIENT_FLAGS, "API and cache")
    fetch.set_defaults(run=_fetch)


def _sync_parser(commands: Any) -> None:
    sync = commands.add_parser(
        "sync",
        help="fetch only what changed since the snapshots under ROOT, and write it",
        description="For each conversation, fetch the sessions changed since the newest one "
        "held under ROOT (newest change first, stopping at what is held; conversations never "
        "seen get a full load), write the changed and new rows and print a summary. Pages "
        "are always read fresh. --full re-reads everything and reports deleted sessions.",
    )
    sync.epilog = TOKEN_NOTE
    sync.add_argument(
        "conversations",
        nargs="*",
        metavar="CONVERSATION",
        help="UUIDs (none: the root's, when it was synced with --all)",
    )
    sync.add_argument(
        "--all",
        action="store_true",
        help="every conversation of the account, listed now; the root remembers it",
    )
    sync.add_argument("--root", default="data/snapshots", help="snapshot root")
    add_flags(sync, SyncOptions, None, "what to sync")
    add_flags(sync, LoadOptions, SYNC_FLAGS, "what to load")
    add_flags(sync, ClientOptions, CLIENT_FLAGS, "API and cache")
    sync.set_defaults(run=_sync)


def _conversations_parser(commands: Any) -> None:
    listing = commands.add_parser(
        "conversations",
        help="list the account's conversations (a table, or CSV/Parquet with --out)",
        description="List the account's conversations: GET /api/v1/conversations, every page, "
        "with the filters sent to the server. Prints a table, or writes every column to --out.",
    )
    listing.epilog = TOKEN_NOTE
    add_flags(listing, ListingFilters, None, "filters (sent to the server)")
    listing.add_argument("--out", metavar="FILE", help="write all columns to FILE.csv/.parquet")
    add_flags(listing, LoadOptions, LISTING_FLAGS, "how to load")
    add_flags(listing, ClientOptions, CLIENT_FLAGS, "API and cache")
    listing.set_defaults(run=_conversations)


def _compact_parser(commands: Any) -> None:
    compact = commands.add_parser(
        "compact",
        help="rewrite ROOT's history into fewer files, keeping every version",
        description="Rewrite the history under ROOT into one file per fetch date, keeping every "
        "distinct version (identical re-fetches are collapsed). The latest state is not "
        "touched; readers see the same data before, during and after. Versions are only "
        "dropped with --prune-before.",
    )
    compact.add_argument("root", metavar="ROOT", help="snapshot root")
    compact.add_argument(
        "--prune-before",
        metavar="DATE",
        help="also drop the versions superseded before DATE (a session's latest is always kept)",
    )
    compact.set_defaults(run=_compact)


def _stats_parser(commands: Any) -> None:
    stats = commands.add_parser(
        "stats",
        help="a summary of the sessions under ROOT (details behind flags)",
        description="Read the latest state of every session under ROOT and print a short "
        "summary: sessions, period, durations, the busiest day and hour. The flags add the "
        "details: the statistics table, activity per time bucket, the weekday x hour profile.",
    )
    stats.add_argument("root", metavar="ROOT", help="snapshot root")
    stats.add_argument("--table", action="store_true", help="the session statistics table")
    stats.add_argument("--by", action="append", help="group the table by this column")
    stats.add_argument("--activity", action="store_true", help="activity per time bucket")
    stats.add_argument("--freq", default="1D", help="activity bucket (pandas offset: 1D, 1h, W)")
    stats.add_argument(
        "--last", type=int, default=30, metavar="N", help="activity: the last N buckets (30)"
    )
    stats.add_argument("--hourly", action="store_true", help="sessions by weekday and hour")
    stats.add_argument("--all", action="store_true", help="every detail above")
    stats.add_argument("--tz", default="UTC", help="time zone of buckets and the hourly profile")
    stats.add_argument("--plot", metavar="PNG", help="also write the figures to this PNG file")
    stats.set_defaults(run=_stats)


def _demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="the whole path against the built-in simulator (no token, no network)",
    )
    demo.add_argument("--root", default="data/snapshots", help="snapshot root")
    demo.add_argument(
        "--sizes", default="0,1,99,100,101,250,3000", help="sessions per conversation"
    )
    demo.add_argument("--latency", type=float, default=0.005, help="simulated seconds per request")
    demo.set_defaults(run=_demo)


# --------------------------------------------------------------------------- running


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mihu-frames`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["simulate"]:
            from mihu_frames.simulator import main as simulate

            return simulate(argv[1:], prog="mihu-frames simulate")
        args = build_parser().parse_args(argv)
        level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        run: Callable[[argparse.Namespace], int] = args.run
        with warnings.catch_warnings():
            # The library's warnings say what a load left out; the commands print that.
            warnings.simplefilter("ignore", RuntimeWarning)
            return run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except MihuError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:  # OSError: a snapshot root's storage failed
        print(f"error: {exc}", file=sys.stderr)
        return 2


def summary(df: pd.DataFrame, label: str = "loaded") -> str:
    """One line a person reads: rows, conversations, requests, cache hits, median duration."""
    attrs = df.attrs.get("mihu_frames", {})
    from mihu_frames.stats import format_duration

    median = df["duration"].median() if len(df) else pd.NaT
    median_text = "n/a" if pd.isna(median) else format_duration(median)
    asked = len(attrs.get("conversations") or [])
    held = df["conversation_uuid"].nunique()
    conversations = f"{held:,} conversations"
    if asked > held:
        conversations = f"{asked:,} conversations ({asked - held:,} without sessions or failed)"
    parts = [
        f"{label}: {len(df):,} sessions",
        conversations,
        f"{attrs.get('requests', 0):,} requests",
        f"{attrs.get('cache_hits', 0):,} cache hits",
        f"{attrs.get('fetch_seconds', 0):.2f} s",
        f"median duration {median_text}",
    ]
    if attrs.get("rate_limited"):
        parts.append(
            f"{attrs['rate_limited']:,} answered 429 ({attrs.get('waited_seconds', 0):.0f} s "
            "waiting for the rate limit)"
        )
    errors = attrs.get("errors") or []
    if errors:
        parts.append(f"{len(errors)} conversation(s) failed")
    return ", ".join(parts)


def _print_errors(df: pd.DataFrame) -> None:
    for error in df.attrs["mihu_frames"].get("errors") or []:
        print(f"  left out: {error['message']}", file=sys.stderr)


def _fetch(args: argparse.Namespace) -> int:
    from mihu_frames.load import load_sessions
    from mihu_frames.snapshots import write_snapshot

    df = load_sessions(
        _conversations_arg(args, required=True),
        **given(args, LoadOptions, FETCH_LOAD_FLAGS),
        **given(args, ClientOptions, CLIENT_FLAGS),
    )
    print(summary(df))
    _print_errors(df)
    errors = df.attrs["mihu_frames"]["errors"]
    if errors and df.empty:
        raise Failure("nothing loaded: every conversation failed; no snapshot written")
    if df.empty:
        print("no sessions: nothing to write")
        return 0
    path = write_snapshot(df, args.root)
    print(f"snapshot: {_version(path)}" if path else "snapshot: nothing changed since the last one")
    return 0


def _version(path: Any) -> str:
    """The version a write produced, and its commit: ``latest/ version 3 (.../0003.json)``."""
    from mihu_frames.snapshots import snapshot_metadata

    record = snapshot_metadata(path)
    return f"{record['table']}/ version {record['version']} ({path})"


def _sync(args: argparse.Namespace) -> int:
    from mihu_frames.sync import sync_snapshots, sync_summary

    df = sync_snapshots(
        args.root,
        _conversations_arg(args, required=False),
        **given(args, SyncOptions, None),
        **given(args, LoadOptions, SYNC_FLAGS),
        **given(args, ClientOptions, CLIENT_FLAGS),
    )
    print(sync_summary(df))
    _print_errors(df)
    return 0


def _conversations_arg(args: argparse.Namespace, *, required: bool) -> Any:
    """The conversations named on the command line, ``"all"`` for --all, or None."""
    if args.all and args.conversations:
        raise ValueError("pass conversation UUIDs or --all, not both")
    if args.all:
        return "all"
    if not args.conversations and required:
        raise ValueError("name at least one conversation UUID, or pass --all")
    return args.conversations or None


def _conversations(args: argparse.Namespace) -> int:
    from mihu_frames.load import list_conversations

    convs = list_conversations(
        **given(args, ListingFilters, None),
        **given(args, LoadOptions, LISTING_FLAGS),
        **given(args, ClientOptions, CLIENT_FLAGS),
    )
    attrs = convs.attrs["mihu_frames"]
    for error in attrs.get("errors") or []:
        print(f"  left out: {error['message']}", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        if out.suffix.lower() == ".parquet":
            convs.to_parquet(out, index=False)
        elif out.suffix.lower() == ".csv":
            convs.to_csv(out, index=False)
        else:
            raise ValueError(f"--out must end in .csv or .parquet, got {out.name}")
        print(f"{len(convs):,} conversations written to {out}")
        return 0
    shown = ["uuid", "channel", "status", "agent_uuid", "sessions_count", "last_message_at"]
    table = convs[shown].copy()
    table["agent_uuid"] = table["agent_uuid"].str.slice(0, 8)
    table["last_message_at"] = table["last_message_at"].dt.strftime("%Y-%m-%d %H:%M")
    with pd.option_context("display.max_rows", 60, "display.width", 120):
        print(table.to_string(index=False, na_rep="-") if len(table) <= 60 else table)
    print(f"{len(convs):,} conversations, {attrs['requests']:,} requests")
    return 0


def _compact(args: argparse.Namespace) -> int:
    from mihu_frames.compaction import compact_snapshots

    report = compact_snapshots(args.root, prune_before=args.prune_before)
    print(report.summary())
    kept = report.rows_after
    dropped = report.versions_collapsed + report.versions_pruned
    print(
        f"  kept {kept:,} versions; dropped {report.versions_collapsed:,} identical "
        f"re-fetches and {report.versions_pruned:,} superseded before "
        f"{args.prune_before or '(no --prune-before)'}"
        + (f" ({report.sessions_pruned:,} sessions had older versions pruned)" if dropped else "")
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mihu_frames.client import MihuClient
    from mihu_frames.simulator import Simulator
    from mihu_frames.snapshots import read_snapshots, write_snapshot

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    # The wall clock: the snapshot's fetched_date partition and its file name (the write time)
    # then name the same day.
    demo = Simulator(sizes=sizes, latency=args.latency, clock="wall")
    with demo as sim, tempfile.TemporaryDirectory() as tmp:
        print(f"simulator: {sim.base_url} ({len(sizes)} conversations, {sum(sizes):,} sessions)")
        options = {"token": sim.token, "cache": Path(tmp) / "demo_cache.sqlite"}
        with MihuClient(sim.base_url, **options) as client:
            cold = client.sessions(sim.conversation_uuids, progress=False)
            print(summary(cold, "cold load"))
            warm = client.sessions(sim.conversation_uuids, progress=False)
            print(summary(warm, "cached reload"))
            tagged = client.sessions(sim.conversation_uuids, status="all", progress=False)
            print(summary(tagged, "by status"))
            counts = tagged["status"].value_counts()
            print("  " + ", ".join(f"{k}: {v:,}" for k, v in counts[counts > 0].items()))
            client.flush_cache()  # before the temporary folder goes
        path = write_snapshot(tagged, args.root)
        back = read_snapshots(args.root, conversations=sim.conversation_uuids)
        written = _version(path) if path else "nothing changed since the last run's"
        print(f"snapshot: {written} ({len(back):,} sessions read back)")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from mihu_frames.report import activity_text, hourly_text, stats_text, summary_text
    from mihu_frames.snapshots import read_snapshots

    if args.plot:
        _require_matplotlib()
    df = read_snapshots(args.root)
    by = args.by[0] if args.by and len(args.by) == 1 else args.by
    print(summary_text(df, tz=args.tz))
    if args.table or args.by or args.all:
        print("\n" + stats_text(df, by=by, tz=args.tz))
    if args.activity or args.all:
        print("\n" + activity_text(df, args.freq, tz=args.tz, last=args.last))
    if args.hourly or args.all:
        print("\n" + hourly_text(df, tz=args.tz))
    if args.plot:
        _write_figures(df, args)
        print(f"\nfigures: {args.plot}")
    return 0


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise Failure("--plot needs matplotlib: pip install 'mihu_frames[plot]'", code=2) from None


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
