"""Loads of a window of start times: ``since``/``until``, newest first, stopping past the window.

The API has no date filter but sorts by ``started_at``, so a window is read from the top of
each query's ``started_at desc`` listing, one page after the other, down to the first page
holding a session started before ``since`` (:class:`StartedWindow`, a paging policy of
:class:`~mihu_frames.runner.PageRunner`). A window of the last week costs the pages holding
that week plus at most one per query (a conversation under one status and one type value),
not the conversation's history. The rows are then cut to the window, [since, until), and put
oldest first per conversation (:meth:`StartedWindow.keep`).

The rules, decided here:

- **Sort.** A window implies ``sort_by="started_at"``, ``sort_dir="desc"`` (the requests; the
  frame comes oldest first). Another sort passed explicitly is a ``ValueError`` before any
  request (:func:`window_options`).
- **Nulls.** A session without ``started_at`` is in no window: left out. A page of them only
  (the simulator and PostgreSQL put nulls first in a descending sort) does not stop the read.
- **One page after another**, never ahead: in descending order a session arriving while a
  conversation is read pushes the rows down by one, so a page read later shows again the last
  row of the page before (kept once: rows are one per ``uuid``); pages fetched ahead of their
  turn could instead skip a row.
- **No cache.** Pages are always fetched fresh and never saved, and no result is stored: the
  top of a newest-first listing is where data changes, a listing read partly is not a listing
  (the cache file's rule: pages 1 to ``last_page`` of one fetch), and it would share its cache
  key with a full ``started_at desc`` load. So a windowed load leaves the cache as it found it,
  and ``offline=True`` is refused with a window (``LoadOptions``).
- ``until`` alone cannot stop early (what is older than ``until`` reaches to the last page).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.decoding import PageEnvelope
from mihu_frames.options import LoadOptions
from mihu_frames.runner import Plan, Query
from mihu_frames.schema import TIMESTAMP_TYPE

logger = logging.getLogger("mihu_frames")

#: The order a window is read in.
SORT_BY, SORT_DIR = "started_at", "desc"


def window_options(load: LoadOptions, given: dict[str, Any]) -> LoadOptions:
    """The options a windowed load runs with: ``started_at desc``, whatever the defaults.

    Raises
    ------
    ValueError
        ``given`` (the options the caller passed) sorts another way.
    """
    for name, wanted in (("sort_by", SORT_BY), ("sort_dir", SORT_DIR)):
        if name in given and given[name] != wanted:
            raise ValueError(
                f"since/until read sessions by start time, newest first ({name}={wanted!r}); "
                f"{name}={given[name]!r} contradicts it: leave {name} out (the frame comes "
                "oldest first either way)"
            )
    return replace(load, sort_by=SORT_BY, sort_dir=SORT_DIR)


def last_page_to_read(
    page: int, envelope: PageEnvelope, oldest: datetime | None, threshold: datetime | None
) -> int:
    """How far a newest-first read goes after this page: ``page + 1`` while the page is not
    the last, not empty, and its oldest value (None: it holds none) is not before
    ``threshold`` (None: no threshold); else ``page`` (no more)."""
    more = envelope.rows > 0 and page < envelope.last_page
    if more and (threshold is None or oldest is None or oldest >= threshold):
        return page + 1
    return page


@dataclass(frozen=True)
class StartedWindow:
    """The paging policy of a windowed load: each query ``started_at`` newest first, page after
    page, down to the first page with a session started before ``since``.

    Parameters
    ----------
    since, until : datetime or None
        The window [since, until), aware UTC (``LoadOptions`` normalises them).
    """

    since: datetime | None
    until: datetime | None
    cached: bool = False
    hint: bool = False
    label: str = "mihu sessions (window)"
    left_out: str = "left out {error}"
    pages_alone: bool = False

    @classmethod
    def of(cls, load: LoadOptions) -> StartedWindow:
        return cls(load.since, load.until)

    def queries(self, plan: Plan) -> tuple[Query, ...]:
        return plan.queries

    def after(self, query: Query, page: int, envelope: PageEnvelope, rows: pa.Table) -> int:
        oldest = pc.min(rows.column("started_at")).as_py() if rows.num_rows else None
        last = last_page_to_read(page, envelope, oldest, self.since)
        if last == page:
            logger.debug(
                "conversation %s: window read stopped after page %d of %d (oldest start on it "
                "%s, window from %s)",
                query.conversation,
                page,
                envelope.last_page,
                oldest,
                self.since,
            )
        return last

    def may_grow(self, query: Query, rounds: list[int], page: int, asked: int) -> bool:
        """Always: how far to read is decided page by page (:meth:`after`)."""
        return True

    def keep(self, table: pa.Table, conversations: tuple[str, ...]) -> pa.Table:
        """The rows started in the window, each conversation's oldest first (conversations in
        the order asked; a stable sort keeps the API's order of equal starts)."""
        started = table.column("started_at")
        inside = pc.is_valid(started)
        if self.since is not None:
            since = pa.scalar(self.since, TIMESTAMP_TYPE)
            inside = pc.and_kleene(inside, pc.greater_equal(started, since))
        if self.until is not None:
            until = pa.scalar(self.until, TIMESTAMP_TYPE)
            inside = pc.and_kleene(inside, pc.less(started, until))
        # The columns are chunked, and so is what pc makes of them: pyarrow-stubs type
        # is_valid's result as an array and fill_null's as array, scalar or chunked array.
        kept = table.filter(cast(pa.ChunkedArray, pc.fill_null(inside, pa.scalar(False))))
        logger.debug("window: %d of %d rows read started in it", kept.num_rows, table.num_rows)
        if kept.num_rows < 2:
            return kept
        found = pc.index_in(kept.column("conversation_uuid"), value_set=pa.array(conversations))
        # A row of a conversation not asked for (a server's mistake) goes last, not first.
        last = pa.scalar(len(conversations), pa.int32())  # index_in's type
        where = cast(pa.ChunkedArray, pc.fill_null(found, last))
        keys = pa.Table.from_arrays(
            [where, kept.column("started_at")], names=["conversation", "started_at"]
        )
        order = pc.sort_indices(
            keys, sort_keys=[("conversation", "ascending"), ("started_at", "ascending")]
        )
        return kept.take(order)

    def describe(self) -> dict[str, str | None]:
        """The window, for ``df.attrs["mihu_frames"]["filters"]`` and snapshot metadata."""
        return {
            "since": None if self.since is None else self.since.isoformat(),
            "until": None if self.until is None else self.until.isoformat(),
        }
