"""Incremental sync: fetch only what changed since the snapshots under a root, write it, return
the latest state.

:func:`sync_snapshots` keeps a snapshot root up to date at a cost in requests proportional to
what changed, not to what exists:

0. **Filters.** The root records the ``status``/``type`` filters its sessions were fetched
   under (:mod:`mihu_frames.store`). A sync without filters uses them; one with the same filters
   proceeds; one with other filters is refused (``ValueError``, before any request) unless
   ``refetch=True``, which reads every conversation anew under them and records them.
1. **Held state.** For each requested conversation, the newest update already held is read from
   the latest state (key columns only): each row's ``updated_at`` bounded by its
   ``fetched_at`` (the server's ``Date`` when it was fetched: an update cannot be later than
   the response that carried it), so a session dated in the year 9999 cannot hide later edits;
   the window start ``held - overlap`` is clamped at the earliest instant Python represents,
   so one dated in the year 1 cannot make it overflow.
2. **Plan.** A conversation with nothing held, and every conversation with ``full=True``, gets a
   full load (``created_at asc``: stable while data drifts). Every other conversation is read
   newest change first (``sort_by=updated_at&sort_dir=desc``), one task per conversation (and
   filter value) on a pool of the client's ``max_workers`` threads, page after page, stopping
   after the first page whose oldest ``updated_at`` is before ``held - overlap``.
3. **Store** (:meth:`mihu_frames.store.SnapshotRoot.commit`), once every page is in: rows
   fetched are compared with the latest state: *new* (never held), *changed* (other content; an
   untagged row keeps the tag held), or unchanged (not written). The versions the changed rows
   replace are copied to the root's history, then the latest state takes the changed and new
   rows in one commit (only the files holding a changed session are rewritten): the cost
   follows what changed. An exception or a killed process leaves the latest state as it was.
   Then the latest state of the requested conversations is returned, with what the write did
   (and the version it produced) in ``df.attrs["mihu_frames"]``.

Why an incremental read loses nothing
-------------------------------------
Every page is fetched fresh (``refresh``): a cached page would hide changes. In
``updated_at desc`` order a session updated *while* a conversation is being read jumps above
the pages already read, so this sync may miss its new state; every other row only moves down
and is read on a later page (or twice: rows are de-duplicated by ``uuid``). The missed update is
newer than the start of this conversation's read, so the next sync, which re-reads everything
from ``held - overlap`` on, picks it up as long as ``overlap`` (default five minutes) is longer
than reading one conversation takes. The overlap also absorbs equal timestamps and clock skew
between the servers that stamp ``updated_at``.

What an incremental read cannot see
-----------------------------------
Deleted sessions: they are simply not returned. ``full=True`` re-reads everything and reports
sessions held but no longer returned (``rows_deleted``, ``deleted_uuids`` in ``df.attrs``); they
are **not** removed from the history or from the returned latest state (a snapshot records what
was fetched; nothing is ever erased by a sync). Sessions without ``updated_at`` are only picked
up by a full load.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from typing_extensions import Unpack

from mihu_frames.client import MihuClient
from mihu_frames.decoding import PageEnvelope
from mihu_frames.option_types import SyncSnapshotsKwargs
from mihu_frames.options import (
    DEFAULT_OVERLAP,
    SYNC_LOAD_OPTIONS,
    ClientOptions,
    LoadOptions,
    SyncOptions,
    conversation_ids,
    split_options,
    takes,
    wants_all,
)
from mihu_frames.runner import FullListing, Plan, Query
from mihu_frames.schema import (
    STATUS_VALUES,
    TIMESTAMP_TYPE,
    TYPE_VALUES,
    canonical_ids,
    empty_table,
)
from mihu_frames.snapshots import frame_of, hash_pii
from mihu_frames.started import last_page_to_read
from mihu_frames.store import CommitReport, Recorded, SnapshotRoot, open_root

__all__ = ["DEFAULT_OVERLAP", "sync_snapshots", "sync_summary"]

logger = logging.getLogger("mihu_frames")

#: How a conversation left out under on_error="warn" is announced.
LEFT_OUT = "did not sync {error}; it keeps its earlier state"
#: The earliest instant a window can start at (``datetime.min``, in UTC).
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


@takes((SyncOptions, None), (LoadOptions, SYNC_LOAD_OPTIONS), (ClientOptions, None))
def sync_snapshots(
    root: str | os.PathLike[str],
    conversations: Any = None,
    *,
    client: MihuClient | None = None,
    storage_options: dict[str, str] | None = None,
    **options: Unpack[SyncSnapshotsKwargs],
) -> pd.DataFrame:
    """Fetch what changed since the latest state under ``root``, store it, return the latest state.

    Conversations already held are read newest change first and only down to the newest update
    held (minus ``overlap``); conversations never seen get a full load. The changed and new rows
    are appended to the root's history and merged into the latest state, one commit each
    (nothing when nothing changed). The cost follows what changed: in requests, about one per
    conversation plus one per ``per_page`` changed sessions; in storage, the changed rows plus
    a rewrite of the files of the months they belong to.

    Parameters
    ----------
    root : str or Path
        The snapshot root (see :func:`write_snapshot`); created in a missing or empty folder.
    conversations : str, uuid.UUID, an iterable of them, a Series or DataFrame, or "all"
        Conversation UUIDs (duplicates are synced once), a Series of them or a DataFrame with
        a ``uuid`` column; or ``"all"``: every conversation the account's listing returns now
        (listed fresh). A root synced with ``"all"`` records it: later syncs may leave
        ``conversations`` out, list again, load new conversations in full and read the others
        incrementally.
    client : MihuClient, optional
        The client to use; by default one is built from the client options and closed after.
    storage_options : mapping, optional
        For a root on object storage (``s3://…``): credentials and settings as ``deltalake``
        takes them; default: the standard environment variables. Never stored or shown.
    <options>

    Returns
    -------
    pandas.DataFrame
        ``read_snapshots(root, conversations=...)``: the latest state of every session of the
        requested conversations. ``df.attrs["mihu_frames"]`` records what the sync fetched:
        ``requests``, ``retries``, ``pages``, ``rows_unchanged_seen`` (rows fetched that were
        neither new nor changed), ``rows_deleted`` (``None`` unless ``full=True`` without a
        narrowing filter) and ``deleted_uuids``, ``conversations_full``,
        ``conversations_incremental``, ``conversations_new`` (never held before: loaded in
        full), with ``"all"`` also ``conversations_listed`` and ``listing_requests`` (counted
        in ``requests``), ``filters`` (the ones used), ``errors``,
        ``fetch_seconds``; what it stored: ``rows_new``, ``rows_changed``, ``rows_unchanged``
        (rows compared with the held state and identical), ``rows_stale``, ``files_written``
        (paths), ``bytes_written``, ``version`` (of the latest state) and ``history_version``,
        ``snapshot`` (the commit file of the write, or ``None``),
        ``store_seconds``; and ``seconds`` (the whole sync).

    Raises
    ------
    ValueError
        A bad argument, or filters other than the root's without ``refetch``: before any
        request is sent.
    NotASnapshotRootError
        ``root`` is a file or a non-empty folder that is not a snapshot root (a ``ValueError``).
    TypeError
        Both ``client`` and client options, or an unknown option.
    MihuError
        With ``on_error="raise"``, the first failure; nothing is written.

    Examples
    --------
    >>> import mihu_frames as mf
    >>> df = mf.sync_snapshots("data/snapshots", ["3c90c3cc-0d44-4b50-8888-8dd25736052a"],
    ...                        subdomain="acme")                     # doctest: +SKIP
    >>> mf.sync_summary(df)                                          # doctest: +SKIP
    'synced 1 conversation (0 full, 1 incremental), 1 request, 3 rows changed, 1 new, ...'
    """
    started = time.perf_counter()
    sync = _prepare(root, conversations, client, options, storage_options)
    active = MihuClient(**sync.client_options) if client is None else client
    try:
        listed_ids, listed = _conversations_of(sync, active)
        held = _Held.read(sync.store, listed_ids)
        # A listed conversation without a session, of which nothing is held: nothing to read.
        empty = (_without_sessions(listed) | sync.empty) - set(held.newest)
        ids = tuple(c for c in listed_ids if c not in empty)
        plan = Plan.build(ids, sync.load)
        full_load = tuple(c for c in ids if sync.settings.full or c not in held.newest)
        incremental = tuple(c for c in ids if c not in full_load)
        logger.debug(
            "sync plan: %d conversation(s) incremental, %d full (%s)",
            len(incremental),
            len(full_load),
            "full=True" if sync.settings.full else "nothing held for them",
        )
        fetch_started = time.perf_counter()
        fetched = _fetch(active, plan, held, incremental, full_load, sync.window)
        fetch_seconds = time.perf_counter() - fetch_started
    finally:
        if client is None:
            active.close()
    record = _fetch_record(active, plan, sync, held, fetched, full_load, incremental, listed)
    if listed is not None:
        record["conversations_listed"] = len(listed_ids)
    if listed is not None or sync.empty:
        record["conversations_empty"] = len(empty)
    record["fetch_seconds"] = round(fetch_seconds, 6)
    store_started = time.perf_counter()
    report = _store(sync, fetched.candidates, record)
    record.update(report.as_attrs())
    record["rows_unchanged_seen"] = fetched.rows_seen - report.rows_changed - report.rows_new
    record["snapshot"] = None if report.commit_file is None else str(report.commit_file)
    record["store_seconds"] = round(time.perf_counter() - store_started, 6)

    latest = sync.store.read_latest(conversations=listed_ids)
    df = frame_of(latest)
    record["seconds"] = round(time.perf_counter() - started, 6)
    record["synced_at"] = datetime.now(timezone.utc).isoformat()
    df.attrs["mihu_frames"] = record
    logger.info("%s", sync_summary(df))
    return df


def _store(sync: _Sync, candidates: pa.Table, record: dict[str, Any]) -> CommitReport:
    """The storage step: the fetched rows (hashed if asked) committed to the root."""
    if sync.settings.pii == "hash":
        candidates = hash_pii(candidates)
    meta = {k: record[k] for k in _SYNC_META}
    meta.update(
        overlap_seconds=sync.window.total_seconds(),
        full=sync.settings.full,
        refetch=sync.settings.refetch,
    )
    metadata = {
        "base_url": record["base_url"],
        "filters": record["filters"],
        "requests": record["requests"],
        "pii": sync.settings.pii or "kept",
        "sync": meta,
    }
    return sync.store.commit(candidates, metadata=metadata, recorded=sync.recorded)


# --------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class _Sync:
    """A sync, validated before any request: where it stores, what it reads and how."""

    store: SnapshotRoot
    #: The conversations named, or None: every conversation the account's listing returns.
    named: tuple[str, ...] | None
    #: How conversations are read (newest change first, under the root's filters).
    load: LoadOptions
    settings: SyncOptions
    window: timedelta
    recorded: Recorded
    client_options: dict[str, Any]
    #: Named conversations a frame of the listing says have no session (``sessions_count`` 0).
    empty: frozenset[str] = frozenset()


def _prepare(
    root: str | os.PathLike[str],
    conversations: Any,
    client: MihuClient | None,
    options: Mapping[str, Any],
    storage_options: dict[str, str] | None = None,
) -> _Sync:
    """Check every argument, open (or create) the root and settle its filters."""
    sync, load, client_options = split_options(options, SyncOptions, LoadOptions, ClientOptions)
    settings = SyncOptions(**sync)
    named = (
        None
        if conversations is None or wants_all(conversations)
        else conversation_ids(conversations)
    )
    options_ = LoadOptions(sort_by="updated_at", sort_dir="desc", **load)
    if settings.pii == "hash":
        hash_pii(empty_table())  # no key: ValueError now, not after the requests
    if client is not None and client_options:
        raise TypeError(f"pass client= or client options, not both (got {sorted(client_options)})")
    store = open_root(root, create=True, storage_options=storage_options)
    # Filters not given are the root's; others are refused unless refetch.
    status, type_, recorded = store.resolve_filters(
        load.get("status"), load.get("type"), refetch=settings.refetch
    )
    if conversations is None and recorded.conversations != "all":
        raise ValueError(
            f"name the conversations to sync into {store.path}, or 'all' for every "
            "conversation of the account (a root synced with 'all' remembers it)"
        )
    if wants_all(conversations):
        recorded = replace(recorded, conversations="all")
    if settings.refetch:
        settings = replace(settings, full=True)
    return _Sync(
        store,
        named,
        replace(options_, status=status, type=type_),
        settings,
        cast(timedelta, settings.overlap),  # SyncOptions normalises seconds to a timedelta
        recorded,
        client_options,
        frozenset(_without_sessions(conversations)) if named is not None else frozenset(),
    )


def _without_sessions(listed: Any) -> set[str]:
    """The conversations whose ``sessions_count`` is 0: of the account's listing (its table and
    cost), or of a frame of conversations passed in (:func:`list_conversations`' columns)."""
    if isinstance(listed, tuple):
        listed = listed[0]
    if isinstance(listed, pd.DataFrame):
        if not {"uuid", "sessions_count"} <= set(listed.columns):
            return set()
        listed = pa.table(
            {
                "uuid": pa.array(listed["uuid"].astype(object), pa.string(), from_pandas=True),
                "sessions_count": pa.array(listed["sessions_count"], from_pandas=True),
            }
        )
    if not isinstance(listed, pa.Table) or "sessions_count" not in listed.column_names:
        return set()
    none = pc.equal(listed.column("sessions_count"), pa.scalar(0))  # a null count is dropped
    return {
        u for u in canonical_ids(listed.filter(none).column("uuid")).to_pylist() if u is not None
    }


def _conversations_of(sync: _Sync, client: MihuClient) -> tuple[tuple[str, ...], Any]:
    """The conversations to sync, and the listing's cost when they are "all" (listed fresh)."""
    if sync.named is not None:
        return sync.named, None
    listing, stats = client.list_all(sync.load)
    # to_pylist is typed as holding None; CONVERSATIONS_SCHEMA's uuid is not nullable
    return tuple(cast(list[str], listing.column("uuid").to_pylist())), (listing, stats)


def _fetch_record(
    client: MihuClient,
    plan: Plan,
    sync: _Sync,
    held: _Held,
    fetched: _Fetched,
    full_load: Sequence[str],
    incremental: Sequence[str],
    listed: Any,
) -> dict[str, Any]:
    """What the sync fetched, for ``df.attrs["mihu_frames"]``."""
    deleted = _deleted(held, fetched, plan) if sync.settings.full else None
    listed = listed[1] if listed is not None else None
    listing_requests = listed.requests if listed is not None else 0
    record: dict[str, Any] = {
        "base_url": client.base_url,
        "conversations": list(plan.conversations),
        "filters": _filters(plan),
        "requests": fetched.requests + listing_requests,
        "retries": fetched.retries + (listed.retries if listed is not None else 0),
        "pages": fetched.pages,
        "rows_deleted": None if deleted is None else len(deleted),
        "deleted_uuids": deleted or [],
        "conversations_full": len(full_load),
        "conversations_incremental": len(incremental),
        "conversations_new": sum(1 for c in full_load if c not in held.newest),
        "errors": [*(listed.errors if listed is not None else []), *fetched.errors],
    }
    if listed is not None:
        record["listing_requests"] = listing_requests
    return record


#: What a sync records about its fetch in its commit's metadata (``"sync"``); the
#: storage counts are recorded beside it (``rows_new``, ``rows_changed``, ...).
_SYNC_META = (
    "requests",
    "retries",
    "pages",
    "rows_deleted",
    "conversations_full",
    "conversations_incremental",
)


def sync_summary(df: pd.DataFrame) -> str:
    """The closing line of a sync, from ``df.attrs["mihu_frames"]`` of :func:`sync_snapshots`.

    Examples
    --------
    >>> df = mf.sync_snapshots(root, conversations, subdomain="acme")     # doctest: +SKIP
    >>> mf.sync_summary(df)                                               # doctest: +SKIP
    'synced 200 conversations (0 full, 200 incremental), 200 requests, 1,000 rows changed, 0 new,
    0 failed; 100,000 sessions held; snapshot data/snapshots/history/...parquet; 3 files written
    (1.2 MB); 1.29 s'
    """
    a = df.attrs.get("mihu_frames", {})
    n = a.get("conversations_full", 0) + a.get("conversations_incremental", 0)
    listed = (
        f"every conversation listed: {a['conversations_listed']:,}, "
        f"{a.get('conversations_new', 0):,} new, {a.get('conversations_empty', 0):,} without "
        "sessions; "
        if "conversations_listed" in a
        else ""
    )
    parts = [
        f"synced {n:,} conversation{'s' * (n != 1)} ({listed}{a.get('conversations_full', 0):,} "
        f"full, {a.get('conversations_incremental', 0):,} incremental)",
        f"{a.get('requests', 0):,} request{'s' * (a.get('requests', 0) != 1)}",
        f"{a.get('rows_changed', 0):,} rows changed",
        f"{a.get('rows_new', 0):,} new",
    ]
    if a.get("rows_deleted") is not None:
        parts.append(f"{a['rows_deleted']:,} deleted upstream (kept in history)")
    parts.append(f"{len(a.get('errors') or []):,} failed")
    written = f"version {a.get('version')} ({a['snapshot']})" if a.get("snapshot") else None
    tail = [f"{len(df):,} sessions held", f"snapshot {written or 'none (no change)'}"]
    files = len(a.get("files_written") or [])
    if files:
        tail.append(
            f"{files:,} file{'s' * (files != 1)} written ({a.get('bytes_written', 0) / 1e6:.1f} MB)"
        )
    tail.append(f"{a.get('seconds', 0):.2f} s")
    return ", ".join(parts) + "; " + "; ".join(tail)


# --------------------------------------------------------------------------- arguments


def _filters(plan: Plan) -> dict[str, Any]:
    described = plan.describe()
    return {k: described[k] for k in ("status", "type", "per_page")}


def _covers_everything(plan: Plan) -> bool:
    """True when the filters together return every session (so a missing one is deleted)."""
    return set(plan.options.statuses) in ({None}, set(STATUS_VALUES)) and set(
        plan.options.types
    ) in (
        {None},
        set(TYPE_VALUES),
    )


# --------------------------------------------------------------------------- held state


@dataclass(frozen=True)
class _Held:
    """What the root holds for the requested conversations: keys of the latest state.

    ``keys`` has ``conversation_uuid``, ``uuid``, ``updated_at`` and ``fetched_at``; ``newest``
    the newest update held per conversation, each row's ``updated_at`` bounded by its
    ``fetched_at`` (or, without one, by the time the sync started): an update cannot be later
    than the response that carried it, so a session dated in the future cannot push the window
    past edits made since.
    """

    keys: pa.Table
    newest: dict[str, datetime]

    @classmethod
    def read(cls, store: SnapshotRoot, conversations: Sequence[str]) -> _Held:
        keys = store.held_keys(conversations)
        if keys.num_rows == 0:
            return cls(keys, {})
        now = pa.scalar(datetime.now(timezone.utc), TIMESTAMP_TYPE)
        bound = pc.fill_null(keys.column("fetched_at"), now)
        updated = keys.column("updated_at")
        seen = pc.if_else(pc.less_equal(updated, bound), updated, bound)  # null stays null
        table = pa.table(
            [keys.column("conversation_uuid"), seen], names=["conversation_uuid", "seen"]
        )
        newest = table.group_by("conversation_uuid").aggregate([("seen", "max")])
        return cls(
            keys,
            {
                str(c): t
                for c, t in zip(
                    newest.column("conversation_uuid").to_pylist(),
                    newest.column("seen_max").to_pylist(),
                    strict=True,
                )
                if t is not None
            },
        )

    def threshold(self, conversation: str, window: timedelta) -> datetime:
        """Where the conversation's incremental read stops: ``newest - window``, never before
        the earliest instant a ``datetime`` holds (a session dated in the year 1)."""
        newest = self.newest[conversation]
        if newest - _EARLIEST <= window:
            return _EARLIEST
        return newest - window


# --------------------------------------------------------------------------- fetching


@dataclass
class _Fetched:
    """Everything a sync fetched: rows to compare, the requests it cost, what failed."""

    candidates: pa.Table
    #: Conversations loaded in full without failing, and every uuid those loads returned.
    reread: list[str]
    returned: pa.Array
    rows_seen: int
    requests: int
    retries: int
    pages: int
    errors: list[dict[str, Any]]
    failed: set[str]


def _fetch(
    client: MihuClient,
    plan: Plan,
    held: _Held,
    incremental: Sequence[str],
    full_load: Sequence[str],
    window: timedelta,
) -> _Fetched:
    """Incremental reads first (usually most conversations), then the full loads; both on
    the client's page runner, always from the network."""
    tables: list[pa.Table] = []
    requests = retries = pages = rows_seen = 0
    errors: list[dict[str, Any]] = []
    failed: set[str] = set()
    if incremental:
        thresholds = {c: held.threshold(c, window) for c in incremental}
        read, stats = client.run(plan, Window(thresholds), refresh=True)
        rows_seen += read.num_rows
        tables.append(_in_window(read, held, thresholds))
        requests, retries, pages = stats.requests, stats.retries, stats.pages
        errors.extend(stats.errors)
        failed.update(e["conversation"] for e in stats.errors)
    reread: list[str] = []
    returned: pa.Array = pa.array([], pa.string())
    if full_load:
        options = replace(plan.options, sort_by="created_at", sort_dir="asc")
        table, stats = client.run(
            Plan.build(full_load, options),
            FullListing(label="mihu sync (full)", left_out=LEFT_OUT),
            refresh=True,
        )
        requests += stats.requests
        retries += stats.retries
        pages += stats.pages
        errors.extend(stats.errors)
        failed.update(e["conversation"] for e in stats.errors)
        rows_seen += table.num_rows
        tables.append(table)
        reread = [c for c in full_load if c not in failed]
        returned = _uuids(table)
    candidates = pa.concat_tables(tables) if tables else empty_table()
    return _Fetched(
        candidates, reread, returned, rows_seen, requests, retries, pages, errors, failed
    )


def _in_window(table: pa.Table, held: _Held, thresholds: dict[str, datetime]) -> pa.Table:
    """Rows worth comparing: updated at or after their conversation's window, or never held.

    Rows below the window are held already (that is what the window means); a row there that
    is not held costs nothing to keep, and repairs a held state that was written partially.
    """
    if table.num_rows == 0:
        return table
    names = list(thresholds)
    bounds = pa.array([thresholds[c] for c in names], type=TIMESTAMP_TYPE)
    names_array = pa.array(names, pa.string())
    where = _array(pc.index_in(table.column("conversation_uuid"), value_set=names_array))
    at_or_after = pc.greater_equal(table.column("updated_at"), bounds.take(where))
    recent = pc.or_kleene(at_or_after, pc.is_null(at_or_after))  # unknown counts as recent
    unheld = pc.invert(pc.is_in(table.column("uuid"), value_set=_uuids(held.keys)))
    return table.filter(pc.or_(recent, unheld))


def _uuids(table: pa.Table) -> pa.Array:
    return table.column("uuid").combine_chunks()


@dataclass(frozen=True)
class Window:
    """The paging policy of an incremental read: each known conversation newest change first,
    down to its window.

    Pages are always fetched fresh (a cached page would hide changes) and never saved (pages
    read newest-first are not the pages a load asks for); each decoded page decides whether
    its query reads on: the next page is asked for unless this one is the last, or its oldest
    ``updated_at`` is before the window.
    """

    thresholds: dict[str, datetime]
    cached: bool = False
    hint: bool = False
    label: str = "mihu sync"
    left_out: str = LEFT_OUT
    pages_alone: bool = False

    def queries(self, plan: Plan) -> list[Query]:
        return [q for q in plan.queries if q.conversation in self.thresholds]

    def after(self, query: Query, page: int, envelope: PageEnvelope, rows: pa.Table) -> int:
        threshold = self.thresholds[query.conversation]
        oldest = pc.min(rows.column("updated_at")).as_py()
        last = last_page_to_read(page, envelope, oldest, threshold)
        if last > page:
            return last
        logger.debug(
            "conversation %s: stopped after page %d of %d (oldest on it %s, window from %s)",
            query.conversation,
            page,
            envelope.last_page,
            oldest,
            threshold,
        )
        return page

    def may_grow(self, query: Query, rounds: list[int], page: int, asked: int) -> bool:
        """Always: how far to read is decided page by page (:meth:`after`)."""
        return True


# --------------------------------------------------------------------------- helpers


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _deleted(held: _Held, fetched: _Fetched, plan: Plan) -> list[str] | None:
    """Held sessions of fully re-read conversations that the API no longer returns."""
    if not _covers_everything(plan):
        logger.debug("deletions not checked: the status/type filters do not cover every session")
        return None
    conversations = pa.array(fetched.reread, pa.string())
    mine = held.keys.filter(
        pc.is_in(held.keys.column("conversation_uuid"), value_set=conversations)
    )
    gone = mine.filter(pc.invert(pc.is_in(mine.column("uuid"), value_set=fetched.returned)))
    return sorted(u for u in gone.column("uuid").to_pylist() if u is not None)
