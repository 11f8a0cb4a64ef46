"""The page runner: a plan in, every page it leads to fetched and decoded, one table out.

One loop serves every load (a whole listing, a sync's incremental read, the full loads of a
sync). What varies is an object passed in, a :class:`Paging` policy: which pages a decoded
page leads to, whether pages come from and go to the cache, whether later pages may be asked
for before page 1 is decoded.

How a run goes (:meth:`PageRunner.run`):

1. **Plan.** For each query (a conversation under one status and one type value) the cache is
   asked once whether it holds one complete, consistent listing (pages 1 to ``last_page`` of
   one fetch, unexpired; see :mod:`mihu_frames.cachefile`). Such a query is read from the
   cache, all its pages at once; every other query is fetched from the network, page 1 first.
2. **Schedule lazily.** Pages wait in a queue of page ranges and at most a few per worker are
   handed to the thread pool at a time, so memory never depends on ``last_page``. A first
   page's ``last_page`` is read from its bytes (:func:`paginator_hint`) so its later pages
   start before it is decoded; the decode stays the truth.
3. **Decode in batches** on one decoder thread while the workers fetch: whatever has arrived
   when it is free, about 5,000 sessions at most.
4. **Follow** each decoded page as the policy says; a listing that grows while it is read is
   followed for :data:`MAX_GROWTH` rounds, then reported as failing; a server claiming more
   than ``max_pages`` pages is reported before those requests are sent.
5. **Keep listings whole.** A cached page that turns out to belong to another listing, or not
   to decode, sends its whole query back to the network; its rows so far are dropped.
6. **Save** the pages of fresh, complete queries to the cache (in chunks while a big load
   runs), and join the batches in fetch order, one row per ``uuid``.

Failures follow ``on_error``: ``"raise"`` raises the first one; ``"warn"`` / ``"skip"`` leave
the conversation out, whole, and record it. Every route a page takes is logged at DEBUG with
its reason.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import os
import queue
import secrets
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mihu_frames._memory import give_back
from mihu_frames.cachefile import CachedListing, CacheFile, PageToSave, url_key
from mihu_frames.decoding import PageEnvelope, PageInfo, batch_size, decode_pages, paginator_hint
from mihu_frames.decoding.conversations import decode_conversation_pages
from mihu_frames.errors import CacheMissError, MihuError, ResponseFormatError
from mihu_frames.frame import finish
from mihu_frames.options import LoadOptions
from mihu_frames.progress import Progress
from mihu_frames.schema import CONVERSATIONS_SCHEMA, SESSIONS_SCHEMA
from mihu_frames.transport import Reply, Transport, Where

logger = logging.getLogger("mihu_frames")

SESSIONS_PATH = "/api/v1/conversations/{uuid}/sessions"
CONVERSATIONS_PATH = "/api/v1/conversations"
#: Rounds a listing may grow while it is read before it is reported as failing. A round is
#: the pages a listing grew by while the previous round was read: a conversation gaining
#: sessions at 80% of the read rate needs about ten.
MAX_GROWTH = 20
#: Pages handed to the pool at a time, per worker (the rest wait as page ranges).
IN_FLIGHT_PER_WORKER = 2
#: Pages held for the cache before they are handed to its writer (about 50,000 sessions).
SAVE_SESSIONS = 50_000
#: Every this many sessions decoded, freed memory is handed back (see mihu_frames._memory).
GIVE_BACK_SESSIONS = 50_000


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True, kw_only=True)
class Query:
    """One paginated listing: a conversation's sessions under one status and one type value,
    or (``conversation`` empty) the account's conversations under ``filters``.

    Every part is required and named: a query fetched anew is :meth:`renumbered`, never
    rebuilt from some of its parts (a restarted listing once lost its filters that way).
    """

    index: int
    conversation: str
    status: str | None
    type: str | None
    filters: tuple[tuple[str, str], ...]

    def renumbered(self, index: int) -> Query:
        """The same listing under another index (fetched anew), every other part kept."""
        return replace(self, index=index)

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
        params.update(self.filters)
        return params


@dataclass(frozen=True)
class Endpoint:
    """Where a plan's pages come from and how their bodies decode."""

    #: The path, with ``{uuid}`` for the conversation of a per-conversation listing.
    path: str
    decode: Callable[..., tuple[pa.Table, list[PageEnvelope]]]
    #: The columns of a run that found nothing.
    schema: pa.Schema


SESSIONS = Endpoint(SESSIONS_PATH, decode_pages, SESSIONS_SCHEMA)
CONVERSATIONS = Endpoint(CONVERSATIONS_PATH, decode_conversation_pages, CONVERSATIONS_SCHEMA)


@dataclass(frozen=True)
class Plan:
    """A validated load: the queries, and the options that shape their requests."""

    conversations: tuple[str, ...]
    queries: tuple[Query, ...]
    options: LoadOptions
    endpoint: Endpoint = SESSIONS

    @classmethod
    def build(cls, conversations: Sequence[str], options: LoadOptions) -> Plan:
        """The sessions of ``conversations``: one query per status and type value."""
        combos = itertools.product(conversations, options.statuses, options.types)
        queries = tuple(
            Query(index=i, conversation=c, status=s, type=t, filters=())
            for i, (c, s, t) in enumerate(combos)
        )
        return cls(tuple(conversations), queries, options)

    @classmethod
    def listing(cls, filters: dict[str, str], options: LoadOptions) -> Plan:
        """The account's conversations, under ``filters`` (sent to the server)."""
        query = Query(
            index=0, conversation="", status=None, type=None, filters=tuple(sorted(filters.items()))
        )
        return cls((), (query,), options, CONVERSATIONS)

    @property
    def per_page(self) -> int:
        return self.options.per_page

    @property
    def sort_by(self) -> str:
        return self.options.sort_by

    @property
    def sort_dir(self) -> str:
        return self.options.sort_dir

    def describe(self) -> dict[str, Any]:
        """The filters, for ``df.attrs`` and snapshot metadata."""
        return {
            "status": [s for s in self.options.statuses if s is not None] or None,
            "type": [t for t in self.options.types if t is not None] or None,
            "sort_by": self.sort_by,
            "sort_dir": self.sort_dir,
            "per_page": self.per_page,
        }


# --------------------------------------------------------------------------- paging policies


class Paging(Protocol):
    """Which pages a run fetches, and how it uses the cache."""

    @property
    def cached(self) -> bool:
        """Pages may come from the cache, and fresh ones are saved to it."""

    @property
    def hint(self) -> bool:
        """Later pages may be asked for from page 1's bytes, before it is decoded."""

    @property
    def label(self) -> str:
        """How the progress bar is labelled."""

    @property
    def left_out(self) -> str:
        """How a conversation left out under ``on_error="warn"`` is announced."""

    @property
    def pages_alone(self) -> bool:
        """A page after the first that fails or is not the documented format is left out
        alone, its query goes on (a listing of conversations); else its whole query is (a
        conversation's sessions)."""

    def queries(self, plan: Plan) -> Iterable[Query]:
        """The queries of ``plan`` this run reads."""

    def after(self, query: Query, page: int, envelope: PageEnvelope, rows: pa.Table) -> int:
        """The last page to fetch given this decoded page (``page`` or less: no more)."""


@dataclass(frozen=True)
class FullListing:
    """Every page of every query, 1 to ``last_page``: a load."""

    cached: bool = True
    hint: bool = True
    label: str = "mihu sessions"
    left_out: str = "left out {error}"
    pages_alone: bool = False

    def queries(self, plan: Plan) -> Iterable[Query]:
        return plan.queries

    def after(self, query: Query, page: int, envelope: PageEnvelope, rows: pa.Table) -> int:
        return envelope.last_page


# --------------------------------------------------------------------------- what a run holds


@dataclass
class RunStats:
    """What a run cost; lands in ``df.attrs["mihu_frames"]``."""

    requests: int = 0
    retries: int = 0
    cache_hits: int = 0
    pages: int = 0
    rate_limited: int = 0
    waited_seconds: float = 0.0
    timestamps_out_of_range: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: Conversations with at least one page fetched from the network.
    fresh: set[str] = field(default_factory=set)
    #: The earliest expiry (Unix seconds) of the cached pages used.
    expires: float | None = None
    #: Per query key, the listing id of the pages its rows came from: a cached listing read,
    #: or a fresh one handed to the cache's writer (empty when the run does not use a cache).
    listings: dict[str, str] = field(default_factory=dict)

    def plus(self, other: RunStats) -> RunStats:
        """The cost of this run and ``other`` together."""
        stamps = [s for s in (self.expires, other.expires) if s is not None]
        return RunStats(
            requests=self.requests + other.requests,
            retries=self.retries + other.retries,
            cache_hits=self.cache_hits + other.cache_hits,
            pages=self.pages + other.pages,
            rate_limited=self.rate_limited + other.rate_limited,
            waited_seconds=round(self.waited_seconds + other.waited_seconds, 6),
            timestamps_out_of_range=self.timestamps_out_of_range + other.timestamps_out_of_range,
            errors=[*self.errors, *other.errors],
            fresh=self.fresh | other.fresh,
            expires=min(stamps) if stamps else None,
            listings={**self.listings, **other.listings},
        )


@dataclass
class _QueryRun:
    """One query in a run: where its pages come from and how far it goes."""

    query: Query
    cached: CachedListing | None
    listing: str
    #: Where the query's rows go in the frame (a query fetched anew keeps its first place).
    order: int = 0
    last_page: int = 1
    asked: int = 0  # highest page handed to the queue
    #: The first page of each round of growth (round 0: the pages page 1 announced).
    rounds: list[int] = field(default_factory=lambda: [1])
    known: bool = False  # last_page is known (cached, hinted or decoded)
    dropped: bool = False  # restarted under a new index
    counted: int = 0  # pages counted for the progress bar


@dataclass
class _Fetched:
    """A page as a worker hands it back."""

    run: _QueryRun
    page: int
    body: bytes
    info: PageInfo
    reply: Reply | None  # None: read from the cache
    hint: int | None = None


@dataclass
class _Decoded:
    pages: list[_Fetched]
    table: pa.Table | None
    envelopes: list[PageEnvelope]
    rejected: list[tuple[_Fetched, ResponseFormatError]]


class _Restart(Exception):
    """A cached page does not belong to the planned listing: fetch the query anew."""


class PageRunner:
    """Runs one plan under one paging policy; see the module.

    Parameters
    ----------
    transport : Transport
        Sends every request.
    cache : CacheFile or None
        Where pages are looked up and saved (None: no cache).
    max_workers : int
        Threads fetching pages at once.
    """

    def __init__(self, transport: Transport, cache: CacheFile | None, max_workers: int) -> None:
        self.transport = transport
        self.cache = cache
        self.max_workers = max_workers

    def page_url(self, query: Query, page: int, plan: Plan) -> str:
        """The URL of one page (the UUID is canonical already; quoted anyway)."""
        path = plan.endpoint.path.format(uuid=quote(query.conversation, safe=""))
        return f"{self.transport.base_url}{path}?{urlencode(query.params(page, plan))}"

    def query_key(self, query: Query, plan: Plan) -> str:
        """What identifies a query's listing in the cache: its URL without the page."""
        return url_key(self.page_url(query, 0, plan))

    def run(
        self,
        plan: Plan,
        paging: Paging,
        *,
        refresh: bool = False,
        offline: bool = False,
        progress: bool | None = None,
    ) -> tuple[pa.Table, RunStats]:
        """Fetch and decode every page ``paging`` leads to; return the table and the cost."""
        run = _Run(self, plan, paging, refresh=refresh, offline=offline, progress=progress)
        return run.execute()


class _Run:
    """The state of one run (private to :class:`PageRunner`)."""

    def __init__(
        self,
        runner: PageRunner,
        plan: Plan,
        paging: Paging,
        *,
        refresh: bool,
        offline: bool,
        progress: bool | None,
    ) -> None:
        self.runner, self.plan, self.paging = runner, plan, paging
        self.transport, self.cache = runner.transport, runner.cache
        self.use_cache = paging.cached and self.cache is not None
        self.refresh, self.offline = refresh, offline
        self.stats = RunStats()
        self.states: dict[int, _QueryRun] = {}
        self.decoded_rows = 0
        self.next_give_back = GIVE_BACK_SESSIONS
        self.failed: dict[str, MihuError] = {}
        self.tables: list[pa.Table] = []
        self.waiting: deque[list[Any]] = deque()  # [query run, next page, last page]
        self.fetching: set[Future[_Fetched]] = set()
        self.decoding: set[Future[_Decoded]] = set()
        self.batch: list[_Fetched] = []
        # Finished futures, in completion order: one queue instead of concurrent.futures.wait,
        # which re-arms a waiter on every pending future each time (quadratic in the pages).
        self.done: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        self.batch_limit = batch_size(plan.per_page)
        self.batch_floor = max(1, self.batch_limit // 5)
        self.unsaved: dict[int, list[PageToSave]] = {}
        self.unsaved_pages = 0
        self.save_limit = max(1, SAVE_SESSIONS // plan.per_page)
        self.in_flight_limit = runner.max_workers * IN_FLIGHT_PER_WORKER
        deadline = plan.options.deadline  # seconds: LoadOptions normalises a timedelta
        self.deadline = time.monotonic() + float(deadline) if deadline is not None else None  # type: ignore[arg-type]
        self.next_index = len(plan.queries)
        self.pacer_start = self.transport.pacer.stats()
        self.progress = Progress(progress, paging.label, self.transport.pacer)

    # ------------------------------------------------------------------ the loop

    def execute(self) -> tuple[pa.Table, RunStats]:
        self.pool = ThreadPoolExecutor(self.runner.max_workers, thread_name_prefix="mihu")
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix="mihu-decode")
        try:
            self.plan_queries()
            while self.fetching or self.decoding or self.batch or self.waiting:
                self.fill()
                self.maybe_decode()
                try:
                    future = self.done.get(timeout=0.5)
                except queue.Empty:
                    self.progress.tick()
                    continue
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
            raise
        else:
            self.pool.shutdown(wait=True)
            self.decoder.shutdown(wait=True)
        finally:
            self.progress.close()
            paced = self.transport.pacer.stats().since(self.pacer_start)
            self.stats.rate_limited = paced.rate_limited
            self.stats.waited_seconds = paced.waited_seconds
        # The frame first: the cache writer's work (SQLite, pickling) would compete with it.
        table = self.table()
        self.save()
        self.stats.listings = self.listings()
        return table, self.stats

    def listings(self) -> dict[str, str]:
        """Per query key, the listing its rows came from (queries still standing only: one
        fetched anew counts under its new listing, a failed one not at all)."""
        if not self.use_cache:
            return {}
        return {
            self.runner.query_key(state.query, self.plan): state.listing
            for state in self.states.values()
            if self.live(state)
        }

    def plan_queries(self) -> None:
        queries = list(self.paging.queries(self.plan))
        keys = {q.index: self.runner.query_key(q, self.plan) for q in queries}
        cached: dict[str, CachedListing] = {}
        if self.use_cache and not self.refresh:
            assert self.cache is not None
            cached = self.cache.listings(keys.values())
        for query in queries:
            listing = cached.get(keys[query.index])
            if listing is not None and listing.expired() and not self.offline:
                logger.debug("%s: its cached listing expired: from the network", _name(query))
                listing = None
            if self.offline and listing is None:
                self.fail(
                    query.conversation,
                    CacheMissError(
                        "not in the cache and offline=True; load once online "
                        "(or drop offline=True)",
                        conversation=query.conversation,
                        page=1,
                    ),
                )
                continue
            self.start(query, listing)
        self.update_total()

    def start(self, query: Query, listing: CachedListing | None, order: int | None = None) -> None:
        """Queue a query: a cached listing whole, a fresh one from page 1."""
        state = _QueryRun(
            query,
            listing,
            listing.listing if listing else secrets.token_hex(8),
            query.index if order is None else order,
        )
        self.states[query.index] = state
        if listing is None:
            reason = "refresh=True" if self.refresh else "no whole, unexpired listing cached"
            if not self.use_cache:
                reason = "no cache" if self.cache is None else "this run reads fresh pages"
            logger.debug("%s: from the network (%s)", _name(query), reason)
            self.enqueue(state, 1, 1)
            return
        logger.debug(
            "%s: %d pages from the cache (listing %s)",
            _name(query),
            listing.last_page,
            listing.listing,
        )
        state.last_page, state.known = listing.last_page, True
        if listing.expires is not None:
            earliest = self.stats.expires
            self.stats.expires = min(earliest or listing.expires, listing.expires)
        self.enqueue(state, 1, listing.last_page)

    def enqueue(self, state: _QueryRun, first: int, last: int) -> None:
        if last >= first:
            state.asked = max(state.asked, last)
            self.waiting.append([state, first, last])

    def fill(self) -> None:
        """Hand pages to the pool until a few per worker are in flight."""
        while self.waiting and len(self.fetching) < self.in_flight_limit:
            cursor = self.waiting[0]
            state, page, last = cursor
            if state.dropped or state.query.conversation in self.failed:
                self.waiting.popleft()
                continue
            if page >= last:
                self.waiting.popleft()
            else:
                cursor[1] = page + 1
            future = self.pool.submit(self.fetch, state, page)
            self.fetching.add(future)
            future.add_done_callback(self.done.put)

    def maybe_decode(self) -> None:
        if self.batch and (
            len(self.batch) >= self.batch_limit
            or not (self.fetching or self.waiting)
            or (not self.decoding and len(self.batch) >= self.batch_floor)
        ):
            # While workers fetch, the cores are theirs; the last batch gets them all.
            threads = not (self.fetching or self.waiting)
            decoding = self.decoder.submit(self.decode, self.batch, threads)
            self.decoding.add(decoding)
            decoding.add_done_callback(self.done.put)
            self.batch = []

    # ------------------------------------------------------------------ in a worker

    def fetch(self, state: _QueryRun, page: int) -> _Fetched:
        """Fetch one page, from the cache (a cached listing) or the network."""
        query = state.query
        if state.cached is not None:
            assert self.cache is not None
            key = state.cached.keys.get(page)
            stored = self.cache.read_page(key) if key is not None else None
            if stored is None or stored.listing != state.listing:
                raise _Restart(query.index)
            info = PageInfo(
                query.conversation, page, query.index, query.status, query.type, stored.served_at
            )
            return _Fetched(state, page, stored.body, info, None)
        reply = self.transport.get(
            self.runner.page_url(query, page, self.plan),
            Where(query.conversation or None, page),
            deadline=self.deadline,
        )
        info = PageInfo(
            query.conversation, page, query.index, query.status, query.type, reply.served_at
        )
        fetched = _Fetched(state, page, reply.body, info, reply)
        if page == 1 and self.paging.hint:
            fetched.hint = paginator_hint(reply.body)
        return fetched

    def decode(self, pages: list[_Fetched], threads: bool = False) -> _Decoded:
        """Decode a batch; a batch with a bad page is decoded page by page, so the good
        pages still count and the bad one is named."""
        try:
            table, envelopes = self.plan.endpoint.decode(
                [p.body for p in pages], [p.info for p in pages], use_threads=threads
            )
        except ResponseFormatError as exc:
            if len(pages) == 1:
                return _Decoded(pages, None, [], [(pages[0], exc)])
            parts = [self.decode([page]) for page in pages]
            tables = [part.table for part in parts if part.table is not None]
            return _Decoded(
                [p for part in parts if part.table is not None for p in part.pages],
                pa.concat_tables(tables) if tables else None,
                [e for part in parts for e in part.envelopes],
                [r for part in parts for r in part.rejected],
            )
        return _Decoded(pages, table, envelopes, [])

    # ------------------------------------------------------------------ in the loop

    def live(self, state: _QueryRun) -> bool:
        return not state.dropped and state.query.conversation not in self.failed

    def collect(self, future: Future[_Fetched]) -> None:
        try:
            fetched = future.result()
        except _Restart as restart:
            self.restart(int(restart.args[0]), "a cached page is gone or from another listing")
            return
        except MihuError as exc:
            if self.paging.pages_alone and (exc.page or 1) > 1:
                self.record(exc)  # a listing goes on without the page (and is not cached)
            else:
                self.fail(exc.conversation or "", exc)
            return
        state = fetched.run
        if not self.live(state):
            return
        self.count(fetched)
        self.batch.append(fetched)
        if fetched.hint is not None:
            self.grow(state, fetched.hint, fetched.page, hinted=True)

    def count(self, fetched: _Fetched) -> None:
        stats = self.stats
        stats.pages += 1
        fetched.run.counted += 1
        if fetched.reply is None:
            stats.cache_hits += 1
        else:
            stats.requests += 1 + fetched.reply.retries
            stats.retries += fetched.reply.retries
            stats.fresh.add(fetched.run.query.conversation)
        self.progress.advance()

    def absorb(self, decoded: _Decoded) -> None:
        for page, error in decoded.rejected:
            state = page.run
            if self.paging.pages_alone and state.cached is None:
                self.record(error)
            elif state.cached is not None and not self.offline:
                if self.cache is not None:
                    self.cache.forget([state.cached.keys[page.page]])
                self.restart(state.query.index, f"its cached page {page.page} is not valid")
            else:
                self.fail(state.query.conversation, error)
        if decoded.table is None:
            return
        self.tables.append(decoded.table)
        self.decoded_rows += decoded.table.num_rows
        if self.decoded_rows >= self.next_give_back:
            self.next_give_back += GIVE_BACK_SESSIONS
            give_back()
        start = 0
        for page, envelope in zip(decoded.pages, decoded.envelopes, strict=True):
            rows = decoded.table.slice(start, envelope.rows)
            start += envelope.rows
            state = page.run
            self.stats.timestamps_out_of_range += envelope.out_of_range
            if not self.live(state):
                continue
            if state.cached is not None and envelope.last_page != state.last_page:
                self.restart(state.query.index, "its cached pages disagree on last_page")
                continue
            self.keep_for_cache(page, envelope)
            self.grow(state, self.paging.after(state.query, page.page, envelope, rows), page.page)

    def grow(
        self, state: _QueryRun, last_page: int, page: int = 1, *, hinted: bool = False
    ) -> None:
        """Ask for the pages of ``state`` up to ``last_page`` not asked for yet (``page`` says
        which page showed it)."""
        query = state.query
        limit = self.plan.options.max_pages
        if last_page > limit:
            self.fail(
                query.conversation,
                ResponseFormatError(
                    f"the server claims {last_page:,} pages, more than max_pages={limit:,}; "
                    "not requesting them",
                    field="data.last_page",
                    conversation=query.conversation,
                    page=page,
                ),
            )
            return
        first_answer = not state.known
        state.known = True
        if last_page <= state.asked:
            if first_answer:
                self.update_total()
            return
        if not first_answer and not hinted and not self.new_round(state, page):
            self.fail(
                query.conversation,
                ResponseFormatError(
                    f"the listing kept growing while it was read ({MAX_GROWTH} rounds; "
                    f"now {last_page:,} pages)",
                    field="data.total",
                    conversation=query.conversation,
                    page=page,
                ),
            )
            return
        state.last_page = max(state.last_page, last_page)
        self.enqueue(state, state.asked + 1, last_page)
        self.update_total()

    def new_round(self, state: _QueryRun, page: int) -> bool:
        """Count the growth page ``page`` saw; False once the listing grew too many rounds.

        Pages it reveals join the round after its own; a round already begun is extended.
        """
        if not isinstance(self.paging, FullListing):
            return True  # other policies decide page by page how far to read
        current = bisect.bisect_right(state.rounds, page) - 1
        if current + 1 < len(state.rounds):
            return True
        if len(state.rounds) > MAX_GROWTH:
            return False
        state.rounds.append(state.asked + 1)
        logger.debug("%s grew while it was read (round %d)", _name(state.query), current + 1)
        return True

    def restart(self, index: int, reason: str) -> None:
        """Drop query ``index`` with its rows so far, and fetch it anew under a new index."""
        old = self.states.get(index)
        if old is None or not self.live(old):
            return
        old.dropped = True
        self.unsaved_pages -= len(self.unsaved.pop(index, []))
        if self.offline:
            self.fail(
                old.query.conversation,
                CacheMissError(
                    f"the cache holds no consistent listing ({reason}) and offline=True",
                    conversation=old.query.conversation,
                    page=1,
                ),
            )
            return
        query = old.query.renumbered(self.next_index)
        self.next_index += 1
        logger.debug("%s: fetching it anew (%s)", _name(old.query), reason)
        self.start(query, None, old.order)
        self.update_total()

    def update_total(self) -> None:
        """Give the progress bar its total once every live query's page count is known."""
        total = 0
        for state in self.states.values():
            if self.live(state):
                if not state.known:
                    return
                total += state.last_page
            else:
                total += state.counted
        self.progress.set_total(total)

    def keep_for_cache(self, page: _Fetched, envelope: PageEnvelope) -> None:
        if not self.use_cache or page.reply is None:
            return
        state = page.run
        entry = PageToSave(
            key=url_key(page.reply.url),
            query=self.runner.query_key(state.query, self.plan),
            page=page.page,
            last_page=envelope.last_page,
            listing=state.listing,
            url=page.reply.url,
            reason=page.reply.reason,
            headers=self.transport.storable_headers(page.reply.headers),
            body=page.body,
        )
        self.unsaved.setdefault(state.query.index, []).append(entry)
        self.unsaved_pages += 1
        if self.unsaved_pages >= self.save_limit:
            self.save()

    def save(self) -> None:
        """Hand the fresh pages of the queries still standing to the cache's writer.

        A query saved in parts is used from the cache only once all its pages are there (the
        index wants pages 1 to ``last_page`` of one listing), so a query that fails after a
        part was saved is fetched anew next time.
        """
        ready = [
            page
            for index, pages in self.unsaved.items()
            if self.live(self.states[index])
            for page in pages
        ]
        self.unsaved, self.unsaved_pages = {}, 0
        if ready and self.cache is not None:
            headers = {k: v for k, v in self.transport.headers.items() if k != "Authorization"}
            self.cache.save_pages(ready, headers)

    # ------------------------------------------------------------------ failures and the end

    def fail(self, conversation: str, error: MihuError) -> None:
        if self.plan.options.on_error == "raise":
            raise error
        if conversation in self.failed:
            return
        self.failed[conversation] = error
        self.record(error)

    def record(self, error: MihuError) -> None:
        """Count a failure under on_error "warn" or "skip" (and warn under "warn")."""
        if self.plan.options.on_error == "raise":
            raise error
        message = self.transport.scrub(str(error))
        self.stats.errors.append(
            {
                "conversation": error.conversation,
                "page": error.page,
                "error": type(error).__name__,
                "status_code": error.status_code,
                "message": message,
            }
        )
        text = self.paging.left_out.format(error=message)
        if self.plan.options.on_error == "warn":
            warnings.warn(text, RuntimeWarning, stacklevel=_first_frame_outside())
        else:  # "skip" is silent; the log keeps a record
            logger.info("%s", text)
        self.update_total()

    def table(self) -> pa.Table:
        """The run's table; the batches are let go (finish copies them into one take)."""
        batches, self.tables = self.tables, []
        # Rows go by the query they were fetched for, not by their own conversation_uuid (a
        # server may send another one; the conversations listing has none).
        dropped = [
            i
            for i, state in self.states.items()
            if state.dropped or state.query.conversation in self.failed
        ]
        if dropped:
            gone = pa.array(dropped, pa.int64())
            batches = [t.filter(pc.invert(pc.is_in(t.column("_query"), gone))) for t in batches]
        if len(self.states) > len(self.plan.queries):  # queries fetched anew: back in place
            order = np.zeros(max(self.states) + 1, dtype=np.int64)
            for index, state in self.states.items():
                order[index] = state.order
            position = pa.array(order)
            batches = [
                t.set_column(
                    t.schema.get_field_index("_query"),
                    "_query",
                    position.take(t.column("_query")),
                )
                for t in batches
            ]
        table = finish(batches, self.plan.endpoint.schema)
        del batches
        if self.decoded_rows >= GIVE_BACK_SESSIONS:
            give_back()
        return table


def _name(query: Query) -> str:
    tags = [t for t in (query.status, query.type) if t is not None]
    return f"conversation {query.conversation}" + (f" ({', '.join(tags)})" if tags else "")


def _first_frame_outside() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level
