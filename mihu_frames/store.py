"""A snapshot root: two Delta Lake tables, written with ``deltalake`` (delta-rs).

Layout (version 3)
------------------
::

    root/                                   a folder, or a URI (s3://bucket/prefix, gs://, az://…)
    ├── latest/                             LATEST STATE: one row per session, merged by uuid
    │   ├── _delta_log/00000000000000000000.json …    the commits (each one atomic)
    │   └── created_month=2026-11/part-….parquet       (created_month=none: no created_at)
    └── versions/                           EVERY VERSION of every session, append-only
        ├── _delta_log/…
        └── fetched_month=2026-11/part-….parquet

Both tables hold the sessions frame plus ``snapshot_id`` (the write that stored the row) and
``insert_order`` (the order the session was first written in: reads return rows in it).
Durations (``duration``, ``time_to_evaluation``, ``time_to_summary``, ``idle_before_end``) are
``int64`` **microseconds** (Delta has no duration type; the table property
``mihu_frames.durations`` says so); :func:`mihu_frames.read_snapshots` restores
``timedelta64[us]``. The table properties of ``latest/`` also hold ``mihu_frames.layout`` (3)
and ``mihu_frames.recorded`` (the status/type filters the root was fetched under, JSON).

*Why ``created_month``:* a session's ``created_at`` does not change, so a session stays in one
partition for good (if it ever changes, the session keeps the partition it is held in); updates
land on recent sessions, so a daily MERGE rewrites the files of the last month or two, not the
table; a time filter skips whole months. ``versions/`` is partitioned by the month of
``fetched_at``: appends land in the current month, compaction merges a month's small files.

How a write lands
-----------------
1. **Compare.** The rows are compared with the latest state (:mod:`mihu_frames.versions`): new,
   changed (tags carried, the held conversation kept), stale (an older fetch) or unchanged.
2. **History first.** New, changed and stale versions are appended to ``versions/`` in one
   commit, whose metadata names the write's ``snapshot_id``.
3. **Then the latest state**, in one commit: sessions held are updated by a MERGE limited to the
   partitions that hold them (``t.uuid = s.uuid AND t.created_month IN (…)``); new sessions are
   inserted without reading any other partition (appended when there is nothing to update).
   The commit carries a Delta *transaction identifier* (``txn``, app id ``mihu_frames``) whose
   version is the ``versions/`` version it reflects. Every such commit conflicts with every
   other one committed since it read the table, so writers are serialized optimistically: the
   loser reads the new state and tries again (bounded, :data:`ATTEMPTS`), and a session is
   never inserted twice.

A process killed after step 2 leaves versions the latest state lacks: the next write (or
compaction) finds every ``versions/`` commit after the latest state's ``txn`` version and merges
its rows first (merging a version twice is a no-op). Readers of ``latest/`` (this library,
Polars ``scan_delta``, DuckDB ``delta_scan``, Spark…) only ever see committed versions of it,
each the state before or after a write. Time travel: ``read_snapshots(root, as_of=…)``.

Roots of the earlier layouts (:mod:`mihu_frames.legacy`) are read as they are and converted by
their first write or compaction: ``versions/`` is created from every version they hold, then
``latest/`` from their latest state, then their files are removed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler

from mihu_frames import legacy
from mihu_frames._files import private_dirs
from mihu_frames._version import __version__
from mihu_frames.errors import NotASnapshotRootError, SnapshotStoreError
from mihu_frames.schema import (
    SCHEMA_VERSION,
    SESSIONS_SCHEMA,
    STATUS_VALUES,
    TIMESTAMP_TYPE,
    TYPE_VALUES,
)
from mihu_frames.versions import (
    HELD_CONVERSATION,
    ORDER,
    SNAPSHOT_ID,
    TAGS,
    latest_versions,
    same_content,
)

__all__ = [
    "FILE_SCHEMA",
    "HISTORY",
    "LATEST",
    "LAYOUT_VERSION",
    "CommitReport",
    "Recorded",
    "SnapshotRoot",
    "new_snapshot_id",
    "open_root",
]

logger = logging.getLogger("mihu_frames")

LAYOUT_VERSION = 3
LATEST = "latest"
HISTORY = "versions"
PARTITION = "created_month"
HISTORY_PARTITION = "fetched_month"
NO_MONTH = "none"
#: The Delta transaction identifier whose version is the ``versions/`` version applied.
APP_ID = "mihu_frames"
#: Commits of the latest state tried before a conflict is an error.
ATTEMPTS = 30
FILE_SCHEMA = legacy.FILE_SCHEMA
DURATIONS = tuple(f.name for f in SESSIONS_SCHEMA if pa.types.is_duration(f.type))
_KEY = "mihu_frames"  # commit metadata: one JSON object under this key
_DURATIONS_NOTE = "int64 microseconds: " + ", ".join(DURATIONS)
_CONFIG = {  # time travel stays possible until prune_before says otherwise
    "delta.logRetentionDuration": "interval 36500 days",
    "delta.enableExpiredLogCleanup": "false",
    "delta.dataSkippingStatsColumns": (
        "conversation_uuid,uuid,created_at,updated_at,fetched_at,snapshot_id,insert_order"
    ),
}
_SORT: list[tuple[str, Literal["ascending", "descending"]]] = [
    ("conversation_uuid", "ascending"),
    ("created_at", "ascending"),
    ("uuid", "ascending"),
]


def _delta_schema(partition: str) -> pa.Schema:
    fields = [pa.field(f.name, pa.int64()) if f.name in DURATIONS else f for f in FILE_SCHEMA]
    return pa.schema([*fields, pa.field(partition, pa.string())])


LATEST_SCHEMA = _delta_schema(PARTITION)
HISTORY_SCHEMA = _delta_schema(HISTORY_PARTITION)


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
    """The settings a root records (table property ``mihu_frames.recorded``); syncs reuse them.

    Attributes
    ----------
    status, type : tuple of str or None
        The filters its sessions were fetched under, in the documented order; None: no filter.
    conversations : str or None
        ``"all"`` once the root was synced or written from every conversation of the account.
    extra : dict
        Settings a newer release recorded and this one does not know: kept as they are.
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


# --------------------------------------------------------------------------- reports


@dataclass(frozen=True)
class CommitReport:
    """What one write did to a root (:meth:`SnapshotRoot.commit`).

    Attributes
    ----------
    snapshot_id : str or None
        The id of the write; None when nothing changed (nothing was written).
    version : int or None
        The version of ``latest/`` this write committed (``read_snapshots(as_of=version)``).
    history_version : int or None
        The version of ``versions/`` that holds this write's versions.
    commit_file : Path or str or None
        The commit of ``latest/`` (``latest/_delta_log/<version>.json``; a URI remotely).
    rows_new, rows_changed, rows_unchanged, rows_stale : int
        Sessions not held; held with other content (replaced); identical to the version held
        (not written); other content but fetched before the version held (history only).
    files_written : tuple of str
        Every data file the write added, to both tables.
    bytes_written : int
        Their total size.
    converted : bool
        The root was in an earlier layout and this write converted it first.
    """

    snapshot_id: str | None = None
    version: int | None = None
    history_version: int | None = None
    commit_file: Path | str | None = None
    rows_new: int = 0
    rows_changed: int = 0
    rows_unchanged: int = 0
    rows_stale: int = 0
    files_written: tuple[str, ...] = ()
    bytes_written: int = 0
    converted: bool = False

    def as_attrs(self) -> dict[str, Any]:
        """The counts for ``df.attrs["mihu_frames"]``."""
        return {
            "rows_new": self.rows_new,
            "rows_changed": self.rows_changed,
            "rows_unchanged": self.rows_unchanged,
            "rows_stale": self.rows_stale,
            "files_written": list(self.files_written),
            "bytes_written": self.bytes_written,
            "version": self.version,
            "history_version": self.history_version,
        }


# --------------------------------------------------------------------------- opening a root


def _is_uri(path: str | os.PathLike[str]) -> bool:
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def open_root(
    path: str | os.PathLike[str],
    *,
    create: bool = False,
    storage_options: Mapping[str, str] | None = None,
) -> SnapshotRoot:
    """The snapshot root at ``path`` (a folder or a URI); with ``create`` a missing or empty
    folder will become one (created by its first :meth:`SnapshotRoot.commit`).

    Raises
    ------
    NotASnapshotRootError
        ``path`` is a file, or a folder that is not a root (with ``create``: a non-empty one;
        without: also a missing or empty one). The message names it.
    SnapshotStoreError
        The storage cannot be reached or refuses (an unknown URI scheme, missing credentials,
        a bucket that does not exist).
    """
    options = dict(storage_options or {})
    if _is_uri(path):
        uri = str(path).rstrip("/")
        return SnapshotRoot(uri, None, _remote_state(uri, options, create), options)
    text = os.fspath(path)
    base = Path(text[len("file://") :] if text.startswith("file://") else text)
    return SnapshotRoot(str(base), base, _local_state(base, create), options)


def _local_state(base: Path, create: bool) -> str:
    if not base.exists():
        if create:
            return "new"
        raise NotASnapshotRootError(base, "it does not exist")
    if not base.is_dir():
        raise NotASnapshotRootError(base, "it is a file, not a folder")
    if (base / LATEST / "_delta_log").is_dir():
        return "delta"
    if legacy.layout(base) is not None:
        return "legacy"
    if (base / HISTORY / "_delta_log").is_dir():
        return "partial"
    if (base / "_delta_log").is_dir():
        parent = base.parent
        if base.name in (LATEST, HISTORY) and (parent / LATEST / "_delta_log").is_dir():
            reason = f"it is the {base.name}/ table of a root; pass the root, {parent}"
        else:
            reason = "it is a Delta table of its own, not a folder holding latest/ and versions/"
        raise NotASnapshotRootError(base, reason)
    visible = sorted(p.name for p in base.iterdir() if not p.name.startswith("."))
    if not visible:
        if create:
            return "new"
        raise NotASnapshotRootError(base, "it is empty (no snapshot was written to it)")
    inside = [n for n in visible if n.startswith((f"{PARTITION}=", "fetched_date="))]
    if inside:
        reason = (
            f"it holds {inside[0]}/ but no _delta_log: it looks like a folder inside a "
            f"root; pass the root, {base.parent}"
        )
    else:
        shown = ", ".join(visible[:5]) + (", ..." if len(visible) > 5 else "")
        reason = f"it holds no {LATEST}/ table and other things ({shown})"
    raise NotASnapshotRootError(base, reason)


def _remote_state(uri: str, options: dict[str, str], create: bool) -> str:
    for name, state in ((LATEST, "delta"), (HISTORY, "partial")):
        try:
            DeltaTable(f"{uri}/{name}", storage_options=options or None, without_files=True)
            return state
        except TableNotFoundError as error:
            if "scheme" in str(error).lower():
                raise _store_error(uri, error, options) from None
            continue
        except (DeltaError, OSError) as error:
            raise _store_error(uri, error, options) from None
    if create:
        return "new"
    raise NotASnapshotRootError(uri, f"it holds no {LATEST}/ Delta table")


def _store_error(uri: str, error: BaseException, options: Mapping[str, str]) -> SnapshotStoreError:
    """``error`` of the storage as a :class:`SnapshotStoreError` naming the root and, where it
    can tell, the cause; every credential (of ``options`` or the usual variables) masked."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).replace("\u21b3", "->")
    text = " ".join(text.split()) or type(error).__name__
    secret = ("SECRET", "TOKEN", "KEY", "PASSWORD", "SAS", "CREDENTIAL")
    values = [v for k, v in options.items() if any(s in k.upper() for s in secret)]
    values += [
        v
        for k, v in os.environ.items()
        if k.startswith(("AWS_", "AZURE_", "GOOGLE_")) and any(s in k.upper() for s in secret)
    ]
    for value in values:
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    hints = []
    if "NoSuchBucket" in text or "ContainerNotFound" in text:
        hints.append("the bucket does not exist")
    if "169.254.169.254" in text or "credential" in text.lower():
        hints.append(
            "no credentials were found: set them in the environment (AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or your cloud's variables) or pass storage_options="
        )
    if "No space left" in text or "ENOSPC" in text:
        hints.append("the disk is full")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return SnapshotStoreError(f"the snapshot root {uri} could not be used{hint}: {text[:500]}")


class SnapshotRoot:
    """One snapshot root: read its latest state and history, write to it, compact it.

    Built by :func:`open_root`. ``state`` is ``"delta"`` (layout 3), ``"partial"`` (``versions/``
    without ``latest/``: a new root or a conversion that a killed process left; completed by
    the next write), ``"legacy"`` (an earlier layout) or ``"new"`` (missing or empty).
    """

    def __init__(
        self, uri: str, local: Path | None, state: str, storage_options: dict[str, str]
    ) -> None:
        self.uri = uri
        self.local = local
        self.state = state
        self.storage_options = storage_options
        self._recorded: Recorded | None = None

    @property
    def path(self) -> Path | str:
        """The folder (a :class:`Path`) or the URI."""
        return self.local if self.local is not None else self.uri

    def __repr__(self) -> str:
        return f"SnapshotRoot({self.uri!r}, state={self.state!r})"

    def _uri(self, table: str) -> str:
        return f"{self.uri}/{table}"

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        """The Delta table ``name`` (:data:`LATEST` or :data:`HISTORY`) at ``version``."""
        try:
            table = DeltaTable(
                self._uri(name), version=version, storage_options=self.storage_options or None
            )
        except TableNotFoundError as error:
            if version is not None and "version" in str(error).lower():
                raise ValueError(f"{self.uri} has no version {version}: {error}") from None
            raise NotASnapshotRootError(self.path, f"its {name}/ table is missing") from None
        except (DeltaError, OSError) as error:
            raise _store_error(self.uri, error, self.storage_options) from None
        names = set(table.schema().to_arrow().names)  # ours, and a layout this release knows
        if not {"uuid", "conversation_uuid", ORDER, SNAPSHOT_ID} <= names:
            shown = sorted(names)[:8]
            raise NotASnapshotRootError(
                self.path,
                f"its {name}/ is a Delta table that is not a mihu_frames root (columns {shown})",
            )
        layout = self.record(name, table.version()).get("layout_version", LAYOUT_VERSION)
        if not isinstance(layout, int) or layout > LAYOUT_VERSION:
            raise ValueError(
                f"the snapshot root {self.uri} has layout version {layout!r}, newer than this "
                f"mihu_frames ({__version__}) knows ({LAYOUT_VERSION}): upgrade mihu_frames"
            )
        return table

    def commit_info(self, name: str, version: int) -> dict[str, Any]:
        """The commit information of ``version`` of table ``name`` (read from its log file,
        locally or on object storage)."""
        if version < 0:
            return {}
        handler = DeltaStorageHandler(self._uri(name), self.storage_options or None)
        try:
            with handler.open_input_file(f"_delta_log/{version:020d}.json") as file:
                text = file.read().decode("utf-8")
        except (OSError, DeltaError):
            return {}
        for line in text.splitlines():
            info = json.loads(line).get("commitInfo") if line.strip() else None
            if info is not None:
                return dict(info)
        return {}

    def record(self, name: str, version: int) -> dict[str, Any]:
        """The ``mihu_frames`` record of the newest commit of ``name`` at or before ``version``
        that has one (a commit another tool made has none)."""
        for at in range(version, max(-1, version - 100), -1):
            info = self.commit_info(name, at).get(_KEY)
            if isinstance(info, dict) and "recorded" in info:
                return info
        return {}

    # ----------------------------------------------------------------------- recorded filters

    @property
    def recorded(self) -> Recorded | None:
        """The recorded settings (None for a new root)."""
        if self._recorded is None:
            data: Mapping[str, Any] | None = None
            if self.state == "legacy" and self.local is not None:
                data = legacy.recorded(self.local)
            elif self.state in ("delta", "partial"):
                name = LATEST if self.state == "delta" else HISTORY
                data = self.record(name, self.table(name).version()).get("recorded") or {}
            self._recorded = None if data is None else Recorded.from_json(data)
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

    def _snapshot(self, name: str, as_of: int | datetime | None) -> DeltaTable:
        if as_of is None or isinstance(as_of, int):
            return self.table(name, as_of)
        dt = self.table(name)
        try:
            dt.load_as_version(as_of)
        except (DeltaError, ValueError) as error:
            raise ValueError(
                f"{self.uri} has no version committed at or before {as_of.isoformat()}: {error}"
            ) from None
        return dt

    def read_latest(
        self,
        columns: Sequence[str] | None = None,
        *,
        conversations: Sequence[str] | None = None,
        since: datetime | None = None,
        as_of: int | datetime | None = None,
    ) -> pa.Table:
        """The latest state (columns of :data:`FILE_SCHEMA`), filters pushed down to the scan;
        ``as_of``: as committed at that version of ``latest/`` or instant."""
        where = _where(conversations, since)
        if self.state == "new":
            raise NotASnapshotRootError(self.path, "nothing was written to it yet")
        if self.state != "delta":
            if as_of is not None:
                raise ValueError(f"{self.uri} has no versions to travel to yet (an old layout)")
            if self.state == "legacy" and self.local is not None:
                table = legacy.latest(self.local)
            else:
                table = latest_versions(self.read_history())
            table = ds.dataset(table).to_table(filter=where) if where is not None else table
            return table if columns is None else table.select(list(columns))
        dataset = self._snapshot(LATEST, as_of).to_pyarrow_dataset()
        return _from_delta(_scan(dataset, columns, where), columns=columns)

    def read_history(
        self,
        columns: Sequence[str] | None = None,
        where: Any = None,
        as_of: datetime | None = None,
    ) -> pa.Table:
        """Every version (columns of :data:`FILE_SCHEMA`), filtered by ``where``."""
        if self.state == "legacy" and self.local is not None:
            return legacy.history(self.local, None if columns is None else list(columns), where)
        if self.state == "new":
            raise NotASnapshotRootError(self.path, "nothing was written to it yet")
        dataset = self._snapshot(HISTORY, as_of).to_pyarrow_dataset()
        return _from_delta(_scan(dataset, columns, where), columns=columns)

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
    ) -> CommitReport:
        """Write ``rows`` (in :data:`SESSIONS_SCHEMA`) to the root: the storage step of a write.

        Creates, converts or completes the root first (:meth:`prepare`), compares ``rows`` with
        the latest state, appends the new, changed and stale versions to ``versions/``, then
        merges the latest state (see the module docstring). ``recorded`` is recorded with the
        root (a new root records the filters the rows were fetched under).

        Examples
        --------
        >>> report = open_root("data/snapshots", create=True).commit(table)  # doctest: +SKIP
        >>> report.rows_new, report.version                                # doctest: +SKIP
        (250, 2)
        """
        rows = rows.select(list(SESSIONS_SCHEMA.names)).cast(SESSIONS_SCHEMA)
        if rows.num_rows and len(pc.unique(rows.column("uuid"))) < rows.num_rows:
            rows = latest_versions(rows).cast(SESSIONS_SCHEMA)
        metadata = dict(metadata or {})
        converted = self.prepare(recorded or recorded_from_rows(rows, metadata))
        settings = self._settings(recorded)
        latest = self.table(LATEST)
        rows = rows.append_column(SNAPSHOT_ID, pa.nulls(rows.num_rows, pa.string()))
        start = _next_order(latest)  # new sessions come last, in the frame's order
        order = np.arange(start, start + rows.num_rows, dtype=np.int64)
        rows = _sorted(rows.append_column(ORDER, pa.array(order)))  # sorted once: statistics
        try:
            held = self._held(latest, rows)
        except (pa.ArrowException, OSError) as error:  # a damaged file: nothing written
            raise _store_error(self.uri, error, self.storage_options) from None
        upserts, versions, counts = _merge(held, rows, _next_order(latest))
        report = CommitReport(
            rows_unchanged=counts["unchanged"], rows_stale=counts["stale"], converted=converted
        )
        if versions.num_rows:
            snapshot_id = new_snapshot_id()
            versions = versions.set_column(
                versions.schema.get_field_index(SNAPSHOT_ID),
                SNAPSHOT_ID,
                pa.array([snapshot_id] * versions.num_rows, pa.string()),
            )
            record = _record(versions, snapshot_id, metadata, counts)
            record["recorded"] = settings.to_json()
            history_version, history_files = self._append_history(versions, record)
            planned = (
                latest.version(),
                held,
                upserts.set_column(
                    upserts.schema.get_field_index(SNAPSHOT_ID),
                    SNAPSHOT_ID,
                    pa.array([snapshot_id] * upserts.num_rows, pa.string()),
                ),
            )
            version, latest_files = self._apply({snapshot_id: versions}, record, planned)
            files = {**history_files, **latest_files}
            report = replace(
                report,
                snapshot_id=snapshot_id,
                version=version,
                history_version=history_version,
                # the latest state's commit; where another writer's commit or none carried
                # these versions into it (stale ones only), the history's, holding the record
                commit_file=(
                    self._commit_file(LATEST, version)
                    if latest_files and version is not None
                    else self._commit_file(HISTORY, history_version)
                ),
                rows_new=counts["new"],
                rows_changed=counts["changed"],
                files_written=tuple(files),
                bytes_written=sum(files.values()),
            )
        else:  # complete what a killed writer left, if anything
            self._apply({}, {"recorded": settings.to_json()})
        if settings != self.recorded:
            self._record_settings(settings)
        self._private()
        logger.info(
            "wrote %s: %d new, %d changed, %d unchanged, %d stale; version %s, %d bytes",
            self.uri,
            report.rows_new,
            report.rows_changed,
            report.rows_unchanged,
            report.rows_stale,
            report.version,
            report.bytes_written,
        )
        return report

    def prepare(self, recorded: Recorded | None = None) -> bool:
        """Before a write or compaction: create a new root, convert a root of an earlier layout,
        or complete one a killed process left without ``latest/``. Returns whether it converted.
        """
        fresh = open_root(
            self.local if self.local is not None else self.uri,
            create=True,
            storage_options=self.storage_options,
        )
        self.state, self._recorded = fresh.state, None
        if self.local is not None:
            private_dirs(self.local)
        if self.state == "delta":
            if self.local is not None and legacy.layout(self.local) is not None:
                legacy.remove(self.local)  # a conversion killed after its commits
            return False
        converted = self.state == "legacy" or (
            self.local is not None and legacy.layout(self.local) is not None
        )
        settings = recorded or Recorded()
        if converted and self.local is not None:
            settings = Recorded.from_json(legacy.recorded(self.local))
        history_rows = latest_rows = None
        if converted and self.local is not None:
            history_rows, latest_rows = legacy.history(self.local), legacy.latest(self.local)
        self._create(HISTORY, history_rows, settings, {"converted_from_layout": converted})
        if latest_rows is None:
            latest_rows = latest_versions(self._read(HISTORY))
        history_version = self.table(HISTORY).version()
        self._create(LATEST, latest_rows, settings, {"history_version": history_version})
        if self.local is not None and converted:
            legacy.remove(self.local)
            logger.info("converted the snapshot root %s to Delta Lake tables", self.uri)
        self.state, self._recorded = "delta", None
        self._private()
        return converted

    def _create(
        self, name: str, rows: pa.Table | None, recorded: Recorded, record: dict[str, Any]
    ) -> None:
        """Create table ``name`` holding ``rows``, unless it exists (another writer, or a killed
        one, made it first: theirs is kept)."""
        partition = PARTITION if name == LATEST else HISTORY_PARTITION
        data = _to_delta(rows if rows is not None else FILE_SCHEMA.empty_table(), partition)
        txn = []
        if name == LATEST:
            txn = [Transaction(APP_ID, int(record["history_version"]))]
        try:
            write_deltalake(
                self._uri(name),
                data,
                partition_by=[partition],
                mode="error",
                name=f"mihu_frames {name}",
                configuration=_CONFIG,
                storage_options=self.storage_options or None,
                commit_properties=CommitProperties(
                    custom_metadata={
                        _KEY: {
                            **_versions(),
                            "dataset": name,
                            "recorded": recorded.to_json(),
                            "durations": _DURATIONS_NOTE,
                            **record,
                        }
                    },
                    app_transactions=txn,
                ),
            )
        except DeltaError as error:
            if "exists" not in str(error).lower():
                raise _store_error(self.uri, error, self.storage_options) from None
            return
        except OSError as error:
            raise _store_error(self.uri, error, self.storage_options) from None

    def _settings(self, recorded: Recorded | None) -> Recorded:
        """What the root records after this write: ``recorded`` (settings it does not know
        kept), else what it records now."""
        held = self.recorded or Recorded()
        if recorded is None:
            return held
        return replace(recorded, extra={**held.extra, **recorded.extra})

    def _record_settings(self, recorded: Recorded) -> None:
        """A commit of the latest state that changes no row and records ``recorded``."""
        record = {**_versions(), "recorded": recorded.to_json(), "settings": True}
        for attempt in range(ATTEMPTS):
            try:
                write_deltalake(
                    self.table(LATEST),
                    _to_delta(FILE_SCHEMA.empty_table(), PARTITION),
                    mode="append",
                    commit_properties=CommitProperties(custom_metadata={_KEY: record}),
                )
                break
            except CommitFailedError:
                _pause(attempt)
            except (DeltaError, OSError) as error:
                raise _store_error(self.uri, error, self.storage_options) from None
        self._recorded = recorded
        logger.debug("recorded with %s: %s", self.uri, recorded.describe())

    def _read(self, name: str, where: Any = None) -> pa.Table:
        return _from_delta(_scan(self.table(name).to_pyarrow_dataset(), None, where))

    def _held(self, latest: DeltaTable, rows: pa.Table) -> pa.Table:
        """The latest state's rows (with their partition) of the sessions in ``rows``: the
        ``uuid`` column of the whole table first, then whole rows from their partitions only."""
        dataset = latest.to_pyarrow_dataset()
        keys = dataset.to_table(columns=["uuid", PARTITION])
        keys = keys.filter(pc.is_in(keys.column("uuid"), value_set=rows.column("uuid")))
        parts = pc.unique(keys.column(PARTITION)).to_pylist()
        found = _scan(dataset, None, pc.field(PARTITION).isin(parts)) if parts else keys
        found = found.filter(pc.is_in(found.column("uuid"), value_set=keys.column("uuid")))
        return _from_delta(found if parts else dataset.schema.empty_table(), PARTITION)

    def _append_history(
        self, versions: pa.Table, record: dict[str, Any]
    ) -> tuple[int, dict[str, int]]:
        """Append ``versions`` to ``versions/`` (a blind append: it never conflicts)."""
        data = _to_delta(versions, HISTORY_PARTITION)
        record = {**record, "months": pc.unique(data.column(HISTORY_PARTITION)).to_pylist()}
        try:
            table = self.table(HISTORY)
            write_deltalake(
                table,
                data,
                mode="append",
                partition_by=[HISTORY_PARTITION],
                commit_properties=CommitProperties(
                    custom_metadata={_KEY: record}, max_commit_retries=1000
                ),
            )
        except (DeltaError, OSError) as error:
            raise _store_error(self.uri, error, self.storage_options) from None
        table.update_incremental()
        version = table.version()
        return version, self._added(HISTORY, version)

    def _pending(self, applied: int) -> tuple[int, dict[str, list[str]]]:
        """The current ``versions/`` version, and the writes after ``applied`` (snapshot id:
        its months), oldest first."""
        current = self.table(HISTORY).version()
        pending: dict[str, list[str]] = {}
        for version in range(applied + 1, current + 1):
            info = self.commit_info(HISTORY, version).get(_KEY) or {}
            for snapshot_id in info.get("snapshot_ids") or [info.get("snapshot_id")]:
                if snapshot_id:
                    pending[snapshot_id] = list(info.get("months") or [])
        return current, pending

    def _apply(
        self,
        mine: Mapping[str, pa.Table],
        record: Mapping[str, Any],
        planned: tuple[int, pa.Table, pa.Table] | None = None,
    ) -> tuple[int | None, dict[str, int]]:
        """Merge every write appended to ``versions/`` that the latest state lacks (``mine``
        is at hand, the others are read back) into ``latest/``, in one commit carrying the
        ``versions/`` version it reflects. Retried on conflict. ``planned``: the latest state's
        version the caller compared with, the rows it held and the rows to write: used as they
        are when the latest state is still that version and ``mine`` is all there is to merge.
        Returns the version committed (None when there was nothing to change) and the files it
        added."""
        for attempt in range(ATTEMPTS):
            latest = self.table(LATEST)
            applied = latest.transaction_version(APP_ID)
            applied = -1 if applied is None else int(applied)
            current, pending = self._pending(applied)
            done = latest.version() if mine else None  # ours applied by another writer
            if not pending:
                return done, {}
            tables = [t for s, t in mine.items() if s in pending]
            others = [s for s in pending if s not in mine]
            if planned is not None and planned[0] == latest.version() and not others:
                held, upserts = planned[1], planned[2]
            else:
                held, upserts = self._plan(latest, tables, others, pending)
            planned = None
            if upserts.num_rows == 0:  # stale versions only: history holds them
                return done, {}
            properties = CommitProperties(
                custom_metadata={_KEY: {**record, "history_version": current}},
                app_transactions=[Transaction(APP_ID, current)],
                max_commit_retries=0,
            )
            data = _to_delta(upserts, PARTITION)
            parts: list[str] = (
                [str(p) for p in pc.unique(held.column(PARTITION)).to_pylist()]
                if held.num_rows
                else []
            )
            try:
                if not parts:  # only new sessions: an append, no partition read
                    write_deltalake(
                        latest,
                        data,
                        mode="append",
                        partition_by=[PARTITION],
                        commit_properties=properties,
                    )
                else:
                    listed = ", ".join("'" + p.replace("'", "''") + "'" for p in parts)
                    latest.merge(
                        data,
                        predicate=f"t.uuid = s.uuid AND t.{PARTITION} IN ({listed})",
                        source_alias="s",
                        target_alias="t",
                        commit_properties=properties,
                    ).when_matched_update_all().when_not_matched_insert_all().execute()
            except CommitFailedError as error:
                logger.debug("%s: commit in conflict (%s), attempt %d", self.uri, error, attempt)
                _pause(attempt)
                continue
            except (DeltaError, OSError) as error:
                raise _store_error(self.uri, error, self.storage_options) from None
            latest.update_incremental()
            version = latest.version()
            return version, self._added(LATEST, version)
        raise SnapshotStoreError(
            f"the snapshot root {self.uri}: the latest state stayed in conflict with other "
            f"writers for {ATTEMPTS} attempts; its versions are in {HISTORY}/ and the next "
            "write completes them"
        )

    def _plan(
        self,
        latest: DeltaTable,
        tables: list[pa.Table],
        others: list[str],
        pending: Mapping[str, list[str]],
    ) -> tuple[pa.Table, pa.Table]:
        """The held rows and the rows to write for the versions at hand (``tables``) and those
        of the writes ``others``, read back from ``versions/``."""
        if others:
            months = sorted({m for s in others for m in pending[s]})
            where = pc.field(SNAPSHOT_ID).isin(others)
            if months:
                where = pc.field(HISTORY_PARTITION).isin(months) & where
            tables = [*tables, self._read(HISTORY, where)]
            logger.info("%s: completing %d earlier write(s): %s", self.uri, len(others), others)
        incoming = latest_versions(pa.concat_tables([t.cast(FILE_SCHEMA) for t in tables]))
        held = self._held(latest, incoming)
        upserts, _, _ = _merge(held, incoming, _next_order(latest))
        return held, upserts

    def _added(self, name: str, version: int) -> dict[str, int]:
        """The data files commit ``version`` of table ``name`` added, with their sizes."""
        after = _files(self.table(name, version))
        before = _files(self.table(name, version - 1)) if version > 0 else {}
        base = self._uri(name)
        return {f"{base}/{p}": s for p, s in after.items() if p not in before}

    def _commit_file(self, table: str, version: int) -> Path | str:
        name = f"{version:020d}.json"
        if self.local is not None:
            return self.local / table / "_delta_log" / name
        return f"{self._uri(table)}/_delta_log/{name}"

    def _private(self) -> None:
        """On a local disk: every folder of the root 0700, every file 0600 (personal data)."""
        if self.local is None or not self.local.is_dir():
            return
        os.chmod(self.local, 0o700)
        for folder, dirs, files in os.walk(self.local):
            for name in dirs:
                _chmod(os.path.join(folder, name), 0o700)
            for name in files:
                _chmod(os.path.join(folder, name), 0o600)


# --------------------------------------------------------------------------- helpers


def _chmod(path: str, mode: int) -> None:
    try:
        if os.stat(path).st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except FileNotFoundError:  # a file a concurrent writer replaced
        pass


def _pause(attempt: int) -> None:
    time.sleep(min(2.0, 0.02 * 2 ** min(attempt, 7)) * (0.5 + random.random()))


def _files(table: DeltaTable) -> dict[str, int]:
    actions = pa.table(table.get_add_actions(flatten=True))
    return dict(
        zip(
            [str(p) for p in actions.column("path").to_pylist()],
            [int(n or 0) for n in actions.column("size_bytes").to_pylist()],
            strict=True,
        )
    )


def _versions() -> dict[str, Any]:
    return {
        "library_version": __version__,
        "schema_version": SCHEMA_VERSION,
        "layout_version": LAYOUT_VERSION,
    }


def _record(
    versions: pa.Table, snapshot_id: str, metadata: Mapping[str, Any], counts: Mapping[str, int]
) -> dict[str, Any]:
    """The commit metadata of a write (``mihu_frames`` in both tables' commit info)."""
    fetched = pc.max(versions.column("fetched_at")).as_py()
    now = datetime.now(timezone.utc)
    record: dict[str, Any] = {
        **_versions(),
        "snapshot_id": snapshot_id,
        "fetched_at": (fetched or now).isoformat(),
        "written_at": now.isoformat(),
        "rows": versions.num_rows,
        "conversations": len(pc.unique(versions.column("conversation_uuid"))),
        "rows_new": counts["new"],
        "rows_changed": counts["changed"],
        "rows_unchanged": counts["unchanged"],
        "rows_stale": counts["stale"],
    }
    for key, value in metadata.items():
        record.setdefault(key, value)
    return json.loads(json.dumps(record, default=str))


def _scan(dataset: ds.Dataset, columns: Sequence[str] | None, where: Any) -> pa.Table:
    """``dataset`` read with ``where`` pushed down. Files that delta-rs's MERGE wrote may hold
    ``string_view`` statistics that pyarrow cannot compare with the table's ``string``: then the
    columns are read and filtered in memory (same rows)."""
    present = set(dataset.schema.names)
    names = None if columns is None else [c for c in columns if c in present]
    try:
        return dataset.to_table(columns=names, filter=where)
    except pa.ArrowNotImplementedError:
        table = dataset.to_table()
        return ds.dataset(table).to_table(columns=names, filter=where)


def _where(conversations: Sequence[str] | None, since: datetime | None) -> Any:
    where = None
    if conversations is not None:
        where = pc.field("conversation_uuid").isin(list(conversations))
    if since is not None:
        recent = pc.field("updated_at") >= pa.scalar(since, TIMESTAMP_TYPE)
        where = recent if where is None else where & recent
    return where


def _months(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``YYYY-MM`` of each instant (UTC), ``none`` where null: a partition value (each distinct
    month formatted once)."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    stamps = cast(pa.TimestampArray, values)  # timestamps (the stubs type them apart)
    month = pc.add(pc.multiply(pc.year(stamps), 100), pc.month(stamps))
    keys = np.asarray(pc.fill_null(month, pa.scalar(-1, pa.int64())))
    distinct, inverse = np.unique(keys, return_inverse=True)
    names = [NO_MONTH if k < 0 else f"{k // 100:04d}-{k % 100:02d}" for k in distinct.tolist()]
    return pa.array(names, pa.string()).take(pa.array(inverse.astype(np.int64), pa.int64()))


def _to_delta(table: pa.Table, partition: str) -> pa.Table:
    """Rows of :data:`FILE_SCHEMA` as the Delta tables hold them: durations as int64
    microseconds, and the partition column (kept where the rows have one)."""
    if partition not in table.column_names:
        source = "created_at" if partition == PARTITION else "fetched_at"
        table = table.append_column(partition, _months(table.column(source)))
    schema = LATEST_SCHEMA if partition == PARTITION else HISTORY_SCHEMA
    return table.select(schema.names).cast(schema)


def _from_delta(
    table: pa.Table, keep: str | None = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """Rows read from a Delta table in :data:`FILE_SCHEMA` (durations restored; ``columns``, or
    all, a column a table of an older schema lacks being null); ``keep`` a partition column."""
    for name in columns if columns is not None else FILE_SCHEMA.names:
        if name not in table.column_names:
            table = table.append_column(
                name, pa.nulls(table.num_rows, FILE_SCHEMA.field(name).type)
            )
    fields = [f for f in FILE_SCHEMA if f.name in table.column_names]
    if keep is not None:
        fields.append(pa.field(keep, pa.string()))
    return table.select([f.name for f in fields]).cast(pa.schema(fields))


def _sorted(table: pa.Table) -> pa.Table:
    return table if table.num_rows < 2 else table.take(pc.sort_indices(table, _SORT))


def _next_order(latest: DeltaTable) -> int:
    """One more than the largest :data:`ORDER` held (from the files' statistics)."""
    actions = pa.table(latest.get_add_actions(flatten=True))
    name = f"max.{ORDER}"
    if actions.num_rows == 0:
        return 0
    if name in actions.column_names and actions.column(name).null_count == 0:
        largest = pc.max(actions.column(name)).as_py()
    else:
        held = latest.to_pyarrow_dataset().to_table(columns=[ORDER]).column(ORDER)
        largest = pc.max(held).as_py() if len(held) else None
    return 0 if largest is None else int(largest) + 1


def _merge(
    held: pa.Table, incoming: pa.Table, next_order: int
) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """Compare ``incoming`` (one row per session, :data:`FILE_SCHEMA`) with the ``held`` rows
    of those sessions (with their partition).

    Returns the rows to write to the latest state (new and changed sessions, with their
    partition: the held one for a held session), the versions to add to history (new,
    changed and stale, tags carried, the held conversation kept) and the counts. See
    :mod:`mihu_frames.versions` for the rules.
    """
    incoming = incoming.cast(FILE_SCHEMA)
    found = pc.index_in(incoming.column("uuid"), value_set=held.column("uuid").combine_chunks())
    found = found.combine_chunks() if isinstance(found, pa.ChunkedArray) else found
    is_new = np.asarray(pc.is_null(found).to_numpy(zero_copy_only=False), dtype=bool)
    matched = incoming.filter(pa.array(~is_new))
    before = held.take(found.filter(pa.array(~is_new)))
    for name in (ORDER, HELD_CONVERSATION):  # a session keeps its place and its conversation
        index = matched.schema.get_field_index(name)
        matched = matched.set_column(index, name, before.column(name))
    for name in TAGS:  # an untagged row keeps the tag held
        index = matched.schema.get_field_index(name)
        tag = pc.coalesce(
            matched.column(name).combine_chunks(), before.column(name).combine_chunks()
        )
        matched = matched.set_column(index, name, tag)
    same = same_content(matched, before)
    newer = _not_older(matched, before)
    changed_mask = pa.array(~same & newer)
    stale = matched.filter(pa.array(~same & ~newer))
    changed = matched.filter(changed_mask)
    new = incoming.filter(pa.array(is_new))
    order = pa.array(np.arange(next_order, next_order + new.num_rows, dtype=np.int64))
    filled = pc.coalesce(new.column(ORDER).combine_chunks(), order)
    new = new.set_column(new.schema.get_field_index(ORDER), ORDER, filled)
    upserts = pa.concat_tables(
        [
            changed.append_column(PARTITION, before.column(PARTITION).filter(changed_mask)),
            new.append_column(PARTITION, _months(new.column("created_at"))),
        ]
    )
    versions = pa.concat_tables([new, changed, stale])
    counts = {
        "new": new.num_rows,
        "changed": changed.num_rows,
        "unchanged": int(same.sum()),
        "stale": stale.num_rows,
    }
    return upserts, versions, counts


def _not_older(a: pa.Table, b: pa.Table) -> np.ndarray:
    """Row-wise: is version ``a`` at or after version ``b`` (``fetched_at``, then ``updated_at``;
    nulls first; a tie goes to ``a``, the later write)?"""
    low = np.iinfo(np.int64).min

    def ints(table: pa.Table, name: str) -> np.ndarray:
        column = table.column(name).combine_chunks().cast(pa.int64())
        return np.asarray(pc.fill_null(column, pa.scalar(low, pa.int64())))

    fa, fb = ints(a, "fetched_at"), ints(b, "fetched_at")
    ua, ub = ints(a, "updated_at"), ints(b, "updated_at")
    return (fa > fb) | ((fa == fb) & (ua >= ub))
