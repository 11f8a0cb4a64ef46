"""The queries of one run, by index: which still stand, how many pages they come to, and
where their rows go in the frame.

A query is *standing* until it is dropped (fetched anew under a new index: :meth:`Query.renumbered`)
or its conversation failed. The progress bar's total is known once every standing query's
``last_page`` is; a query that stopped standing counts the pages it already showed.
"""

from __future__ import annotations

from collections.abc import Container, Iterator

import numpy as np

from mihu_frames.runner.pages import QueryRun
from mihu_frames.runner.plan import Query


class Queries:
    """The queries of one run.

    Parameters
    ----------
    planned : int
        How many queries the plan holds (indices from 0; a query fetched anew gets the next).
    failed : Container[str]
        The conversations that failed (the error policy's record, read as it grows).
    """

    def __init__(self, planned: int, failed: Container[str]) -> None:
        self.planned = planned
        self.failed = failed
        self.states: dict[int, QueryRun] = {}
        self.next_index = planned

    def add(self, state: QueryRun) -> None:
        """Hold ``state`` under its query's index."""
        self.states[state.query.index] = state

    def get(self, index: int) -> QueryRun | None:
        """The query run of ``index``, if any."""
        return self.states.get(index)

    def standing(self, state: QueryRun) -> bool:
        """``state`` is neither dropped nor of a failed conversation."""
        return not state.dropped and state.query.conversation not in self.failed

    def standing_index(self, index: int) -> bool:
        """The query of ``index`` still stands."""
        return self.standing(self.states[index])

    def still_standing(self) -> Iterator[QueryRun]:
        """Every query still standing, in the order they were started."""
        return (state for state in self.states.values() if self.standing(state))

    def renumbered(self, query: Query) -> Query:
        """``query`` under the next free index (fetched anew)."""
        query = query.renumbered(self.next_index)
        self.next_index += 1
        return query

    def total(self) -> int | None:
        """The pages of the run, once every standing query's page count is known (else None)."""
        total = 0
        for state in self.states.values():
            if self.standing(state):
                if not state.known:
                    return None
                total += state.last_page
            else:
                total += state.counted
        return total

    def gone(self) -> list[int]:
        """The indices whose rows are left out: dropped queries and failed conversations."""
        return [i for i, state in self.states.items() if not self.standing(state)]

    def positions(self) -> np.ndarray | None:
        """Where each index's rows go in the frame, when a query was fetched anew (else None:
        every query is at its own index)."""
        if len(self.states) <= self.planned:
            return None
        order = np.zeros(max(self.states) + 1, dtype=np.int64)
        for index, state in self.states.items():
            order[index] = state.order
        return order
