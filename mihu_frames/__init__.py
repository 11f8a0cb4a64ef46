"""mihu_frames: Mihu AI conversation sessions as typed pandas DataFrames and Parquet snapshots.

>>> import mihu_frames as mf
>>> df = mf.load_sessions(["<conversation uuid>"], subdomain="acme")   # doctest: +SKIP
"""

from mihu_frames._version import __version__
from mihu_frames.client import MihuClient
from mihu_frames.compaction import compact_snapshots
from mihu_frames.errors import (
    AuthenticationError,
    CacheLockedError,
    CacheMissError,
    MihuError,
    NotASnapshotRootError,
    NotFoundError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
    ValidationError,
)
from mihu_frames.frame import sessions_frame
from mihu_frames.load import load_sessions
from mihu_frames.plots import plot_activity, plot_durations, plot_hourly
from mihu_frames.schema import SESSIONS_SCHEMA, empty_frame
from mihu_frames.snapshots import read_snapshots, snapshot_metadata, write_snapshot
from mihu_frames.stats import activity, explode_tasks, hourly_profile, session_stats
from mihu_frames.sync import sync_snapshots, sync_summary

__all__ = [
    "SESSIONS_SCHEMA",
    "AuthenticationError",
    "CacheLockedError",
    "CacheMissError",
    "MihuClient",
    "MihuError",
    "NotASnapshotRootError",
    "NotFoundError",
    "RateLimitError",
    "ResponseFormatError",
    "ServerError",
    "ValidationError",
    "__version__",
    "activity",
    "compact_snapshots",
    "empty_frame",
    "explode_tasks",
    "hourly_profile",
    "load_sessions",
    "plot_activity",
    "plot_durations",
    "plot_hourly",
    "read_snapshots",
    "session_stats",
    "sessions_frame",
    "snapshot_metadata",
    "sync_snapshots",
    "sync_summary",
    "write_snapshot",
]
