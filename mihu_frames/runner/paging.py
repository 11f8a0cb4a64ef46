"""Paging policies: which pages a run fetches, and how it uses the cache.

A :class:`Paging` policy is the object passed to :meth:`~mihu_frames.runner.PageRunner.run`
that makes one loop serve every load. :class:`FullListing` reads every page of every query
(a load) and owns the rule for a listing that grows while it is read: it is followed for
:data:`MAX_GROWTH` rounds, then reported as failing. The other policies
(:class:`mihu_frames.sync.Window`, :class:`mihu_frames.started.StartedWindow`) decide page by
page how far to read.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from mihu_frames.decoding import PageEnvelope
from mihu_frames.runner.plan import Plan, Query, named

logger = logging.getLogger("mihu_frames")

#: Rounds a listing may grow while it is read before it is reported as failing. A round is
#: the pages a listing grew by while the previous round was read: a conversation gaining
#: sessions at 80% of the read rate needs about ten.
MAX_GROWTH = 20


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

    def may_grow(self, query: Query, rounds: list[int], page: int, asked: int) -> bool:
        """Whether ``query`` reads on past ``asked`` (the last page asked for so far), now
        that its decoded page ``page`` leads further.

        ``rounds`` is the query's record of growth, the first page of each round (round 0:
        the pages page 1 announced); a policy that bounds growth appends the round that
        begins. False: the query is reported as a listing that kept growing.
        """


@dataclass(frozen=True)
class FullListing:
    """Every page of every query, 1 to ``last_page``: a load.

    A listing that grows while it is read is followed round after round: the pages it grew
    by while one round was read are the next round; past :data:`MAX_GROWTH` rounds it is
    reported as failing (:meth:`may_grow`).
    """

    cached: bool = True
    hint: bool = True
    label: str = "mihu sessions"
    left_out: str = "left out {error}"
    pages_alone: bool = False

    def queries(self, plan: Plan) -> Iterable[Query]:
        """Every query of ``plan``."""
        return plan.queries

    def after(self, query: Query, page: int, envelope: PageEnvelope, rows: pa.Table) -> int:
        """Every page up to the ``last_page`` this page announces."""
        return envelope.last_page

    def may_grow(self, query: Query, rounds: list[int], page: int, asked: int) -> bool:
        """Count the growth page ``page`` saw; False once the listing grew too many rounds.

        Pages it reveals join the round after its own; a round already begun is extended.

        Examples
        --------
        >>> query = Query(index=0, conversation="c", status=None, type=None, filters=())
        >>> rounds = [1]
        >>> FullListing().may_grow(query, rounds, page=3, asked=5), rounds
        (True, [1, 6])
        """
        current = bisect.bisect_right(rounds, page) - 1
        if current + 1 < len(rounds):
            return True
        if len(rounds) > MAX_GROWTH:
            return False
        rounds.append(asked + 1)
        logger.debug("%s grew while it was read (round %d)", named(query), current + 1)
        return True
