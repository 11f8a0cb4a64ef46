"""``mihu-frames``: a thin command line over the library (nothing imports this module).

Every command is a library call plus printing. Each command's flags come from the option
declarations in :mod:`mihu_frames.options`, and each command shows only the options it takes.
Failures print one line on stderr, never a traceback: exit code 2 for a usage or API error,
1 when nothing could be loaded, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import re
import signal
import sqlite3
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn, cast

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

logger = logging.getLogger("mihu_frames")

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
    "since",
    "until",
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
        if isinstance(value, list):  # a flag taking several values: repeated, or with commas
            value = _filter_values(value, all_alone=cls is LoadOptions)
        out[f.name] = value
    if cls is ClientOptions and getattr(args, "no_cache", False):
        out["cache"] = None
    return out


def _filter_values(values: list[str], *, all_alone: bool = True) -> str | list[str]:
    """``--status a --status b,c`` → ``["a", "b", "c"]``; ``all`` alone → ``"all"`` (for the
    load filters, where it means every value). The library asks once per value."""
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return "all" if all_alone and items == ["all"] else items


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
        "snapshot root: ROOT/latest/ holds the latest state of every session, "
        "ROOT/versions/ the versions it replaced (both Delta Lake tables; see the README).",
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
    """Entry point of the ``mihu-frames`` console script.

    Every failure is one line on stderr (``error: ...``), never a traceback: exit code 2 for
    a usage or API error (a bad flag or value, a ``MihuError``, a file that cannot be read or
    written), 1 when nothing could be loaded or for an unexpected error (``-vv`` logs its
    traceback). Each warning of the library is one line (``warning: ...``). Ctrl-C, however
    often pressed, ends the command at once with ``interrupted`` and exit code 130.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["simulate"]:  # the simulator handles its own signals
        from mihu_frames.simulator import main as simulate

        return simulate(argv[1:], prog="mihu-frames simulate")
    previous = _catch_interrupts()
    try:
        args = build_parser().parse_args(argv)
        level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
        handler = logging.StreamHandler()
        handler.setFormatter(_OneLineFormatter(tracebacks=args.verbose >= 2))
        logging.basicConfig(level=level, handlers=[handler])
        run: Callable[[argparse.Namespace], int] = args.run
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return run(args)
    except KeyboardInterrupt:
        _leave_interrupted()
    except Failure as exc:
        return _error(str(exc), exc.code)
    except MihuError as exc:
        return _error(f"{type(exc).__name__}: {exc}", 2)
    except (ValueError, TypeError, OSError, sqlite3.Error) as exc:
        # Bad values and options, and files that cannot be read or written, say so in one
        # line (FileNotFoundError and NotASnapshotRootError included).
        logger.debug("the command failed", exc_info=True)
        return _error(str(exc) or type(exc).__name__, 2)
    except Exception as exc:  # never a traceback: the log has it with -vv
        logger.debug("the command failed", exc_info=True)
        return _error(f"unexpected {type(exc).__name__}: {exc} (run with -vv for details)", 1)
    finally:
        if previous is not None:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGINT, previous)


class _OneLineFormatter(logging.Formatter):
    """Log records as one line each: a logged exception adds its class and message, not its
    traceback (which ``-vv`` shows)."""

    def __init__(self, *, tracebacks: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if self.tracebacks or not record.exc_info:
            return super().format(record)
        error = record.exc_info[1]
        plain = copy.copy(record)
        plain.exc_info, plain.exc_text, plain.stack_info = None, None, None
        text = super().format(plain)
        if error is not None:
            text += f": {type(error).__name__}: {error}"
        return " ".join(text.split())


def _error(message: str, code: int) -> int:
    print(f"error: {cli_words(message)}", file=sys.stderr)
    return code


# --------------------------------------------------------------------------- Ctrl-C


def _catch_interrupts() -> Any:
    """Make the first Ctrl-C a ``KeyboardInterrupt`` (so the command's ``finally`` blocks
    run: the progress bar ends where it stopped) and any later one leave at once; returns the
    previous handler (None when not on the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    pressed = 0

    def on_interrupt(signum: int, frame: Any) -> None:
        nonlocal pressed
        pressed += 1
        if pressed == 1:
            raise KeyboardInterrupt
        _leave_interrupted()  # again while the first unwinds: no more waiting

    return signal.signal(signal.SIGINT, on_interrupt)


def _leave_interrupted() -> NoReturn:
    """Say ``interrupted`` once and end the process with 130, now.

    Later Ctrl-C are ignored from the first line on, so the message is written once and
    nothing can interrupt the exit. ``os._exit``: the threads still fetching pages or writing
    the cache are not waited for (a cache write cut short loses only that cache entry; the
    cache file and snapshot roots are written atomically).
    """
    with contextlib.suppress(ValueError, TypeError):  # not the main thread
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        os.write(2, b"interrupted\n")
    os._exit(130)


# --------------------------------------------------------------------------- wording


def _flag_rules() -> list[tuple[re.Pattern[str], Any]]:
    """How the library's messages name options (``refetch=True``, ``cache=None``,
    ``base_url=``, ``status='all'``) and what the command line calls them (``--refetch``,
    ``--no-cache``, ``--base-url``, ``--status all``), from the option declarations."""
    rules: list[tuple[re.Pattern[str], Any]] = [
        # The token only ever comes from MIHU_API_TOKEN here.
        (re.compile(r",? or (?:pass )?token=(?=[\s,;:)]|$)"), ""),
        (re.compile(r"\bcache=None\b"), "--no-cache"),
    ]
    for cls in (ClientOptions, LoadOptions, SyncOptions, ListingFilters):
        for f in fields(cls):
            spec = f.metadata.get("cli")
            if not spec:
                continue
            flag, action, name = spec["flag"], spec.get("action"), re.escape(f.name)
            if action in ("store_true", "bool"):
                rules.append((re.compile(rf"\b{name}=True\b"), flag))
                off = f"--no-{flag[2:]}" if action == "bool" else f"no {flag}"
                rules.append((re.compile(rf"\b{name}=False\b"), off))
            rules += [
                (re.compile(rf"\b{name}=None\b"), f"no {flag}"),
                (re.compile(rf"\b{name}='([^']*)'"), lambda m, flag=flag: f"{flag} {m[1]}"),
                (
                    re.compile(rf"\b{name}=\[([^\]]*)\]"),
                    lambda m, flag=flag: f"{flag} " + ",".join(re.findall(r"'([^']*)'", m[1])),
                ),
                (re.compile(rf"\b{name}=(?=[\s,;:)]|$)"), flag),
            ]
    return rules


def cli_words(message: str) -> str:
    """A library message as the command line says it: one line, option names as its flags
    (``pass refetch=True`` → ``pass --refetch``)."""
    text = " ".join(message.split())
    for pattern, flag in _flag_rules():
        text = pattern.sub(flag, text)
    return text


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """Each warning as one line on stderr (``warning: ...``), in the command line's words.

    A load's "left out ..." warnings (``--on-error warn``) are not repeated here: the
    commands list what a load left out themselves, after it.
    """
    text = cli_words(str(message))
    if not text.startswith("left out "):
        print(f"warning: {text}", file=sys.stderr)


def summary(df: pd.DataFrame, label: str = "loaded") -> str:
    """One line a person reads: rows, conversations, requests, cache hits, median duration."""
    attrs = df.attrs.get("mihu_frames", {})
    from mihu_frames.stats import format_duration

    median = df["duration"].median() if len(df) else pd.NaT
    # a timedelta column's median is a Timedelta; pandas-stubs type every median as float
    median_text = "n/a" if pd.isna(median) else format_duration(cast(pd.Timedelta, median))
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
        print(f"  left out: {cli_words(error['message'])}", file=sys.stderr)


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
    _print_errors(convs)
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
        options: dict[str, Any] = {"token": sim.token, "cache": Path(tmp) / "demo_cache.sqlite"}
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
    from mihu_frames.engines import latest_dataset
    from mihu_frames.report import activity_text, hourly_text, stats_text, summary_text
    from mihu_frames.stats import check_freq, check_tz

    # Every flag is checked before anything is read or printed: an error is the only output.
    check_tz(args.tz, "--tz")
    check_freq(args.freq, "--freq")
    if args.plot:
        _require_matplotlib()
    # Computed on the root's files (mihu_frames.engines), never loaded as a frame.
    columns = latest_dataset(args.root).schema.names
    df = args.root
    missing = [c for c in args.by or [] if c not in columns]
    if missing:
        raise ValueError(f"--by: no column {missing} in the sessions; columns are {columns}")
    by = args.by[0] if args.by and len(args.by) == 1 else args.by
    # Every text is built before the first is printed, so a failure prints nothing else.
    texts = [summary_text(df, tz=args.tz)]
    if args.table or args.by or args.all:
        texts.append("\n" + stats_text(df, by=by, tz=args.tz))
    if args.activity or args.all:
        texts.append("\n" + activity_text(df, args.freq, tz=args.tz, last=args.last))
    if args.hourly or args.all:
        texts.append("\n" + hourly_text(df, tz=args.tz))
    if args.plot:
        _write_figures(df, args)
        texts.append(f"\nfigures: {args.plot}")
    print("\n".join(texts))
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
