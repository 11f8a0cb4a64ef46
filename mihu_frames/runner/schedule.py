"""Scheduling a run's fetches: pages wait as ranges, a few per worker are in flight.

Pages wait in a queue of page ranges (a query's pages 1 to ``last_page`` are one entry, not
``last_page`` entries) and at most :data:`IN_FLIGHT_PER_WORKER` per worker are handed to the
thread pool at a time, so memory never depends on what a server claims ``last_page`` is. A
range whose query stopped standing is dropped when it comes up.
"""

from __future__ import annotations

import queue
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from mihu_frames.runner.pages import Fetched, QueryRun

#: Pages handed to the pool at a time, per worker (the rest wait as page ranges).
IN_FLIGHT_PER_WORKER = 2


class Scheduler:
    """The fetching side of a run: the waiting ranges, the pool and the pages in flight.

    Parameters
    ----------
    max_workers : int
        Threads fetching pages at once.
    fetch : callable
        Fetches one page of a query (runs in a worker).
    standing : callable
        Whether a query still stands (its waiting pages are dropped once it does not).
    done : queue.SimpleQueue
        Where each finished fetch is put, in completion order.
    """

    def __init__(
        self,
        max_workers: int,
        fetch: Callable[[QueryRun, int], Fetched],
        standing: Callable[[QueryRun], bool],
        done: queue.SimpleQueue[Future[Any]],
    ) -> None:
        self.fetch, self.standing, self.done = fetch, standing, done
        self.waiting: deque[list[Any]] = deque()  # [query run, next page, last page]
        self.fetching: set[Future[Fetched]] = set()
        self.in_flight_limit = max_workers * IN_FLIGHT_PER_WORKER
        self.pool = ThreadPoolExecutor(max_workers, thread_name_prefix="mihu")

    @property
    def idle(self) -> bool:
        """Nothing waits and nothing is in flight."""
        return not (self.fetching or self.waiting)

    def enqueue(self, state: QueryRun, first: int, last: int) -> None:
        """Queue pages ``first`` to ``last`` of ``state`` (nothing if ``last < first``)."""
        if last >= first:
            state.asked = max(state.asked, last)
            self.waiting.append([state, first, last])

    def fill(self) -> None:
        """Hand pages to the pool until a few per worker are in flight."""
        while self.waiting and len(self.fetching) < self.in_flight_limit:
            cursor = self.waiting[0]
            state, page, last = cursor
            if not self.standing(state):
                self.waiting.popleft()
                continue
            if page >= last:
                self.waiting.popleft()
            else:
                cursor[1] = page + 1
            future = self.pool.submit(self.fetch, state, page)
            self.fetching.add(future)
            future.add_done_callback(self.done.put)

    def finished(self, future: Future[Any]) -> bool:
        """Take ``future`` off the pages in flight; False if it is not a fetch."""
        if future not in self.fetching:
            return False
        self.fetching.discard(future)
        return True

    def close(self, *, abandon: bool = False) -> None:
        """Stop the pool: wait for its fetches, or (``abandon``) cancel those not started and
        return at once (the caller gets its error now)."""
        if abandon:
            self.pool.shutdown(wait=False, cancel_futures=True)
        else:
            self.pool.shutdown(wait=True)
