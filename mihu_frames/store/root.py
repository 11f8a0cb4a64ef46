"""A snapshot root, as the rest of the library uses it: :func:`open_root` and
:class:`SnapshotRoot`, which puts together its tables (:mod:`.tables`), reading
(:mod:`.reading`) and the write path (:mod:`.writing`), and keeps what it records."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from mihu_frames import legacy
from mihu_frames._files import private_dirs
from mihu_frames.schema import SESSIONS_SCHEMA
from mihu_frames.store.layout import (
    _KEY,
    APP_ID,
    COMPLETE_BEFORE,
    FILE_SCHEMA,
    HISTORY,
    LATEST,
    _is_uri,
)
from mihu_frames.store.opening import local_state, remote_state
from mihu_frames.store.reading import Reader
from mihu_frames.store.recorded import Recorded, recorded_from_rows
from mihu_frames.store.tables import Tables
from mihu_frames.store.writing import CommitReport, Writer
from mihu_frames.versions import SNAPSHOT_ID, latest_versions

__all__ = ["SnapshotRoot", "open_root"]

logger = logging.getLogger("mihu_frames")


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
        return SnapshotRoot(uri, None, remote_state(uri, options, create), options)
    text = os.fspath(path)
    base = Path(text[len("file://") :] if text.startswith("file://") else text)
    return SnapshotRoot(str(base), base, local_state(base, create), options)


class SnapshotRoot:
    """One snapshot root: read its latest state and history, write to it, compact it.

    Built by :func:`open_root`. ``state`` is ``"delta"`` (layout 3 or 4), ``"partial"``
    (``versions/`` without ``latest/``: a new root or a conversion that a killed process left;
    completed by the next write), ``"legacy"`` (an earlier layout) or ``"new"`` (missing or
    empty).
    ``tables``, ``reader`` and ``writer`` are its parts.
    """

    def __init__(
        self, uri: str, local: Path | None, state: str, storage_options: dict[str, str]
    ) -> None:
        self.tables = Tables(uri, local, storage_options)
        self.reader = Reader(self.tables)
        self.writer = Writer(self.tables)
        self.state = state
        self._recorded: Recorded | None = None
        self._record: dict[str, Any] = {}  # the commit record the settings were read from

    @property
    def uri(self) -> str:
        """The folder's path or the URI, as a string."""
        return self.tables.uri

    @property
    def local(self) -> Path | None:
        """The folder, for a root on a local disk."""
        return self.tables.local

    @property
    def storage_options(self) -> dict[str, str]:
        """The options passed to ``deltalake``."""
        return self.tables.storage_options

    @property
    def path(self) -> Path | str:
        """The folder (a :class:`Path`) or the URI."""
        return self.tables.path

    def __repr__(self) -> str:
        return f"SnapshotRoot({self.uri!r}, state={self.state!r})"

    # ----------------------------------------------------------------------- the tables

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        """The Delta table ``name`` (:data:`LATEST` or :data:`HISTORY`) at ``version``."""
        return self.tables.table(name, version)

    def commit_info(self, name: str, version: int) -> dict[str, Any]:
        """The commit information of ``version`` of table ``name`` (read from its log file,
        locally or on object storage)."""
        return self.tables.commit_info(name, version)

    def record(self, name: str, version: int) -> dict[str, Any]:
        """The ``mihu_frames`` record of the newest commit of ``name`` at or before ``version``
        that has one (a commit another tool made has none)."""
        return self.tables.record(name, version)

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
                self._record = self.tables.record(name, self.tables.table(name).version())
                data = self._record.get("recorded") or {}
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
    # ----------------------------------------------------------------------- reading

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
        return self.reader.latest(
            self.state, columns, conversations=conversations, since=since, as_of=as_of
        )

    def read_history(
        self,
        columns: Sequence[str] | None = None,
        where: Any = None,
        as_of: datetime | None = None,
    ) -> pa.Table:
        """Every version (columns of :data:`FILE_SCHEMA`), filtered by ``where``."""
        return self.reader.history(self.state, columns, where, as_of)

    def held_keys(self, conversations: Sequence[str]) -> pa.Table:
        """``conversation_uuid``, ``uuid``, ``updated_at``, ``fetched_at`` of the latest state of
        ``conversations`` (empty for a new root)."""
        return self.reader.held_keys(self.state, conversations)

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
        the latest state, appends the versions it replaces (and stale ones) to ``versions/``,
        then commits the latest state (see the module docstring). ``recorded`` is recorded with the
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
        report = self.writer.write(rows, metadata, settings, converted, self.state == "partial")
        self.state = "delta"
        if settings != self.recorded:
            self.writer.record_settings(settings)
            self._recorded = settings
        self.tables.private()
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
            self._complete_before()
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
        self.tables.create(HISTORY, history_rows, settings, {"converted_from_layout": converted})
        if latest_rows is None:
            latest_rows = latest_versions(self.tables.read(HISTORY))
            if latest_rows.num_rows == 0:  # a new root: its first write creates latest/
                self.state, self._recorded = "partial", None
                self.tables.private()
                return False
        settings = self._completed(settings)  # versions/ holds every version written so far
        history_version = self.tables.table(HISTORY).version()
        self.tables.create(LATEST, latest_rows, settings, {"history_version": history_version})
        if self.local is not None and converted:
            legacy.remove(self.local)
            logger.info("converted the snapshot root %s to Delta Lake tables", self.uri)
        self.state, self._recorded = "delta", None
        self.tables.private()
        return converted

    def _complete_before(self) -> None:
        """A root of layout 3 (``versions/`` held every version) records, once, that the
        versions written so far are all in ``versions/`` (:data:`COMPLETE_BEFORE`)."""
        held = self.recorded or Recorded()
        named = self._record.get("layout_version")
        if COMPLETE_BEFORE in held.extra or (isinstance(named, int) and named >= 4):
            return  # the newest record, read for the settings, names this layout: no more I/O
        latest = self.tables.table(LATEST)
        layout = self.tables.layout(LATEST, latest.version())
        if layout is None or layout >= 4:
            return
        pending = self._pending(latest)
        settings = self._completed(held, earlier=True)
        self.writer.record_settings(settings)
        self._recorded = None
        if pending.num_rows:  # a write layout 3 left half done: its next write completed it
            logger.info("%s: completing %d version(s) of layout 3", self.uri, pending.num_rows)
            self.writer.write(pending, {"completed": True}, settings)

    def _pending(self, latest: DeltaTable) -> pa.Table:
        """The latest versions of the writes a layout-3 root holds in ``versions/`` and not in
        ``latest/`` (a writer killed between the two; that layout's next write merged them):
        every ``versions/`` commit after the one ``latest/``'s ``txn`` names."""
        applied = latest.transaction_version(APP_ID)
        current = self.tables.table(HISTORY).version()
        ids: list[str] = []
        for version in range(-1 if applied is None else int(applied) + 1, current + 1):
            info = self.tables.commit_info(HISTORY, version).get(_KEY) or {}
            ids += [i for i in info.get("snapshot_ids") or [info.get("snapshot_id")] if i]
        if applied is None or not ids:
            return FILE_SCHEMA.empty_table()
        rows = latest_versions(self.tables.read(HISTORY, pc.field(SNAPSHOT_ID).isin(ids)))
        return rows.select([*SESSIONS_SCHEMA.names, SNAPSHOT_ID])

    def _completed(self, settings: Recorded, earlier: bool = False) -> Recorded:
        """``settings`` recording the newest version ``versions/`` holds (it holds every
        version written until then, :data:`COMPLETE_BEFORE`). ``earlier``: as the newest commit
        of an earlier layout left it, so that every writer of this release computes the same
        value, whatever another one appended since."""
        table = self.tables.table(HISTORY)
        version = table.version()
        if earlier:
            while version > 0 and (self.tables.layout_of(HISTORY, version) or 0) >= 4:
                version -= 1
            table = self.tables.table(HISTORY, version)
        dataset = self.tables.dataset(HISTORY, table)
        newest = pc.max(dataset.to_table(columns=[SNAPSHOT_ID]).column(SNAPSHOT_ID))
        value = newest.as_py() or ""
        return replace(settings, extra={**settings.extra, COMPLETE_BEFORE: value})

    def _settings(self, recorded: Recorded | None) -> Recorded:
        """What the root records after this write: ``recorded`` (settings it does not know
        kept), else what it records now."""
        held = self.recorded or Recorded()
        if recorded is None:
            return held
        return replace(recorded, extra={**held.extra, **recorded.extra})

    # ----------------------------------------------------------------------- for compaction

    def _read(self, name: str, where: Any = None) -> pa.Table:
        """:meth:`Tables.read`."""
        return self.tables.read(name, where)

    def _private(self) -> None:
        """:meth:`Tables.private`."""
        self.tables.private()
