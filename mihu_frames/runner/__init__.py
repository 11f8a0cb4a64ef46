"""The page runner: a plan in, every page it leads to fetched and decoded, one table out.

One loop serves every load (a whole listing, a sync's incremental read, the full loads of a
sync). What varies is an object passed in, a :class:`Paging` policy: which pages a decoded
page leads to, whether pages come from and go to the cache, whether later pages may be asked
for before page 1 is decoded.

How a run goes (:meth:`PageRunner.run`), and which part does what:

1. **Plan** (:mod:`~mihu_frames.runner.plan`, :mod:`~mihu_frames.runner.cacheside`). For each
   query (a conversation under one status and one type value) the cache is asked once whether
   it holds one complete, consistent listing (pages 1 to ``last_page`` of one fetch,
   unexpired; see :mod:`mihu_frames.cachefile`). Such a query is read from the cache, all its
   pages at once; every other query is fetched from the network, page 1 first.
2. **Schedule lazily** (:mod:`~mihu_frames.runner.schedule`). Pages wait in a queue of page
   ranges and at most a few per worker are handed to the thread pool at a time, so memory
   never depends on ``last_page``. A first page's ``last_page`` is read from its bytes
   (:func:`~mihu_frames.decoding.paginator_hint`) so its later pages start before it is
   decoded; the decode stays the truth.
3. **Decode in batches** (:mod:`~mihu_frames.runner.batches`) on one decoder thread while the
   workers fetch: whatever has arrived when it is free, about 5,000 sessions at most.
4. **Follow** each decoded page as the policy says (:mod:`~mihu_frames.runner.paging`); a
   listing that grows while it is read is followed for :data:`MAX_GROWTH` rounds
   (:meth:`FullListing.may_grow`), then reported as failing; a server claiming more than
   ``max_pages`` pages is reported before those requests are sent.
5. **Keep listings whole** (:mod:`~mihu_frames.runner.cacheside`). A cached page that turns
   out to belong to another listing, or not to decode, sends its whole query back to the
   network under a new index (:meth:`Query.renumbered`); its rows so far are dropped.
6. **Save** the pages of fresh, complete queries to the cache (in chunks while a big load
   runs), and join the batches in fetch order, one row per ``uuid``
   (:mod:`~mihu_frames.runner.order`). Freed memory is handed back as the load goes
   (:mod:`mihu_frames._memory`; ``malloc_trim`` only with ``MIHU_MALLOC_TRIM=1``).

Failures follow ``on_error`` (:mod:`~mihu_frames.runner.failures`): ``"raise"`` raises the
first one; ``"warn"`` / ``"skip"`` leave the conversation out, whole, and record it. Every
route a page takes is logged at DEBUG with its reason. :mod:`~mihu_frames.runner.run` holds
the loop that drives these parts; :mod:`~mihu_frames.runner.queries` which queries still
stand; :mod:`~mihu_frames.runner.cost` what the run cost.
"""

from __future__ import annotations

from mihu_frames.runner.cacheside import SAVE_SESSIONS
from mihu_frames.runner.cost import RunStats
from mihu_frames.runner.paging import MAX_GROWTH, FullListing, Paging
from mihu_frames.runner.plan import (
    CONVERSATIONS,
    CONVERSATIONS_PATH,
    SESSIONS,
    SESSIONS_PATH,
    Endpoint,
    Plan,
    Query,
)
from mihu_frames.runner.run import GIVE_BACK_SESSIONS, PageRunner
from mihu_frames.runner.schedule import IN_FLIGHT_PER_WORKER

__all__ = [
    "CONVERSATIONS",
    "CONVERSATIONS_PATH",
    "GIVE_BACK_SESSIONS",
    "IN_FLIGHT_PER_WORKER",
    "MAX_GROWTH",
    "SAVE_SESSIONS",
    "SESSIONS",
    "SESSIONS_PATH",
    "Endpoint",
    "FullListing",
    "PageRunner",
    "Paging",
    "Plan",
    "Query",
    "RunStats",
]
