"""The two Delta tables of a snapshot root and their metadata.

:class:`Tables` opens ``latest/`` and ``versions/`` (at a version, checking that they are a
mihu_frames root of a layout this release knows), reads their commit information and the
``mihu_frames`` record of their commits, creates them, lists the files a commit added and keeps
a local root private. It knows nothing of what a write does (:mod:`mihu_frames.store.writing`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import DeltaError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, create_table_with_add_actions

from mihu_frames._version import __version__
from mihu_frames.errors import NotASnapshotRootError, SnapshotStoreError
from mihu_frames.store.files import Files
from mihu_frames.store.layout import (
    _CONFIG,
    _DURATIONS_NOTE,
    _KEY,
    APP_ID,
    FILE_SCHEMA,
    HISTORY_PARTITION,
    HISTORY_SCHEMA,
    LATEST,
    LATEST_SCHEMA,
    LAYOUT_VERSION,
    PARTITION,
    _chmod,
    _from_delta,
    _scan,
    _store_error,
    _to_delta,
    _versions,
)
from mihu_frames.store.recorded import Recorded
from mihu_frames.versions import ORDER, SNAPSHOT_ID

__all__ = ["Tables"]


class Tables:
    """The tables ``latest/`` and ``versions/`` of the root at ``uri``.

    Parameters
    ----------
    uri : str
        The root: a folder's path, or a URI.
    local : Path or None
        The folder, for a root on a local disk.
    storage_options : dict
        Passed to ``deltalake`` (credentials, endpoints).
    """

    def __init__(self, uri: str, local: Path | None, storage_options: dict[str, str]) -> None:
        self.uri = uri
        self.local = local
        self.storage_options = storage_options
        self._files: dict[str, Files] = {}

    @property
    def path(self) -> Path | str:
        """The folder (a :class:`Path`) or the URI."""
        return self.local if self.local is not None else self.uri

    def uri_of(self, name: str) -> str:
        """The URI of table ``name``."""
        return f"{self.uri}/{name}"

    def files(self, name: str) -> Files:
        """The data files of table ``name``: where they are read and written."""
        if name not in self._files:
            local = self.local / name if self.local is not None else None
            self._files[name] = Files(self.uri_of(name), local, self.storage_options)
        return self._files[name]

    def dataset(self, name: str, table: DeltaTable | None = None) -> ds.Dataset:
        """Table ``name`` (``table``: at a version already opened) as an Arrow dataset."""
        return self.files(name).dataset(table if table is not None else self.table(name))

    def error(self, error: BaseException) -> OSError:
        """``error`` of the storage as a :class:`SnapshotStoreError` naming the root (one of
        this library's own errors as it is)."""
        if isinstance(error, (SnapshotStoreError, NotASnapshotRootError)):
            return error
        return _store_error(self.uri, error, self.storage_options)

    def table(self, name: str, version: int | None = None) -> DeltaTable:
        """The Delta table ``name`` (:data:`LATEST` or :data:`HISTORY`) at ``version``."""
        try:
            table = DeltaTable(
                self.uri_of(name), version=version, storage_options=self.storage_options or None
            )
        except TableNotFoundError as error:
            if version is not None and "version" in str(error).lower():
                raise ValueError(f"{self.uri} has no version {version}: {error}") from None
            raise NotASnapshotRootError(self.path, f"its {name}/ table is missing") from None
        except (DeltaError, OSError) as error:
            raise self.error(error) from None
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
        handler = DeltaStorageHandler(self.uri_of(name), self.storage_options or None)
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
        return self._newest(name, version, lambda info: "recorded" in info)

    def layout(self, name: str, version: int) -> int | None:
        """The layout version of the newest commit of ``name`` at or before ``version`` that
        names one (compactions of earlier releases, other tools' commits name none)."""
        found = self._newest(name, version, lambda info: _layout(info) is not None)
        return _layout(found)

    def layout_of(self, name: str, version: int) -> int | None:
        """The layout version commit ``version`` of ``name`` names (None: it names none)."""
        info = self.commit_info(name, version).get(_KEY)
        return _layout(info) if isinstance(info, dict) else None

    def _newest(
        self, name: str, version: int, wanted: Callable[[dict[str, Any]], bool]
    ) -> dict[str, Any]:
        """The ``mihu_frames`` record of the newest commit of ``name`` at or before
        ``version`` (of the last 100) that is ``wanted``; empty if none."""
        for at in range(version, max(-1, version - 100), -1):
            info = self.commit_info(name, at).get(_KEY)
            if isinstance(info, dict) and wanted(info):
                return info
        return {}

    def read(self, name: str, where: Any = None, columns: list[str] | None = None) -> pa.Table:
        """Every row of table ``name`` (in :data:`FILE_SCHEMA`, or ``columns``) that ``where``
        keeps."""
        return _from_delta(_scan(self.dataset(name), columns, where), columns=columns)

    def create(
        self,
        name: str,
        rows: pa.Table | None,
        recorded: Recorded,
        record: dict[str, Any],
        adds: list[AddAction] | None = None,
    ) -> bool:
        """Create table ``name`` holding ``rows`` (or the files ``adds`` already written to it),
        unless it exists (another writer, or a killed one, made it first: theirs is kept).
        Returns whether this call created it."""
        partition = PARTITION if name == LATEST else HISTORY_PARTITION
        txn = []
        if name == LATEST:
            txn = [Transaction(APP_ID, int(record["history_version"]))]
        metadata = {
            **_versions(),
            "dataset": name,
            "recorded": recorded.to_json(),
            "durations": _DURATIONS_NOTE,
            **record,
        }
        properties = CommitProperties(custom_metadata={_KEY: metadata}, app_transactions=txn)
        storage = self.storage_options or None
        try:
            if adds is not None:
                create_table_with_add_actions(
                    self.uri_of(name),
                    DeltaSchema.from_arrow(LATEST_SCHEMA if name == LATEST else HISTORY_SCHEMA),
                    adds,
                    mode="error",
                    partition_by=[partition],
                    name=f"mihu_frames {name}",
                    configuration=_CONFIG,
                    storage_options=storage,
                    commit_properties=properties,
                )
            else:
                write_deltalake(
                    self.uri_of(name),
                    _to_delta(rows if rows is not None else FILE_SCHEMA.empty_table(), partition),
                    partition_by=[partition],
                    mode="error",
                    name=f"mihu_frames {name}",
                    configuration=_CONFIG,
                    storage_options=storage,
                    commit_properties=properties,
                )
        except DeltaError as error:
            if "exists" not in str(error).lower():
                raise self.error(error) from None
            return False
        except OSError as error:
            raise self.error(error) from None
        return True

    def commit_file(self, table: str, version: int) -> Path | str:
        """The log file of commit ``version`` of ``table`` (a URI remotely)."""
        name = f"{version:020d}.json"
        if self.local is not None:
            return self.local / table / "_delta_log" / name
        return f"{self.uri_of(table)}/_delta_log/{name}"

    def private(self) -> None:
        """On a local disk: every folder of the root 0700, every file 0600 (personal data)."""
        if self.local is None or not self.local.is_dir():
            return
        os.chmod(self.local, 0o700)
        for folder, dirs, files in os.walk(self.local):
            for name in dirs:
                _chmod(os.path.join(folder, name), 0o700)
            for name in files:
                _chmod(os.path.join(folder, name), 0o600)


def _layout(record: dict[str, Any]) -> int | None:
    """The layout version a commit record names (None: it names none)."""
    found = record.get("layout_version")
    return found if isinstance(found, int) else None
