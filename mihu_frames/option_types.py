"""The public keyword options as a type checker sees them: one ``TypedDict`` per group.

The options are declared once, as dataclass fields in :mod:`mihu_frames.options` (defaults,
documentation, flags, validation): that is what runs, and what Shift-Tab shows through
:func:`~mihu_frames.options.takes`. A type checker cannot read a signature made at run time,
so the public functions also annotate ``**options`` with ``Unpack`` of the ``TypedDict``
below (PEP 692): mypy and editors then report ``load_sessions(ids, statuss="completed")`` or
``per_page="100"`` in user code. This is the one second declaration, and
``tests/test_option_types.py`` proves that it agrees with the dataclasses, name for name and
type for type, for every public function.

Examples
--------
>>> import mihu_frames as mf
>>> df = mf.load_sessions(ids, statuss="completed")  # doctest: +SKIP
error: Unexpected keyword argument "statuss" for "load_sessions"  [call-arg]
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, TypedDict

__all__ = [
    "ClientSettings",
    "ConversationsKwargs",
    "ListConversationsKwargs",
    "LoadKwargs",
    "LoadSessionsKwargs",
    "OutputKwargs",
    "SessionsKwargs",
    "SyncSnapshotsKwargs",
]


class Address(TypedDict, total=False):
    """Where the API is (``ClientOptions.base_url``)."""

    base_url: str | None


class ClientSettings(TypedDict, total=False):
    """``ClientOptions`` but ``base_url`` (:class:`MihuClient` takes that one by position)."""

    subdomain: str | None
    token: str | None
    cache: Any
    expire_after: timedelta | float | None
    max_workers: int
    timeout: float
    retries: int
    backoff_factor: float
    max_page_bytes: int


class ClientKwargs(Address, ClientSettings, total=False):
    """Every ``ClientOptions`` field."""


class Paging(TypedDict, total=False):
    """The ``LoadOptions`` every kind of load takes."""

    per_page: int
    progress: bool | None
    on_error: str
    max_pages: int
    deadline: float | timedelta | None


class ListingLoadKwargs(Paging, total=False):
    """The ``LoadOptions`` a listing of conversations takes (``LISTING_LOAD_OPTIONS``)."""

    refresh: bool
    offline: bool


class SyncLoadKwargs(Paging, total=False):
    """The ``LoadOptions`` a sync takes (``SYNC_LOAD_OPTIONS``)."""

    status: str | Sequence[str] | None
    type: str | Sequence[str] | None


class LoadKwargs(ListingLoadKwargs, total=False):
    """Every ``LoadOptions`` field."""

    status: str | Sequence[str] | None
    type: str | Sequence[str] | None
    sort_by: str
    sort_dir: str
    since: Any
    until: Any


class ListingFilterKwargs(TypedDict, total=False):
    """Every ``ListingFilters`` field: one value or a list of them."""

    agent_uuid: str | Sequence[str] | None
    channel: str | Sequence[str] | None
    status: str | Sequence[str] | None
    phone: str | Sequence[str] | None


class SyncKwargs(TypedDict, total=False):
    """Every ``SyncOptions`` field."""

    full: bool
    refetch: bool
    overlap: timedelta | float
    pii: str | None


class OutputKwargs(TypedDict, total=False):
    """Every ``OutputOptions`` field."""

    to: str


class SessionsKwargs(LoadKwargs, OutputKwargs, total=False):
    """What :meth:`MihuClient.sessions <mihu_frames.MihuClient.sessions>` takes."""


class LoadSessionsKwargs(SessionsKwargs, ClientKwargs, total=False):
    """What :func:`~mihu_frames.load_sessions` takes."""


class ConversationsKwargs(ListingFilterKwargs, ListingLoadKwargs, OutputKwargs, total=False):
    """What :meth:`MihuClient.conversations <mihu_frames.MihuClient.conversations>` takes."""


class ListConversationsKwargs(ConversationsKwargs, ClientKwargs, total=False):
    """What :func:`~mihu_frames.list_conversations` takes."""


class SyncSnapshotsKwargs(SyncKwargs, SyncLoadKwargs, ClientKwargs, total=False):
    """What :func:`~mihu_frames.sync_snapshots` takes."""
