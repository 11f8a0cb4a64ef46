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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import AddAction, RemoveAction

from mihu_frames.errors import SnapshotStoreError
from mihu_frames.store.files import FILE, WORKERS, Written, groups, removal
from mihu_frames.store.layout import (
    _KEY,
    APP_ID,
    ATTEMPTS,
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
from mihu_frames.store.merging import _merge, _next_order, _record
from mihu_frames.store.recorded import Recorded
from mihu_frames.store.tables import Tables
from mihu_frames.versions import ORDER, SNAPSHOT_ID, latest_versions

__all__ = ["CommitReport", "Writer"]

logger = logging.getLogger("mihu_frames")

_NONE_HELD = LATEST_SCHEMA.append(pa.field(FILE, pa.string())).empty_table()


@dataclass
class Planned:
    """What a commit of the latest state will do, as planned against one of its versions.

    Attributes
    ----------
    version : int
        The version of ``latest/`` compared with.
    held : pa.Table
        Its rows of the sessions written (with their partition and :data:`FILE`).
    upserts : pa.Table
        The rows to write (new and changed sessions, with their partition).
    content : dict of str to pa.Table
        Every row of each file holding ``held`` (the Delta table's columns), by its path: the
        files a changed session is copied out of.
    written : Written or None
        The files already written for it (None: not yet).
    """

    version: int
    held: pa.Table
    upserts: pa.Table
    content: dict[str, pa.Table]
    written: Written | None = None


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
        first: bool = False,
    ) -> CommitReport:
        """Write ``rows`` (one row per session, :data:`SESSIONS_SCHEMA`): compare, append the
        versions to history, then commit the latest state. ``settings`` are recorded with the
        write; ``converted`` goes to the report. The files of both tables are written at once,
        before either commit. ``first``: ``latest/`` does not exist yet (a new root), and is
        created holding this write's rows, so a killed first write leaves no empty root."""
        latest = None if first else self.tables.table(LATEST)
        start = 0 if latest is None else _next_order(latest)
        order = np.arange(start, start + rows.num_rows, dtype=np.int64)
        rows = rows.append_column(SNAPSHOT_ID, pa.nulls(rows.num_rows, pa.string()))
        rows = rows.append_column(ORDER, pa.array(order))
        try:
            held, content = self.held(latest, rows)
        except (pa.ArrowException, OSError) as error:  # a damaged file: nothing written
            raise self.tables.error(error) from None
        upserts, versions, counts = _merge(held, rows, start)
        report = CommitReport(
            rows_unchanged=counts["unchanged"], rows_stale=counts["stale"], converted=converted
        )
        if not versions.num_rows:  # nothing to write: complete what a killed writer left
            if first:
                applied = self.tables.table(HISTORY).version()
                self.tables.create(LATEST, None, settings, {"history_version": applied})
            else:
                self.apply({}, {"recorded": settings.to_json()})
            return report
        snapshot_id = new_snapshot_id()
        versions = _stamped(versions, snapshot_id)
        record = _record(versions, snapshot_id, metadata, counts)
        record["recorded"] = settings.to_json()
        version_held = -1 if latest is None else latest.version()
        planned = Planned(version_held, held, _stamped(upserts, snapshot_id), content)
        added = self.write_files(versions, planned)
        try:
            history_version, history_sizes = self.append_history(added, record)
        except SnapshotStoreError:
            self.tables.files(LATEST).delete(planned.written.sizes if planned.written else [])
            raise
        mine = {snapshot_id: versions}
        version: int | None = 0
        if first and self.create_latest(planned, record, history_version, settings):
            latest_added = (planned.written or Written()).at(self.tables.uri_of(LATEST))
        else:
            version, latest_added = self.apply(mine, record, None if first else planned)
        files = {**history_sizes, **latest_added}
        return replace(
            report,
            snapshot_id=snapshot_id,
            version=version,
            history_version=history_version,
            # the latest state's commit; where another writer's commit or none carried
            # these versions into it (stale ones only), the history's, holding the record
            commit_file=(
                self.tables.commit_file(LATEST, version)
                if latest_added and version is not None
                else self.tables.commit_file(HISTORY, history_version)
            ),
            rows_new=counts["new"],
            rows_changed=counts["changed"],
            files_written=tuple(files),
            bytes_written=sum(files.values()),
        )

    def write_files(self, versions: pa.Table, planned: Planned) -> list[AddAction]:
        """Write the files of both commits at once: ``versions`` for ``versions/`` (returned)
        and ``planned``'s for ``latest/`` (kept in it). On failure none is left."""
        history = self.tables.files(HISTORY)
        with ThreadPoolExecutor(2) as pool:
            history_files = pool.submit(
                history.write, _to_delta(versions, HISTORY_PARTITION), HISTORY_PARTITION
            )
            latest_files = pool.submit(self.prepare, planned)
            try:
                added = history_files.result()
                planned.written = latest_files.result()
            except (DeltaError, OSError, pa.ArrowException) as error:
                if not history_files.exception():
                    history.delete(a.path for a in history_files.result())
                if not latest_files.exception():
                    self.tables.files(LATEST).delete(latest_files.result().sizes)
                raise self.tables.error(error) from None
        return added

    def create_latest(
        self, planned: Planned, record: dict[str, Any], history_version: int, settings: Recorded
    ) -> bool:
        """Create ``latest/`` holding the files ``planned`` wrote (a new root's first write).
        False, and those files removed, when another writer created it first."""
        adds = planned.written.adds if planned.written else []
        record = {**record, "history_version": history_version}
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

    def held(
        self, latest: DeltaTable | None, rows: pa.Table
    ) -> tuple[pa.Table, dict[str, pa.Table]]:
        """The latest state's rows of the sessions in ``rows`` (with their partition and
        :data:`FILE`), and every row of each file holding them (by path): the ``uuid`` column
        of the whole table first, then those files only. None held without ``latest``."""
        if latest is None:
            return _held(_NONE_HELD), {}
        files = self.tables.files(LATEST)
        dataset = files.dataset(latest)
        wanted = rows.column("uuid")
        content = files.read(dataset, files.holding(dataset, "uuid", wanted))
        found = []
        for path, table in content.items():
            rows_held = table.filter(pc.is_in(table.column("uuid"), value_set=wanted))
            found.append(rows_held.append_column(FILE, pa.repeat(pa.scalar(path), len(rows_held))))
        return _held(pa.concat_tables(found) if found else _NONE_HELD), content

    def prepare(self, planned: Planned) -> Written:
        """Write the files of ``planned``'s commit: each file holding a changed session copied
        with its new version, and the new sessions, one file per month. Nothing is committed."""
        held, upserts = planned.held, planned.upserts
        index = pc.index_in(upserts.column("uuid"), value_set=held.column("uuid"))
        is_changed = pc.is_valid(index)
        data = _to_delta(upserts, PARTITION)
        changed = data.filter(is_changed)
        homes = held.column(FILE).take(index.filter(is_changed))  # each changed row's file

        def copied(group: tuple[pa.Table, str]) -> tuple[pa.Table, str]:
            rows, path = group
            copy = planned.content[path]
            copy = copy.filter(pc.invert(pc.is_in(copy.column("uuid"), rows.column("uuid"))))
            copy = copy.select(changed.column_names).cast(changed.schema)
            return pa.concat_tables([copy, rows.drop_columns([FILE])]), path

        with ThreadPoolExecutor(WORKERS) as pool:  # copies made at once, as files are written
            parts = list(pool.map(copied, groups(changed.append_column(FILE, homes), FILE)))
        new = data.filter(pc.invert(is_changed)) if changed.num_rows else data  # no copy
        files = self.tables.files(LATEST)
        homed = [(t, str(t.column(PARTITION)[0].as_py())) for t, _ in parts]
        adds = files.write_parts(homed, PARTITION) + files.write(new, PARTITION)
        sizes = self.sizes(planned.version) if parts else {}
        removes = [
            removal(path, sizes[path], {PARTITION: value})
            for (_, path), (_, value) in zip(parts, homed, strict=True)
        ]
        return Written(adds, removes)

    def sizes(self, version: int) -> dict[str, int]:
        """The data files of ``latest/`` at ``version``, with their sizes."""
        return _files(self.tables.table(LATEST, version))

    def append_history(
        self, added: list[AddAction], record: dict[str, Any]
    ) -> tuple[int, dict[str, int]]:
        """Commit the files ``added`` to ``versions/`` (a blind append: it never conflicts)."""
        months = sorted({str(a.partition_values[HISTORY_PARTITION]) for a in added})
        record = {**record, "months": months}
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
        ``versions/`` version it reflects. Retried on conflict. ``planned``: the commit the
        caller planned (and whose files it wrote): used as it is when the latest state is
        still the version it compared with and ``mine`` is all there is to merge.
        Returns the version committed (None when there was nothing to change) and the files it
        added."""
        for attempt in range(ATTEMPTS):
            outcome = self._attempt(mine, record, planned)
            if outcome is not None:
                return outcome
            planned = None
            _pause(attempt)
        raise SnapshotStoreError(
            f"the snapshot root {self.tables.uri}: the latest state stayed in conflict with "
            f"other writers for {ATTEMPTS} attempts; its versions are in {HISTORY}/ and the "
            "next write completes them"
        )

    def _attempt(
        self, mine: Mapping[str, pa.Table], record: Mapping[str, Any], planned: Planned | None
    ) -> tuple[int | None, dict[str, int]] | None:
        """One attempt of :meth:`apply`: None when another writer committed first (the files
        written for it are removed)."""
        files = self.tables.files(LATEST)
        keep = False  # the files of a commit that landed, or that may have (an error in it)
        try:
            latest = self.tables.table(LATEST)
            applied = latest.transaction_version(APP_ID)
            current, pending = self.pending(-1 if applied is None else int(applied))
            done = latest.version() if mine else None  # ours applied by another writer
            if not pending:
                return done, {}
            others = [s for s in pending if s not in mine]
            if planned is not None and planned.version != latest.version():
                return None  # another writer committed since it was planned: a conflict
            if planned is None or others:
                if planned is not None and planned.written is not None:
                    files.delete(planned.written.sizes)
                tables = [t for s, t in mine.items() if s in pending]
                planned = self.plan(latest, tables, others, pending)
            if planned.upserts.num_rows == 0:  # stale versions only: history holds them
                return done, {}
            written = planned.written = planned.written or self.prepare(planned)
            properties = CommitProperties(
                custom_metadata={_KEY: {**record, "history_version": current}},
                app_transactions=[Transaction(APP_ID, current)],
                max_commit_retries=0,
            )
            try:
                keep = True
                latest.create_write_transaction(
                    written.actions,
                    mode="append",
                    schema=latest.schema(),
                    partition_by=[PARTITION],
                    commit_properties=properties,
                )
            except CommitFailedError as error:
                logger.debug("%s: commit in conflict (%s)", self.tables.uri, error)
                keep = False
                return None
        except (DeltaError, OSError, pa.ArrowException) as error:
            raise self.tables.error(error) from None
        finally:  # files written for a commit that did not happen
            if not keep and planned is not None and planned.written is not None:
                files.delete(planned.written.sizes)
        latest.update_incremental()
        return latest.version(), written.at(self.tables.uri_of(LATEST))

    def plan(
        self,
        latest: DeltaTable,
        tables: list[pa.Table],
        others: list[str],
        pending: Mapping[str, list[str]],
    ) -> Planned:
        """The commit for the versions at hand (``tables``) and those of the writes
        ``others``, read back from ``versions/``."""
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
        held, content = self.held(latest, incoming)
        upserts, _, _ = _merge(held, incoming, _next_order(latest))
        return Planned(latest.version(), held, upserts, content)


def _held(rows: pa.Table) -> pa.Table:
    """Rows read from ``latest/`` with their :data:`FILE` as held rows: :data:`FILE_SCHEMA`,
    their partition, then :data:`FILE`."""
    held = _from_delta(rows.drop_columns([FILE]), PARTITION)
    return held.append_column(FILE, rows.column(FILE))


def _stamped(table: pa.Table, snapshot_id: str) -> pa.Table:
    """``table`` with ``snapshot_id`` in its :data:`SNAPSHOT_ID` column."""
    return table.set_column(
        table.schema.get_field_index(SNAPSHOT_ID),
        SNAPSHOT_ID,
        pa.repeat(pa.scalar(snapshot_id, pa.string()), table.num_rows),
    )
