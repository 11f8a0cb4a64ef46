"""A run's side of the cache file: which queries it serves whole, the pages it reads back, the
fresh pages it keeps and hands to the cache's writer.

The rule (the cache file's, :mod:`mihu_frames.cachefile`): the pages of a query used together
come from one listing, pages 1 to ``last_page`` of one fetch, unexpired. So:

- **Start.** A query whose whole listing is cached (and unexpired, unless ``offline``) is read
  from the cache, all its pages at once; every other query is fetched, page 1 first, under a new
  listing id. ``refresh=True`` looks nothing up; ``offline=True`` makes a miss a
  :class:`~mihu_frames.errors.CacheMissError`.
- **Restart.** A cached page that is gone, from another listing or not the documented format
  sends its whole query back to the network (:class:`~mihu_frames.runner.pages.Restart`); a
  page that did not decode is forgotten.
- **Keep.** Fresh pages of a query are kept once decoded; a query that stopped standing loses
  what it kept.
- **Save.** Kept pages of standing queries go to the writer every :data:`SAVE_SESSIONS`
  sessions and at the end. A query saved in parts is used from the cache only once all its
  pages are there, so a query that fails after a part was saved is fetched anew next time.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable

from mihu_frames.cachefile import CachedListing, CacheFile, PageToSave, url_key
from mihu_frames.decoding import PageEnvelope, PageInfo
from mihu_frames.errors import CacheMissError
from mihu_frames.runner.pages import Fetched, QueryRun, Restart
from mihu_frames.runner.plan import Query, named
from mihu_frames.transport import Transport

logger = logging.getLogger("mihu_frames")

#: Pages held for the cache before they are handed to its writer (about 50,000 sessions).
SAVE_SESSIONS = 50_000


class CacheSide:
    """One run's use of the cache file (see the module).

    Parameters
    ----------
    cache : CacheFile or None
        The client's cache file (None: no cache).
    transport : Transport
        Whose headers are stored beside the pages.
    key : callable
        A query's key in the cache (its URL without the page).
    used : bool
        The run's policy reads and saves pages (``Paging.cached``).
    refresh, offline : bool
        The load's options.
    per_page : int
        Sessions per page (how many pages make :data:`SAVE_SESSIONS`).
    standing : callable
        Whether the query of an index still stands (a query that does not is never saved).
    """

    def __init__(
        self,
        cache: CacheFile | None,
        transport: Transport,
        key: Callable[[Query], str],
        *,
        used: bool,
        refresh: bool,
        offline: bool,
        per_page: int,
        standing: Callable[[int], bool],
    ) -> None:
        self.cache = cache if used else None
        self.missing_cache = cache is None
        self.transport = transport
        self.key = key
        self.refresh, self.offline = refresh, offline
        self.standing = standing
        self.unsaved: dict[int, list[PageToSave]] = {}
        self.unsaved_pages = 0
        self.save_limit = max(1, SAVE_SESSIONS // per_page)

    # ------------------------------------------------------------------ start and restart

    def lookup(self, queries: Iterable[Query]) -> dict[int, CachedListing | None]:
        """Per query index, the cached listing to read it from (None: the network)."""
        queries = list(queries)
        keys = {q.index: self.key(q) for q in queries}
        cached: dict[str, CachedListing] = {}
        if self.cache is not None and not self.refresh:
            cached = self.cache.listings(keys.values())
        found: dict[int, CachedListing | None] = {}
        for query in queries:
            listing = cached.get(keys[query.index])
            if listing is not None and listing.expired() and not self.offline:
                logger.debug("%s: its cached listing expired: from the network", named(query))
                listing = None
            found[query.index] = listing
        return found

    def missing(self, query: Query, reason: str | None = None) -> CacheMissError | None:
        """The error of a query the cache cannot serve (``reason``: why a cached listing
        would not do), under ``offline=True``; None when it may go to the network."""
        if not self.offline:
            return None
        if reason is None:
            text = "not in the cache and offline=True; load once online (or drop offline=True)"
        else:
            text = f"the cache holds no consistent listing ({reason}) and offline=True"
        return CacheMissError(text, conversation=query.conversation, page=1)

    def begin(self, query: Query, listing: CachedListing | None, order: int) -> QueryRun:
        """The run of ``query``: its cached ``listing`` whole, or a fresh listing id."""
        state = QueryRun(
            query, listing, listing.listing if listing else secrets.token_hex(8), order
        )
        if listing is None:
            reason = "refresh=True" if self.refresh else "no whole, unexpired listing cached"
            if self.cache is None:
                reason = "no cache" if self.missing_cache else "this run reads fresh pages"
            logger.debug("%s: from the network (%s)", named(query), reason)
        else:
            logger.debug(
                "%s: %d pages from the cache (listing %s)",
                named(query),
                listing.last_page,
                listing.listing,
            )
            state.last_page, state.known = listing.last_page, True
        return state

    def read(self, state: QueryRun, page: int) -> Fetched:
        """Page ``page`` of a cached listing (in a worker).

        Raises
        ------
        Restart
            The page is gone or belongs to another listing.
        """
        assert self.cache is not None and state.cached is not None
        query = state.query
        key = state.cached.keys.get(page)
        stored = self.cache.read_page(key) if key is not None else None
        if stored is None or stored.listing != state.listing:
            raise Restart(query.index)
        info = PageInfo(
            query.conversation, page, query.index, query.status, query.type, stored.served_at
        )
        return Fetched(state, page, stored.body, info, None)

    def forget(self, state: QueryRun, page: int) -> None:
        """Page ``page`` of a cached listing is not valid: out of the cache."""
        if self.cache is not None and state.cached is not None:
            self.cache.forget([state.cached.keys[page]])

    def drop(self, index: int) -> None:
        """Query ``index`` stopped standing: its kept pages are let go."""
        self.unsaved_pages -= len(self.unsaved.pop(index, []))

    # ------------------------------------------------------------------ keep and save

    def keep(self, page: Fetched, envelope: PageEnvelope) -> None:
        """Keep a fresh, decoded page for the cache (handed over every few tens of thousands
        of sessions)."""
        if self.cache is None or page.reply is None:
            return
        state = page.run
        entry = PageToSave(
            key=url_key(page.reply.url),
            query=self.key(state.query),
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
        """Hand the kept pages of the queries still standing to the cache's writer."""
        ready = [
            page for index, pages in self.unsaved.items() if self.standing(index) for page in pages
        ]
        self.unsaved, self.unsaved_pages = {}, 0
        if ready and self.cache is not None:
            headers = {k: v for k, v in self.transport.headers.items() if k != "Authorization"}
            self.cache.save_pages(ready, headers)

    def listings(self, standing: Iterable[QueryRun]) -> dict[str, str]:
        """Per query key, the listing its rows came from (queries still standing only: one
        fetched anew counts under its new listing, a failed one not at all)."""
        if self.cache is None:
            return {}
        return {self.key(state.query): state.listing for state in standing}
