"""The write path of a snapshot root: superseded versions first, then the latest state.

:class:`Writer` compares a write's rows with the latest state (:mod:`.merging`), appends the
versions its changes supersede (and stale ones) to ``versions/``, then commits the latest state
in one commit, made again on the new state when another writer committed first (bounded,
:data:`~mihu_frames.store.layout.ATTEMPTS`). The rules are in the docstring of
:mod:`mihu_frames.store`; :class:`CommitReport` is what a write did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, RemoveAction

from mihu_frames.errors import SnapshotStoreError
from mihu_frames.store.files import WORKERS, Holding, Written, groups, removal
from mihu_frames.store.layout import (
    _KEY,
    APP_ID,
    ATTEMPTS,
    COMPLETE_BEFORE,
    FILE_SCHEMA,
    HISTORY,
    HISTORY_PARTITION,
    LATEST,
    LATEST_SCHEMA,
    PARTITION,
    _files,
    _from_delta,
    _pause,
    _to_delta,
    _versions,
    new_snapshot_id,
)
from mihu_frames.store.merging import Merged, _merge, _next_order, _record
from mihu_frames.store.reading import same_versions
from mihu_frames.store.recorded import Recorded
from mihu_frames.store.tables import Tables
from mihu_frames.versions import ORDER, SNAPSHOT_ID

__all__ = ["CommitReport", "Writer"]

logger = logging.getLogger("mihu_frames")

#: The column a held row carries the index of its file in (in :attr:`Planned.holding`).
FILE = "__file"
_KEEP = "__keep"  # a row of a file copied on write that the copy keeps


@dataclass
class Planned:
    """A write as planned against one version of the latest state.

    Attributes
    ----------
    table : DeltaTable or None
        The version of ``latest/`` compared with (None: none yet).
    held : pa.Table
        Its rows of the sessions written (with their partition, and in :data:`FILE` their
        position in ``content``).
    content : pa.Table
        Every row of the files holding ``held`` (the Delta table's columns): the files a
        changed session is copied out of.
    holding : Holding
        Those files.
    merged : Merged
        What goes to each table.
    written : Written or None
        The files of ``latest/`` already written for it (None: not yet).
    """

    table: DeltaTable | None
    held: pa.Table
    content: pa.Table
    holding: Holding
    merged: Merged
    written: Written | None = None

    @property
    def version(self) -> int:
        """The version of ``latest/`` compared with (-1: none yet)."""
        return -1 if self.table is None else self.table.version()

    @property
    def upserts(self) -> pa.Table:
        """The rows for the latest state."""
        return self.merged.upserts


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
        The version of ``versions/`` that holds the versions this write superseded (None: it
        superseded none).
    commit_file : Path or str or None
        The commit of ``latest/`` (``latest/_delta_log/<version>.json``; a URI remotely), or of
        ``versions/`` for a write of stale versions only.
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


class Writer:
    """Writes to the root whose tables are ``tables`` (``versions/`` exists: see
    :meth:`mihu_frames.store.SnapshotRoot.prepare`)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def write(
        self,
        rows: pa.Table,
        metadata: Mapping[str, Any],
        settings: Recorded,
        converted: bool = False,
        first: bool = False,
    ) -> CommitReport:
        """Write ``rows`` (one row per session, :data:`SESSIONS_SCHEMA`): compare them with the
        latest state, append the versions they supersede (and stale ones) to ``versions/``,
        then commit the latest state; on a conflict with another writer, again on the new
        state (bounded, :data:`ATTEMPTS`). ``settings`` are recorded with the write;
        ``converted`` goes to the report. ``first``: ``latest/`` does not exist yet (a new
        root), and is created holding this write's rows."""
        snapshot_id = new_snapshot_id()
        rows = _stamped(rows, snapshot_id)
        appended: list[pa.Table] = []  # this write's own (stale) versions copied so far
        history: tuple[int | None, dict[str, int]] = (None, {})
        for attempt in range(ATTEMPTS):
            latest = None if first else self.tables.table(LATEST)
            planned = self.plan(latest, rows)
            merged = planned.merged
            report = CommitReport(
                rows_new=merged.counts["new"],
                rows_changed=merged.counts["changed"],
                rows_unchanged=merged.counts["unchanged"],
                rows_stale=merged.counts["stale"],
                converted=converted,
            )
            superseded = _not_in(merged.history, appended, settings.extra.get(COMPLETE_BEFORE))
            if not (merged.upserts.num_rows or superseded.num_rows):
                if first:  # an empty first write: an empty latest state
                    applied = self.tables.table(HISTORY).version()
                    self.tables.create(LATEST, None, settings, {"history_version": applied})
                return _ended(report, history, snapshot_id if history[0] is not None else None)
            record = _record(merged.versions, snapshot_id, metadata, merged.counts)
            record["recorded"] = settings.to_json()
            added = self.write_files(superseded, planned)
            if added:
                try:
                    history = self.append_history(added, record)
                except SnapshotStoreError:
                    self.tables.files(LATEST).delete((planned.written or Written()).sizes)
                    raise
                appended.append(_own(superseded, snapshot_id))
            if not merged.upserts.num_rows:  # stale versions only: history holds them
                return _ended(report, history, snapshot_id, self.tables)
            if first:
                if self.create_latest(planned, record, settings):
                    written = (planned.written or Written()).at(self.tables.uri_of(LATEST))
                    return _ended(report, history, snapshot_id, self.tables, (0, written))
                first = False  # another writer created it first: compare with theirs
            else:
                assert latest is not None
                outcome = self.commit_latest(latest, planned, record, history[0])
                if outcome is not None:
                    return _ended(report, history, snapshot_id, self.tables, outcome)
            _pause(attempt)
        raise SnapshotStoreError(
            f"the snapshot root {self.tables.uri}: the latest state stayed in conflict with "
            f"other writers for {ATTEMPTS} attempts; this write is not in it (write it again)"
        )

    def plan(self, latest: DeltaTable | None, rows: pa.Table) -> Planned:
        """Compare ``rows`` with ``latest`` (None: a new root): the ``uuid`` column of the
        whole table first, then every row of the files holding one of them."""
        start = 0 if latest is None else _next_order(latest)
        if latest is None:
            empty = _from_delta(LATEST_SCHEMA.empty_table(), PARTITION)
            held = empty.append_column(FILE, pa.array([], pa.int64()))
            nothing = (LATEST_SCHEMA.empty_table(), Holding())
            return Planned(None, held, *nothing, _merge(held, rows, start))
        files = self.tables.files(LATEST)
        try:
            dataset = files.dataset(latest)
            holding = files.holding(dataset, "uuid", rows.column("uuid"))
            content = files.read(dataset, holding, "uuid")
        except (pa.ArrowException, OSError) as error:  # a damaged file: nothing written
            raise self.tables.error(error) from None
        mine = holding.positions()  # the rows of content holding a session written
        held = _from_delta(content.take(mine), PARTITION).append_column(FILE, pa.array(mine))
        return Planned(latest, held, content, holding, _merge(held, rows, start))

    def write_files(self, history: pa.Table, planned: Planned) -> list[AddAction]:
        """Write the files of both commits at once: ``history`` for ``versions/`` (returned)
        and ``planned``'s for ``latest/`` (kept in it). On failure none is left."""
        files = self.tables.files(HISTORY)
        with ThreadPoolExecutor(2) as pool:
            history_files = pool.submit(
                files.write, _to_delta(history, HISTORY_PARTITION), HISTORY_PARTITION
            )
            latest_files = pool.submit(self.prepare, planned)
            try:
                added = history_files.result()
                planned.written = latest_files.result()
            except (DeltaError, OSError, pa.ArrowException) as error:
                if not history_files.exception():
                    files.delete(a.path for a in history_files.result())
                if not latest_files.exception():
                    self.tables.files(LATEST).delete(latest_files.result().sizes)
                raise self.tables.error(error) from None
        return added

    def create_latest(self, planned: Planned, record: dict[str, Any], settings: Recorded) -> bool:
        """Create ``latest/`` holding the files ``planned`` wrote (a new root's first write).
        False, and those files removed, when another writer created it first."""
        adds = planned.written.adds if planned.written else []
        record = {**record, "history_version": self.tables.table(HISTORY).version()}
        if self.tables.create(LATEST, None, settings, record, adds=adds):
            return True
        self.tables.files(LATEST).delete(a.path for a in adds)
        return False

    def record_settings(self, recorded: Recorded) -> None:
        """A commit of the latest state that changes no row and records ``recorded``."""
        record = {**_versions(), "recorded": recorded.to_json(), "settings": True}
        for attempt in range(ATTEMPTS):
            try:
                write_deltalake(
                    self.tables.table(LATEST),
                    _to_delta(FILE_SCHEMA.empty_table(), PARTITION),
                    mode="append",
                    commit_properties=CommitProperties(custom_metadata={_KEY: record}),
                )
                break
            except CommitFailedError:
                _pause(attempt)
            except (DeltaError, OSError) as error:
                raise self.tables.error(error) from None
        logger.debug("recorded with %s: %s", self.tables.uri, recorded.describe())

    def prepare(self, planned: Planned) -> Written:
        """Write the files of ``planned``'s commit: the rows of the files holding a changed
        session with its new version (copy on write: the other files are left alone), one
        file per month, and the new sessions. Nothing is committed."""
        held, upserts = planned.held, planned.upserts
        if not upserts.num_rows:
            return Written()
        index = pc.index_in(upserts.column("uuid"), value_set=held.column("uuid"))
        is_changed = pc.is_valid(index)
        data = _to_delta(upserts, PARTITION)
        files = self.tables.files(LATEST)
        if not pc.any(is_changed).as_py():
            return Written(files.write(data, PARTITION))
        replaced = np.asarray(held.column(FILE).take(index.filter(is_changed)))  # in content
        homes = planned.holding.homes()
        touched = np.unique(homes[replaced])
        keep = np.isin(homes, touched)
        keep[replaced] = False
        content = planned.content.select(data.column_names).cast(data.schema)
        by_month: dict[str, list[pa.Table]] = {}
        for rows, month in groups(content.append_column(_KEEP, pa.array(keep)), PARTITION):
            by_month.setdefault(month, []).append(rows)
        for rows, month in groups(data, PARTITION):
            by_month.setdefault(month, []).append(rows)

        def kept(item: tuple[str, list[pa.Table]]) -> tuple[pa.Table, str]:
            month, tables = item
            tables = [
                t.filter(t.column(_KEEP)).drop_columns([_KEEP]) if _KEEP in t.column_names else t
                for t in tables
            ]
            return pa.concat_tables(tables), month

        with ThreadPoolExecutor(WORKERS) as pool:  # the copies made at once, a month each
            parts = [p for p in pool.map(kept, by_month.items()) if p[0].num_rows]
        adds = files.write_parts(parts, PARTITION)
        sizes = _files(planned.table) if planned.table is not None else {}
        removes = []
        for i in touched.tolist():
            fragment = planned.holding.fragments[i]
            value = ds.get_partition_keys(fragment.partition_expression).get(PARTITION)
            removes.append(removal(fragment.path, sizes[fragment.path], {PARTITION: value}))
        return Written(adds, removes)

    def append_history(
        self, added: list[AddAction], record: dict[str, Any]
    ) -> tuple[int, dict[str, int]]:
        """Commit the files ``added`` to ``versions/`` (a blind append: it never conflicts)."""
        table = self.tables.table(HISTORY)
        try:
            table.create_write_transaction(
                list[AddAction | RemoveAction](added),
                mode="append",
                schema=table.schema(),
                partition_by=[HISTORY_PARTITION],
                commit_properties=CommitProperties(
                    custom_metadata={_KEY: record}, max_commit_retries=1000
                ),
            )
        except (DeltaError, OSError) as error:
            self.tables.files(HISTORY).delete(a.path for a in added)
            raise self.tables.error(error) from None
        table.update_incremental()
        version = table.version()
        return version, Written(added).at(self.tables.uri_of(HISTORY))

    def commit_latest(
        self,
        latest: DeltaTable,
        planned: Planned,
        record: Mapping[str, Any],
        history_version: int | None,
    ) -> tuple[int, dict[str, int]] | None:
        """Commit ``planned``'s files to ``latest`` (the version it was planned against):
        its version and the files it added, or None when another writer committed since (the
        files are then removed). The commit carries a ``txn`` of :data:`APP_ID`, so any two
        commits of the latest state made from one version conflict."""
        files = self.tables.files(LATEST)
        written = planned.written or Written()
        current = history_version if history_version is not None else -1
        properties = CommitProperties(
            custom_metadata={_KEY: {**record, "history_version": history_version}},
            app_transactions=[Transaction(APP_ID, max(current, planned.version + 1))],
            max_commit_retries=0,
        )
        try:
            latest.create_write_transaction(
                written.actions,
                mode="append",
                schema=latest.schema(),
                partition_by=[PARTITION],
                commit_properties=properties,
            )
        except CommitFailedError as error:
            logger.debug("%s: commit in conflict (%s)", self.tables.uri, error)
            files.delete(written.sizes)
            return None
        except (DeltaError, OSError, pa.ArrowException) as error:
            # kept: the commit may have landed on object storage; compaction removes strays
            raise self.tables.error(error) from None
        latest.update_incremental()
        return latest.version(), written.at(self.tables.uri_of(LATEST))


def _ended(
    report: CommitReport,
    history: tuple[int | None, dict[str, int]],
    snapshot_id: str | None,
    tables: Tables | None = None,
    latest: tuple[int, dict[str, int]] | None = None,
) -> CommitReport:
    """``report`` completed with what was committed: ``history`` (the ``versions/`` version
    and files) and ``latest`` (the ``latest/`` version and files)."""
    history_version, history_files = history
    files = {**history_files, **(latest[1] if latest else {})}
    commit_file = None
    if tables is not None and latest is not None:
        commit_file = tables.commit_file(LATEST, latest[0])
    elif tables is not None and history_version is not None:
        commit_file = tables.commit_file(HISTORY, history_version)
    return replace(
        report,
        snapshot_id=snapshot_id,
        version=latest[0] if latest else None,
        history_version=history_version,
        commit_file=commit_file,
        files_written=tuple(files),
        bytes_written=sum(files.values()),
    )


def _not_in(rows: pa.Table, appended: list[pa.Table], complete_before: str | None) -> pa.Table:
    """``rows`` but the versions ``versions/`` holds already: those ``appended`` (an earlier
    attempt's), and those written up to ``complete_before``."""
    if complete_before is not None and rows.num_rows:
        written = pc.fill_null(rows.column(SNAPSHOT_ID), pa.scalar("", pa.string()))
        later = pc.greater(written, pa.scalar(str(complete_before)))
        rows = rows.filter(cast("pa.BooleanArray", later))
    if not appended or not rows.num_rows:
        return rows
    return rows.filter(pa.array(~same_versions(rows, pa.concat_tables(appended))))


def _stamped(rows: pa.Table, snapshot_id: str) -> pa.Table:
    """``rows`` with :data:`SNAPSHOT_ID` (``snapshot_id``, unless they carry the ids of the
    writes that fetched them) and :data:`ORDER` (set when they are compared)."""
    n = rows.num_rows
    if SNAPSHOT_ID not in rows.column_names:
        rows = rows.append_column(SNAPSHOT_ID, pa.repeat(pa.scalar(snapshot_id), n))
    return rows.append_column(ORDER, pa.nulls(n, pa.int64()))


def _own(rows: pa.Table, snapshot_id: str) -> pa.Table:
    """The rows of this write (its stale versions): not copied twice. The versions it replaces
    are copied again on every attempt: compaction may have dropped a copy of a version that
    was current until then."""
    return rows.filter(pc.equal(rows.column(SNAPSHOT_ID), pa.scalar(snapshot_id, pa.string())))
