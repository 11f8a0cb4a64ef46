"""The page runner's parts through their own interfaces: the growth rule of ``FullListing``,
the ``on_error`` policy, the queries still standing, the final ordering.

The runner's behaviour end to end is in ``test_load.py``, ``test_errors.py`` and
``test_hostile.py``; these pin each part's decisions on its own, with exact outcomes.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pytest

from mihu_frames.errors import NotFoundError, ServerError
from mihu_frames.runner import MAX_GROWTH, FullListing, Query
from mihu_frames.runner.failures import ErrorPolicy
from mihu_frames.runner.order import in_order
from mihu_frames.runner.pages import QueryRun
from mihu_frames.runner.queries import Queries
from mihu_frames.schema import SESSIONS_SCHEMA
from mihu_frames.started import StartedWindow
from mihu_frames.sync import Window

A = "00000001-0c0c-4000-8000-000000000001"
B = "00000002-0c0c-4000-8000-000000000002"


def _query(index: int, conversation: str = A) -> Query:
    return Query(index=index, conversation=conversation, status=None, type=None, filters=())


# --------------------------------------------------------------------------- growth


def test_a_full_listing_follows_growth_for_max_growth_rounds_then_stops():
    rounds = [1]
    asked = 10
    for round_number in range(1, MAX_GROWTH + 1):
        # the first page of the newest round shows more pages: a new round begins
        assert FullListing().may_grow(_query(0), rounds, rounds[-1], asked)
        assert rounds[-1] == asked + 1
        assert len(rounds) == round_number + 1
        asked += 5
    assert not FullListing().may_grow(_query(0), rounds, rounds[-1], asked)
    assert len(rounds) == MAX_GROWTH + 1


def test_growth_seen_by_an_earlier_round_extends_the_round_begun():
    rounds = [1, 11]  # round 1 began at page 11
    # page 4 (round 0) shows more: it joins round 1, already begun, and counts no new round
    assert FullListing().may_grow(_query(0), rounds, 4, 15)
    assert rounds == [1, 11]
    # page 12 (round 1) shows more: round 2 begins after what was asked
    assert FullListing().may_grow(_query(0), rounds, 12, 15)
    assert rounds == [1, 11, 16]


@pytest.mark.parametrize(
    "paging",
    [
        Window({A: datetime(2026, 1, 1, tzinfo=timezone.utc)}),
        StartedWindow(datetime(2026, 1, 1, tzinfo=timezone.utc), None),
    ],
    ids=["sync.Window", "StartedWindow"],
)
def test_page_by_page_policies_never_bound_growth(paging):
    rounds = [1]
    for page in range(1, 3 * MAX_GROWTH):
        assert paging.may_grow(_query(0), rounds, page, page)
    assert rounds == [1]


# --------------------------------------------------------------------------- on_error


def _policy(on_error: str, pages_alone: bool = False) -> tuple[ErrorPolicy, list, list]:
    errors: list = []
    changes: list = []
    policy = ErrorPolicy(
        on_error,
        "left out {error}",
        pages_alone,
        lambda text: text.replace("sekret", "***"),
        errors,
        lambda: changes.append(1),
    )
    return policy, errors, changes


def test_raise_raises_the_first_failure_and_records_nothing():
    policy, errors, changes = _policy("raise")
    error = NotFoundError("gone", conversation=A, page=2, status_code=404)
    with pytest.raises(NotFoundError) as info:
        policy.fail(A, error)
    assert info.value is error
    assert (errors, changes, policy.failed) == ([], [], {})


def test_warn_leaves_a_conversation_out_once_scrubbed_and_warns():
    policy, errors, changes = _policy("warn")
    first = ServerError("HTTP 500 sekret", conversation=A, page=3, status_code=500)
    with pytest.warns(RuntimeWarning) as caught:
        policy.fail(A, first)
        policy.fail(A, ServerError("again", conversation=A, page=4, status_code=500))
    assert [str(w.message) for w in caught] == [f"left out {first}".replace("sekret", "***")]
    assert caught[0].filename == __file__  # pointed at the caller outside the package
    assert errors == [
        {
            "conversation": A,
            "page": 3,
            "error": "ServerError",
            "status_code": 500,
            "message": str(first).replace("sekret", "***"),
        }
    ]
    assert policy.failed == {A: first}
    assert changes == [1]


def test_skip_is_silent_but_logged(caplog, recwarn):
    policy, errors, _ = _policy("skip")
    caplog.set_level(logging.INFO, logger="mihu_frames")
    policy.fail(B, NotFoundError("gone", conversation=B, page=1, status_code=404))
    assert list(recwarn) == []
    assert [e["conversation"] for e in errors] == [B]
    assert [r.getMessage().startswith("left out") for r in caplog.records] == [True]


def test_pages_alone_leave_a_later_page_out_and_the_query_standing():
    policy, errors, _ = _policy("skip", pages_alone=True)
    policy.page_failed(ServerError("later page", conversation="", page=2, status_code=500))
    assert policy.failed == {}
    assert [e["page"] for e in errors] == [2]
    policy.page_failed(ServerError("first page", conversation="", page=1, status_code=500))
    assert list(policy.failed) == [""]


# --------------------------------------------------------------------------- queries and order


def test_queries_total_waits_for_every_standing_page_count():
    failed: dict = {}
    queries = Queries(2, failed)
    a, b = QueryRun(_query(0, A), None, "la"), QueryRun(_query(1, B), None, "lb")
    queries.add(a)
    queries.add(b)
    a.known, a.last_page = True, 7
    assert queries.total() is None  # b's page count is not known yet
    failed[B] = NotFoundError("gone", conversation=B, page=1)
    b.counted = 1
    assert queries.total() == 8  # a's 7 pages and the one page b showed
    assert queries.gone() == [1]
    assert queries.positions() is None


def test_a_query_fetched_anew_takes_back_its_place_and_drops_its_old_rows():
    queries = Queries(2, {})
    first = QueryRun(_query(0, A), None, "old", order=0)
    queries.add(first)
    queries.add(QueryRun(_query(1, B), None, "lb", order=1))
    first.dropped = True
    again = queries.renumbered(first.query)
    assert (again.index, again.conversation) == (2, A)
    queries.add(QueryRun(again, None, "new", order=0))
    assert queries.gone() == [0]
    assert queries.positions().tolist() == [0, 1, 0]

    def batch(query: int, uuids: list[str]) -> pa.Table:
        rows = {f.name: pa.nulls(len(uuids), f.type) for f in SESSIONS_SCHEMA}
        rows["uuid"] = pa.array(uuids)
        rows["_query"] = pa.array([query] * len(uuids), pa.int64())
        rows["_page"] = pa.array([1] * len(uuids), pa.int64())
        rows["_row"] = pa.array(range(len(uuids)), pa.int64())
        return pa.table(rows)

    batches = [batch(1, ["b1", "b2"]), batch(0, ["stale"]), batch(2, ["a1"])]
    table = in_order(batches, queries.gone(), queries.positions(), SESSIONS_SCHEMA)
    assert batches == []
    assert table.column("uuid").to_pylist() == ["a1", "b1", "b2"]
    assert np.array_equal(table.schema.names, SESSIONS_SCHEMA.names)
