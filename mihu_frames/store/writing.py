"""The write path of a snapshot root: history first, then one commit of the latest state.

:class:`Writer` compares a write's rows with the latest state (:mod:`.merging`), appends the
new, changed and stale versions to ``versions/``, then merges every write ``versions/`` holds
that the latest state lacks into ``latest/``, in one commit carrying the ``versions/`` version
it reflects (retried on conflict, :data:`~mihu_frames.store.layout.ATTEMPTS`). The rules are in
the docstring of :mod:`mihu_frames.store`; :class:`CommitReport` is what a write did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError

from mihu_frames.errors import SnapshotStoreError
from mihu_frames.store.layout import (
    _KEY,
    APP_ID,
    ATTEMPTS,
    FILE_SCHEMA,
    HISTORY,
    HISTORY_PARTITION,
    LATEST,
    PARTITION,
    _from_delta,
    _pause,
    _scan,
    _sorted,
    _to_delta,
    _versions,
    new_snapshot_id,
)
from mihu_frames.store.merging import _merge, _next_order, _record
from mihu_frames.store.recorded import Recorded
from mihu_frames.store.tables import Tables
from mihu_frames.versions import ORDER, SNAPSHOT_ID, latest_versions

__all__ = ["CommitReport", "Writer"]

logger = logging.getLogger("mihu_frames")

#: The latest state's version a write compared with, the rows it held and the rows to write.
Planned = tuple[int, pa.Table, pa.Table]


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


class Writer:
    """Writes to the root whose tables are ``tables`` (which exist: see
    :meth:`mihu_frames.store.SnapshotRoot.prepare`)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def write(
        self,
        rows: pa.Table,
        metadata: Mapping[str, Any],
        settings: Recorded,
        converted: bool = False,
    ) -> CommitReport:
        """Write ``rows`` (one row per session, :data:`SESSIONS_SCHEMA`): compare, append the
        versions to history, then merge the latest state. ``settings`` are recorded with the
        write; ``converted`` goes to the report."""
        latest = self.tables.table(LATEST)
        rows = rows.append_column(SNAPSHOT_ID, pa.nulls(rows.num_rows, pa.string()))
        start = _next_order(latest)  # new sessions come last, in the frame's order
        order = np.arange(start, start + rows.num_rows, dtype=np.int64)
        rows = _sorted(rows.append_column(ORDER, pa.array(order)))  # sorted once: statistics
        try:
            held = self.held(latest, rows)
        except (pa.ArrowException, OSError) as error:  # a damaged file: nothing written
            raise self.tables.error(error) from None
        upserts, versions, counts = _merge(held, rows, _next_order(latest))
        report = CommitReport(
            rows_unchanged=counts["unchanged"], rows_stale=counts["stale"], converted=converted
        )
        if not versions.num_rows:  # complete what a killed writer left, if anything
            self.apply({}, {"recorded": settings.to_json()})
            return report
        snapshot_id = new_snapshot_id()
        versions = _stamped(versions, snapshot_id)
        record = _record(versions, snapshot_id, metadata, counts)
        record["recorded"] = settings.to_json()
        history_version, history_files = self.append_history(versions, record)
        planned = (latest.version(), held, _stamped(upserts, snapshot_id))
        version, latest_files = self.apply({snapshot_id: versions}, record, planned)
        files = {**history_files, **latest_files}
        return replace(
            report,
            snapshot_id=snapshot_id,
            version=version,
            history_version=history_version,
            # the latest state's commit; where another writer's commit or none carried
            # these versions into it (stale ones only), the history's, holding the record
            commit_file=(
                self.tables.commit_file(LATEST, version)
                if latest_files and version is not None
                else self.tables.commit_file(HISTORY, history_version)
            ),
            rows_new=counts["new"],
            rows_changed=counts["changed"],
            files_written=tuple(files),
            bytes_written=sum(files.values()),
        )

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

    def held(self, latest: DeltaTable, rows: pa.Table) -> pa.Table:
        """The latest state's rows (with their partition) of the sessions in ``rows``: the
        ``uuid`` column of the whole table first, then whole rows from their partitions only."""
        dataset = latest.to_pyarrow_dataset()
        keys = dataset.to_table(columns=["uuid", PARTITION])
        keys = keys.filter(pc.is_in(keys.column("uuid"), value_set=rows.column("uuid")))
        parts = pc.unique(keys.column(PARTITION)).to_pylist()
        found = _scan(dataset, None, pc.field(PARTITION).isin(parts)) if parts else keys
        found = found.filter(pc.is_in(found.column("uuid"), value_set=keys.column("uuid")))
        return _from_delta(found if parts else dataset.schema.empty_table(), PARTITION)

    def append_history(
        self, versions: pa.Table, record: dict[str, Any]
    ) -> tuple[int, dict[str, int]]:
        """Append ``versions`` to ``versions/`` (a blind append: it never conflicts)."""
        data = _to_delta(versions, HISTORY_PARTITION)
        record = {**record, "months": pc.unique(data.column(HISTORY_PARTITION)).to_pylist()}
        try:
            table = self.tables.table(HISTORY)
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
            raise self.tables.error(error) from None
        table.update_incremental()
        version = table.version()
        return version, self.tables.added(HISTORY, version)

    def pending(self, applied: int) -> tuple[int, dict[str, list[str]]]:
        """The current ``versions/`` version, and the writes after ``applied`` (snapshot id:
        its months), oldest first."""
        current = self.tables.table(HISTORY).version()
        pending: dict[str, list[str]] = {}
        for version in range(applied + 1, current + 1):
            info = self.tables.commit_info(HISTORY, version).get(_KEY) or {}
            for snapshot_id in info.get("snapshot_ids") or [info.get("snapshot_id")]:
                if snapshot_id:
                    pending[snapshot_id] = list(info.get("months") or [])
        return current, pending

    def apply(
        self,
        mine: Mapping[str, pa.Table],
        record: Mapping[str, Any],
        planned: Planned | None = None,
    ) -> tuple[int | None, dict[str, int]]:
        """Merge every write appended to ``versions/`` that the latest state lacks (``mine``
        is at hand, the others are read back) into ``latest/``, in one commit carrying the
        ``versions/`` version it reflects. Retried on conflict. ``planned``: the latest state's
        version the caller compared with, the rows it held and the rows to write: used as they
        are when the latest state is still that version and ``mine`` is all there is to merge.
        Returns the version committed (None when there was nothing to change) and the files it
        added."""
        for attempt in range(ATTEMPTS):
            latest = self.tables.table(LATEST)
            applied = latest.transaction_version(APP_ID)
            applied = -1 if applied is None else int(applied)
            current, pending = self.pending(applied)
            done = latest.version() if mine else None  # ours applied by another writer
            if not pending:
                return done, {}
            tables = [t for s, t in mine.items() if s in pending]
            others = [s for s in pending if s not in mine]
            if planned is not None and planned[0] == latest.version() and not others:
                held, upserts = planned[1], planned[2]
            else:
                held, upserts = self.plan(latest, tables, others, pending)
            planned = None
            if upserts.num_rows == 0:  # stale versions only: history holds them
                return done, {}
            properties = CommitProperties(
                custom_metadata={_KEY: {**record, "history_version": current}},
                app_transactions=[Transaction(APP_ID, current)],
                max_commit_retries=0,
            )
            try:
                self._commit_latest(latest, held, upserts, properties)
            except CommitFailedError as error:
                logger.debug(
                    "%s: commit in conflict (%s), attempt %d", self.tables.uri, error, attempt
                )
                _pause(attempt)
                continue
            except (DeltaError, OSError) as error:
                raise self.tables.error(error) from None
            latest.update_incremental()
            version = latest.version()
            return version, self.tables.added(LATEST, version)
        raise SnapshotStoreError(
            f"the snapshot root {self.tables.uri}: the latest state stayed in conflict with "
            f"other writers for {ATTEMPTS} attempts; its versions are in {HISTORY}/ and the "
            "next write completes them"
        )

    def _commit_latest(
        self,
        latest: DeltaTable,
        held: pa.Table,
        upserts: pa.Table,
        properties: CommitProperties,
    ) -> None:
        """One commit of ``upserts`` to the latest state: a MERGE limited to the partitions
        holding the sessions ``held``, or an append when none is held."""
        data = _to_delta(upserts, PARTITION)
        parts: list[str] = (
            [str(p) for p in pc.unique(held.column(PARTITION)).to_pylist()] if held.num_rows else []
        )
        if not parts:  # only new sessions: an append, no partition read
            write_deltalake(
                latest,
                data,
                mode="append",
                partition_by=[PARTITION],
                commit_properties=properties,
            )
            return
        listed = ", ".join("'" + p.replace("'", "''") + "'" for p in parts)
        latest.merge(
            data,
            predicate=f"t.uuid = s.uuid AND t.{PARTITION} IN ({listed})",
            source_alias="s",
            target_alias="t",
            commit_properties=properties,
        ).when_matched_update_all().when_not_matched_insert_all().execute()

    def plan(
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
            tables = [*tables, self.tables.read(HISTORY, where)]
            logger.info(
                "%s: completing %d earlier write(s): %s", self.tables.uri, len(others), others
            )
        incoming = latest_versions(pa.concat_tables([t.cast(FILE_SCHEMA) for t in tables]))
        held = self.held(latest, incoming)
        upserts, _, _ = _merge(held, incoming, _next_order(latest))
        return held, upserts


def _stamped(table: pa.Table, snapshot_id: str) -> pa.Table:
    """``table`` with ``snapshot_id`` in its :data:`SNAPSHOT_ID` column."""
    return table.set_column(
        table.schema.get_field_index(SNAPSHOT_ID),
        SNAPSHOT_ID,
        pa.array([snapshot_id] * table.num_rows, pa.string()),
    )
