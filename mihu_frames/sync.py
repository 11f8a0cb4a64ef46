"""Incremental sync: fetch only what changed since the snapshots under a root, write it, return
the latest state.

:func:`sync_snapshots` keeps a snapshot root up to date at a cost in requests proportional to
what changed, not to what exists:

1. **Held state.** For each requested conversation, the newest ``updated_at`` already held is
   read from the snapshots (key columns only).
2. **Plan.** A conversation with nothing held, and every conversation with ``full=True``, gets a
   full load (``created_at asc``: stable while data drifts). Every other conversation is read
   newest change first (``sort_by=updated_at&sort_dir=desc``), one task per conversation (and
   filter value) on a pool of the client's ``max_workers`` threads, page after page, stopping
   after the first page whose oldest ``updated_at`` is before ``held - overlap``.
3. **Compare.** Rows fetched are compared with the held latest state: *new* (the uuid was never
   held), *changed* (held with another ``updated_at`` or other content), or unchanged (dropped:
   a snapshot written by a sync holds only changed and new rows).
4. **Write** the changed and new rows as one snapshot, atomically, once every page is in: an
   exception half way writes nothing and leaves earlier snapshots as they were, and the next
   sync redoes the work. Then the latest state of the requested conversations is returned.

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
up by a full load. Held state is per conversation: sync a root with the same ``status``/``type``
filters each time (or once with ``full=True`` after changing them).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.client import MihuClient
from mihu_frames.decoding import PageEnvelope
from mihu_frames.options import (
    DEFAULT_OVERLAP,
    SYNC_LOAD_OPTIONS,
    ClientOptions,
    LoadOptions,
    SyncOptions,
    conversation_ids,
    split_options,
    takes,
)
from mihu_frames.runner import FullListing, Plan, Query
from mihu_frames.schema import (
    COLUMNS,
    STATUS_VALUES,
    TYPE_VALUES,
    empty_frame,
    empty_table,
    from_pandas,
    to_pandas,
)
from mihu_frames.snapshots import hash_pii, read_snapshots, write_snapshot

__all__ = ["DEFAULT_OVERLAP", "sync_snapshots", "sync_summary"]

logger = logging.getLogger("mihu_frames")

#: A session's content: every column but when it was fetched.
_CONTENT = tuple(name for name in COLUMNS if name != "fetched_at")
_KEYS = ("conversation_uuid", "uuid", "updated_at")
#: How a conversation left out under on_error="warn" is announced.
LEFT_OUT = "did not sync {error}; it keeps its earlier state"
_TS = pa.timestamp("us", tz="UTC")
_KEYS_SCHEMA = pa.schema(
    [("conversation_uuid", pa.string()), ("uuid", pa.string()), ("updated_at", _TS)]
)


@takes((SyncOptions, None), (LoadOptions, SYNC_LOAD_OPTIONS), (ClientOptions, None))
def sync_snapshots(
    root: str | os.PathLike[str],
    conversations: Any,
    *,
    client: MihuClient | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Fetch what changed since the snapshots under ``root``, write it, return the latest state.

    Conversations already held are read newest change first and only down to the newest
    ``updated_at`` held (minus ``overlap``); conversations never seen get a full load. The
    changed and new rows are written as one new snapshot (nothing when nothing changed). The
    cost in requests follows what changed: about one request per conversation plus one per
    ``per_page`` changed sessions.

    Parameters
    ----------
    root : str or Path
        The snapshot root (see :func:`write_snapshot`); created if missing.
    conversations : str, uuid.UUID, or an iterable of them
        Conversation UUIDs; duplicates are synced once.
    client : MihuClient, optional
        The client to use; by default one is built from the client options and closed after.
    <options>

    Returns
    -------
    pandas.DataFrame
        ``read_snapshots(root, conversations=...)``: the latest state of every session of the
        requested conversations. ``df.attrs["mihu_frames"]`` records ``requests``,
        ``retries``, ``pages``, ``rows_changed``, ``rows_new``, ``rows_unchanged_seen``,
        ``rows_deleted`` (``None`` unless ``full=True`` without a narrowing filter) and
        ``deleted_uuids``, ``conversations_full``, ``conversations_incremental``,
        ``snapshot`` (the file written, as a string, or ``None``), ``errors``,
        ``fetch_seconds`` (fetching pages) and ``seconds`` (the whole sync).

    Raises
    ------
    ValueError
        A bad argument, before any request is sent.
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
    sync, load, client_options = split_options(options, SyncOptions, LoadOptions, ClientOptions)
    settings = SyncOptions(**sync)
    full, pii = settings.full, settings.pii
    window = cast(timedelta, settings.overlap)  # SyncOptions normalises seconds to a timedelta
    ids = conversation_ids(conversations)
    plan = Plan.build(ids, LoadOptions(sort_by="updated_at", sort_dir="desc", **load))
    if pii == "hash":
        hash_pii(empty_table())  # no key: ValueError now, not after the requests
    if client is not None and client_options:
        raise TypeError(f"pass client= or client options, not both (got {sorted(client_options)})")
    base = Path(root)
    if base.exists() and not base.is_dir():
        raise ValueError(f"root must be a folder, got the file {base}")

    own_client = client is None
    active = MihuClient(**client_options) if client is None else client
    try:
        held = _Held.read(base, plan.conversations)
        full_load = tuple(c for c in plan.conversations if full or c not in held.newest)
        incremental = tuple(c for c in plan.conversations if c not in full_load)
        logger.debug(
            "sync plan: %d conversation(s) incremental, %d full (%s)",
            len(incremental),
            len(full_load),
            "full=True" if full else "nothing held for them",
        )
        fetch_started = time.perf_counter()
        fetched = _fetch(active, plan, held, incremental, full_load, window)
        fetch_seconds = time.perf_counter() - fetch_started
    finally:
        if own_client:
            active.close()

    candidates = fetched.candidates
    is_new, changed = _classify(candidates, held, base, pii)
    changes = candidates.filter(pa.array(is_new | changed))
    deleted = _deleted(held, fetched, plan) if full else None
    record = {
        "base_url": active.base_url,
        "conversations": list(plan.conversations),
        "filters": _filters(plan),
        "requests": fetched.requests,
        "retries": fetched.retries,
        "pages": fetched.pages,
        "rows_changed": int(changed.sum()),
        "rows_new": int(is_new.sum()),
        "rows_unchanged_seen": fetched.rows_seen - int(changed.sum()) - int(is_new.sum()),
        "rows_deleted": None if deleted is None else len(deleted),
        "deleted_uuids": deleted or [],
        "conversations_full": len(full_load),
        "conversations_incremental": len(incremental),
        "snapshot": None,
        "errors": fetched.errors,
        "fetch_seconds": round(fetch_seconds, 6),
    }
    if changes.num_rows:
        frame = to_pandas(changes)
        frame.attrs["mihu_frames"] = {
            "base_url": active.base_url,
            "filters": record["filters"],
            "requests": fetched.requests,
        }
        meta = {k: record[k] for k in _SYNC_META}
        meta["overlap_seconds"] = window.total_seconds()
        meta["full"] = full
        path = write_snapshot(frame, base, metadata={"sync": meta}, pii=pii)
        record["snapshot"] = str(path)

    latest = read_snapshots(base, conversations=plan.conversations) if base.exists() else None
    df = empty_frame() if latest is None else latest
    record["seconds"] = round(time.perf_counter() - started, 6)
    record["synced_at"] = datetime.now(timezone.utc).isoformat()
    df.attrs["mihu_frames"] = record
    logger.info("%s", sync_summary(df))
    return df


_SYNC_META = (
    "requests",
    "retries",
    "pages",
    "rows_changed",
    "rows_new",
    "rows_unchanged_seen",
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
    0 failed; 100,000 sessions held; snapshot data/snapshots/sessions/...parquet; 1.29 s'
    """
    a = df.attrs.get("mihu_frames", {})
    n = a.get("conversations_full", 0) + a.get("conversations_incremental", 0)
    parts = [
        f"synced {n:,} conversation{'s' * (n != 1)} ({a.get('conversations_full', 0):,} full, "
        f"{a.get('conversations_incremental', 0):,} incremental)",
        f"{a.get('requests', 0):,} request{'s' * (a.get('requests', 0) != 1)}",
        f"{a.get('rows_changed', 0):,} rows changed",
        f"{a.get('rows_new', 0):,} new",
    ]
    if a.get("rows_deleted") is not None:
        parts.append(f"{a['rows_deleted']:,} deleted upstream (kept in history)")
    parts.append(f"{len(a.get('errors') or []):,} failed")
    tail = [f"{len(df):,} sessions held", f"snapshot {a.get('snapshot') or 'none (no change)'}"]
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
    """What the snapshots hold for the requested conversations: keys of the latest state."""

    keys: pa.Table
    newest: dict[str, datetime]

    @classmethod
    def read(cls, root: Path, conversations: Sequence[str]) -> _Held:
        if not root.exists() or not conversations:
            return cls(_KEYS_SCHEMA.empty_table(), {})
        df = read_snapshots(root, conversations=conversations, columns=list(_KEYS))
        keys = pa.Table.from_arrays(
            [pa.array(df[name], type=_KEYS_SCHEMA.field(name).type) for name in _KEYS],
            schema=_KEYS_SCHEMA,
        )
        newest = df.groupby("conversation_uuid", observed=True)["updated_at"].max().dropna()
        return cls(keys, {str(c): t.to_pydatetime() for c, t in newest.items()})

    def threshold(self, conversation: str, window: timedelta) -> datetime:
        return self.newest[conversation] - window


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
    returned = pa.array([], pa.string())
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
    bounds = pa.array([thresholds[c] for c in names], type=_TS)
    names_array = pa.array(names, pa.string())
    where = _array(pc.index_in(table.column("conversation_uuid"), value_set=names_array))
    recent = pc.fill_null(pc.greater_equal(table.column("updated_at"), bounds.take(where)), True)
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

    def queries(self, plan: Plan) -> list[Query]:
        return [q for q in plan.queries if q.conversation in self.thresholds]

    def after(self, query: Query, page: int, envelope: PageEnvelope, rows: pa.Table) -> int:
        threshold = self.thresholds[query.conversation]
        oldest = pc.min(rows.column("updated_at")).as_py()
        more = envelope.rows > 0 and page < envelope.last_page
        if more and (oldest is None or oldest >= threshold):
            return page + 1
        logger.debug(
            "conversation %s: stopped after page %d of %d (oldest on it %s, window from %s)",
            query.conversation,
            page,
            envelope.last_page,
            oldest,
            threshold,
        )
        return page


# --------------------------------------------------------------------------- comparing


def _classify(
    candidates: pa.Table, held: _Held, root: Path, pii: str | None
) -> tuple[np.ndarray, np.ndarray]:
    """Masks over ``candidates``: new (never held) and changed (held, but not like this)."""
    n = candidates.num_rows
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    where = _array(pc.index_in(candidates.column("uuid"), value_set=_uuids(held.keys)))
    is_new = _mask(pc.is_null(where))
    held_updated = held.keys.column("updated_at").combine_chunks().take(where)
    same_time = _equal(candidates.column("updated_at"), held_updated) & ~is_new
    changed = ~is_new & ~same_time
    if same_time.any():
        changed[same_time] = ~_same_content(candidates.filter(pa.array(same_time)), root, pii)
    return is_new, changed


def _same_content(rows: pa.Table, root: Path, pii: str | None) -> np.ndarray:
    """For rows held with the same ``updated_at``: is the held row the same, column by column?

    Only the held rows that can match are read: the rows' conversations, updated at or after
    the oldest of them (``since`` is pushed down to the Parquet scan).
    """
    if pii == "hash":
        rows = hash_pii(rows)
    updated = rows.column("updated_at")
    since = None if updated.null_count else pc.min(updated).as_py()
    conversations = pc.unique(rows.column("conversation_uuid")).to_pylist()
    held = from_pandas(read_snapshots(root, conversations=conversations, since=since))
    where = _array(pc.index_in(rows.column("uuid"), value_set=_uuids(held)))
    same = ~_mask(pc.is_null(where))
    for name in _CONTENT:
        same &= _equal(rows.column(name), held.column(name).combine_chunks().take(where))
    return same


def _equal(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Element-wise equality where null equals null (lists compared by their items)."""
    if pa.types.is_list(a.type):
        a, b = pc.binary_join(a, "\x1f"), pc.binary_join(b, "\x1f")
    equal = pc.fill_null(pc.equal(a, b), False)
    return _mask(pc.or_(equal, pc.and_(pc.is_null(a), pc.is_null(b))))


def _array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


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
    return sorted(gone.column("uuid").to_pylist())
