"""mihu_frames: Mihu AI conversation sessions as typed pandas DataFrames and Parquet snapshots.

>>> import mihu_frames as mf
>>> df = mf.load_sessions(["<conversation uuid>"], subdomain="acme")   # doctest: +SKIP
"""

from mihu_frames._version import __version__
from mihu_frames.client import MihuClient
from mihu_frames.compaction import compact_snapshots
from mihu_frames.decoding import sessions_frame
from mihu_frames.engines import activity, hourly_profile, session_stats
from mihu_frames.errors import (
    AuthenticationError,
    CacheLockedError,
    CacheMissError,
    ConnectionError,
    DeadlineExceededError,
    MihuError,
    NotASnapshotRootError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ResponseTimeoutError,
    ServerError,
    SnapshotStoreError,
    ValidationError,
)
from mihu_frames.load import list_conversations, load_sessions
from mihu_frames.plots import plot_activity, plot_durations, plot_hourly
from mihu_frames.report import activity_text, hourly_text, stats_text, summary_text
from mihu_frames.schema import SESSIONS_SCHEMA, empty_frame
from mihu_frames.snapshots import read_snapshots, snapshot_metadata, write_snapshot
from mihu_frames.stats import SessionStats, explode_tasks, format_duration, format_stats
from mihu_frames.sync import sync_snapshots, sync_summary

__all__ = [
    "SESSIONS_SCHEMA",
    "AuthenticationError",
    "CacheLockedError",
    "CacheMissError",
    "ConnectionError",
    "DeadlineExceededError",
    "MihuClient",
    "MihuError",
    "NotASnapshotRootError",
    "NotFoundError",
    "RateLimitError",
    "ResponseFormatError",
    "ResponseTimeoutError",
    "ServerError",
    "SessionStats",
    "SnapshotStoreError",
    "ValidationError",
    "__version__",
    "activity",
    "activity_text",
    "compact_snapshots",
    "empty_frame",
    "explode_tasks",
    "format_duration",
    "format_stats",
    "hourly_profile",
    "hourly_text",
    "list_conversations",
    "load_sessions",
    "plot_activity",
    "plot_durations",
    "plot_hourly",
    "read_snapshots",
    "session_stats",
    "sessions_frame",
    "snapshot_metadata",
    "stats_text",
    "summary_text",
    "sync_snapshots",
    "sync_summary",
    "write_snapshot",
]
