"""The settings a snapshot root records (the filters its sessions were fetched under).

:class:`Recorded` is held in the commit metadata of ``latest/`` (``mihu_frames.recorded``); a
sync reuses it. :func:`recorded_from_rows` tells what a new root records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.schema import STATUS_VALUES, TYPE_VALUES
from mihu_frames.versions import TAGS

__all__ = ["Recorded", "recorded_from_rows"]


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
