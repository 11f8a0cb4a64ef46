"""Reading a snapshot root: its latest state, its history, the keys it holds, time travel.

:class:`Reader` reads through :class:`~mihu_frames.store.tables.Tables`, filters pushed down to
the scan; a root of an earlier layout is read as it is (:mod:`mihu_frames.legacy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from mihu_frames import legacy
from mihu_frames.errors import NotASnapshotRootError
from mihu_frames.store.layout import FILE_SCHEMA, HISTORY, LATEST, _from_delta, _scan, _where
from mihu_frames.store.tables import Tables
from mihu_frames.versions import SNAPSHOT_ID, latest_versions

__all__ = ["Reader", "repeated", "same_versions"]

#: What tells one version from another: a copy of a version (in both tables) is the same.
_KEYS = ("uuid", SNAPSHOT_ID, "fetched_at")


class Reader:
    """Reads the root whose tables are ``tables``; each read takes the root's ``state``
    (:class:`~mihu_frames.store.SnapshotRoot`)."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    def snapshot(self, name: str, as_of: int | datetime | None) -> DeltaTable:
        """Table ``name`` as committed at version or instant ``as_of`` (None: the latest)."""
        if as_of is None or isinstance(as_of, int):
            return self.tables.table(name, as_of)
        dt = self.tables.table(name)
        try:
            dt.load_as_version(as_of)
        except (DeltaError, ValueError) as error:
            raise ValueError(
                f"{self.tables.uri} has no version committed at or before "
                f"{as_of.isoformat()}: {error}"
            ) from None
        return dt

    def latest(
        self,
        state: str,
        columns: Sequence[str] | None = None,
        *,
        conversations: Sequence[str] | None = None,
        since: datetime | None = None,
        as_of: int | datetime | None = None,
    ) -> pa.Table:
        """The latest state (see :meth:`mihu_frames.store.SnapshotRoot.read_latest`)."""
        where = _where(conversations, since)
        if state == "new":
            raise NotASnapshotRootError(self.tables.path, "nothing was written to it yet")
        if state != "delta":
            if as_of is not None:
                raise ValueError(
                    f"{self.tables.uri} has no versions to travel to yet (an old layout)"
                )
            local = self.tables.local
            if state == "legacy" and local is not None:
                table = legacy.latest(local)
            else:  # versions/ alone: a new root's first write, or one a killed writer left
                table = latest_versions(self.history(state))
                if table.num_rows == 0:
                    raise NotASnapshotRootError(self.tables.path, "nothing was written to it yet")
            table = ds.dataset(table).to_table(filter=where) if where is not None else table
            return table if columns is None else table.select(list(columns))
        dataset = self.tables.dataset(LATEST, self.snapshot(LATEST, as_of))
        return _from_delta(_scan(dataset, columns, where), columns=columns)

    def history(
        self,
        state: str,
        columns: Sequence[str] | None = None,
        where: Any = None,
        as_of: datetime | None = None,
    ) -> pa.Table:
        """Every version (see :meth:`mihu_frames.store.SnapshotRoot.read_history`): the
        superseded ones in ``versions/`` and the latest state, each version once."""
        local = self.tables.local
        if state == "legacy" and local is not None:
            return legacy.history(local, None if columns is None else list(columns), where)
        if state == "new":
            raise NotASnapshotRootError(self.tables.path, "nothing was written to it yet")
        read = None if columns is None else list(dict.fromkeys([*columns, *_KEYS]))
        current = None
        if state == "delta":  # latest/ first: a version leaves it only once in versions/
            try:
                latest = self.tables.dataset(LATEST, self.snapshot(LATEST, as_of))
            except ValueError:  # no latest state yet at that instant
                pass
            else:
                current = _from_delta(_scan(latest, read, where), columns=read)
        dataset = self.tables.dataset(HISTORY, self.snapshot(HISTORY, as_of))
        superseded = _distinct(_from_delta(_scan(dataset, read, where), columns=read))
        if current is not None:
            current = current.filter(pa.array(~same_versions(current, superseded)))
            superseded = pa.concat_tables([superseded, current])
        return superseded if columns is None else superseded.select(list(columns))

    def held_keys(self, state: str, conversations: Sequence[str]) -> pa.Table:
        """``conversation_uuid``, ``uuid``, ``updated_at``, ``fetched_at`` of the latest state of
        ``conversations`` (empty for a new root)."""
        columns = ["conversation_uuid", "uuid", "updated_at", "fetched_at"]
        empty = pa.schema([FILE_SCHEMA.field(c) for c in columns]).empty_table()
        if state == "new" or not conversations:
            return empty
        try:
            return self.latest(state, columns, conversations=conversations)
        except NotASnapshotRootError:  # nothing written yet
            return empty


def same_versions(rows: pa.Table, others: pa.Table) -> np.ndarray:
    """Which of ``rows`` are versions ``others`` holds too (the same :data:`_KEYS`).

    A version is copied to ``versions/`` before the latest state replaces it, so a write
    killed or beaten between the two leaves it in both tables (and roots converted from earlier
    layouts, or written by the release before, keep every version in ``versions/``): read, it
    is one version, the copy in ``versions/`` (the version as it was written)."""
    found = np.zeros(rows.num_rows, dtype=bool)
    if not rows.num_rows or not others.num_rows:
        return found
    held = pc.is_in(rows.column("uuid"), value_set=others.column("uuid").unique())
    candidates = np.flatnonzero(np.asarray(held.to_numpy(zero_copy_only=False), dtype=bool))
    if not len(candidates):
        return found
    mine = _key_table(rows.take(candidates))
    mine = mine.append_column("row", pa.array(candidates))
    matched = mine.join(_key_table(others), keys=list(_KEYS), join_type="left semi")
    found[np.asarray(matched.column("row"))] = True
    return found


def _distinct(rows: pa.Table) -> pa.Table:
    """``rows`` with each version once (a write killed or beaten after copying a version to
    ``versions/`` copies it again when it is superseded: the copies are identical)."""
    again = repeated(rows)
    return rows.filter(pa.array(~again)) if again.any() else rows


def repeated(rows: pa.Table) -> np.ndarray:
    """Which of ``rows`` repeat a version an earlier row holds (the same :data:`_KEYS`)."""
    found = np.zeros(rows.num_rows, dtype=bool)
    if rows.num_rows < 2:
        return found
    keys = _key_table(rows).append_column("row", pa.array(np.arange(rows.num_rows)))
    first = keys.group_by(list(_KEYS), use_threads=False).aggregate([("row", "min")])
    if first.num_rows < rows.num_rows:
        found[:] = True
        found[np.asarray(first.column("row_min"))] = False
    return found


def _key_table(rows: pa.Table) -> pa.Table:
    """The :data:`_KEYS` of ``rows``, nulls as values (a join matches no null)."""
    sid = pc.fill_null(rows.column(SNAPSHOT_ID), pa.scalar("", pa.string()))
    low = pa.scalar(-(2**63), pa.int64())
    fetched = pc.fill_null(rows.column("fetched_at").cast(pa.int64()), low)
    columns = [rows.column("uuid"), cast("pa.ChunkedArray", sid), cast("pa.ChunkedArray", fetched)]
    return pa.Table.from_arrays(columns, names=list(_KEYS))
