"""The page runner's loop: :class:`PageRunner`, and :class:`_Run`, the state of one run.

A run wires its parts together and drives them: the :class:`~mihu_frames.runner.schedule.Scheduler`
fetches, the :class:`~mihu_frames.runner.batches.DecodeBatches` decode, the
:class:`~mihu_frames.runner.cacheside.CacheSide` starts, restarts, keeps and saves, the
:class:`~mihu_frames.runner.failures.ErrorPolicy` applies ``on_error``, the
:class:`~mihu_frames.runner.queries.Queries` say which queries stand and how many pages they
come to, the paging policy says how far each query reads, and
:func:`~mihu_frames.runner.order.in_order` makes the table. What is left here is the loop and
the decisions that need several of them: following a page, restarting a query.
"""

from __future__ import annotations

import logging
import queue
import time
from concurrent.futures import Future
from typing import Any
from urllib.parse import quote, urlencode

import pyarrow as pa

from mihu_frames._memory import GiveBack
from mihu_frames.cachefile import CachedListing, CacheFile, url_key
from mihu_frames.decoding import PageInfo, paginator_hint
from mihu_frames.errors import MihuError, ResponseFormatError
from mihu_frames.progress import Progress
from mihu_frames.runner.batches import DecodeBatches
from mihu_frames.runner.cacheside import CacheSide
from mihu_frames.runner.cost import RunStats
from mihu_frames.runner.failures import ErrorPolicy
from mihu_frames.runner.order import in_order
from mihu_frames.runner.pages import Decoded, Fetched, QueryRun, Restart
from mihu_frames.runner.paging import Paging
from mihu_frames.runner.plan import Plan, Query, named
from mihu_frames.runner.queries import Queries
from mihu_frames.runner.schedule import Scheduler
from mihu_frames.transport import Transport, Where

logger = logging.getLogger("mihu_frames")

#: Every this many sessions decoded, freed memory is handed back (see mihu_frames._memory).
GIVE_BACK_SESSIONS = 50_000


class PageRunner:
    """Runs one plan under one paging policy; see :mod:`mihu_frames.runner`.

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
        self.transport = runner.transport
        self.stats = RunStats()
        self.errors = ErrorPolicy(
            plan.options.on_error,
            paging.left_out,
            paging.pages_alone,
            self.transport.scrub,
            self.stats.errors,
            self.update_total,
        )
        self.queries = Queries(len(plan.queries), self.errors.failed)
        self.cache = CacheSide(
            runner.cache,
            self.transport,
            lambda query: runner.query_key(query, plan),
            used=paging.cached,
            refresh=refresh,
            offline=offline,
            per_page=plan.per_page,
            standing=self.queries.standing_index,
        )
        self.memory = GiveBack(GIVE_BACK_SESSIONS)
        self.tables: list[pa.Table] = []
        # Finished futures, in completion order: one queue instead of concurrent.futures.wait,
        # which re-arms a waiter on every pending future each time (quadratic in the pages).
        self.done: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
        deadline = plan.options.deadline  # seconds: LoadOptions normalises a timedelta
        self.deadline = time.monotonic() + float(deadline) if deadline is not None else None  # type: ignore[arg-type]
        self.pacer_start = self.transport.pacer.stats()
        self.progress = Progress(progress, paging.label, self.transport.pacer)

    # ------------------------------------------------------------------ the loop

    def execute(self) -> tuple[pa.Table, RunStats]:
        """Run the plan to its end; the table and the cost."""
        self.fetches = Scheduler(
            self.runner.max_workers, self.fetch, self.queries.standing, self.done
        )
        self.batches = DecodeBatches(self.plan.endpoint.decode, self.plan.per_page, self.done)
        try:
            self.plan_queries()
            self.drive()
        except BaseException:
            # Do not wait for pages still in flight: the caller gets the error now.
            self.fetches.close(abandon=True)
            self.batches.close()
            raise
        else:
            self.fetches.close()
            self.batches.close()
        finally:
            self.progress.close()
            paced = self.transport.pacer.stats().since(self.pacer_start)
            self.stats.rate_limited = paced.rate_limited
            self.stats.waited_seconds = paced.waited_seconds
        # The frame first: the cache writer's work (SQLite, pickling) would compete with it.
        table = self.table()
        self.cache.save()
        self.stats.listings = self.cache.listings(self.queries.still_standing())
        return table, self.stats

    def drive(self) -> None:
        """Fetch, decode and follow pages until none is waiting, in flight or undecoded."""
        while not self.fetches.idle or self.batches.pending:
            self.fetches.fill()
            self.batches.submit(fetching_done=self.fetches.idle)
            try:
                future = self.done.get(timeout=0.5)
            except queue.Empty:
                self.progress.tick()
                continue
            if self.fetches.finished(future):
                self.collect(future)
            else:
                self.absorb(self.batches.finished(future))

    def plan_queries(self) -> None:
        """Start every query the policy reads: from the cache whole, or from page 1."""
        queries = list(self.paging.queries(self.plan))
        listings = self.cache.lookup(queries)
        for query in queries:
            listing = listings[query.index]
            missing = self.cache.missing(query) if listing is None else None
            if missing is not None:
                self.errors.fail(query.conversation, missing)
                continue
            self.start(query, listing)
        self.update_total()

    def start(self, query: Query, listing: CachedListing | None, order: int | None = None) -> None:
        """Queue a query: a cached listing whole, a fresh one from page 1."""
        state = self.cache.begin(query, listing, query.index if order is None else order)
        self.queries.add(state)
        if listing is None:
            self.fetches.enqueue(state, 1, 1)
            return
        self.stats.expiring(listing.expires)
        self.fetches.enqueue(state, 1, listing.last_page)

    # ------------------------------------------------------------------ in a worker

    def fetch(self, state: QueryRun, page: int) -> Fetched:
        """Fetch one page, from the cache (a cached listing) or the network."""
        if state.cached is not None:
            return self.cache.read(state, page)
        query = state.query
        reply = self.transport.get(
            self.runner.page_url(query, page, self.plan),
            Where(query.conversation or None, page),
            deadline=self.deadline,
        )
        info = PageInfo(
            query.conversation, page, query.index, query.status, query.type, reply.served_at
        )
        fetched = Fetched(state, page, reply.body, info, reply)
        if page == 1 and self.paging.hint:
            fetched.hint = paginator_hint(reply.body)
        return fetched

    # ------------------------------------------------------------------ in the loop

    def collect(self, future: Future[Fetched]) -> None:
        """A fetched page: counted and gathered for decoding (its hint followed)."""
        try:
            fetched = future.result()
        except Restart as restart:
            self.restart(int(restart.args[0]), "a cached page is gone or from another listing")
            return
        except MihuError as exc:
            self.errors.page_failed(exc)
            return
        state = fetched.run
        if not self.queries.standing(state):
            return
        self.stats.count_page(state.query.conversation, fetched.reply)
        state.counted += 1
        self.progress.advance()
        self.batches.add(fetched)
        if fetched.hint is not None:
            self.grow(state, fetched.hint, fetched.page, hinted=True)

    def absorb(self, decoded: Decoded) -> None:
        """A decoded batch: its rows kept, each page kept for the cache and followed."""
        for page, error in decoded.rejected:
            self.reject(page, error)
        if decoded.table is None:
            return
        self.tables.append(decoded.table)
        self.memory.decoded(decoded.table.num_rows)
        start = 0
        for page, envelope in zip(decoded.pages, decoded.envelopes, strict=True):
            rows = decoded.table.slice(start, envelope.rows)
            start += envelope.rows
            state = page.run
            self.stats.timestamps_out_of_range += envelope.out_of_range
            if not self.queries.standing(state):
                continue
            if state.cached is not None and envelope.last_page != state.last_page:
                self.restart(state.query.index, "its cached pages disagree on last_page")
                continue
            self.cache.keep(page, envelope)
            self.grow(state, self.paging.after(state.query, page.page, envelope, rows), page.page)

    def reject(self, page: Fetched, error: ResponseFormatError) -> None:
        """A page that did not decode: left out alone, its cached query fetched anew, or its
        query failed."""
        state = page.run
        if self.paging.pages_alone and state.cached is None:
            self.errors.record(error)
        elif state.cached is not None and not self.cache.offline:
            self.cache.forget(state, page.page)
            self.restart(state.query.index, f"its cached page {page.page} is not valid")
        else:
            self.errors.fail(state.query.conversation, error)

    def grow(self, state: QueryRun, last_page: int, page: int = 1, *, hinted: bool = False) -> None:
        """Ask for the pages of ``state`` up to ``last_page`` not asked for yet (``page`` says
        which page showed it)."""
        query = state.query
        limit = self.plan.options.max_pages
        if last_page > limit:
            self.errors.fail(
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
        if not (
            first_answer or hinted or self.paging.may_grow(query, state.rounds, page, state.asked)
        ):
            self.errors.fail(
                query.conversation,
                ResponseFormatError(
                    f"the listing kept growing while it was read ({len(state.rounds) - 1} "
                    f"rounds; now {last_page:,} pages)",
                    field="data.total",
                    conversation=query.conversation,
                    page=page,
                ),
            )
            return
        state.last_page = max(state.last_page, last_page)
        self.fetches.enqueue(state, state.asked + 1, last_page)
        self.update_total()

    def restart(self, index: int, reason: str) -> None:
        """Drop query ``index`` with its rows so far, and fetch it anew under a new index."""
        old = self.queries.get(index)
        if old is None or not self.queries.standing(old):
            return
        old.dropped = True
        self.cache.drop(index)
        missing = self.cache.missing(old.query, reason)
        if missing is not None:
            self.errors.fail(old.query.conversation, missing)
            return
        logger.debug("%s: fetching it anew (%s)", named(old.query), reason)
        self.start(self.queries.renumbered(old.query), None, old.order)
        self.update_total()

    def update_total(self) -> None:
        """Give the progress bar its total once every standing query's page count is known."""
        total = self.queries.total()
        if total is not None:
            self.progress.set_total(total)

    def table(self) -> pa.Table:
        """The run's table; the batches are let go (finish copies them into one take)."""
        table = in_order(
            self.tables,
            self.queries.gone(),
            self.queries.positions(),
            self.plan.endpoint.schema,
        )
        self.memory.finished()
        return table
