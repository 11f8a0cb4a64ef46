"""A snapshot root: its layout, its manifest, its writers' lock, and how a write lands.

Layout (version 2)
------------------
::

    root/
    ├── mihu_frames_root.json          the manifest: layout version, recorded filters (0600)
    ├── .mihu_frames.lock              the writers' lock (see mihu_frames.atomic)
    ├── .pending_commit.json           only while a write is landing (see "Crash safety")
    ├── .staging/                      temporary files, renamed into place when complete
    ├── sessions/                      the LATEST STATE: exactly one row per session
    │   ├── created_month=2026-10/part-0.parquet
    │   ├── created_month=2026-11/part-0.parquet
    │   └── created_month=none/part-0.parquet      (sessions without created_at)
    └── history/                       EVERY VERSION ever written, append-only
        └── fetched_date=2026-11-01/<snapshot_id>.parquet

``sessions/`` is plain hive-partitioned Parquet: DuckDB, Polars, pyarrow.dataset and Spark read
the latest state from it with no de-duplication of their own. A session lives in one partition
for good: the month of its ``created_at`` when it was first written (``none`` without one),
which never changes, so a session never moves between files. Each partition is one file, its
rows sorted by ``conversation_uuid``, ``created_at``, ``uuid`` in row groups of 32,768 rows.
Why this partitioning: updates land on recent sessions (they end, get evaluated and summarized
within hours), so a sync rewrites the current month's file or two, not the root; a reader
filtering on time prunes whole months by the ``created_month`` folder, and one filtering on
``conversation_uuid`` skips row groups by their statistics (rows are sorted by it), in every
engine, without a folder per conversation (accounts with thousands of small conversations would
get thousands of tiny files). Partition names do not clash with a column: the engines add
``created_month`` as a column of their own.

``history/`` holds one file per write (the rows it added or changed), in the folder of the UTC
date of its newest ``fetched_at``. Files are never rewritten but by
:func:`mihu_frames.compact_snapshots`, which keeps every version. Files of both hold the sessions
frame plus ``snapshot_id`` (the write that stored the row) and ``insert_order`` (the order the
session was first written in: :func:`mihu_frames.read_snapshots` returns rows in it, so a frame
written to a new root reads back row for row).

The manifest
------------
``mihu_frames_root.json`` identifies the folder as a root and records what later writes must
agree with (written atomically, ``0600``)::

    {"format": "mihu_frames snapshot root", "layout_version": 2,
     "created_at": "...", "library_version": "...",
     "recorded": {"status": ["active", "completed", "timed_out"] | null,
                  "type": ["text", "voice"] | null,
                  "conversations": "all" | null}}

``recorded.status``/``type`` are the filters the root's sessions were fetched under: a sync
without filters uses them, one with other filters is refused (:meth:`SnapshotRoot.resolve_filters`).
``recorded.conversations`` is the place for issue 14 (``"all"`` once synced with every
conversation of the account); this release writes null and keeps any value it finds. Keys this
release does not know (in the file or in ``recorded``) are kept as they are when it rewrites
the manifest; a ``layout_version`` above 2 is refused (upgrade mihu_frames).

Why readers see each session exactly once
-----------------------------------------
A write changes the latest state only by :func:`os.replace` of one partition file by a complete
new one under the same name (new partitions appear the same way); nothing there is ever deleted
or renamed away, and a session never moves to another file. A reader lists the files, then opens
each: whichever version of a file it opens, it reads that version whole (an open file keeps its
content when replaced), and each session is in exactly one file, so it sees each session once,
in its state before or after the write. A file created after its listing is a partition of new
sessions only: not seen is their "before". Writers are serialized by the root's lock, so two
writes never interleave their renames. Per engine (tested in ``tests/test_engines.py``):

- DuckDB and pyarrow open each file once and read its footer and its row groups through that
  handle: exact before or after, during any write.
- Polars 2.x takes each file's size when it lists the files and reads the footer at that offset
  later: a file replaced in between makes that query fail (``File out of specification``, or a
  panic), never answer wrongly. Run it again, or read through pyarrow
  (``pl.scan_pyarrow_dataset(ds.dataset(...))``).
- Spark lists, then reads, like DuckDB (not tested here unless ``pyspark`` is installed).

``history/`` readers are not protected the same way: a compaction replaces several files by one,
so another engine reading ``history/`` during a compaction may see a version twice or miss one.
:func:`mihu_frames.read_snapshots` (``latest=False``) does not: it drops the files a compacted
file replaces (named in its metadata) and reads again if one vanishes.

Crash safety
------------
A write stages every file it will publish (complete, fsynced, in ``.staging/``), then records
``.pending_commit.json`` (its snapshot id and history file), renames the history file into
place, then each latest-state file, then removes the record. Killed before the record: nothing
changed (the next writer removes the staged files). Killed after it: the next writer (or
compaction) finds the record and applies that history file to the latest state again (applying
a version twice is a no-op), then removes it. Until then the latest state is the one before the
killed write, for every engine.

Roots of the earlier layout
---------------------------
Before layout 2, ``sessions/fetched_date=YYYY-MM-DD/<snapshot_id>.parquet`` held one file per
snapshot (the history) and readers de-duplicated. Such a root (no manifest, ``fetched_date=``
folders) is read as it is, the latest state computed at read time, and converted on its first
write or compaction, under the lock: ``sessions/`` is renamed to ``history/`` (every file kept,
as it is), the latest state is built in ``.staging/`` and renamed to ``sessions/``, then the
manifest is written. Another engine reading ``sessions/`` meanwhile may briefly find it missing
or empty (DuckDB: "No files found"), never a session twice. The filters recorded for it are
inferred from its files' metadata (the last status/type filters any of them was fetched under).
A snapshot file that an earlier release writes into a converted root later
(``sessions/fetched_date=…/``) is moved to history and applied by the next write or compaction;
until then this library ignores it (other engines would count it twice).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mihu_frames._version import __version__
from mihu_frames.atomic import (
    RootLock,
    StagedFile,
    fsync_dir,
    private_dirs,
    remove_abandoned_temp_files,
    stage_parquet,
    write_json_atomically,
)
from mihu_frames.errors import NotASnapshotRootError
from mihu_frames.schema import (
    SCHEMA_VERSION,
    SESSIONS_SCHEMA,
    STATUS_VALUES,
    TIMESTAMP_TYPE,
    TYPE_VALUES,
)
from mihu_frames.versions import (
    HELD_CONVERSATION,
    SNAPSHOT_ID,
    TAGS,
    latest_versions,
    same_content,
)

__all__ = [
    "HISTORY",
    "LATEST",
    "LAYOUT_VERSION",
    "MANIFEST",
    "ORDER",
    "PARTITION",
    "CommitReport",
    "Recorded",
    "SnapshotRoot",
    "new_snapshot_id",
    "open_root",
]

logger = logging.getLogger("mihu_frames")

LAYOUT_VERSION = 2
MANIFEST = "mihu_frames_root.json"
LOCK_FILE = ".mihu_frames.lock"
PENDING = ".pending_commit.json"
STAGING = ".staging"
LATEST = "sessions"
HISTORY = "history"
#: The latest state's partition column (hive folder name) and the history's.
PARTITION = "created_month"
HISTORY_PARTITION = "fetched_date"
NO_MONTH = "none"
PART_FILE = "part-0.parquet"
_FORMAT = "mihu_frames snapshot root"
#: The order a session was first written in (per root, increasing; gaps allowed): reads return
#: the latest state in this order, so a frame written to a new root reads back row for row.
ORDER = "insert_order"
#: Every file of a root: the sessions frame, the write that recorded the row, and its order.
FILE_SCHEMA = SESSIONS_SCHEMA.append(pa.field(SNAPSHOT_ID, pa.string())).append(
    pa.field(ORDER, pa.int64())
)
_SORT = [("conversation_uuid", "ascending"), ("created_at", "ascending"), ("uuid", "ascending")]


def new_snapshot_id(now: datetime | None = None) -> str:
    """A snapshot id that sorts by creation time: ``20261125T183000123456Z-1a2b3c4d``."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(4)


# --------------------------------------------------------------------------- recorded settings


def _canonical(name: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    """A filter as recorded: None, or its values in the documented order (``"all"`` expanded)."""
    if value is None:
        return None
    values = allowed if value == "all" else [value] if isinstance(value, str) else list(value)
    unknown = [v for v in values if v not in allowed]
    if unknown or not values:
        raise ValueError(f"{name} must be None, 'all' or values of {allowed}, got {value!r}")
    return tuple(v for v in allowed if v in values)


@dataclass(frozen=True)
class Recorded:
    """The settings a root records (``"recorded"`` in its manifest); later syncs reuse them.

    Attributes
    ----------
    status, type : tuple of str or None
        The filters its sessions were fetched under, in the documented order; None: no filter.
    conversations : str or None
        Reserved for issue 14: ``"all"`` once the root is synced with ``conversations="all"``
        (every conversation of the account); None otherwise. This release only carries it.
    extra : dict
        Settings a newer release recorded and this one does not know: kept as they are.

    To record one more setting: add a field here, to :meth:`to_json` / :meth:`from_json`, and
    where it must match to :meth:`SnapshotRoot.resolve_filters` (or a check of its own).
    """

    status: tuple[str, ...] | None = None
    type: tuple[str, ...] | None = None
    conversations: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, status: Any = None, type: Any = None, **others: Any) -> Recorded:
        """Build from filters as the public functions take them (``"all"``, a list, None)."""
        return cls(
            _canonical("status", status, STATUS_VALUES),
            _canonical("type", type, TYPE_VALUES),
            **others,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "status": None if self.status is None else list(self.status),
            "type": None if self.type is None else list(self.type),
            "conversations": self.conversations,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Recorded:
        known = {"status", "type", "conversations"}
        return cls.of(
            data.get("status"),
            data.get("type"),
            conversations=data.get("conversations"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def filters(self) -> tuple[str | list[str] | None, str | list[str] | None]:
        """``(status, type)`` as :meth:`MihuClient.sessions` takes them."""
        return (
            None if self.status is None else list(self.status),
            None if self.type is None else list(self.type),
        )

    def describe(self) -> str:
        def one(values: tuple[str, ...] | None, allowed: tuple[str, ...]) -> str:
            if values is None:
                return "None"
            return "'all'" if values == allowed else repr(list(values))

        return f"status={one(self.status, STATUS_VALUES)}, type={one(self.type, TYPE_VALUES)}"


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class CommitReport:
    """What one write did to a root (:meth:`SnapshotRoot.commit`).

    Attributes
    ----------
    snapshot_id : str or None
        The id of the write; None when nothing changed (nothing was written).
    history_file : Path or None
        The history file written (the rows new, changed or stale, with ``snapshot_id``).
    rows_new : int
        Sessions the root did not hold.
    rows_changed : int
        Sessions held with other content, now replaced in the latest state.
    rows_unchanged : int
        Rows identical to the version held (only their ``fetched_at`` may differ): not written.
    rows_stale : int
        Rows with other content but fetched before the version held (an older frame written
        late): kept in history, not in the latest state.
    partitions_rewritten : tuple of str
        The latest-state partitions (``created_month`` values) written.
    files_written : tuple of Path
        Every file written: the history file, then the latest-state files.
    bytes_written : int
        Their total size.
    converted : bool
        The root was in the earlier layout and this write converted it first.
    latest : mapping of str to pyarrow.Table
        With ``commit(..., keep=True)``: each rewritten partition's rows as written (so the
        caller can read the new latest state without reading those files back).
    """

    snapshot_id: str | None = None
    history_file: Path | None = None
    rows_new: int = 0
    rows_changed: int = 0
    rows_unchanged: int = 0
    rows_stale: int = 0
    partitions_rewritten: tuple[str, ...] = ()
    files_written: tuple[Path, ...] = ()
    bytes_written: int = 0
    converted: bool = False
    latest: Mapping[str, pa.Table] = field(default_factory=dict, repr=False, compare=False)

    def as_attrs(self) -> dict[str, Any]:
        """The counts for ``df.attrs["mihu_frames"]`` (paths as strings)."""
        return {
            "rows_new": self.rows_new,
            "rows_changed": self.rows_changed,
            "rows_unchanged": self.rows_unchanged,
            "rows_stale": self.rows_stale,
            "files_written": [str(p) for p in self.files_written],
            "bytes_written": self.bytes_written,
        }


# --------------------------------------------------------------------------- opening a root


def open_root(
    path: str | os.PathLike[str], *, create: bool = False, lock_timeout: float | None = None
) -> SnapshotRoot:
    """The snapshot root at ``path``; with ``create`` a missing or empty folder will become one.

    Nothing is written here: a root is created by its first :meth:`SnapshotRoot.commit`.

    Raises
    ------
    NotASnapshotRootError
        ``path`` is a file, or a folder that is not a root (with ``create``: a non-empty one;
        without: also a missing or empty one). The message names the folder and says what a
        root looks like.

    Examples
    --------
    >>> root = open_root("data/snapshots", create=True)               # doctest: +SKIP
    >>> root.recorded.describe()                                      # doctest: +SKIP
    "status='all', type=None"
    """
    base = Path(path)
    if not base.exists():
        if create:
            return SnapshotRoot(base, "new", lock_timeout=lock_timeout)
        raise NotASnapshotRootError(base, "it does not exist")
    if not base.is_dir():
        raise NotASnapshotRootError(base, "it is a file, not a folder")
    if (base / MANIFEST).exists():
        return SnapshotRoot(base, "root", _read_manifest(base), lock_timeout=lock_timeout)
    if _legacy_partitions(base):
        return SnapshotRoot(base, "legacy", lock_timeout=lock_timeout)
    visible = sorted(p.name for p in base.iterdir() if not p.name.startswith("."))
    if not visible:
        if create:
            return SnapshotRoot(base, "new", lock_timeout=lock_timeout)
        raise NotASnapshotRootError(base, "it is empty (no snapshot was written to it)")
    inside = [n for n in visible if n.startswith((f"{PARTITION}=", f"{HISTORY_PARTITION}="))]
    if inside:
        reason = (
            f"it holds {inside[0]}/ but no {MANIFEST}: it looks like the {base.name}/ folder "
            f"of a root; pass the root, {base.parent}"
        )
    else:
        shown = ", ".join(visible[:5]) + (", ..." if len(visible) > 5 else "")
        reason = f"it has no {MANIFEST} and holds other things ({shown})"
    raise NotASnapshotRootError(base, reason)


def _legacy_partitions(base: Path) -> list[Path]:
    """``fetched_date=`` folders of a root of the earlier layout (or of one being converted)."""
    found: list[Path] = []
    for folder in (base / LATEST, base / HISTORY):
        if folder.is_dir():
            found += sorted(folder.glob(f"{HISTORY_PARTITION}=*/"))
    return found


def _read_manifest(base: Path) -> dict[str, Any]:
    path = base / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise NotASnapshotRootError(base, f"its {MANIFEST} cannot be read ({error})") from None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise NotASnapshotRootError(base, f"its {MANIFEST} is not a mihu_frames manifest")
    version = data.get("layout_version")
    if not isinstance(version, int) or version > LAYOUT_VERSION:
        raise ValueError(
            f"the snapshot root {base} has layout version {version!r}, newer than this "
            f"mihu_frames ({__version__}) knows ({LAYOUT_VERSION}): upgrade mihu_frames"
        )
    return data


class SnapshotRoot:
    """One snapshot root: read its latest state and history, write to it.

    Built by :func:`open_root`. ``state`` is ``"root"`` (layout 2), ``"legacy"`` (the earlier
    layout, converted by the first write) or ``"new"`` (a missing or empty folder).
    """

    def __init__(
        self,
        path: Path,
        state: str,
        manifest: dict[str, Any] | None = None,
        *,
        lock_timeout: float | None = None,
    ) -> None:
        self.path = path
        self.state = state
        self.manifest = manifest
        self.lock_timeout = lock_timeout
        self._recorded = (
            Recorded.from_json(manifest.get("recorded") or {}) if manifest is not None else None
        )

    def __repr__(self) -> str:
        return f"SnapshotRoot({str(self.path)!r}, state={self.state!r})"

    # ----------------------------------------------------------------------- recorded filters

    @property
    def recorded(self) -> Recorded | None:
        """The recorded settings; inferred for a root of the earlier layout; None when new."""
        if self._recorded is None and self.state == "legacy":
            self._recorded = _infer_recorded(self.history_files())
        return self._recorded

    def resolve_filters(
        self, status: Any, type: Any, *, refetch: bool = False
    ) -> tuple[Any, Any, Recorded]:
        """The filters a sync of this root uses, and what the root will record.

        No filters given: the recorded ones. The recorded ones (in any spelling): those.
        Others: ``ValueError`` unless ``refetch`` (every conversation is then fetched anew under
        them, and the root records them). A new root records what is given.
        """
        asked = Recorded.of(status, type)
        held = self.recorded
        if held is None:
            return status, type, asked
        if status is None and type is None and not refetch:
            resolved_status, resolved_type = held.filters()
            return resolved_status, resolved_type, held
        same = (asked.status, asked.type) == (held.status, held.type)
        if same or refetch:
            return status, type, replace(held, status=asked.status, type=asked.type)
        raise ValueError(
            f"the snapshot root {self.path} holds sessions fetched with {held.describe()}; "
            f"this sync asks for {asked.describe()}. Sync without status/type to use the "
            "recorded filters; for other filters use a new root, or pass refetch=True to "
            "fetch every conversation anew under them (the root then records them; tags "
            "already held are kept where a row comes back untagged)"
        )

    # ----------------------------------------------------------------------- reading

    def history_files(self) -> list[Path]:
        """Every complete history file, oldest snapshot first (by file name)."""
        folders = [self.path / HISTORY]
        if self.state == "legacy":
            folders.insert(0, self.path / LATEST)
        files = [p for folder in folders for p in folder.glob(f"{HISTORY_PARTITION}=*/*.parquet")]
        return sorted(files, key=lambda p: p.stem)

    def read_latest(
        self,
        columns: Sequence[str] | None = None,
        *,
        conversations: Sequence[str] | None = None,
        since: datetime | None = None,
        known: Mapping[str, pa.Table] | None = None,
    ) -> pa.Table:
        """The latest state (columns of :data:`FILE_SCHEMA`), filters pushed down to the scan.

        ``conversations`` keeps those conversations; ``since`` the sessions whose latest
        version was updated at or after it. ``known``: partitions whose rows are at hand
        (:attr:`CommitReport.latest`), taken from there instead of their files.
        """
        by_conversation = None
        if conversations is not None:
            by_conversation = pc.field("conversation_uuid").isin(list(conversations))
        recent = (
            None if since is None else pc.field("updated_at") >= pa.scalar(since, TIMESTAMP_TYPE)
        )
        if self.state == "legacy":  # versions first, then the latest of each, then ``since``
            table = latest_versions(self.read_history(None, by_conversation))
            if recent is not None:
                table = ds.dataset(table).to_table(filter=recent)
            return table if columns is None else table.select(list(columns))
        if self.state == "new":
            raise NotASnapshotRootError(self.path, "nothing was written to it yet")
        where = by_conversation
        if recent is not None:
            where = recent if where is None else where & recent
        known = known or {}
        table = _scan_latest(self.path / LATEST, columns, where, skip=known.keys())
        names = table.column_names
        parts = [ds.dataset(t).to_table(columns=names, filter=where) for t in known.values()]
        return pa.concat_tables([table, *parts]) if parts else table

    def read_history(self, columns: Sequence[str] | None = None, where: Any = None) -> pa.Table:
        """Every version (columns of :data:`FILE_SCHEMA`), filtered by ``where``.

        Files a compacted file replaces are skipped while both exist (a compaction between
        its rename and its removals), and the files are listed again if one vanishes.
        """
        for attempt in range(5):
            files = _without_compacted_sources(self.history_files())
            try:
                dataset = ds.dataset([str(f) for f in files], schema=FILE_SCHEMA, format="parquet")
                return _first_seen_order(dataset.to_table(columns=columns, filter=where))
            except FileNotFoundError:
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def held_keys(self, conversations: Sequence[str]) -> pa.Table:
        """``conversation_uuid``, ``uuid``, ``updated_at``, ``fetched_at`` of the latest state of
        ``conversations`` (empty for a new root)."""
        columns = ["conversation_uuid", "uuid", "updated_at", "fetched_at"]
        if self.state == "new" or not conversations:
            return pa.schema([FILE_SCHEMA.field(c) for c in columns]).empty_table()
        return self.read_latest(columns, conversations=conversations)

    # ----------------------------------------------------------------------- writing

    def commit(
        self,
        rows: pa.Table,
        *,
        metadata: Mapping[str, Any] | None = None,
        recorded: Recorded | None = None,
        keep: bool = False,
    ) -> CommitReport:
        """Write ``rows`` (in :data:`SESSIONS_SCHEMA`) to the root: the storage step of a write.

        Under the root's lock: removes abandoned temporary files, converts a root of the
        earlier layout, completes a write a killed process left half done, then compares
        ``rows`` with the latest state (see :mod:`mihu_frames.versions`: tags are carried,
        identical versions are not written), writes the history file and rewrites the
        latest-state partitions that changed. A new root is created (with its manifest, which
        records ``recorded``, or the filters the rows were fetched under), also for no rows.

        Parameters
        ----------
        rows : pyarrow.Table
            Sessions in :data:`SESSIONS_SCHEMA`; duplicates of a ``uuid`` are reduced to their
            latest version first.
        metadata : mapping, optional
            Key-value metadata of the history file (``mihu_frames.<key>``, JSON values).
        recorded : Recorded, optional
            Settings to record in the manifest (a new root, or a sync with ``refetch``).
        keep : bool
            Keep the rewritten partitions' tables in the report (``latest``), for
            :meth:`read_latest` right after (memory: the partitions changed, held until then).

        Returns
        -------
        CommitReport
            What was written; ``snapshot_id`` None when nothing changed.

        Examples
        --------
        >>> report = open_root("data/snapshots", create=True).commit(table)  # doctest: +SKIP
        >>> report.rows_new, report.bytes_written                          # doctest: +SKIP
        (250, 61_223)
        """
        if self.state not in ("new", "root", "legacy"):  # pragma: no cover
            raise RuntimeError(self.state)
        rows = rows.select(list(SESSIONS_SCHEMA.names)).cast(SESSIONS_SCHEMA)
        if rows.num_rows and len(pc.unique(rows.column("uuid"))) < rows.num_rows:
            rows = latest_versions(rows).cast(SESSIONS_SCHEMA)
        private_dirs(self.path)
        with RootLock(self.path / LOCK_FILE, self.lock_timeout):
            converted = self.prepare()
            if self.state == "new":
                self._write_manifest(recorded or recorded_from_rows(rows, metadata))
            snapshot_id = new_snapshot_id()
            report = self._apply(
                rows, snapshot_id, metadata=metadata or {}, history=True, keep=keep
            )
            if recorded is not None and self.recorded is not None:
                recorded = replace(recorded, extra={**self.recorded.extra, **recorded.extra})
            if recorded is not None and recorded != self.recorded:
                self._write_manifest(recorded)
        return replace(report, converted=converted)

    def locked(self) -> RootLock:
        """The root's writers' lock (for compaction), creating the folder's lock file."""
        return RootLock(self.path / LOCK_FILE, self.lock_timeout)

    def prepare(self) -> bool:
        """Under the lock, before a write or compaction: remove abandoned temporary files,
        convert a root of the earlier layout, complete a write a killed process left half done,
        adopt snapshots an earlier release wrote into this root since. Returns whether the root
        was converted.
        """
        self._refresh()
        remove_abandoned_temp_files(self._temp_folders())
        converted = False
        if self.state == "legacy":
            self._convert()
            converted = True
        self._recover()
        if self.state == "root":
            self._adopt_strays()
        return converted

    def _adopt_strays(self) -> None:
        """Snapshot files an earlier release wrote into ``sessions/fetched_date=…/`` of this
        converted root: moved to history and applied to the latest state."""
        for path in sorted(self.path.glob(f"{LATEST}/{HISTORY_PARTITION}=*/*.parquet")):
            if path.name.startswith("."):
                continue
            target = self.path / HISTORY / path.parent.name / path.name
            private_dirs(target.parent)
            os.replace(path, target)
            fsync_dir(target.parent)
            _remove_if_empty(path.parent)
            self._apply(_read_file(target), target.stem, metadata={}, history=False)
            logger.info("adopted %s, written by an earlier release, into history", target.name)

    def _refresh(self) -> None:
        """Look again under the lock: another writer may have created or converted the root."""
        fresh = open_root(self.path, create=True, lock_timeout=self.lock_timeout)
        self.state, self.manifest, self._recorded = fresh.state, fresh.manifest, fresh._recorded

    def _temp_folders(self) -> list[Path]:
        folders = [self.path / STAGING]
        for parent in (self.path / LATEST, self.path / HISTORY):  # the earlier layout's places
            if parent.is_dir():
                folders += sorted(parent.glob(f"{HISTORY_PARTITION}=*/"))
        return folders

    def _write_manifest(self, recorded: Recorded) -> None:
        data = dict(self.manifest or {})
        data.update(
            {
                "format": _FORMAT,
                "layout_version": LAYOUT_VERSION,
                "created_at": data.get("created_at") or datetime.now(timezone.utc).isoformat(),
                "library_version": __version__,
                "recorded": recorded.to_json(),
            }
        )
        write_json_atomically(data, self.path / MANIFEST, self.path / STAGING)
        self.manifest, self._recorded, self.state = data, recorded, "root"
        logger.debug("recorded in %s: %s", self.path / MANIFEST, recorded.describe())

    # ----------------------------------------------------------------------- the storage step

    def _apply(
        self,
        rows: pa.Table,
        snapshot_id: str,
        *,
        metadata: Mapping[str, Any],
        history: bool,
        keep: bool = False,
    ) -> CommitReport:
        """Merge ``rows`` into the latest state; with ``history`` also write them to history.

        Without ``history`` (completing a killed write) ``rows`` are a history file's rows,
        already carrying their ``snapshot_id``.
        """
        staging = self.path / STAGING
        if rows.num_rows == 0:
            return CommitReport()
        if SNAPSHOT_ID not in rows.column_names:
            rows = rows.append_column(SNAPSHOT_ID, _constant(snapshot_id, rows.num_rows))
            rows = rows.append_column(ORDER, pa.nulls(rows.num_rows, pa.int64()))
        if rows.column(ORDER).null_count:  # new rows come last, in their order
            start = _next_order(self.path / LATEST)
            order = pa.array(np.arange(start, start + rows.num_rows, dtype=np.int64))
            filled = pc.coalesce(rows.column(ORDER).combine_chunks(), order)
            rows = rows.set_column(rows.schema.get_field_index(ORDER), ORDER, filled)
        where = _partitions_of(self.path / LATEST, rows)
        staged: list[tuple[str, StagedFile]] = []
        versions: list[pa.Table] = []
        kept: dict[str, pa.Table] = {}
        counts = {"new": 0, "changed": 0, "unchanged": 0, "stale": 0}

        def rewrite(month: str) -> tuple[StagedFile | None, pa.Table, pa.Table, dict[str, int]]:
            """Merge one month's rows into its file; stage the new file if anything changed."""
            folder = self.path / LATEST / f"{PARTITION}={month}"
            held = _read_file(folder / PART_FILE)
            merged, written, partition_counts = _merge(held, rows.filter(pa.array(where == month)))
            if not (partition_counts["new"] or partition_counts["changed"]):
                return None, merged, written, partition_counts
            record = _latest_record(merged, month, snapshot_id, self.recorded, metadata)
            file = stage_parquet(merged.replace_schema_metadata(record), staging, PART_FILE)
            return file, merged, written, partition_counts

        try:
            # Months in parallel: reading, merging and writing Parquet release the GIL (a daily
            # sync touching every month of 100,000 sessions: 0.74 s of storage on 2 cores
            # sequentially). Each month holds its own rows only.
            months = sorted(set(where))
            errors: list[BaseException] = []
            with ThreadPoolExecutor(max_workers=min(len(months), os.cpu_count() or 1)) as pool:
                futures = [(month, pool.submit(rewrite, month)) for month in months]
                for month, future in futures:
                    try:
                        file, merged, written, partition_counts = future.result()
                    except BaseException as exc:  # the others finish; their files are dropped
                        errors.append(exc)
                        continue
                    if file is not None:
                        staged.append((month, file))
                        if keep:
                            kept[month] = merged
                    versions.append(written)
                    for key, value in partition_counts.items():
                        counts[key] += value
            if errors:
                raise errors[0]
            written_rows = pa.concat_tables(versions)
            if written_rows.num_rows == 0 or (not history and not staged):
                return CommitReport(rows_unchanged=counts["unchanged"], rows_stale=0)
            files: list[Path] = []
            history_file = None
            if history:
                history_table = _history_table(written_rows, snapshot_id, metadata, counts)
                fetched = pc.max(written_rows.column("fetched_at")).as_py()
                day = (fetched or datetime.now(timezone.utc)).strftime("%Y-%m-%d")
                history_file = self.path / HISTORY / f"{HISTORY_PARTITION}={day}"
                history_file = history_file / f"{snapshot_id}.parquet"
                staged_history = stage_parquet(history_table, staging, history_file.name)
                staged.insert(0, ("", staged_history))
                write_json_atomically(
                    {
                        "snapshot_id": snapshot_id,
                        "history_file": str(history_file.relative_to(self.path)),
                    },
                    self.path / PENDING,
                    staging,
                )
            for month, file in staged:
                if month == "":
                    assert history_file is not None
                    private_dirs(history_file.parent)
                    files.append(file.publish(history_file))
                else:
                    folder = self.path / LATEST / f"{PARTITION}={month}"
                    private_dirs(folder)
                    files.append(file.publish(folder / PART_FILE))
            staged = []
            if history:
                (self.path / PENDING).unlink()
                fsync_dir(self.path)
        finally:
            for _, file in staged:
                file.discard()
        size = sum(p.stat().st_size for p in files)
        report = CommitReport(
            snapshot_id=snapshot_id if history else None,
            history_file=history_file,
            rows_new=counts["new"],
            rows_changed=counts["changed"],
            rows_unchanged=counts["unchanged"],
            rows_stale=counts["stale"],
            partitions_rewritten=tuple(
                p.parent.name.split("=", 1)[1] for p in files if p.name == PART_FILE
            ),
            files_written=tuple(files),
            bytes_written=size,
            latest=kept,
        )
        logger.info(
            "wrote %s: %d new, %d changed, %d unchanged, %d stale; %d files, %d bytes",
            self.path,
            report.rows_new,
            report.rows_changed,
            report.rows_unchanged,
            report.rows_stale,
            len(files),
            size,
        )
        return report

    def _recover(self) -> None:
        """Complete a write a killed process left between its history file and its latest state."""
        pending = self.path / PENDING
        if not pending.exists():
            return
        try:
            record = json.loads(pending.read_text(encoding="utf-8"))
            history_file = self.path / record["history_file"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            logger.warning("ignored an unreadable %s: %s", pending, error)
            pending.unlink(missing_ok=True)
            return
        if history_file.exists():
            rows = _read_file(history_file)
            self._apply(rows, record["snapshot_id"], metadata={}, history=False)
            logger.info("completed the write %s a killed process left", record["snapshot_id"])
        pending.unlink(missing_ok=True)
        fsync_dir(self.path)

    # ----------------------------------------------------------------------- conversion

    def _convert(self) -> None:
        """Convert a root of the earlier layout (see the module docstring). Under the lock."""
        started = time.perf_counter()
        latest_dir, history_dir = self.path / LATEST, self.path / HISTORY
        recorded = _infer_recorded(self.history_files())
        old = sorted(latest_dir.glob(f"{HISTORY_PARTITION}=*/")) if latest_dir.is_dir() else []
        if old and not history_dir.exists():
            os.rename(latest_dir, history_dir)  # one rename: every file kept as it is
        else:
            for folder in old:
                target = history_dir / folder.name
                private_dirs(target)
                for path in folder.iterdir():
                    if path.suffix == ".parquet" and not path.name.startswith("."):
                        os.replace(path, target / path.name)
                fsync_dir(target)
                _remove_if_empty(folder)
        fsync_dir(self.path)
        self.state = "legacy"  # history only: read it as such while building
        private_dirs(self.path / STAGING)
        for stale in (self.path / STAGING).glob("build-*"):
            shutil.rmtree(stale, ignore_errors=True)  # a killed conversion's (we hold the lock)
        build = self.path / STAGING / f"build-{secrets.token_hex(4)}"
        private_dirs(build)
        history = self.read_history()
        latest = latest_versions(history)
        months = _months(latest.column("created_at"))
        snapshot_id = new_snapshot_id()
        for month in sorted(set(months)):
            part = latest.filter(pa.array(months == month))
            part = part.take(pc.sort_indices(part, _SORT))
            folder = build / f"{PARTITION}={month}"
            private_dirs(folder)
            record = _latest_record(
                part, month, snapshot_id, recorded, {"converted_from_layout": 1}
            )
            stage_parquet(
                part.replace_schema_metadata(record), self.path / STAGING, PART_FILE
            ).publish(folder / PART_FILE)
        if latest_dir.exists():
            leftover = self.path / STAGING / f"old-sessions-{secrets.token_hex(4)}"
            os.rename(latest_dir, leftover)
            os.rename(build, latest_dir)
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            os.rename(build, latest_dir)
        fsync_dir(self.path)
        self._write_manifest(recorded)
        logger.info(
            "converted the snapshot root %s to layout %d: %d history files kept, %d sessions "
            "in %d latest-state partitions, recorded %s (%.2f s)",
            self.path,
            LAYOUT_VERSION,
            len(self.history_files()),
            latest.num_rows,
            len(set(months)),
            recorded.describe(),
            time.perf_counter() - started,
        )


# --------------------------------------------------------------------------- helpers


def _constant(value: str, n: int) -> pa.Array:
    indices = pa.array(np.zeros(n, dtype=np.int32))
    return pa.DictionaryArray.from_arrays(indices, pa.array([value])).cast(pa.string())


def _months(created: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``YYYY-MM`` of each ``created_at`` (UTC), ``none`` where null: the latest-state partition."""
    text = pc.strftime(created, format="%Y-%m", locale="C")
    return np.asarray(pc.fill_null(text, NO_MONTH).to_numpy(zero_copy_only=False), dtype=object)


def _partitions_of(latest_dir: Path, rows: pa.Table) -> np.ndarray:
    """The latest-state partition of each row: where its session is held, else its month."""
    months = _months(rows.column("created_at"))
    if not latest_dir.is_dir():
        return months
    wanted = rows.column("uuid").combine_chunks()
    where = pc.field("uuid").isin(wanted) & pc.field("conversation_uuid").isin(
        pc.unique(rows.column("conversation_uuid"))
    )
    held = _scan_latest(latest_dir, ["uuid", PARTITION], where)
    if held.num_rows == 0:
        return months
    found = pc.index_in(wanted, value_set=held.column("uuid").combine_chunks())
    if isinstance(found, pa.ChunkedArray):
        found = found.combine_chunks()
    mask = ~np.asarray(pc.is_null(found).to_numpy(zero_copy_only=False), dtype=bool)
    held_months = held.column(PARTITION).combine_chunks().take(found)
    held_months = np.asarray(held_months.to_numpy(zero_copy_only=False), dtype=object)
    months[mask] = held_months[mask]
    return months


def _scan_latest(
    latest_dir: Path, columns: Sequence[str] | None, where: Any, skip: Iterable[str] = ()
) -> pa.Table:
    """The latest state's files (but the partitions in ``skip``), as one table."""
    schema = FILE_SCHEMA.append(pa.field(PARTITION, pa.string()))
    if not latest_dir.is_dir():
        names = list(FILE_SCHEMA.names) if columns is None else list(columns)
        return pa.schema([schema.field(c) for c in names]).empty_table()
    # our files only (one per partition), whatever else someone put in the folder
    skipped = {f"{PARTITION}={month}" for month in skip}
    files = sorted(
        str(p)
        for p in latest_dir.glob(f"{PARTITION}=*/{PART_FILE}")
        if p.parent.name not in skipped
    )
    partitioning = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")
    dataset = ds.dataset(
        files,
        schema=schema,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=str(latest_dir),
    )
    names = list(FILE_SCHEMA.names) if columns is None else list(columns)
    return dataset.to_table(columns=names, filter=where)


def _next_order(latest_dir: Path) -> int:
    """One more than the largest :data:`ORDER` held (0 for an empty latest state)."""
    held = _scan_latest(latest_dir, [ORDER], None).column(ORDER)
    largest = pc.max(held).as_py() if len(held) else None
    return 0 if largest is None else int(largest) + 1


def _first_seen_order(history: pa.Table) -> pa.Table:
    """Give rows of the earlier layout (no :data:`ORDER`) the position of their session's first
    version in ``history`` (files oldest first): the order they were first written in."""
    if ORDER not in history.column_names or history.num_rows == 0:
        return history
    order = history.column(ORDER)
    if order.null_count == 0:
        return history
    codes = history.column("uuid").combine_chunks().dictionary_encode().indices.to_numpy()
    _, first = np.unique(codes, return_index=True)
    first_of = np.empty(codes.max() + 1, dtype=np.int64)
    first_of[np.unique(codes)] = first
    filled = pc.coalesce(order.combine_chunks(), pa.array(first_of[codes]))
    index = history.schema.get_field_index(ORDER)
    return history.set_column(index, history.schema.field(index), filled)


def _read_file(path: Path) -> pa.Table:
    """One file of the root in :data:`FILE_SCHEMA` (empty if missing; older schemas filled)."""
    if not path.exists():
        return FILE_SCHEMA.empty_table()
    return ds.dataset([str(path)], schema=FILE_SCHEMA, format="parquet").to_table()


def _merge(held: pa.Table, incoming: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Merge ``incoming`` (with ``snapshot_id``) into one partition's ``held`` rows.

    Returns the partition's new latest state, the versions to add to history (new, changed
    and stale rows, tags carried), and the counts. See :mod:`mihu_frames.versions`.
    """
    incoming = incoming.cast(FILE_SCHEMA)
    found = pc.index_in(incoming.column("uuid"), value_set=held.column("uuid").combine_chunks())
    found = found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found
    is_new = np.asarray(pc.is_null(found).to_numpy(zero_copy_only=False), dtype=bool)
    matched = incoming.filter(pa.array(~is_new))
    before = held.take(found.filter(pa.array(~is_new)))
    index = matched.schema.get_field_index(ORDER)  # a session keeps its place in the order
    matched = matched.set_column(index, matched.schema.field(index), before.column(ORDER))
    for name in TAGS:  # an untagged row keeps the tag held
        index = matched.schema.get_field_index(name)
        tag = pc.coalesce(
            matched.column(name).combine_chunks(), before.column(name).combine_chunks()
        )
        matched = matched.set_column(index, matched.schema.field(index), tag)
    # A session served under two conversations keeps the one it is held under (versions.py).
    index = matched.schema.get_field_index(HELD_CONVERSATION)
    matched = matched.set_column(
        index, matched.schema.field(index), before.column(HELD_CONVERSATION)
    )
    same = same_content(matched, before)
    newer = _not_older(matched, before)
    replace_mask = ~same & newer
    stale_mask = ~same & ~newer
    changed = _sorted(matched.filter(pa.array(replace_mask)))
    new = _sorted(incoming.filter(pa.array(is_new)))
    stale = _sorted(matched.filter(pa.array(stale_mask)))
    kept = held
    if changed.num_rows:
        gone = pc.is_in(held.column("uuid"), value_set=changed.column("uuid"))
        kept = held.filter(pc.invert(gone))
    # Tables share their buffers: where one part is all there is, no copy is made (a new root
    # writes each row to its partition and to history from the same memory).
    merged = _merged_in_order([kept, changed, new])
    written = _merged_in_order([new, changed, stale])
    counts = {
        "new": new.num_rows,
        "changed": changed.num_rows,
        "unchanged": int(same.sum()),
        "stale": int(stale_mask.sum()),
    }
    return merged, written, counts


def _sorted(table: pa.Table) -> pa.Table:
    """``table`` in file order (``conversation_uuid``, ``created_at``, ``uuid``)."""
    return table if table.num_rows < 2 else table.take(pc.sort_indices(table, _SORT))


def _merged_in_order(tables: list[pa.Table]) -> pa.Table:
    """Tables each in file order, as one in file order. Where only one holds rows it is
    returned as it is: no copy (a new root writes each row to its partition and to history
    from the same memory)."""
    parts = [t for t in tables if t.num_rows]
    if len(parts) <= 1:
        return parts[0] if parts else tables[0]
    return _sorted(pa.concat_tables(parts))


def _not_older(a: pa.Table, b: pa.Table) -> np.ndarray:
    """Row-wise: is version ``a`` at or after version ``b`` (``fetched_at``, then ``updated_at``;
    nulls first; a tie goes to ``a``, the later write)?"""
    low = np.iinfo(np.int64).min

    def ints(table: pa.Table, name: str) -> np.ndarray:
        column = table.column(name).combine_chunks().cast(pa.int64())
        return pc.fill_null(column, low).to_numpy()

    fa, fb = ints(a, "fetched_at"), ints(b, "fetched_at")
    ua, ub = ints(a, "updated_at"), ints(b, "updated_at")
    return (fa > fb) | ((fa == fb) & (ua >= ub))


def _latest_record(
    table: pa.Table,
    month: str,
    snapshot_id: str,
    recorded: Recorded | None,
    metadata: Mapping[str, Any],
) -> dict[bytes, bytes]:
    """Key-value metadata of a latest-state file: the write that last changed it, the root's
    filters, the newest fetch in it, and the base URL and ``pii`` of that write."""
    newest = pc.max(table.column("fetched_at")).as_py() if table.num_rows else None
    record: dict[str, Any] = {
        "library_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "layout_version": LAYOUT_VERSION,
        "dataset": "latest",
        PARTITION: month,
        "snapshot_id": snapshot_id,
        "fetched_at": None if newest is None else newest.isoformat(),
        "written_at": datetime.now(timezone.utc).isoformat(),
        "rows": table.num_rows,
        "conversations": len(pc.unique(table.column("conversation_uuid"))),
        "filters": None if recorded is None else recorded.to_json(),
    }
    for key in ("base_url", "pii", "converted_from_layout"):
        if key in metadata:
            record[key] = metadata[key]
    return _encode(record)


def history_record(rows: pa.Table, snapshot_id: str) -> dict[str, Any]:
    """What every history file records in its key-value metadata: versions, its snapshot id,
    when its newest row was fetched and when it was written, its rows and conversations."""
    fetched = pc.max(rows.column("fetched_at")).as_py() if rows.num_rows else None
    now = datetime.now(timezone.utc)
    return {
        "library_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "layout_version": LAYOUT_VERSION,
        "dataset": "history",
        "snapshot_id": snapshot_id,
        "fetched_at": (fetched or now).isoformat(),
        "written_at": now.isoformat(),
        "rows": rows.num_rows,
        "conversations": len(pc.unique(rows.column("conversation_uuid"))),
    }


def with_record(table: pa.Table, record: Mapping[str, Any]) -> pa.Table:
    """``table`` with ``record`` as its ``mihu_frames.*`` key-value metadata (JSON values)."""
    return table.replace_schema_metadata(_encode(record))


def _history_table(
    rows: pa.Table, snapshot_id: str, metadata: Mapping[str, Any], counts: Mapping[str, int]
) -> pa.Table:
    record = history_record(rows, snapshot_id)
    record.update(
        rows_new=counts["new"],
        rows_changed=counts["changed"],
        rows_unchanged=counts["unchanged"],
        rows_stale=counts["stale"],
    )
    for key, value in metadata.items():
        record.setdefault(key, value)
    return with_record(rows, record)


def _encode(record: Mapping[str, Any]) -> dict[bytes, bytes]:
    kv = {
        f"mihu_frames.{k}".encode(): json.dumps(v, default=str).encode() for k, v in record.items()
    }
    return {**(SESSIONS_SCHEMA.metadata or {}), **kv}


def _remove_if_empty(folder: Path) -> None:
    # not empty: a live writer's temporary file of the earlier layout, left alone
    with contextlib.suppress(OSError):
        folder.rmdir()


def file_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``mihu_frames.*`` key-value metadata of one file of a root, decoded."""
    meta = pq.read_schema(path).metadata or {}
    prefix = b"mihu_frames."
    return {
        k[len(prefix) :].decode(): json.loads(v) for k, v in meta.items() if k.startswith(prefix)
    }


def _without_compacted_sources(files: list[Path]) -> list[Path]:
    """Drop files that a compacted file in the list replaces (it is in place, they not yet gone)."""
    replaced: set[str] = set()
    for path in files:
        try:
            sources = file_metadata(path).get("compacted_from") or []
        except (OSError, ValueError, pa.ArrowInvalid):
            continue  # vanished or being replaced: the read lists again
        replaced.update(s for s in sources if s != path.stem)
    return [p for p in files if p.stem not in replaced]


def _infer_recorded(files: Iterable[Path]) -> Recorded:
    """The filters a root of the earlier layout was fetched under, from its files' metadata.

    Per filter, the last value any file recorded that was not None (a sync without filters into
    a tagged root was the mistake the new layout prevents); None if none did.
    """
    status = type_ = None
    for path in files:
        try:
            filters = file_metadata(path).get("filters")
        except (OSError, ValueError, pa.ArrowInvalid):
            continue
        if not isinstance(filters, dict):
            continue
        try:
            one = Recorded.of(filters.get("status"), filters.get("type"))
        except ValueError:
            continue
        status = one.status if one.status is not None else status
        type_ = one.type if one.type is not None else type_
    return Recorded(status, type_)


def recorded_from_rows(rows: pa.Table, metadata: Mapping[str, Any] | None) -> Recorded:
    """What a new root records: the filters in the write's metadata, else the tags it holds."""
    filters = (metadata or {}).get("filters")
    if isinstance(filters, dict):
        try:
            return Recorded.of(filters.get("status"), filters.get("type"))
        except ValueError:
            pass
    values = {}
    for name in TAGS:
        seen = pc.unique(rows.column(name).drop_null()).to_pylist() if rows.num_rows else []
        values[name] = seen or None
    return Recorded.of(values["status"], values["type"])
