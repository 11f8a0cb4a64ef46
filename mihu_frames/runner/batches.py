"""Decoding a run's pages in batches, on one decoder thread while the workers fetch.

The decoder takes whatever pages have arrived when it is free, up to :func:`batch_size`
pages (about 5,000 sessions), and a batch of at least a fifth of that when it is idle. While
workers fetch, the cores are theirs (one decoding thread); the last batch gets them all. A
batch with a page that does not decode is decoded page by page, so the good pages still count
and the bad one is named.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pyarrow as pa

from mihu_frames.decoding import PageEnvelope, batch_size
from mihu_frames.errors import ResponseFormatError
from mihu_frames.runner.pages import Decoded, Fetched


class DecodeBatches:
    """The decoding side of a run: the batch being gathered and the batches being decoded.

    Parameters
    ----------
    decode : callable
        The endpoint's decoder: bodies and their page infos to a table and envelopes.
    per_page : int
        Sessions per page (how many pages make a batch).
    done : queue.SimpleQueue
        Where each decoded batch is put, in completion order.
    """

    def __init__(
        self,
        decode: Callable[..., tuple[pa.Table, list[PageEnvelope]]],
        per_page: int,
        done: queue.SimpleQueue[Future[Any]],
    ) -> None:
        self.decoder_of = decode
        self.done = done
        self.batch: list[Fetched] = []
        self.decoding: set[Future[Decoded]] = set()
        self.limit = batch_size(per_page)
        self.floor = max(1, self.limit // 5)
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix="mihu-decode")

    @property
    def pending(self) -> bool:
        """Pages are gathered or being decoded."""
        return bool(self.batch or self.decoding)

    def add(self, fetched: Fetched) -> None:
        """Gather a fetched page for the next batch."""
        self.batch.append(fetched)

    def submit(self, fetching_done: bool) -> None:
        """Hand the gathered pages to the decoder if they make a batch (``fetching_done``:
        no page is waiting or in flight, so whatever is gathered is the last batch)."""
        if self.batch and (
            len(self.batch) >= self.limit
            or fetching_done
            or (not self.decoding and len(self.batch) >= self.floor)
        ):
            decoding = self.decoder.submit(self.decode, self.batch, fetching_done)
            self.decoding.add(decoding)
            decoding.add_done_callback(self.done.put)
            self.batch = []

    def finished(self, future: Future[Any]) -> Decoded:
        """Take a decoded batch off those in the decoder."""
        self.decoding.discard(future)
        decoded: Decoded = future.result()
        return decoded

    def decode(self, pages: list[Fetched], threads: bool = False) -> Decoded:
        """Decode a batch (in the decoder thread); a batch with a bad page is decoded page by
        page, so the good pages still count and the bad one is named."""
        try:
            table, envelopes = self.decoder_of(
                [p.body for p in pages], [p.info for p in pages], use_threads=threads
            )
        except ResponseFormatError as exc:
            if len(pages) == 1:
                return Decoded(pages, None, [], [(pages[0], exc)])
            parts = [self.decode([page]) for page in pages]
            tables = [part.table for part in parts if part.table is not None]
            return Decoded(
                [p for part in parts if part.table is not None for p in part.pages],
                pa.concat_tables(tables) if tables else None,
                [e for part in parts for e in part.envelopes],
                [r for part in parts for r in part.rejected],
            )
        return Decoded(pages, table, envelopes, [])

    def close(self) -> None:
        """Wait for the batch being decoded and stop the decoder thread."""
        self.decoder.shutdown(wait=True)
