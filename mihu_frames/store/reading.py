"""Reading a snapshot root: its latest state, its history, the keys it holds, time travel.

:class:`Reader` reads through :class:`~mihu_frames.store.tables.Tables`, filters pushed down to
the scan; a root of an earlier layout is read as it is (:mod:`mihu_frames.legacy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from mihu_frames import legacy
from mihu_frames.errors import NotASnapshotRootError
from mihu_frames.store.layout import FILE_SCHEMA, HISTORY, LATEST, _from_delta, _scan, _where
from mihu_frames.store.tables import Tables
from mihu_frames.versions import latest_versions

__all__ = ["Reader"]


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
        """Every version (see :meth:`mihu_frames.store.SnapshotRoot.read_history`)."""
        local = self.tables.local
        if state == "legacy" and local is not None:
            return legacy.history(local, None if columns is None else list(columns), where)
        if state == "new":
            raise NotASnapshotRootError(self.tables.path, "nothing was written to it yet")
        dataset = self.tables.dataset(HISTORY, self.snapshot(HISTORY, as_of))
        return _from_delta(_scan(dataset, columns, where), columns=columns)

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
