"""What a run cost: requests, retries, cache hits, pages, waits, the failures it recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mihu_frames.transport import Reply


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

    def count_page(self, conversation: str, reply: Reply | None) -> None:
        """Count one page of ``conversation``: from the network (``reply``) or the cache."""
        self.pages += 1
        if reply is None:
            self.cache_hits += 1
        else:
            self.requests += 1 + reply.retries
            self.retries += reply.retries
            self.fresh.add(conversation)

    def expiring(self, expires: float | None) -> None:
        """Count a cached listing used, which expires at ``expires`` (None: never)."""
        if expires is not None:
            self.expires = min(self.expires or expires, expires)
