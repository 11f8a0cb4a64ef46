"""What one run holds per query and per page: the parts its other pieces pass around."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from mihu_frames.cachefile import CachedListing
from mihu_frames.decoding import PageEnvelope, PageInfo
from mihu_frames.errors import ResponseFormatError
from mihu_frames.runner.plan import Query
from mihu_frames.transport import Reply


@dataclass
class QueryRun:
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
class Fetched:
    """A page as a worker hands it back."""

    run: QueryRun
    page: int
    body: bytes
    info: PageInfo
    reply: Reply | None  # None: read from the cache
    hint: int | None = None


@dataclass
class Decoded:
    """A batch as the decoder hands it back: its good pages' rows, and the pages rejected."""

    pages: list[Fetched]
    table: pa.Table | None
    envelopes: list[PageEnvelope]
    rejected: list[tuple[Fetched, ResponseFormatError]]


class Restart(Exception):
    """A cached page does not belong to the planned listing: fetch the query anew."""
