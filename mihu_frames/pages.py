"""Planning and fetching pages concurrently, across every conversation at once.

A :class:`Plan` is the validated form of a load: one query per (conversation, status value,
type value). :func:`fetch_frame` runs it on one bounded thread pool:

1. page 1 of every query is submitted;
2. as soon as a query's page 1 answers, its pages 2..last_page are submitted (no waiting for
   the other first pages, nor for page 1 to be decoded: see :func:`paginator_hint`);
3. page bodies are decoded in batches as they arrive, while the pool keeps fetching;
4. if a later page reports a larger ``last_page`` (sessions arrived while reading), the new
   pages are fetched too;
5. batches are joined in fetch order and de-duplicated by ``uuid`` (latest ``updated_at``).
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import sys
import time
import warnings
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames.client import PageResponse, check_uuid
from mihu_frames.errors import MihuError, ResponseFormatError
from mihu_frames.frame import (
    PageEnvelope,
    PageInfo,
    batch_size,
    decode_pages,
    finish,
    paginator_hint,
)
from mihu_frames.schema import (
    SORT_BY_VALUES,
    SORT_DIR_VALUES,
    STATUS_VALUES,
    TYPE_VALUES,
    to_pandas,
)

if TYPE_CHECKING:
    from mihu_frames.client import MihuClient

logger = logging.getLogger("mihu_frames")
ON_ERROR_VALUES = ("raise", "warn", "skip")


@dataclass(frozen=True)
class Query:
    """One paginated listing: a conversation under one status and one type value."""

    index: int
    conversation: str
    status: str | None
    type: str | None

    def params(self, page: int, plan: Plan) -> dict[str, str | int]:
        params: dict[str, str | int] = {
            "page": page,
            "per_page": plan.per_page,
            "sort_by": plan.sort_by,
            "sort_dir": plan.sort_dir,
        }
        if self.status is not None:
            params["status"] = self.status
        if self.type is not None:
            params["type"] = self.type
        return params


@dataclass(frozen=True)
class Plan:
    """A validated load: every argument checked before any request is sent."""

    conversations: tuple[str, ...]
    queries: tuple[Query, ...]
    statuses: tuple[str | None, ...]
    types: tuple[str | None, ...]
    sort_by: str
    sort_dir: str
    per_page: int
    on_error: str

    @classmethod
    def build(
        cls,
        conversations: str | Iterable[str],
        *,
        status: str | Iterable[str] | None = None,
        type: str | Iterable[str] | None = None,
        sort_by: str = "created_at",
        sort_dir: str = "asc",
        per_page: int = 100,
        on_error: str = "raise",
    ) -> Plan:
        """Validate the arguments of a load; raise ``ValueError`` naming the first bad one."""
        if isinstance(conversations, (bytes, bytearray)) or conversations is None:
            raise ValueError("conversations must be a UUID string or an iterable of them")
        items = [conversations] if isinstance(conversations, str) else list(conversations)
        uuids = tuple(dict.fromkeys(check_uuid(c) for c in items))
        statuses = _filter_values("status", status, STATUS_VALUES)
        types = _filter_values("type", type, TYPE_VALUES)
        _one_of("sort_by", sort_by, SORT_BY_VALUES)
        _one_of("sort_dir", sort_dir, SORT_DIR_VALUES)
        _one_of("on_error", on_error, ON_ERROR_VALUES)
        if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= 100:
            raise ValueError(f"per_page must be an integer from 1 to 100, got {per_page!r}")
        combos = itertools.product(uuids, statuses, types)
        queries = tuple(Query(i, c, s, t) for i, (c, s, t) in enumerate(combos))
        return cls(uuids, queries, statuses, types, sort_by, sort_dir, per_page, on_error)

    def describe(self) -> dict[str, Any]:
        """The filters, for ``df.attrs`` and snapshot metadata."""
        return {
            "status": [s for s in self.statuses if s is not None] or None,
            "type": [t for t in self.types if t is not None] or None,
            "sort_by": self.sort_by,
            "sort_dir": self.sort_dir,
            "per_page": self.per_page,
        }


def _filter_values(
    name: str, value: str | Iterable[str] | None, allowed: tuple[str, ...]
) -> tuple[str | None, ...]:
    if value is None:
        return (None,)
    if value == "all":
        return allowed
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise ValueError(f"{name} must not be an empty list (use None for no filter)")
    for v in values:
        _one_of(name, v, allowed)
    return tuple(dict.fromkeys(values))


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in allowed:
        choices = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


@dataclass
class LoadStats:
    """What a load cost; lands in ``df.attrs["mihu_frames"]``."""

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    pages: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: The earliest cache expiry among the pages.
    expires: datetime | None = None
    #: Conversations with at least one page fetched from the network in this load.
    fresh: set[str] = field(default_factory=set)


@dataclass
class FetchedPage:
    """A page as a worker hands it back: the response, and for a first page its decoding."""

    query: Query
    info: PageInfo
    response: PageResponse
    #: For a first page: ``last_page`` as its body states it, read before decoding.
    hint: int | None = None


@dataclass
class DecodedBatch:
    """Pages decoded together: one table (each page's rows contiguous, in page order) and
    each page's envelope; or, for pages that are not the documented format, their errors."""

    pages: list[FetchedPage]
    table: pa.Table | None
    envelopes: list[PageEnvelope]
    rejected: list[tuple[FetchedPage, ResponseFormatError]] = field(default_factory=list)


class PageRun:
    """Fetch the pages of many queries on one bounded pool and decode them in batches.

    Three kinds of work overlap. ``max_workers`` threads fetch pages (and read the paginator
    of first pages when ``hint_first`` is set, so later pages start before any decoding). One
    decoder thread turns pages into Arrow in batches: whatever has arrived when it is free
    (at least ~1,000 sessions, at most ~5,000), so little is left to decode when the last
    page lands. The calling thread schedules and collects; :meth:`follow` says which page each
    decoded page leads to. When ``store`` is set, the pages the decoder validated are handed
    to the cache file's background writer (:meth:`save`): at the end of the run, or every
    ~50,000 sessions, so a big load does not hold all its bodies until then.
    """

    store = True
    hint_first = True
    label = "mihu sessions"
    #: How a conversation left out under on_error="warn" is announced.
    left_out = "left out {error}"

    def __init__(
        self,
        client: MihuClient,
        plan: Plan,
        queries: Iterable[Query],
        progress: bool | None,
        *,
        refresh: bool = False,
        offline: bool = False,
    ) -> None:
        self.client, self.plan = client, plan
        self.refresh, self.offline = refresh, offline
        self.queries = list(queries)
        self.stats = LoadStats()
        self.last_page: dict[int, int] = {}
        self.failed: dict[str, MihuError] = {}
        self.tables: list[pa.Table] = []
        self.fetching: set[Future[FetchedPage]] = set()
        self.decoding: set[Future[DecodedBatch]] = set()
        self.batch: list[FetchedPage] = []
        # Finished futures, in completion order: one queue instead of concurrent.futures.wait,
        # which re-arms a waiter on every pending future each time (quadratic in the pages).
        self.done: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self.batch_limit = batch_size(plan.per_page)
        self.batch_floor = max(1, self.batch_limit // 5)
        self.unsaved: list[PageResponse] = []
        self.save_limit = max(1, 50_000 // plan.per_page)
        self.bar = _progress_bar(progress, len(self.queries), self.label)
        # One query for what the cache holds; pages it lacks skip the per-request lookup.
        self.cached = None if self.refresh or self.offline else client.cached_keys()

    def run(self) -> None:
        """Fetch every page the queries lead to; raise the first error under on_error="raise"."""
        self.pool = ThreadPoolExecutor(self.client.max_workers, thread_name_prefix="mihu")
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix="mihu-decode")
        try:
            for query in self.queries:
                self.submit(query, 1)
            while self.fetching or self.decoding or self.batch:
                if self.batch and (
                    len(self.batch) >= self.batch_limit
                    or not self.fetching
                    or (not self.decoding and len(self.batch) >= self.batch_floor)
                ):
                    # While workers fetch, the cores are theirs; the last batch gets them all.
                    threads = not self.fetching
                    decoding = self.decoder.submit(self.decode, self.batch, threads)
                    self.decoding.add(decoding)
                    decoding.add_done_callback(self.done.put)
                    self.batch = []
                future = self.done.get()
                if future in self.fetching:
                    self.fetching.discard(future)
                    self.collect(future)
                else:
                    self.decoding.discard(future)
                    self.absorb(future.result())
        except BaseException:
            # Do not wait for pages still in flight: the caller gets the error now.
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.decoder.shutdown(wait=True)
            self.save()  # what was validated is worth keeping
            raise
        else:
            self.pool.shutdown(wait=True)
            self.decoder.shutdown(wait=True)
        finally:
            if self.bar is not None:
                self.bar.close()

    def save(self) -> None:
        """Hand the validated pages not handed over yet to the cache's background writer."""
        if self.unsaved:
            self.client.store(self.unsaved)
            self.unsaved = []

    def submit(self, query: Query, page: int) -> None:
        future = self.pool.submit(self.fetch, query, page)
        self.fetching.add(future)
        future.add_done_callback(self.done.put)
        if self.bar is not None and page > 1:
            self.bar.total = (self.bar.total or 0) + 1
            self.bar.refresh()

    def fetch(self, query: Query, page: int) -> FetchedPage:
        """In a worker: fetch one page; for a first page, read its ``last_page`` too."""
        response = self.client.fetch_page(
            query.conversation,
            query.params(page, self.plan),
            refresh=self.refresh,
            offline=self.offline,
            cached=self.cached,
        )
        info = PageInfo(
            conversation=query.conversation,
            page=page,
            query=query.index,
            status=query.status,
            type=query.type,
            fetched_at=response.fetched_at,
        )
        fetched = FetchedPage(query, info, response)
        if page == 1 and self.hint_first:
            fetched.hint = paginator_hint(response.body)
        return fetched

    def decode(self, pages: list[FetchedPage], threads: bool = False) -> DecodedBatch:
        """Decode a batch of pages.

        A batch with a bad page is decoded page by page, so the good pages still count and
        the bad one is named.
        """
        try:
            table, envelopes = decode_pages(
                [p.response.body for p in pages], [p.info for p in pages], use_threads=threads
            )
        except ResponseFormatError as exc:
            if len(pages) == 1:
                response = pages[0].response
                self.client.forget(response.cache_key if response.from_cache else None)
                return DecodedBatch(pages, None, [], rejected=[(pages[0], exc)])
            parts = [self.decode([page]) for page in pages]
            tables = [part.table for part in parts if part.table is not None]
            return DecodedBatch(
                [p for part in parts for p in part.pages if part.table is not None],
                pa.concat_tables(tables) if tables else None,
                [e for part in parts for e in part.envelopes],
                [r for part in parts for r in part.rejected],
            )
        return DecodedBatch(pages, table, envelopes)

    def collect(self, future: Future[FetchedPage]) -> None:
        try:
            fetched = future.result()
        except MihuError as exc:
            self.fail(exc.conversation or "", exc)
            return
        if fetched.query.conversation in self.failed:
            return
        self.count(fetched.response, fetched.query.conversation)
        self.batch.append(fetched)
        if fetched.hint is not None:
            self.grow(fetched.query, fetched.hint)

    def absorb(self, decoded: DecodedBatch) -> None:
        if self.store and decoded.table is not None:  # before a rejection may raise
            self.unsaved += [p.response for p in decoded.pages if p.response.response is not None]
            if len(self.unsaved) >= self.save_limit:
                self.save()
        for page, error in decoded.rejected:
            self.fail(page.query.conversation, error)
        if decoded.table is None:
            return
        self.tables.append(decoded.table)
        start = 0
        for page, envelope in zip(decoded.pages, decoded.envelopes, strict=True):
            rows = decoded.table.slice(start, envelope.rows)
            start += envelope.rows
            if page.query.conversation not in self.failed:
                self.follow(page, envelope, rows)

    def follow(self, page: FetchedPage, envelope: PageEnvelope, rows: pa.Table) -> None:
        """Submit the pages a decoded page leads to: for a load, every page up to last_page."""
        self.grow(page.query, envelope.last_page)

    def count(self, response: PageResponse, conversation: str) -> None:
        stats = self.stats
        stats.pages += 1
        stats.retries += response.retries
        if response.from_cache:
            stats.cache_hits += 1
        else:
            stats.requests += 1 + response.retries
            stats.fresh.add(conversation)
        if response.expires is not None:
            stats.expires = min(stats.expires or response.expires, response.expires)
        if self.bar is not None:
            self.bar.update(1)

    def grow(self, query: Query, last_page: int) -> None:
        """Submit the pages of ``query`` beyond those already asked for."""
        known = self.last_page.get(query.index, 1)
        if last_page > known:
            if query.index in self.last_page:
                logger.debug(
                    "conversation %s grew to %d pages while reading", query.conversation, last_page
                )
            self.last_page[query.index] = last_page
            for page in range(known + 1, last_page + 1):
                self.submit(query, page)
        else:
            self.last_page.setdefault(query.index, known)

    def fail(self, conversation: str, error: MihuError) -> None:
        if self.plan.on_error == "raise":
            raise error
        if conversation in self.failed:
            return
        self.failed[conversation] = error
        self.stats.errors.append(
            {
                "conversation": conversation,
                "page": error.page,
                "error": type(error).__name__,
                "status_code": error.status_code,
                "message": str(error),
            }
        )
        message = self.left_out.format(error=error)
        if self.plan.on_error == "warn":
            warnings.warn(message, RuntimeWarning, stacklevel=_first_frame_outside())
        else:  # "skip" is silent; the log keeps a record
            logger.info("%s", message)

    def table(self) -> pa.Table:
        """The run's frame table; the batches are let go (finish copies them into one take)."""
        batches, self.tables = self.tables, []
        table = finish(batches)
        del batches
        if self.failed and table.num_rows:
            failed = pa.array(list(self.failed), type=pa.string())
            table = table.filter(pc.invert(pc.is_in(table.column("conversation_uuid"), failed)))
        return table


def _first_frame_outside() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def _progress_bar(progress: bool | None, total: int, label: str) -> Any:
    if progress is None:
        progress = _interactive()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="page", desc=label, leave=True)


def _interactive() -> bool:
    if "ipykernel" in sys.modules:
        try:
            from IPython import get_ipython

            shell = get_ipython()
            return shell is not None and "IPKernelApp" in shell.config
        except Exception:
            return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def fetch_frame(
    client: MihuClient, plan: Plan, *, progress: bool | None, refresh: bool, offline: bool
) -> pd.DataFrame:
    """Run ``plan`` with ``client`` and return the sessions frame with its load record.

    An identical earlier load still within its pages' cache lifetime is served from the
    client's :class:`~mihu_frames.framecache.FrameCache` in one read.
    """
    started = time.perf_counter()
    frames = client.frame_cache
    key = frames.key(client.base_url, plan) if frames is not None else ""
    stored = frames.get(key, offline=offline) if frames is not None and not refresh else None
    if stored is not None:
        table, record = stored
        stats = LoadStats(cache_hits=record["pages"], pages=record["pages"])
        df = to_pandas(table)
        logger.debug("served the whole load from the stored result %s", key[:12])
    else:
        run = PageRun(client, plan, plan.queries, progress, refresh=refresh, offline=offline)
        try:
            run.run()
            table, stats = run.table(), run.stats
            # The frame first; saving the pages and the stored load (in the background, in
            # that order) comes after, so neither competes with it.
            df = to_pandas(table)
        except BaseException:
            if frames is not None:  # pages fetched anew make stored loads that hold them stale
                frames.invalidate(run.stats.fresh)
            raise
        run.save()
        if frames is not None and stats.errors:
            frames.invalidate(stats.fresh)
        elif frames is not None:
            frames.put(
                key,
                table,
                expires=stats.expires,
                conversations=plan.conversations,
                fresh=stats.fresh,
                meta={"pages": stats.pages},
            )
    df.attrs["mihu_frames"] = {
        "base_url": client.base_url,
        "conversations": list(plan.conversations),
        "filters": plan.describe(),
        "requests": stats.requests,
        "retries": stats.retries,
        "cache_hits": stats.cache_hits,
        "pages": stats.pages,
        "fetch_seconds": round(time.perf_counter() - started, 6),
        "loaded_at": datetime.now(timezone.utc).isoformat(),
        "errors": stats.errors,
    }
    logger.debug(
        "loaded %d sessions from %d pages (%d requests, %d cache hits, %d retries) in %.3fs",
        len(df),
        stats.pages,
        stats.requests,
        stats.cache_hits,
        stats.retries,
        df.attrs["mihu_frames"]["fetch_seconds"],
    )
    return df
